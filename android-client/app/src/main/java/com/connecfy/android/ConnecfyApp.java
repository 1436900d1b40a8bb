package com.connecfy.android;

import android.app.AlarmManager;
import android.app.Application;
import android.app.Notification;
import android.app.NotificationChannel;
import android.app.NotificationManager;
import android.app.PendingIntent;
import android.content.ActivityNotFoundException;
import android.content.Context;
import android.content.Intent;
import android.content.SharedPreferences;
import android.net.Uri;
import android.os.Build;
import android.os.PowerManager;
import android.os.SystemClock;
import android.provider.Settings;

import com.connecfy.core.Clock;
import com.connecfy.core.EngineStatus;
import com.connecfy.core.FileStorage;
import com.connecfy.core.Gateway;
import com.connecfy.core.ServiceRestart;

import java.io.File;
import java.io.IOException;
import java.security.SecureRandom;
import java.util.TimeZone;
import java.util.concurrent.CountDownLatch;

/** One {@link Gateway} per process, over the app's private files; the notification channels. */
public final class ConnecfyApp extends Application {
    static final String CHANNEL_GATEWAY = "gateway";
    static final String CHANNEL_ALERTS = "alerts";
    static final int NOTIFICATION_UNPAIRED = 2;

    private static final String PREFS = "connecfy";
    private static final String PREF_ENABLED = "gateway_enabled";
    private static final String PREF_SIM = "sim_subscription_id";
    private static final String PREF_PASSPHRASE = "e2e_passphrase";
    private static final String PREF_RESTART_ATTEMPTS = "restart_attempts";

    /**
     * Wall time for what is stored and shown; {@code elapsedRealtime} (monotonic, counts
     * deep sleep) for every schedule, so setting the phone's time moves none of them.
     */
    static final Clock CLOCK = new Clock() {
        @Override
        public long now() {
            return System.currentTimeMillis();
        }

        @Override
        public long elapsedMillis() {
            return SystemClock.elapsedRealtime();
        }
    };

    /** Opened off the main thread (it reads every document); see {@link #gateway}. */
    private final CountDownLatch opened = new CountDownLatch(1);
    private volatile Gateway gateway;
    private volatile RuntimeException openFailure;
    private volatile EngineStatus status = EngineStatus.STOPPED;

    static ConnecfyApp of(Context context) {
        return (ConnecfyApp) context.getApplicationContext();
    }

