package com.connecfy.core;

/**
 * Which SIM the gateway sends from. On a phone with several active SIMs and no default
 * SMS SIM (the phone's setting "ask every time"), sending without a SIM fails
 * ({@code RESULT_NO_DEFAULT_SMS_APP}) or pops a picker for every message, so the user
 * must choose one in the app first; until then nothing is claimed. Plain numbers here
 * (subscription ids as SubscriptionManager gives them), so this works without Android.
 *
 * <p>A message may name the SIM slot to send from ({@link Task#simSlot}, 1-based): it goes
 * out from the active SIM in that slot or not at all ({@link #forTask}). A phone without
 * such a SIM fails it with {@link #SLOT_UNAVAILABLE}, not retryable: the sender asked for
 * that SIM, and another one would send from another number.
 */
public final class SimChoice {
    /** SubscriptionManager.INVALID_SUBSCRIPTION_ID: none chosen, or no default SMS SIM. */
    public static final int DEFAULT = -1;
    /** The error of a message that names a SIM slot the phone has no usable SIM in. */
    public static final String SLOT_UNAVAILABLE = "sim_slot_unavailable";

    public enum Outcome {
        /** Send from {@link Decision#subscriptionId} ({@link #DEFAULT}: the phone's default). */
        USE,
        /** Several SIM slots and no default SMS SIM: the SIMs cannot be listed without READ_PHONE_STATE. */
        NEED_PERMISSION,
        /** Several active SIMs, no default SMS SIM, none (still present) chosen. */
        NEED_CHOICE,
        /** No active SIM. */
        NO_SIM,
        /** The message names a SIM slot with no active SIM, or one the phone cannot place. */
        SLOT_UNAVAILABLE
    }

    public static final class Decision {
        public final Outcome outcome;
        /** For {@link Outcome#USE}; {@link #DEFAULT} otherwise. */
        public final int subscriptionId;
        /** For {@link Outcome#USE} from {@link #forTask}: the slot it sends from (1-based), null when unknown. */
        public final Integer simSlot;
        /** For {@link Outcome#SLOT_UNAVAILABLE}: the error to report, e.g. {@code sim_slot_unavailable (SIM 2: ...)}. */
        public final String error;

        Decision(Outcome outcome, int subscriptionId) {
            this(outcome, subscriptionId, null, null);
        }

        Decision(Outcome outcome, int subscriptionId, Integer simSlot, String error) {
            this.outcome = outcome;
            this.subscriptionId = subscriptionId;
            this.simSlot = simSlot;
            this.error = error;
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

    /**
     * The SIM to send a message from. Without {@code simSlot}, the SIM of {@link #decide},
     * with its slot when {@code slotOf} knows it. With one, the active SIM in that slot; when
     * the SIMs cannot be listed (no READ_PHONE_STATE), only the SIM {@link #decide} picks can
     * be placed, so the message goes out if that one sits in the slot. Otherwise
     * {@link Outcome#SLOT_UNAVAILABLE}: never another SIM than the one asked for.
     *
     * @param simSlot the slot the message names (1-based), or null
     * @param slotOf the slot (0-based) of a subscription, as the phone says; null when unknown
     * @see #decide for the other parameters
     */
    public static Decision forTask(Integer simSlot, int slots, int[] active, int defaultSms, int chosen,
            SimSlot.Lookup slotOf) {
        Decision general = decide(slots, active, defaultSms, chosen);
        if (simSlot == null) {
            return general.canSend() ? use(general.subscriptionId, slotNumber(general.subscriptionId, slots, slotOf))
                : general;
        }
        int wanted = simSlot.intValue();
        if (wanted < 1 || wanted > slots) {
            return unavailable(wanted, slots == 1 ? "the phone has one SIM slot"
                : "the phone has " + slots + " SIM slots");
        }
        if (active != null) {
            for (int id : active) {
                Integer slot = slotNumber(id, slots, slotOf);
                if (slot != null && slot.intValue() == wanted) {
                    return use(id, slot);
                }
            }
            return unavailable(wanted, "no active SIM in that slot");
        }
        if (general.canSend()) {
            Integer slot = slotNumber(general.subscriptionId, slots, slotOf);
            if (slot != null && slot.intValue() == wanted) {
                return use(general.subscriptionId, slot);
            }
        }
        return unavailable(wanted, "the SIMs cannot be listed without the phone permission");
    }

    /** The 1-based slot of a subscription ({@link #DEFAULT}: the only slot of a one-slot phone), or null. */
    private static Integer slotNumber(int subscriptionId, int slots, SimSlot.Lookup slotOf) {
        if (subscriptionId == DEFAULT) {
            return slots == 1 ? Integer.valueOf(1) : null;
        }
        Integer index = slotOf == null ? null : slotOf.slotOf(subscriptionId);
        return index != null && index.intValue() >= 0 && index.intValue() < slots ? Integer.valueOf(index + 1) : null;
    }

    private static Decision unavailable(int simSlot, String why) {
        return new Decision(Outcome.SLOT_UNAVAILABLE, DEFAULT, null,
            SLOT_UNAVAILABLE + " (SIM " + simSlot + ": " + why + ")");
    }

    private static Decision use(int subscriptionId, Integer simSlot) {
        return new Decision(Outcome.USE, subscriptionId, simSlot, null);
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
