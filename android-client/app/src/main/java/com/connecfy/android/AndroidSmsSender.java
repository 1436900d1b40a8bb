package com.connecfy.android;

import android.Manifest;
import android.annotation.SuppressLint;
import android.app.PendingIntent;
import android.content.Context;
import android.content.pm.PackageManager;
import android.os.Build;
import android.telephony.SmsManager;

import com.connecfy.core.CellService;
import com.connecfy.core.SimChoice;
import com.connecfy.core.SmsSender;
import com.connecfy.core.Task;

import java.util.ArrayList;

/**
 * Sends with SmsManager from the chosen SIM: the text divided into parts, one sent and
 * one delivered PendingIntent per part, answered by {@link SmsResultReceiver}. Which SIM
 * is the core's {@link SimChoice}: on a dual-SIM phone set to "ask every time" nothing is
 * sent (or claimed) until the user chooses one. A message that names a SIM slot goes out
 * through that slot's subscription ({@link SimChoice#forTask}; the engine fails it when
 * the slot has no active SIM). Nor while that SIM has no cell service
 * or the radio is off ({@link CellWatch}): on Wi-Fi the gateway stays online but every
 * message would fail.
 */
final class AndroidSmsSender implements SmsSender {
    private final Context context;
    private final CellWatch cells;

    AndroidSmsSender(Context context, CellWatch cells) {
        this.context = context.getApplicationContext();
        this.cells = cells;
    }

    private SimChoice.Decision sim() {
        return Sims.decide(context, ConnecfyApp.of(context).simSubscriptionId());
    }

    /** The SmsManager of the SIM to send from (the default one while no SIM can be used). */
    private SmsManager smsManager() {
        SimChoice.Decision sim = sim();
        return smsManager(sim.canSend() ? sim.subscriptionId : SimChoice.DEFAULT);
    }

    @SuppressWarnings("deprecation")
    private SmsManager smsManager(int subscription) {
        if (Build.VERSION.SDK_INT >= 31) {
            SmsManager manager = context.getSystemService(SmsManager.class);
            return subscription >= 0 ? manager.createForSubscriptionId(subscription) : manager;
        }
        return subscription >= 0 ? SmsManager.getSmsManagerForSubscriptionId(subscription) : SmsManager.getDefault();
    }

    @Override
    public String whyCannotSend() {
        if (context.checkSelfPermission(Manifest.permission.SEND_SMS) != PackageManager.PERMISSION_GRANTED) {
            return context.getString(R.string.cannot_send_permission);
        }
        SimChoice.Decision sim = sim();
        switch (sim.outcome) {
            case NEED_CHOICE:
                return context.getString(R.string.cannot_send_sim_choice);
            case NEED_PERMISSION:
                return context.getString(R.string.cannot_send_phone_state);
            case NO_SIM:
                return context.getString(R.string.cannot_send_no_sim);
            default:
                break;
        }
        cells.watch(sim.subscriptionId); // called on the gateway's thread, which has a Looper
        CellService.Reason radio = cells.whyCannotSend();
        if (radio == CellService.Reason.NO_SERVICE) {
            return context.getString(R.string.cannot_send_no_service, radio.code);
        }
        if (radio == CellService.Reason.RADIO_OFF) {
            return context.getString(R.string.cannot_send_radio_off, radio.code);
        }
        return null;
    }

    @Override
    public int countParts(String message) {
        return smsManager().divideMessage(message).size();
    }

    @Override
    public SimChoice.Decision simFor(Task task) {
        return Sims.forTask(context, task.simSlot, ConnecfyApp.of(context).simSubscriptionId());
    }

    @Override
    @SuppressLint("MissingPermission")
    public void send(Task task, int parts, SimChoice.Decision sim) {
        if (!sim.canSend()) {
            // Without a SIM Android would fail the message or ask the user which SIM to use.
            throw new IllegalStateException("no SIM to send from: " + sim.outcome);
        }
        SmsManager manager = smsManager(sim.subscriptionId);
        ArrayList<String> divided = manager.divideMessage(task.message);
        ArrayList<PendingIntent> sent = new ArrayList<PendingIntent>();
        ArrayList<PendingIntent> delivered = new ArrayList<PendingIntent>();
        for (int part = 0; part < divided.size(); part++) {
            sent.add(SmsResultReceiver.pendingIntent(context, SmsResultReceiver.ACTION_SENT, task.id, part));
            delivered.add(SmsResultReceiver.pendingIntent(context, SmsResultReceiver.ACTION_DELIVERED, task.id, part));
        }
        if (divided.size() == 1) {
            manager.sendTextMessage(task.to, null, divided.get(0), sent.get(0), delivered.get(0));
        } else {
            manager.sendMultipartTextMessage(task.to, null, divided, sent, delivered);
        }
    }
}
