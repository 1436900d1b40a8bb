package com.connecfy.android;

import android.annotation.TargetApi;
import android.content.Context;
import android.os.Build;
import android.telephony.PhoneStateListener;
import android.telephony.ServiceState;
import android.telephony.TelephonyCallback;
import android.telephony.TelephonyManager;

import com.connecfy.core.CellService;

/**
 * The cell service state of the SIM the gateway sends from, kept by Android's service
 * state callbacks (no permission needed for the state itself). The core's
 * {@link CellService} says what it means; until the first callback the state is unknown
 * and nothing is held back.
 */
final class CellWatch {
    private final Context context;
    private volatile int state = CellService.STATE_UNKNOWN;
    private int watching = Integer.MIN_VALUE;
    private TelephonyManager watched;
    private Object callback;

    CellWatch(Context context) {
        this.context = context.getApplicationContext();
    }

    /** Why the radio cannot send now, or null. */
    CellService.Reason whyCannotSend() {
        return CellService.whyCannotSend(state);
    }

    /**
     * Watches the subscription (-1: the phone's default), from now on. Call it on a thread
     * with a Looper (the gateway's): before Android 12 the callbacks come on it.
     */
    @SuppressWarnings("deprecation")
    synchronized void watch(int subscription) {
        if (subscription == watching) {
            return;
        }
        stop();
        TelephonyManager telephony = (TelephonyManager) context.getSystemService(Context.TELEPHONY_SERVICE);
        if (telephony == null) {
            return;
        }
        watched = subscription >= 0 ? telephony.createForSubscriptionId(subscription) : telephony;
        watching = subscription;
        try {
            if (Build.VERSION.SDK_INT >= 31) {
                ServiceStateCallback listener = new ServiceStateCallback();
                watched.registerTelephonyCallback(context.getMainExecutor(), listener);
                callback = listener;
            } else {
                PhoneStateListener listener = new PhoneStateListener() {
                    @Override
                    public void onServiceStateChanged(ServiceState serviceState) {
                        state = serviceState.getState();
                    }
                };
                watched.listen(listener, PhoneStateListener.LISTEN_SERVICE_STATE);
                callback = listener;
            }
        } catch (SecurityException e) {
            callback = null; // not allowed on this phone: the state stays unknown, nothing is held
        }
    }

    /** Stops watching (the service is going). */
    @SuppressWarnings("deprecation")
    synchronized void stop() {
        if (watched != null && callback != null) {
            if (Build.VERSION.SDK_INT >= 31) {
                watched.unregisterTelephonyCallback((TelephonyCallback) callback);
            } else {
                watched.listen((PhoneStateListener) callback, PhoneStateListener.LISTEN_NONE);
            }
        }
        watched = null;
        callback = null;
        watching = Integer.MIN_VALUE;
        state = CellService.STATE_UNKNOWN;
    }

    @TargetApi(31)
    private final class ServiceStateCallback extends TelephonyCallback
            implements TelephonyCallback.ServiceStateListener {
        @Override
        public void onServiceStateChanged(ServiceState serviceState) {
            state = serviceState.getState();
        }
    }
}
