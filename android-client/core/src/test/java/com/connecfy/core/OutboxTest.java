package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.net.ConnectException;
import java.util.Arrays;
import java.util.Random;

import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class OutboxTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    private FakeClock clock;
    private FakeApi api;
    private FileStorage storage;
    private final Backoff backoff = new Backoff(1000, 60000);

    @Before
    public void setUp() throws IOException {
        clock = new FakeClock(1000000);
        api = new FakeApi(clock);
        storage = TempDir.storage(folder, "phone");
    }

    private Outbox open() throws IOException {
        return new Outbox(storage, clock, new Random(3), backoff);
    }

    @Test
    public void dispositionOfEachStatus() {
        for (int s : new int[] {200, 201, 204}) {
            assertEquals(Disposition.DONE, Disposition.of(s));
        }
        for (int s : new int[] {400, 404, 409, 410, 413, 422}) {
            assertEquals("status " + s, Disposition.FINAL, Disposition.of(s));
        }
        for (int s : new int[] {401, 403, 408, 425, 429, 500, 502, 503, 504, 301, 0}) {
            assertEquals("status " + s, Disposition.RETRY, Disposition.of(s));
        }
    }

    @Test
    public void aTwoHundredOrAFinalFourHundredEndsTheRetry() throws IOException {
        Outbox outbox = open();
        outbox.add("m1", Outbox.SENT, "");
        outbox.add("m2", Outbox.SENT, "");
        outbox.add("m3", Outbox.SENT, "");
        outbox.add("m4", Outbox.SENT, "");
        api.reportScript.add(Boolean.TRUE); // 2xx
        api.reportScript.add(FakeApi.status(404));
        api.reportScript.add(FakeApi.status(409));
        api.reportScript.add(FakeApi.status(400));
        Outbox.DrainResult r = outbox.drain(api);
        assertEquals(1, r.accepted);
        assertEquals(3, r.dropped);
        assertFalse(r.tokenRefused);
        assertEquals(0, outbox.size());
        assertEquals(0, open().size());
        assertEquals(Long.MAX_VALUE, outbox.nextAttemptAt());
    }

    @Test
    public void retryableAnswersKeepTheReportAcrossARestart() throws IOException {
        for (Exception failure : Arrays.asList(FakeApi.status(408), FakeApi.status(500), FakeApi.status(503),
                FakeApi.tooMany(-1), new ConnectException("refused"))) {
            storage.delete(Outbox.DOCUMENT);
            Outbox outbox = open();
            outbox.add("m1", Outbox.SENT, "");
            api.reportScript.add(failure);
            Outbox.DrainResult r = outbox.drain(api);
            assertEquals(failure.toString(), 1, r.retried);
            assertEquals(1, outbox.size());
            Outbox reopened = open();
            assertEquals("kept on disk after " + failure, 1, reopened.size());
            assertEquals(1, reopened.pending().get(0).attempts());
            assertTrue(reopened.pending().get(0).nextAttemptAt() > clock.elapsedMillis());
        }
    }

    @Test
    public void aRefusedTokenKeepsTheReportAndStopsTheDrain() throws IOException {
        Outbox outbox = open();
        outbox.add("m1", Outbox.SENT, "");
        outbox.add("m2", Outbox.SENT, "");
        api.reportScript.add(FakeApi.notAuthenticated());
        Outbox.DrainResult r = outbox.drain(api);
        assertTrue(r.tokenRefused);
        assertEquals("the drain stops at the first, and keeps it", 2, outbox.size());
        assertEquals(2, open().size());
        assertTrue(outbox.nextAttemptAt() > clock.elapsedMillis());
    }

    @Test
    public void aForeignUnauthorizedOrForbiddenPageIsRetriedLater() throws IOException {
        for (ApiException page : Arrays.asList(FakeApi.foreignPage(401), FakeApi.foreignPage(403),
                FakeApi.status(403))) {
            Outbox outbox = open();
            outbox.clear();
            clock.advance(RetryAfter.MAX_MILLIS);
            outbox.add("m1", Outbox.SENT, "");
            outbox.add("m2", Outbox.SENT, "");
            api.reportScript.add(page);
            Outbox.DrainResult r = outbox.drain(api);
            assertFalse(page.getMessage(), r.tokenRefused);
            assertEquals(page.getMessage() + ": kept for a retry", 2, outbox.size());
            assertEquals(0, r.dropped);
            assertTrue(outbox.nextAttemptAt() > clock.elapsedMillis());
        }
    }

    @Test
    public void noAnswerBacksOffTheWholeOutboxWithGrowingJitteredWaits() throws IOException {
        Outbox outbox = open();
        outbox.add("m1", Outbox.SENT, "");
        outbox.add("m2", Outbox.SENT, "");
        long previousCeiling = 0;
        for (int attempt = 1; attempt <= 6; attempt++) {
            api.reportScript.add(new IOException("network down"));
            int callsBefore = api.log.size();
            Outbox.DrainResult r = outbox.drain(api);
            assertEquals("one attempt per drain while the server is unreachable", callsBefore + 1, api.log.size());
            assertEquals(1, r.retried);
            long wait = outbox.nextAttemptAt() - clock.elapsedMillis();
            long ceiling = backoff.ceilingMillis(attempt);
            assertTrue("wait " + wait + " within [" + ceiling / 2 + ", " + ceiling + "]",
                wait >= ceiling / 2 && wait <= ceiling);
            assertTrue(ceiling >= previousCeiling);
            previousCeiling = ceiling;
            assertEquals("nothing is tried before its time", callsBefore + 1, drainNow(outbox));
            clock.advance(wait);
        }
        Outbox.DrainResult r = outbox.drain(api);
        assertEquals(2, r.accepted);
        assertEquals(0, outbox.size());
    }

    private int drainNow(Outbox outbox) throws IOException {
        outbox.drain(api);
        return api.log.size();
    }

    @Test
    public void retryAfterIsTheShortestWait() throws IOException {
        Outbox outbox = open();
        outbox.add("m1", Outbox.SENT, "");
        api.reportScript.add(FakeApi.tooMany(45000));
        outbox.drain(api);
        assertEquals(clock.elapsedMillis() + 45000, outbox.nextAttemptAt());
        clock.advance(44999);
        assertEquals(0, outbox.drain(api).accepted);
        clock.advance(1);
        assertEquals(1, outbox.drain(api).accepted);
    }

    @Test
    public void reportsOfOneMessageKeepTheirOrderWhileOthersGoAhead() throws IOException {
        Outbox outbox = open();
        outbox.add("a", Outbox.SENT, "");
        outbox.add("a", Outbox.DELIVERED, "");
        outbox.add("b", Outbox.FAILED, "RESULT_ERROR_RADIO_OFF (2)");
        api.reportScript.add(FakeApi.status(500)); // a/sent: an error of this report only
        Outbox.DrainResult r = outbox.drain(api);
        assertEquals(1, r.retried);
        assertEquals("b went ahead; a/delivered waited behind a/sent",
            Arrays.asList("b failed RESULT_ERROR_RADIO_OFF (2)"), api.reports);
        clock.advance(backoff.ceilingMillis(1));
        outbox.drain(api);
        assertEquals(Arrays.asList("b failed RESULT_ERROR_RADIO_OFF (2)", "a sent", "a delivered"), api.reports);
    }

    @Test
    public void aServerWideErrorStopsTheDrain() throws IOException {
        for (int status : new int[] {429, 502, 503, 504}) {
            Outbox outbox = open();
            outbox.clear();
            clock.advance(RetryAfter.MAX_MILLIS);
            outbox.add("a", Outbox.SENT, "");
            outbox.add("b", Outbox.SENT, "");
            api.reportScript.add(FakeApi.status(status));
            int before = api.log.size();
            outbox.drain(api);
            assertEquals("status " + status, before + 1, api.log.size());
            assertTrue(outbox.nextAttemptAt() > clock.elapsedMillis());
        }
    }

    @Test
    public void theSameReportIsQueuedOnce() throws IOException {
        Outbox outbox = open();
        outbox.add("a", Outbox.SENT, "");
        outbox.add("a", Outbox.SENT, "");
        assertEquals(1, outbox.size());
    }

    @Test
    public void aStoredRetryTimeFarAheadWaitsNoLongerThanTheLongestBackoff() throws IOException {
        Outbox outbox = open();
        outbox.add("m1", Outbox.SENT, "");
        api.reportScript.add(new IOException("network down"));
        outbox.drain(api);
        clock.shiftWall(-10L * 3600000); // set back ten hours, then the app restarts
        Outbox reopened = open();
        long wait = reopened.nextAttemptAt() - clock.elapsedMillis();
        assertTrue("wait " + wait, wait > 0 && wait <= backoff.ceilingMillis(Integer.MAX_VALUE));
    }

    @Test
    public void retryableAndTheSimSlotSurviveARestartAndAFailedAttempt() throws IOException {
        Outbox outbox = open();
        outbox.add("a", Outbox.FAILED, "RESULT_ERROR_NO_SERVICE (4)", true, null);
        outbox.add("b", Outbox.SENT, "", false, 2);
        outbox.add("c", Outbox.DELIVERED, "", true, 2); // neither means anything with delivered
        api.reportScript.add(new IOException("network down"));
        outbox.drain(api);
        Outbox reopened = open(); // the app restarts while offline
        clock.advance(backoff.ceilingMillis(Integer.MAX_VALUE));
        assertEquals(3, reopened.drain(api).accepted);
        assertEquals(Arrays.asList("a failed RESULT_ERROR_NO_SERVICE (4) retryable", "b sent sim=2", "c delivered"),
            api.reports);
        assertEquals("the attempt that got no answer said as much",
            "a failed RESULT_ERROR_NO_SERVICE (4) retryable", api.reportsTried.get(0));
    }

    @Test
    public void aServerThatRefusesTheNewFieldsGetsThePlainReportAtOnce() throws IOException {
        Outbox outbox = open();
        outbox.add("a", Outbox.SENT, "", false, 2);
        outbox.add("b", Outbox.FAILED, "RESULT_ERROR_RADIO_OFF (2)", true, null);
        outbox.add("c", Outbox.SENT, "");
        api.reportScript.add(FakeApi.badInput("unknown field sim_slot"));
        api.reportScript.add(Boolean.TRUE);
        api.reportScript.add(FakeApi.badInput("unknown field retryable"));
        api.reportScript.add(Boolean.TRUE);
        api.reportScript.add(FakeApi.badInput("a plain report the server will never take"));
        Outbox.DrainResult r = outbox.drain(api);
        assertEquals(Arrays.asList("a sent sim=2", "a sent", "b failed RESULT_ERROR_RADIO_OFF (2) retryable",
            "b failed RESULT_ERROR_RADIO_OFF (2)", "c sent"), api.reportsTried);
        assertEquals(Arrays.asList("a sent", "b failed RESULT_ERROR_RADIO_OFF (2)"), api.reports);
        assertEquals("a plain report refused is dropped as before", 1, r.dropped);
        assertEquals(0, outbox.size());
    }
}
