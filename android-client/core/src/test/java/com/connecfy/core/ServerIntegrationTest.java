package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;
import static org.junit.Assume.assumeFalse;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.TimeZone;

import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * The core against a real {@code connecfy serve} over real HTTP: pairing with a code
 * made by the dashboard API, heartbeat, claim, sent/delivered/failed reports, a
 * redelivered message not sent twice, the outbox surviving a server restart, a
 * removed device unpairing the phone, received SMS reported once by their ref (skipped,
 * by assumption, against a server without the inbound endpoint: it answers 404), and the
 * long poll: instant delivery from a server that holds polls, the plain interval from one
 * that answers at once.
 *
 * <p>Needs {@code -Dconnecfy.bin=<path to connecfy>} and {@code -Dconnecfy.work=<empty dir>};
 * tests/e2e/test_android_core.py passes both. The server runs with 2 s leases so a redelivery
 * can be seen without waiting two minutes. Phones ask the server to hold their polls for
 * {@link #WAIT_SECONDS} only, so a poll with nothing to claim holds up a test for no longer.
 */
public class ServerIntegrationTest {
    private static final String USER_AGENT = "Connecfy-Android-test/1.0.0";
    private static final long LEASE_MILLIS = 2000;
    private static final int WAIT_SECONDS = 2;
    /** Each phone's SIMs: subscription 7 in slot 1 (its default SMS SIM), 8 in slot 2. */
    private static final int[] SIMS = {7, 8};

    private static ConnecfyServer server;
    private static Dashboard dashboard;
    private static File work;
    private static int phones;

    @BeforeClass
    public static void startServer() throws Exception {
        String binary = System.getProperty("connecfy.bin");
        String workDir = System.getProperty("connecfy.work");
        if (binary == null || workDir == null) {
            throw new IllegalStateException(
                "set -Dconnecfy.bin and -Dconnecfy.work (tests/e2e/test_android_core.py does)");
        }
        work = new File(workDir);
        server = new ConnecfyServer(binary, new File(work, "server"),
            Collections.singletonMap("CONNECFY_LEASE_SECONDS", String.valueOf(LEASE_MILLIS / 1000)));
        server.start();
        dashboard = new Dashboard(server.url);
        dashboard.signup("phone-owner@example.com", "correct horse battery");
    }

    @AfterClass
    public static void stopServer() throws Exception {
        if (server != null) {
            int status = server.stop();
            assertEquals("connecfy serve exits 0 on SIGTERM:\n" + server.output(), 0, status);
        }
    }

    /** One simulated phone: its own private storage, SMS stack and engine. */
    private static final class Phone {
        final File dir;
        final FakeClock clock;
        final List<String> handedToSms = new ArrayList<String>();
        /** The text each message in {@link #handedToSms} went out with. */
        final List<String> textsToSms = new ArrayList<String>();
        /** The passphrase in the app's settings (null: none). */
        volatile String passphrase;
        /** The subscription each message in {@link #handedToSms} went out from. */
        final List<Integer> sentFrom = new ArrayList<Integer>();
        final List<String> unpaired = new ArrayList<String>();
        Gateway gateway;
        DeviceCredentials credentials;
        DeviceEngine engine;

        Phone() throws IOException {
            this(new FakeClock(System.currentTimeMillis()));
        }

        Phone(FakeClock clock) throws IOException {
            this.clock = clock;
            dir = new File(work, "phone" + (++phones));
            open();
        }

        /** Opens everything from storage again, as the app does after a restart. */
        void open() throws IOException {
            gateway = new Gateway(new FileStorage(dir), clock, TimeZone.getTimeZone("UTC"), new Random(phones),
                new Backoff(500, 2000), 30);
            credentials = gateway.pairing.load();
            engine = credentials == null ? null : newEngine();
        }

        DeviceEngine newEngine() {
            SmsSender sms = new SmsSender() {
                @Override
                public String whyCannotSend() {
                    return null;
                }

                @Override
                public int countParts(String message) {
                    return 1;
                }

                @Override
                public SimChoice.Decision simFor(Task task) {
                    return SimChoice.forTask(task.simSlot, 2, SIMS, SIMS[0], SimChoice.DEFAULT,
                        new SimSlot.Lookup() {
                            @Override
                            public Integer slotOf(int subscriptionId) {
                                return subscriptionId == SIMS[0] ? 0 : subscriptionId == SIMS[1] ? 1 : null;
                            }
                        });
                }

                @Override
                public void send(Task task, int parts, SimChoice.Decision sim) {
                    handedToSms.add(task.id);
                    textsToSms.add(task.message);
                    sentFrom.add(sim.subscriptionId);
                }
            };
            Heartbeat.Source source = new Heartbeat.Source() {
                @Override
                public Heartbeat current() {
                    return new Heartbeat(81, "14", "1.0.0");
                }
            };
            DeviceEngine.Listener listener = new DeviceEngine.Listener() {
                @Override
                public void onUnpaired(String reason) {
                    unpaired.add(reason);
                }

                @Override
                public void onStatus(EngineStatus status) {
                }
            };
            DeviceEngine.Config config = new DeviceEngine.Config();
            config.longPollSeconds = WAIT_SECONDS;
            config.passphrase = new Envelope.Passphrase() {
                @Override
                public String get() {
                    return passphrase;
                }
            };
            return gateway.engine(credentials, USER_AGENT, sms, source, config, listener);
        }

        void pair(String name) throws Exception {
            String qr = new PairingPayload(server.url + "/", dashboard.pairingCode().toLowerCase()).toUri();
            credentials = gateway.pair(PairingPayload.parse(qr), name, "+15551234567", USER_AGENT);
            engine = newEngine();
        }

        /** Ticks the engine, moving the phone's clock over its waits, until the outbox is empty. */
        void drainOutbox() throws InterruptedException {
            long deadline = System.currentTimeMillis() + 15000;
            while (gateway.outbox.size() > 0) {
                if (System.currentTimeMillis() > deadline) {
                    fail("outbox did not drain: " + engine.status().lastError);
                }
                long wait = engine.tick();
                clock.advance(Math.min(wait, 2000));
                Thread.sleep(20);
            }
        }
    }

    @Test
    public void pairsWithARealCodeThatWorksOnce() throws Exception {
        String code = dashboard.pairingCode();
        Phone phone = new Phone();
        DeviceCredentials c = phone.gateway.pairing.pair(
            PairingPayload.parse(new PairingPayload(server.url, code).toUri()), "Pixel 7", "+15551234567",
            USER_AGENT, phone.clock);
        assertEquals(server.url, c.server);
        assertFalse(c.deviceToken.isEmpty());

        DeviceCredentials stored = new Pairing(new FileStorage(phone.dir)).load();
        assertEquals(c.deviceId, stored.deviceId);
        assertEquals(c.deviceToken, stored.deviceToken);
        JSONObject listed = dashboard.device(c.deviceId);
        assertEquals("Pixel 7", listed.getString("device_name"));
        assertEquals("+15551234567", listed.getString("phone_number"));

        try {
            new ApiClient(server.url, USER_AGENT, phone.clock).register(code, "Second phone", "");
            fail("a pairing code worked twice");
        } catch (ApiException e) {
            assertEquals(404, e.status());
            assertEquals("pairing_code_invalid", e.code());
            assertEquals(Disposition.FINAL, e.disposition());
        }
    }

    @Test
    public void heartbeatsClaimsAndReportsSentDeliveredAndFailed() throws Exception {
        Phone phone = new Phone();
        phone.pair("Office phone");
        String delivered = dashboard.send(phone.credentials.deviceId, "+15559998888", "Hello");
        String undelivered = dashboard.send(phone.credentials.deviceId, "+15559998888", "Hello again");
        String notSent = dashboard.send(phone.credentials.deviceId, "+15559998888", "And again");

        phone.engine.tick();
        assertEquals(Arrays.asList(delivered, undelivered, notSent), phone.handedToSms);
        assertEquals(3, phone.engine.status().lastPollCount);
        JSONObject device = dashboard.device(phone.credentials.deviceId);
        assertTrue(device.getBoolean("online"));
        assertEquals(81, device.getInt("battery"));
        assertEquals("14", device.getString("android_version"));
        assertEquals("1.0.0", device.getString("app_version"));
        assertEquals("claimed", dashboard.message(delivered).getString("status"));

        // What SmsManager's broadcasts would say:
        SendResults results = phone.gateway.results;
        results.partSent(delivered, 0, SmsErrors.RESULT_OK);
        results.partDelivered(delivered, 0, 0x00);
        results.partSent(undelivered, 0, SmsErrors.RESULT_OK);
        results.partDelivered(undelivered, 0, 0x41);
        results.partSent(notSent, 0, 1); // RESULT_ERROR_GENERIC_FAILURE: final
        phone.gateway.outbox.add("01JAAAAAAAAAAAAAAAAAAAAAAA", Outbox.SENT, ""); // unknown to the server: 404
        phone.drainOutbox();

        JSONObject m1 = dashboard.message(delivered);
        assertEquals("delivered", m1.getString("status"));
        assertEquals(Arrays.asList("queued", "claimed", "sent", "delivered"), statuses(m1.getJSONArray("timeline")));
        JSONObject m2 = dashboard.message(undelivered);
        assertEquals("failed", m2.getString("status"));
        assertEquals("DELIVERY_FAILED (TP-Status 0x41)", m2.getString("error"));
        assertEquals(Arrays.asList("queued", "claimed", "sent", "failed"), statuses(m2.getJSONArray("timeline")));
        JSONObject m3 = dashboard.message(notSent);
        assertEquals("failed", m3.getString("status"));
        assertEquals("RESULT_ERROR_GENERIC_FAILURE (1)", m3.getString("error"));
        assertEquals("the sent report names the SIM that sent it", 1, m1.getInt("sim_slot"));
        assertEquals(2, phone.gateway.counts.sentToday());
        assertEquals(2, phone.gateway.counts.failedToday());
        assertTrue(phone.unpaired.isEmpty());
    }

    @Test
    public void aMessageGoesFromTheSimItNamesAndARetryableFailurePutsItBack() throws Exception {
        Phone phone = new Phone();
        phone.pair("Dual-SIM phone");
        String device = phone.credentials.deviceId;
        String fromSim2 = dashboard.send(device, "+15559998888", "From SIM 2", 2);
        String anySim = dashboard.send(device, "+15559998888", "From any SIM", null);
        String noService = dashboard.send(device, "+15559998888", "No service on SIM 2", 2);
        String noSim3 = dashboard.send(device, "+15559998888", "From SIM 3", 3);

        phone.engine.tick();
        assertEquals(Arrays.asList(fromSim2, anySim, noService), phone.handedToSms);
        assertEquals("each from its SIM: 8 sits in slot 2", Arrays.asList(SIMS[1], SIMS[0], SIMS[1]), phone.sentFrom);
        SendResults results = phone.gateway.results;
        results.partSent(fromSim2, 0, SmsErrors.RESULT_OK);
        results.partSent(anySim, 0, SmsErrors.RESULT_OK);
        results.partSent(noService, 0, 4); // RESULT_ERROR_NO_SERVICE
        phone.drainOutbox();

        JSONObject sent = dashboard.message(anySim);
        assertEquals("sent", sent.getString("status"));
        assertEquals("the SIM that sent it, though the sender named none", 1, sent.getInt("sim_slot"));
        assertEquals(2, dashboard.message(fromSim2).getInt("sim_slot"));
        JSONObject putBack = dashboard.message(noService);
        assertEquals("queued", putBack.getString("status"));
        assertEquals(Arrays.asList("queued", "claimed", "queued"), statuses(putBack.getJSONArray("timeline")));
        assertEquals("RESULT_ERROR_NO_SERVICE (4)", putBack.getString("error"));
        JSONObject refused = dashboard.message(noSim3);
        assertEquals("failed", refused.getString("status"));
        assertEquals("sim_slot_unavailable (SIM 3: the phone has 2 SIM slots)", refused.getString("error"));
        assertTrue(phone.gateway.results.isPutBack(noService));
    }

    @Test
    public void anEncryptedMessageIsDecryptedBeforeSendingAndAWrongPassphraseFailsItForGood() throws Exception {
        JSONArray vectors = EnvelopeTest.vectors().getJSONArray("vectors");
        JSONObject first = vectors.getJSONObject(5);
        JSONObject second = vectors.getJSONObject(3);
        Phone phone = new Phone();
        phone.pair("Encrypting phone");
        String device = phone.credentials.deviceId;
        phone.passphrase = first.getString("passphrase");
        String opened = dashboard.sendEncrypted(device, "+15559998888", first.getString("envelope"));
        phone.engine.tick();
        assertEquals(Arrays.asList(opened), phone.handedToSms);
        assertEquals(Arrays.asList(first.getString("plaintext")), phone.textsToSms);
        phone.gateway.results.partSent(opened, 0, SmsErrors.RESULT_OK);
        phone.drainOutbox();
        JSONObject sent = dashboard.message(opened);
        assertEquals("sent", sent.getString("status"));
        assertTrue(sent.getBoolean("encrypted"));
        assertEquals("the server still holds only the envelope", first.getString("envelope"), sent.getString("message"));
        assertEquals("the count the phone made (one part here) replaced the upper bound", 1, sent.getInt("segments"));

        // The second was made with another passphrase than the phone's.
        String refused = dashboard.sendEncrypted(device, "+15559998888", second.getString("envelope"));
        long deadline = System.currentTimeMillis() + 15000;
        while (phone.gateway.outbox.size() == 0 && System.currentTimeMillis() < deadline) {
            phone.clock.advance(Math.min(phone.engine.tick(), 2000));
            Thread.sleep(20);
        }
        phone.drainOutbox();
        assertEquals("not handed to SmsManager", Arrays.asList(opened), phone.handedToSms);
        JSONObject failed = dashboard.message(refused);
        assertEquals("failed", failed.getString("status"));
        assertEquals(Envelope.DECRYPT_FAILED, failed.getString("error"));
        assertEquals("final, not put back", Arrays.asList("queued", "claimed", "failed"),
            statuses(failed.getJSONArray("timeline")));
    }

    @Test
    public void aRedeliveredMessageIsNotSentAgainAfterAnAppRestart() throws Exception {
        Phone phone = new Phone();
        phone.pair("Restarting phone");
        String id = dashboard.send(phone.credentials.deviceId, "+15559998888", "Only once");
        phone.engine.tick();
        assertEquals(Arrays.asList(id), phone.handedToSms);

        phone.open(); // the app restarts before the sent broadcast; the lease runs out meanwhile
        Thread.sleep(LEASE_MILLIS + 500);
        phone.engine.tick();
        assertEquals(1, phone.engine.status().lastPollCount);
        assertEquals("the server handed it out again", 1, phone.engine.status().duplicatesSkipped);
        assertEquals("and it was not sent again", Arrays.asList(id), phone.handedToSms);

        phone.gateway.results.partSent(id, 0, SmsErrors.RESULT_OK); // the broadcast, after the restart
        phone.drainOutbox();
        assertEquals("sent", dashboard.message(id).getString("status"));
    }

    @Test
    public void theOutboxDrainsAfterTheServerComesBack() throws Exception {
        Phone phone = new Phone();
        phone.pair("Patient phone");
        String first = dashboard.send(phone.credentials.deviceId, "+15559998888", "One");
        String second = dashboard.send(phone.credentials.deviceId, "+15559998888", "Two");
        phone.engine.tick();
        assertEquals(Arrays.asList(first, second), phone.handedToSms);

        assertEquals(0, server.stop());
        try {
            SendResults results = phone.gateway.results;
            results.partSent(first, 0, SmsErrors.RESULT_OK);
            results.partDelivered(first, 0, 0x00);
            results.partSent(second, 0, 4);
            long offlineUntil = phone.clock.now() + 46000; // past the server's presence window
            while (phone.clock.now() < offlineUntil) {
                phone.clock.advance(Math.max(1, Math.min(phone.engine.tick(), offlineUntil - phone.clock.now())));
            }
            assertEquals("nothing is lost while the server is away", 3, phone.gateway.outbox.size());
            assertNotNull(phone.engine.status().lastError);
            assertFalse(phone.engine.status().isOnline(phone.clock.now()));

            phone.open(); // and the app restarts while offline
            assertEquals(3, phone.gateway.outbox.size());
            phone.clock.advance(phone.engine.tick());
            assertEquals(3, phone.gateway.outbox.size());
        } finally {
            server.start();
        }
        phone.drainOutbox();
        assertEquals("delivered", dashboard.message(first).getString("status"));
        JSONObject putBack = dashboard.message(second);
        assertEquals("the failure stayed retryable through the restart: the message was put back", "queued",
            putBack.getString("status"));
        assertEquals("RESULT_ERROR_NO_SERVICE (4)", putBack.getString("error"));
        for (int i = 0; i < 10 && !phone.engine.status().isOnline(phone.clock.now()); i++) {
            phone.clock.advance(Math.min(phone.engine.tick(), 60000)); // the next heartbeat after its backoff
        }
        assertTrue("heartbeats resume", phone.engine.status().isOnline(phone.clock.now()));
        assertTrue(dashboard.device(phone.credentials.deviceId).getBoolean("online"));
    }

    @Test
    public void removingTheDeviceUnpairsThePhone() throws Exception {
        Phone phone = new Phone();
        phone.pair("Lost phone");
        phone.engine.tick();
        assertTrue(phone.unpaired.isEmpty());
        dashboard.removeDevice(phone.credentials.deviceId);
        phone.gateway.outbox.add("01REPORTWAITING", Outbox.SENT, "");
        phone.clock.advance(phone.engine.tick()); // the server's first refusal of the token
        assertTrue("one refusal is not enough", phone.unpaired.isEmpty());
        assertFalse(phone.engine.status().unpaired);
        assertEquals("the outbox is kept after one refusal", 1, phone.gateway.outbox.size());
        for (int i = 0; i < 5 && phone.unpaired.isEmpty(); i++) {
            phone.clock.advance(Math.min(phone.engine.tick(), 60000)); // asked again after a backoff
        }
        assertEquals(1, phone.unpaired.size());
        assertTrue(phone.unpaired.get(0), phone.unpaired.get(0).contains("not_authenticated"));
        assertTrue(phone.engine.status().unpaired);
        assertNull("the engine forgot its own pairing", new Pairing(new FileStorage(phone.dir)).load());
        assertEquals(0, phone.gateway.outbox.size());
    }

    @Test
    public void receivedSmsReachTheServerOnceByTheirRef() throws Exception {
        Phone phone = new Phone();
        phone.pair("Two-way phone");
        List<InboundSms.Part> parts = Arrays.asList(new InboundSms.Part("+15557654321", "Part one, "),
            new InboundSms.Part("+15557654321", "part two."));
        Forwarding.Result received = phone.gateway.forwarding.receive(parts, 0);
        assertEquals(Forwarding.Outcome.QUEUED, received.outcome);
        phone.engine.tick();
        String error = phone.engine.status().lastError;
        assumeFalse("the server has no inbound endpoint (" + error + ")",
            phone.gateway.outbox.inboundSize() == 1 && error != null && error.contains("HTTP 404"));
        assertEquals(error, 0, phone.gateway.outbox.size());

        ApiClient client = new ApiClient(phone.credentials, USER_AGENT, phone.clock);
        String id = client.reportInbound(received.sms); // sent again, as after a lost answer
        assertFalse(id.isEmpty());
        assertEquals("the same ref, the same id", id, client.reportInbound(received.sms));

        // A sender the server does not take: dropped, not retried.
        received = phone.gateway.forwarding.receive(
            Arrays.asList(new InboundSms.Part("not a sender name at all", "Hello")), null);
        assertEquals(Forwarding.Outcome.QUEUED, received.outcome);
        phone.clock.advance(phone.engine.tick());
        assertEquals(0, phone.gateway.outbox.size());
        assertTrue(phone.engine.status().lastError, phone.engine.status().lastError.contains("HTTP 400"));
        assertTrue(phone.unpaired.isEmpty());
    }

    @Test
    public void longPollsAndFallsBackToThePlainIntervalWhenTheServerAnswersAtOnce() throws Exception {
        final Phone phone = new Phone(FakeClock.movingWithRealTime(System.currentTimeMillis()));
        phone.pair("Instant phone");
        // Does this server hold a poll with nothing to claim?
        long started = System.nanoTime();
        ApiClient client = new ApiClient(phone.credentials, USER_AGENT, phone.clock);
        assertTrue(client.claimTasks(10, WAIT_SECONDS).isEmpty());
        long tookMillis = (System.nanoTime() - started) / 1000000L;
        boolean holds = tookMillis >= WAIT_SECONDS * 1000 / 2;

        phone.engine.tick(); // a heartbeat, then a poll with nothing to claim
        EngineStatus status = phone.engine.status();
        assertEquals("instant delivery when the server held the poll (" + tookMillis + " ms)", holds, status.instant);
        assertTrue(status.isOnline(phone.clock.now()));
        assertEquals(0, status.lastPollCount);

        // A message queued while the phone polls.
        final String[] queued = new String[1];
        Thread dashboardUser = new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    Thread.sleep(WAIT_SECONDS * 1000 / 4);
                    queued[0] = dashboard.send(phone.credentials.deviceId, "+15559998888", "Instant");
                } catch (Exception e) {
                    queued[0] = "not queued: " + e;
                }
            }
        });
        dashboardUser.start();
        phone.engine.tick();
        dashboardUser.join();
        if (holds) {
            // The poll the server held took the message as it was queued.
            assertEquals(Arrays.asList(queued[0]), phone.handedToSms);
        } else {
            // A server that answers at once: the next poll comes after the plain interval.
            assertTrue(phone.handedToSms.isEmpty());
            long wait = new DeviceEngine.Config().pollMillis;
            assertTrue(status.nextPollAt - status.lastPollAt >= wait - 1000);
            phone.clock.advance(wait);
            phone.engine.tick();
            assertEquals(Arrays.asList(queued[0]), phone.handedToSms);
            assertFalse(phone.engine.status().instant);
        }
        assertEquals("claimed", dashboard.message(queued[0]).getString("status"));
    }

    private static List<String> statuses(JSONArray timeline) throws JSONException {
        List<String> out = new ArrayList<String>();
        for (int i = 0; i < timeline.length(); i++) {
            out.add(timeline.getJSONObject(i).getString("status"));
        }
        return out;
    }
}
