package com.connecfy.core;

import java.util.Map;

/**
 * Which SIM slot (0-based) received an SMS, from the extras of Android's SMS_RECEIVED
 * broadcast; best effort, as makers differ. A slot the broadcast names goes first, then
 * its subscription id turned into a slot ({@link Lookup}), then the phone id (the slot on
 * AOSP). Null when none of them says.
 */
public final class SimSlot {
    /** SubscriptionManager.EXTRA_SLOT_INDEX (Android 11+) and AOSP's older key. */
    public static final String[] SLOT_KEYS = {"android.telephony.extra.SLOT_INDEX", "slot"};
    /** SubscriptionManager.EXTRA_SUBSCRIPTION_INDEX and AOSP's older key (an int, a long on Android 5.0). */
    public static final String[] SUBSCRIPTION_KEYS = {"android.telephony.extra.SUBSCRIPTION_INDEX", "subscription"};
    /** AOSP's phone id, which is the slot index. */
    public static final String PHONE_KEY = "phone";
    /** More than any phone has: a larger value is not a slot. */
    static final int MAX_SLOTS = 16;

    /** The slot of a subscription, as the phone's SubscriptionManager says; null when unknown. */
    public interface Lookup {
        Integer slotOf(int subscriptionId);
    }

    private SimSlot() {
    }

    /** Every extra key {@link #fromExtras} reads, for the app to copy out of the broadcast. */
    public static String[] keys() {
        String[] all = new String[SLOT_KEYS.length + SUBSCRIPTION_KEYS.length + 1];
        System.arraycopy(SLOT_KEYS, 0, all, 0, SLOT_KEYS.length);
        System.arraycopy(SUBSCRIPTION_KEYS, 0, all, SLOT_KEYS.length, SUBSCRIPTION_KEYS.length);
        all[all.length - 1] = PHONE_KEY;
        return all;
    }

    /** @param extras the broadcast's extras of {@link #keys} (numbers, or digits as text) */
    public static Integer fromExtras(Map<String, ?> extras, Lookup lookup) {
        for (String key : SLOT_KEYS) {
            Integer slot = slot(number(extras.get(key)));
            if (slot != null) {
                return slot;
            }
        }
        if (lookup != null) {
            for (String key : SUBSCRIPTION_KEYS) {
                Long subscription = number(extras.get(key));
                if (subscription != null && subscription >= 0 && subscription < Integer.MAX_VALUE) {
                    Integer looked = lookup.slotOf(subscription.intValue());
                    Integer slot = looked == null ? null : slot(looked.longValue());
                    if (slot != null) {
                        return slot;
                    }
                }
            }
        }
        return slot(number(extras.get(PHONE_KEY)));
    }

    private static Integer slot(Long value) {
        return value != null && value >= 0 && value < MAX_SLOTS ? Integer.valueOf(value.intValue()) : null;
    }

    private static Long number(Object value) {
        if (value instanceof Number) {
            return ((Number) value).longValue();
        }
        if (value instanceof String) {
            try {
                return Long.valueOf(((String) value).trim());
            } catch (NumberFormatException e) {
                return null;
            }
        }
        return null;
    }
}
