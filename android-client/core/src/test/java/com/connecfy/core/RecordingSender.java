package com.connecfy.core;

import java.util.ArrayList;
import java.util.List;

/** Stands in for SmsManager: records what was handed over; parts = ceil(length / 10). */
class RecordingSender implements SmsSender {
    private final Clock clock;
    final List<String> sent = new ArrayList<String>();
    final List<Long> sentAt = new ArrayList<Long>();
    RuntimeException failWith;
    String cannotSend;

    RecordingSender(Clock clock) {
        this.clock = clock;
    }

    @Override
    public String whyCannotSend() {
        return cannotSend;
    }

    @Override
    public int countParts(String message) {
        return Math.max(1, (message.length() + 9) / 10);
    }

    @Override
    public synchronized void send(Task task, int parts) {
        if (failWith != null) {
            throw failWith;
        }
        sent.add(task.id);
        sentAt.add(clock.now());
    }
}
