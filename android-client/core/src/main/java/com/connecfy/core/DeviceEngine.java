package com.connecfy.core;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;

/**
 * What a paired phone does, one step at a time: heartbeat every ~15 s, claim tasks every
 * ~20 s (again after 2 s when a claim came back full), send each claimed message once,
 * within the pacer's limit, and drain the outbox (status reports and received SMS). Errors back off
 * with jitter, never sooner than a {@code Retry-After}; a 429 waits exactly as long as
 * its {@code Retry-After} says. The phone counts as removed from its account, and
 * everything stops, only when the server itself refuses the device token (its JSON 401
 * {@code not_authenticated}, {@link ApiException#refusesToken}) twice in a row: after the
 * first refusal nothing is claimed, sent or reported until a heartbeat after a backoff
 * asks again. Any other 401 or 403 (a proxy's, a CDN's or a captive portal's page) is
 * retried with backoff like any error. A claimed message still waiting after its lease
 * (the server has handed it to another phone by then) is dropped, not sent late.
 *
 * <p>The caller runs {@link #tick} on one thread and sleeps for the milliseconds it
 * returns, or until {@link #tick} is wanted sooner (a send result arrived). The clock is
 * injected, so the timing can be tested without waiting. Every schedule is on the
 * monotonic clock ({@link Clock#elapsedMillis}); wall time is only shown.
 */
public final class DeviceEngine {
    /** Intervals and limits; the defaults are what the server expects of a phone. */
    public static final class Config {
        public long heartbeatMillis = 15000;
        public long pollMillis = 20000;
        public long fullBatchPollMillis = 2000;
        public int claimLimit = 10;
        /** The server's presence TTL: a phone is online this long after an answered heartbeat. */
        public long onlineMillis = 45000;
        public Backoff heartbeatBackoff = new Backoff(5000, 60000);
        public Backoff pollBackoff = new Backoff(5000, 5 * 60000);
        /** The server's lease on a claimed message; a message not sent within it is dropped. */
        public long leaseMillis = 120000;
        /** While the phone cannot send, claimed messages are checked again this often. */
        public long cannotSendRecheckMillis = 5000;
        /** After a part failed for want of radio, nothing is claimed or sent for this long. */
        public long radioFailurePauseMillis = 60000;
    }

    /** A claimed message and when (monotonic clock) the claim was asked for. */
    private static final class Claimed {
        final Task task;
        final long claimedAt;

        Claimed(Task task, long claimedAt) {
            this.task = task;
            this.claimedAt = claimedAt;
        }
    }

    /** The error reported for a message that was claimed but never reached SmsManager. */
    public static final String NOT_HANDED_TO_SMS_MANAGER = "not_handed_to_sms_manager";

    /** Told about changes; called on the engine's thread. */
    public interface Listener {
        void onUnpaired(String reason);

        void onStatus(EngineStatus status);

        /**
         * A report the server refused for good (a final 4xx: a received SMS it will not
         * take, say) left the outbox; {@code line} says which and why, for the log.
         */
        default void onDropped(String line) {
        }
    }

    private final DeviceApi api;
    private final Outbox outbox;
    private final SentIds sentIds;
    private final SendPacer pacer;
    private final SendResults results;
    private final SmsSender sender;
    private final Heartbeat.Source heartbeatSource;
    private final Clock clock;
    private final Random random;
    private final Config config;
    private final Listener listener;

    private final Object tickLock = new Object();
    private final ArrayDeque<Claimed> waiting = new ArrayDeque<Claimed>();
    private final Set<String> waitingIds = new HashSet<String>();
    // Next-due times on the monotonic clock.
    private long nextHeartbeatAt;
    private long nextPollAt;
    private long nextSendAt;
    private int heartbeatFailures;
    private int pollFailures;
    /** The server's refusals of the token in a row (reset by any other answer). */
    private int tokenRefusals;
    /** After a first refusal, no call before this monotonic time: then a heartbeat asks again. */
    private long confirmAt;
    private String refusalError;
    /** Monotonic time of the last answered heartbeat (0: none yet). */
    private long lastHeartbeatOkElapsed;
    private boolean heartbeatOk;
    // Wall times, for the screen.
    private long lastHeartbeatOkAt;
    private long lastPollAt;
    private int lastPollCount;
    private int duplicatesSkipped;
    private int leaseExpired;
    private volatile boolean unpaired;
    private volatile boolean stopped;
    /** The pairing this engine runs for (null: not bound, as in tests of the engine alone). */
    private Pairing pairing;
    private String deviceId;
    private String heartbeatError;
    private String pollError;
    /** Why the phone could not send at the last look (null: it could). */
    private String cannotSend;
    private String otherError;
    private volatile EngineStatus status = EngineStatus.STOPPED;

