package com.connecfy.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The dashboard's side of the real server, as the integration test needs it: sign up,
 * make pairing codes, send messages, read them back. Keeps the session cookies and
 * echoes the CSRF cookie on unsafe methods, as the dashboard pages do.
 */
final class Dashboard {
    private final String url;
    private final Map<String, String> cookies = new LinkedHashMap<String, String>();

    Dashboard(String url) {
        this.url = url;
    }

    void signup(String email, String password) throws IOException, JSONException {
        expect(201, "POST", "/api/auth/signup/", new JSONObject().put("email", email).put("password", password)
            .put("account_type", "self_managed"));
    }

    String pairingCode() throws IOException, JSONException {
        return new JSONObject(expect(201, "POST", "/api/devices/pairing-codes/", null)).getString("code");
    }

    String send(String deviceId, String to, String message) throws IOException, JSONException {
        return send(deviceId, to, message, null);
    }

    /** A message to one device, from the SIM in {@code simSlot} (1-based; null: the phone's choice). */
    String send(String deviceId, String to, String message, Integer simSlot) throws IOException, JSONException {
        JSONObject body = new JSONObject().put("device_id", deviceId).put("to", to).put("message", message);
        if (simSlot != null) {
            body.put("sim_slot", simSlot.intValue());
        }
        return new JSONObject(expect(202, "POST", "/api/sms/send/", body)).getString("id");
    }

    /** An end-to-end encrypted message to one device: {@code envelope} is its {@code v1:} envelope. */
    String sendEncrypted(String deviceId, String to, String envelope) throws IOException, JSONException {
        JSONObject body = new JSONObject().put("device_id", deviceId).put("to", to).put("message", envelope)
            .put("encrypted", true);
        return new JSONObject(expect(202, "POST", "/api/sms/send/", body)).getString("id");
    }

    JSONObject message(String id) throws IOException, JSONException {
        return new JSONObject(expect(200, "GET", "/api/sms/" + id + "/", null));
    }

    JSONObject device(String deviceId) throws IOException, JSONException {
        JSONArray devices = new JSONArray(expect(200, "GET", "/api/devices/", null));
        for (int i = 0; i < devices.length(); i++) {
            if (devices.getJSONObject(i).getString("device_id").equals(deviceId)) {
                return devices.getJSONObject(i);
            }
        }
        throw new AssertionError("device " + deviceId + " not listed: " + devices);
    }

    void removeDevice(String deviceId) throws IOException {
        expect(204, "DELETE", "/api/devices/" + deviceId + "/", null);
    }

    private String expect(int status, String method, String path, JSONObject body) throws IOException {
        HttpURLConnection c = (HttpURLConnection) new URL(url + path).openConnection();
        c.setRequestMethod(method);
        c.setConnectTimeout(5000);
        c.setReadTimeout(10000);
        StringBuilder cookie = new StringBuilder();
        for (Map.Entry<String, String> e : cookies.entrySet()) {
            cookie.append(cookie.length() == 0 ? "" : "; ").append(e.getKey()).append('=').append(e.getValue());
        }
        if (cookie.length() > 0) {
            c.setRequestProperty("Cookie", cookie.toString());
        }
        if (!method.equals("GET") && cookies.containsKey("csrftoken")) {
            c.setRequestProperty("X-CSRFToken", cookies.get("csrftoken"));
        }
        if (body != null) {
            c.setDoOutput(true);
            c.setRequestProperty("Content-Type", "application/json");
            OutputStream out = c.getOutputStream();
            out.write(body.toString().getBytes(StandardCharsets.UTF_8));
            out.close();
        }
        int got = c.getResponseCode();
        for (Map.Entry<String, List<String>> field : c.getHeaderFields().entrySet()) {
            if (field.getKey() == null || !field.getKey().equalsIgnoreCase("Set-Cookie")) {
                continue;
            }
            for (String header : field.getValue()) {
                String pair = header.split(";", 2)[0];
                int eq = pair.indexOf('=');
                if (eq > 0) {
                    cookies.put(pair.substring(0, eq).trim(), pair.substring(eq + 1).trim());
                }
            }
        }
        String text = read(got >= 400 ? c.getErrorStream() : c.getInputStream());
        c.disconnect();
        if (got != status) {
            throw new AssertionError(method + " " + path + " -> " + got + " " + text + " (wanted " + status + ")");
        }
        return text;
    }

    private static String read(InputStream in) throws IOException {
        if (in == null) {
            return "";
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buffer = new byte[8192];
        int n;
        while ((n = in.read(buffer)) > 0) {
            out.write(buffer, 0, n);
        }
        in.close();
        return new String(out.toByteArray(), StandardCharsets.UTF_8);
    }
}
