package com.connecfy.core;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A scripted {@link DeviceApi} for timing tests: each call takes the next scripted
 * outcome for its endpoint (an exception to throw, or tasks to return) and is logged
 * with the fake clock's time. Unscripted calls succeed (no tasks).
 *
 * <p>Received SMS are stored as the server does: by {@code ref}, once; the first report
 * of a ref is answered 201 with a new id, any later one 200 with the same id
 * ({@link #inboundAnswers}). {@link #ANSWER_LOST} stores the SMS, then loses the answer.
 */
class FakeApi implements DeviceApi {
    final FakeClock clock;
    final List<String> log = new ArrayList<String>();
    final List<Long> heartbeatTimes = new ArrayList<Long>();
    final List<Long> pollTimes = new ArrayList<Long>();
    /** The {@code wait} each poll asked for. */
    final List<Integer> pollWaits = new ArrayList<Integer>();
    final List<String> reports = new ArrayList<String>();
    final ArrayDeque<Object> heartbeatScript = new ArrayDeque<Object>();
    final ArrayDeque<Object> pollScript = new ArrayDeque<Object>();
    final ArrayDeque<Object> reportScript = new ArrayDeque<Object>();
    final ArrayDeque<Object> inboundScript = new ArrayDeque<Object>();
    /** What the server stored: ref -> the SMS, in the order first stored. */
    final Map<String, InboundSms> inboundStored = new LinkedHashMap<String, InboundSms>();
    /** Every inbound request's ref, in order, whatever its answer. */
    final List<String> inboundRefs = new ArrayList<String>();
    /** "201 <id>" or "200 <id>" per inbound request the server answered with success. */
    final List<String> inboundAnswers = new ArrayList<String>();
    Heartbeat lastHeartbeat;

    /** An inbound script step: the server stores the SMS, but its answer never reaches the phone. */
    static final Object ANSWER_LOST = new Object();

    FakeApi(FakeClock clock) {
        this.clock = clock;
    }

    static ApiException status(int status) {
        return new ApiException(status, "code_" + status, "status " + status, -1);
    }

    /** The server's own answer to a token it does not know: JSON 401 {@code not_authenticated}. */
    static ApiException notAuthenticated() {
        return ApiClient.error(401, "application/json",
            "{\"status_code\":401,\"code\":\"not_authenticated\",\"detail\":\"unknown device token\"}", -1);
    }

    /** A 401 or 403 that is not the server's JSON: a proxy's, a CDN's or a captive portal's page. */
    static ApiException foreignPage(int status) {
        return ApiClient.error(status, "text/html", "<html><body>Access denied</body></html>", -1);
    }

    static ApiException tooMany(long retryAfterMillis) {
        return new ApiException(429, "rate_limited", "slow down", retryAfterMillis);
    }

    @Override
    public synchronized String heartbeat(Heartbeat heartbeat) throws IOException, ApiException {
        lastHeartbeat = heartbeat;
        heartbeatTimes.add(clock.now());
        log.add("heartbeat@" + clock.now());
        raise(heartbeatScript.poll());
        return "2025-01-01T00:00:00Z";
    }

    @Override
    @SuppressWarnings("unchecked")
    public synchronized List<Task> claimTasks(int limit, int waitSeconds) throws IOException, ApiException {
        pollTimes.add(clock.now());
        pollWaits.add(waitSeconds);
        log.add("poll@" + clock.now() + (waitSeconds > 0 ? " wait=" + waitSeconds : ""));
        Object next = pollScript.poll();
        raise(next);
        return next == null ? Collections.<Task>emptyList() : (List<Task>) next;
    }

    @Override
    public synchronized void reportStatus(String messageId, String status, String error)
            throws IOException, ApiException {
        log.add("report " + messageId + " " + status + "@" + clock.now());
        raise(reportScript.poll());
        reports.add(messageId + " " + status + (error.isEmpty() ? "" : " " + error));
    }

    @Override
    public synchronized String reportInbound(InboundSms sms) throws IOException, ApiException {
        log.add("inbound " + sms.ref + "@" + clock.now());
        inboundRefs.add(sms.ref);
        Object next = inboundScript.poll();
        raise(next);
        boolean known = inboundStored.containsKey(sms.ref);
        if (!known) {
            inboundStored.put(sms.ref, sms);
        }
        String id = "IN" + (new ArrayList<String>(inboundStored.keySet()).indexOf(sms.ref) + 1);
        if (next == ANSWER_LOST) {
            throw new IOException("connection reset before the answer");
        }
        inboundAnswers.add((known ? "200 " : "201 ") + id);
        return id;
    }

    /** The server's JSON 400 for input it will never take. */
    static ApiException badInput(String detail) {
        return ApiClient.error(400, "application/json",
            "{\"status_code\":400,\"code\":\"invalid_request\",\"detail\":\"" + detail + "\"}", -1);
    }

    /** A 503 with {@code Retry-After}, as the server sends when its store is away. */
    static ApiException unavailable(long retryAfterMillis) {
        return new ApiException(503, "unavailable", "try again shortly", retryAfterMillis, true);
    }

    private static void raise(Object outcome) throws IOException, ApiException {
        if (outcome instanceof IOException) {
            throw (IOException) outcome;
        }
        if (outcome instanceof ApiException) {
            throw (ApiException) outcome;
        }
    }

    static List<Task> tasks(String... ids) {
        List<Task> tasks = new ArrayList<Task>();
        for (String id : ids) {
            tasks.add(new Task(id, "+15551234567", "hello " + id));
        }
        return tasks;
    }
}
