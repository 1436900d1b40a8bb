package com.connecfy.core;

/** A snapshot of what the device engine is doing, for the main screen and the notification. */
public final class EngineStatus {
    public final boolean running;
    public final boolean unpaired;
    /**
     * Until when the server counts the phone online: presence TTL after it last heard from
     * the phone (an answered heartbeat, or a poll it held), or from now while it holds one.
     */
    public final long onlineUntil;
    public final long lastHeartbeatAt;
    public final long lastPollAt;
    public final int lastPollCount;
    public final long nextPollAt;
    /** Instant delivery: the server holds the phone's polls until messages come. */
    public final boolean instant;
    /** Claimed messages waiting on the phone for their turn (pacing). */
    public final int waitingToSend;
    public final int outbox;
    public final int duplicatesSkipped;
    public final String lastError;

    EngineStatus(boolean running, boolean unpaired, long onlineUntil, long lastHeartbeatAt, long lastPollAt,
            int lastPollCount, long nextPollAt, boolean instant, int waitingToSend, int outbox, int duplicatesSkipped,
            String lastError) {
        this.running = running;
        this.unpaired = unpaired;
        this.onlineUntil = onlineUntil;
        this.lastHeartbeatAt = lastHeartbeatAt;
        this.lastPollAt = lastPollAt;
        this.lastPollCount = lastPollCount;
        this.nextPollAt = nextPollAt;
        this.instant = instant;
        this.waitingToSend = waitingToSend;
        this.outbox = outbox;
        this.duplicatesSkipped = duplicatesSkipped;
        this.lastError = lastError;
    }

    public boolean isOnline(long now) {
        return !unpaired && now < onlineUntil;
    }

    public static final EngineStatus STOPPED = new EngineStatus(false, false, 0, 0, 0, 0, 0, false, 0, 0, 0, null);
}
