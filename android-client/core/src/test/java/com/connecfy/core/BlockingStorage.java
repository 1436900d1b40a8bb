package com.connecfy.core;

import java.io.IOException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/** A {@link Storage} whose writes hang while {@link #hold} is on, as on a slow disk; it counts reads. */
final class BlockingStorage implements Storage {
    private final Storage delegate;
    final AtomicInteger reads = new AtomicInteger();
    final AtomicInteger writesWaiting = new AtomicInteger();
    private volatile CountDownLatch hold;

    BlockingStorage(Storage delegate) {
        this.delegate = delegate;
    }

    void hold() {
        hold = new CountDownLatch(1);
    }

    void release() {
        CountDownLatch h = hold;
        hold = null;
        if (h != null) {
            h.countDown();
        }
    }

    private void waitIfHeld() throws IOException {
        CountDownLatch h = hold;
        if (h == null) {
            return;
        }
        writesWaiting.incrementAndGet();
        try {
            h.await(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            throw new IOException(e);
        } finally {
            writesWaiting.decrementAndGet();
        }
    }

    @Override
    public String read(String name) throws IOException {
        reads.incrementAndGet();
        return delegate.read(name);
    }

    @Override
    public void write(String name, String text) throws IOException {
        waitIfHeld();
        delegate.write(name, text);
    }

    @Override
    public void append(String name, String text) throws IOException {
        waitIfHeld();
        delegate.append(name, text);
    }

    @Override
    public void delete(String name) throws IOException {
        waitIfHeld();
        delegate.delete(name);
    }
}
