package com.connecfy.core;

import java.io.IOException;

import org.json.JSONException;

/**
 * This phone's pairing: the credentials kept in private storage after registering, and
 * forgetting them ("unpair", or the server said the token is no longer valid). The
 * credentials are read once and kept in memory, so asking costs no disk read (the main
 * screen and the engine ask often); every change goes through this object.
 */
public final class Pairing {
    static final String DOCUMENT = "device.json";

    private final Storage storage;
    /**
     * What is stored, once read: read without the lock, so the screen never waits for a
     * write in progress (which holds the lock while the disk works).
     */
    private volatile Loaded loaded;

    /** The stored credentials (null: not paired), or why they could not be read. */
    private static final class Loaded {
        final DeviceCredentials credentials;
        final UnreadableDocumentException unreadable;

        Loaded(DeviceCredentials credentials, UnreadableDocumentException unreadable) {
            this.credentials = credentials;
            this.unreadable = unreadable;
        }
    }

    public Pairing(Storage storage) {
        this.storage = storage;
    }

    /**
     * The stored credentials, or null when the phone is not paired. Reads the disk the
     * first time only; after that it neither reads nor waits for a write in progress.
     */
    public DeviceCredentials load() throws IOException {
        Loaded known = loaded;
        if (known == null) {
            known = read();
        }
        if (known.unreadable != null) {
            throw known.unreadable;
        }
        return known.credentials;
    }

    private synchronized Loaded read() throws IOException {
        if (loaded == null) {
            String text = storage.read(DOCUMENT);
            DeviceCredentials credentials = null;
            UnreadableDocumentException unreadable = null;
            if (text != null) {
                try {
                    credentials = DeviceCredentials.fromJson(text);
                } catch (JSONException e) {
                    unreadable = new UnreadableDocumentException(DOCUMENT, e);
                }
            }
            loaded = new Loaded(credentials, unreadable);
        }
        return loaded;
    }

    /** Whether the stored pairing is the one of {@code deviceId} (false when unreadable). */
    public boolean isPairedAs(String deviceId) {
        try {
            DeviceCredentials stored = load();
            return stored != null && stored.deviceId.equals(deviceId);
        } catch (IOException e) {
            return false;
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
        loaded = new Loaded(credentials, null);
    }

    /**
     * Keeps new credentials; when they are another device's than the stored ones, the
     * reports (received SMS among them) and part results of the old token go: the new
     * device may belong to another account.
     */
    synchronized void replace(DeviceCredentials credentials, Outbox outbox, SendResults results)
            throws IOException {
        if (!isPairedAs(credentials.deviceId)) {
            outbox.clear();
            results.clear();
        }
        save(credentials);
    }

    /**
     * Forgets the token, and the reports (received SMS among them) and part results that
     * only that token could deliver, if the stored pairing is {@code deviceId}'s (null: whatever is stored); the
     * pairing of another device is never touched. Sent ids are kept: a message id is never
     * sent twice. True when a pairing was forgotten.
     */
    public synchronized boolean forget(String deviceId, Outbox outbox, SendResults results) throws IOException {
        if (deviceId != null && !isPairedAs(deviceId)) {
            return false;
        }
        storage.delete(DOCUMENT);
        loaded = new Loaded(null, null);
        outbox.clear();
        results.clear();
        return true;
    }
}
