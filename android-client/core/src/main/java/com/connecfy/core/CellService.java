package com.connecfy.core;

/**
 * Whether the phone's radio can send SMS now. A phone on Wi-Fi keeps heartbeating and
 * claiming while it has no cell service, and every message it hands to SmsManager then
 * fails; so the app tells the engine why it cannot send (from Android's ServiceState),
 * and the engine claims and sends nothing until it can. Plain numbers here
 * (ServiceState.STATE_*), so this works without Android.
 */
public final class CellService {
    public static final int STATE_UNKNOWN = -1;
    public static final int STATE_IN_SERVICE = 0;
    public static final int STATE_OUT_OF_SERVICE = 1;
    public static final int STATE_EMERGENCY_ONLY = 2;
    public static final int STATE_POWER_OFF = 3;

    /**
     * Why the radio cannot send. {@code code} is the reason as a failure's reason code:
     * a failure for one of these is worth retrying once the radio is back.
     */
    public enum Reason {
        /** No network to send through (out of coverage, or emergency calls only). */
        NO_SERVICE("no_service"),
        /** The radio is off (airplane mode) or not available. */
        RADIO_OFF("radio_off");

        public final String code;

        Reason(String code) {
            this.code = code;
        }
    }

    private CellService() {
    }

    /**
     * For ServiceState.getState(): null while the radio can send, or its state is not
     * known yet (no reason to hold messages back on a guess).
     */
    public static Reason whyCannotSend(int serviceState) {
        switch (serviceState) {
            case STATE_OUT_OF_SERVICE:
            case STATE_EMERGENCY_ONLY:
                return Reason.NO_SERVICE;
            case STATE_POWER_OFF:
                return Reason.RADIO_OFF;
            default:
                return null;
        }
    }
}
