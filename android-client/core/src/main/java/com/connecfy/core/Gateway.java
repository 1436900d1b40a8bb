package com.connecfy.core;

import java.io.IOException;
import java.util.Random;
import java.util.TimeZone;

/**
 * Everything the phone keeps, opened from one {@link Storage}: the pairing, the outbox,
 * the sent ids, the pacer's window, the per-part results, today's counts and the switch
 * for forwarding received SMS. The app
 * holds one per process and builds a {@link DeviceEngine} from it while paired.
 *
 * <p>A document that cannot be read is set aside (renamed to {@code <name>.unreadable})
 * and started afresh, so one damaged file does not keep the app from starting.
 */
public final class Gateway {
    /** Reports retry from ~1 s up to 5 min apart while the server is out of reach. */
    public static final Backoff OUTBOX_BACKOFF = new Backoff(2000, 5 * 60000);
    /** How long {@link #unpair(String, long)} tries to deliver the waiting reports and received SMS. */
    public static final long UNPAIR_DRAIN_MILLIS = 10000;
    static final String SET_ASIDE_SUFFIX = ".unreadable";

    public final Storage storage;
    public final Clock clock;
    public final Random random;
    public final Pairing pairing;
    public final Outbox outbox;
    public final SentIds sentIds;
    public final SendPacer pacer;
    public final DailyCounts counts;
    public final SendResults results;
    public final Forwarding forwarding;

    private DeviceEngine engine;
    /**
     * Held while one engine is swapped for another (or for none): the old one is stopped,
     * its running tick waited for, before anything else starts. Never taken by a tick.
     */
    private final Object engineSwap = new Object();

    public Gateway(Storage storage, Clock clock, TimeZone zone, Random random) throws IOException {
        this(storage, clock, zone, random, OUTBOX_BACKOFF, SendPacer.DEFAULT_PARTS_PER_WINDOW);
    }

    public Gateway(Storage storage, Clock clock, TimeZone zone, Random random, Backoff outboxBackoff,
            int partsPerMinute) throws IOException {
        this.storage = storage;
        this.clock = clock;
        this.random = random;
        this.pairing = new Pairing(storage);
        Outbox openedOutbox = null;
        SentIds openedSentIds = null;
        SendPacer openedPacer = null;
        DailyCounts openedCounts = null;
        SendResults openedResults = null;
        for (int attempt = 0; openedResults == null; attempt++) {
            try {
                openedOutbox = new Outbox(storage, clock, random, outboxBackoff);
                openedSentIds = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
                openedPacer = new SendPacer(storage, partsPerMinute, SendPacer.DEFAULT_WINDOW_MILLIS);
                openedCounts = new DailyCounts(storage, clock, zone);
                openedResults = new SendResults(storage, openedOutbox, openedCounts, clock);
            } catch (UnreadableDocumentException e) {
                if (attempt >= 5) {
                    throw e;
                }
                setAside(e.document);
            }
        }
        this.outbox = openedOutbox;
        this.sentIds = openedSentIds;
        this.pacer = openedPacer;
        this.counts = openedCounts;
        this.results = openedResults;
        this.forwarding = new Forwarding(storage, pairing, openedOutbox, clock);
        try {
            pairing.load(); // read now, so the screen never reads the disk for it
        } catch (UnreadableDocumentException e) {
            // The screen shows the phone as not paired; pairing again replaces the file.
        }
    }

    private void setAside(String document) throws IOException {
        String text = storage.read(document);
        if (text != null) {
            storage.write(document + SET_ASIDE_SUFFIX, text);
        }
        storage.delete(document);
    }

    /**
     * Registers with the code and keeps the new pairing: the engine of the old pairing is
     * stopped first (waiting for a running tick), and the reports only the old token could
     * deliver go. Blocks for the request: call it off the UI thread. The caller then starts
     * an engine for the new pairing (the app's service does on its next start command).
     */
    public DeviceCredentials pair(PairingPayload payload, String deviceName, String phoneNumber, String userAgent)
            throws IOException, ApiException {
        DeviceCredentials credentials = new ApiClient(payload.server, userAgent, clock)
            .register(payload.code, deviceName, phoneNumber);
        paired(credentials);
        return credentials;
    }

