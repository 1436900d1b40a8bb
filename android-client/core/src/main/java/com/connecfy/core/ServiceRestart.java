package com.connecfy.core;

import java.util.Random;

/**
 * When to try again to start the gateway's foreground service after Android refused to
 * start it: Android 12 and newer refuse a foreground service started from the background
 * (a START_STICKY restart after the process was killed, say) unless the app is exempt from
 * battery optimisation. The app then schedules a retry, from about a minute, doubling up
 * to a quarter of an hour, with jitter; a start that works resets the count.
 */
public final class ServiceRestart {
    public static final Backoff BACKOFF = new Backoff(60000, 15 * 60000);

    private ServiceRestart() {
    }

    /** The wait before the {@code attempt}-th retry in a row (1: the first). */
    public static long delayMillis(int attempt, Random random) {
        return BACKOFF.delayMillis(Math.max(1, attempt), random);
    }
}
