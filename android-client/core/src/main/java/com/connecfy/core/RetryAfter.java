package com.connecfy.core;

import java.text.ParsePosition;
import java.text.SimpleDateFormat;
import java.util.Date;
import java.util.Locale;
import java.util.TimeZone;

/**
 * The {@code Retry-After} header (RFC 9110 section 10.2.3): either a number of seconds or
 * an HTTP date. The wait is capped so a bad header or a skewed clock cannot park the
 * phone for days.
 */
public final class RetryAfter {
    public static final long MAX_MILLIS = 60L * 60 * 1000;

    private static final String[] DATE_FORMATS = {
        "EEE, dd MMM yyyy HH:mm:ss zzz", // IMF-fixdate
        "EEEE, dd-MMM-yy HH:mm:ss zzz",  // RFC 850
        "EEE MMM d HH:mm:ss yyyy",       // asctime
    };

    private RetryAfter() {
    }

    /** Milliseconds to wait from {@code nowMillis}, or -1 when the header is absent or unreadable. */
    public static long parseMillis(String value, long nowMillis) {
        if (value == null) {
            return -1;
        }
        String text = value.trim();
        if (text.isEmpty()) {
            return -1;
        }
        if (isSeconds(text)) {
            return seconds(text);
        }
        for (String pattern : DATE_FORMATS) {
            SimpleDateFormat format = new SimpleDateFormat(pattern, Locale.US);
            format.setTimeZone(TimeZone.getTimeZone("GMT"));
            format.setLenient(false);
            ParsePosition position = new ParsePosition(0);
            Date date = format.parse(text, position);
            if (date != null && position.getIndex() == text.length()) {
                return clamp(date.getTime() - nowMillis);
            }
        }
        return -1;
    }

    private static boolean isSeconds(String text) {
        int dots = 0;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c == '.') {
                dots++;
            } else if (c < '0' || c > '9') {
                return false;
            }
        }
        return dots <= 1 && !text.startsWith(".") && !text.endsWith(".");
    }

    private static long seconds(String text) {
        if (text.length() > 12) {
            return MAX_MILLIS;
        }
        // Fractions are outside the RFC but some servers send them; round up.
        return clamp((long) Math.ceil(Double.parseDouble(text) * 1000));
    }

    private static long clamp(long millis) {
        return Math.max(0, Math.min(MAX_MILLIS, millis));
    }
}
