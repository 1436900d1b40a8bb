package com.connecfy.core;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;

/**
 * What the gateway needs from the phone before it can work, as the main screen lists it:
 * the runtime permissions to ask for (receiving SMS only while forwarding them is on), the battery optimisation exemption (without it
 * Android stops the polling with the screen off, and may refuse to restart the service
 * from the background), and a SIM choice on a dual-SIM phone set to "ask every time".
 */
public final class Setup {
    public static final String SEND_SMS = "android.permission.SEND_SMS";
    /** Forwards the SMS the phone receives ({@link Forwarding}). */
    public static final String RECEIVE_SMS = "android.permission.RECEIVE_SMS";
    /** Lists the SIMs (SubscriptionManager) so one can be chosen. */
    public static final String READ_PHONE_STATE = "android.permission.READ_PHONE_STATE";
    /** Android 13 (API 33) and newer. */
    public static final String POST_NOTIFICATIONS = "android.permission.POST_NOTIFICATIONS";

    /** The missing items, in the order the screen lists them. */
    public enum Item {
        SEND_SMS,
        RECEIVE_SMS,
        READ_PHONE_STATE,
        NOTIFICATIONS,
        BATTERY_EXEMPTION,
        SIM_CHOICE
    }

    private Setup() {
    }

    /**
     * The runtime permissions the gateway asks for on Android {@code sdk}; RECEIVE_SMS only
     * while received SMS are forwarded ({@code forwarding}).
     */
    public static List<String> neededPermissions(int sdk, boolean forwarding) {
        List<String> needed = new ArrayList<String>();
        needed.add(SEND_SMS);
        if (forwarding) {
            needed.add(RECEIVE_SMS);
        }
        needed.add(READ_PHONE_STATE);
        if (sdk >= 33) {
            needed.add(POST_NOTIFICATIONS);
        }
        return needed;
    }

    /**
     * What is still missing. {@code sims} is {@link SimChoice#decide}'s answer; a SIM choice
     * is missing only once the SIMs can be listed (else READ_PHONE_STATE is).
     */
    public static List<Item> missing(int sdk, boolean forwarding, Collection<String> granted,
            boolean batteryExempt, SimChoice.Decision sims) {
        List<Item> missing = new ArrayList<Item>();
        for (String permission : neededPermissions(sdk, forwarding)) {
            if (!granted.contains(permission)) {
                missing.add(permission.equals(SEND_SMS) ? Item.SEND_SMS
                    : permission.equals(RECEIVE_SMS) ? Item.RECEIVE_SMS
                    : permission.equals(READ_PHONE_STATE) ? Item.READ_PHONE_STATE : Item.NOTIFICATIONS);
            }
        }
        if (!batteryExempt) {
            missing.add(Item.BATTERY_EXEMPTION);
        }
        if (sims.outcome == SimChoice.Outcome.NEED_CHOICE) {
            missing.add(Item.SIM_CHOICE);
        }
        return missing;
    }
}
