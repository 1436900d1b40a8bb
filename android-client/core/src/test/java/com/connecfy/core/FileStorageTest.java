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

    @Test
    public void appendsCreateThenGrowTheDocument() throws IOException {
        File dir = new File(folder.getRoot(), "files");
        FileStorage storage = new FileStorage(dir);
        storage.append("sent-ids.log", "a\n");
        storage.append("sent-ids.log", "b \u00e9\n");
        assertEquals("a\nb \u00e9\n", new FileStorage(dir).read("sent-ids.log"));
        storage.write("sent-ids.log", "c\n");
        storage.append("sent-ids.log", "d\n");
        assertEquals("c\nd\n", storage.read("sent-ids.log"));
        assertArrayEquals(new String[] {"sent-ids.log"}, dir.list());
    }

    @Test(expected = IllegalArgumentException.class)
    public void namesCannotLeaveTheDirectory() throws IOException {
        new FileStorage(folder.getRoot()).read("../device.json");
    }
}
