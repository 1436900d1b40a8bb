package com.connecfy.core;

import static org.junit.Assert.assertEquals;

import java.io.IOException;

import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class SendPacerTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    @Test
    public void partsWithinTheLimitGoAtOnceThenWaitForTheOldestToLeave() throws IOException {
        SendPacer pacer = new SendPacer(TempDir.storage(folder, "p"), 30, 60000);
        long t = 0;
        for (int i = 0; i < 10; i++) {
            assertEquals(0, pacer.waitMillis(3, t));
            pacer.record(3, t);
            t += 1000;
        }
        // 30 parts at 0..9 s: up to 3 parts wait for the send at 0 s, 4 to 6 for the one at 1 s too.
        assertEquals(60000 - t, pacer.waitMillis(1, t));
        assertEquals(60000 - t, pacer.waitMillis(3, t));
        assertEquals(61000 - t, pacer.waitMillis(4, t));
        assertEquals(0, pacer.waitMillis(3, 60000));
    }

    @Test
    public void aMessageLongerThanTheLimitWaitsForAnEmptyWindow() throws IOException {
        SendPacer pacer = new SendPacer(TempDir.storage(folder, "p"), 5, 60000);
        assertEquals(0, pacer.waitMillis(8, 0));
        pacer.record(8, 0);
        pacer.record(1, 10000);
        assertEquals(70000 - 20000, pacer.waitMillis(8, 20000));
    }

    @Test
    public void recentSendsSurviveARestart() throws IOException {
        SendPacer pacer = new SendPacer(TempDir.storage(folder, "p"), 30, 60000);
        pacer.record(30, 5000);
        SendPacer reopened = new SendPacer(TempDir.storage(folder, "p"), 30, 60000);
        assertEquals(65000 - 6000, reopened.waitMillis(1, 6000));
    }

    @Test
    public void sendsThatSeemToLieInTheFutureCountAsSentNow() throws IOException {
        SendPacer pacer = new SendPacer(TempDir.storage(folder, "p"), 30, 61000);
        pacer.record(30, 3600000 + 5000); // then the clock was set back an hour
        SendPacer reopened = new SendPacer(TempDir.storage(folder, "p"), 30, 61000);
        assertEquals(61000, reopened.waitMillis(1, 5000));
        assertEquals(1000, reopened.waitMillis(1, 65000));
        assertEquals(0, reopened.waitMillis(1, 66000));
    }
}
