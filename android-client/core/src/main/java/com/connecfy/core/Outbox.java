package com.connecfy.core;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * Reports waiting for the server, kept in {@link Storage} so none is lost to an app
 * restart or a dead network: status reports of sent messages, and the SMS this phone
 * received ({@link InboundSms}). A report leaves the outbox when the server answers 2xx
 * or a final 4xx ({@link Disposition#FINAL}: 400, 404, 409...). No answer, 401, 403, 408,
 * 429 and 5xx keep it, with its own jittered backoff, never shorter than the server's
 * {@code Retry-After}. When the trouble is the server's or the network's as a whole (no
 * answer, 401, 403, 429, 502, 503, 504: a proxy or captive portal refuses every request
 * alike) the drain stops and the whole outbox backs off too, since the next report would
 * fail the same way; a 408 or 500 holds back only that report. The server's own refusal of
 * the token ({@link ApiException#refusesToken}) also stops the drain and keeps the report:
 * whether it means the phone was unpaired is for {@link DeviceEngine} to decide.
 *
 * <p>A status report keeps what it says besides its status through restarts and retries:
 * {@code retryable} with {@code failed}, the SIM slot with {@code sent}. A server older
 * than those fields refuses them (400, unknown field): the report then goes again at
 * once without them, a plain report rather than none.
 *
 * <p>Reports of one message go in the order they were added ({@code sent} before
 * {@code delivered}); different messages do not wait for each other's backoff.
 *
 * <p>A received SMS is never dropped for a 404: a server without the inbound endpoint
 * (older than the app) answers that, and the SMS waits for it; every received SMS then
 * backs off together (one request per backoff step, not one per SMS) while status
 * reports go on. A final 400 (the server will never take it: a sender it does not
 * accept, say) drops it. Received SMS keep their own document, as their texts are far
 * larger than a status report, and at most {@link #MAX_INBOUND} wait (past that the
 * oldest goes). The drain writes it once at its end rather than after each SMS the
 * server took: after a crash in between, those are sent again with their {@code ref} and
 * the server answers with the id it already gave.
 *
 * <p>Retries are scheduled on the monotonic clock ({@link Clock#elapsedMillis}), so
 * setting the phone's time does not move them; the file keeps each next attempt as wall
 * time, and on loading a wait is cut to at most the backoff's longest step.
 */
public final class Outbox {
    public static final String SENT = "sent";
    public static final String DELIVERED = "delivered";
    public static final String FAILED = "failed";

    static final String DOCUMENT = "outbox.json";
    static final String INBOUND_DOCUMENT = "inbound.json";
    /** Received SMS waiting at most; a new one past this pushes out the oldest. */
    public static final int MAX_INBOUND = 5000;

    /** How far a failed report's backoff reaches. */
    private enum Scope {
        /** This report only (408, 500...). */
        REPORT,
        /** Every received SMS: the server has no inbound endpoint (404). */
        INBOUND,
        /** Everything: the server or the network as a whole (no answer, 429, 503...). */
        ALL
    }

    /** One status report for one message, or one received SMS. */
    public static final class Report {
        /** The message reported on; null for a received SMS. */
        public final String messageId;
        /** {@link #SENT}, {@link #DELIVERED} or {@link #FAILED}; null for a received SMS. */
        public final String status;
        public final String error;
        /** With {@link #FAILED}: the server may put the message back (no service, radio off...). */
        public final boolean retryable;
        /** With {@link #SENT}: the SIM slot (1-based) that sent it; null when unknown. */
        public final Integer simSlot;
        /** With {@link #SENT} of an end-to-end encrypted message: the segments it took; else null. */
        public final Integer segments;
        /** The server refused {@link #retryable} and {@link #simSlot} (an older one): sent without them. */
        boolean plain;
        /** The received SMS to report; null for a status report. */
        public final InboundSms inbound;
        /** Wall time. */
        public final long queuedAt;
        int attempts;
        /** On the monotonic clock. */
        long nextAttemptAt;

        Report(String messageId, String status, String error, InboundSms inbound, long queuedAt, int attempts,
                long nextAttemptAt) {
            this(messageId, status, error, false, null, inbound, queuedAt, attempts, nextAttemptAt);
        }

        Report(String messageId, String status, String error, boolean retryable, Integer simSlot,
                InboundSms inbound, long queuedAt, int attempts, long nextAttemptAt) {
            this(messageId, status, error, retryable, simSlot, null, inbound, queuedAt, attempts, nextAttemptAt);
        }

        Report(String messageId, String status, String error, boolean retryable, Integer simSlot, Integer segments,
                InboundSms inbound, long queuedAt, int attempts, long nextAttemptAt) {
            this.segments = segments;
            this.messageId = messageId;
            this.status = status;
            this.error = error == null ? "" : error;
            this.retryable = retryable;
            this.simSlot = simSlot;
            this.inbound = inbound;
            this.queuedAt = queuedAt;
            this.attempts = attempts;
            this.nextAttemptAt = nextAttemptAt;
        }

        public int attempts() {
            return attempts;
        }

        public long nextAttemptAt() {
            return nextAttemptAt;
        }

        /** Whether it says more than its status and error, and the server has not refused that. */
        boolean hasExtras() {
            return inbound == null && !plain && (retryable || simSlot != null || segments != null);
        }

        /** Reports with the same key go one at a time, in the order they were added. */
        String key() {
            return inbound != null ? "inbound " + inbound.ref : "status " + messageId;
        }

        /** For errors and the log; names no sender and no text. */
        String describe() {
            return inbound != null ? "received SMS " + inbound.ref : "status report " + messageId + " " + status;
        }
    }

    /** What one {@link #drain} did. */
    public static final class DrainResult {
        public int accepted;
        public int dropped;
        public int retried;
        /** The drain stopped at the server's refusal of the device token (the report was kept). */
        public boolean tokenRefused;
        /** Some report got an answer from the server other than a refusal of the token. */
        public boolean answered;
        /** The last error, for the user; null when every attempt got an answer it wanted. */
        public String lastError;
        /** A line for the log per report the server refused for good (dropped). */
        public final List<String> droppedLines = new ArrayList<String>();
    }

    private final Storage storage;
    private final Clock clock;
    private final Random random;
    private final Backoff backoff;
    private final List<Report> reports = new ArrayList<Report>();
    /** reports.size() as of the last change, read without the lock (for the screen). */
    private volatile int size;
    /** The received SMS among them, likewise. */
    private volatile int inboundSize;
    private int failuresInRow;
    private long resumeAt;
    /** The inbound endpoint's own backoff (404s in a row): received SMS wait, status reports go. */
    private int inboundFailuresInRow;
    private long inboundResumeAt;
    /** Received SMS left the list since their document was last written. */
    private boolean inboundUnsaved;
    /** {@link #MAX_INBOUND}; smaller in tests. */
    int maxInbound = MAX_INBOUND;

    public Outbox(Storage storage, Clock clock, Random random, Backoff backoff) throws IOException {
        this.storage = storage;
        this.clock = clock;
        this.random = random;
        this.backoff = backoff;
        load();
    }

    /** Queues a status report; the same status for the same message is kept once. */
    public synchronized void add(String messageId, String status, String error) throws IOException {
        add(messageId, status, error, false, null);
    }

    /**
     * Queues a status report that may say more: {@code retryable} (with {@link #FAILED}),
     * the SIM slot that sent the message (with {@link #SENT}, 1-based; null: not known).
     * The same status for the same message is kept once.
     */
    public synchronized void add(String messageId, String status, String error, boolean retryable, Integer simSlot)
            throws IOException {
        add(messageId, status, error, retryable, simSlot, null);
    }

    /**
     * As {@link #add(String, String, String, boolean, Integer)}, with {@link #SENT} also the
     * segments an end-to-end encrypted message took (null: left out).
     */
    public synchronized void add(String messageId, String status, String error, boolean retryable, Integer simSlot,
            Integer segments) throws IOException {
        for (Report r : reports) {
            if (messageId.equals(r.messageId) && status.equals(r.status)) {
                return;
            }
        }
        boolean sent = SENT.equals(status);
        reports.add(new Report(messageId, status, error, retryable && FAILED.equals(status), sent ? simSlot : null,
            sent ? segments : null, null, clock.now(), 0, clock.elapsedMillis()));
        saveStatus();
    }

    /**
     * Queues a received SMS (on disk when this returns); one with a {@code ref} already
     * waiting is kept once. Returns the oldest received SMS dropped to make room (more than
     * {@link #MAX_INBOUND} waiting), or null.
     */
    public synchronized InboundSms addInbound(InboundSms sms) throws IOException {
        Report oldest = null;
        int waiting = 0;
        for (Report r : reports) {
            if (r.inbound != null) {
                if (r.inbound.ref.equals(sms.ref)) {
                    return null;
                }
                if (oldest == null) {
                    oldest = r;
                }
                waiting++;
            }
        }
        if (waiting >= maxInbound) {
            reports.remove(oldest);
        } else {
            oldest = null;
        }
        reports.add(new Report(null, null, "", sms, clock.now(), 0, clock.elapsedMillis()));
        saveInbound();
        return oldest == null ? null : oldest.inbound;
    }

    /** How many reports wait; never waits for the lock (a write to the disk may hold it). */
    public int size() {
        return size;
    }

    /** How many of them are received SMS; never waits for the lock. */
    public int inboundSize() {
        return inboundSize;
    }

    /** Whether a status report of the message waits here. */
    public synchronized boolean hasReportFor(String messageId) {
        for (Report r : reports) {
            if (messageId.equals(r.messageId)) {
                return true;
            }
        }
        return false;
    }

    public synchronized List<Report> pending() {
        return new ArrayList<Report>(reports);
    }

    public synchronized void clear() throws IOException {
        reports.clear();
        failuresInRow = 0;
        resumeAt = 0;
        inboundFailuresInRow = 0;
        inboundResumeAt = 0;
        saveStatus();
        saveInbound();
    }

    /** When a drain next has something to do, on the monotonic clock (Long.MAX_VALUE: nothing waits). */
    public synchronized long nextAttemptAt() {
        long earliest = Long.MAX_VALUE;
        Set<String> seen = new HashSet<String>();
        for (Report r : reports) {
            if (seen.add(r.key())) {
                long at = r.inbound != null ? Math.max(r.nextAttemptAt, inboundResumeAt) : r.nextAttemptAt;
                earliest = Math.min(earliest, at);
            }
        }
        return earliest == Long.MAX_VALUE ? earliest : Math.max(earliest, resumeAt);
    }

    /** Sends every report that is due, oldest first, until one gets no answer it wanted. */
    public DrainResult drain(DeviceApi api) throws IOException {
        return drain(api, false, Long.MAX_VALUE);
    }

    /**
     * Tries every report once, whatever its backoff says, oldest first, until one gets no
     * answer it wanted from the server as a whole (no answer, 429, 502-504) or the
     * monotonic clock reaches {@code deadline} (no report is started after it). For a
     * last attempt before the token is forgotten.
     */
    public DrainResult drainNow(DeviceApi api, long deadline) throws IOException {
        return drain(api, true, deadline);
    }

    private DrainResult drain(DeviceApi api, boolean ignoreBackoff, long deadline) throws IOException {
        try {
            return drainUnsaved(api, ignoreBackoff, deadline);
        } finally {
            saveInboundIfChanged();
        }
    }

    private DrainResult drainUnsaved(DeviceApi api, boolean ignoreBackoff, long deadline) throws IOException {
        DrainResult result = new DrainResult();
        Set<Report> tried = new HashSet<Report>();
        while (clock.elapsedMillis() < deadline) {
            Report report = nextDue(tried, ignoreBackoff);
            if (report == null) {
                return result;
            }
            tried.add(report);
            try {
                if (report.inbound != null) {
                    api.reportInbound(report.inbound);
                } else {
                    boolean extras = report.hasExtras();
                    api.reportStatus(report.messageId, report.status, report.error, extras && report.retryable,
                        extras ? report.simSlot : null, extras ? report.segments : null);
                }
                answered(report);
                result.accepted++;
                result.answered = true;
            } catch (ApiException e) {
                String error = report.describe() + ": " + e.getMessage();
                if (e.refusesToken()) {
                    retryLater(report, e.retryAfterMillis(), Scope.ALL);
                    result.retried++;
                    result.tokenRefused = true;
                    result.lastError = error;
                    return result;
                }
                result.answered = true;
                if (e.status() == 400 && report.hasExtras()) {
                    sendPlain(report);
                    tried.remove(report); // again at once, without the fields
                    continue;
                }
                result.lastError = error;
                if (isFinal(report, e)) {
                    answered(report);
                    result.dropped++;
                    result.droppedLines.add(report.describe() + " dropped, the server refused it: " + e.getMessage());
                } else {
                    Scope scope = isServerWide(e.status()) ? Scope.ALL
                        : report.inbound != null && e.status() == 404 ? Scope.INBOUND : Scope.REPORT;
                    retryLater(report, e.retryAfterMillis(), scope);
                    result.retried++;
                    if (scope == Scope.ALL) {
                        return result;
                    }
                }
            } catch (IOException e) {
                retryLater(report, -1, Scope.ALL);
                result.retried++;
                result.lastError = report.describe() + ": no answer from the server: " + e.getMessage();
                return result;
            }
        }
        return result;
    }

    /**
     * The server will never take the report: a final 4xx. Not a 404 for a received SMS,
     * which a server without the inbound endpoint answers: the SMS waits for it.
     */
    private static boolean isFinal(Report report, ApiException e) {
        return e.disposition() == Disposition.FINAL && !(report.inbound != null && e.status() == 404);
    }

    private synchronized Report nextDue(Set<Report> tried, boolean ignoreBackoff) {
        long now = ignoreBackoff ? Long.MAX_VALUE : clock.elapsedMillis();
        if (now < resumeAt) {
            return null;
        }
        Set<String> blocked = new HashSet<String>();
        for (Report r : reports) {
            if (!blocked.add(r.key())) {
                continue; // an earlier report of this message goes first
            }
            if (r.inbound != null && now < inboundResumeAt) {
                continue;
            }
            if (r.nextAttemptAt <= now && !tried.contains(r)) {
                return r;
            }
        }
        return null;
    }

    private synchronized void sendPlain(Report report) throws IOException {
        report.plain = true;
        if (reports.contains(report)) {
            saveStatus();
        }
    }

    private synchronized void answered(Report report) throws IOException {
        failuresInRow = 0;
        resumeAt = 0;
        reports.remove(report);
        if (report.inbound != null) {
            inboundFailuresInRow = 0;
            inboundResumeAt = 0;
            inboundUnsaved = true; // written at the end of the drain
            publishSizes();
        } else {
            saveStatus();
        }
    }

    private synchronized void saveInboundIfChanged() throws IOException {
        if (inboundUnsaved) {
            saveInbound();
        }
    }

    static boolean isServerWide(int status) {
        return status == 401 || status == 403 || status == 429 || status == 502 || status == 503
            || status == 504;
    }

    private synchronized void retryLater(Report report, long retryAfterMillis, Scope scope) throws IOException {
        long now = clock.elapsedMillis();
        report.attempts++;
        if (scope == Scope.ALL) {
            failuresInRow++;
            resumeAt = now + Math.max(backoff.delayMillis(failuresInRow, random), retryAfterMillis);
        } else if (scope == Scope.INBOUND) {
            inboundFailuresInRow++;
            inboundResumeAt = now + Math.max(backoff.delayMillis(inboundFailuresInRow, random), retryAfterMillis);
        }
        report.nextAttemptAt = now + Math.max(backoff.delayMillis(report.attempts, random), retryAfterMillis);
        if (reports.contains(report)) {
            if (report.inbound != null) {
                saveInbound();
            } else {
                saveStatus();
            }
        }
    }

    private void load() throws IOException {
        long wall = clock.now();
        long elapsed = clock.elapsedMillis();
        long longest = backoff.ceilingMillis(Integer.MAX_VALUE);
        String text = storage.read(DOCUMENT);
        if (text != null) {
            try {
                JSONArray array = new JSONObject(text).getJSONArray("reports");
                for (int i = 0; i < array.length(); i++) {
                    JSONObject o = array.getJSONObject(i);
                    Report r = new Report(o.getString("message_id"), o.getString("status"), o.optString("error", ""),
                        o.optBoolean("retryable", false), o.has("sim_slot") ? Integer.valueOf(o.getInt("sim_slot")) : null,
                        o.has("segments") ? Integer.valueOf(o.getInt("segments")) : null, null, o.optLong("queued_at", 0), o.optInt("attempts", 0), elapsed + waitLeft(o, wall, longest));
                    r.plain = o.optBoolean("plain", false);
                    reports.add(r);
                }
            } catch (JSONException e) {
                throw new UnreadableDocumentException(DOCUMENT, e);
            }
        }
        text = storage.read(INBOUND_DOCUMENT);
        if (text != null) {
            try {
                JSONArray array = new JSONObject(text).getJSONArray("inbound");
                for (int i = 0; i < array.length(); i++) {
                    JSONObject o = array.getJSONObject(i);
                    reports.add(new Report(null, null, "", InboundSms.fromStored(o.getJSONObject("sms")),
                        o.optLong("queued_at", 0), o.optInt("attempts", 0), elapsed + waitLeft(o, wall, longest)));
                }
            } catch (JSONException e) {
                throw new UnreadableDocumentException(INBOUND_DOCUMENT, e);
            }
        }
        publishSizes();
    }

    /** The wait left of a stored report: its next attempt (wall time) from now, at most {@code longest}. */
    private static long waitLeft(JSONObject stored, long wall, long longest) {
        return Math.min(Math.max(0, stored.optLong("next_attempt_at", 0) - wall), longest);
    }

    private void publishSizes() {
        int inbound = 0;
        for (Report r : reports) {
            if (r.inbound != null) {
                inbound++;
            }
        }
        size = reports.size();
        inboundSize = inbound;
    }

    private void saveStatus() throws IOException {
        publishSizes();
        long wall = clock.now();
        long elapsed = clock.elapsedMillis();
        try {
            JSONArray array = new JSONArray();
            for (Report r : reports) {
                if (r.inbound == null) {
                    JSONObject o = new JSONObject()
                        .put("message_id", r.messageId)
                        .put("status", r.status)
                        .put("error", r.error)
                        .put("queued_at", r.queuedAt)
                        .put("attempts", r.attempts)
                        .put("next_attempt_at", wall + Math.max(0, r.nextAttemptAt - elapsed));
                    if (r.retryable) {
                        o.put("retryable", true);
                    }
                    if (r.simSlot != null) {
                        o.put("sim_slot", r.simSlot.intValue());
                    }
                    if (r.segments != null) {
                        o.put("segments", r.segments.intValue());
                    }
                    if (r.plain) {
                        o.put("plain", true);
                    }
                    array.put(o);
                }
            }
            storage.write(DOCUMENT, new JSONObject().put("reports", array).toString());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
    }

    private void saveInbound() throws IOException {
        publishSizes();
        long wall = clock.now();
        long elapsed = clock.elapsedMillis();
        try {
            JSONArray array = new JSONArray();
            for (Report r : reports) {
                if (r.inbound != null) {
                    array.put(new JSONObject()
                        .put("sms", r.inbound.toStored())
                        .put("queued_at", r.queuedAt)
                        .put("attempts", r.attempts)
                        .put("next_attempt_at", wall + Math.max(0, r.nextAttemptAt - elapsed)));
                }
            }
            storage.write(INBOUND_DOCUMENT, new JSONObject().put("inbound", array).toString());
            inboundUnsaved = false;
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
    }
}
