package com.connecfy.android;

import android.content.Context;
import android.content.Intent;
import android.content.IntentFilter;
import android.os.BatteryManager;
import android.os.Build;

import com.connecfy.core.Heartbeat;

/** Battery level, Android version and app version for each heartbeat. */
final class PhoneHeartbeat implements Heartbeat.Source {
    private final Context context;

    PhoneHeartbeat(Context context) {
        this.context = context.getApplicationContext();
    }

    @Override
    public Heartbeat current() {
        return new Heartbeat(battery(), Build.VERSION.RELEASE, BuildConfig.VERSION_NAME);
    }

    private Integer battery() {
        BatteryManager manager = (BatteryManager) context.getSystemService(Context.BATTERY_SERVICE);
        int percent = manager == null ? -1 : manager.getIntProperty(BatteryManager.BATTERY_PROPERTY_CAPACITY);
        if (percent >= 0 && percent <= 100) {
            return percent;
        }
        Intent sticky = context.registerReceiver(null, new IntentFilter(Intent.ACTION_BATTERY_CHANGED));
        if (sticky == null) {
            return null;
        }
        int level = sticky.getIntExtra(BatteryManager.EXTRA_LEVEL, -1);
        int scale = sticky.getIntExtra(BatteryManager.EXTRA_SCALE, -1);
        return level >= 0 && scale > 0 ? Math.round(100f * level / scale) : null;
    }
}
