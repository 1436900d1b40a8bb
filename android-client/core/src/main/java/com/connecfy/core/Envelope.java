package com.connecfy.core;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.security.GeneralSecurityException;

import javax.crypto.AEADBadTagException;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * An end-to-end encrypted message as the server hands it to the phone:
 * {@code v1:<base64(salt16 || nonce12 || ciphertext || tag16)>}, AES-256-GCM with no
 * associated data, the key PBKDF2-HMAC-SHA256 of the passphrase ({@link Pbkdf2}, 100,000
 * iterations) with the message's salt. The phone opens it with the passphrase from the
 * app's settings just before sending; a wrong passphrase or a malformed envelope is
 * {@link DecryptFailed}, reported as a final failure with error {@link #DECRYPT_FAILED}.
 */
public final class Envelope {
    /** The error the phone reports for a message it could not decrypt. */
    public static final String DECRYPT_FAILED = "decrypt_failed";
    /** The error of an envelope that opens to more than {@link #MAX_TEXT_CHARS} characters. */
    public static final String TOO_LONG = "message_too_long";
    /** The most characters (code points) a message may have, as the server counts them. */
    public static final int MAX_TEXT_CHARS = 1600;
    public static final String PREFIX = "v1:";
    public static final int ITERATIONS = 100000;
    static final int SALT_BYTES = 16;
    static final int NONCE_BYTES = 12;
    static final int TAG_BYTES = 16;
    static final int KEY_BYTES = 32;

    /** Where the engine reads the passphrase from (the app's settings), each time it needs it. */
    public interface Passphrase {
        /** The passphrase, or null or "" when none is set. */
        String get();
    }

    /** The envelope cannot be opened: malformed, another passphrase, or changed on the way. */
    public static final class DecryptFailed extends Exception {
        private static final long serialVersionUID = 1L;

        DecryptFailed(String message) {
            super(message);
        }
    }

    /** How the key is derived: the platform's PBKDF2, or the one over HMAC (tests pick). */
    interface KeyDerivation {
        byte[] derive(String passphrase, byte[] salt, int iterations, int keyBytes) throws GeneralSecurityException;
    }

    static final KeyDerivation DEFAULT = new KeyDerivation() {
        @Override
        public byte[] derive(String passphrase, byte[] salt, int iterations, int keyBytes)
                throws GeneralSecurityException {
            return Pbkdf2.derive(passphrase, salt, iterations, keyBytes);
        }
    };

    private Envelope() {
    }

    /** The text inside {@code envelope}. */
    public static String open(String envelope, String passphrase) throws DecryptFailed {
        return open(envelope, passphrase, DEFAULT);
    }

    static String open(String envelope, String passphrase, KeyDerivation kdf) throws DecryptFailed {
        if (passphrase == null || passphrase.isEmpty()) {
            throw new DecryptFailed("no passphrase is set in the app's settings");
        }
        if (envelope == null || !envelope.startsWith(PREFIX)) {
            throw new DecryptFailed("not a v1 envelope");
        }
        byte[] raw = base64(envelope.substring(PREFIX.length()));
        if (raw == null) {
            throw new DecryptFailed("the envelope is not valid base64");
        }
        if (raw.length < SALT_BYTES + NONCE_BYTES + TAG_BYTES + 1) {
            throw new DecryptFailed("the envelope is too short");
        }
        byte[] salt = new byte[SALT_BYTES];
        System.arraycopy(raw, 0, salt, 0, SALT_BYTES);
        byte[] plain;
        try {
            byte[] key = kdf.derive(passphrase, salt, ITERATIONS, KEY_BYTES);
            Cipher cipher = Cipher.getInstance("AES/GCM/NoPadding");
            cipher.init(Cipher.DECRYPT_MODE, new SecretKeySpec(key, "AES"),
                new GCMParameterSpec(TAG_BYTES * 8, raw, SALT_BYTES, NONCE_BYTES));
            plain = cipher.doFinal(raw, SALT_BYTES + NONCE_BYTES, raw.length - SALT_BYTES - NONCE_BYTES);
        } catch (AEADBadTagException e) {
            throw new DecryptFailed("wrong passphrase, or the envelope was changed");
        } catch (GeneralSecurityException e) {
            throw new DecryptFailed("cannot decrypt: " + e);
        }
        String text = utf8(plain);
        if (text == null) {
            throw new DecryptFailed("the plaintext is not UTF-8");
        }
        return text;
    }

    /** Strict UTF-8: null for bytes that are not (String's constructor would substitute). */
    private static String utf8(byte[] bytes) {
        try {
            return Pbkdf2.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)
                .decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }

    /**
     * Standard base64 with padding (the JDK's decoder arrived in API 26, android.util.Base64
     * is not plain Java); null for anything else.
     */
    static byte[] base64(String text) {
        int length = text.length();
        if (length == 0 || length % 4 != 0) {
            return null;
        }
        int padding = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
        byte[] out = new byte[length / 4 * 3 - padding];
        int o = 0;
        for (int i = 0; i < length; i += 4) {
            int bits = 0;
            for (int j = 0; j < 4; j++) {
                char c = text.charAt(i + j);
                int value;
                if (c == '=' && i + 4 == length && j >= 4 - padding) {
                    value = 0;
                } else {
                    value = sextet(c);
                    if (value < 0) {
                        return null;
                    }
                }
                bits = bits << 6 | value;
            }
            for (int shift = 16; shift >= 0 && o < out.length; shift -= 8) {
                out[o++] = (byte) (bits >>> shift);
            }
        }
        return out;
    }

    private static int sextet(char c) {
        if (c >= 'A' && c <= 'Z') {
            return c - 'A';
        }
        if (c >= 'a' && c <= 'z') {
            return c - 'a' + 26;
        }
        if (c >= '0' && c <= '9') {
            return c - '0' + 52;
        }
        if (c == '+') {
            return 62;
        }
        if (c == '/') {
            return 63;
        }
        return -1;
    }
}
