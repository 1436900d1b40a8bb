package com.connecfy.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;

import java.io.File;
import java.io.IOException;

import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class FileStorageTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    @Test
    public void writesReplaceWholeAndLeaveNoTemporaryFile() throws IOException {
        File dir = new File(folder.getRoot(), "files");
        FileStorage storage = new FileStorage(dir);
        assertNull(storage.read("outbox.json"));
        storage.write("outbox.json", "{\"reports\":[]}");
        storage.write("outbox.json", "{\"reports\":[1]} \u00e9");
        assertEquals("{\"reports\":[1]} \u00e9", new FileStorage(dir).read("outbox.json"));
        assertArrayEquals(new String[] {"outbox.json"}, dir.list());
        storage.delete("outbox.json");
        storage.delete("outbox.json");
        assertNull(storage.read("outbox.json"));
    }

    @Test(expected = IllegalArgumentException.class)
    public void namesCannotLeaveTheDirectory() throws IOException {
        new FileStorage(folder.getRoot()).read("../device.json");
    }
}
