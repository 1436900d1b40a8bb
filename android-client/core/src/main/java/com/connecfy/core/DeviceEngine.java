package com.connecfy.core;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.Executor;

/**
 * What a paired phone does, one step at a time: claim tasks with a long poll (the server
 * holds a claim with nothing to take for up to {@link Config#longPollSeconds}), send each
 * claimed message once (from the SIM it names, if any: {@link SmsSender#simFor}), within
 * the pacer's limit, and drain the outbox (status reports and received SMS). A message the
 * server put back after this phone's retryable failure is sent again when handed back
 * ({@link SendResults#takePutBack}). After an answer that carried messages, or an empty one the server held
 * for at least half the wait, the next poll goes at once. An empty answer that came back
 * sooner means a server that does not hold polls (an older one, one shutting down, one
 * holding its maximum of waits): the next poll then comes after {@link Config#pollMillis}
 * (2 s after a full batch), still asking to wait, so instant delivery resumes once the
 * server holds polls again. The server counts a phone whose poll it holds as online, so
 * heartbeats (battery, versions) go every {@link Config#longPollHeartbeatMillis} while
 * polls are held, else every {@link Config#heartbeatMillis} (~15 s) from the last time the
 * server heard from the phone. Errors back off
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
 * returns, or until {@link #tick} is wanted sooner (a send result arrived, a poll was
 * answered: {@link Listener#onPollAnswered}). A poll runs on {@link Config#pollExecutor}
 * when one is given, so heartbeats, reports and sends go on while the server holds it;
 * without one it runs inside {@link #tick}. The clock is
 * injected, so the timing can be tested without waiting. Every schedule is on the
 * monotonic clock ({@link Clock#elapsedMillis}); wall time is only shown.
 */
public final class DeviceEngine {
    /** Intervals and limits; the defaults are what the server expects of a phone. */
    public static final class Config {
        /**
         * Heartbeats while the server does not hold the phone's polls, counted from the
         * last time it heard from the phone (a heartbeat, or a poll it held).
         */
        public long heartbeatMillis = 15000;
        /** Heartbeats while the server holds the phone's polls (and so counts it online). */
        public long longPollHeartbeatMillis = 5 * 60000;
        /**
         * How long the server may hold a poll with nothing to claim ({@code wait}, 0-60 s);
         * 0: plain polls every {@link #pollMillis}.
         */
        public int longPollSeconds = 30;
        /** Between polls when the server does not hold them. */
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
        /**
         * Where a poll runs. Null: inside {@link #tick}, which then blocks while the server
         * holds the poll. The app gives a thread of its own, so the engine's other work
         * goes on meanwhile; {@link Listener#onPollAnswered} then asks for a tick.
         */
        public Executor pollExecutor;
        /**
         * The passphrase that opens end-to-end encrypted messages (the app's setting);
         * null: none set, and every encrypted message fails with {@link Envelope#DECRYPT_FAILED}.
         */
        public Envelope.Passphrase passphrase;
    }

    /** The longest {@code wait} the server takes. */
    public static final int MAX_WAIT_SECONDS = 60;

    /** How long {@link #stop} waits for a poll running on {@link Config#pollExecutor} to end. */
    private static final long STOP_WAIT_MILLIS = 5000;

    /** What a poll came back with, handed from the thread that ran it to the tick. */
    private static final class PollAnswer {
        /** Monotonic times the claim was asked for and answered. */
        final long startedAt;
        final long answeredAt;
        final int waitSeconds;
        /** Null when the poll failed. */
        final List<Task> tasks;
        /** An ApiException or IOException (or a RuntimeException, thrown again by the tick). */
        final Exception error;

        PollAnswer(long startedAt, long answeredAt, int waitSeconds, List<Task> tasks, Exception error) {
            this.startedAt = startedAt;
            this.answeredAt = answeredAt;
            this.waitSeconds = waitSeconds;
            this.tasks = tasks;
            this.error = error;
        }
    }

    /** A claimed message and when (monotonic clock) the claim was asked for. */
    private static final class Claimed {
        /** As claimed; once an encrypted one is opened, the task with its text (opened once). */
        Task task;
        /** It came end-to-end encrypted (its task, once opened, no longer says so). */
        final boolean encrypted;
        final long claimedAt;

