package com.connecfy.android;

import android.content.BroadcastReceiver;
import android.content.Context;
import android.content.Intent;

/**
 * The alarm set when Android refused to start the gateway from the background: tries
 * again if the gateway is still wanted (a refusal schedules the next try).
 */
public final class RestartReceiver extends BroadcastReceiver {
    @Override
    public void onReceive(Context context, Intent intent) {
        if (ConnecfyApp.of(context).gatewayEnabled() && !GatewayService.isRunning()) {
            GatewayService.start(context);
        }
    }
}
