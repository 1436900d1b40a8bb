package com.connecfy.core;

import java.util.ArrayList;
import java.util.List;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/** One message the server handed this phone to send. */
public final class Task {
    public final String id;
    public final String to;
    public final String message;
    /**
     * The SIM slot the sender asked for, 1-based as the server counts (1-4); null: the
     * app's SIM ({@link SimChoice}). A value that is not a whole number reads as 0, which
     * no phone has, so the message fails rather than going out from another SIM.
     */
    public final Integer simSlot;
    /**
     * {@link #message} is an end-to-end envelope ({@link Envelope}) that the phone opens
     * with its passphrase before sending; false for plain text.
     */
    public final boolean encrypted;

    public Task(String id, String to, String message) {
        this(id, to, message, null);
    }

    public Task(String id, String to, String message, Integer simSlot) {
        this(id, to, message, simSlot, false);
    }

    public Task(String id, String to, String message, Integer simSlot, boolean encrypted) {
        this.id = id;
        this.to = to;
        this.message = message;
        this.simSlot = simSlot;
        this.encrypted = encrypted;
    }

    /** The same task with its envelope opened: {@code text} to send, no longer encrypted. */
    Task opened(String text) {
        return new Task(id, to, text, simSlot, false);
    }

    static List<Task> listFromJson(JSONArray array) throws JSONException {
        List<Task> tasks = new ArrayList<Task>(array.length());
        for (int i = 0; i < array.length(); i++) {
            JSONObject item = array.getJSONObject(i);
            tasks.add(new Task(item.getString("id"), item.getString("to"), item.getString("message"),
                simSlot(item), item.optBoolean("encrypted", false)));
        }
        return tasks;
    }

    private static Integer simSlot(JSONObject item) {
        if (!item.has("sim_slot") || item.isNull("sim_slot")) {
            return null;
        }
        Object value = item.opt("sim_slot");
        if (value instanceof Integer || value instanceof Long) {
            long slot = ((Number) value).longValue();
            return slot >= 0 && slot <= Integer.MAX_VALUE ? Integer.valueOf((int) slot) : Integer.valueOf(0);
        }
        return 0;
    }

    @Override
    public String toString() {
        return "Task(" + id + " to " + to + (simSlot == null ? "" : " from SIM " + simSlot)
            + (encrypted ? ", encrypted" : "") + ")";
    }
}
