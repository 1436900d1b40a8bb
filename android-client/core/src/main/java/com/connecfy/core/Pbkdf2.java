package com.connecfy.core;

import java.nio.charset.Charset;
import java.security.GeneralSecurityException;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;

import javax.crypto.Mac;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * PBKDF2-HMAC-SHA256 (RFC 8018), the key derivation of end-to-end envelopes
 * ({@link Envelope}). The platform's {@code PBKDF2WithHmacSHA256} where it has one;
 * Android 7.x (API 24-25) has none, so there the same function is computed over
 * {@code Mac("HmacSHA256")}, which every Android has. Both take the passphrase as its
 * UTF-8 bytes and are checked against the same vectors.
 */
public final class Pbkdf2 {
    static final Charset UTF_8 = Charset.forName("UTF-8");
    private static final String PLATFORM = "PBKDF2WithHmacSHA256";

    private Pbkdf2() {
    }

    /** The key: the platform's derivation when it has one, else {@link #overHmac}. */
    public static byte[] derive(String passphrase, byte[] salt, int iterations, int keyBytes)
            throws GeneralSecurityException {
        try {
            return platform(passphrase, salt, iterations, keyBytes);
        } catch (NoSuchAlgorithmException e) {
            return overHmac(passphrase, salt, iterations, keyBytes);
        }
    }

    /** {@code SecretKeyFactory("PBKDF2WithHmacSHA256")}; NoSuchAlgorithmException where there is none. */
    public static byte[] platform(String passphrase, byte[] salt, int iterations, int keyBytes)
            throws GeneralSecurityException {
        SecretKeyFactory factory = SecretKeyFactory.getInstance(PLATFORM);
        PBEKeySpec spec = new PBEKeySpec(passphrase.toCharArray(), salt, iterations, keyBytes * 8);
        try {
            return factory.generateSecret(spec).getEncoded();
        } finally {
            spec.clearPassword();
        }
    }

    /** PBKDF2 written out over HMAC-SHA256: T_i = U_1 xor ... xor U_c, U_1 = PRF(P, S || INT(i)). */
    public static byte[] overHmac(String passphrase, byte[] salt, int iterations, int keyBytes)
            throws GeneralSecurityException {
        if (iterations < 1 || keyBytes < 1) {
            throw new IllegalArgumentException("iterations and key length must be positive");
        }
        byte[] password = passphrase.getBytes(UTF_8);
        Mac mac = Mac.getInstance("HmacSHA256");
        // SecretKeySpec refuses an empty key; HMAC pads its key with zeros, so one zero byte is the same key.
        mac.init(new SecretKeySpec(password.length == 0 ? new byte[1] : password, "HmacSHA256"));
        int blockBytes = mac.getMacLength();
        byte[] out = new byte[keyBytes];
        byte[] u = new byte[blockBytes];
        byte[] t = new byte[blockBytes];
        for (int block = 1, done = 0; done < keyBytes; block++) {
            mac.update(salt);
            mac.update(new byte[] {(byte) (block >>> 24), (byte) (block >>> 16), (byte) (block >>> 8), (byte) block});
            mac.doFinal(u, 0);
            System.arraycopy(u, 0, t, 0, blockBytes);
            for (int i = 1; i < iterations; i++) {
                mac.update(u);
                mac.doFinal(u, 0);
                for (int j = 0; j < blockBytes; j++) {
                    t[j] ^= u[j];
                }
            }
            int take = Math.min(blockBytes, keyBytes - done);
            System.arraycopy(t, 0, out, done, take);
            done += take;
        }
        Arrays.fill(password, (byte) 0);
        return out;
    }
}
