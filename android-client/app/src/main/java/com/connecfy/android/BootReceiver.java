package com.connecfy.android;

import android.content.BroadcastReceiver;
import android.content.Context;
import android.content.Intent;

import java.io.IOException;

/** Starts the gateway again after a reboot or an app update, if it was on and the phone is paired. */
public final class BootReceiver extends BroadcastReceiver {
    @Override
    public void onReceive(Context context, Intent intent) {
        String action = intent.getAction();
        if (!Intent.ACTION_BOOT_COMPLETED.equals(action) && !Intent.ACTION_MY_PACKAGE_REPLACED.equals(action)) {
            return;
        }
        ConnecfyApp app = ConnecfyApp.of(context);
        try {
            if (app.gatewayEnabled() && app.gateway().pairing.load() != null) {
                GatewayService.start(context);
            }
        } catch (IOException e) {
            // Unreadable pairing: the main screen shows it as unpaired.
        }
    }
}
