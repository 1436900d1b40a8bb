package com.connecfy.core;

/** A clock that moves only when told. */
final class FakeClock implements Clock {
    private long now;

    FakeClock(long start) {
        this.now = start;
    }

    @Override
    public synchronized long now() {
        return now;
    }

    synchronized void advance(long millis) {
        now += millis;
    }

    synchronized void set(long millis) {
        now = millis;
    }
}
