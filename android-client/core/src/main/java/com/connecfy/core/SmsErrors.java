package com.connecfy.core;

/**
 * The words reported as a failed message's {@code error}: Android's result code for a
 * part that was not sent, or the TP-Status of a delivery report that says it never
 * arrived. Codes are plain numbers here so this works without Android classes.
 */
public final class SmsErrors {
    /** Activity.RESULT_OK: the part left the phone. */
    public static final int RESULT_OK = -1;

    private static final String[] SEND_RESULTS = {
        null,                       // 0
        "RESULT_ERROR_GENERIC_FAILURE",
        "RESULT_ERROR_RADIO_OFF",
        "RESULT_ERROR_NULL_PDU",
        "RESULT_ERROR_NO_SERVICE",
        "RESULT_ERROR_LIMIT_EXCEEDED",
        "RESULT_ERROR_FDN_CHECK_FAILURE",
        "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED",
        "RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED",
        "RESULT_RADIO_NOT_AVAILABLE",
        "RESULT_NETWORK_REJECT",     // 10
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
    };

    private SmsErrors() {
    }

    /** For a sent-broadcast result code other than RESULT_OK, e.g. {@code RESULT_ERROR_RADIO_OFF (2)}. */
    public static String sendFailure(int resultCode) {
        String name = resultCode >= 0 && resultCode < SEND_RESULTS.length ? SEND_RESULTS[resultCode] : null;
        return (name == null ? "RESULT_CODE" : name) + " (" + resultCode + ")";
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
