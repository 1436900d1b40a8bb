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
 * Status reports waiting for the server, kept in {@link Storage} so none is lost to an
 * app restart or a dead network. A report leaves the outbox when the server answers 2xx
 * or a final 4xx ({@link Disposition#FINAL}: 400, 404, 409...). No answer, 401, 403, 408,
 * 429 and 5xx keep it, with its own jittered backoff, never shorter than the server's
 * {@code Retry-After}. When the trouble is the server's or the network's as a whole (no
 * answer, 401, 403, 429, 502, 503, 504: a proxy or captive portal refuses every request
 * alike) the drain stops and the whole outbox backs off too, since the next report would
 * fail the same way; a 408 or 500 holds back only that report. The server's own refusal of
 * the token ({@link ApiException#refusesToken}) also stops the drain and keeps the report:
 * whether it means the phone was unpaired is for {@link DeviceEngine} to decide.
 *
 * <p>Reports of one message go in the order they were added ({@code sent} before
 * {@code delivered}); different messages do not wait for each other's backoff.
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

    /** One status report for one message. */
    public static final class Report {
        public final String messageId;
        public final String status;
        public final String error;
        /** Wall time. */
        public final long queuedAt;
        int attempts;
        /** On the monotonic clock. */
        long nextAttemptAt;

        Report(String messageId, String status, String error, long queuedAt, int attempts, long nextAttemptAt) {
            this.messageId = messageId;
            this.status = status;
            this.error = error == null ? "" : error;
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
    }

    private final Storage storage;
    private final Clock clock;
    private final Random random;
    private final Backoff backoff;
    private final List<Report> reports = new ArrayList<Report>();
    /** reports.size() as of the last change, read without the lock (for the screen). */
    private volatile int size;
    private int failuresInRow;
    private long resumeAt;

    public Outbox(Storage storage, Clock clock, Random random, Backoff backoff) throws IOException {
        this.storage = storage;
        this.clock = clock;
        this.random = random;
        this.backoff = backoff;
        load();
    }

    /** Queues a report; the same status for the same message is kept once. */
    public synchronized void add(String messageId, String status, String error) throws IOException {
        for (Report r : reports) {
            if (r.messageId.equals(messageId) && r.status.equals(status)) {
                return;
            }
        }
        reports.add(new Report(messageId, status, error, clock.now(), 0, clock.elapsedMillis()));
        save();
    }

    /** How many reports wait; never waits for the lock (a write to the disk may hold it). */
    public int size() {
        return size;
    }

    /** Whether a report of the message waits here. */
    public synchronized boolean hasReportFor(String messageId) {
        for (Report r : reports) {
            if (r.messageId.equals(messageId)) {
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
        save();
    }

    /** When a drain next has something to do, on the monotonic clock (Long.MAX_VALUE: nothing waits). */
    public synchronized long nextAttemptAt() {
        long earliest = Long.MAX_VALUE;
        Set<String> seen = new HashSet<String>();
        for (Report r : reports) {
            if (seen.add(r.messageId)) {
                earliest = Math.min(earliest, r.nextAttemptAt);
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
        DrainResult result = new DrainResult();
        Set<Report> tried = new HashSet<Report>();
        while (clock.elapsedMillis() < deadline) {
            Report report = nextDue(tried, ignoreBackoff);
            if (report == null) {
                return result;
            }
            tried.add(report);
            try {
                api.reportStatus(report.messageId, report.status, report.error);
                answered(report);
                result.accepted++;
                result.answered = true;
            } catch (ApiException e) {
                if (e.refusesToken()) {
                    retryLater(report, e.retryAfterMillis(), true);
                    result.retried++;
                    result.tokenRefused = true;
                    result.lastError = e.getMessage();
                    return result;
                }
                result.answered = true;
                if (e.disposition() == Disposition.FINAL) {
                    answered(report);
                    result.dropped++;
                    result.lastError = e.getMessage();
                } else {
                    boolean serverWide = isServerWide(e.status());
                    retryLater(report, e.retryAfterMillis(), serverWide);
                    result.retried++;
                    result.lastError = e.getMessage();
                    if (serverWide) {
                        return result;
                    }
                }
            } catch (IOException e) {
                retryLater(report, -1, true);
                result.retried++;
                result.lastError = "no answer from the server: " + e.getMessage();
                return result;
            }
        }
        return result;
    }

    private synchronized Report nextDue(Set<Report> tried, boolean ignoreBackoff) {
        long now = ignoreBackoff ? Long.MAX_VALUE : clock.elapsedMillis();
        if (now < resumeAt) {
            return null;
        }
        Set<String> blocked = new HashSet<String>();
        for (Report r : reports) {
            if (!blocked.add(r.messageId)) {
                continue; // an earlier report of this message goes first
            }
            if (r.nextAttemptAt <= now && !tried.contains(r)) {
                return r;
            }
        }
        return null;
    }

    private synchronized void answered(Report report) throws IOException {
        failuresInRow = 0;
        resumeAt = 0;
        reports.remove(report);
        save();
    }

    static boolean isServerWide(int status) {
        return status == 401 || status == 403 || status == 429 || status == 502 || status == 503
            || status == 504;
    }

    private synchronized void retryLater(Report report, long retryAfterMillis, boolean serverWide)
            throws IOException {
        long now = clock.elapsedMillis();
        report.attempts++;
        if (serverWide) {
            failuresInRow++;
            resumeAt = now + Math.max(backoff.delayMillis(failuresInRow, random), retryAfterMillis);
        }
        report.nextAttemptAt = now + Math.max(backoff.delayMillis(report.attempts, random), retryAfterMillis);
        if (reports.contains(report)) {
            save();
        }
    }

    private void load() throws IOException {
        String text = storage.read(DOCUMENT);
        if (text == null) {
            return;
        }
        long wall = clock.now();
        long elapsed = clock.elapsedMillis();
        long longest = backoff.ceilingMillis(Integer.MAX_VALUE);
        try {
            JSONArray array = new JSONObject(text).getJSONArray("reports");
            for (int i = 0; i < array.length(); i++) {
                JSONObject o = array.getJSONObject(i);
                long wait = Math.min(Math.max(0, o.optLong("next_attempt_at", 0) - wall), longest);
                reports.add(new Report(o.getString("message_id"), o.getString("status"), o.optString("error", ""),
                    o.optLong("queued_at", 0), o.optInt("attempts", 0), elapsed + wait));
            }
        } catch (JSONException e) {
            throw new UnreadableDocumentException(DOCUMENT, e);
        }
        size = reports.size();
    }

    private void save() throws IOException {
        size = reports.size();
        long wall = clock.now();
        long elapsed = clock.elapsedMillis();
        try {
            JSONArray array = new JSONArray();
            for (Report r : reports) {
                array.put(new JSONObject()
                    .put("message_id", r.messageId)
                    .put("status", r.status)
                    .put("error", r.error)
                    .put("queued_at", r.queuedAt)
                    .put("attempts", r.attempts)
                    .put("next_attempt_at", wall + Math.max(0, r.nextAttemptAt - elapsed)));
            }
            storage.write(DOCUMENT, new JSONObject().put("reports", array).toString());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
    }
}
