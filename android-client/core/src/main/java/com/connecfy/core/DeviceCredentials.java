package com.connecfy.core;

import org.json.JSONException;
import org.json.JSONObject;

/** What registering gave this phone: who it is on which server, and its secret token. */
public final class DeviceCredentials {
    public final String server;
    public final String deviceId;
    public final String deviceToken;
    public final String deviceName;
    public final long pairedAt;

    public DeviceCredentials(String server, String deviceId, String deviceToken, String deviceName, long pairedAt) {
        this.server = server;
        this.deviceId = deviceId;
        this.deviceToken = deviceToken;
        this.deviceName = deviceName;
        this.pairedAt = pairedAt;
    }

    String toJson() throws JSONException {
        return new JSONObject()
            .put("server", server)
            .put("device_id", deviceId)
            .put("device_token", deviceToken)
            .put("device_name", deviceName)
            .put("paired_at", pairedAt)
            .toString();
    }

    static DeviceCredentials fromJson(String text) throws JSONException {
        JSONObject o = new JSONObject(text);
        return new DeviceCredentials(o.getString("server"), o.getString("device_id"), o.getString("device_token"),
            o.optString("device_name", ""), o.optLong("paired_at", 0));
    }
}
