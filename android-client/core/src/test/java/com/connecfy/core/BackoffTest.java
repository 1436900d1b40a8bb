package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.HashSet;
import java.util.Random;
import java.util.Set;

import org.junit.Test;

public class BackoffTest {
    @Test
    public void stepsDoubleUpToTheCap() {
        Backoff b = new Backoff(1000, 30000);
        assertEquals(1000, b.ceilingMillis(0));
        assertEquals(1000, b.ceilingMillis(1));
        assertEquals(2000, b.ceilingMillis(2));
        assertEquals(16000, b.ceilingMillis(5));
        assertEquals(30000, b.ceilingMillis(6));
        assertEquals(30000, b.ceilingMillis(1000));
    }

    @Test
    public void jitterStaysBetweenHalfAndTheWholeStepAndVaries() {
        Backoff b = new Backoff(1000, 60000);
        Random random = new Random(7);
        for (int failures = 1; failures < 12; failures++) {
            long ceiling = b.ceilingMillis(failures);
            Set<Long> seen = new HashSet<Long>();
            for (int i = 0; i < 200; i++) {
                long d = b.delayMillis(failures, random);
                assertTrue(d + " below half of " + ceiling, d >= ceiling / 2);
                assertTrue(d + " above " + ceiling, d <= ceiling);
                seen.add(d);
            }
            assertTrue("jitter spreads the waits", seen.size() > 20);
        }
    }

    @Test
    public void extremesOfTheRandomSourceStayInRange() {
        Backoff b = new Backoff(1000, 8000);
        Random zero = new Random() {
            private static final long serialVersionUID = 1L;

            @Override
            public double nextDouble() {
                return 0.0;
            }
        };
        Random almostOne = new Random() {
            private static final long serialVersionUID = 1L;

            @Override
            public double nextDouble() {
                return 0.9999999999;
            }
        };
        assertEquals(4000, b.delayMillis(4, zero));
        assertEquals(8000, b.delayMillis(4, almostOne));
    }

    @Test(expected = IllegalArgumentException.class)
    public void capBelowBaseIsRefused() {
        new Backoff(1000, 999);
    }
}
