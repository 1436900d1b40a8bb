package com.connecfy.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UnsupportedEncodingException;
import java.net.HttpURLConnection;
import java.net.URL;
import java.net.URLEncoder;
import java.nio.charset.Charset;
import java.util.List;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The phone's side of the Connecfy HTTP API over {@link HttpURLConnection}: register with
 * a pairing code, then heartbeat, claim tasks, report statuses and received SMS with the device token
 * (sent as {@code X-Device-Token}). Every error status becomes an {@link ApiException}
 * carrying the JSON error body and any {@code Retry-After}. A claim that waits on the
 * server reads for {@link #WAIT_READ_MARGIN_MILLIS} longer than its wait; every other call
 * keeps the read timeout set with {@link #timeouts}.
 */
public final class ApiClient implements DeviceApi {
    private static final Charset UTF8 = Charset.forName("UTF-8");
    private static final int MAX_BODY_BYTES = 4 * 1024 * 1024;
    /** How much longer than its {@code wait} a waiting claim reads before giving up on the server. */
    public static final int WAIT_READ_MARGIN_MILLIS = 15000;

    private final String server;
    private final String deviceId;
    private final String deviceToken;
    private final String userAgent;
    private final Clock clock;
    private int connectTimeoutMillis = 10000;
    private int readTimeoutMillis = 20000;
    /** The claim waiting on the server now, for {@link #interruptWait}; null when none. */
    private volatile HttpURLConnection waitingClaim;

    /** A client for {@link #register} only (no device yet). */
    public ApiClient(String server, String userAgent, Clock clock) {
        this(server, null, null, userAgent, clock);
    }

    public ApiClient(DeviceCredentials credentials, String userAgent, Clock clock) {
        this(credentials.server, credentials.deviceId, credentials.deviceToken, userAgent, clock);
    }

    private ApiClient(String server, String deviceId, String deviceToken, String userAgent, Clock clock) {
        this.server = PairingPayload.normalizeServer(server);
        this.deviceId = deviceId;
        this.deviceToken = deviceToken;
        this.userAgent = userAgent;
        this.clock = clock;
    }

    public ApiClient timeouts(int connectMillis, int readMillis) {
        this.connectTimeoutMillis = connectMillis;
        this.readTimeoutMillis = readMillis;
        return this;
    }

    /**
     * {@code POST /api/devices/register/}: redeems the one-time code. The phone number is
     * sent only when given (the user chose to share it).
     */
    public DeviceCredentials register(String code, String deviceName, String phoneNumber)
            throws IOException, ApiException {
        try {
            JSONObject body = new JSONObject().put("code", PairingPayload.normalizeCode(code))
                .put("device_name", deviceName);
            if (phoneNumber != null && !phoneNumber.trim().isEmpty()) {
                body.put("phone_number", phoneNumber.trim());
            }
            JSONObject reply = new JSONObject(call("POST", "/api/devices/register/", body, false));
            return new DeviceCredentials(server, reply.getString("device_id"), reply.getString("device_token"),
                reply.optString("device_name", deviceName), clock.now());
        } catch (JSONException e) {
            throw new IOException("unreadable answer to register: " + e.getMessage(), e);
        }
    }

    @Override
    public String heartbeat(Heartbeat heartbeat) throws IOException, ApiException {
        try {
            String reply = call("POST", "/api/devices/" + segment(deviceId) + "/heartbeat/", heartbeat.toJson(), true);
            return new JSONObject(reply).optString("last_seen", "");
        } catch (JSONException e) {
            throw new IOException("unreadable answer to heartbeat: " + e.getMessage(), e);
        }
    }

    @Override
    public List<Task> claimTasks(int limit, int waitSeconds) throws IOException, ApiException {
        String path = "/api/devices/" + segment(deviceId) + "/tasks/?limit=" + limit;
        if (waitSeconds > 0) {
            path += "&wait=" + waitSeconds;
        }
        try {
            String reply = call("GET", path, null, true, readTimeoutMillis(waitSeconds), waitSeconds > 0);
            return Task.listFromJson(new JSONArray(reply));
        } catch (JSONException e) {
            throw new IOException("unreadable answer to tasks: " + e.getMessage(), e);
        }
    }

    /**
     * The read timeout of a claim that asks the server to wait {@code waitSeconds}: longer
     * than the wait, so a server that holds the claim is not taken for a dead one.
     */
    int readTimeoutMillis(int waitSeconds) {
        if (waitSeconds <= 0) {
            return readTimeoutMillis;
        }
        return Math.max(readTimeoutMillis, waitSeconds * 1000 + WAIT_READ_MARGIN_MILLIS);
    }

    /** Disconnects the claim waiting on the server, if any: it throws an IOException at once. */
    @Override
    public void interruptWait() {
        HttpURLConnection claim = waitingClaim;
        if (claim != null) {
            try {
                claim.disconnect();
            } catch (RuntimeException e) {
                // The claim then ends at its read timeout.
            }
        }
    }

    @Override
    public void reportStatus(String messageId, String status, String error, boolean retryable, Integer simSlot)
            throws IOException, ApiException {
        reportStatus(messageId, status, error, retryable, simSlot, null);
    }

    @Override
    public void reportStatus(String messageId, String status, String error, boolean retryable, Integer simSlot,
            Integer segments) throws IOException, ApiException {
        try {
            JSONObject body = new JSONObject().put("status", status);
            if (error != null && !error.isEmpty()) {
                body.put("error", error);
            }
            if (retryable) {
                body.put("retryable", true);
            }
            if (simSlot != null) {
                body.put("sim_slot", simSlot.intValue());
            }
            if (segments != null) {
                body.put("segments", segments.intValue());
            }
            call("POST", "/api/sms/" + segment(messageId) + "/status/", body, true);
        } catch (JSONException e) {
            throw new IOException("cannot build status report: " + e.getMessage(), e);
        }
    }

    /**
     * A 2xx counts only with the server's JSON naming the stored SMS ({@code id}): a Wi-Fi
     * login page answering 200 to everything must not make the phone drop the SMS. Anything
     * else is an IOException, retried with the same {@code ref}.
     */
    @Override
    public String reportInbound(InboundSms sms) throws IOException, ApiException {
        JSONObject body;
        try {
            body = sms.toJson();
        } catch (JSONException e) {
            throw new IOException("cannot build inbound report: " + e.getMessage(), e);
        }
        String reply = call("POST", "/api/devices/" + segment(deviceId) + "/inbound/", body, true);
        String id;
        try {
            id = new JSONObject(reply).optString("id", "");
        } catch (JSONException e) {
            throw new IOException("unreadable answer to inbound: " + e.getMessage(), e);
        }
        if (id.isEmpty()) {
            throw new IOException("the answer to inbound names no id");
        }
        return id;
    }

    private String call(String method, String path, JSONObject body, boolean authenticated)
            throws IOException, ApiException {
        return call(method, path, body, authenticated, readTimeoutMillis, false);
    }

    private String call(String method, String path, JSONObject body, boolean authenticated, int readTimeout,
            boolean interruptible) throws IOException, ApiException {
        if (authenticated && deviceToken == null) {
            throw new IllegalStateException("this client has no device token");
        }
        HttpURLConnection connection = (HttpURLConnection) new URL(server + path).openConnection();
        if (interruptible) {
            waitingClaim = connection;
        }
        try {
            connection.setRequestMethod(method);
            connection.setConnectTimeout(connectTimeoutMillis);
            connection.setReadTimeout(readTimeout);
            connection.setUseCaches(false);
            connection.setInstanceFollowRedirects(false);
            connection.setRequestProperty("Accept", "application/json");
            if (userAgent != null) {
                connection.setRequestProperty("User-Agent", userAgent);
            }
            if (authenticated) {
                connection.setRequestProperty("X-Device-Token", deviceToken);
            }
            if (body != null) {
                byte[] bytes = body.toString().getBytes(UTF8);
                connection.setDoOutput(true);
                // Buffered, not setFixedLengthStreamingMode: in streaming mode the JDK's
                // HttpURLConnection gives no error body for a 401, and the body tells the
                // server's refusal of the token from a proxy's page. The bodies are small.
                connection.setRequestProperty("Content-Type", "application/json");
                OutputStream out = connection.getOutputStream();
                try {
                    out.write(bytes);
                } finally {
                    out.close();
                }
            }
            int status = connection.getResponseCode();
            if (status >= 200 && status < 300) {
                return readAll(connection.getInputStream());
            }
            String text = readAll(connection.getErrorStream());
            long retryAfter = RetryAfter.parseMillis(connection.getHeaderField("Retry-After"), clock.now());
            throw error(status, connection.getContentType(), text, retryAfter);
        } finally {
            if (interruptible && waitingClaim == connection) {
                waitingClaim = null;
            }
            connection.disconnect();
        }
    }

    /**
     * The error for an answer. Only a body served as {@code application/json} that is the
     * server's error object (its {@code status_code} the HTTP status, a {@code code}) counts
     * as the server's own word; anything else (a proxy's, a CDN's or a captive portal's
     * page) keeps {@code http_<status>}.
     */
    static ApiException error(int status, String contentType, String text, long retryAfterMillis) {
        String code = "http_" + status;
        String detail = "the server answered HTTP " + status;
        boolean serverJson = false;
        if (isJson(contentType)) {
            try {
                JSONObject o = new JSONObject(text);
                String named = o.optString("code", "");
                if (o.optInt("status_code", -1) == status && !named.isEmpty()) {
                    code = named;
                    detail = o.optString("detail", detail);
                    serverJson = true;
                }
            } catch (JSONException e) {
                // Not our JSON error shape: keep the status-based words.
            }
        }
        return new ApiException(status, code, detail, retryAfterMillis, serverJson);
    }

    private static boolean isJson(String contentType) {
        if (contentType == null) {
            return false;
        }
        int semicolon = contentType.indexOf(';');
        String type = (semicolon < 0 ? contentType : contentType.substring(0, semicolon)).trim();
        return type.equalsIgnoreCase("application/json");
    }

    private static String readAll(InputStream in) throws IOException {
        if (in == null) {
            return "";
        }
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buffer = new byte[8192];
            int n;
            while ((n = in.read(buffer)) > 0) {
                if (out.size() + n > MAX_BODY_BYTES) {
                    throw new IOException("answer larger than " + MAX_BODY_BYTES + " bytes");
                }
                out.write(buffer, 0, n);
            }
            return new String(out.toByteArray(), UTF8);
        } finally {
            in.close();
        }
    }

    private static String segment(String id) {
        try {
            return URLEncoder.encode(id, "UTF-8").replace("+", "%20");
        } catch (UnsupportedEncodingException e) {
            throw new AssertionError(e);
        }
    }
}
