package com.connecfy.core;

import java.io.IOException;
import java.util.Random;
import java.util.TimeZone;

/**
 * Everything the phone keeps, opened from one {@link Storage}: the pairing, the outbox,
 * the sent ids, the pacer's window, the per-part results and today's counts. The app
 * holds one per process and builds a {@link DeviceEngine} from it while paired.
 */
public final class Gateway {
    /** Status reports retry from ~1 s up to 5 min apart while the server is out of reach. */
    public static final Backoff OUTBOX_BACKOFF = new Backoff(2000, 5 * 60000);

    public final Storage storage;
    public final Clock clock;
    public final Random random;
    public final Pairing pairing;
    public final Outbox outbox;
    public final SentIds sentIds;
    public final SendPacer pacer;
    public final DailyCounts counts;
    public final SendResults results;

    public Gateway(Storage storage, Clock clock, TimeZone zone, Random random) throws IOException {
        this(storage, clock, zone, random, OUTBOX_BACKOFF, SendPacer.DEFAULT_PARTS_PER_WINDOW);
    }

    public Gateway(Storage storage, Clock clock, TimeZone zone, Random random, Backoff outboxBackoff,
            int partsPerMinute) throws IOException {
        this.storage = storage;
        this.clock = clock;
        this.random = random;
        this.pairing = new Pairing(storage);
        this.outbox = new Outbox(storage, clock, random, outboxBackoff);
        this.sentIds = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
        this.pacer = new SendPacer(storage, partsPerMinute, SendPacer.DEFAULT_WINDOW_MILLIS);
        this.counts = new DailyCounts(storage, clock, zone);
        this.results = new SendResults(storage, outbox, counts, clock);
    }

    public DeviceEngine engine(DeviceCredentials credentials, String userAgent, SmsSender sender,
            Heartbeat.Source heartbeat, DeviceEngine.Config config, DeviceEngine.Listener listener) {
        ApiClient api = new ApiClient(credentials, userAgent, clock);
        return new DeviceEngine(api, outbox, sentIds, pacer, results, sender, heartbeat, clock, random, config,
            listener);
    }

    /** Forgets the device token and what only it could report; see {@link Pairing#forget}. */
    public void unpair() throws IOException {
        pairing.forget(outbox, results);
    }
}
