package com.connecfy.android;

import android.app.Activity;
import android.content.Intent;
import android.net.Uri;
import android.os.Build;
import android.os.Bundle;
import android.view.View;
import android.widget.Button;
import android.widget.CheckBox;
import android.widget.CompoundButton;
import android.widget.EditText;
import android.widget.TextView;

import com.connecfy.core.ApiException;
import com.connecfy.core.PairingPayload;
import com.google.zxing.integration.android.IntentIntegrator;
import com.google.zxing.integration.android.IntentResult;

import java.io.IOException;

/**
 * Pairs the phone: the server and code come from the dashboard's QR code (scanned here,
 * or opened as a {@code connecfy://pair?...} link) or are typed; the device name and,
 * if the user ticks the box, the phone number go with the registration.
 */
public final class PairActivity extends Activity {
    private EditText server;
    private EditText code;
    private EditText name;
    private CheckBox shareNumber;
    private EditText number;
    private TextView message;
    private Button pair;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_pair);
        server = findViewById(R.id.server);
        code = findViewById(R.id.code);
        name = findViewById(R.id.device_name);
        shareNumber = findViewById(R.id.share_number);
        number = findViewById(R.id.phone_number);
        message = findViewById(R.id.pair_message);
        pair = findViewById(R.id.pair_button);
        if (savedInstanceState == null) {
            name.setText(Build.MANUFACTURER + " " + Build.MODEL);
        }
        shareNumber.setOnCheckedChangeListener(new CompoundButton.OnCheckedChangeListener() {
            @Override
            public void onCheckedChanged(CompoundButton button, boolean checked) {
                number.setVisibility(checked ? View.VISIBLE : View.GONE);
            }
        });
        findViewById(R.id.scan_button).setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                IntentIntegrator scan = new IntentIntegrator(PairActivity.this);
                scan.setDesiredBarcodeFormats(IntentIntegrator.QR_CODE);
                scan.setPrompt(getString(R.string.scan_prompt));
                scan.setBeepEnabled(false);
                scan.initiateScan();
            }
        });
        pair.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                pair();
            }
        });
        fill(getIntent().getData());
    }

    @Override
    protected void onNewIntent(Intent intent) {
        super.onNewIntent(intent);
        fill(intent.getData());
    }

    @Override
    protected void onActivityResult(int requestCode, int resultCode, Intent data) {
        IntentResult result = IntentIntegrator.parseActivityResult(requestCode, resultCode, data);
        if (result == null) {
            super.onActivityResult(requestCode, resultCode, data);
        } else if (result.getContents() != null) {
            fill(Uri.parse(result.getContents().trim()));
        }
    }

    private void fill(Uri link) {
        if (link == null) {
            return;
        }
        try {
            PairingPayload payload = PairingPayload.parse(link.toString());
            server.setText(payload.server);
            code.setText(payload.code);
            message.setText(R.string.pair_ready);
        } catch (IllegalArgumentException e) {
            message.setText(e.getMessage());
        }
    }

    private void pair() {
        final PairingPayload payload;
        try {
            payload = new PairingPayload(server.getText().toString(), code.getText().toString());
        } catch (IllegalArgumentException e) {
            message.setText(e.getMessage());
            return;
        }
        final String deviceName = name.getText().toString().trim();
        final String phone = shareNumber.isChecked() ? number.getText().toString().trim() : "";
        pair.setEnabled(false);
        message.setText(R.string.pairing);
        final ConnecfyApp app = ConnecfyApp.of(this);
        new Thread(new Runnable() {
            @Override
            public void run() {
                String error = null;
                try {
                    // Stops the engine of an earlier pairing; starting the service below
                    // gives the new pairing its engine.
                    app.gateway().pair(payload, deviceName, phone, app.userAgent());
                } catch (ApiException e) {
                    error = getString(R.string.pair_refused, e.detail());
                } catch (IOException e) {
                    error = getString(R.string.pair_unreachable, payload.server, String.valueOf(e.getMessage()));
                }
                final String shown = error;
                runOnUiThread(new Runnable() {
                    @Override
                    public void run() {
                        paired(shown);
                    }
                });
            }
        }, "connecfy-pair").start();
    }

    private void paired(String error) {
        pair.setEnabled(true);
        if (error != null) {
            message.setText(error);
            return;
        }
        ConnecfyApp app = ConnecfyApp.of(this);
        app.setGatewayEnabled(true);
        GatewayService.start(this);
        startActivity(new Intent(this, MainActivity.class).addFlags(Intent.FLAG_ACTIVITY_CLEAR_TOP));
        if (!app.batteryExempt()) {
            // Part of the set-up: without it Android stops the polling with the screen off
            // and refuses to restart the gateway from the background (Android 12+).
            app.requestBatteryExemption(this);
        }
        finish();
    }
}
