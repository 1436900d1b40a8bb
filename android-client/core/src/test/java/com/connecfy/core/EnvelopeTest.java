package com.connecfy.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.GeneralSecurityException;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.junit.Test;

/**
 * The end-to-end envelope against the shared vectors ({@code e2e-vectors.json}, which the
 * Python tests read too), through both key derivations: the platform's
 * {@code PBKDF2WithHmacSHA256} and the one over {@code HmacSHA256} that Android 7.x uses.
 */
public class EnvelopeTest {
    private static final Envelope.KeyDerivation PLATFORM = new Envelope.KeyDerivation() {
        @Override
        public byte[] derive(String passphrase, byte[] salt, int iterations, int keyBytes)
                throws GeneralSecurityException {
            return Pbkdf2.platform(passphrase, salt, iterations, keyBytes);
        }
    };
    private static final Envelope.KeyDerivation OVER_HMAC = new Envelope.KeyDerivation() {
        @Override
        public byte[] derive(String passphrase, byte[] salt, int iterations, int keyBytes)
                throws GeneralSecurityException {
            return Pbkdf2.overHmac(passphrase, salt, iterations, keyBytes);
        }
    };

    static JSONObject vectors() throws IOException, JSONException {
        InputStream in = EnvelopeTest.class.getResourceAsStream("/e2e-vectors.json");
        assertTrue("e2e-vectors.json is not on the test class path", in != null);
        try {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buffer = new byte[8192];
            for (int n = in.read(buffer); n >= 0; n = in.read(buffer)) {
                out.write(buffer, 0, n);
            }
            return new JSONObject(new String(out.toByteArray(), "UTF-8"));
        } finally {
            in.close();
        }
    }

    private static byte[] hex(String text) {
        byte[] out = new byte[text.length() / 2];
        for (int i = 0; i < out.length; i++) {
            out[i] = (byte) Integer.parseInt(text.substring(2 * i, 2 * i + 2), 16);
        }
        return out;
    }

    private static void checkVectors(Envelope.KeyDerivation kdf) throws Exception {
        JSONObject all = vectors();
        assertEquals(Envelope.ITERATIONS, all.getInt("iterations"));
        JSONArray good = all.getJSONArray("vectors");
        assertTrue(good.length() >= 4);
        for (int i = 0; i < good.length(); i++) {
            JSONObject v = good.getJSONObject(i);
            String name = v.getString("name");
            byte[] key = kdf.derive(v.getString("passphrase"), hex(v.getString("salt")), Envelope.ITERATIONS, 32);
            assertArrayEquals(name, hex(v.getString("key")), key);
            assertEquals(name, v.getString("plaintext"), Envelope.open(v.getString("envelope"),
                v.getString("passphrase"), kdf));
        }
        JSONArray bad = all.getJSONArray("failures");
        assertTrue(bad.length() >= 1);
        for (int i = 0; i < bad.length(); i++) {
            JSONObject f = bad.getJSONObject(i);
            assertEquals(Envelope.DECRYPT_FAILED, f.getString("error"));
            try {
                Envelope.open(f.getString("envelope"), f.getString("passphrase"), kdf);
                fail(f.getString("name") + " opened");
            } catch (Envelope.DecryptFailed expected) {
                // as the vector says
            }
        }
    }

    @Test
    public void theVectorsOpenWithThePlatformsPbkdf2() throws Exception {
        checkVectors(PLATFORM);
    }

    @Test
    public void theVectorsOpenWithPbkdf2OverHmacAsOnAndroid7() throws Exception {
        checkVectors(OVER_HMAC);
    }

    @Test
    public void theDefaultDerivationOpensThemToo() throws Exception {
        JSONObject v = vectors().getJSONArray("vectors").getJSONObject(0);
        assertEquals(v.getString("plaintext"), Envelope.open(v.getString("envelope"), v.getString("passphrase")));
    }

    @Test
    public void bothDerivationsAgreeOnLengthsOtherThanOneBlock() throws Exception {
        byte[] salt = hex("000102030405060708090a0b0c0d0e0f");
        for (int bytes : new int[] {1, 31, 33, 64, 65}) {
            assertArrayEquals(Pbkdf2.platform("pässword", salt, 3, bytes), Pbkdf2.overHmac("pässword", salt, 3, bytes));
        }
    }

    @Test
    public void withoutAPassphraseNothingOpens() throws Exception {
        String envelope = vectors().getJSONArray("vectors").getJSONObject(0).getString("envelope");
        for (String none : new String[] {null, ""}) {
            try {
                Envelope.open(envelope, none);
                fail("opened without a passphrase");
            } catch (Envelope.DecryptFailed expected) {
                assertTrue(expected.getMessage().contains("passphrase"));
            }
        }
    }

    @Test
    public void base64IsStrict() {
        assertArrayEquals("hello".getBytes(Pbkdf2.UTF_8), Envelope.base64("aGVsbG8="));
        assertArrayEquals("hell".getBytes(Pbkdf2.UTF_8), Envelope.base64("aGVsbA=="));
        assertArrayEquals("hel".getBytes(Pbkdf2.UTF_8), Envelope.base64("aGVs"));
        assertArrayEquals(new byte[] {(byte) 0xfb, (byte) 0xff}, Envelope.base64("+/8="));
        for (String bad : new String[] {"", "aGVsbG8", "aGV=bG8=", "aGVs*G8=", "a===", "aGVsbG8=aGVs", "aGVsbG-_"}) {
            assertNull(bad, Envelope.base64(bad));
        }
    }
}
