package com.connecfy.core;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.Iterator;

import org.json.JSONArray;
import org.json.JSONException;

/**
 * Keeps the phone under Android's own limit on SMS parts per app (30 in a sliding 60 s
 * window by default; past it Android asks the user to confirm each message and the
 * gateway stalls). Counts parts, not messages, and remembers recent sends across an app
 * restart. A message with more parts than the whole limit goes out when the window is
 * empty.
 *
 * <p>Times are wall time (they are kept on disk, across reboots, where no monotonic clock
 * lasts). A send that seems to lie in the future (the phone's clock was set back) counts
 * as sent now, so no wait is ever longer than one window.
 */
public final class SendPacer {
    static final String DOCUMENT = "pacer.json";
    public static final int DEFAULT_PARTS_PER_WINDOW = 30;
    /** A second more than Android's 60 s, so clock granularity never tips a send over. */
    public static final long DEFAULT_WINDOW_MILLIS = 61000;

    private final Storage storage;
    private final int partsPerWindow;
    private final long windowMillis;
    private final ArrayDeque<long[]> sends = new ArrayDeque<long[]>(); // {time, parts}

    public SendPacer(Storage storage, int partsPerWindow, long windowMillis) throws IOException {
        if (partsPerWindow < 1 || windowMillis < 1) {
            throw new IllegalArgumentException("need a positive limit and window");
        }
        this.storage = storage;
        this.partsPerWindow = partsPerWindow;
        this.windowMillis = windowMillis;
        String text = storage.read(DOCUMENT);
        if (text != null) {
            try {
                JSONArray array = new JSONArray(text);
                for (int i = 0; i < array.length(); i++) {
                    JSONArray send = array.getJSONArray(i);
                    sends.add(new long[] {send.getLong(0), send.getLong(1)});
                }
            } catch (JSONException e) {
                throw new UnreadableDocumentException(DOCUMENT, e);
            }
        }
    }

    public int partsPerWindow() {
        return partsPerWindow;
    }

    /** Milliseconds until a message of {@code parts} parts may be sent (0: now). */
    public synchronized long waitMillis(int parts, long now) {
        notAfter(now);
        forgetBefore(now - windowMillis);
        long used = 0;
        for (long[] send : sends) {
            used += send[1];
        }
        if (used == 0 || used + parts <= partsPerWindow) {
            return 0;
        }
        // Walk the window oldest first until enough parts have left it.
        long freed = 0;
        long needed = parts > partsPerWindow ? used : used + parts - partsPerWindow;
        for (long[] send : sends) {
            freed += send[1];
            if (freed >= needed) {
                return Math.max(1, send[0] + windowMillis - now);
            }
        }
        return Math.max(1, sends.peekLast()[0] + windowMillis - now);
    }

    public synchronized void record(int parts, long now) throws IOException {
        notAfter(now);
        forgetBefore(now - windowMillis);
        sends.add(new long[] {now, parts});
        JSONArray array = new JSONArray();
        for (long[] send : sends) {
            array.put(new JSONArray().put(send[0]).put(send[1]));
        }
        storage.write(DOCUMENT, array.toString());
    }

    /** Sends recorded later than {@code now} (the clock went back) count as sent at {@code now}. */
    private void notAfter(long now) {
        for (long[] send : sends) {
            if (send[0] > now) {
                send[0] = now;
            }
        }
    }

    private void forgetBefore(long cutoff) {
        Iterator<long[]> it = sends.iterator();
        while (it.hasNext()) {
            if (it.next()[0] <= cutoff) {
                it.remove();
            } else {
                return;
            }
        }
    }
}
