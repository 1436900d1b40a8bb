package com.connecfy.core;

import java.io.IOException;

import org.json.JSONException;

/**
 * This phone's pairing: the credentials kept in private storage after registering, and
 * forgetting them ("unpair", or the server said the token is no longer valid).
 */
public final class Pairing {
    static final String DOCUMENT = "device.json";

    private final Storage storage;

    public Pairing(Storage storage) {
        this.storage = storage;
    }

    /** The stored credentials, or null when the phone is not paired. */
    public synchronized DeviceCredentials load() throws IOException {
        String text = storage.read(DOCUMENT);
        if (text == null) {
            return null;
        }
        try {
            return DeviceCredentials.fromJson(text);
        } catch (JSONException e) {
            throw new UnreadableDocumentException(DOCUMENT, e);
        }
    }

    /**
     * Registers with the code and keeps the credentials. The request (up to the client's
     * timeouts) runs without holding this object's lock, so {@link #load} never waits for it.
     */
    public DeviceCredentials pair(PairingPayload payload, String deviceName, String phoneNumber,
            String userAgent, Clock clock) throws IOException, ApiException {
        DeviceCredentials credentials = new ApiClient(payload.server, userAgent, clock)
            .register(payload.code, deviceName, phoneNumber);
        save(credentials);
        return credentials;
    }

    public synchronized void save(DeviceCredentials credentials) throws IOException {
        try {
            storage.write(DOCUMENT, credentials.toJson());
        } catch (JSONException e) {
            throw new IOException(e.getMessage(), e);
        }
    }

    /**
     * Forgets the token, and the reports and part results that only that token could
     * deliver. Sent ids are kept: a message id is never sent twice.
     */
    public synchronized void forget(Outbox outbox, SendResults results) throws IOException {
        storage.delete(DOCUMENT);
        outbox.clear();
        results.clear();
    }
}
