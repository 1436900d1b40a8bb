package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.util.Arrays;
import java.util.Random;
import java.util.TimeZone;

import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** Opening the phone's state, and unpairing by the user. */
public class GatewayTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    private FakeClock clock;
    private FakeApi api;
    private FileStorage storage;

    @Before
    public void setUp() throws Exception {
        clock = new FakeClock(1700000000000L);
        api = new FakeApi(clock);
        storage = TempDir.storage(folder, "phone");
        storage.write(Pairing.DOCUMENT,
            new DeviceCredentials("http://127.0.0.1:1", "dev1", "token", "Phone", 0).toJson());
    }

    private Gateway open() throws IOException {
        return new Gateway(storage, clock, TimeZone.getTimeZone("UTC"), new Random(1));
    }

    private DeviceEngine engine(Gateway gateway, RecordingSender sender) {
        return gateway.engine(api, sender, new Heartbeat.Source() {
            @Override
            public Heartbeat current() {
                return new Heartbeat(50, "14", "1.0.0");
            }
        }, new DeviceEngine.Config(), new DeviceEngine.Listener() {
            @Override
            public void onUnpaired(String reason) {
            }

            @Override
            public void onStatus(EngineStatus status) {
            }
        });
    }

    @Test
    public void unpairStopsTheEngineDeliversTheWaitingReportsThenForgets() throws Exception {
        Gateway gateway = open();
        RecordingSender sender = new RecordingSender(clock);
        DeviceEngine engine = engine(gateway, sender);
        gateway.results.dispatched("m1", 1);
        gateway.results.partSent("m1", 0, SmsErrors.RESULT_OK);
        gateway.outbox.add("m2", Outbox.FAILED, "RESULT_ERROR_NO_SERVICE (4)");
        // Both reports are backing off after an earlier failure; unpairing does not wait for that.
        api.reportScript.add(new IOException("network down"));
        gateway.outbox.drain(api);
        api.reports.clear();

        assertTrue(gateway.unpair(api, 10000));
        assertEquals(Arrays.asList("m1 sent", "m2 failed RESULT_ERROR_NO_SERVICE (4)"), api.reports);
        assertNull(gateway.pairing.load());
        assertEquals(0, gateway.outbox.size());
        int calls = api.log.size();
        api.pollScript.add(FakeApi.tasks("late"));
        assertEquals("the engine is stopped", Long.MAX_VALUE, engine.tick());
        assertEquals(calls, api.log.size());
        assertTrue(sender.sent.isEmpty());
    }

    @Test
    public void unpairWaitsForARunningTick() throws Exception {
        final Gateway gateway = open();
        final java.util.concurrent.CountDownLatch inTick = new java.util.concurrent.CountDownLatch(1);
        final java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        final RecordingSender sender = new RecordingSender(clock) {
            @Override
            public synchronized void send(Task task, int parts) {
                inTick.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                super.send(task, parts);
            }
        };
        final DeviceEngine engine = engine(gateway, sender);
        api.pollScript.add(FakeApi.tasks("A"));
        Thread service = new Thread(new Runnable() {
            @Override
            public void run() {
                engine.tick();
            }
        });
        service.start();
        assertTrue(inTick.await(5, java.util.concurrent.TimeUnit.SECONDS));
        final boolean[] done = new boolean[1];
        Thread unpair = new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    gateway.unpair(api, 10000);
                } catch (IOException e) {
                    throw new IllegalStateException(e);
                }
                done[0] = true;
            }
        });
        unpair.start();
        unpair.join(300);
        assertFalse("unpair waits while the tick is sending", done[0]);
        assertEquals(1, gateway.results.tracking());
        release.countDown();
        unpair.join(5000);
        service.join(5000);
        assertTrue(done[0]);
        assertEquals(Arrays.asList("A"), sender.sent);
        assertNull(gateway.pairing.load());
    }

    @Test
    public void unpairGivesUpOnTheReportsAtTheServerOutageOrDeadline() throws Exception {
        Gateway gateway = open();
        gateway.outbox.add("m1", Outbox.SENT, "");
        gateway.outbox.add("m2", Outbox.SENT, "");
        api.reportScript.add(new IOException("network down"));
        assertFalse(gateway.unpair(api, 10000));
        assertEquals(1, api.log.size());
        assertNull(gateway.pairing.load());
        assertEquals("what only the token could deliver is forgotten", 0, gateway.outbox.size());

        storage.write(Pairing.DOCUMENT, new DeviceCredentials("http://127.0.0.1:1", "d", "t", "P", 0).toJson());
        Gateway second = open();
        second.outbox.add("m3", Outbox.SENT, "");
        assertFalse("no report is started past the deadline", second.unpair(api, 0));
        assertEquals(1, api.log.size());
    }

    @Test
    public void forgetDoesNotTryToDeliver() throws Exception {
        Gateway gateway = open();
        gateway.outbox.add("m1", Outbox.SENT, "");
        gateway.forget();
        assertTrue(api.log.isEmpty());
        assertNull(gateway.pairing.load());
        assertEquals(0, gateway.outbox.size());
    }

    @Test
    public void anUnreadableDocumentIsSetAsideAndStartedAfresh() throws Exception {
        storage.write(Outbox.DOCUMENT, "{\"reports\": [truncated");
        storage.write(SentIds.DOCUMENT, "not json");
        Gateway gateway = open();
        assertEquals(0, gateway.outbox.size());
        assertEquals(0, gateway.sentIds.size());
        assertEquals("not json", storage.read(SentIds.DOCUMENT + Gateway.SET_ASIDE_SUFFIX));
        assertEquals("{\"reports\": [truncated", storage.read(Outbox.DOCUMENT + Gateway.SET_ASIDE_SUFFIX));
        assertEquals("dev1", gateway.pairing.load().deviceId);
        gateway.outbox.add("m1", Outbox.SENT, "");
        assertEquals(1, open().outbox.size());
    }
}
