package com.connecfy.core;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * A scripted {@link DeviceApi} for timing tests: each call takes the next scripted
 * outcome for its endpoint (an exception to throw, or tasks to return) and is logged
 * with the fake clock's time. Unscripted calls succeed (no tasks).
 *
 * <p>Received SMS are stored as the server does: by {@code ref}, once; the first report
 * of a ref is answered 201 with a new id, any later one 200 with the same id
 * ({@link #inboundAnswers}). {@link #ANSWER_LOST} stores the SMS, then loses the answer.
 *
 * <p>Polls: with {@link #holds} the server holds a poll with nothing scripted for its whole
 * {@code wait}, moving the fake clock on (a long-polling server); without it, it answers at
 * once (an older server). {@link #heldFor} scripts an answer after a given time, a
 * {@link Hold} one that waits on another thread until released or interrupted.
 */
class FakeApi implements DeviceApi {
    final FakeClock clock;
    final List<String> log = new ArrayList<String>();
    final List<Long> heartbeatTimes = new ArrayList<Long>();
    final List<Long> pollTimes = new ArrayList<Long>();
    /** The {@code wait} each poll asked for. */
    final List<Integer> pollWaits = new ArrayList<Integer>();
    /** The server holds polls with nothing to claim for their {@code wait}. */
    volatile boolean holds;
    private Hold holding;
    int interrupts;
    /** The status reports the server took, and every one it was sent, whatever its answer. */
    final List<String> reports = new ArrayList<String>();
    final List<String> reportsTried = new ArrayList<String>();
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

    /** A scripted poll answered after the server held it {@code millis} (fake time). */
    static final class Held {
        final long millis;
        final Object outcome;

        Held(long millis, Object outcome) {
            this.millis = millis;
            this.outcome = outcome;
        }
    }

    static Held heldFor(long millis, Object outcome) {
        return new Held(millis, outcome);
    }

    /**
     * A scripted poll that blocks its thread (not the fake's other calls) until {@link #release}d,
     * or until {@link #interruptWait} (then it throws an IOException).
     */
    static final class Hold {
        final CountDownLatch started = new CountDownLatch(1);
        private final CountDownLatch released = new CountDownLatch(1);
        private volatile Object outcome;

        /** The first release counts. */
        synchronized void release(Object outcome) {
            if (released.getCount() > 0) {
                this.outcome = outcome;
                released.countDown();
            }
        }

        void awaitStarted() throws InterruptedException {
            if (!started.await(10, TimeUnit.SECONDS)) {
                throw new AssertionError("the poll never started");
            }
        }
    }

    @Override
    @SuppressWarnings("unchecked")
    public List<Task> claimTasks(int limit, int waitSeconds) throws IOException, ApiException {
        Object next;
        synchronized (this) {
            pollTimes.add(clock.now());
            pollWaits.add(waitSeconds);
            log.add("poll@" + clock.now() + (waitSeconds > 0 ? " wait=" + waitSeconds : ""));
            next = pollScript.poll();
            if (next instanceof Hold) {
                holding = (Hold) next;
            }
        }
        if (next instanceof Hold) {
            Hold hold = (Hold) next;
            hold.started.countDown();
            try {
                if (!hold.released.await(10, TimeUnit.SECONDS)) {
                    throw new IOException("read timed out");
                }
            } catch (InterruptedException e) {
                throw new IOException("interrupted", e);
            }
            next = hold.outcome;
        } else if (next instanceof Held) {
            clock.advance(((Held) next).millis);
            next = ((Held) next).outcome;
        } else if (next == null && holds && waitSeconds > 0) {
            clock.advance(waitSeconds * 1000L);
        }
        raise(next);
        return next == null ? Collections.<Task>emptyList() : (List<Task>) next;
    }

    @Override
    public void interruptWait() {
        Hold hold;
        synchronized (this) {
            interrupts++;
            hold = holding;
        }
        if (hold != null) {
            hold.release(new IOException("Socket closed"));
        }
    }

    /**
     * A status report as {@link #reports} and the log spell it: {@code "<id> <status>"}, then
     * the error, {@code retryable} and {@code sim=<slot>} when the report has them.
     */
    static String report(String messageId, String status, String error, boolean retryable, Integer simSlot) {
        return messageId + " " + status + (error.isEmpty() ? "" : " " + error) + (retryable ? " retryable" : "")
            + (simSlot == null ? "" : " sim=" + simSlot);
    }

    @Override
    public synchronized void reportStatus(String messageId, String status, String error, boolean retryable,
            Integer simSlot) throws IOException, ApiException {
        reportStatus(messageId, status, error, retryable, simSlot, null);
    }

    @Override
    public synchronized void reportStatus(String messageId, String status, String error, boolean retryable,
            Integer simSlot, Integer segments) throws IOException, ApiException {
        String report = report(messageId, status, error, retryable, simSlot)
            + (segments == null ? "" : " segments=" + segments);
        log.add("report " + messageId + " " + status + "@" + clock.now());
        reportsTried.add(report);
        raise(reportScript.poll());
        reports.add(report);
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
