package com.connecfy.core;

/**
 * Two clocks, injected so schedules can be tested without waiting. {@link #now} is wall
 * time, for timestamps that are stored or shown (it jumps when the user or the network
 * sets the phone's time); {@link #elapsedMillis} only moves forward at a steady rate
 * (on Android {@code SystemClock.elapsedRealtime()}, which keeps counting in deep sleep)
 * and is what every wait and next-due time is measured on.
 */
public interface Clock {
    /** Wall time: milliseconds since the epoch. */
    long now();

    /** Monotonic time in milliseconds from an arbitrary origin; never goes back. */
    long elapsedMillis();

    /** The JVM's clocks: {@code System.currentTimeMillis()} and {@code System.nanoTime()}. */
    Clock SYSTEM = new Clock() {
        @Override
        public long now() {
            return System.currentTimeMillis();
        }

        @Override
        public long elapsedMillis() {
            return System.nanoTime() / 1000000L;
        }
    };
}
