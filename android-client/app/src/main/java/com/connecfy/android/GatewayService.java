package com.connecfy.android;

import android.app.ForegroundServiceStartNotAllowedException;
import android.app.Notification;
import android.app.NotificationManager;
import android.app.PendingIntent;
import android.app.Service;
import android.content.Context;
import android.content.Intent;
import android.content.pm.ServiceInfo;
import android.os.Build;
import android.os.Handler;
import android.os.HandlerThread;
import android.os.IBinder;
import android.os.Looper;
import android.os.PowerManager;
import android.text.format.DateUtils;
import android.util.Log;

import com.connecfy.core.DeviceCredentials;
import com.connecfy.core.DeviceEngine;
import com.connecfy.core.EngineStatus;
import com.connecfy.core.Envelope;
import com.connecfy.core.Gateway;

import java.io.IOException;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;

/**
 * The foreground service that keeps the phone working as a gateway: runs the core's
 * {@link DeviceEngine} on its own thread (heartbeat, claims, sends, reports), with the
 * polls the server holds on a second one, holds a
 * partial wake lock so it keeps going with the screen off, and shows its state in the
 * notification. Started by the user, and again after a reboot or an app update.
 */
public final class GatewayService extends Service {
    private static final int NOTIFICATION_ID = 1;
    private static final String TAG = "Connecfy";
    /** After an unexpected exception in a tick, the next one comes this much later. */
    private static final long AFTER_CRASH_MILLIS = 5000;
    private static volatile GatewayService running;

    private HandlerThread thread;
    private Handler handler;
    /** Where the engine's polls wait on the server, so its own thread stays free meanwhile. */
    private HandlerThread pollThread;
    private Handler pollHandler;
    private final Executor pollExecutor = new Executor() {
        @Override
        public void execute(Runnable poll) {
            if (!pollHandler.post(poll)) {
                throw new RejectedExecutionException("the poll thread has quit");
            }
        }
    };
    /** Set and ticked on the gateway thread only. */
    private volatile DeviceEngine engine;
    private PowerManager.WakeLock wakeLock;
    private CellWatch cells;
    private String shownText = "";
    /** Set in onDestroy: nothing is ticked or built on the gateway thread after it. */
    private volatile boolean destroyed;

    private final Runnable step = new Runnable() {
        @Override
        public void run() {
            DeviceEngine current = engine;
            if (current == null || destroyed) {
                return;
            }
            long wait;
            try {
                wait = current.tick();
            } catch (RuntimeException e) {
                // A bug must not crash the service into a restart loop: log it and go on.
                Log.e(TAG, "gateway tick failed", e);
                wait = AFTER_CRASH_MILLIS;
            }
            if (wait != Long.MAX_VALUE) {
                handler.postDelayed(this, Math.max(50, Math.min(wait, 60000)));
            } else if (!current.status().unpaired) {
                handler.post(ensureEngine); // stopped because the phone was paired again
            }
        }
    };

    /**
     * On the gateway thread: an engine for the stored pairing. A new one when there is
     * none, or the phone was paired again since (the old token's engine has stopped).
     */
    private final Runnable ensureEngine = new Runnable() {
        @Override
        public void run() {
            if (destroyed) {
                return;
            }
            ConnecfyApp app = ConnecfyApp.of(GatewayService.this);
            Gateway gateway = app.gateway();
            if (gateway.isCurrent(engine)) {
                return;
            }
            handler.removeCallbacks(step);
            if (!app.gatewayEnabled()) {
                engine = null; // stopped or unpaired by the user meanwhile
                stopOnMainThread();
                return;
            }
            DeviceCredentials credentials;
            try {
                credentials = gateway.pairing.load();
            } catch (IOException e) {
                credentials = null;
            }
            if (credentials == null) {
                engine = null;
                stopOnMainThread();
                return;
            }
            DeviceEngine.Config config = new DeviceEngine.Config();
            config.pollExecutor = pollExecutor;
            final ConnecfyApp settings = app;
            // Read at each encrypted message: a passphrase changed in the app counts at once.
            config.passphrase = new Envelope.Passphrase() {
                @Override
                public String get() {
                    return settings.e2ePassphrase();
                }
            };
            // Stops the engine of an earlier run of this service first (waiting for its tick and poll).
            engine = gateway.engine(credentials, app.userAgent(), new AndroidSmsSender(GatewayService.this, cells),
                new PhoneHeartbeat(GatewayService.this), config, new Listener());
            handler.post(step);
        }
    };

    static void start(Context context) {
        Intent intent = new Intent(context, GatewayService.class);
        try {
            if (Build.VERSION.SDK_INT >= 26) {
                context.startForegroundService(intent);
            } else {
                context.startService(intent);
            }
        } catch (IllegalStateException e) {
            if (!refusedInBackground(e)) {
                throw e;
            }
            Log.w(TAG, "Android refused to start the gateway from the background; retrying later", e);
            ConnecfyApp.of(context).scheduleRestart();
        }
    }

    /** Android 12+ refuses a foreground service started from the background (this exception). */
    private static boolean refusedInBackground(IllegalStateException e) {
        return Build.VERSION.SDK_INT >= 31 && e instanceof ForegroundServiceStartNotAllowedException;
    }

    static void stop(Context context) {
        context.stopService(new Intent(context, GatewayService.class));
    }

    static boolean isRunning() {
        return running != null;
    }

