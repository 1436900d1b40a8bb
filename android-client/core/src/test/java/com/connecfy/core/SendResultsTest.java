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
            out.add(FakeApi.report(r.messageId, r.status, r.error, r.retryable, r.simSlot)
                + (r.segments == null ? "" : " segments=" + r.segments));
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
    public void anEncryptedMessagesSentReportCarriesItsPartsAcrossRestarts() throws IOException {
        results.dispatched("e", 2, 1, true);
        results.dispatched("p", 2, 1, false);
        results.partSent("e", 0, SmsErrors.RESULT_OK);
        reopen(); // the tracked parts come back from storage
        results.partSent("e", 1, SmsErrors.RESULT_OK);
        results.partSent("p", 0, SmsErrors.RESULT_OK);
        results.partSent("p", 1, SmsErrors.RESULT_OK);
        reopen(); // and so does the waiting report
        assertEquals(Arrays.asList("e sent sim=1 segments=2", "p sent sim=1"), queued());
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
        assertEquals("RESULT_CODE (138)", SmsErrors.sendFailure(138));
        assertEquals("RESULT_CODE (99)", SmsErrors.sendFailure(99));
        assertEquals("RESULT_CODE (-7)", SmsErrors.sendFailure(-7));
        assertEquals("RESULT_ERROR_GENERIC_FAILURE (1)", SmsErrors.sendFailure(1));
    }

    /** SmsManager's RESULT_* constants for a sent result, as of API 34 (Android 14). */
    private static final String[][] API_34_SEND_RESULTS = {
        {"0", "RESULT_ERROR_NONE"},
        {"1", "RESULT_ERROR_GENERIC_FAILURE"},
        {"2", "RESULT_ERROR_RADIO_OFF"},
        {"3", "RESULT_ERROR_NULL_PDU"},
        {"4", "RESULT_ERROR_NO_SERVICE"},
        {"5", "RESULT_ERROR_LIMIT_EXCEEDED"},
        {"6", "RESULT_ERROR_FDN_CHECK_FAILURE"},
        {"7", "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED"},
        {"8", "RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED"},
        {"9", "RESULT_RADIO_NOT_AVAILABLE"},
        {"10", "RESULT_NETWORK_REJECT"},
        {"11", "RESULT_INVALID_ARGUMENTS"},
        {"12", "RESULT_INVALID_STATE"},
        {"13", "RESULT_NO_MEMORY"},
        {"14", "RESULT_INVALID_SMS_FORMAT"},
        {"15", "RESULT_SYSTEM_ERROR"},
        {"16", "RESULT_MODEM_ERROR"},
        {"17", "RESULT_NETWORK_ERROR"},
        {"18", "RESULT_ENCODING_ERROR"},
        {"19", "RESULT_INVALID_SMSC_ADDRESS"},
        {"20", "RESULT_OPERATION_NOT_ALLOWED"},
        {"21", "RESULT_INTERNAL_ERROR"},
        {"22", "RESULT_NO_RESOURCES"},
        {"23", "RESULT_CANCELLED"},
        {"24", "RESULT_REQUEST_NOT_SUPPORTED"},
        {"25", "RESULT_NO_BLUETOOTH_SERVICE"},
        {"26", "RESULT_INVALID_BLUETOOTH_ADDRESS"},
        {"27", "RESULT_BLUETOOTH_DISCONNECTED"},
        {"28", "RESULT_UNEXPECTED_EVENT_STOP_SENDING"},
        {"29", "RESULT_SMS_BLOCKED_DURING_EMERGENCY"},
        {"30", "RESULT_SMS_SEND_RETRY_FAILED"},
        {"31", "RESULT_REMOTE_EXCEPTION"},
        {"32", "RESULT_NO_DEFAULT_SMS_APP"},
        {"33", "RESULT_USER_NOT_ALLOWED"},
        {"100", "RESULT_RIL_RADIO_NOT_AVAILABLE"},
        {"101", "RESULT_RIL_SMS_SEND_FAIL_RETRY"},
        {"102", "RESULT_RIL_NETWORK_REJECT"},
        {"103", "RESULT_RIL_INVALID_STATE"},
        {"104", "RESULT_RIL_INVALID_ARGUMENTS"},
        {"105", "RESULT_RIL_NO_MEMORY"},
        {"106", "RESULT_RIL_REQUEST_RATE_LIMITED"},
        {"107", "RESULT_RIL_INVALID_SMS_FORMAT"},
        {"108", "RESULT_RIL_SYSTEM_ERR"},
        {"109", "RESULT_RIL_ENCODING_ERR"},
        {"110", "RESULT_RIL_INVALID_SMSC_ADDRESS"},
        {"111", "RESULT_RIL_MODEM_ERR"},
        {"112", "RESULT_RIL_NETWORK_ERR"},
        {"113", "RESULT_RIL_INTERNAL_ERR"},
        {"114", "RESULT_RIL_REQUEST_NOT_SUPPORTED"},
        {"115", "RESULT_RIL_INVALID_MODEM_STATE"},
        {"116", "RESULT_RIL_NETWORK_NOT_READY"},
        {"117", "RESULT_RIL_OPERATION_NOT_ALLOWED"},
        {"118", "RESULT_RIL_NO_RESOURCES"},
        {"119", "RESULT_RIL_CANCELLED"},
        {"120", "RESULT_RIL_SIM_ABSENT"},
        {"121", "RESULT_RIL_SIMULTANEOUS_SMS_AND_CALL_NOT_ALLOWED"},
        {"122", "RESULT_RIL_ACCESS_BARRED"},
        {"123", "RESULT_RIL_BLOCKED_DUE_TO_CALL"},
        {"124", "RESULT_RIL_GENERIC_ERROR"},
        {"125", "RESULT_RIL_INVALID_RESPONSE"},
        {"126", "RESULT_RIL_SIM_PIN2"},
        {"127", "RESULT_RIL_SIM_PUK2"},
        {"128", "RESULT_RIL_SUBSCRIPTION_NOT_AVAILABLE"},
        {"129", "RESULT_RIL_SIM_ERROR"},
        {"130", "RESULT_RIL_INVALID_SIM_STATE"},
        {"131", "RESULT_RIL_NO_SMS_TO_ACK"},
        {"132", "RESULT_RIL_SIM_BUSY"},
        {"133", "RESULT_RIL_SIM_FULL"},
        {"134", "RESULT_RIL_NO_SUBSCRIPTION"},
        {"135", "RESULT_RIL_NO_NETWORK_FOUND"},
        {"136", "RESULT_RIL_DEVICE_IN_USE"},
        {"137", "RESULT_RIL_ABORTED"},
    };

    @Test
    public void everySendResultCodeUpToApi34IsNamed() {
        java.util.List<String> wrong = new java.util.ArrayList<String>();
        for (String[] code : API_34_SEND_RESULTS) {
            String expected = code[1] + " (" + code[0] + ")";
            String named = SmsErrors.sendFailure(Integer.parseInt(code[0]));
            if (!expected.equals(named)) {
                wrong.add(named + " should be " + expected);
            }
        }
        assertEquals(wrong.size() + " codes misnamed: " + wrong, 0, wrong.size());
        assertEquals("RESULT_NO_DEFAULT_SMS_APP (32)", SmsErrors.sendFailure(32));
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

    @Test
    public void theSentReportNamesTheSimSlotItWentOutFromThroughARestart() throws IOException {
        results.dispatched("m", 2, 2);
        results.dispatched("n", 1);
        results.partSent("m", 0, SmsErrors.RESULT_OK);
        reopen();
        results.partSent("m", 1, SmsErrors.RESULT_OK);
        results.partSent("n", 0, SmsErrors.RESULT_OK);
        results.partDelivered("m", 0, 0x00);
        results.partDelivered("m", 1, 0x00);
        assertEquals(Arrays.asList("m sent sim=2", "n sent", "m delivered"), queued());
    }

    @Test
    public void noServiceRadioOffAndLimitsAreRetryableOtherFailuresAreNot() throws IOException {
        int[] retryable = {2, 4, 5, 9, 16, 17, 30, 100, 101, 106, 111, 112, 116, 121, 123, 135};
        int[] fin = {1, 3, 6, 7, 8, 10, 11, 14, 19, 20, 21, 32, 102, 120, 124, 134, 500};
        List<String> expected = new ArrayList<String>();
        for (int code : retryable) {
            results.dispatched("r" + code, 1);
            results.partSent("r" + code, 0, code);
            expected.add("r" + code + " failed " + SmsErrors.sendFailure(code) + " retryable");
        }
        for (int code : fin) {
            results.dispatched("f" + code, 1);
            results.partSent("f" + code, 0, code);
            expected.add("f" + code + " failed " + SmsErrors.sendFailure(code));
        }
        assertEquals(expected, queued());
        assertEquals(retryable.length + fin.length, counts.failedToday());
        assertEquals(true, results.isPutBack("r4"));
        assertEquals(false, results.isPutBack("f1"));
    }

    @Test
    public void aFailureAfterAPartLeftThePhoneIsNotRetryable() throws IOException {
        results.dispatched("m", 2);
        results.partSent("m", 0, SmsErrors.RESULT_OK);
        results.partSent("m", 1, 4); // RESULT_ERROR_NO_SERVICE: a retry would send part 1 twice
        results.dispatched("n", 1);
        results.notSent("n", new IllegalStateException("no SIM"));
        results.dispatched("d", 1);
        results.partSent("d", 0, SmsErrors.RESULT_OK);
        results.partDelivered("d", 0, 0x41);
        assertEquals(Arrays.asList("m failed RESULT_ERROR_NO_SERVICE (4)", "n failed NOT_SENT IllegalStateException: "
            + "no SIM", "d sent", "d failed DELIVERY_FAILED (TP-Status 0x41)"), queued());
        assertEquals(false, results.isPutBack("m"));
    }

    @Test
    public void aPutBackMessageIsSentAgainOnceThroughARestart() throws IOException {
        results.dispatched("m", 1);
        results.partSent("m", 0, 2); // RESULT_ERROR_RADIO_OFF
        reopen();
        assertEquals(true, results.isPutBack("m"));
        assertEquals(true, results.takePutBack("m"));
        reopen();
        assertEquals("taken once, on disk", false, results.takePutBack("m"));
        assertEquals(false, results.isPutBack("m"));
    }

    @Test
    public void putBackMessagesAreForgottenAfterThreeDaysAndWithThePairing() throws IOException {
        results.dispatched("old", 1);
        results.partSent("old", 0, 4);
        clock.advance(SendResults.FORGET_AFTER_MILLIS + 1);
        results.dispatched("new", 1);
        results.partSent("new", 0, 4);
        reopen();
        assertEquals(false, results.isPutBack("old"));
        assertEquals(true, results.isPutBack("new"));
        results.clear();
        reopen();
        assertEquals(false, results.isPutBack("new"));
    }
}
