package com.connecfy.android;

import android.Manifest;
import android.app.Activity;
import android.app.AlertDialog;
import android.content.DialogInterface;
import android.content.Intent;
import android.content.pm.PackageManager;
import android.os.Build;
import android.os.Bundle;
import android.os.Handler;
import android.os.Looper;
import android.telephony.SubscriptionInfo;
import android.text.format.DateUtils;
import android.view.View;
import android.widget.AdapterView;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.CompoundButton;
import android.widget.EditText;
import android.widget.Spinner;
import android.widget.Switch;
import android.widget.TextView;
import android.widget.Toast;

import com.connecfy.core.DeviceCredentials;
import com.connecfy.core.EngineStatus;
import com.connecfy.core.Gateway;
import com.connecfy.core.Setup;
import com.connecfy.core.SimChoice;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The main screen: paired or not, server, online state, last poll, queue, sent today,
 * failures, the switch for forwarding received SMS, and each missing permission with the
 * button that fixes it.
 */
public final class MainActivity extends Activity {
    private static final int REQUEST_SMS = 1;
    private static final int REQUEST_NOTIFICATIONS = 2;
    private static final int REQUEST_PHONE_STATE = 3;
    private static final int REQUEST_RECEIVE_SMS = 4;
    /** Writes the forwarding switch off the main thread, one change after another. */
    private static final ExecutorService SETTINGS = Executors.newSingleThreadExecutor();

