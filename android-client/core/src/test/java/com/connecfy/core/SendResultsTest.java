package com.connecfy.core;

import static org.junit.Assert.assertEquals;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.TimeZone;

import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class SendResultsTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    private FakeClock clock;
    private FileStorage storage;
    private Outbox outbox;
    private DailyCounts counts;
    private SendResults results;

    @Before
    public void setUp() throws IOException {
        clock = new FakeClock(1700000000000L);
        storage = TempDir.storage(folder, "phone");
        reopen();
    }

    /** As after an app restart: everything read back from storage. */
    private void reopen() throws IOException {
        outbox = new Outbox(storage, clock, new Random(1), new Backoff(1000, 60000));
        counts = new DailyCounts(storage, clock, TimeZone.getTimeZone("UTC"));
        results = new SendResults(storage, outbox, counts, clock);
    }

    private List<String> queued() {
        List<String> out = new ArrayList<String>();
        for (Outbox.Report r : outbox.pending()) {
            out.add(r.messageId + " " + r.status + (r.error.isEmpty() ? "" : " " + r.error));
        }
        return out;
    }

    @Test
    public void sentWhenEveryPartLeftThenDeliveredWhenEveryPartArrived() throws IOException {
        results.dispatched("m", 3);
        results.partSent("m", 0, SmsErrors.RESULT_OK);
        results.partSent("m", 1, SmsErrors.RESULT_OK);
        results.partSent("m", 1, SmsErrors.RESULT_OK); // a repeated broadcast
        assertEquals(Arrays.<String>asList(), queued());
        reopen(); // the app restarted between two broadcasts
        results.partSent("m", 2, SmsErrors.RESULT_OK);
        assertEquals(Arrays.asList("m sent"), queued());
        results.partDelivered("m", 0, 0x00);
        results.partDelivered("m", 1, 0x20); // still trying: not final
        results.partDelivered("m", 2, 0x00);
        assertEquals(Arrays.asList("m sent"), queued());
        results.partDelivered("m", 1, 0x00);
        assertEquals(Arrays.asList("m sent", "m delivered"), queued());
        assertEquals(1, counts.sentToday());
        assertEquals(0, results.tracking());
    }

    @Test
    public void onePartFailingFailsTheMessageWithTheResultCode() throws IOException {
        results.dispatched("m", 2);
        results.partSent("m", 0, SmsErrors.RESULT_OK);
        results.partSent("m", 1, 2);
        results.partSent("m", 1, SmsErrors.RESULT_OK); // late broadcasts change nothing
        assertEquals(Arrays.asList("m failed RESULT_ERROR_RADIO_OFF (2)"), queued());
        assertEquals(1, counts.failedToday());
        assertEquals(0, counts.sentToday());
    }

    @Test
    public void aFailedDeliveryReportFailsASentMessage() throws IOException {
        results.dispatched("m", 1);
        results.partSent("m", 0, SmsErrors.RESULT_OK);
        results.partDelivered("m", 0, 0x41);
        assertEquals(Arrays.asList("m sent", "m failed DELIVERY_FAILED (TP-Status 0x41)"), queued());
    }

    @Test
    public void aSendCallThatThrowsIsAFailure() throws IOException {
        results.dispatched("m", 1);
        results.notSent("m", new SecurityException("SEND_SMS not granted"));
        assertEquals(Arrays.asList("m failed NOT_SENT SecurityException: SEND_SMS not granted"), queued());
    }

    @Test
    public void unknownResultCodesStillNameTheirNumber() {
        assertEquals("RESULT_CODE (133)", SmsErrors.sendFailure(133));
        assertEquals("RESULT_ERROR_GENERIC_FAILURE (1)", SmsErrors.sendFailure(1));
    }

    @Test
    public void countsStartAgainEachDay() throws IOException {
        clock.set(1700000000000L); // 2023-11-14 22:13 UTC
        counts.countSent();
        counts.countFailed();
        reopen();
        assertEquals(1, counts.sentToday());
        assertEquals(1, counts.failedToday());
        clock.advance(2 * 60 * 60 * 1000L);
        assertEquals(0, counts.sentToday());
        assertEquals(0, counts.failedToday());
    }
}
