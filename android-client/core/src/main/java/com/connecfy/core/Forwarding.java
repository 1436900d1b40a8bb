package com.connecfy.core;

import java.io.IOException;
import java.util.List;

import org.json.JSONException;
import org.json.JSONObject;

/**
 * Forwarding the SMS this phone receives to the server: the user's switch (kept in
 * {@link Storage}, on until turned off) and the way in for a received SMS, which goes to
 * the {@link Outbox} and from there to the server with the status reports. While the
 * switch is off, or the phone is not paired, a received SMS is not queued at all; those
 * queued before the switch was turned off still go.
 *
 * <p>A switch document that cannot be read counts as off (forwarding is what the user
 * may have turned off); setting the switch writes it afresh.
 */
public final class Forwarding {
    static final String DOCUMENT = "forwarding.json";

    /** What became of one received SMS. */
    public enum Outcome {
        /** In the outbox, on disk. */
        QUEUED,
        /** The switch is off. */
        OFF,
        /** No pairing: no server to send it to. */
        NOT_PAIRED,
        /** No part names a sender. */
        NO_SENDER,
        /** No text. */
        EMPTY
    }

    /** What {@link #receive} did. */
    public static final class Result {
        public final Outcome outcome;
        /** The queued SMS, for {@link Outcome#QUEUED}. */
        public final InboundSms sms;
        /** The oldest waiting SMS, dropped to make room ({@link Outbox#MAX_INBOUND}); usually null. */
        public final InboundSms pushedOut;

        Result(Outcome outcome, InboundSms sms, InboundSms pushedOut) {
            this.outcome = outcome;
            this.sms = sms;
            this.pushedOut = pushedOut;
        }

        /** A line for the log; names no sender and no text. */
        @Override
        public String toString() {
            switch (outcome) {
                case QUEUED:
                    return "received SMS " + sms.ref + " queued for the server"
                        + (pushedOut == null ? "" : "; the oldest waiting one, " + pushedOut.ref + ", was dropped ("
                            + Outbox.MAX_INBOUND + " wait at most)");
                case OFF:
                    return "received SMS not forwarded: forwarding is off";
                case NOT_PAIRED:
                    return "received SMS not forwarded: the phone is not paired";
                case NO_SENDER:
                    return "received SMS not forwarded: it names no sender";
                default:
                    return "received SMS not forwarded: it has no text";
            }
        }
    }

    private final Storage storage;
    private final Pairing pairing;
    private final Outbox outbox;
    private final Clock clock;
    /** Read without the lock (the screen, every received SMS). */
    private volatile boolean enabled = true;

    public Forwarding(Storage storage, Pairing pairing, Outbox outbox, Clock clock) throws IOException {
        this.storage = storage;
        this.pairing = pairing;
        this.outbox = outbox;
        this.clock = clock;
        String text = storage.read(DOCUMENT);
        if (text != null) {
            try {
                enabled = new JSONObject(text).getBoolean("enabled");
            } catch (JSONException e) {
                enabled = false;
            }
        }
    }

    /** Whether received SMS are forwarded; never reads the disk or waits for a write. */
    public boolean isEnabled() {
        return enabled;
    }

    /** Turns forwarding on or off, on disk when this returns: call it off the UI thread. */
    public synchronized void setEnabled(boolean on) throws IOException {
        try {
            storage.write(DOCUMENT, new JSONObject().put("enabled", on).toString());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
        enabled = on;
    }

    /**
     * One SMS the phone received: the parts of one SMS_RECEIVED broadcast (a multipart SMS
     * has several, in order), and the SIM slot that received it (null: unknown). Queued
     * with a new {@code ref} and the phone's time now as {@code received_at}, on disk when
     * this returns, unless forwarding is off or the phone is not paired.
     */
    public Result receive(List<InboundSms.Part> parts, Integer simSlot) throws IOException {
        if (!enabled) {
            return new Result(Outcome.OFF, null, null);
        }
        DeviceCredentials credentials;
        try {
            credentials = pairing.load();
        } catch (UnreadableDocumentException e) {
            credentials = null;
        }
        if (credentials == null) {
            return new Result(Outcome.NOT_PAIRED, null, null);
        }
        String from = InboundSms.sender(parts);
        if (from == null) {
            return new Result(Outcome.NO_SENDER, null, null);
        }
        String message = InboundSms.body(parts);
        if (message.isEmpty()) {
            return new Result(Outcome.EMPTY, null, null);
        }
        InboundSms sms = new InboundSms(InboundSms.newRef(), from, message, clock.now(), simSlot);
        InboundSms pushedOut = outbox.addInbound(sms);
        return new Result(Outcome.QUEUED, sms, pushedOut);
    }
}
