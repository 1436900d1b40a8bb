package com.connecfy.core;

import java.io.File;
import java.io.IOException;

import org.junit.rules.TemporaryFolder;

/** A fresh storage directory per test; "restarting the app" is opening it again. */
final class TempDir {
    private TempDir() {
    }

    static FileStorage storage(TemporaryFolder folder, String name) throws IOException {
        File dir = new File(folder.getRoot(), name);
        return new FileStorage(dir);
    }
}
