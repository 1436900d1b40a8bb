package com.connecfy.android;

import android.content.BroadcastReceiver;
import android.content.Context;
import android.content.Intent;

/** Starts the gateway again after a reboot or an app update, if it was on (and the phone is paired). */
public final class BootReceiver extends BroadcastReceiver {
    @Override
    public void onReceive(Context context, Intent intent) {
        String action = intent.getAction();
        if (!Intent.ACTION_BOOT_COMPLETED.equals(action) && !Intent.ACTION_MY_PACKAGE_REPLACED.equals(action)) {
            return;
        }
        // The pairing is checked by the service on its own thread (it stops when there is
        // none): this runs on the main thread, which reads no file.
        if (ConnecfyApp.of(context).gatewayEnabled()) {
            GatewayService.start(context);
        }
    }
}
