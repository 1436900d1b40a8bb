package com.connecfy.core;

import java.io.IOException;
import java.util.HashSet;
import java.util.Set;

/** A {@link Storage} whose writes of the named documents fail, as on a full disk. */
final class FailingStorage implements Storage {
    private final Storage delegate;
    final Set<String> failWrites = new HashSet<String>();
    /** Documents whose whole rewrites fail while appends to them still work. */
    final Set<String> failRewrites = new HashSet<String>();

    FailingStorage(Storage delegate) {
        this.delegate = delegate;
    }

    @Override
    public String read(String name) throws IOException {
        return delegate.read(name);
    }

    @Override
    public void write(String name, String text) throws IOException {
        if (failWrites.contains(name) || failRewrites.contains(name)) {
            throw new IOException("no space left on device");
        }
        delegate.write(name, text);
    }

    @Override
    public void append(String name, String text) throws IOException {
        if (failWrites.contains(name)) {
            throw new IOException("no space left on device");
        }
        delegate.append(name, text);
    }

    @Override
    public void delete(String name) throws IOException {
        delegate.delete(name);
    }
}
