package com.connecfy.core;

import java.io.IOException;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeSet;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * Turns SmsManager's per-part broadcasts into one status report per message: {@code sent}
 * when every part left the phone, {@code failed} (with the result code) as soon as one
 * part did not, {@code delivered} when every part's delivery report came back, and
 * {@code failed} if a delivery report says a part never arrived. Reports go to the
 * {@link Outbox}; the parts seen so far are kept in {@link Storage}, because broadcasts
 * can arrive after the app was restarted. Repeated broadcasts change nothing.
 *
 * <p>The {@code sent} report names the SIM slot the message went out from, when known. A
 * failure that a later try may not meet ({@link SmsErrors#isRetryable}: no service, radio
 * off, a rate limit...) is reported {@code retryable} when no part had left the phone yet
 * (a retry would send those parts twice): the server then puts the message back, and the
 * id is remembered as put back ({@value #PUT_BACK_DOCUMENT}), so when the server hands it
 * to this phone again it is sent again rather than taken for a redelivery of a message
 * already sent ({@link #takePutBack}).
 */
public final class SendResults {
    static final String DOCUMENT = "parts.json";
    static final String PUT_BACK_DOCUMENT = "put-back.json";
    static final long FORGET_AFTER_MILLIS = 3L * 24 * 60 * 60 * 1000;

    private static final class Tracked {
        final int parts;
        final long since;
        /** The SIM slot it went out from (1-based), null when unknown. */
        final Integer simSlot;
        /** It was end-to-end encrypted: the sent report tells the server its real part count. */
        final boolean encrypted;
        final TreeSet<Integer> sent = new TreeSet<Integer>();
        final TreeSet<Integer> delivered = new TreeSet<Integer>();
        boolean sentReported;

        Tracked(int parts, long since, Integer simSlot, boolean encrypted) {
            this.parts = parts;
            this.since = since;
            this.simSlot = simSlot;
            this.encrypted = encrypted;
        }
    }

    private final Storage storage;
    private final Outbox outbox;
    private final DailyCounts counts;
    private final Clock clock;
    private final Map<String, Tracked> tracked = new LinkedHashMap<String, Tracked>();
    /** Messages reported failed with {@code retryable}: id -> when (wall time). */
    private final Map<String, Long> putBack = new LinkedHashMap<String, Long>();
    /** The last part that failed for want of radio: its error and when (monotonic clock). */
    private volatile String radioFailure;
    private volatile long radioFailureAt;

    public SendResults(Storage storage, Outbox outbox, DailyCounts counts, Clock clock) throws IOException {
        this.storage = storage;
        this.outbox = outbox;
        this.counts = counts;
        this.clock = clock;
        load();
        loadPutBack();
    }

    /** The message was handed to the SMS stack in {@code parts} parts, from a SIM not known. */
    public synchronized void dispatched(String messageId, int parts) throws IOException {
        dispatched(messageId, parts, null);
    }

    /** The message was handed to the SMS stack in {@code parts} parts, from SIM slot {@code simSlot} (1-based). */
    public synchronized void dispatched(String messageId, int parts, Integer simSlot) throws IOException {
        dispatched(messageId, parts, simSlot, false);
    }

    /**
     * As {@link #dispatched(String, int, Integer)}; {@code encrypted}: the server charged it
     * an upper bound, so its sent report carries {@code parts} as the real segment count.
     */
    public synchronized void dispatched(String messageId, int parts, Integer simSlot, boolean encrypted)
            throws IOException {
        tracked.put(messageId, new Tracked(Math.max(1, parts), clock.now(), simSlot, encrypted));
        save();
    }

    /** The SMS stack refused the message outright (the send call threw). */
    public synchronized void notSent(String messageId, Throwable error) throws IOException {
        fail(messageId, SmsErrors.notSent(error), false);
    }

    /**
     * The message was claimed and its id recorded, but it never reached the SMS stack (a
     * storage error in between, the app died there, or it names a SIM the phone does not
     * have): reported failed with {@code error}, not retryable. The outbox gets the report
     * first, so a storage error after it still lets it be sent.
     */
    public synchronized void notHanded(String messageId, String error) throws IOException {
        tracked.remove(messageId);
        outbox.add(messageId, Outbox.FAILED, error);
        counts.countFailed();
        save();
    }

    /** Whether part results of the message are still expected. */
    public synchronized boolean isTracked(String messageId) {
        return tracked.containsKey(messageId);
    }

    /** A sent broadcast: {@code resultCode} is {@link SmsErrors#RESULT_OK} or an error code. */
    public synchronized void partSent(String messageId, int part, int resultCode) throws IOException {
        Tracked t = tracked.get(messageId);
        if (t == null || t.sentReported) {
            return;
        }
        if (resultCode != SmsErrors.RESULT_OK) {
            if (SmsErrors.radioProblem(resultCode) != null) {
                radioFailureAt = clock.elapsedMillis();
                radioFailure = SmsErrors.sendFailure(resultCode);
            }
            fail(messageId, SmsErrors.sendFailure(resultCode), SmsErrors.isRetryable(resultCode) && t.sent.isEmpty());
            return;
        }
        if (!t.sent.add(part)) {
            return;
        }
        if (t.sent.size() >= t.parts) {
            t.sentReported = true;
            outbox.add(messageId, Outbox.SENT, "", false, t.simSlot, t.encrypted ? Integer.valueOf(t.parts) : null);
            counts.countSent();
            finishIfDelivered(messageId, t);
        }
        save();
    }

    /** A delivery report with its TP-Status; pending statuses are ignored (a final one follows). */
    public synchronized void partDelivered(String messageId, int part, int tpStatus) throws IOException {
        Tracked t = tracked.get(messageId);
        if (t == null || SmsErrors.deliveryPending(tpStatus)) {
            return;
        }
        if (!SmsErrors.deliveredOk(tpStatus)) {
            fail(messageId, SmsErrors.deliveryFailure(tpStatus), false);
            return;
        }
        if (t.delivered.add(part)) {
            finishIfDelivered(messageId, t);
            save();
        }
    }

    /** Whether the message was reported failed with {@code retryable} (and not sent again since). */
    public synchronized boolean isPutBack(String messageId) {
        return putBack.containsKey(messageId);
    }

    /**
     * The server handed this phone again a message it put back after a retryable failure:
     * true, and forgotten as put back (on disk when this returns), so it is sent once more.
     * False for any other message, which is not to be sent again.
     */
    public synchronized boolean takePutBack(String messageId) throws IOException {
        if (putBack.remove(messageId) == null) {
            return false;
        }
        savePutBack();
        return true;
    }

    /**
     * The error of a part that failed for want of radio (no service, radio off) within
     * the last {@code withinMillis}, or null.
     */
    public String recentRadioFailure(long withinMillis) {
        String failure = radioFailure;
        return failure != null && clock.elapsedMillis() - radioFailureAt < withinMillis ? failure : null;
    }

    public synchronized int tracking() {
        return tracked.size();
    }

    public synchronized void clear() throws IOException {
        tracked.clear();
        save();
        putBack.clear();
        savePutBack();
    }

    private void finishIfDelivered(String messageId, Tracked t) throws IOException {
        if (t.sentReported && t.delivered.size() >= t.parts) {
            outbox.add(messageId, Outbox.DELIVERED, "");
            tracked.remove(messageId);
        }
    }

    private void fail(String messageId, String error, boolean retryable) throws IOException {
        if (tracked.remove(messageId) == null) {
            return;
        }
        outbox.add(messageId, Outbox.FAILED, error, retryable, null);
        counts.countFailed();
        save();
        if (retryable) {
            putBack.put(messageId, clock.now());
            savePutBack();
        }
    }

    private void load() throws IOException {
        JSONObject all = readDocument(DOCUMENT);
        if (all == null) {
            return;
        }
        try {
            Iterator<?> keys = all.keys();
            while (keys.hasNext()) {
                String id = (String) keys.next();
                JSONObject o = all.getJSONObject(id);
                Tracked t = new Tracked(o.getInt("parts"), o.getLong("since"),
                    o.has("sim_slot") ? Integer.valueOf(o.getInt("sim_slot")) : null, o.optBoolean("encrypted", false));
                t.sentReported = o.optBoolean("sent_reported", false);
                addAll(t.sent, o.getJSONArray("sent"));
                addAll(t.delivered, o.getJSONArray("delivered"));
                tracked.put(id, t);
            }
        } catch (JSONException e) {
            throw new UnreadableDocumentException(DOCUMENT, e);
        }
    }

    private void loadPutBack() throws IOException {
        JSONObject all = readDocument(PUT_BACK_DOCUMENT);
        if (all == null) {
            return;
        }
        Iterator<?> keys = all.keys();
        while (keys.hasNext()) {
            String id = (String) keys.next();
            putBack.put(id, all.optLong(id, clock.now()));
        }
    }

    /** A stored JSON object; null when there is none. */
    private JSONObject readDocument(String document) throws IOException {
        String text = storage.read(document);
        if (text == null) {
            return null;
        }
        try {
            return new JSONObject(text);
        } catch (JSONException e) {
            throw new UnreadableDocumentException(document, e);
        }
    }

    private void savePutBack() throws IOException {
        long cutoff = clock.now() - FORGET_AFTER_MILLIS;
        Iterator<Long> it = putBack.values().iterator();
        while (it.hasNext()) {
            if (it.next() < cutoff) {
                it.remove(); // the server has given up on the message long since
            }
        }
        try {
            JSONObject all = new JSONObject();
            for (Map.Entry<String, Long> e : putBack.entrySet()) {
                all.put(e.getKey(), e.getValue().longValue());
            }
            storage.write(PUT_BACK_DOCUMENT, all.toString());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
    }

    private static void addAll(TreeSet<Integer> into, JSONArray parts) throws JSONException {
        for (int i = 0; i < parts.length(); i++) {
            into.add(parts.getInt(i));
        }
    }

    private void save() throws IOException {
        long cutoff = clock.now() - FORGET_AFTER_MILLIS;
        Iterator<Tracked> it = tracked.values().iterator();
        while (it.hasNext()) {
            if (it.next().since < cutoff) {
                it.remove(); // no delivery report ever came (many networks send none)
            }
        }
        try {
            JSONObject all = new JSONObject();
            for (Map.Entry<String, Tracked> e : tracked.entrySet()) {
                Tracked t = e.getValue();
                JSONObject o = new JSONObject()
                    .put("parts", t.parts)
                    .put("since", t.since)
                    .put("sent_reported", t.sentReported)
                    .put("sent", new JSONArray(t.sent))
                    .put("delivered", new JSONArray(t.delivered));
                if (t.simSlot != null) {
                    o.put("sim_slot", t.simSlot.intValue());
                }
                if (t.encrypted) {
                    o.put("encrypted", true);
                }
                all.put(e.getKey(), o);
            }
            storage.write(DOCUMENT, all.toString());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
    }
}
