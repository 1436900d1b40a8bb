package com.connecfy.core;

/**
 * A clock that moves only when told. Its monotonic clock starts far from the wall clock,
 * so code that mixes the two shows up; {@link #shiftWall} moves the wall clock alone, as
 * when the user sets the phone's time. {@link #movingWithRealTime} makes one that also
 * moves as real time passes, for timing against a real server.
 */
final class FakeClock implements Clock {
    static final long ELAPSED_START = 5000000L;

    private long now;
    private long elapsed = ELAPSED_START;
    /** Whether real time moves this clock too, from System.nanoTime() at {@link #realOrigin}. */
    private final boolean real;
    private final long realOrigin;

    FakeClock(long start) {
        this(start, false);
    }

    private FakeClock(long start, boolean real) {
        this.now = start;
        this.real = real;
        this.realOrigin = System.nanoTime();
    }

    /** A fake clock that real time moves too (and {@link #advance} on top of it). */
    static FakeClock movingWithRealTime(long start) {
        return new FakeClock(start, true);
    }

    private long realMillis() {
        return real ? (System.nanoTime() - realOrigin) / 1000000L : 0;
    }

    @Override
    public synchronized long now() {
        return now + realMillis();
    }

    @Override
    public synchronized long elapsedMillis() {
        return elapsed + realMillis();
    }

    /** Time passes: both clocks move. */
    synchronized void advance(long millis) {
        now += millis;
        elapsed += millis;
    }

    /** Time passes until the wall clock shows {@code millis}. */
    synchronized void set(long millis) {
        advance(millis - now());
    }

    /** The wall clock is set forward (positive) or back (negative); no time passes. */
    synchronized void shiftWall(long millis) {
        now += millis;
    }
}
