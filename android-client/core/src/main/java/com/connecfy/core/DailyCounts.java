package com.connecfy.core;

import java.io.IOException;
import java.util.Calendar;
import java.util.TimeZone;

import org.json.JSONException;
import org.json.JSONObject;

/** Messages sent and failed today (the phone's local day), for the main screen. */
public final class DailyCounts {
    static final String DOCUMENT = "counts.json";

    private final Storage storage;
    private final Clock clock;
    private final TimeZone zone;
    private String day = "";
    private int sent;
    private int failed;
    /** The counts as of the last change, read without the lock (for the screen). */
    private volatile String[] shown = {"", "0", "0"};

    public DailyCounts(Storage storage, Clock clock, TimeZone zone) throws IOException {
        this.storage = storage;
        this.clock = clock;
        this.zone = zone;
        String text = storage.read(DOCUMENT);
        if (text != null) {
            try {
                JSONObject o = new JSONObject(text);
                day = o.getString("day");
                sent = o.getInt("sent");
                failed = o.getInt("failed");
            } catch (JSONException e) {
                throw new UnreadableDocumentException(DOCUMENT, e);
            }
        }
        publish();
    }

    /** Never waits for the lock (a write to the disk may hold it). */
    public int sentToday() {
        String[] s = shown;
        return s[0].equals(today()) ? Integer.parseInt(s[1]) : 0;
    }

    /** Never waits for the lock (a write to the disk may hold it). */
    public int failedToday() {
        String[] s = shown;
        return s[0].equals(today()) ? Integer.parseInt(s[2]) : 0;
    }

    public synchronized void countSent() throws IOException {
        roll();
        sent++;
        publish();
        save();
    }

    public synchronized void countFailed() throws IOException {
        roll();
        failed++;
        publish();
        save();
    }

    private void publish() {
        shown = new String[] {day, Integer.toString(sent), Integer.toString(failed)};
    }

    private String today() {
        Calendar c = Calendar.getInstance(zone);
        c.setTimeInMillis(clock.now());
        return c.get(Calendar.YEAR) + "-" + (c.get(Calendar.MONTH) + 1) + "-" + c.get(Calendar.DAY_OF_MONTH);
    }

    private void roll() {
        String today = today();
        if (!today.equals(day)) {
            day = today;
            sent = 0;
            failed = 0;
        }
    }

    private void save() throws IOException {
        try {
            storage.write(DOCUMENT, new JSONObject().put("day", day).put("sent", sent).put("failed", failed).toString());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
    }
}
