package com.connecfy.core;

import static org.junit.Assert.assertEquals;

import org.junit.Test;

public class RetryAfterTest {
    private static final long NOW = 1445412480000L; // Wed, 21 Oct 2015 07:28:00 GMT

    @Test
    public void secondsBecomeMillis() {
        assertEquals(0, RetryAfter.parseMillis("0", NOW));
        assertEquals(7000, RetryAfter.parseMillis("7", NOW));
        assertEquals(120000, RetryAfter.parseMillis(" 120 ", NOW));
    }

    @Test
    public void fractionsRoundUp() {
        assertEquals(1500, RetryAfter.parseMillis("1.5", NOW));
        assertEquals(1, RetryAfter.parseMillis("0.0001", NOW));
    }

    @Test
    public void httpDatesCountFromNow() {
        assertEquals(30000, RetryAfter.parseMillis("Wed, 21 Oct 2015 07:28:30 GMT", NOW));
        assertEquals(30000, RetryAfter.parseMillis("Wednesday, 21-Oct-15 07:28:30 GMT", NOW));
        assertEquals(30000, RetryAfter.parseMillis("Wed Oct 21 07:28:30 2015", NOW));
    }

    @Test
    public void aDateInThePastMeansNow() {
        assertEquals(0, RetryAfter.parseMillis("Wed, 21 Oct 2015 07:00:00 GMT", NOW));
    }

    @Test
    public void hugeWaitsAreCapped() {
        assertEquals(RetryAfter.MAX_MILLIS, RetryAfter.parseMillis("86400", NOW));
        assertEquals(RetryAfter.MAX_MILLIS, RetryAfter.parseMillis("99999999999999999999", NOW));
        assertEquals(RetryAfter.MAX_MILLIS, RetryAfter.parseMillis("Fri, 01 Jan 2100 00:00:00 GMT", NOW));
    }

    @Test
    public void absentOrGarbageIsMinusOne() {
        assertEquals(-1, RetryAfter.parseMillis(null, NOW));
        assertEquals(-1, RetryAfter.parseMillis("", NOW));
        assertEquals(-1, RetryAfter.parseMillis("-5", NOW));
        assertEquals(-1, RetryAfter.parseMillis("soon", NOW));
        assertEquals(-1, RetryAfter.parseMillis("1.2.3", NOW));
        assertEquals(-1, RetryAfter.parseMillis(".5", NOW));
        assertEquals(-1, RetryAfter.parseMillis("Wed, 21 Oct 2015 07:28:30 GMT trailing", NOW));
    }
}
