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
 * within the pacer's limit, and drain the outbox of status reports. Errors back off
 * with jitter; a 429 waits as long as its {@code Retry-After} says; a 401 or 403 means
 * the phone was removed from its account and everything stops.
 *
 * <p>The caller runs {@link #tick} on one thread and sleeps for the milliseconds it
 * returns, or until {@link #tick} is wanted sooner (a send result arrived). The clock is
 * injected, so the timing can be tested without waiting.
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
    }

    /** Told about changes; called on the engine's thread. */
    public interface Listener {
        void onUnpaired(String reason);

        void onStatus(EngineStatus status);
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

    private final ArrayDeque<Task> waiting = new ArrayDeque<Task>();
    private final Set<String> waitingIds = new HashSet<String>();
    private long nextHeartbeatAt;
    private long nextPollAt;
    private long nextSendAt;
    private int heartbeatFailures;
    private int pollFailures;
    private long lastHeartbeatOkAt;
    private long lastPollAt;
    private int lastPollCount;
    private int duplicatesSkipped;
    private boolean unpaired;
    private String heartbeatError;
    private String pollError;
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
        long now = clock.now();
        nextHeartbeatAt = now;
        nextPollAt = now;
    }

    /**
     * Does whatever is due now and returns the milliseconds until something is due next
     * (Long.MAX_VALUE once the phone has been unpaired).
     */
    public long tick() {
        if (unpaired) {
            return Long.MAX_VALUE;
        }
        long now = clock.now();
        if (now >= nextHeartbeatAt) {
            heartbeat(now);
        }
        if (!unpaired && outbox.nextAttemptAt() <= now) {
            drainOutbox();
        }
        if (!unpaired) {
            sendWaiting();
        }
        if (!unpaired && waiting.isEmpty() && clock.now() >= nextPollAt) {
            String cannotSend = sender.whyCannotSend();
            if (cannotSend == null) {
                poll();
                sendWaiting();
            } else {
                pollError = cannotSend;
                nextPollAt = clock.now() + config.pollMillis;
            }
        }
        publish();
        if (unpaired) {
            return Long.MAX_VALUE;
        }
        long next = Math.min(nextHeartbeatAt, outbox.nextAttemptAt());
        next = Math.min(next, waiting.isEmpty() ? nextPollAt : nextSendAt);
        return Math.max(0, next - clock.now());
    }

    public EngineStatus status() {
        return status;
    }

    private void heartbeat(long now) {
        try {
            api.heartbeat(heartbeatSource.current());
            heartbeatFailures = 0;
            lastHeartbeatOkAt = clock.now();
            heartbeatError = null;
            nextHeartbeatAt = now + config.heartbeatMillis;
        } catch (ApiException e) {
            if (stopIfUnpaired(e)) {
                return;
            }
            heartbeatFailures++;
            nextHeartbeatAt = clock.now() + wait(config.heartbeatBackoff, heartbeatFailures, e.retryAfterMillis());
            heartbeatError = "heartbeat: " + e.getMessage();
        } catch (IOException e) {
            heartbeatFailures++;
            nextHeartbeatAt = clock.now() + wait(config.heartbeatBackoff, heartbeatFailures, -1);
            heartbeatError = "heartbeat: no answer from the server (" + e.getMessage() + ")";
        }
    }

    private void poll() {
        long now = clock.now();
        try {
            List<Task> tasks = api.claimTasks(config.claimLimit);
            pollFailures = 0;
            lastPollAt = clock.now();
            lastPollCount = tasks.size();
            pollError = null;
            for (Task task : tasks) {
                if (sentIds.contains(task.id) || !waitingIds.add(task.id)) {
                    duplicatesSkipped++; // a redelivery of a message this phone already sent
                    continue;
                }
                waiting.add(task);
            }
            nextPollAt = lastPollAt + (tasks.size() >= config.claimLimit ? config.fullBatchPollMillis
                : config.pollMillis);
            nextSendAt = lastPollAt;
        } catch (ApiException e) {
            if (stopIfUnpaired(e)) {
                return;
            }
            pollFailures++;
            nextPollAt = clock.now() + wait(config.pollBackoff, pollFailures, e.retryAfterMillis());
            pollError = "tasks: " + e.getMessage();
        } catch (IOException e) {
            pollFailures++;
            nextPollAt = clock.now() + wait(config.pollBackoff, pollFailures, -1);
            pollError = "tasks: no answer from the server (" + e.getMessage() + ")";
        }
    }

    /** A 429 waits exactly what the server asked; anything else backs off with jitter. */
    private long wait(Backoff backoff, int failures, long retryAfterMillis) {
        return retryAfterMillis >= 0 ? retryAfterMillis : backoff.delayMillis(failures, random);
    }

    private void sendWaiting() {
        while (!waiting.isEmpty()) {
            Task task = waiting.peek();
            long now = clock.now();
            int parts = Math.max(1, sender.countParts(task.message));
            long wait = pacer.waitMillis(parts, now);
            if (wait > 0) {
                nextSendAt = now + wait;
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
                // Without a durable record the message could be sent twice: leave it to the
                // server's redelivery.
                otherError = "storage: " + e.getMessage();
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
            if (result.unpaired) {
                stopUnpaired(result.lastError);
            } else if (result.lastError != null) {
                otherError = "status report: " + result.lastError;
            } else if (result.accepted > 0) {
                otherError = null;
            }
        } catch (IOException e) {
            otherError = "storage: " + e.getMessage();
        }
    }

    private boolean stopIfUnpaired(ApiException e) {
        if (!e.meansUnpaired()) {
            return false;
        }
        stopUnpaired(e.getMessage());
        return true;
    }

    private void stopUnpaired(String reason) {
        unpaired = true;
        waiting.clear();
        waitingIds.clear();
        otherError = reason;
        publish();
        listener.onUnpaired(reason);
    }

    private String lastError() {
        if (unpaired) {
            return otherError;
        }
        return heartbeatError != null ? heartbeatError : pollError != null ? pollError : otherError;
    }

    private void publish() {
        long onlineUntil = lastHeartbeatOkAt > 0 ? lastHeartbeatOkAt + config.onlineMillis : 0;
        status = new EngineStatus(!unpaired, unpaired, onlineUntil, lastHeartbeatOkAt, lastPollAt, lastPollCount,
            nextPollAt, waiting.size(), outbox.size(), duplicatesSkipped, lastError());
        listener.onStatus(status);
    }
}
