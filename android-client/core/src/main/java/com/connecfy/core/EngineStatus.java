package com.connecfy.core;

/** A snapshot of what the device engine is doing, for the main screen and the notification. */
public final class EngineStatus {
    public final boolean running;
    public final boolean unpaired;
    /** Until when the server counts the phone online (its last answered heartbeat + presence TTL). */
    public final long onlineUntil;
    public final long lastHeartbeatAt;
    public final long lastPollAt;
    public final int lastPollCount;
    public final long nextPollAt;
    /** Claimed messages waiting on the phone for their turn (pacing). */
    public final int waitingToSend;
    public final int outbox;
    public final int duplicatesSkipped;
    public final String lastError;

    EngineStatus(boolean running, boolean unpaired, long onlineUntil, long lastHeartbeatAt, long lastPollAt,
            int lastPollCount, long nextPollAt, int waitingToSend, int outbox, int duplicatesSkipped,
            String lastError) {
        this.running = running;
        this.unpaired = unpaired;
        this.onlineUntil = onlineUntil;
        this.lastHeartbeatAt = lastHeartbeatAt;
        this.lastPollAt = lastPollAt;
        this.lastPollCount = lastPollCount;
        this.nextPollAt = nextPollAt;
        this.waitingToSend = waitingToSend;
        this.outbox = outbox;
        this.duplicatesSkipped = duplicatesSkipped;
        this.lastError = lastError;
    }

    public boolean isOnline(long now) {
        return !unpaired && now < onlineUntil;
    }

    public static final EngineStatus STOPPED = new EngineStatus(false, false, 0, 0, 0, 0, 0, 0, 0, 0, null);
}
