package com.connecfy.core;

import org.json.JSONException;
import org.json.JSONObject;

/** What a heartbeat tells the server about the phone; each field optional. */
public final class Heartbeat {
    static final int MAX_CHARS = 32;

    public final Integer battery;
    public final String androidVersion;
    public final String appVersion;

    public Heartbeat(Integer battery, String androidVersion, String appVersion) {
        this.battery = battery == null ? null : Math.max(0, Math.min(100, battery));
        this.androidVersion = clip(androidVersion);
        this.appVersion = clip(appVersion);
    }

    private static String clip(String s) {
        return s == null || s.length() <= MAX_CHARS ? s : s.substring(0, MAX_CHARS);
    }

    JSONObject toJson() throws JSONException {
        JSONObject o = new JSONObject();
        if (battery != null) {
            o.put("battery", battery.intValue());
        }
        if (androidVersion != null) {
            o.put("android_version", androidVersion);
        }
        if (appVersion != null) {
            o.put("app_version", appVersion);
        }
        return o;
    }

    /** Where the phone's current values come from (the battery changes between beats). */
    public interface Source {
        Heartbeat current();
    }
}