    private final Handler handler = new Handler(Looper.getMainLooper());
    private final Runnable refresher = new Runnable() {
        @Override
        public void run() {
            refresh();
            handler.postDelayed(this, 1000);
        }
    };
    private final List<Integer> simIds = new ArrayList<Integer>();
    /** Which SIM the gateway sends from, as of the last {@link #loadSims}. */
    private SimChoice.Decision sims;
    /** The forwarding switch's value while it is being written (null: none); shown meanwhile. */
    private Boolean forwardingWrite;
    /** Set while {@link #refresh} moves the switch, so its listener does not take that for the user. */
    private boolean showingForwarding;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_main);
        click(R.id.pair_button, new Runnable() {
            @Override
            public void run() {
                startActivity(new Intent(MainActivity.this, PairActivity.class));
            }
        });
        click(R.id.unpair_button, new Runnable() {
            @Override
            public void run() {
                confirmUnpair();
            }
        });
        click(R.id.toggle_button, new Runnable() {
            @Override
            public void run() {
                ConnecfyApp app = ConnecfyApp.of(MainActivity.this);
                boolean on = !GatewayService.isRunning();
                app.setGatewayEnabled(on);
                if (on) {
                    GatewayService.start(MainActivity.this);
                } else {
                    GatewayService.stop(MainActivity.this);
                }
                refresh();
            }
        });
        click(R.id.grant_sms, new Runnable() {
            @Override
            public void run() {
                requestPermissions(new String[] {Manifest.permission.SEND_SMS}, REQUEST_SMS);
            }
        });
        click(R.id.grant_receive_sms, new Runnable() {
            @Override
            public void run() {
                requestPermissions(new String[] {Manifest.permission.RECEIVE_SMS}, REQUEST_RECEIVE_SMS);
            }
        });
        ((Switch) findViewById(R.id.forward_switch)).setOnCheckedChangeListener(
            new CompoundButton.OnCheckedChangeListener() {
                @Override
                public void onCheckedChanged(CompoundButton button, boolean on) {
                    if (!showingForwarding) {
                        setForwarding(on);
                    }
                }
            });
        click(R.id.grant_notifications, new Runnable() {
            @Override
            public void run() {
                if (Build.VERSION.SDK_INT >= 33) {
                    requestPermissions(new String[] {Manifest.permission.POST_NOTIFICATIONS}, REQUEST_NOTIFICATIONS);
                }
            }
        });
        click(R.id.grant_battery, new Runnable() {
            @Override
            public void run() {
                ConnecfyApp.of(MainActivity.this).requestBatteryExemption(MainActivity.this);
            }
        });
        click(R.id.grant_phone_state, new Runnable() {
            @Override
            public void run() {
                requestPermissions(new String[] {Manifest.permission.READ_PHONE_STATE}, REQUEST_PHONE_STATE);
            }
        });
        final EditText passphrase = findViewById(R.id.passphrase);
        passphrase.setText(ConnecfyApp.of(this).e2ePassphrase());
        click(R.id.save_passphrase, new Runnable() {
            @Override
            public void run() {
                String value = passphrase.getText().toString();
                ConnecfyApp.of(MainActivity.this).setE2ePassphrase(value);
                Toast.makeText(MainActivity.this, value.isEmpty() ? R.string.passphrase_cleared
                    : R.string.passphrase_saved, Toast.LENGTH_SHORT).show();
            }
        });
        click(R.id.choose_sim, new Runnable() {
            @Override
            public void run() {
                findViewById(R.id.sim).performClick(); // opens the list of SIMs
            }
        });
    }

    @Override
    protected void onResume() {
        super.onResume();
        loadSims();
        handler.post(refresher);
    }

    @Override
    protected void onPause() {
        handler.removeCallbacks(refresher);
        super.onPause();
    }

    @Override
    public void onRequestPermissionsResult(int requestCode, String[] permissions, int[] results) {
        if (requestCode == REQUEST_PHONE_STATE) {
            loadSims();
        }
        refresh();
    }

    private void click(int id, final Runnable action) {
        findViewById(id).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                action.run();
            }
        });
    }

    private boolean granted(String permission) {
        return checkSelfPermission(permission) == PackageManager.PERMISSION_GRANTED;
    }

    private void show(int id, boolean visible) {
        findViewById(id).setVisibility(visible ? View.VISIBLE : View.GONE);
    }

    private void text(int id, CharSequence value) {
        ((TextView) findViewById(id)).setText(value);
    }

    private String time(long millis) {
        if (millis == 0) {
            return getString(R.string.never);
        }
        return DateUtils.getRelativeTimeSpanString(millis, System.currentTimeMillis(), DateUtils.SECOND_IN_MILLIS)
            .toString();
    }

    /**
     * Runs every second on the main thread: everything it shows is in memory (the core
     * keeps the pairing, the queue and the counts there), so it reads no file and never
     * waits for a write in progress.
     */
    private void refresh() {
        ConnecfyApp app = ConnecfyApp.of(this);
        Gateway gateway = app.gatewayIfOpen();
        if (gateway == null) {
            return; // still opening the app's files; the next refresh shows it
        }
        DeviceCredentials credentials;
        try {
            credentials = gateway.pairing.load();
        } catch (IOException e) {
            credentials = null;
        }
        boolean paired = credentials != null;
        boolean running = GatewayService.isRunning();
        EngineStatus s = app.status();

        text(R.id.paired, paired ? getString(R.string.paired_as, credentials.deviceName)
            : getString(R.string.not_paired));
        text(R.id.server, paired ? credentials.server : "");
        show(R.id.server, paired);
        show(R.id.pair_button, !paired);
        show(R.id.unpair_button, paired);
        show(R.id.toggle_button, paired);
        ((Button) findViewById(R.id.toggle_button)).setText(running ? R.string.stop_gateway : R.string.start_gateway);

        String state = !running ? getString(R.string.stopped)
            : s.isOnline(System.currentTimeMillis()) ? getString(R.string.online) : getString(R.string.offline);
        text(R.id.state, getString(R.string.state_line, state));
        text(R.id.last_poll, getString(s.instant ? R.string.last_poll_line_instant : R.string.last_poll_line,
            time(s.lastPollAt), s.lastPollCount));
        int received = gateway.outbox.inboundSize();
        text(R.id.queue, getString(R.string.queue_line, s.waitingToSend, Math.max(0, gateway.outbox.size() - received),
            received));
        text(R.id.sent_today, getString(R.string.sent_today_line, gateway.counts.sentToday()));
        text(R.id.failures, getString(R.string.failures_line, gateway.counts.failedToday()));
        text(R.id.last_error, s.lastError == null ? "" : s.lastError);
        show(R.id.last_error, running && s.lastError != null);

        boolean forwarding = forwardingWrite != null ? forwardingWrite : gateway.forwarding.isEnabled();
        Switch forward = findViewById(R.id.forward_switch);
        showingForwarding = true;
        forward.setChecked(forwarding);
        showingForwarding = false;
        forward.setEnabled(true); // off until the stored value is known

        List<String> granted = new ArrayList<String>();
        for (String permission : Setup.neededPermissions(Build.VERSION.SDK_INT, forwarding)) {
            if (granted(permission)) {
                granted.add(permission);
            }
        }
        boolean battery = app.batteryExempt();
        if (sims == null) {
            sims = Sims.decide(this, app.simSubscriptionId());
        }
        List<Setup.Item> missing = Setup.missing(Build.VERSION.SDK_INT, forwarding, granted, battery, sims);
        show(R.id.missing_title, !missing.isEmpty());
        show(R.id.row_sms, missing.contains(Setup.Item.SEND_SMS));
        show(R.id.row_receive_sms, missing.contains(Setup.Item.RECEIVE_SMS));
        show(R.id.row_notifications, missing.contains(Setup.Item.NOTIFICATIONS));
        show(R.id.row_battery, missing.contains(Setup.Item.BATTERY_EXEMPTION));
        show(R.id.row_phone_state, missing.contains(Setup.Item.READ_PHONE_STATE));
        show(R.id.row_sim_choice, missing.contains(Setup.Item.SIM_CHOICE));
    }

    /**
     * The SIMs to send from; the choice is offered only on a phone with more than one, and
     * is a missing item when the phone has no default SMS SIM ("ask every time").
     */
    private void loadSims() {
        Spinner spinner = findViewById(R.id.sim);
        final ConnecfyApp app = ConnecfyApp.of(this);
        simIds.clear();
        List<String> labels = new ArrayList<String>();
        simIds.add(-1);
        labels.add(getString(R.string.sim_default));
        List<SubscriptionInfo> active = Sims.active(this);
        if (active != null) {
            for (SubscriptionInfo sim : active) {
                simIds.add(sim.getSubscriptionId());
                labels.add(getString(R.string.sim_label, sim.getSimSlotIndex() + 1, sim.getDisplayName()));
            }
        }
        sims = Sims.decide(this, app.simSubscriptionId());
        show(R.id.sim_row, simIds.size() > 2);
        spinner.setAdapter(new ArrayAdapter<String>(this, android.R.layout.simple_spinner_dropdown_item, labels));
        int chosen = simIds.indexOf(app.simSubscriptionId());
        spinner.setSelection(Math.max(0, chosen));
        spinner.setOnItemSelectedListener(new AdapterView.OnItemSelectedListener() {
            @Override
            public void onItemSelected(AdapterView<?> parent, View view, int position, long id) {
                app.setSimSubscriptionId(simIds.get(position));
                sims = Sims.decide(MainActivity.this, app.simSubscriptionId());
                refresh();
            }

            @Override
            public void onNothingSelected(AdapterView<?> parent) {
            }
        });
    }

    /**
     * The user turned forwarding of received SMS on or off: written to the core's storage
     * off the main thread; the switch shows the new value meanwhile.
     */
    private void setForwarding(final boolean on) {
        final ConnecfyApp app = ConnecfyApp.of(this);
        forwardingWrite = on;
        SETTINGS.execute(new Runnable() {
            @Override
            public void run() {
                String problem = null;
                try {
                    app.gateway().forwarding.setEnabled(on);
                } catch (IOException | RuntimeException e) {
                    problem = app.getString(R.string.forwarding_failed, e.getMessage());
                }
                final String message = problem;
                handler.post(new Runnable() {
                    @Override
                    public void run() {
                        if (forwardingWrite != null && forwardingWrite == on) {
                            forwardingWrite = null; // written (or not): the core's value is shown again
                        }
                        if (message != null) {
                            Toast.makeText(app, message, Toast.LENGTH_LONG).show();
                        }
                        refresh();
                    }
                });
            }
        });
    }

    /**
     * Stops the gateway, delivers the waiting status reports (up to 10 s) and forgets the
     * token, on a background thread: it waits for a running tick and for the server.
     */
    private void unpair() {
        final ConnecfyApp app = ConnecfyApp.of(this);
        app.setGatewayEnabled(false);
        GatewayService.stop(this);
        findViewById(R.id.unpair_button).setEnabled(false);
        new Thread(new Runnable() {
            @Override
            public void run() {
                String problem = null;
                try {
                    if (!app.gateway().unpair(app.userAgent(), Gateway.UNPAIR_DRAIN_MILLIS)) {
                        problem = app.getString(R.string.unpair_undelivered);
                    }
                } catch (IOException e) {
                    problem = app.getString(R.string.unpair_failed, e.getMessage());
                }
                final String message = problem;
                handler.post(new Runnable() {
                    @Override
                    public void run() {
                        findViewById(R.id.unpair_button).setEnabled(true);
                        if (message != null) {
                            Toast.makeText(app, message, Toast.LENGTH_LONG).show();
                        }
                        refresh();
                    }
                });
            }
        }, "connecfy-unpair").start();
    }

    private void confirmUnpair() {
        new AlertDialog.Builder(this)
            .setTitle(R.string.unpair_title)
            .setMessage(R.string.unpair_message)
            .setNegativeButton(android.R.string.cancel, null)
            .setPositiveButton(R.string.unpair, new DialogInterface.OnClickListener() {
                @Override
                public void onClick(DialogInterface dialog, int which) {
                    unpair();
                }
            })
            .show();
    }
}
