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
 */
public final class SendResults {
    static final String DOCUMENT = "parts.json";
    static final long FORGET_AFTER_MILLIS = 3L * 24 * 60 * 60 * 1000;

    private static final class Tracked {
        final int parts;
        final long since;
        final TreeSet<Integer> sent = new TreeSet<Integer>();
        final TreeSet<Integer> delivered = new TreeSet<Integer>();
        boolean sentReported;

        Tracked(int parts, long since) {
            this.parts = parts;
            this.since = since;
        }
    }

    private final Storage storage;
    private final Outbox outbox;
    private final DailyCounts counts;
    private final Clock clock;
    private final Map<String, Tracked> tracked = new LinkedHashMap<String, Tracked>();
    /** The last part that failed for want of radio: its error and when (monotonic clock). */
    private volatile String radioFailure;
    private volatile long radioFailureAt;

    public SendResults(Storage storage, Outbox outbox, DailyCounts counts, Clock clock) throws IOException {
        this.storage = storage;
        this.outbox = outbox;
        this.counts = counts;
        this.clock = clock;
        load();
    }

    /** The message was handed to the SMS stack in {@code parts} parts. */
    public synchronized void dispatched(String messageId, int parts) throws IOException {
        tracked.put(messageId, new Tracked(Math.max(1, parts), clock.now()));
        save();
    }

    /** The SMS stack refused the message outright (the send call threw). */
    public synchronized void notSent(String messageId, Throwable error) throws IOException {
        fail(messageId, SmsErrors.notSent(error));
    }

    /**
     * The message was claimed and its id recorded, but it never reached the SMS stack (a
     * storage error in between, or the app died there): reported failed with {@code error}.
     * The outbox gets the report first, so a storage error after it still lets it be sent.
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
            fail(messageId, SmsErrors.sendFailure(resultCode));
            return;
        }
        if (!t.sent.add(part)) {
            return;
        }
        if (t.sent.size() >= t.parts) {
            t.sentReported = true;
            outbox.add(messageId, Outbox.SENT, "");
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
            fail(messageId, SmsErrors.deliveryFailure(tpStatus));
            return;
        }
        if (t.delivered.add(part)) {
            finishIfDelivered(messageId, t);
            save();
        }
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
    }

    private void finishIfDelivered(String messageId, Tracked t) throws IOException {
        if (t.sentReported && t.delivered.size() >= t.parts) {
            outbox.add(messageId, Outbox.DELIVERED, "");
            tracked.remove(messageId);
        }
    }

    private void fail(String messageId, String error) throws IOException {
        if (tracked.remove(messageId) == null) {
            return;
        }
        outbox.add(messageId, Outbox.FAILED, error);
        counts.countFailed();
        save();
    }

    private void load() throws IOException {
        String text = storage.read(DOCUMENT);
        if (text == null) {
            return;
        }
        try {
            JSONObject all = new JSONObject(text);
            Iterator<?> keys = all.keys();
            while (keys.hasNext()) {
                String id = (String) keys.next();
                JSONObject o = all.getJSONObject(id);
                Tracked t = new Tracked(o.getInt("parts"), o.getLong("since"));
                t.sentReported = o.optBoolean("sent_reported", false);
                addAll(t.sent, o.getJSONArray("sent"));
                addAll(t.delivered, o.getJSONArray("delivered"));
                tracked.put(id, t);
            }
        } catch (JSONException e) {
            throw new UnreadableDocumentException(DOCUMENT, e);
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
                all.put(e.getKey(), new JSONObject()
                    .put("parts", t.parts)
                    .put("since", t.since)
                    .put("sent_reported", t.sentReported)
                    .put("sent", new JSONArray(t.sent))
                    .put("delivered", new JSONArray(t.delivered)));
            }
            storage.write(DOCUMENT, all.toString());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
    }
}