        Claimed(Task task, long claimedAt) {
            this.task = task;
            this.encrypted = task.encrypted;
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

        /**
         * A poll running on {@link Config#pollExecutor} was answered: tick now. Called on
         * the poll's thread.
         */
        default void onPollAnswered() {
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
    /**
     * The last empty answer came back sooner than half the wait: the server does not hold
     * polls, so they go every {@link Config#pollMillis} (each still asking to wait).
     */
    private boolean fallback;
    /** The server has held a poll (answered empty after at least half the wait). */
    private boolean held;
    /** Monotonic time the server last answered a poll it had held. */
    private long lastHeldAt;
    private final Object pollLock = new Object();
    /** A poll runs on the executor; guarded by pollLock. */
    private boolean pollRunning;
    /** The answer of the poll that ran, for the next tick; guarded by pollLock. */
    private PollAnswer pollAnswer;
    /** The server's refusals of the token in a row (reset by any other answer). */
    private int tokenRefusals;
    /** Monotonic time of the first refusal in a run (answers to polls asked before it do not count). */
    private long refusedAt;
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
                requestStop();
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
     * nothing more to SmsManager (an HTTP call or a send already under way finishes; a poll
     * the server holds is disconnected), and every later tick does nothing. Waits for a
     * running tick to return, and for a poll on the executor to end (at most 5 s). Safe
     * from any thread.
     */
    public void stop() {
        requestStop();
        synchronized (tickLock) {
            // A tick that was running has returned.
        }
        awaitPoll();
    }

    /**
     * {@link #stop} without waiting, for a thread that must not block (the service's
     * onDestroy on the main thread). A poll the server holds is disconnected.
     */
    public void requestStop() {
        stopped = true;
        api.interruptWait();
    }

    /**
     * Waits (at most {@link #STOP_WAIT_MILLIS}) for a poll running on the executor to end,
     * disconnecting it again every 100 ms in case it had not connected yet.
     */
    private void awaitPoll() {
        synchronized (pollLock) {
            for (long waited = 0; pollRunning && waited < STOP_WAIT_MILLIS; waited += 100) {
                api.interruptWait();
                try {
                    pollLock.wait(100);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }

    private long tickLocked() {
        long now = clock.elapsedMillis();
        capSchedules(now);
        takePollAnswer();
        if (calm() && now >= heartbeatDueAt(now)) {
            heartbeat(now);
        }
        if (calm() && outbox.nextAttemptAt() <= now) {
            drainOutbox();
        }
        if (calm()) {
            sendWaiting();
        }
        if (calm() && waiting.isEmpty() && !pollRunning() && clock.elapsedMillis() >= nextPollAt) {
            cannotSend = whyCannotSendNow();
            if (cannotSend == null) {
                startPoll();
                if (takePollAnswer() && calm()) {
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
        long next = Math.min(heartbeatDueAt(now), outbox.nextAttemptAt());
        if (!waiting.isEmpty()) {
            next = Math.min(next, nextSendAt);
        } else if (!pollRunning()) {
            next = Math.min(next, nextPollAt);
        }
        synchronized (pollLock) {
            if (pollAnswer != null) {
                next = now; // answered while this tick ran
            }
        }
        next = Math.max(next, confirmAt);
        return Math.max(0, next - now);
    }

    /**
     * When the next heartbeat is due. After a failed or refused one, or before the first,
     * as scheduled then; otherwise {@link Config#longPollHeartbeatMillis} after the last,
     * or sooner, {@link Config#heartbeatMillis} after the server last heard from the phone
     * (a heartbeat, or a poll it held), unless it holds a poll now.
     */
    private long heartbeatDueAt(long now) {
        if (!heartbeatOk || heartbeatFailures > 0 || tokenRefusals > 0) {
            return nextHeartbeatAt;
        }
        return Math.min(lastHeartbeatOkElapsed + config.longPollHeartbeatMillis,
            lastHeardAt(now) + config.heartbeatMillis);
    }

    /**
     * The last monotonic time the server heard from the phone: now while it holds a poll,
     * else its last answered heartbeat or held poll. Only when {@link #heartbeatOk} or
     * {@link #held}.
     */
    private long lastHeardAt(long now) {
        if (holdingNow()) {
            return now;
        }
        if (!held) {
            return lastHeartbeatOkElapsed;
        }
        return heartbeatOk ? Math.max(lastHeartbeatOkElapsed, lastHeldAt) : lastHeldAt;
    }

    /**
     * The server holds polls: it held one, and the last empty answer since came after at
     * least half the wait.
     */
    private boolean serverHolds() {
        return held && !fallback && config.longPollSeconds > 0;
    }

    /** A poll runs now at a server that holds polls, so it counts the phone online. */
    private boolean holdingNow() {
        return serverHolds() && pollRunning();
    }

    private boolean pollRunning() {
        synchronized (pollLock) {
            return pollRunning;
        }
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
        long longestBeat = Math.max(Math.max(Math.max(config.heartbeatMillis, config.longPollHeartbeatMillis),
            config.heartbeatBackoff.ceilingMillis(Integer.MAX_VALUE)), RetryAfter.MAX_MILLIS);
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

    /**
     * Asks for tasks: on the executor when there is one (its answer waits for the next
     * tick), else here and now.
     */
    private void startPoll() {
        final long startedAt = clock.elapsedMillis();
        final int waitSeconds = Math.max(0, Math.min(MAX_WAIT_SECONDS, config.longPollSeconds));
        Executor executor = config.pollExecutor;
        if (executor == null) {
            PollAnswer answer = claim(startedAt, waitSeconds);
            synchronized (pollLock) {
                pollAnswer = answer;
            }
            return;
        }
        synchronized (pollLock) {
            pollRunning = true;
        }
        Runnable poll = new Runnable() {
            @Override
            public void run() {
                PollAnswer answer = null;
                try {
                    if (!stopped) {
                        answer = claim(startedAt, waitSeconds);
                    }
                } catch (RuntimeException e) {
                    answer = new PollAnswer(startedAt, clock.elapsedMillis(), waitSeconds, null, e);
                } finally {
                    synchronized (pollLock) {
                        pollAnswer = answer;
                        pollRunning = false;
                        pollLock.notifyAll();
                    }
                }
                if (answer != null && !stopped) {
                    listener.onPollAnswered();
                }
            }
        };
        try {
            executor.execute(poll);
        } catch (RuntimeException e) {
            synchronized (pollLock) {
                pollRunning = false;
            }
            throw e;
        }
    }

    private PollAnswer claim(long startedAt, int waitSeconds) {
        try {
            List<Task> tasks = api.claimTasks(config.claimLimit, waitSeconds);
            return new PollAnswer(startedAt, clock.elapsedMillis(), waitSeconds, tasks, null);
        } catch (ApiException e) {
            return new PollAnswer(startedAt, clock.elapsedMillis(), waitSeconds, null, e);
        } catch (IOException e) {
            return new PollAnswer(startedAt, clock.elapsedMillis(), waitSeconds, null, e);
        }
    }

    /** Takes in the answer of the last poll, if one came; true when one did. */
    private boolean takePollAnswer() {
        PollAnswer answer;
        synchronized (pollLock) {
            answer = pollAnswer;
            pollAnswer = null;
        }
        if (answer == null) {
            return false;
        }
        if (stopped || unpaired) {
            return true; // a poll disconnected by stop(), or one answered too late to matter
        }
        if (answer.error instanceof RuntimeException) {
            throw (RuntimeException) answer.error;
        }
        // A poll asked before the server first refused the token is neither the second
        // refusal (that comes after a backoff) nor an answer that ends the run.
        boolean before = tokenRefusals > 0 && answer.startedAt < refusedAt;
        if (answer.error instanceof ApiException) {
            ApiException e = (ApiException) answer.error;
            if (e.refusesToken()) {
                if (!before) {
                    tokenRefused(e.getMessage());
                }
                return true;
            }
            if (!before) {
                answered();
            }
            pollFailures++;
            nextPollAt = answer.answeredAt + wait(config.pollBackoff, pollFailures, e);
            pollError = "tasks: " + e.getMessage();
        } else if (answer.error != null) {
            pollFailures++;
            nextPollAt = answer.answeredAt + wait(config.pollBackoff, pollFailures, null);
            pollError = "tasks: no answer from the server (" + answer.error.getMessage() + ")";
        } else {
            if (!before) {
                answered();
            }
            claimed(answer);
        }
        return true;
    }

    /**
     * Queues what a poll claimed (its lease counted from when the claim was asked for) and
     * schedules the next poll: at once after messages or an empty answer the server held,
     * else after the plain interval.
     */
    private void claimed(PollAnswer answer) {
        List<Task> tasks = answer.tasks;
        pollFailures = 0;
        lastPollAt = clock.now() - (clock.elapsedMillis() - answer.answeredAt);
        lastPollCount = tasks.size();
        pollError = null;
        for (Task task : tasks) {
            if (sentIds.contains(task.id) && !putBackToThisPhone(task)) {
                redelivered(task);
                continue;
            }
            if (!waitingIds.add(task.id)) {
                duplicatesSkipped++;
                continue;
            }
            waiting.add(new Claimed(task, answer.startedAt));
        }
        if (tasks.isEmpty() && answer.waitSeconds > 0) {
            fallback = answer.answeredAt - answer.startedAt < answer.waitSeconds * 1000L / 2;
            if (!fallback) {
                held = true;
                lastHeldAt = answer.answeredAt;
            }
        }
        if (answer.waitSeconds > 0 && !fallback) {
            nextPollAt = answer.answeredAt;
        } else {
            nextPollAt = answer.answeredAt + (tasks.size() >= config.claimLimit ? config.fullBatchPollMillis
                : config.pollMillis);
        }
        nextSendAt = answer.answeredAt;
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

    /**
     * A message this phone reported failed with {@code retryable}, whose report the server
     * took (it no longer waits in the outbox) and which it now hands back: sent again.
     */
    private boolean putBackToThisPhone(Task task) {
        return results.isPutBack(task.id) && !results.isTracked(task.id) && !outbox.hasReportFor(task.id);
    }

    /**
     * A message that names a SIM this phone does not have: reported failed with
     * {@code error} ({@link SimChoice#SLOT_UNAVAILABLE}), not sent from another SIM.
     */
    private void reportUnsendable(Task task, String error) {
        if (outbox.hasReportFor(task.id)) {
            return; // handed out again before the report went
        }
        try {
            results.notHanded(task.id, error);
        } catch (IOException e) {
            otherError = "storage: " + e.getMessage();
        }
    }

    /**
     * The text of an encrypted task, opened with the passphrase of the app's settings, or
     * null when it cannot be (no passphrase, another one, a malformed envelope): the
     * message then fails for good, since no retry would change that.
     */
    private String open(Task task) {
        Envelope.Passphrase source = config.passphrase;
        try {
            return Envelope.open(task.message, source == null ? null : source.get());
        } catch (Envelope.DecryptFailed e) {
            otherError = "cannot decrypt message " + task.id + ": " + e.getMessage();
            return null;
        }
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
            if (task.encrypted) {
                String text = open(task);
                if (text == null) {
                    waiting.poll();
                    waitingIds.remove(task.id);
                    reportUnsendable(task, Envelope.DECRYPT_FAILED);
                    continue;
                }
                if (text.codePointCount(0, text.length()) > Envelope.MAX_TEXT_CHARS) {
                    // The server takes 1,600 characters, and cannot see inside an envelope:
                    // the phone keeps the limit.
                    waiting.poll();
                    waitingIds.remove(task.id);
                    reportUnsendable(task, Envelope.TOO_LONG);
                    continue;
                }
                task = task.opened(text);
                claimed.task = task; // a wait for the pacer does not derive the key again
            }
            SimChoice.Decision sim = sender.simFor(task);
            if (sim.outcome == SimChoice.Outcome.SLOT_UNAVAILABLE) {
                waiting.poll();
                waitingIds.remove(task.id);
                reportUnsendable(task, sim.error);
                continue;
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
                if (!sentIds.add(task.id) && !results.takePutBack(task.id)) {
                    duplicatesSkipped++;
                    continue;
                }
                pacer.record(parts, now);
                results.dispatched(task.id, parts, sim.simSlot, claimed.encrypted);
            } catch (IOException e) {
                // Without a durable record the message could be sent twice, so it is not
                // sent; it is reported failed rather than lost.
                otherError = "storage: " + e.getMessage();
                reportNotHanded(task.id);
                continue;
            }
            try {
                sender.send(task, parts, sim);
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
        if (tokenRefusals == 1) {
            refusedAt = clock.elapsedMillis();
        }
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
        long onlineUntil = heartbeatOk || held ? wall + (lastHeardAt(elapsed) + config.onlineMillis - elapsed) : 0;
        long nextPoll = pollRunning() ? wall : wall + (nextPollAt - elapsed);
        status = new EngineStatus(!unpaired, unpaired, onlineUntil, lastHeartbeatOkAt, lastPollAt, lastPollCount,
            nextPoll, serverHolds(), waiting.size(), outbox.size(), duplicatesSkipped, lastError());
        listener.onStatus(status);
    }
}
