package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.IOException;

import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class SentIdsTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    @Test
    public void idsSurviveARestart() throws IOException {
        FakeClock clock = new FakeClock(0);
        FileStorage storage = TempDir.storage(folder, "phone");
        SentIds ids = new SentIds(storage, clock, 10000);
        assertTrue(ids.add("01A"));
        assertFalse(ids.add("01A"));
        SentIds reopened = new SentIds(TempDir.storage(folder, "phone"), clock, 10000);
        assertTrue(reopened.contains("01A"));
        assertFalse(reopened.add("01A"));
        assertFalse(reopened.contains("01B"));
    }

    @Test
    public void idsAreForgottenAfterTheRetention() throws IOException {
        FakeClock clock = new FakeClock(0);
        FileStorage storage = TempDir.storage(folder, "phone");
        SentIds ids = new SentIds(storage, clock, 10000);
        ids.add("old");
        clock.advance(10001);
        ids.add("new");
        assertFalse(ids.contains("old"));
        assertTrue(new SentIds(storage, clock, 10000).contains("new"));
        assertEquals(1, new SentIds(storage, clock, 10000).size());
    }
}
