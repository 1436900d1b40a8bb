package com.connecfy.core;

import java.text.SimpleDateFormat;
import java.util.Date;
import java.util.List;
import java.util.Locale;
import java.util.TimeZone;
import java.util.UUID;

import org.json.JSONException;
import org.json.JSONObject;

/**
 * One SMS this phone received, as it is reported to the server
 * ({@code POST /api/devices/<id>/inbound/}). A multipart SMS arrives as several parts in
 * one broadcast; they are one message here, their bodies joined in order.
 *
 * <p>{@link #ref} names this SMS to the server: made once, at random, when the SMS is
 * queued, and kept with it on disk, so every retry (after an app restart too) sends the
 * same one and the server stores the SMS once; two SMS never share one, even with the
 * same sender, text and second.
 */
public final class InboundSms {
    /** The server takes at most this many characters (code points); a longer text is cut. */
    public static final int MAX_MESSAGE_CHARS = 5000;

    /** One part of a received SMS, as Android's SmsMessage gives it. */
    public static final class Part {
        public final String originatingAddress;
        public final String body;

        public Part(String originatingAddress, String body) {
            this.originatingAddress = originatingAddress;
            this.body = body;
        }
    }

    public final String ref;
    /** The sender as the phone got it: a number or an alphanumeric sender name. */
    public final String from;
    public final String message;
    /** Wall time the phone received it. */
    public final long receivedAt;
    /** The SIM slot (0-based) that received it; null when the phone did not say. */
    public final Integer simSlot;

    public InboundSms(String ref, String from, String message, long receivedAt, Integer simSlot) {
        this.ref = ref;
        this.from = from;
        this.message = message;
        this.receivedAt = receivedAt;
        this.simSlot = simSlot;
    }

    /** A new reference: 36 characters, hex digits and '-', unique per call. */
    public static String newRef() {
        return UUID.randomUUID().toString();
    }

    /**
     * The sender of the parts of one received SMS: the first part's address that is not
     * blank (Android groups the parts of one SMS by sender), trimmed; null when none has one.
     */
    public static String sender(List<Part> parts) {
        for (Part part : parts) {
            if (part != null && part.originatingAddress != null && !part.originatingAddress.trim().isEmpty()) {
                return part.originatingAddress.trim();
            }
        }
        return null;
    }

    /**
     * The text of one received SMS: its parts' bodies joined in the order given (a part
     * without a body adds nothing), cut to {@link #MAX_MESSAGE_CHARS} characters.
     */
    public static String body(List<Part> parts) {
        StringBuilder text = new StringBuilder();
        for (Part part : parts) {
            if (part != null && part.body != null) {
                text.append(part.body);
            }
        }
        return cut(text.toString(), MAX_MESSAGE_CHARS);
    }

    /** The first {@code max} code points of {@code text} (never half a surrogate pair). */
    static String cut(String text, int max) {
        if (text.codePointCount(0, text.length()) <= max) {
            return text;
        }
        return text.substring(0, text.offsetByCodePoints(0, max));
    }

    /** Wall time as the server wants it: ISO-8601 in UTC with milliseconds, e.g. 2026-12-05T12:00:00.123Z. */
    public static String iso(long wallMillis) {
        SimpleDateFormat format = new SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'", Locale.US);
        format.setTimeZone(TimeZone.getTimeZone("UTC"));
        return format.format(new Date(wallMillis));
    }

    /** The request body of {@code POST /api/devices/<id>/inbound/}. */
    JSONObject toJson() throws JSONException {
        JSONObject o = new JSONObject()
            .put("from", from)
            .put("message", message)
            .put("received_at", iso(receivedAt))
            .put("ref", ref);
        if (simSlot != null) {
            o.put("sim_slot", simSlot.intValue());
        }
        return o;
    }

    /** As kept in the outbox's document (wall time in milliseconds, not text). */
    JSONObject toStored() throws JSONException {
        JSONObject o = new JSONObject()
            .put("ref", ref)
            .put("from", from)
            .put("message", message)
            .put("received_at", receivedAt);
        if (simSlot != null) {
            o.put("sim_slot", simSlot.intValue());
        }
        return o;
    }

    static InboundSms fromStored(JSONObject o) throws JSONException {
        Integer slot = o.has("sim_slot") ? Integer.valueOf(o.getInt("sim_slot")) : null;
        return new InboundSms(o.getString("ref"), o.getString("from"), o.getString("message"),
            o.getLong("received_at"), slot);
    }

    @Override
    public String toString() {
        return "InboundSms(" + ref + " from " + from + ")";
    }
}
