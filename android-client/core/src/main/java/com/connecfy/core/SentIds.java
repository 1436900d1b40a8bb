package com.connecfy.core;

import java.io.IOException;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

import org.json.JSONException;
import org.json.JSONObject;

/**
 * Ids of messages this phone has handed to the SMS stack, kept across restarts. The
 * server redelivers a message whose lease ran out before its report arrived; an id found
 * here is never sent again. An id is recorded before the message is sent, so a crash in
 * between loses a message rather than sending it twice. Ids are forgotten after
 * {@code retentionMillis} (longer than a message can live on the server).
 */
public final class SentIds {
    static final String DOCUMENT = "sent-ids.json";
    public static final long DEFAULT_RETENTION_MILLIS = 3L * 24 * 60 * 60 * 1000;
    static final int MAX_IDS = 50000;

    private final Storage storage;
    private final Clock clock;
    private final long retentionMillis;
    private final LinkedHashMap<String, Long> ids = new LinkedHashMap<String, Long>();

    public SentIds(Storage storage, Clock clock, long retentionMillis) throws IOException {
        this.storage = storage;
        this.clock = clock;
        this.retentionMillis = retentionMillis;
        String text = storage.read(DOCUMENT);
        if (text != null) {
            try {
                JSONObject o = new JSONObject(text);
                Iterator<?> keys = o.keys();
                while (keys.hasNext()) {
                    String id = (String) keys.next();
                    ids.put(id, o.getLong(id));
                }
            } catch (JSONException e) {
                throw new UnreadableDocumentException(DOCUMENT, e);
            }
        }
    }

    public synchronized boolean contains(String id) {
        return ids.containsKey(id);
    }

    public synchronized int size() {
        return ids.size();
    }

    /** Records the id; false if it was there already (the message must not be sent). */
    public synchronized boolean add(String id) throws IOException {
        if (ids.containsKey(id)) {
            return false;
        }
        long now = clock.now();
        ids.put(id, now);
        Iterator<Map.Entry<String, Long>> it = ids.entrySet().iterator();
        while (it.hasNext()) {
            Map.Entry<String, Long> e = it.next();
            if (ids.size() > MAX_IDS || e.getValue() < now - retentionMillis) {
                it.remove();
            }
        }
        try {
            JSONObject o = new JSONObject();
            for (Map.Entry<String, Long> e : ids.entrySet()) {
                o.put(e.getKey(), e.getValue().longValue());
            }
            storage.write(DOCUMENT, o.toString());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
        return true;
    }
}
