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

    public Task(String id, String to, String message) {
        this.id = id;
        this.to = to;
        this.message = message;
    }

    static List<Task> listFromJson(JSONArray array) throws JSONException {
        List<Task> tasks = new ArrayList<Task>(array.length());
        for (int i = 0; i < array.length(); i++) {
            JSONObject item = array.getJSONObject(i);
            tasks.add(new Task(item.getString("id"), item.getString("to"), item.getString("message")));
        }
        return tasks;
    }

    @Override
    public String toString() {
        return "Task(" + id + " to " + to + ")";
    }
}
