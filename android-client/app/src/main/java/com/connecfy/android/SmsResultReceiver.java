package com.connecfy.android;

import android.app.PendingIntent;
import android.content.BroadcastReceiver;
import android.content.Context;
import android.content.Intent;
import android.net.Uri;
import android.os.Build;
import android.telephony.SmsMessage;

import com.connecfy.core.SendResults;

import java.io.IOException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * SmsManager's per-part sent and delivered broadcasts, handed to the core's
 * {@link SendResults} (which writes the status reports to the outbox), then a nudge for
 * the service to send them. Works after an app restart too: the results are on disk.
 */
public final class SmsResultReceiver extends BroadcastReceiver {
    static final String ACTION_SENT = "com.connecfy.android.SMS_SENT";
    static final String ACTION_DELIVERED = "com.connecfy.android.SMS_DELIVERED";
    private static final String EXTRA_ID = "message_id";
    private static final String EXTRA_PART = "part";
    private static final ExecutorService DISK = Executors.newSingleThreadExecutor();

    static PendingIntent pendingIntent(Context context, String action, String messageId, int part) {
        Intent intent = new Intent(action)
            .setClass(context, SmsResultReceiver.class)
            // A distinct data URI per message and part, so no PendingIntent replaces another.
            .setData(Uri.parse("connecfy-sms://" + action + "/" + Uri.encode(messageId) + "/" + part))
            .putExtra(EXTRA_ID, messageId)
            .putExtra(EXTRA_PART, part);
        // Mutable: the system adds the delivery report's PDU to the delivered intent.
        int flags = PendingIntent.FLAG_UPDATE_CURRENT | (Build.VERSION.SDK_INT >= 31 ? PendingIntent.FLAG_MUTABLE : 0);
        return PendingIntent.getBroadcast(context, 0, intent, flags);
    }

    @Override
    public void onReceive(final Context context, final Intent intent) {
        final String id = intent.getStringExtra(EXTRA_ID);
        if (id == null) {
            return;
        }
        final int part = intent.getIntExtra(EXTRA_PART, 0);
        final int resultCode = getResultCode();
        final PendingResult pending = goAsync();
        DISK.execute(new Runnable() {
            @Override
            public void run() {
                try {
                    SendResults results = ConnecfyApp.of(context).gateway().results;
                    if (ACTION_SENT.equals(intent.getAction())) {
                        results.partSent(id, part, resultCode);
                    } else if (ACTION_DELIVERED.equals(intent.getAction())) {
                        int status = deliveryStatus(intent);
                        if (status >= 0) {
                            results.partDelivered(id, part, status);
                        }
                    }
                    GatewayService.wake();
                } catch (IOException e) {
                    // Storage failed; the server redelivers the message after its lease and
                    // the sent-id record keeps it from going out twice.
                } finally {
                    pending.finish();
                }
            }
        });
    }

    /** The TP-Status of a GSM delivery report; -1 when there is none to trust. */
    @SuppressWarnings("deprecation")
    private static int deliveryStatus(Intent intent) {
        byte[] pdu = intent.getByteArrayExtra("pdu");
        if (pdu == null) {
            return -1;
        }
        String format = intent.getStringExtra("format");
        SmsMessage message = Build.VERSION.SDK_INT >= 23 && format != null
            ? SmsMessage.createFromPdu(pdu, format) : SmsMessage.createFromPdu(pdu);
        if (message == null) {
            return -1;
        }
        int status = message.getStatus();
        if ("3gpp2".equals(format)) {
            return status == 0 ? 0 : -1; // CDMA codes differ: only "no error" is trusted
        }
        return status;
    }
}