    void paired(DeviceCredentials credentials) throws IOException {
        synchronized (engineSwap) {
            stopEngine();
            pairing.replace(credentials, outbox, results);
        }
    }

    /** Stops the engine, if one runs, and waits for its running tick and poll. Under engineSwap. */
    private void stopEngine() {
        DeviceEngine running;
        synchronized (this) {
            running = engine;
            engine = null;
        }
        if (running != null) {
            running.stop();
        }
    }

    public DeviceEngine engine(DeviceCredentials credentials, String userAgent, SmsSender sender,
            Heartbeat.Source heartbeat, DeviceEngine.Config config, DeviceEngine.Listener listener) {
        return engine(credentials.deviceId, new ApiClient(credentials, userAgent, clock), sender, heartbeat, config,
            listener);
    }

    /**
     * A new engine for the device; the one before it (if any) is stopped first and its
     * running tick and poll waited for, so two engines never run at once (the service
     * stopped and started again, say). Blocks that long: call it off the UI thread.
     */
    DeviceEngine engine(String deviceId, DeviceApi api, SmsSender sender, Heartbeat.Source heartbeat,
            DeviceEngine.Config config, DeviceEngine.Listener listener) {
        synchronized (engineSwap) {
            stopEngine();
            DeviceEngine created = new DeviceEngine(api, outbox, sentIds, pacer, results, sender, heartbeat, clock,
                random, config, listener);
            created.bindTo(pairing, deviceId);
            synchronized (this) {
                engine = created;
            }
            return created;
        }
    }

    /**
     * Whether {@code running} is this gateway's engine, still active, for the stored
     * pairing. When not (the phone was paired again, or the engine stopped), the app
     * builds a new one.
     */
    public synchronized boolean isCurrent(DeviceEngine running) {
        return running != null && running == engine && running.isActive() && pairing.isPairedAs(running.deviceId());
    }

    /**
     * The user unpairs: stops the engine (waiting for a tick that is running, so nothing
     * is claimed or sent after this), tries for up to {@code timeoutMillis} to deliver the
     * status reports and received SMS still waiting while the token works, then forgets
     * the token. Blocks: call it off the UI thread. True when every report reached the server.
     */
    public boolean unpair(String userAgent, long timeoutMillis) throws IOException {
        DeviceCredentials credentials;
        try {
            credentials = pairing.load();
        } catch (IOException e) {
            credentials = null;
        }
        int timeout = (int) Math.max(1000, Math.min(timeoutMillis, 10000));
        DeviceApi api = credentials == null ? null
            : new ApiClient(credentials, userAgent, clock).timeouts(timeout, timeout);
        return unpair(api, timeoutMillis);
    }

    boolean unpair(DeviceApi api, long timeoutMillis) throws IOException {
        long deadline = clock.elapsedMillis() + timeoutMillis;
        DeviceCredentials credentials;
        try {
            credentials = pairing.load();
        } catch (IOException e) {
            credentials = null; // unreadable: forgotten whatever it says
        }
        synchronized (engineSwap) {
            stopEngine();
        }
        boolean delivered = true;
        try {
            if (api != null && outbox.size() > 0) {
                outbox.drainNow(api, deadline);
            }
            delivered = outbox.size() == 0;
        } finally {
            forget(credentials == null ? null : credentials.deviceId);
        }
        return delivered;
    }

    /**
     * Forgets the pairing of {@code deviceId} (null: whatever is stored) and what only its
     * token could report, at once; another device's pairing is left alone. True when a
     * pairing was forgotten. See {@link Pairing#forget}.
     */
    public boolean forget(String deviceId) throws IOException {
        return pairing.forget(deviceId, outbox, results);
    }
}
