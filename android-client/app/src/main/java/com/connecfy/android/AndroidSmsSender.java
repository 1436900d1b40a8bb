package com.connecfy.android;

import android.Manifest;
import android.annotation.SuppressLint;
import android.app.PendingIntent;
import android.content.Context;
import android.content.pm.PackageManager;
import android.os.Build;
import android.telephony.SmsManager;

import com.connecfy.core.SmsSender;
import com.connecfy.core.Task;

import java.util.ArrayList;

/**
 * Sends with SmsManager from the chosen SIM: the text divided into parts, one sent and
 * one delivered PendingIntent per part, answered by {@link SmsResultReceiver}.
 */
final class AndroidSmsSender implements SmsSender {
    private final Context context;

    AndroidSmsSender(Context context) {
        this.context = context.getApplicationContext();
    }

    @SuppressWarnings("deprecation")
    private SmsManager smsManager() {
        int subscription = ConnecfyApp.of(context).simSubscriptionId();
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
        return null;
    }

    @Override
    public int countParts(String message) {
        return smsManager().divideMessage(message).size();
    }

    @Override
    @SuppressLint("MissingPermission")
    public void send(Task task, int parts) {
        SmsManager manager = smsManager();
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