    /** Something is due sooner than the engine planned (a send result waits in the outbox). */
    static void wake() {
        GatewayService service = running;
        if (service != null && service.handler != null) {
            service.handler.removeCallbacks(service.step);
            service.handler.post(service.step);
        }
    }

    @Override
    public void onCreate() {
        super.onCreate();
        if (!goForeground(getString(R.string.notification_starting))) {
            return; // refused: retried by an alarm; onStartCommand stops this instance
        }
        ConnecfyApp.of(this).serviceStarted();
        PowerManager power = (PowerManager) getSystemService(POWER_SERVICE);
        wakeLock = power.newWakeLock(PowerManager.PARTIAL_WAKE_LOCK, "connecfy:gateway");
        wakeLock.setReferenceCounted(false);
        wakeLock.acquire();
        cells = new CellWatch(this);
        thread = new HandlerThread("connecfy-gateway");
        thread.start();
        handler = new Handler(thread.getLooper());
        pollThread = new HandlerThread("connecfy-poll");
        pollThread.start();
        pollHandler = new Handler(pollThread.getLooper());
        running = this;
    }

    /** Every start (the first, and each after pairing again) checks the engine is the pairing's. */
    @Override
    public int onStartCommand(Intent intent, int flags, int startId) {
        if (handler == null) {
            stopSelf(); // Android refused the foreground start (a START_STICKY restart, say)
            return START_NOT_STICKY;
        }
        handler.post(ensureEngine);
        return START_STICKY;
    }

    private void stopOnMainThread() {
        new Handler(Looper.getMainLooper()).post(new Runnable() {
            @Override
            public void run() {
                stopSelf();
            }
        });
    }

    @Override
    public void onDestroy() {
        running = null;
        destroyed = true;
        DeviceEngine current = engine;
        if (current != null) {
            // Without waiting on the main thread: a tick under way makes no further call
            // and sends nothing more, a poll the server holds is disconnected, and the next
            // service's engine waits for both to end.
            current.requestStop();
        }
        if (handler != null) {
            handler.removeCallbacks(step);
            handler.removeCallbacks(ensureEngine);
            thread.quitSafely();
            pollThread.quitSafely();
        }
        if (cells != null) {
            cells.stop();
        }
        if (wakeLock != null && wakeLock.isHeld()) {
            wakeLock.release();
        }
        ConnecfyApp.of(this).setStatus(EngineStatus.STOPPED);
        super.onDestroy();
    }

    @Override
    public IBinder onBind(Intent intent) {
        return null;
    }

    /**
     * False when Android refuses (Android 12+ restarting the sticky service from the
     * background): instead of crashing, a retry is scheduled.
     */
    private boolean goForeground(String text) {
        Notification n = notification(text);
        try {
            if (Build.VERSION.SDK_INT >= 34) {
                startForeground(NOTIFICATION_ID, n, ServiceInfo.FOREGROUND_SERVICE_TYPE_REMOTE_MESSAGING);
            } else {
                startForeground(NOTIFICATION_ID, n);
            }
            return true;
        } catch (IllegalStateException e) {
            if (!refusedInBackground(e)) {
                throw e;
            }
            Log.w(TAG, "Android refused to bring the gateway to the foreground; retrying later", e);
            ConnecfyApp.of(this).scheduleRestart();
            return false;
        }
    }

    private Notification notification(String text) {
        PendingIntent open = PendingIntent.getActivity(this, 0, new Intent(this, MainActivity.class),
            PendingIntent.FLAG_IMMUTABLE);
        return ConnecfyApp.of(this).builder(ConnecfyApp.CHANNEL_GATEWAY)
            .setSmallIcon(R.drawable.ic_notification)
            .setContentTitle(getString(R.string.notification_title))
            .setContentText(text)
            .setContentIntent(open)
            .setOngoing(true)
            .setShowWhen(false)
            .build();
    }

    private String describe(EngineStatus s) {
        Gateway gateway = ConnecfyApp.of(this).gateway();
        String state = getString(s.isOnline(System.currentTimeMillis()) ? R.string.online : R.string.offline);
        String poll = s.lastPollAt == 0 ? getString(R.string.never)
            : DateUtils.formatDateTime(this, s.lastPollAt, DateUtils.FORMAT_SHOW_TIME);
        return getString(R.string.notification_text, state, gateway.counts.sentToday(), s.waitingToSend + s.outbox,
            poll);
    }

    /** Called on the engine's thread. */
    private final class Listener implements DeviceEngine.Listener {
        @Override
        public void onStatus(EngineStatus status) {
            ConnecfyApp.of(GatewayService.this).setStatus(status);
            String text = describe(status);
            if (!text.equals(shownText)) {
                shownText = text;
                NotificationManager nm = (NotificationManager) getSystemService(NOTIFICATION_SERVICE);
                nm.notify(NOTIFICATION_ID, notification(text));
            }
        }

        /** A poll the server held was answered (on the poll thread): tick now. */
        @Override
        public void onPollAnswered() {
            if (!destroyed) {
                handler.removeCallbacks(step);
                handler.post(step);
            }
        }

        /** A report the server refused for good left the outbox (a received SMS it will not take, say). */
        @Override
        public void onDropped(String line) {
            Log.w(TAG, line);
        }

        /** The engine has forgotten its own pairing (the server refused its token twice). */
        @Override
        public void onUnpaired(String reason) {
            ConnecfyApp app = ConnecfyApp.of(GatewayService.this);
            app.setGatewayEnabled(false);
            app.notifyUnpaired(reason);
            stopOnMainThread();
        }
    }
}
