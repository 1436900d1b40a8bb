package com.connecfy.core;

/**
 * The words reported as a failed message's {@code error}: Android's result code for a
 * part that was not sent, or the TP-Status of a delivery report that says it never
 * arrived. Codes are plain numbers here so this works without Android classes.
 */
public final class SmsErrors {
    /** Activity.RESULT_OK: the part left the phone. */
    public static final int RESULT_OK = -1;

    /** SmsManager's result codes 0-33 (API 34), by number. */
    private static final String[] SEND_RESULTS = {
        "RESULT_ERROR_NONE",            // 0
        "RESULT_ERROR_GENERIC_FAILURE",
        "RESULT_ERROR_RADIO_OFF",
        "RESULT_ERROR_NULL_PDU",
        "RESULT_ERROR_NO_SERVICE",
        "RESULT_ERROR_LIMIT_EXCEEDED",
        "RESULT_ERROR_FDN_CHECK_FAILURE",
        "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED",
        "RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED",
        "RESULT_RADIO_NOT_AVAILABLE",
        "RESULT_NETWORK_REJECT",        // 10
        "RESULT_INVALID_ARGUMENTS",
        "RESULT_INVALID_STATE",
        "RESULT_NO_MEMORY",
        "RESULT_INVALID_SMS_FORMAT",
        "RESULT_SYSTEM_ERROR",
        "RESULT_MODEM_ERROR",
        "RESULT_NETWORK_ERROR",
        "RESULT_ENCODING_ERROR",
        "RESULT_INVALID_SMSC_ADDRESS",
        "RESULT_OPERATION_NOT_ALLOWED", // 20
        "RESULT_INTERNAL_ERROR",
        "RESULT_NO_RESOURCES",
        "RESULT_CANCELLED",
        "RESULT_REQUEST_NOT_SUPPORTED",
        "RESULT_NO_BLUETOOTH_SERVICE",
        "RESULT_INVALID_BLUETOOTH_ADDRESS",
        "RESULT_BLUETOOTH_DISCONNECTED",
        "RESULT_UNEXPECTED_EVENT_STOP_SENDING",
        "RESULT_SMS_BLOCKED_DURING_EMERGENCY",
        "RESULT_SMS_SEND_RETRY_FAILED", // 30
        "RESULT_REMOTE_EXCEPTION",
        "RESULT_NO_DEFAULT_SMS_APP",
        "RESULT_USER_NOT_ALLOWED",
    };

    /** The radio interface layer's codes, 100-137 (API 34), by number from 100. */
    private static final int RIL_BASE = 100;
    private static final String[] RIL_RESULTS = {
        "RESULT_RIL_RADIO_NOT_AVAILABLE", // 100
        "RESULT_RIL_SMS_SEND_FAIL_RETRY",
        "RESULT_RIL_NETWORK_REJECT",
        "RESULT_RIL_INVALID_STATE",
        "RESULT_RIL_INVALID_ARGUMENTS",
        "RESULT_RIL_NO_MEMORY",
        "RESULT_RIL_REQUEST_RATE_LIMITED",
        "RESULT_RIL_INVALID_SMS_FORMAT",
        "RESULT_RIL_SYSTEM_ERR",
        "RESULT_RIL_ENCODING_ERR",
        "RESULT_RIL_INVALID_SMSC_ADDRESS", // 110
        "RESULT_RIL_MODEM_ERR",
        "RESULT_RIL_NETWORK_ERR",
        "RESULT_RIL_INTERNAL_ERR",
        "RESULT_RIL_REQUEST_NOT_SUPPORTED",
        "RESULT_RIL_INVALID_MODEM_STATE",
        "RESULT_RIL_NETWORK_NOT_READY",
        "RESULT_RIL_OPERATION_NOT_ALLOWED",
        "RESULT_RIL_NO_RESOURCES",
        "RESULT_RIL_CANCELLED",
        "RESULT_RIL_SIM_ABSENT",          // 120
        "RESULT_RIL_SIMULTANEOUS_SMS_AND_CALL_NOT_ALLOWED",
        "RESULT_RIL_ACCESS_BARRED",
        "RESULT_RIL_BLOCKED_DUE_TO_CALL",
        "RESULT_RIL_GENERIC_ERROR",
        "RESULT_RIL_INVALID_RESPONSE",
        "RESULT_RIL_SIM_PIN2",
        "RESULT_RIL_SIM_PUK2",
        "RESULT_RIL_SUBSCRIPTION_NOT_AVAILABLE",
        "RESULT_RIL_SIM_ERROR",
        "RESULT_RIL_INVALID_SIM_STATE",   // 130
        "RESULT_RIL_NO_SMS_TO_ACK",
        "RESULT_RIL_SIM_BUSY",
        "RESULT_RIL_SIM_FULL",
        "RESULT_RIL_NO_SUBSCRIPTION",
        "RESULT_RIL_NO_NETWORK_FOUND",
        "RESULT_RIL_DEVICE_IN_USE",
        "RESULT_RIL_ABORTED",
    };

