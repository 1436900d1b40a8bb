package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.fail;

import org.junit.Test;

public class PairingPayloadTest {
    @Test
    public void readsTheQrUri() {
        PairingPayload p = PairingPayload.parse("connecfy://pair?server=https%3A%2F%2Fsms.example.com%2F&code=K7M2QX9D");
        assertEquals("https://sms.example.com", p.server);
        assertEquals("K7M2QX9D", p.code);
    }

    @Test
    public void roundTrips() {
        PairingPayload p = new PairingPayload("http://10.0.0.5:8000/gw", "ab2c-d3ef");
        assertEquals("connecfy://pair?server=http%3A%2F%2F10.0.0.5%3A8000%2Fgw&code=AB2CD3EF", p.toUri());
        PairingPayload back = PairingPayload.parse(p.toUri());
        assertEquals("http://10.0.0.5:8000/gw", back.server);
        assertEquals("AB2CD3EF", back.code);
    }

    @Test
    public void typedServersGetHttpsAndLoseTrailingSlashes() {
        assertEquals("https://sms.example.com", PairingPayload.normalizeServer(" sms.example.com// "));
        assertEquals("http://192.168.1.2:8000", PairingPayload.normalizeServer("http://192.168.1.2:8000/"));
    }

    @Test
    public void refusesWhatIsNotAPairing() {
        for (String bad : new String[] {"https://example.com", "connecfy://pair?server=https%3A%2F%2Fx",
                "connecfy://pair?code=ABC", "", "connecfy://pair?server=ftp%3A%2F%2Fx&code=ABC",
                "connecfy://pair?server=https%3A%2F%2Fx&code=AB%2FC", "connecfy://pair?server=%zz&code=A"}) {
            try {
                PairingPayload.parse(bad);
                fail("accepted " + bad);
            } catch (IllegalArgumentException expected) {
                // a sentence for the user
            }
        }
    }
}