    @Override
    public void onCreate() {
        super.onCreate();
        new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    gateway = new Gateway(new FileStorage(new File(getFilesDir(), "connecfy")), CLOCK,
                        TimeZone.getDefault(), new SecureRandom());
                } catch (IOException | RuntimeException e) {
                    openFailure = new IllegalStateException("cannot open the app's storage", e);
                } finally {
                    opened.countDown();
                }
            }
        }, "connecfy-open").start();
        if (Build.VERSION.SDK_INT >= 26) {
            NotificationManager nm = getSystemService(NotificationManager.class);
            nm.createNotificationChannel(new NotificationChannel(CHANNEL_GATEWAY,
                getString(R.string.channel_gateway), NotificationManager.IMPORTANCE_LOW));
            nm.createNotificationChannel(new NotificationChannel(CHANNEL_ALERTS,
                getString(R.string.channel_alerts), NotificationManager.IMPORTANCE_HIGH));
        }
    }

    /**
     * The gateway, waiting for it to be opened: for background threads (the service's,
     * receivers' workers), never the main thread, which uses {@link #gatewayIfOpen}.
     */
    Gateway gateway() {
        boolean interrupted = false;
        while (true) {
            try {
                opened.await();
                break;
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        if (openFailure != null) {
            throw openFailure;
        }
        return gateway;
    }

    /** The gateway once opened, else null; for the main thread (the screen), never waits. */
    Gateway gatewayIfOpen() {
        if (openFailure != null) {
            throw openFailure;
        }
        return gateway;
    }

    String userAgent() {
        return "Connecfy-Android/" + BuildConfig.VERSION_NAME + " (Android " + Build.VERSION.RELEASE + ")";
    }

    EngineStatus status() {
        return status;
    }

    void setStatus(EngineStatus status) {
        this.status = status;
    }

    private SharedPreferences prefs() {
        return getSharedPreferences(PREFS, MODE_PRIVATE);
    }

    /** Whether the user wants the gateway running (kept across reboots). */
    boolean gatewayEnabled() {
        return prefs().getBoolean(PREF_ENABLED, false);
    }

    void setGatewayEnabled(boolean enabled) {
        prefs().edit().putBoolean(PREF_ENABLED, enabled).apply();
    }

    /** The SIM to send from (a subscription id), or -1 for the phone's default SMS SIM. */
    int simSubscriptionId() {
        return prefs().getInt(PREF_SIM, -1);
    }

    void setSimSubscriptionId(int id) {
        prefs().edit().putInt(PREF_SIM, id).apply();
    }

    /**
     * The passphrase that opens end-to-end encrypted messages ("" when none is set), kept
     * in the app's private preferences, which no backup or transfer takes (no_backup.xml).
     */
    String e2ePassphrase() {
        return prefs().getString(PREF_PASSPHRASE, "");
    }

    void setE2ePassphrase(String passphrase) {
        prefs().edit().putString(PREF_PASSPHRASE, passphrase).apply();
    }

    /** Whether Android exempts the app from battery optimisation (part of the set-up). */
    boolean batteryExempt() {
        PowerManager power = (PowerManager) getSystemService(POWER_SERVICE);
        return power != null && power.isIgnoringBatteryOptimizations(getPackageName());
    }

    /** Asks the user for the battery optimisation exemption; false when the phone offers no such screen. */
    boolean requestBatteryExemption(Context from) {
        try {
            from.startActivity(new Intent(Settings.ACTION_REQUEST_IGNORE_BATTERY_OPTIMIZATIONS,
                Uri.parse("package:" + getPackageName())));
            return true;
        } catch (ActivityNotFoundException e) {
            return false;
        }
    }

    /**
     * Android refused to start the gateway's foreground service (Android 12+, from the
     * background): try again with an alarm, after the core's {@link ServiceRestart} delay.
     * An exact alarm when allowed (its receiver may start a foreground service); otherwise
     * an inexact one, which works when the app is exempt from battery optimisation.
     */
    void scheduleRestart() {
        int attempt = prefs().getInt(PREF_RESTART_ATTEMPTS, 0) + 1;
        prefs().edit().putInt(PREF_RESTART_ATTEMPTS, attempt).apply();
        long at = SystemClock.elapsedRealtime() + ServiceRestart.delayMillis(attempt, new SecureRandom());
        PendingIntent restart = PendingIntent.getBroadcast(this, 0, new Intent(this, RestartReceiver.class),
            PendingIntent.FLAG_IMMUTABLE | PendingIntent.FLAG_UPDATE_CURRENT);
        AlarmManager alarms = getSystemService(AlarmManager.class);
        if (Build.VERSION.SDK_INT < 31 || alarms.canScheduleExactAlarms()) {
            alarms.setExactAndAllowWhileIdle(AlarmManager.ELAPSED_REALTIME_WAKEUP, at, restart);
        } else {
            alarms.setAndAllowWhileIdle(AlarmManager.ELAPSED_REALTIME_WAKEUP, at, restart);
        }
    }

    /** The service is in the foreground: the retries start from the first step again. */
    void serviceStarted() {
        if (prefs().contains(PREF_RESTART_ATTEMPTS)) {
            prefs().edit().remove(PREF_RESTART_ATTEMPTS).apply();
        }
    }

    /** The server no longer knows this phone: say so, and offer to pair again. */
    void notifyUnpaired(String reason) {
        PendingIntent open = PendingIntent.getActivity(this, 0, new Intent(this, MainActivity.class),
            PendingIntent.FLAG_IMMUTABLE);
        Notification n = builder(CHANNEL_ALERTS)
            .setSmallIcon(R.drawable.ic_notification)
            .setContentTitle(getString(R.string.unpaired_title))
            .setContentText(getString(R.string.unpaired_text))
            .setStyle(new Notification.BigTextStyle().bigText(getString(R.string.unpaired_text)
                + (reason == null ? "" : "\n" + reason)))
            .setContentIntent(open)
            .setAutoCancel(true)
            .build();
        getSystemService(NotificationManager.class).notify(NOTIFICATION_UNPAIRED, n);
    }

    @SuppressWarnings("deprecation")
    Notification.Builder builder(String channel) {
        return Build.VERSION.SDK_INT >= 26 ? new Notification.Builder(this, channel) : new Notification.Builder(this);
    }
}
