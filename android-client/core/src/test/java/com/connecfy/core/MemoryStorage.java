package com.connecfy.core;

import java.io.IOException;
import java.util.HashMap;
import java.util.Map;

/** {@link Storage} in memory that counts the characters each document was written with. */
class MemoryStorage implements Storage {
    final Map<String, String> documents = new HashMap<String, String>();
    long charsWritten;

    @Override
    public synchronized String read(String name) {
        return documents.get(name);
    }

    @Override
    public synchronized void write(String name, String text) throws IOException {
        documents.put(name, text);
        charsWritten += text.length();
    }

    @Override
    public synchronized void append(String name, String text) throws IOException {
        String old = documents.get(name);
        documents.put(name, old == null ? text : old + text);
        charsWritten += text.length();
    }

    @Override
    public synchronized void delete(String name) {
        documents.remove(name);
    }

    /** The characters the phone keeps for its sent ids, whatever the documents are called. */
    synchronized long sentIdChars() {
        long total = 0;
        for (Map.Entry<String, String> e : documents.entrySet()) {
            if (e.getKey().startsWith("sent-ids")) {
                total += e.getValue().length();
            }
        }
        return total;
    }
}
