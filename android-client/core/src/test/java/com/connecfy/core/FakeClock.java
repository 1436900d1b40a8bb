package com.connecfy.core;

/**
 * A clock that moves only when told. Its monotonic clock starts far from the wall clock,
 * so code that mixes the two shows up; {@link #shiftWall} moves the wall clock alone, as
 * when the user sets the phone's time.
 */
final class FakeClock implements Clock {
    static final long ELAPSED_START = 5000000L;

    private long now;
    private long elapsed = ELAPSED_START;

    FakeClock(long start) {
        this.now = start;
    }

    @Override
    public synchronized long now() {
        return now;
    }

    @Override
    public synchronized long elapsedMillis() {
        return elapsed;
    }

    /** Time passes: both clocks move. */
    synchronized void advance(long millis) {
        now += millis;
        elapsed += millis;
    }

    /** Time passes until the wall clock shows {@code millis}. */
    synchronized void set(long millis) {
        advance(millis - now);
    }

    /** The wall clock is set forward (positive) or back (negative); no time passes. */
    synchronized void shiftWall(long millis) {
        now += millis;
    }
}
