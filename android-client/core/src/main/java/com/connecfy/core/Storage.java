package com.connecfy.core;

import java.io.IOException;

/**
 * Small named text documents kept across restarts (credentials, outbox, sent ids).
 * A write replaces the whole document atomically: a reader sees the old or the new
 * text, never a torn one. An append adds to the end of a document (creating it), on
 * disk when it returns; a crash during an append may leave part of the text at the end.
 */
public interface Storage {
    /** The document's text, or null when it does not exist. */
    String read(String name) throws IOException;

    void write(String name, String text) throws IOException;

    void append(String name, String text) throws IOException;

    void delete(String name) throws IOException;
}
