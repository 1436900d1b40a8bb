package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

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

    private static String oldDocument(int count, long at) {
        StringBuilder text = new StringBuilder("{");
        for (int i = 0; i < count; i++) {
            text.append(i == 0 ? "" : ",").append('"').append(ulid(i)).append("\":").append(at);
        }
        return text.append('}').toString();
    }

    /** A 26-character id like the server's. */
    private static String ulid(int i) {
        String n = Integer.toString(i);
        return "01HZX3K9QW8E7R6T5Y4U3" + "00000".substring(n.length() > 5 ? 5 : n.length()) + n;
    }

    @Test
    public void oneSendWritesOneLineNotEveryIdAgain() throws IOException {
        FakeClock clock = new FakeClock(1700000000000L);
        MemoryStorage storage = new MemoryStorage();
        storage.write(SentIds.DOCUMENT, oldDocument(50000, clock.now()));
        SentIds ids = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
        assertEquals(50000, ids.size());
        storage.charsWritten = 0;
        assertTrue(ids.add("01HZX3K9QW8E7R6T5Y4U3NEW01"));
        assertTrue("one send at 50,000 ids wrote " + storage.charsWritten + " characters",
            storage.charsWritten < 100);
        assertTrue(ids.contains(ulid(49999)));
    }

    @Test
    public void manySendsWriteAndKeepABoundedAmount() throws IOException {
        FakeClock clock = new FakeClock(1700000000000L);
        MemoryStorage storage = new MemoryStorage();
        long retention = 500 * 1000L; // about 500 ids live at a time
        SentIds ids = new SentIds(storage, clock, retention);
        long largest = 0;
        for (int i = 0; i < 20000; i++) {
            assertTrue(ids.add(ulid(i)));
            clock.advance(1000);
            largest = Math.max(largest, storage.sentIdChars());
        }
        assertTrue("20,000 sends wrote " + storage.charsWritten + " characters", storage.charsWritten < 4000000);
        assertTrue("the largest the sent ids grew: " + largest, largest < 100000);
        SentIds reopened = new SentIds(storage, clock, retention);
        assertTrue(reopened.contains(ulid(19999)));
        assertFalse(reopened.contains(ulid(0)));
    }

    @Test
    public void aLineCutShortByACrashIsSkippedAndTheNextAppendStartsAfresh() throws IOException {
        FakeClock clock = new FakeClock(1700000000000L);
        FileStorage storage = TempDir.storage(folder, "phone");
        SentIds ids = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
        assertTrue(ids.add("A"));
        assertTrue(ids.add("B"));
        // Power is lost while C's line is being appended: only part of it reached the disk.
        storage.append(SentIds.LOG, "[\"C\",17000");
        SentIds reopened = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
        assertTrue(reopened.contains("A"));
        assertTrue(reopened.contains("B"));
        assertFalse("C never reached SmsManager: its record was not complete", reopened.contains("C"));
        assertTrue(storage.read(SentIds.LOG).endsWith("\n"));
        assertTrue(reopened.add("D"));
        SentIds again = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
        assertTrue("D's line does not run on from the torn one", again.contains("D"));
        assertTrue(again.contains("A"));
        assertEquals(3, again.size());
    }

    @Test
    public void anUnreadableLineLosesOnlyItself() throws IOException {
        FakeClock clock = new FakeClock(1700000000000L);
        FileStorage storage = TempDir.storage(folder, "phone");
        storage.write(SentIds.LOG, "[\"A\",1700000000000]\n\u0000\u0000garbage\n[\"B\",1700000000000]\n");
        SentIds ids = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
        assertTrue(ids.contains("A"));
        assertTrue(ids.contains("B"));
        assertEquals(2, ids.size());
        assertEquals("rewritten without the bad line", 2, ids.logLines());
    }

    @Test
    public void aFailedCompactionLosesNothing() throws IOException {
        FakeClock clock = new FakeClock(1700000000000L);
        FailingStorage storage = new FailingStorage(TempDir.storage(folder, "phone"));
        SentIds ids = new SentIds(storage, clock, 1000);
        storage.failRewrites.add(SentIds.LOG); // every compaction fails; appends work
        for (int i = 0; i < SentIds.MIN_GARBAGE_LINES + 100; i++) {
            assertTrue(ids.add("id" + i));
            clock.advance(2000); // each id is forgotten by the next add
        }
        assertTrue("not compacted: " + ids.logLines(), ids.logLines() > SentIds.MIN_GARBAGE_LINES + 1);
        storage.failWrites.add(SentIds.LOG);
        try {
            ids.add("unrecorded");
            fail("an id that could not be written must not be taken as recorded");
        } catch (IOException expected) {
            assertFalse(ids.contains("unrecorded"));
        }
        storage.failWrites.clear();
        storage.failRewrites.clear();
        SentIds reopened = new SentIds(storage, clock, 5000); // the last two ids are within 5 s
        assertTrue(reopened.contains("id" + (SentIds.MIN_GARBAGE_LINES + 99)));
        assertTrue(reopened.contains("id" + (SentIds.MIN_GARBAGE_LINES + 98)));
        assertFalse(reopened.contains("unrecorded"));
        assertTrue(reopened.add("next"));
        assertEquals("compacted once the disk allows it", 3, reopened.logLines());
        assertTrue(new SentIds(storage, clock, 5000).contains("next"));
    }

    @Test
    public void theEarlierDocumentIsMovedIntoTheLog() throws IOException {
        FakeClock clock = new FakeClock(1700000000000L);
        FileStorage storage = TempDir.storage(folder, "phone");
        storage.write(SentIds.DOCUMENT, "{\"A\":1700000000000,\"B\":1699999999000}");
        SentIds ids = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
        assertTrue(ids.contains("A"));
        assertTrue(ids.contains("B"));
        assertEquals(null, storage.read(SentIds.DOCUMENT));
        assertTrue(new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS).contains("B"));
    }

    @Test
    public void theOldestIdsGoPastTheLimitAndTheLogIsCompacted() throws IOException {
        FakeClock clock = new FakeClock(1700000000000L);
        MemoryStorage storage = new MemoryStorage();
        SentIds ids = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS, 2000);
        for (int i = 0; i < 10000; i++) {
            ids.add(ulid(i));
            clock.advance(1);
            assertTrue("lines " + ids.logLines(), ids.logLines() <= 2000 + SentIds.MIN_GARBAGE_LINES + 1);
        }
        assertEquals(2000, ids.size());
        assertFalse(ids.contains(ulid(7999)));
        assertTrue(ids.contains(ulid(8000)));
        SentIds reopened = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS, 2000);
        assertEquals(2000, reopened.size());
        assertTrue(reopened.contains(ulid(9999)));
    }
}
