package com.connecfy.android;

import android.Manifest;
import android.annotation.SuppressLint;
import android.content.Context;
import android.content.pm.PackageManager;
import android.os.Build;
import android.telephony.SubscriptionInfo;
import android.telephony.SubscriptionManager;
import android.telephony.TelephonyManager;

import com.connecfy.core.SimChoice;
import com.connecfy.core.SimSlot;

import java.util.Collections;
import java.util.List;

/** What the phone says about its SIMs, for the core's {@link SimChoice}. */
final class Sims {
    private Sims() {
    }

    /** Which SIM to send from with the user's choice {@code chosen} (-1: the phone's default). */
    static SimChoice.Decision decide(Context context, int chosen) {
        return SimChoice.decide(slots(context), ids(active(context)), SubscriptionManager.getDefaultSmsSubscriptionId(),
            chosen);
    }

    /**
     * Which SIM a message goes out from: the one in the slot it names ({@code simSlot},
     * 1-based), else the one {@link #decide} picks; see {@link SimChoice#forTask}.
     */
    static SimChoice.Decision forTask(final Context context, Integer simSlot, int chosen) {
        return SimChoice.forTask(simSlot, slots(context), ids(active(context)),
            SubscriptionManager.getDefaultSmsSubscriptionId(), chosen, new SimSlot.Lookup() {
                @Override
                public Integer slotOf(int subscriptionId) {
                    return Sims.slotOf(context, subscriptionId);
                }
            });
    }

    /**
     * The slot (0-based) of an active subscription, or null; the core discards anything
     * that is not a slot. From Android 10 without any permission, before it with READ_PHONE_STATE.
     */
    @SuppressLint("MissingPermission")
    @SuppressWarnings("deprecation")
    static Integer slotOf(Context context, int subscriptionId) {
        if (Build.VERSION.SDK_INT >= 29) {
            return SubscriptionManager.getSlotIndex(subscriptionId);
        }
        if (context.checkSelfPermission(Manifest.permission.READ_PHONE_STATE) != PackageManager.PERMISSION_GRANTED) {
            return null;
        }
        try {
            SubscriptionInfo sim = SubscriptionManager.from(context).getActiveSubscriptionInfo(subscriptionId);
            return sim == null ? null : sim.getSimSlotIndex();
        } catch (SecurityException e) {
            return null;
        }
    }

    private static int[] ids(List<SubscriptionInfo> active) {
        if (active == null) {
            return null;
        }
        int[] ids = new int[active.size()];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = active.get(i).getSubscriptionId();
        }
        return ids;
    }

    /** The active SIMs (empty: none), or null when they cannot be listed (no READ_PHONE_STATE). */
    @SuppressLint("MissingPermission")
    static List<SubscriptionInfo> active(Context context) {
        if (context.checkSelfPermission(Manifest.permission.READ_PHONE_STATE) != PackageManager.PERMISSION_GRANTED) {
            return null;
        }
        try {
            List<SubscriptionInfo> sims = SubscriptionManager.from(context).getActiveSubscriptionInfoList();
            return sims == null ? Collections.<SubscriptionInfo>emptyList() : sims;
        } catch (SecurityException e) {
            return null; // the permission was withdrawn meanwhile
        }
    }

    @SuppressWarnings("deprecation")
    private static int slots(Context context) {
        TelephonyManager telephony = (TelephonyManager) context.getSystemService(Context.TELEPHONY_SERVICE);
        if (telephony == null) {
            return 1;
        }
        return Build.VERSION.SDK_INT >= 30 ? telephony.getActiveModemCount() : telephony.getPhoneCount();
    }
}
