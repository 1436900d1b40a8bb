package com.connecfy.android;

import android.content.BroadcastReceiver;
import android.content.Context;
import android.content.Intent;
import android.os.Bundle;
import android.provider.Telephony;
import android.telephony.SmsMessage;
import android.util.Log;

import com.connecfy.core.Forwarding;
import com.connecfy.core.InboundSms;
import com.connecfy.core.SimSlot;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * Android's SMS_RECEIVED broadcast (only the system can send it: the manifest requires
 * BROADCAST_SMS of the sender), handed to the core's {@link Forwarding}: the broadcast's
 * parts are one SMS (a multipart SMS comes as several, in order), queued on disk for the
 * server unless forwarding is off or the phone is not paired, then a nudge for the
 * service to report it. The SMS stays in the phone's own messaging app either way.
 */
public final class SmsReceivedReceiver extends BroadcastReceiver {
    private static final String TAG = "Connecfy";
    private static final ExecutorService DISK = Executors.newSingleThreadExecutor();

    @Override
    public void onReceive(final Context context, Intent intent) {
        if (!Telephony.Sms.Intents.SMS_RECEIVED_ACTION.equals(intent.getAction())) {
            return;
        }
        SmsMessage[] messages;
        try {
            messages = Telephony.Sms.Intents.getMessagesFromIntent(intent);
        } catch (RuntimeException e) {
            Log.w(TAG, "a received SMS could not be read", e);
            return;
        }
        if (messages == null || messages.length == 0) {
            return;
        }
        final List<InboundSms.Part> parts = new ArrayList<InboundSms.Part>();
        for (SmsMessage message : messages) {
            if (message != null) { // a PDU Android could not parse
                parts.add(new InboundSms.Part(message.getOriginatingAddress(), message.getMessageBody()));
            }
        }
        final Integer slot = simSlot(context, intent);
        final PendingResult pending = goAsync();
        DISK.execute(new Runnable() {
            @Override
            public void run() {
                try {
                    Forwarding.Result result = ConnecfyApp.of(context).gateway().forwarding.receive(parts, slot);
                    Log.i(TAG, result.toString()); // names no sender and no text
                    if (result.outcome == Forwarding.Outcome.QUEUED) {
                        GatewayService.wake();
                    }
                } catch (IOException | RuntimeException e) {
                    Log.e(TAG, "a received SMS could not be queued for the server", e);
                } finally {
                    pending.finish();
                }
            }
        });
    }

    /** The SIM slot that received the SMS, as far as the broadcast tells; null when it does not. */
    @SuppressWarnings("deprecation")
    private static Integer simSlot(final Context context, Intent intent) {
        try {
            Bundle extras = intent.getExtras();
            if (extras == null) {
                return null;
            }
            Map<String, Object> values = new HashMap<String, Object>();
            for (String key : SimSlot.keys()) {
                Object value = extras.get(key);
                if (value != null) {
                    values.put(key, value);
                }
            }
            return SimSlot.fromExtras(values, new SimSlot.Lookup() {
                @Override
                public Integer slotOf(int subscriptionId) {
                    return Sims.slotOf(context, subscriptionId);
                }
            });
        } catch (RuntimeException e) {
            return null; // best effort: the SMS goes without its slot
        }
    }
}