    public DeviceEngine(DeviceApi api, Outbox outbox, SentIds sentIds, SendPacer pacer, SendResults results,
            SmsSender sender, Heartbeat.Source heartbeatSource, Clock clock, Random random, Config config,
            Listener listener) {
        this.api = api;
        this.outbox = outbox;
        this.sentIds = sentIds;
        this.pacer = pacer;
        this.results = results;
        this.sender = sender;
        this.heartbeatSource = heartbeatSource;
        this.clock = clock;
        this.random = random;
        this.config = config;
        this.listener = listener;
        long now = clock.elapsedMillis();
        nextHeartbeatAt = now;
        nextPollAt = now;
    }

    /**
     * Does whatever is due now and returns the milliseconds until something is due next
     * (Long.MAX_VALUE once the phone has been unpaired or the engine stopped).
     */
    public long tick() {
        synchronized (tickLock) {
            if (stopped || unpaired) {
                return Long.MAX_VALUE;
            }
            if (pairing != null && !pairing.isPairedAs(deviceId)) {
                // Paired again (or unpaired) since this engine started: its token is not
                // the phone's any more, and a new engine runs for the new pairing.
                stopped = true;
                return Long.MAX_VALUE;
            }
            return tickLocked();
        }
    }

    /**
     * Binds the engine to the stored pairing of {@code deviceId}: it stops as soon as the
     * phone is paired as another device, and when the server refuses its token it forgets
     * that pairing only, never another device's.
     */
    void bindTo(Pairing pairing, String deviceId) {
        synchronized (tickLock) {
            this.pairing = pairing;
            this.deviceId = deviceId;
        }
    }

    /** The device this engine runs for, when bound to a pairing. */
    public String deviceId() {
        return deviceId;
    }

    /** Neither stopped nor unpaired. */
    public boolean isActive() {
        return !stopped && !unpaired;
    }

    /**
     * Stops the engine for good: a running {@link #tick} makes no further call and hands
     * nothing more to SmsManager (an HTTP call or a send already under way finishes), and
     * every later tick does nothing. Waits for a running tick to return. Safe from any thread.
     */
    public void stop() {
        requestStop();
        synchronized (tickLock) {
            // A tick that was running has returned.
        }
    }

    /**
     * {@link #stop} without waiting, for a thread that must not block (the service's
     * onDestroy on the main thread).
     */
    public void requestStop() {
        stopped = true;
    }

    private long tickLocked() {
        long now = clock.elapsedMillis();
        capSchedules(now);
        if (calm() && now >= nextHeartbeatAt) {
            heartbeat(now);
        }
        if (calm() && outbox.nextAttemptAt() <= now) {
            drainOutbox();
        }
        if (calm()) {
            sendWaiting();
        }
        if (calm() && waiting.isEmpty() && clock.elapsedMillis() >= nextPollAt) {
            cannotSend = whyCannotSendNow();
            if (cannotSend == null) {
                poll();
                if (calm()) {
                    sendWaiting();
                }
            } else {
                nextPollAt = clock.elapsedMillis() + config.pollMillis;
            }
        }
        publish();
        if (unpaired) {
            return Long.MAX_VALUE;
        }
        now = clock.elapsedMillis();
        capSchedules(now);
        long next = Math.min(nextHeartbeatAt, outbox.nextAttemptAt());
        next = Math.min(next, waiting.isEmpty() ? nextPollAt : nextSendAt);
        next = Math.max(next, confirmAt);
        return Math.max(0, next - now);
    }

    /**
     * Nothing stops this tick: not stopped, not unpaired, and no refusal of the token
     * waits for its second asking. Checked before every call and every send.
     */
    private boolean calm() {
        return !stopped && !unpaired && clock.elapsedMillis() >= confirmAt;
    }

    /**
     * No next-due time lies further ahead than its longest interval: a safeguard should a
     * clock ever jump, so the phone can never fall silent for longer than that.
     */
    private void capSchedules(long now) {
        long longestBeat = Math.max(Math.max(config.heartbeatMillis, config.heartbeatBackoff.ceilingMillis(
            Integer.MAX_VALUE)), RetryAfter.MAX_MILLIS);
        long longestPoll = Math.max(Math.max(config.pollMillis, config.pollBackoff.ceilingMillis(Integer.MAX_VALUE)),
            RetryAfter.MAX_MILLIS);
        nextHeartbeatAt = Math.min(nextHeartbeatAt, now + longestBeat);
        nextPollAt = Math.min(nextPollAt, now + longestPoll);
        nextSendAt = Math.min(nextSendAt, now + SendPacer.DEFAULT_WINDOW_MILLIS);
    }

