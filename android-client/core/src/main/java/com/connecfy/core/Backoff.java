package com.connecfy.core;

import java.util.Random;

/**
 * Exponential backoff with jitter: after the n-th failure in a row the wait is
 * {@code min(cap, base * 2^(n-1))}, of which a random half is taken off ("equal
 * jitter"), so phones that lost the server together do not come back together, and
 * no wait is shorter than half the step.
 */
public final class Backoff {
    private final long baseMillis;
    private final long capMillis;

    public Backoff(long baseMillis, long capMillis) {
        if (baseMillis <= 0 || capMillis < baseMillis) {
            throw new IllegalArgumentException("need 0 < base <= cap");
        }
        this.baseMillis = baseMillis;
        this.capMillis = capMillis;
    }

    /** The step before jitter after {@code failures} failures in a row (at least 1). */
    public long ceilingMillis(int failures) {
        int n = Math.max(1, failures);
        long step = baseMillis;
        for (int i = 1; i < n && step < capMillis; i++) {
            step *= 2;
        }
        return Math.min(step, capMillis);
    }

    /** The wait after {@code failures} failures in a row: in [ceiling/2, ceiling]. */
    public long delayMillis(int failures, Random random) {
        long ceiling = ceilingMillis(failures);
        long half = ceiling / 2;
        return ceiling - half + (long) (random.nextDouble() * (half + 1));
    }
}
