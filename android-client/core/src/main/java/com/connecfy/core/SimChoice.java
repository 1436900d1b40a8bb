package com.connecfy.core;

/**
 * Which SIM the gateway sends from. On a phone with several active SIMs and no default
 * SMS SIM (the phone's setting "ask every time"), sending without a SIM fails
 * ({@code RESULT_NO_DEFAULT_SMS_APP}) or pops a picker for every message, so the user
 * must choose one in the app first; until then nothing is claimed. Plain numbers here
 * (subscription ids as SubscriptionManager gives them), so this works without Android.
 */
public final class SimChoice {
    /** SubscriptionManager.INVALID_SUBSCRIPTION_ID: none chosen, or no default SMS SIM. */
    public static final int DEFAULT = -1;

    public enum Outcome {
        /** Send from {@link Decision#subscriptionId} ({@link #DEFAULT}: the phone's default). */
        USE,
        /** Several SIM slots and no default SMS SIM: the SIMs cannot be listed without READ_PHONE_STATE. */
        NEED_PERMISSION,
        /** Several active SIMs, no default SMS SIM, none (still present) chosen. */
        NEED_CHOICE,
        /** No active SIM. */
        NO_SIM
    }

    public static final class Decision {
        public final Outcome outcome;
        /** For {@link Outcome#USE}; {@link #DEFAULT} otherwise. */
        public final int subscriptionId;

        Decision(Outcome outcome, int subscriptionId) {
            this.outcome = outcome;
            this.subscriptionId = subscriptionId;
        }

        public boolean canSend() {
            return outcome == Outcome.USE;
        }
    }

    private SimChoice() {
    }

    /**
     * @param slots the phone's SIM slots (TelephonyManager.getPhoneCount, no permission needed)
     * @param active the active subscription ids, or null when they cannot be listed (no
     *        READ_PHONE_STATE)
     * @param defaultSms SubscriptionManager.getDefaultSmsSubscriptionId(): {@link #DEFAULT}
     *        when there is none ("ask every time")
     * @param chosen the user's choice in the app, or {@link #DEFAULT} for the phone's default
     */
    public static Decision decide(int slots, int[] active, int defaultSms, int chosen) {
        if (active == null) {
            if (chosen != DEFAULT) {
                return use(chosen); // chosen while the SIMs could be listed
            }
            if (defaultSms != DEFAULT) {
                return use(defaultSms);
            }
            return slots <= 1 ? use(DEFAULT) : new Decision(Outcome.NEED_PERMISSION, DEFAULT);
        }
        if (active.length == 0) {
            return new Decision(Outcome.NO_SIM, DEFAULT);
        }
        if (chosen != DEFAULT && contains(active, chosen)) {
            return use(chosen);
        }
        if (active.length == 1) {
            return use(active[0]);
        }
        if (chosen == DEFAULT && defaultSms != DEFAULT && contains(active, defaultSms)) {
            return use(defaultSms);
        }
        // "Ask every time", or the SIM the user chose was taken out: never guess which
        // number the messages go out from.
        return new Decision(Outcome.NEED_CHOICE, DEFAULT);
    }

    private static Decision use(int subscriptionId) {
        return new Decision(Outcome.USE, subscriptionId);
    }

    private static boolean contains(int[] ids, int id) {
        for (int each : ids) {
            if (each == id) {
                return true;
            }
        }
        return false;
    }
}
