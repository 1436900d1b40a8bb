package com.connecfy.core;

import java.io.IOException;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * Ids of messages this phone has handed to the SMS stack, kept across restarts. The
 * server redelivers a message whose lease ran out before its report arrived; an id found
 * here is never sent again. An id is recorded before the message is sent, so a crash in
 * between loses a message rather than sending it twice. Ids are forgotten after
 * {@code retentionMillis} (longer than a message can live on the server), the oldest
 * first when more than {@code maxIds} are kept.
 *
 * <p>On disk the ids are a log, {@value #LOG}: one line {@code ["<id>",<wall time>]} is
 * appended (and synced) per id, so a send writes ~45 bytes however many ids are kept.
 * When the lines of forgotten ids outnumber a quarter of the kept ones (and at least
 * {@value #MIN_GARBAGE_LINES}), the log is compacted: rewritten whole with the kept ids,
 * atomically. So the log stays under 1.25 times the kept ids plus
 * {@value #MIN_GARBAGE_LINES} lines. A line cut short by a crash during an append (or
 * any line that does not read) is skipped, and the log rewritten at once so the next
 * append starts on a line of its own. The ids of the earlier format, one JSON document
 * {@value #DOCUMENT}, are read once and moved into the log.
 */
public final class SentIds {
    /** The earlier format: every id in one JSON object, rewritten whole per send. */
    static final String DOCUMENT = "sent-ids.json";
    static final String LOG = "sent-ids.log";
    public static final long DEFAULT_RETENTION_MILLIS = 3L * 24 * 60 * 60 * 1000;
    static final int MAX_IDS = 50000;
    static final int MIN_GARBAGE_LINES = 1000;

    private final Storage storage;
    private final Clock clock;
    private final long retentionMillis;
    private final int maxIds;
    private final LinkedHashMap<String, Long> ids = new LinkedHashMap<String, Long>();
    /** Lines in the log, of kept and of forgotten ids. */
    private int logLines;

    public SentIds(Storage storage, Clock clock, long retentionMillis) throws IOException {
        this(storage, clock, retentionMillis, MAX_IDS);
    }

    SentIds(Storage storage, Clock clock, long retentionMillis, int maxIds) throws IOException {
        this.storage = storage;
        this.clock = clock;
        this.retentionMillis = retentionMillis;
        this.maxIds = maxIds;
        boolean legacy = readLegacy();
        boolean damaged = readLog();
        forgetOld(clock.now());
        if (legacy || damaged) {
            compact();
        }
        if (legacy) {
            storage.delete(DOCUMENT);
        }
    }

    private boolean readLegacy() throws IOException {
        String text = storage.read(DOCUMENT);
        if (text == null) {
            return false;
        }
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
        return true;
    }

    /** Reads the log; true when a line was cut short or unreadable. */
    private boolean readLog() throws IOException {
        String text = storage.read(LOG);
        if (text == null) {
            return false;
        }
        boolean damaged = false;
        int start = 0;
        while (start < text.length()) {
            int end = text.indexOf('\n', start);
            if (end < 0) {
                damaged = true; // the last append was cut short
                break;
            }
            String line = text.substring(start, end);
            start = end + 1;
            logLines++;
            try {
                JSONArray entry = new JSONArray(line);
                String id = entry.getString(0);
                ids.remove(id);
                ids.put(id, entry.getLong(1));
            } catch (JSONException e) {
                damaged = true;
            }
        }
        return damaged;
    }

    public synchronized boolean contains(String id) {
        return ids.containsKey(id);
    }

    public synchronized int size() {
        return ids.size();
    }

    /**
     * Records the id, on disk when this returns; false if it was there already (the
     * message must not be sent). An IOException: the id is not recorded.
     */
    public synchronized boolean add(String id) throws IOException {
        if (ids.containsKey(id)) {
            return false;
        }
        long now = clock.now();
        storage.append(LOG, line(id, now));
        ids.put(id, now);
        logLines++;
        forgetOld(now);
        if (logLines - ids.size() > Math.max(MIN_GARBAGE_LINES, ids.size() / 4)) {
            try {
                compact();
            } catch (IOException e) {
                // The id is in the log already; a later add compacts again.
            }
        }
        return true;
    }

    /** How many lines the log holds (kept and forgotten ids). */
    synchronized int logLines() {
        return logLines;
    }

    private void forgetOld(long now) {
        Iterator<Map.Entry<String, Long>> it = ids.entrySet().iterator();
        while (it.hasNext()) {
            Map.Entry<String, Long> e = it.next();
            if (ids.size() > maxIds || e.getValue() < now - retentionMillis) {
                it.remove();
            }
        }
    }

    /** Rewrites the log with the kept ids only, atomically. */
    private void compact() throws IOException {
        StringBuilder text = new StringBuilder(ids.size() * 48);
        for (Map.Entry<String, Long> e : ids.entrySet()) {
            text.append(line(e.getKey(), e.getValue()));
        }
        storage.write(LOG, text.toString());
        logLines = ids.size();
    }

    private static String line(String id, long at) {
        return new JSONArray().put(id).put(at).toString() + "\n";
    }
}