    public EngineStatus status() {
        return status;
    }

    private void heartbeat(long now) {
        try {
            api.heartbeat(heartbeatSource.current());
            answered();
            heartbeatFailures = 0;
            lastHeartbeatOkAt = clock.now();
            lastHeartbeatOkElapsed = clock.elapsedMillis();
            heartbeatOk = true;
            heartbeatError = null;
            nextHeartbeatAt = now + config.heartbeatMillis;
        } catch (ApiException e) {
            if (refused(e)) {
                return;
            }
            heartbeatFailures++;
            nextHeartbeatAt = clock.elapsedMillis() + wait(config.heartbeatBackoff, heartbeatFailures, e);
            heartbeatError = "heartbeat: " + e.getMessage();
        } catch (IOException e) {
            heartbeatFailures++;
            nextHeartbeatAt = clock.elapsedMillis() + wait(config.heartbeatBackoff, heartbeatFailures, null);
            heartbeatError = "heartbeat: no answer from the server (" + e.getMessage() + ")";
        }
    }

    private void poll() {
        long claimedAt = clock.elapsedMillis();
        try {
            List<Task> tasks = api.claimTasks(config.claimLimit);
            answered();
            pollFailures = 0;
            lastPollAt = clock.now();
            long answeredAt = clock.elapsedMillis();
            lastPollCount = tasks.size();
            pollError = null;
            for (Task task : tasks) {
                if (sentIds.contains(task.id)) {
                    redelivered(task);
                    continue;
                }
                if (!waitingIds.add(task.id)) {
                    duplicatesSkipped++;
                    continue;
                }
                waiting.add(new Claimed(task, claimedAt));
            }
            nextPollAt = answeredAt + (tasks.size() >= config.claimLimit ? config.fullBatchPollMillis
                : config.pollMillis);
            nextSendAt = answeredAt;
        } catch (ApiException e) {
            if (refused(e)) {
                return;
            }
            pollFailures++;
            nextPollAt = clock.elapsedMillis() + wait(config.pollBackoff, pollFailures, e);
            pollError = "tasks: " + e.getMessage();
        } catch (IOException e) {
            pollFailures++;
            nextPollAt = clock.elapsedMillis() + wait(config.pollBackoff, pollFailures, null);
            pollError = "tasks: no answer from the server (" + e.getMessage() + ")";
        }
    }

    /**
     * A 429 with {@code Retry-After} waits exactly what the server asked; anything else
     * backs off with jitter, never sooner than a {@code Retry-After} (a 503 during an
     * outage must not bring every phone back in lockstep).
     */
    private long wait(Backoff backoff, int failures, ApiException e) {
        long retryAfter = e == null ? -1 : e.retryAfterMillis();
        if (e != null && e.status() == 429 && retryAfter >= 0) {
            return retryAfter;
        }
        return Math.max(retryAfter, backoff.delayMillis(failures, random));
    }

    /**
     * The server handed out again a message whose id this phone recorded before sending.
     * If its outcome is still tracked or waits in the outbox, the report is on its way;
     * otherwise it never reached SmsManager (storage failed, or the app died in between)
     * and is reported failed, so it does not hang on the server.
     */
    private void redelivered(Task task) {
        duplicatesSkipped++;
        if (results.isTracked(task.id) || outbox.hasReportFor(task.id)) {
            return;
        }
        reportNotHanded(task.id);
    }

    private void reportNotHanded(String messageId) {
        try {
            results.notHanded(messageId, NOT_HANDED_TO_SMS_MANAGER);
        } catch (IOException e) {
            otherError = "storage: " + e.getMessage();
        }
    }

    /**
     * Why nothing can be handed to SmsManager now, or null: what the phone says (no SMS
     * permission, no SIM chosen, no cell service...), else a part that failed for want of
     * radio in the last {@link Config#radioFailurePauseMillis}. Asked before every claim
     * and every send.
     */
    private String whyCannotSendNow() {
        String why = sender.whyCannotSend();
        if (why == null) {
            String failure = results.recentRadioFailure(config.radioFailurePauseMillis);
            if (failure != null) {
                why = "cannot send: an SMS just failed with " + failure + "; claiming again after "
                    + config.radioFailurePauseMillis / 1000 + " s";
            }
        }
        return why;
    }