    private SmsErrors() {
    }

    /** SmsManager's name for a sent result code (API 34), or null for a code it does not name. */
    public static String resultName(int resultCode) {
        if (resultCode >= 0 && resultCode < SEND_RESULTS.length) {
            return SEND_RESULTS[resultCode];
        }
        if (resultCode >= RIL_BASE && resultCode < RIL_BASE + RIL_RESULTS.length) {
            return RIL_RESULTS[resultCode - RIL_BASE];
        }
        return null;
    }

    /**
     * For a sent-broadcast result code other than RESULT_OK, e.g.
     * {@code RESULT_ERROR_RADIO_OFF (2)} or {@code RESULT_NO_DEFAULT_SMS_APP (32)};
     * {@code RESULT_CODE (n)} for a code newer than API 34.
     */
    public static String sendFailure(int resultCode) {
        String name = resultName(resultCode);
        return (name == null ? "RESULT_CODE" : name) + " (" + resultCode + ")";
    }

    /**
     * Whether a part failed for want of radio: no service or the radio off. Such a failure
     * is worth retrying once the radio is back (its reported error, e.g.
     * {@code RESULT_ERROR_NO_SERVICE (4)}, names it exactly); the engine also holds its
     * claims for a while. Null for any other code, RESULT_ERROR_GENERIC_FAILURE included.
     */
    public static CellService.Reason radioProblem(int resultCode) {
        switch (resultCode) {
            case 2:   // RESULT_ERROR_RADIO_OFF
            case 9:   // RESULT_RADIO_NOT_AVAILABLE
            case 100: // RESULT_RIL_RADIO_NOT_AVAILABLE
                return CellService.Reason.RADIO_OFF;
            case 4:   // RESULT_ERROR_NO_SERVICE
            case 135: // RESULT_RIL_NO_NETWORK_FOUND
                return CellService.Reason.NO_SERVICE;
            default:
                return null;
        }
    }

    /**
     * Whether a sent result says the message may go out later as it is: the radio off or
     * out of service, the phone's or the network's rate limit, a modem or network error,
     * the radio busy with a call, or the SMS stack's own retries used up. Reported with
     * {@code "retryable": true}, so the server puts the message back. Every other code
     * (a generic failure, a refused short code, a rejected or invalid message, a missing
     * or blocked SIM...) is final: sending the same message again would fail the same way.
     */
    public static boolean isRetryable(int resultCode) {
        switch (resultCode) {
            case 2:   // RESULT_ERROR_RADIO_OFF
            case 4:   // RESULT_ERROR_NO_SERVICE
            case 5:   // RESULT_ERROR_LIMIT_EXCEEDED
            case 9:   // RESULT_RADIO_NOT_AVAILABLE
            case 16:  // RESULT_MODEM_ERROR
            case 17:  // RESULT_NETWORK_ERROR
            case 30:  // RESULT_SMS_SEND_RETRY_FAILED
            case 100: // RESULT_RIL_RADIO_NOT_AVAILABLE
            case 101: // RESULT_RIL_SMS_SEND_FAIL_RETRY
            case 106: // RESULT_RIL_REQUEST_RATE_LIMITED
            case 111: // RESULT_RIL_MODEM_ERR
            case 112: // RESULT_RIL_NETWORK_ERR
            case 116: // RESULT_RIL_NETWORK_NOT_READY
            case 121: // RESULT_RIL_SIMULTANEOUS_SMS_AND_CALL_NOT_ALLOWED
            case 123: // RESULT_RIL_BLOCKED_DUE_TO_CALL
            case 135: // RESULT_RIL_NO_NETWORK_FOUND
                return true;
            default:
                return false;
        }
    }

    /** TP-Status (3GPP TS 23.040 9.2.3.15) 0x00-0x1F: the message reached the recipient. */
    public static boolean deliveredOk(int tpStatus) {
        return tpStatus >= 0 && tpStatus < 0x20;
    }

    /** 0x20-0x3F: the SMS centre is still trying; a final report follows. */
    public static boolean deliveryPending(int tpStatus) {
        return tpStatus >= 0x20 && tpStatus < 0x40;
    }

    public static String deliveryFailure(int tpStatus) {
        return "DELIVERY_FAILED (TP-Status 0x" + Integer.toHexString(tpStatus) + ")";
    }

    /** The sending call itself threw: no part left the phone. */
    public static String notSent(Throwable error) {
        String text = "NOT_SENT " + error.getClass().getSimpleName()
            + (error.getMessage() == null ? "" : ": " + error.getMessage());
        return text.length() <= 200 ? text : text.substring(0, 200);
    }
}
