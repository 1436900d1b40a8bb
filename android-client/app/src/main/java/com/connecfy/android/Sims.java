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

import java.util.Collections;
import java.util.List;

/** What the phone says about its SIMs, for the core's {@link SimChoice}. */
final class Sims {
    private Sims() {
    }

    /** Which SIM to send from with the user's choice {@code chosen} (-1: the phone's default). */
    static SimChoice.Decision decide(Context context, int chosen) {
        List<SubscriptionInfo> active = active(context);
        int[] ids = null;
        if (active != null) {
            ids = new int[active.size()];
            for (int i = 0; i < ids.length; i++) {
                ids[i] = active.get(i).getSubscriptionId();
            }
        }
        return SimChoice.decide(slots(context), ids, SubscriptionManager.getDefaultSmsSubscriptionId(), chosen);
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
