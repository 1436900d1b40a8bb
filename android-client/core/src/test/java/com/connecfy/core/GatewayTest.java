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
        return gateway.engine("dev1", api, sender, new Heartbeat.Source() {
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
            public synchronized void send(Task task, int parts, SimChoice.Decision sim) {
                inTick.countDown();
                try {
                    release.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                super.send(task, parts, sim);
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

    /**
     * A listener that does what the app does when the engine says the phone was unpaired
     * (the engine has forgotten its own pairing by then).
     */
    private DeviceEngine.Listener appListener(final Gateway gateway, final java.util.List<String> told) {
        return new DeviceEngine.Listener() {
            @Override
            public void onUnpaired(String reason) {
                told.add(reason);
            }

            @Override
            public void onStatus(EngineStatus status) {
            }
        };
    }

    private static final Heartbeat.Source BEAT = new Heartbeat.Source() {
        @Override
        public Heartbeat current() {
            return new Heartbeat(50, "14", "1.0.0");
        }
    };

    private static DeviceCredentials secondDevice() {
        return new DeviceCredentials("http://127.0.0.1:1", "dev2", "token2", "Phone", 1);
    }

    @Test
    public void aNewPairingStopsTheEngineOfTheOldOne() throws Exception {
        Gateway gateway = open();
        RecordingSender sender = new RecordingSender(clock);
        java.util.List<String> told = new java.util.ArrayList<String>();
        DeviceEngine old = gateway.engine("dev1", api, sender, BEAT, new DeviceEngine.Config(), appListener(gateway, told));
        old.tick();
        int calls = api.log.size();
        gateway.pairing.save(secondDevice()); // paired again while the service runs
        api.pollScript.add(FakeApi.tasks("A"));
        clock.advance(20000);
        old.tick();
        assertEquals("the engine on the old token makes no more calls: " + api.log, calls, api.log.size());
        assertTrue(sender.sent.isEmpty());
        assertEquals("dev2", gateway.pairing.load().deviceId);
    }

    @Test
    public void aRefusalSeenByTheOldEngineNeverForgetsTheNewPairing() throws Exception {
        final Gateway gateway = open();
        final java.util.List<String> told = new java.util.ArrayList<String>();
        // The second refusal of the old token arrives while the new pairing is being saved.
        FakeApi racing = new FakeApi(clock) {
            @Override
            public synchronized String heartbeat(Heartbeat heartbeat) throws IOException, ApiException {
                if (heartbeatTimes.size() == 1) {
                    gateway.pairing.save(secondDevice());
                }
                return super.heartbeat(heartbeat);
            }
        };
        racing.heartbeatScript.add(FakeApi.notAuthenticated());
        racing.heartbeatScript.add(FakeApi.notAuthenticated());
        DeviceEngine old = gateway.engine("dev1", racing, new RecordingSender(clock), BEAT, new DeviceEngine.Config(),
            appListener(gateway, told));
        for (int i = 0; i < 5 && !old.status().unpaired; i++) {
            clock.advance(Math.min(old.tick(), 60000));
        }
        assertEquals("two refusals of the old token", 2, racing.heartbeatTimes.size());
        DeviceCredentials stored = gateway.pairing.load();
        assertTrue("the new pairing is kept: " + (stored == null ? "forgotten" : stored.deviceId),
            stored != null && "dev2".equals(stored.deviceId));
        assertTrue("the app is not told to unpair the new pairing: " + told, told.isEmpty());
        assertEquals(dev2OnDisk(), "dev2");
    }

    private String dev2OnDisk() throws IOException {
        return new Pairing(storage).load().deviceId;
    }

    @Test
    public void twoRefusalsForgetTheEnginesOwnPairingAndTellTheApp() throws Exception {
        Gateway gateway = open();
        gateway.outbox.add("m1", Outbox.SENT, "");
        java.util.List<String> told = new java.util.ArrayList<String>();
        api.heartbeatScript.add(FakeApi.notAuthenticated());
        api.heartbeatScript.add(FakeApi.notAuthenticated());
        api.reportScript.add(new IOException("network down"));
        DeviceEngine engine = gateway.engine("dev1", api, new RecordingSender(clock), BEAT,
            new DeviceEngine.Config(), appListener(gateway, told));
        for (int i = 0; i < 5 && told.isEmpty(); i++) {
            clock.advance(Math.min(engine.tick(), 60000));
        }
        assertEquals(1, told.size());
        assertNull(gateway.pairing.load());
        assertNull(new Pairing(storage).load());
        assertEquals(0, gateway.outbox.size());
        assertFalse(gateway.isCurrent(engine));
    }

    @Test
    public void forgetLeavesAnotherDevicesPairingAlone() throws Exception {
        Gateway gateway = open();
        gateway.outbox.add("m1", Outbox.SENT, "");
        assertFalse(gateway.forget("dev0"));
        assertEquals("dev1", gateway.pairing.load().deviceId);
        assertEquals(1, gateway.outbox.size());
        assertTrue(gateway.forget("dev1"));
        assertNull(gateway.pairing.load());
        assertEquals(0, gateway.outbox.size());
    }

    @Test
    public void pairingAgainStopsTheRunningEngineAndDropsTheOldTokensReports() throws Exception {
        Gateway gateway = open();
        RecordingSender sender = new RecordingSender(clock);
        DeviceEngine old = engine(gateway, sender);
        old.tick();
        assertTrue(gateway.isCurrent(old));
        gateway.outbox.add("m1", Outbox.SENT, "");
        gateway.paired(secondDevice());
        assertFalse("a new engine is wanted", gateway.isCurrent(old));
        assertEquals(Long.MAX_VALUE, old.tick());
        assertEquals("the old token's reports go with it", 0, gateway.outbox.size());
        assertEquals("dev2", dev2OnDisk());
        DeviceEngine fresh = gateway.engine("dev2", api, sender, BEAT, new DeviceEngine.Config(),
            appListener(gateway, new java.util.ArrayList<String>()));
        assertTrue(gateway.isCurrent(fresh));
        gateway.outbox.add("m2", Outbox.SENT, "");
        gateway.paired(secondDevice()); // the same device again: its reports stay
        assertEquals(1, gateway.outbox.size());
    }

    @Test
    public void aNewEngineStopsThePreviousOne() throws Exception {
        Gateway gateway = open();
        RecordingSender sender = new RecordingSender(clock);
        DeviceEngine first = engine(gateway, sender); // the service before Stop
        first.tick();
        DeviceEngine second = engine(gateway, sender); // the service after Start
        api.pollScript.add(FakeApi.tasks("A"));
        clock.advance(20000);
        int calls = api.log.size();
        assertEquals("the first engine is stopped", Long.MAX_VALUE, first.tick());
        assertEquals("the first engine makes no call: " + api.log, calls, api.log.size());
        second.tick();
        assertEquals(Arrays.asList("A"), sender.sent);
    }

    @Test
    public void stoppingDuringATickSendsNothingMore() throws Exception {
        Gateway gateway = open();
        final java.util.concurrent.CountDownLatch sending = new java.util.concurrent.CountDownLatch(1);
        final java.util.concurrent.CountDownLatch release = new java.util.concurrent.CountDownLatch(1);
        RecordingSender sender = new RecordingSender(clock) {
            @Override
            public synchronized void send(Task task, int parts, SimChoice.Decision sim) {
                sending.countDown();
                try {
                    release.await(5, java.util.concurrent.TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                super.send(task, parts, sim);
            }
        };
        final DeviceEngine engine = engine(gateway, sender);
        api.pollScript.add(FakeApi.tasks("A", "B", "C"));
        Thread service = new Thread(new Runnable() {
            @Override
            public void run() {
                engine.tick();
            }
        });
        service.start();
        assertTrue(sending.await(5, java.util.concurrent.TimeUnit.SECONDS));
        Thread stopper = new Thread(new Runnable() {
            @Override
            public void run() {
                engine.stop();
            }
        });
        stopper.start();
        Thread.sleep(100); // the stop is asked for while A is being handed over
        release.countDown();
        stopper.join(5000);
        service.join(5000);
        assertEquals("nothing is sent once the stop was asked for", Arrays.asList("A"), sender.sent);
        assertFalse(gateway.sentIds.contains("B"));
    }

    /** Runs {@code read} on another thread; true if it returned within half a second. */
    private static boolean returnsAtOnce(final java.util.concurrent.Callable<?> read) throws Exception {
        final java.util.concurrent.CountDownLatch done = new java.util.concurrent.CountDownLatch(1);
        Thread ui = new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    read.call();
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
                done.countDown();
            }
        });
        ui.setDaemon(true);
        ui.start();
        return done.await(500, java.util.concurrent.TimeUnit.MILLISECONDS);
    }

    private static Thread inBackground(final java.util.concurrent.Callable<?> write) {
        Thread t = new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    write.call();
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            }
        });
        t.start();
        return t;
    }

    @Test
    public void whatTheScreenShowsIsReadWithoutTheDiskOrItsLocks() throws Exception {
        final BlockingStorage slow = new BlockingStorage(storage);
        final Gateway gateway = new Gateway(slow, clock, TimeZone.getTimeZone("UTC"), new Random(1));
        int readsAtOpen = slow.reads.get();
        java.util.concurrent.Callable<Object> screen = new java.util.concurrent.Callable<Object>() {
            @Override
            public Object call() throws Exception {
                return "" + gateway.pairing.load().deviceId + gateway.outbox.size() + gateway.counts.sentToday()
                    + gateway.counts.failedToday() + gateway.outbox.inboundSize() + gateway.forwarding.isEnabled();
            }
        };
        assertTrue(returnsAtOnce(screen));
        assertEquals("the screen reads no document", readsAtOpen, slow.reads.get());

        slow.hold(); // a slow disk: each of these writes hangs while holding its object's lock
        Thread[] writers = {
            inBackground(new java.util.concurrent.Callable<Object>() {
                @Override
                public Object call() throws Exception {
                    gateway.outbox.add("m1", Outbox.SENT, "");
                    return null;
                }
            }),
            inBackground(new java.util.concurrent.Callable<Object>() {
                @Override
                public Object call() throws Exception {
                    gateway.counts.countSent();
                    return null;
                }
            }),
            inBackground(new java.util.concurrent.Callable<Object>() {
                @Override
                public Object call() throws Exception {
                    gateway.pairing.save(new DeviceCredentials("http://127.0.0.1:1", "dev1", "token", "Phone", 0));
                    return null;
                }
            }),
            inBackground(new java.util.concurrent.Callable<Object>() {
                @Override
                public Object call() throws Exception {
                    gateway.forwarding.setEnabled(false);
                    return null;
                }
            }),
        };
        for (int i = 0; i < 100 && slow.writesWaiting.get() < 4; i++) {
            Thread.sleep(10);
        }
        assertEquals(4, slow.writesWaiting.get());
        try {
            assertTrue("the screen's reads wait for a write to the disk", returnsAtOnce(screen));
        } finally {
            slow.release();
            for (Thread w : writers) {
                w.join(5000);
            }
        }
        assertEquals(1, gateway.outbox.size());
        assertEquals(1, gateway.counts.sentToday());
        assertFalse(gateway.forwarding.isEnabled());
    }

    @Test
    public void forgetDoesNotTryToDeliver() throws Exception {
        Gateway gateway = open();
        gateway.outbox.add("m1", Outbox.SENT, "");
        assertTrue(gateway.forget("dev1"));
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
