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
    }

    public synchronized int sentToday() {
        roll();
        return sent;
    }

    public synchronized int failedToday() {
        roll();
        return failed;
    }

    public synchronized void countSent() throws IOException {
        roll();
        sent++;
        save();
    }

    public synchronized void countFailed() throws IOException {
        roll();
        failed++;
        save();
    }

    private void roll() {
        Calendar c = Calendar.getInstance(zone);
        c.setTimeInMillis(clock.now());
        String today = c.get(Calendar.YEAR) + "-" + (c.get(Calendar.MONTH) + 1) + "-" + c.get(Calendar.DAY_OF_MONTH);
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
