package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.TimeZone;

import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * Received SMS: the forwarding switch, queueing on disk, and reporting them from the
 * engine's loop through the outbox, against a scripted server that stores by ref.
 */
public class ForwardingTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    private static final long T0 = 1700000000000L;

    private FakeClock clock;
    private FakeApi api;
    private FailingStorage storage;
    private Gateway gateway;
    private DeviceEngine engine;
    private final List<String> dropped = new ArrayList<String>();
    private final List<String> unpaired = new ArrayList<String>();

    @Before
    public void setUp() throws Exception {
        clock = new FakeClock(T0);
        api = new FakeApi(clock);
        storage = new FailingStorage(TempDir.storage(folder, "phone"));
        storage.write(Pairing.DOCUMENT,
            new DeviceCredentials("http://127.0.0.1:1", "dev1", "token", "Phone", 0).toJson());
        open();
    }

    /** Opens the phone's state and an engine, as the app does after a restart. */
    private void open() throws IOException {
        gateway = new Gateway(storage, clock, TimeZone.getTimeZone("UTC"), new Random(1), new Backoff(1000, 60000),
            30);
        engine = gateway.engine("dev1", api, new RecordingSender(clock), new Heartbeat.Source() {
            @Override
            public Heartbeat current() {
                return new Heartbeat(50, "14", "1.0.0");
            }
        }, new DeviceEngine.Config(), new DeviceEngine.Listener() {
            @Override
            public void onUnpaired(String reason) {
                unpaired.add(reason);
            }

            @Override
            public void onStatus(EngineStatus status) {
            }

            @Override
            public void onDropped(String line) {
                dropped.add(line);
            }
        });
    }

    /** Runs the engine as the service does, for {@code millis} of passing time. */
    private void runFor(long millis) {
        long end = clock.elapsedMillis() + millis;
        for (int i = 0; i < 100000 && clock.elapsedMillis() < end; i++) {
            long wait = engine.tick();
            clock.advance(Math.max(1, Math.min(wait, end - clock.elapsedMillis())));
        }
    }

    private static List<InboundSms.Part> sms(String from, String... bodies) {
        List<InboundSms.Part> parts = new ArrayList<InboundSms.Part>();
        for (String body : bodies) {
            parts.add(new InboundSms.Part(from, body));
        }
        return parts;
    }

    private InboundSms receive(String from, String... bodies) throws IOException {
        Forwarding.Result r = gateway.forwarding.receive(sms(from, bodies), 1);
        assertEquals(r.toString(), Forwarding.Outcome.QUEUED, r.outcome);
        return r.sms;
    }

    @Test
    public void aReceivedSmsIsQueuedOnDiskAndReportedFromTheEnginesLoop() throws Exception {
        clock.advance(123);
        InboundSms queued = receive("+15557654321", "Part one, ", "part two.");
        assertEquals("+15557654321", queued.from);
        assertEquals("Part one, part two.", queued.message);
        assertEquals(T0 + 123, queued.receivedAt);
        assertEquals(Integer.valueOf(1), queued.simSlot);
        assertEquals(1, gateway.outbox.inboundSize());

        open(); // the app restarts before the engine reported it
        assertEquals(1, gateway.outbox.inboundSize());
        InboundSms reopened = gateway.outbox.pending().get(0).inbound;
        assertEquals(queued.ref, reopened.ref);
        assertEquals(queued.from, reopened.from);
        assertEquals(queued.message, reopened.message);
        assertEquals(queued.receivedAt, reopened.receivedAt);
        assertEquals(queued.simSlot, reopened.simSlot);

        engine.tick();
        assertEquals(Arrays.asList("201 IN1"), api.inboundAnswers);
        assertEquals("Part one, part two.", api.inboundStored.get(queued.ref).message);
        assertEquals(0, gateway.outbox.size());
        open();
        assertEquals("its leaving is on disk too", 0, gateway.outbox.size());
        assertNull(engine.status().lastError);
    }

    @Test
    public void twoIdenticalSmsInTheSameSecondAreTwoSmsWithTheirOwnRefs() throws Exception {
        InboundSms first = receive("BANK", "Your code is 1234");
        InboundSms second = receive("BANK", "Your code is 1234");
        assertFalse(first.ref.equals(second.ref));
        runFor(1000);
        assertEquals(Arrays.asList(first.ref, second.ref), new ArrayList<String>(api.inboundStored.keySet()));
        assertEquals(Arrays.asList("201 IN1", "201 IN2"), api.inboundAnswers);
    }

    @Test
    public void theRefStaysTheSameAcrossRetriesAndRestarts() throws Exception {
        InboundSms queued = receive("+15557654321", "Hello");
        for (int i = 0; i < 3; i++) {
            api.inboundScript.add(new IOException("network down"));
            engine.tick();
            assertEquals(1, gateway.outbox.inboundSize());
            open(); // and the app restarts between tries
            clock.advance(gateway.outbox.nextAttemptAt() - clock.elapsedMillis());
        }
        engine.tick();
        assertEquals(Arrays.asList(queued.ref, queued.ref, queued.ref, queued.ref), api.inboundRefs);
        assertEquals(Arrays.asList("201 IN1"), api.inboundAnswers);
        assertEquals(0, gateway.outbox.size());
    }

    @Test
    public void aServiceUnavailableWithRetryAfterIsTriedAgainAfterItOldestFirst() throws Exception {
        InboundSms older = receive("+15550000001", "first");
        clock.advance(10);
        InboundSms newer = receive("+15550000002", "second");
        api.inboundScript.add(FakeApi.unavailable(30000));
        engine.tick();
        assertEquals("the drain stops at the server's 503", Arrays.asList(older.ref), api.inboundRefs);
        assertTrue(engine.status().lastError, engine.status().lastError.contains("503"));

        runFor(29000);
        assertEquals("nothing before Retry-After", 1, api.inboundRefs.size());
        assertEquals(2, gateway.outbox.inboundSize());
        runFor(60000);
        assertEquals(Arrays.asList(older.ref, older.ref, newer.ref), api.inboundRefs);
        assertEquals(Arrays.asList("201 IN1", "201 IN2"), api.inboundAnswers);
        assertEquals(Arrays.asList(older.ref, newer.ref), new ArrayList<String>(api.inboundStored.keySet()));
        assertEquals(0, gateway.outbox.size());
        assertTrue(dropped.isEmpty());
    }

    @Test
    public void aBadRequestIsDroppedWithALogLineAndTheNextOneGoes() throws Exception {
        InboundSms refused = receive("a-sender-name-far-too-long", "Hello");
        InboundSms fine = receive("+15557654321", "Hello");
        api.inboundScript.add(FakeApi.badInput("from is not a phone number or sender name"));
        engine.tick();
        assertEquals(Arrays.asList(refused.ref, fine.ref), api.inboundRefs);
        assertEquals(Arrays.asList(fine.ref), new ArrayList<String>(api.inboundStored.keySet()));
        assertEquals(0, gateway.outbox.size());
        assertEquals(1, dropped.size());
        assertTrue(dropped.get(0), dropped.get(0).contains(refused.ref));
        assertTrue(dropped.get(0), dropped.get(0).contains("HTTP 400 invalid_request"));
        assertFalse("the log line names no sender", dropped.get(0).contains(refused.from));

        open();
        runFor(60000);
        assertEquals("never tried again", 2, api.inboundRefs.size());
    }

    @Test
    public void anSmsTheServerStoredIsSentAgainWithItsRefAfterTheAnswerWasLost() throws Exception {
        InboundSms queued = receive("+15557654321", "Hello");
        api.inboundScript.add(FakeApi.ANSWER_LOST);
        engine.tick();
        assertEquals("stored, but the phone does not know it", 1, api.inboundStored.size());
        assertEquals(1, gateway.outbox.inboundSize());
        runFor(5000);
        assertEquals(Arrays.asList(queued.ref, queued.ref), api.inboundRefs);
        assertEquals("the server knew the ref: the same id, nothing stored twice", Arrays.asList("200 IN1"),
            api.inboundAnswers);
        assertEquals(1, api.inboundStored.size());
        assertEquals(0, gateway.outbox.size());
    }

    @Test
    public void anSmsIsSentAgainWithItsRefWhenTheAppDiedBeforeRecordingTheAnswer() throws Exception {
        InboundSms queued = receive("+15557654321", "Hello");
        storage.failWrites.add(Outbox.INBOUND_DOCUMENT); // the app dies before the answer is on disk
        engine.tick();
        assertEquals(Arrays.asList("201 IN1"), api.inboundAnswers);
        assertTrue(engine.status().lastError, engine.status().lastError.startsWith("storage: "));

        storage.failWrites.clear();
        open();
        assertEquals("still on disk after the restart", 1, gateway.outbox.inboundSize());
        assertEquals(queued.ref, gateway.outbox.pending().get(0).inbound.ref);
        engine.tick();
        assertEquals(Arrays.asList(queued.ref, queued.ref), api.inboundRefs);
        assertEquals(Arrays.asList("201 IN1", "200 IN1"), api.inboundAnswers);
        assertEquals(1, api.inboundStored.size());
        assertEquals(0, gateway.outbox.size());
    }

    @Test
    public void withTheSwitchOffReceivedSmsAreNotQueuedAtAll() throws Exception {
        assertTrue("on until turned off", gateway.forwarding.isEnabled());
        InboundSms before = receive("+15557654321", "received while on");
        gateway.forwarding.setEnabled(false);
        Forwarding.Result r = gateway.forwarding.receive(sms("+15557654321", "received while off"), 0);
        assertEquals(Forwarding.Outcome.OFF, r.outcome);
        assertNull(r.sms);
        assertEquals(1, gateway.outbox.inboundSize());

        open();
        assertFalse("the switch is kept on disk", gateway.forwarding.isEnabled());
        assertEquals(Forwarding.Outcome.OFF, gateway.forwarding.receive(sms("+15557654321", "still off"), 0).outcome);
        runFor(5000);
        assertEquals("what was queued before still goes", Arrays.asList(before.ref),
            new ArrayList<String>(api.inboundStored.keySet()));

        gateway.forwarding.setEnabled(true);
        open();
        assertTrue(gateway.forwarding.isEnabled());
        receive("+15557654321", "on again");
        assertEquals(1, gateway.outbox.inboundSize());
    }

    @Test
    public void anUnreadableSwitchCountsAsOff() throws Exception {
        storage.write(Forwarding.DOCUMENT, "{\"enab");
        open();
        assertFalse(gateway.forwarding.isEnabled());
        assertEquals(Forwarding.Outcome.OFF, gateway.forwarding.receive(sms("+15557654321", "Hello"), 0).outcome);
        gateway.forwarding.setEnabled(true);
        open();
        assertTrue(gateway.forwarding.isEnabled());
    }

    @Test
    public void anSmsWithoutASenderOrTextOrAPairingIsNotQueued() throws Exception {
        assertEquals(Forwarding.Outcome.NO_SENDER, gateway.forwarding.receive(sms(" ", "Hello"), 0).outcome);
        assertEquals(Forwarding.Outcome.NO_SENDER, gateway.forwarding.receive(sms(null, "Hello"), 0).outcome);
        assertEquals(Forwarding.Outcome.EMPTY, gateway.forwarding.receive(sms("+15557654321", "", null), 0).outcome);
        assertEquals(Forwarding.Outcome.NO_SENDER,
            gateway.forwarding.receive(Collections.<InboundSms.Part>emptyList(), 0).outcome);
        assertTrue(gateway.forget("dev1"));
        assertEquals(Forwarding.Outcome.NOT_PAIRED,
            gateway.forwarding.receive(sms("+15557654321", "Hello"), 0).outcome);
        assertEquals(0, gateway.outbox.size());
    }

    @Test
    public void aServerWithoutTheInboundEndpointKeepsTheSmsWhileStatusReportsGoOn() throws Exception {
        InboundSms first = receive("+15550000001", "first");
        InboundSms second = receive("+15550000002", "second");
        gateway.outbox.add("m1", Outbox.SENT, "");
        api.inboundScript.add(FakeApi.status(404));
        engine.tick();
        assertEquals("one request for all the received SMS", Arrays.asList(first.ref), api.inboundRefs);
        assertEquals(Arrays.asList("m1 sent"), api.reports);
        assertEquals(2, gateway.outbox.inboundSize());
        assertTrue(dropped.isEmpty());

        for (int i = 0; i < 20; i++) {
            api.inboundScript.add(FakeApi.status(404));
        }
        runFor(30000);
        assertEquals("never dropped", 2, gateway.outbox.inboundSize());
        // Steps of 0.5-1, 1-2, 2-4, 4-8, 8-16 s: at most 6 requests in 30 s (one per SMS per step would be 12).
        assertTrue("one request per backoff step: " + api.inboundRefs,
            api.inboundRefs.size() >= 4 && api.inboundRefs.size() <= 6);
        api.inboundScript.clear(); // the server was upgraded
        runFor(120000);
        assertEquals(Arrays.asList(first.ref, second.ref), new ArrayList<String>(api.inboundStored.keySet()));
        assertEquals(0, gateway.outbox.size());
        assertTrue(dropped.isEmpty());
    }

    @Test
    public void theServersRefusalOfTheTokenKeepsTheSmsAndTwoUnpair() throws Exception {
        runFor(1000); // the first heartbeat and poll, answered
        receive("+15557654321", "Hello");
        api.inboundScript.add(FakeApi.notAuthenticated());
        engine.tick();
        assertEquals(1, gateway.outbox.inboundSize());
        assertTrue(unpaired.isEmpty());
        api.heartbeatScript.add(FakeApi.notAuthenticated());
        runFor(10000);
        assertEquals(1, unpaired.size());
        assertNull("the engine forgot its pairing", gateway.pairing.load());
        assertEquals("and the SMS only its token could report", 0, gateway.outbox.size());
        assertTrue(api.inboundStored.isEmpty());
    }

    @Test
    public void atMostTheCapWaitsAndTheOldestGoes() throws Exception {
        gateway.outbox.maxInbound = 3;
        List<String> refs = new ArrayList<String>();
        for (int i = 1; i <= 3; i++) {
            refs.add(receive("+1555000000" + i, "sms " + i).ref);
        }
        Forwarding.Result r = gateway.forwarding.receive(sms("+15550000004", "sms 4"), null);
        assertEquals(Forwarding.Outcome.QUEUED, r.outcome);
        assertEquals(refs.get(0), r.pushedOut.ref);
        assertTrue(r.toString(), r.toString().contains(refs.get(0)));
        assertEquals(3, gateway.outbox.inboundSize());
        runFor(1000);
        assertEquals(Arrays.asList(refs.get(1), refs.get(2), r.sms.ref),
            new ArrayList<String>(api.inboundStored.keySet()));
        assertNull("no slot known, none sent", api.inboundStored.get(r.sms.ref).simSlot);
    }

    @Test
    public void unpairingTriesTheWaitingSmsBeforeForgettingTheToken() throws Exception {
        InboundSms queued = receive("+15557654321", "Hello");
        api.inboundScript.add(new IOException("network down"));
        engine.tick(); // backing off now; unpairing does not wait for that
        assertTrue(gateway.unpair(api, 10000));
        assertEquals(Arrays.asList(queued.ref, queued.ref), api.inboundRefs);
        assertEquals(1, api.inboundStored.size());
        assertNull(gateway.pairing.load());
    }

    @Test
    public void pairingAsAnotherDeviceDropsTheOldPairingsSms() throws Exception {
        receive("+15557654321", "Hello");
        gateway.paired(new DeviceCredentials("http://127.0.0.1:2", "dev2", "token2", "Phone", 0));
        assertEquals(0, gateway.outbox.size());
        open();
        assertEquals(0, gateway.outbox.size());
    }

    @Test
    public void aDamagedInboundDocumentIsSetAsideAndStartedAfresh() throws Exception {
        storage.write(Outbox.INBOUND_DOCUMENT, "{\"inbound\": [{\"sms\": trunc");
        gateway.outbox.add("m1", Outbox.SENT, ""); // the status reports' own document is fine
        open();
        assertEquals(0, gateway.outbox.inboundSize());
        assertEquals("{\"inbound\": [{\"sms\": trunc",
            storage.read(Outbox.INBOUND_DOCUMENT + Gateway.SET_ASIDE_SUFFIX));
        assertEquals("the status reports are kept", 1, gateway.outbox.size());
        receive("+15557654321", "Hello");
        open();
        assertEquals(1, gateway.outbox.inboundSize());
    }
}
