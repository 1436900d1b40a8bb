package com.connecfy.core;

/** Wall-clock time in milliseconds; injected so schedules can be tested without waiting. */
public interface Clock {
    long now();

    Clock SYSTEM = new Clock() {
        @Override
        public long now() {
            return System.currentTimeMillis();
        }
    };
}