    private void sendWaiting() {
        while (!waiting.isEmpty() && calm()) {
            Claimed claimed = waiting.peek();
            Task task = claimed.task;
            long elapsed = clock.elapsedMillis();
            if (elapsed - claimed.claimedAt >= config.leaseMillis) {
                // The lease ran out: the server hands the message out again, perhaps to
                // another phone. Sending it now could send it twice.
                waiting.poll();
                waitingIds.remove(task.id);
                leaseExpired++;
                continue;
            }
            cannotSend = whyCannotSendNow();
            if (cannotSend != null) {
                // Held until the phone can send (or the lease runs out and the server
                // hands the message out again): sent now, it would only fail.
                nextSendAt = elapsed + config.cannotSendRecheckMillis;
                return;
            }
            long now = clock.now();
            int parts = Math.max(1, sender.countParts(task.message));
            long wait = pacer.waitMillis(parts, now);
            if (wait > 0) {
                nextSendAt = elapsed + Math.min(wait, SendPacer.DEFAULT_WINDOW_MILLIS);
                return;
            }
            waiting.poll();
            waitingIds.remove(task.id);
            try {
                if (!sentIds.add(task.id)) {
                    duplicatesSkipped++;
                    continue;
                }
                pacer.record(parts, now);
                results.dispatched(task.id, parts);
            } catch (IOException e) {
                // Without a durable record the message could be sent twice, so it is not
                // sent; it is reported failed rather than lost.
                otherError = "storage: " + e.getMessage();
                reportNotHanded(task.id);
                continue;
            }
            try {
                sender.send(task, parts);
            } catch (Exception e) {
                try {
                    results.notSent(task.id, e);
                } catch (IOException storage) {
                    otherError = "storage: " + storage.getMessage();
                }
            }
        }
    }

    private void drainOutbox() {
        try {
            Outbox.DrainResult result = outbox.drain(api);
            for (String line : result.droppedLines) {
                listener.onDropped(line);
            }
            if (result.answered) {
                answered();
            }
            if (result.tokenRefused) {
                tokenRefused(result.lastError);
            } else if (result.lastError != null) {
                otherError = result.lastError;
            } else if (result.accepted > 0) {
                otherError = null;
            }
        } catch (IOException e) {
            otherError = "storage: " + e.getMessage();
        }
    }

    /** The server answered something other than a refusal of the token. */
    private void answered() {
        tokenRefusals = 0;
        refusalError = null;
    }

    /**
     * Whether the error is the server's refusal of the token (then handled here); any other
     * error status is an answer that ends a run of refusals.
     */
    private boolean refused(ApiException e) {
        if (!e.refusesToken()) {
            answered();
            return false;
        }
        tokenRefused(e.getMessage());
        return true;
    }

    /**
     * The second refusal in a row unpairs. The first stops every call until a heartbeat,
     * after the heartbeat's first backoff step, asks again.
     */
    private void tokenRefused(String reason) {
        tokenRefusals++;
        if (tokenRefusals >= 2) {
            stopUnpaired(reason);
            return;
        }
        confirmAt = clock.elapsedMillis() + config.heartbeatBackoff.delayMillis(1, random);
        nextHeartbeatAt = confirmAt;
        refusalError = "the server refused the device token (" + reason + "); asking again before unpairing";
    }

    /**
     * The server refused the token twice in a row. A bound engine forgets its own pairing
     * (and the reports only its token could deliver); the listener hears of it only when
     * that pairing was still the phone's.
     */
    private void stopUnpaired(String reason) {
        unpaired = true;
        waiting.clear();
        waitingIds.clear();
        otherError = reason;
        boolean ours = true;
        if (pairing != null) {
            try {
                ours = pairing.forget(deviceId, outbox, results);
            } catch (IOException e) {
                otherError = reason + "; storage: " + e.getMessage();
            }
        }
        publish();
        if (ours) {
            listener.onUnpaired(reason);
        }
    }

    private String lastError() {
        if (unpaired) {
            return otherError;
        }
        if (refusalError != null) {
            return refusalError;
        }
        if (heartbeatError != null) {
            return heartbeatError;
        }
        if (cannotSend != null) {
            return cannotSend;
        }
        if (pollError != null) {
            return pollError;
        }
        if (otherError == null && leaseExpired > 0) {
            return leaseExpired + " claimed message(s) not sent within their " + config.leaseMillis / 1000
                + " s lease; the server hands them out again";
        }
        return otherError;
    }

    private void publish() {
        // Times on the screen are wall times, worked out from the monotonic clock now.
        long wall = clock.now();
        long elapsed = clock.elapsedMillis();
        long onlineUntil = heartbeatOk ? wall + (lastHeartbeatOkElapsed + config.onlineMillis - elapsed) : 0;
        status = new EngineStatus(!unpaired, unpaired, onlineUntil, lastHeartbeatOkAt, lastPollAt, lastPollCount,
            wall + (nextPollAt - elapsed), waiting.size(), outbox.size(), duplicatesSkipped, lastError());
        listener.onStatus(status);
    }
}
