package com.connecfy.core;

import static org.junit.Assert.assertTrue;

import java.util.Random;

import org.junit.Test;

/** When the app tries again to start its service after Android refused a start from the background. */
public class ServiceRestartTest {
    @Test
    public void retriesSoonThenBackOffToAQuarterHour() {
        Random random = new Random(7);
        long first = ServiceRestart.delayMillis(1, random);
        assertTrue("first retry after " + first, first >= 30000 && first <= 60000);
        long previousCeiling = 0;
        for (int attempt = 1; attempt <= 20; attempt++) {
            long delay = ServiceRestart.delayMillis(attempt, random);
            assertTrue("attempt " + attempt + ": " + delay, delay >= 30000 && delay <= 15 * 60000);
            long ceiling = ServiceRestart.BACKOFF.ceilingMillis(attempt);
            assertTrue(ceiling >= previousCeiling);
            previousCeiling = ceiling;
        }
        assertTrue(ServiceRestart.delayMillis(50, random) >= 15 * 60000 / 2);
    }

    @Test
    public void aFirstAttemptOfZeroOrLessIsTheFirst() {
        assertTrue(ServiceRestart.delayMillis(0, new Random(1)) <= 60000);
        assertTrue(ServiceRestart.delayMillis(-3, new Random(1)) <= 60000);
    }
}
