package com.connecfy.core;

import java.io.UnsupportedEncodingException;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.util.Locale;

/**
 * A server address and a one-time pairing code, as the dashboard's QR code carries them:
 * {@code connecfy://pair?server=<url-encoded base URL>&code=<code>}, for example
 * {@code connecfy://pair?server=https%3A%2F%2Fsms.example.com&code=K7M2QX9D}.
 * The same two values can be typed by hand.
 */
public final class PairingPayload {
    public static final String SCHEME_PREFIX = "connecfy://pair?";

    public final String server;
    public final String code;

    public PairingPayload(String server, String code) {
        this.server = normalizeServer(server);
        this.code = normalizeCode(code);
    }

    /** Reads a scanned QR code; IllegalArgumentException with a sentence for the user otherwise. */
    public static PairingPayload parse(String scanned) {
        String text = scanned == null ? "" : scanned.trim();
        if (!text.regionMatches(true, 0, SCHEME_PREFIX, 0, SCHEME_PREFIX.length())) {
            throw new IllegalArgumentException("This QR code is not a Connecfy pairing code.");
        }
        String server = null;
        String code = null;
        for (String pair : text.substring(SCHEME_PREFIX.length()).split("&")) {
            int eq = pair.indexOf('=');
            if (eq < 0) {
                continue;
            }
            String key = decode(pair.substring(0, eq));
            String value = decode(pair.substring(eq + 1));
            if (key.equals("server")) {
                server = value;
            } else if (key.equals("code")) {
                code = value;
            }
        }
        if (server == null || code == null) {
            throw new IllegalArgumentException("The pairing QR code lacks the server or the code.");
        }
        return new PairingPayload(server, code);
    }

    public String toUri() {
        return SCHEME_PREFIX + "server=" + encode(server) + "&code=" + encode(code);
    }

    /**
     * A base URL without trailing slashes; {@code https://} is assumed when no scheme is
     * typed. Only http and https are accepted.
     */
    public static String normalizeServer(String typed) {
        String s = typed == null ? "" : typed.trim();
        while (s.endsWith("/")) {
            s = s.substring(0, s.length() - 1);
        }
        if (s.isEmpty()) {
            throw new IllegalArgumentException("Enter the server address.");
        }
        String lower = s.toLowerCase(Locale.ROOT);
        if (!lower.contains("://")) {
            s = "https://" + s;
        } else if (!lower.startsWith("https://") && !lower.startsWith("http://")) {
            throw new IllegalArgumentException("The server address must start with https:// or http://.");
        }
        if (s.indexOf("://") + 3 >= s.length() || s.indexOf('?') >= 0 || s.indexOf('#') >= 0
                || s.indexOf(' ') >= 0) {
            throw new IllegalArgumentException("The server address is not valid.");
        }
        return s;
    }

    /** The code as the server wants it: letters and digits, upper case (spaces and dashes dropped). */
    public static String normalizeCode(String typed) {
        StringBuilder b = new StringBuilder();
        String s = typed == null ? "" : typed;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == ' ' || c == '-') {
                continue;
            }
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
                throw new IllegalArgumentException("The pairing code has letters and digits only.");
            }
            b.append(Character.toUpperCase(c));
        }
        if (b.length() == 0 || b.length() > 16) {
            throw new IllegalArgumentException("Enter the pairing code shown on the dashboard.");
        }
        return b.toString();
    }

    private static String decode(String s) {
        try {
            return URLDecoder.decode(s, "UTF-8");
        } catch (UnsupportedEncodingException e) {
            throw new AssertionError(e);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("The pairing QR code is damaged.");
        }
    }

    private static String encode(String s) {
        try {
            return URLEncoder.encode(s, "UTF-8");
        } catch (UnsupportedEncodingException e) {
            throw new AssertionError(e);
        }
    }
}
