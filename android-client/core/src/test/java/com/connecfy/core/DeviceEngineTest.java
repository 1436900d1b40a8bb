package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.TimeZone;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;

import org.json.JSONObject;
import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** The engine's timing on a fake clock, against a scripted API. */
public class DeviceEngineTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    private static final long T0 = 1700000000000L;

    private FakeClock clock;
    private FakeApi api;
    private RecordingSender sender;
    private FailingStorage storage;
    private Outbox outbox;
    private SendResults results;
    private final List<String> unpairedReasons = new ArrayList<String>();
    /** One permit per {@link DeviceEngine.Listener#onPollAnswered}. */
    private final Semaphore pollsAnswered = new Semaphore(0);
    private DeviceEngine.Config config = new DeviceEngine.Config();
    private DeviceEngine engine;

    @Before
    public void setUp() throws IOException {
        clock = new FakeClock(T0);
        api = new FakeApi(clock);
        sender = new RecordingSender(clock);
        storage = new FailingStorage(TempDir.storage(folder, "phone"));
        engine = newEngine();
    }

    /** A fresh engine over the same storage: what the phone has after an app restart. */
    private DeviceEngine newEngine() throws IOException {
        outbox = new Outbox(storage, clock, new Random(5), new Backoff(1000, 60000));
        SentIds sentIds = new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS);
        SendPacer pacer = new SendPacer(storage, 30, 61000);
        DailyCounts counts = new DailyCounts(storage, clock, TimeZone.getTimeZone("UTC"));
        results = new SendResults(storage, outbox, counts, clock);
        Heartbeat.Source source = new Heartbeat.Source() {
            @Override
            public Heartbeat current() {
                return new Heartbeat(81, "14", "1.0.0");
            }
        };
        DeviceEngine.Listener listener = new DeviceEngine.Listener() {
            @Override
            public void onUnpaired(String reason) {
                unpairedReasons.add(reason);
            }

            @Override
            public void onStatus(EngineStatus status) {
            }

            @Override
            public void onPollAnswered() {
                pollsAnswered.release();
            }
        };
        return new DeviceEngine(api, outbox, sentIds, pacer, results, sender, source, clock, new Random(11), config,
            listener);
    }

    /** Runs the engine as the service does, sleeping on the fake clock, until {@code until} ms after T0. */
    private void runUntil(long until) {
        int atOnce = 0;
        for (int i = 0; i < 100000 && clock.now() < T0 + until; i++) {
            long wait = engine.tick();
            if (wait == Long.MAX_VALUE) {
                clock.set(T0 + until);
                return;
            }
            atOnce = sleep(Math.min(wait, T0 + until - clock.now()), atOnce);
        }
    }

    /** Runs the engine for {@code millis} of passing time, whatever the wall clock shows; the longest wait. */
    private long runFor(long millis) {
        long end = clock.elapsedMillis() + millis;
        long longest = 0;
        int atOnce = 0;
        for (int i = 0; i < 100000 && clock.elapsedMillis() < end; i++) {
            long wait = engine.tick();
            longest = Math.max(longest, wait);
            atOnce = sleep(Math.min(wait, end - clock.elapsedMillis()), atOnce);
        }
        return longest;
    }

    /**
     * Moves the fake clock over a wait the engine asked for; a tick wanted at once comes at
     * once (a poll after an answer with messages), but not a hundred times in a row.
     */
    private int sleep(long millis, int atOnceBefore) {
        if (millis > 0) {
            clock.advance(millis);
            return 0;
        }
        assertTrue("the engine keeps asking for a tick at once", atOnceBefore < 100);
        return atOnceBefore + 1;
    }

    private static List<Long> relative(List<Long> times) {
        List<Long> out = new ArrayList<Long>();
        for (Long t : times) {
            out.add(t - T0);
        }
        return out;
    }

    @Test
    public void heartbeatsEveryFifteenSecondsAndPollsEveryTwenty() {
        runUntil(61000);
        assertEquals(Arrays.asList(0L, 15000L, 30000L, 45000L, 60000L), relative(api.heartbeatTimes));
        assertEquals(Arrays.asList(0L, 20000L, 40000L, 60000L), relative(api.pollTimes));
        assertEquals(Integer.valueOf(81), api.lastHeartbeat.battery);
        assertEquals("14", api.lastHeartbeat.androidVersion);
        assertEquals("1.0.0", api.lastHeartbeat.appVersion);
        assertTrue(engine.status().isOnline(clock.now()));
    }

    @Test
    public void aServerThatDoesNotHoldPollsGetsAnEarlyPollOnlyAfterAFullBatch() {
        api.pollScript.add(FakeApi.tasks()); // answered at once: the server does not hold polls
        api.pollScript.add(FakeApi.tasks("A0", "A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9"));
        api.pollScript.add(FakeApi.tasks("B0", "B1", "B2"));
        runUntil(50000);
        assertEquals(Arrays.asList(0L, 20000L, 22000L, 42000L), relative(api.pollTimes));
        assertEquals(13, sender.sent.size());
        assertEquals(Long.valueOf(T0 + 20000), sender.sentAt.get(0));
    }

    @Test
    public void pollErrorsBackOffWithJitterWhileHeartbeatsGoOn() {
        for (int i = 0; i < 4; i++) {
            api.pollScript.add(new IOException("network down"));
        }
        runUntil(120000);
        List<Long> polls = relative(api.pollTimes);
        Backoff backoff = new DeviceEngine.Config().pollBackoff;
        for (int failure = 1; failure <= 4; failure++) {
            long gap = polls.get(failure) - polls.get(failure - 1);
            long ceiling = backoff.ceilingMillis(failure);
            assertTrue("gap " + gap + " after failure " + failure, gap >= ceiling / 2 && gap <= ceiling);
        }
        assertEquals("back to 20 s once a poll succeeds", 20000L, polls.get(5) - polls.get(4));
        assertEquals(Arrays.asList(0L, 15000L, 30000L, 45000L, 60000L, 75000L, 90000L, 105000L),
            relative(api.heartbeatTimes));
    }

    @Test
    public void jitterDiffersBetweenPhones() throws IOException {
        List<Long> gaps = new ArrayList<Long>();
        for (int seed = 0; seed < 5; seed++) {
            Backoff backoff = new DeviceEngine.Config().pollBackoff;
            gaps.add(backoff.delayMillis(3, new Random(seed)));
        }
        assertTrue("five phones, five different waits: " + gaps, new java.util.HashSet<Long>(gaps).size() > 1);
    }

    @Test
    public void tooManyRequestsWaitsExactlyRetryAfter() {
        api.pollScript.add(FakeApi.tooMany(37000));
        runUntil(60000);
        assertEquals(Arrays.asList(0L, 37000L, 57000L), relative(api.pollTimes));
    }

    @Test
    public void heartbeatFailuresRetrySoonerThanTheServerForgetsThePhone() {
        api.heartbeatScript.add(Boolean.TRUE);
        api.heartbeatScript.add(FakeApi.status(503));
        api.heartbeatScript.add(FakeApi.status(503));
        runUntil(40000);
        List<Long> beats = relative(api.heartbeatTimes);
        assertEquals(Long.valueOf(15000), beats.get(1));
        long ceiling1 = new DeviceEngine.Config().heartbeatBackoff.ceilingMillis(1);
        long gap = beats.get(2) - beats.get(1);
        assertTrue("retry after " + gap, gap >= ceiling1 / 2 && gap <= ceiling1);
        assertTrue("still online within the 45 s window", engine.status().isOnline(clock.now()));
        assertTrue(engine.status().lastError == null);
    }

    @Test
    public void goesOfflineWhenHeartbeatsKeepFailing() {
        for (int i = 0; i < 50; i++) {
            api.heartbeatScript.add(i == 0 ? Boolean.TRUE : new IOException("down"));
        }
        runUntil(10000);
        assertTrue(engine.status().isOnline(clock.now()));
        runUntil(60000);
        assertFalse(engine.status().isOnline(clock.now()));
        assertTrue(engine.status().lastError, engine.status().lastError.startsWith("heartbeat"));
    }

    @Test
    public void twoNotAuthenticatedAnswersInARowStopEverythingAndSayUnpaired() {
        api.heartbeatScript.add(FakeApi.notAuthenticated());
        api.heartbeatScript.add(FakeApi.notAuthenticated());
        runUntil(30000);
        assertEquals(1, unpairedReasons.size());
        assertTrue(engine.status().unpaired);
        List<Long> beats = relative(api.heartbeatTimes);
        assertEquals("unpaired at the second refusal, not the first: " + beats, 2, beats.size());
        long gap = beats.get(1) - beats.get(0);
        long ceiling = new DeviceEngine.Config().heartbeatBackoff.ceilingMillis(1);
        assertTrue("the second answer comes after a backoff: " + gap, gap >= ceiling / 2 && gap <= ceiling);
        assertTrue("nothing is claimed between the two answers", api.pollTimes.isEmpty());
        assertEquals(Long.MAX_VALUE, engine.tick());
        int calls = api.log.size();
        runUntil(120000);
        assertEquals("nothing more is called", calls, api.log.size());
    }

    @Test
    public void oneNotAuthenticatedAnswerIsRetriedNotUnpaired() throws IOException {
        outbox.add("m1", Outbox.SENT, "");
        api.pollScript.add(FakeApi.notAuthenticated());
        runUntil(60000);
        assertTrue("one refusal followed by a good answer: " + unpairedReasons, unpairedReasons.isEmpty());
        assertFalse(engine.status().unpaired);
        assertTrue("polling goes on: " + api.pollTimes, api.pollTimes.size() >= 3);
        assertEquals(Arrays.asList("m1 sent"), api.reports);
    }

    @Test
    public void refusalsSeparatedByAnotherAnswerDoNotUnpair() {
        api.heartbeatScript.add(FakeApi.notAuthenticated());
        api.heartbeatScript.add(FakeApi.status(503));
        api.heartbeatScript.add(FakeApi.notAuthenticated());
        runUntil(60000);
        assertTrue(unpairedReasons.toString(), unpairedReasons.isEmpty());
    }

    @Test
    public void aProxysOrPortalsUnauthorizedOrForbiddenPageIsRetriedNotUnpaired() throws IOException {
        outbox.add("m1", Outbox.SENT, "");
        for (int i = 0; i < 4; i++) {
            api.heartbeatScript.add(FakeApi.foreignPage(i % 2 == 0 ? 403 : 401));
            api.pollScript.add(FakeApi.foreignPage(i % 2 == 0 ? 401 : 403));
            api.reportScript.add(FakeApi.foreignPage(403));
        }
        api.pollScript.add(FakeApi.tasks("A"));
        runUntil(30 * 60000);
        assertTrue("a page that is not the server's never unpairs: " + unpairedReasons, unpairedReasons.isEmpty());
        assertFalse(engine.status().unpaired);
        assertTrue("the report was kept and delivered: " + api.reports, api.reports.contains("m1 sent"));
        assertEquals(Arrays.asList("A"), sender.sent);
        List<Long> polls = relative(api.pollTimes);
        long gap = polls.get(1) - polls.get(0);
        long ceiling = new DeviceEngine.Config().pollBackoff.ceilingMillis(1);
        assertTrue("retried with backoff: " + polls, gap >= ceiling / 2);
    }

    @Test
    public void theServersForbiddenAnswerIsRetriedNotUnpaired() {
        api.heartbeatScript.add(ApiClient.error(403, "application/json",
            "{\"status_code\":403,\"code\":\"forbidden\",\"detail\":\"this token belongs to another device\"}",
            -1));
        api.heartbeatScript.add(FakeApi.status(403));
        runUntil(30000);
        assertTrue(unpairedReasons.toString(), unpairedReasons.isEmpty());
        assertFalse(api.pollTimes.isEmpty());
    }

    @Test
    public void aRedeliveredMessageIsNeverSentAgainEvenAfterARestart() throws IOException {
        api.pollScript.add(FakeApi.tasks("A", "B"));
        runUntil(1000);
        assertEquals(Arrays.asList("A", "B"), sender.sent);
        engine = newEngine(); // the app restarts; the server hands A out again (its report was late)
        api.pollScript.add(FakeApi.tasks("A", "C", "C"));
        runUntil(30000);
        assertEquals(Arrays.asList("A", "B", "C"), sender.sent);
        assertEquals(2, engine.status().duplicatesSkipped);
        assertTrue("A's results are still awaited: no report of it", api.reports.isEmpty());
    }

    @Test
    public void pacingKeepsEverySixtyOneSecondWindowWithinThirtyParts() {
        List<Task> batch = new ArrayList<Task>();
        for (int i = 0; i < 10; i++) {
            batch.add(new Task("L" + i, "+15551234567", "fifty chars of text, which makes five parts here.."));
        }
        api.pollScript.add(batch);
        runUntil(200000);
        assertEquals(10, sender.sent.size());
        List<Long> at = relative(sender.sentAt);
        for (int i = 0; i < at.size(); i++) {
            int parts = 0;
            for (int j = 0; j < at.size(); j++) {
                if (at.get(j) >= at.get(i) && at.get(j) < at.get(i) + 61000) {
                    parts += 5;
                }
            }
            assertTrue("window from " + at.get(i) + " has " + parts + " parts", parts <= 30);
        }
        assertEquals(Long.valueOf(0), at.get(5));
        assertEquals(Long.valueOf(61000), at.get(6));
        List<Long> polls = relative(api.pollTimes);
        assertEquals("no claim while claimed messages wait", Long.valueOf(61000), polls.get(1));
    }

    @Test
    public void aSendThatThrowsIsReportedFailed() {
        sender.failWith = new SecurityException("SEND_SMS not granted");
        api.pollScript.add(FakeApi.tasks("A"));
        runUntil(1000);
        assertEquals(Arrays.asList("A failed NOT_SENT SecurityException: SEND_SMS not granted"), api.reports);
    }

    @Test
    public void claimsNothingWhileThePhoneCannotSend() {
        sender.cannotSend = "SMS permission missing";
        api.pollScript.add(FakeApi.tasks("A"));
        runUntil(30000);
        assertTrue(api.pollTimes.isEmpty());
        assertEquals(2, api.heartbeatTimes.size());
        assertEquals("SMS permission missing", engine.status().lastError);
        sender.cannotSend = null;
        runUntil(41000);
        assertEquals(Long.valueOf(40000), relative(api.pollTimes).get(0));
        assertEquals(Arrays.asList("A"), sender.sent);
    }

    @Test
    public void claimedMessagesWaitWhileTheRadioCannotSend() {
        List<Task> batch = new ArrayList<Task>();
        for (int i = 0; i < 10; i++) {
            batch.add(new Task("L" + i, "+15551234567", "fifty chars of text, which makes five parts here.."));
        }
        api.pollScript.add(batch);
        runUntil(1000);
        assertEquals("six fill the pacer's window", 6, sender.sent.size());
        sender.cannotSend = "no cell service"; // on Wi-Fi, out of the network's reach
        runUntil(90000);
        assertEquals("nothing is handed to SmsManager while the radio cannot send: " + sender.sent, 6,
            sender.sent.size());
        assertEquals("no cell service", engine.status().lastError);
        sender.cannotSend = null;
        runUntil(100000);
        assertEquals("the rest go once it can, within their lease", 10, sender.sent.size());
    }

    @Test
    public void aPartThatFailedForWantOfRadioHoldsTheClaimsForAWhile() throws IOException {
        api.pollScript.add(FakeApi.tasks("A"));
        runUntil(1000);
        assertEquals(Arrays.asList("A"), sender.sent);
        int polls = api.pollTimes.size();
        results.partSent("A", 0, 4); // RESULT_ERROR_NO_SERVICE, though the phone's state said otherwise
        runUntil(50000);
        assertEquals("no claim right after the radio failed: " + relative(api.pollTimes), polls,
            api.pollTimes.size());
        assertEquals(Arrays.asList("A failed RESULT_ERROR_NO_SERVICE (4) retryable"), api.reports);
        assertTrue(engine.status().lastError, engine.status().lastError.contains("RESULT_ERROR_NO_SERVICE"));
        runUntil(90000);
        assertTrue("claims again after the pause: " + relative(api.pollTimes), api.pollTimes.size() > polls);
    }

    @Test
    public void statusShowsQueueAndLastPoll() {
        api.pollScript.add(FakeApi.tasks());
        api.pollScript.add(FakeApi.tasks("A", "B"));
        runUntil(21000);
        EngineStatus s = engine.status();
        assertTrue(s.running);
        assertEquals(T0 + 20000, s.lastPollAt);
        assertEquals(2, s.lastPollCount);
        assertEquals(0, s.waitingToSend);
        assertEquals(T0 + 40000, s.nextPollAt);
        assertFalse("the server does not hold polls", s.instant);
    }

    @Test
    public void settingThePhonesClockBackChangesNoSchedule() {
        runFor(20000);
        assertEquals(2, api.heartbeatTimes.size());
        clock.shiftWall(-3600000); // the user sets the clock back an hour
        long longest = runFor(60000);
        assertTrue("longest wait " + longest, longest <= 20000);
        assertEquals("a heartbeat every 15 s", 6, api.heartbeatTimes.size());
        assertEquals("a claim every 20 s", 4, api.pollTimes.size());
        assertTrue(engine.status().isOnline(clock.now()));
    }

    @Test
    public void settingThePhonesClockForwardDoesNotHurryAnything() {
        runFor(1000);
        clock.shiftWall(3600000);
        runFor(14000);
        assertEquals(1, api.heartbeatTimes.size());
        assertEquals(1, api.pollTimes.size());
        assertTrue(engine.status().isOnline(clock.now()));
    }

    @Test
    public void aPacerWindowRecordedBeforeTheClockWentBackWaitsAtMostOneWindow() {
        List<Task> batch = new ArrayList<Task>();
        for (int i = 0; i < 4; i++) {
            batch.add(new Task("L" + i, "+15551234567", "a hundred chars of text, which makes ten parts here, "
                + "so three of them fill the whole window.."));
        }
        api.pollScript.add(batch);
        runFor(1000);
        assertEquals(3, sender.sent.size());
        clock.shiftWall(-3600000);
        long longest = runFor(70000);
        assertTrue("longest wait " + longest, longest <= 61000);
        assertEquals(4, sender.sent.size());
    }

    @Test
    public void aClaimedMessageNotSentWithinItsLeaseIsDropped() {
        List<Task> batch = new ArrayList<Task>();
        for (int i = 0; i < 10; i++) {
            batch.add(new Task("L" + i, "+15551234567", "a hundred chars of text, which makes ten parts here, "
                + "so three of them fill the whole window.."));
        }
        api.pollScript.add(batch);
        runFor(200000);
        // 3 at 0 s, 3 at 61 s; the next turn (122 s) is past the 120 s lease.
        assertEquals(Arrays.asList("L0", "L1", "L2", "L3", "L4", "L5"), sender.sent);
        List<Long> polls = relative(api.pollTimes);
        assertTrue("claims again once the expired ones are dropped: " + polls, polls.size() >= 2
            && polls.get(1) <= 125000);
        api.pollScript.add(FakeApi.tasks("L6"));
        runFor(30000);
        assertTrue("a dropped message is sent when it is handed out again", sender.sent.contains("L6"));
    }

    @Test
    public void aServiceUnavailableWithRetryAfterStillBacksOffWithJitter() {
        for (int i = 0; i < 4; i++) {
            api.pollScript.add(new ApiException(503, "unavailable", "redis down", 2000));
        }
        runFor(200000);
        List<Long> polls = relative(api.pollTimes);
        Backoff backoff = new DeviceEngine.Config().pollBackoff;
        for (int failure = 1; failure <= 4; failure++) {
            long gap = polls.get(failure) - polls.get(failure - 1);
            long ceiling = backoff.ceilingMillis(failure);
            assertTrue("gap " + gap + " after failure " + failure, gap >= Math.max(2000, ceiling / 2)
                && gap <= ceiling);
        }
    }

    @Test
    public void aStorageErrorBeforeSendingReportsFailedInsteadOfLosingTheMessage() {
        storage.failWrites.add(SentIds.LOG);
        api.pollScript.add(FakeApi.tasks("A"));
        runFor(1000);
        assertTrue(sender.sent.isEmpty());
        assertEquals(Arrays.asList("A failed " + DeviceEngine.NOT_HANDED_TO_SMS_MANAGER), api.reports);
    }

    @Test
    public void aRedeliveredIdThatNeverReachedSmsManagerIsReportedFailed() throws IOException {
        // The app died after recording the id, before handing the message over.
        new SentIds(storage, clock, SentIds.DEFAULT_RETENTION_MILLIS).add("A");
        engine = newEngine();
        api.pollScript.add(FakeApi.tasks("A"));
        runFor(1000);
        assertTrue(sender.sent.isEmpty());
        assertEquals(Arrays.asList("A failed " + DeviceEngine.NOT_HANDED_TO_SMS_MANAGER), api.reports);
    }

    private void passphrase(final String value) {
        config.passphrase = new Envelope.Passphrase() {
            @Override
            public String get() {
                return value;
            }
        };
    }

    @Test
    public void anEncryptedMessageIsOpenedWithTheSettingsPassphraseAndSentAsItsText() throws Exception {
        JSONObject vector = EnvelopeTest.vectors().getJSONArray("vectors").getJSONObject(3);
        passphrase(vector.getString("passphrase"));
        api.pollScript.add(Arrays.asList(new Task("A", "+15551234567", vector.getString("envelope"), null, true),
            new Task("B", "+15551234567", "plain")));
        runFor(1000);
        assertEquals(Arrays.asList("A", "B"), sender.sent);
        assertEquals(Arrays.asList(vector.getString("plaintext"), "plain"), sender.texts);
        // Its parts are counted from the text, not from the (longer) envelope: when they
        // are all sent, the message is.
        int parts = sender.countParts(vector.getString("plaintext"));
        assertTrue(parts < sender.countParts(vector.getString("envelope")));
        for (int part = 0; part < parts; part++) {
            results.partSent("A", part, SmsErrors.RESULT_OK);
        }
        runFor(5000);
        assertEquals("the real count goes with the encrypted one's sent report",
            Arrays.asList("A sent sim=1 segments=" + parts), api.reports);
    }

    @Test
    public void aWrongPassphraseOrABadEnvelopeFailsForGoodWithDecryptFailed() throws Exception {
        JSONObject vector = EnvelopeTest.vectors().getJSONArray("vectors").getJSONObject(0);
        passphrase(vector.getString("passphrase") + " but not quite");
        api.pollScript.add(Arrays.asList(new Task("A", "+15551234567", vector.getString("envelope"), null, true),
            new Task("B", "+15551234567", "v1:%%%%", null, true), new Task("C", "+15551234567", "plain")));
        runFor(5000);
        assertEquals(Arrays.asList("C"), sender.sent);
        assertEquals(new HashSet<String>(Arrays.asList("A failed decrypt_failed", "B failed decrypt_failed")),
            new HashSet<String>(api.reports));
        // Without any passphrase set, the same.
        config.passphrase = null;
        api.pollScript.add(Arrays.asList(new Task("D", "+15551234567", vector.getString("envelope"), null, true)));
        runFor(30000);
        assertTrue(api.reports.contains("D failed decrypt_failed"));
        assertEquals(Arrays.asList("C"), sender.sent);
    }

    @Test
    public void anEncryptedMessageLongerThanTheServerTakesFailsForGoodWithMessageTooLong() throws Exception {
        passphrase("our passphrase");
        StringBuilder longest = new StringBuilder();
        for (int i = 0; i < Envelope.MAX_TEXT_CHARS - 1; i++) {
            longest.append('a');
        }
        longest.append("\ud83d\ude00"); // one character, two chars in Java: 1,600 all told
        api.pollScript.add(Arrays.asList(
            new Task("A", "+15551234567", seal(longest.toString(), "our passphrase"), null, true),
            new Task("B", "+15551234567", seal(longest + "a", "our passphrase"), null, true)));
        runFor(5000);
        assertEquals(Arrays.asList("B failed message_too_long"), api.reports);
        assertEquals(Arrays.asList("A"), sender.sent);
        assertEquals(Arrays.asList(longest.toString()), sender.texts);
    }

    /** An envelope as the SDK and the dashboard make one (their vectors: EnvelopeTest). */
    private static String seal(String text, String passphrase) throws Exception {
        byte[] salt = new byte[16];
        byte[] nonce = new byte[12];
        new java.security.SecureRandom().nextBytes(salt);
        new java.security.SecureRandom().nextBytes(nonce);
        byte[] key = javax.crypto.SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(
            new javax.crypto.spec.PBEKeySpec(passphrase.toCharArray(), salt, Envelope.ITERATIONS, 256)).getEncoded();
        javax.crypto.Cipher cipher = javax.crypto.Cipher.getInstance("AES/GCM/NoPadding");
        cipher.init(javax.crypto.Cipher.ENCRYPT_MODE, new javax.crypto.spec.SecretKeySpec(key, "AES"),
            new javax.crypto.spec.GCMParameterSpec(128, nonce));
        byte[] sealed = cipher.doFinal(text.getBytes("UTF-8"));
        byte[] all = new byte[salt.length + nonce.length + sealed.length];
        System.arraycopy(salt, 0, all, 0, salt.length);
        System.arraycopy(nonce, 0, all, salt.length, nonce.length);
        System.arraycopy(sealed, 0, all, salt.length + nonce.length, sealed.length);
        return Envelope.PREFIX + java.util.Base64.getEncoder().encodeToString(all);
    }

    @Test
    public void aMessageNamingASimGoesFromThatSimAndTheSentReportSaysWhich() throws IOException {
        sender.dualSim();
        api.pollScript.add(Arrays.asList(new Task("A", "+15551234567", "SIM 2", 2),
            new Task("B", "+15551234567", "any SIM"), new Task("C", "+15551234567", "SIM 3", 3)));
        runFor(1000);
        assertEquals(Arrays.asList("A", "B"), sender.sent);
        assertEquals("A from the SIM in slot 2, B from the app's SIM", Arrays.asList(22, 11), sender.sentFrom);
        results.partSent("A", 0, SmsErrors.RESULT_OK);
        results.partSent("B", 0, SmsErrors.RESULT_OK);
        runFor(5000);
        assertEquals(new HashSet<String>(Arrays.asList("A sent sim=2", "B sent sim=1",
            "C failed sim_slot_unavailable (SIM 3: the phone has 2 SIM slots)")), new HashSet<String>(api.reports));
        assertEquals(3, api.reports.size());
    }

    @Test
    public void aMessagePutBackAfterARetryableFailureIsSentAgainWhenHandedBack() throws IOException {
        api.pollScript.add(FakeApi.tasks("A"));
        runFor(1000);
        assertEquals(Arrays.asList("A"), sender.sent);
        for (int i = 0; i < 10; i++) {
            api.reportScript.add(FakeApi.status(500)); // the report waits a while
        }
        results.partSent("A", 0, 5); // RESULT_ERROR_LIMIT_EXCEEDED
        api.pollScript.add(FakeApi.tasks("A")); // the lease ran out before the report went
        runFor(25000);
        assertEquals("not sent again while its report waits", Arrays.asList("A"), sender.sent);
        assertEquals(1, engine.status().duplicatesSkipped);
        for (int i = 0; i < 100 && api.reports.isEmpty(); i++) {
            runFor(10000);
        }
        assertEquals(Arrays.asList("A failed RESULT_ERROR_LIMIT_EXCEEDED (5) retryable"), api.reports);
        engine = newEngine(); // and the app restarts before the server hands it back
        api.pollScript.add(FakeApi.tasks("A"));
        runFor(30000);
        assertEquals("the server put it back and handed it back: sent again", Arrays.asList("A", "A"), sender.sent);
        results.partSent("A", 0, SmsErrors.RESULT_OK);
        api.pollScript.add(FakeApi.tasks("A")); // a redelivery now is one
        runFor(30000);
        assertEquals(Arrays.asList("A", "A"), sender.sent);
        assertEquals(Arrays.asList("A failed RESULT_ERROR_LIMIT_EXCEEDED (5) retryable", "A sent sim=1"),
            api.reports);
    }

    @Test
    public void aStoppedEngineDoesNothingMore() {
        runFor(1000);
        int calls = api.log.size();
        engine.stop();
        assertEquals(Long.MAX_VALUE, engine.tick());
        runFor(60000);
        assertEquals(calls, api.log.size());
    }

    @Test
    public void longPollsAskToWaitThirtySecondsAndPollAgainAtOnceAfterMessages() {
        api.holds = true;
        api.pollScript.add(FakeApi.tasks("A", "B"));
        api.pollScript.add(FakeApi.heldFor(12000, FakeApi.tasks("C")));
        runUntil(80000);
        // A and B at once; C after the server held the poll 12 s; then held 30 s with nothing.
        assertEquals(Arrays.asList(0L, 0L, 12000L, 42000L, 72000L), relative(api.pollTimes));
        assertEquals(Arrays.asList(30, 30, 30, 30, 30), api.pollWaits);
        assertEquals(Arrays.asList("A", "B", "C"), sender.sent);
        assertEquals(Arrays.asList(0L, 0L, 12000L), relative(sender.sentAt));
        assertTrue(engine.status().instant);
    }

    @Test
    public void aQuickEmptyAnswerFallsBackToPlainPollsUntilTheServerHoldsThemAgain() {
        // The server answers at once: an older one, one shutting down, one holding its maximum of waits.
        runUntil(50000);
        assertEquals(Arrays.asList(0L, 20000L, 40000L), relative(api.pollTimes));
        assertEquals("every poll still asks to wait", Arrays.asList(30, 30, 30), api.pollWaits);
        assertFalse(engine.status().instant);
        api.holds = true;
        runUntil(130000);
        assertEquals(Arrays.asList(0L, 20000L, 40000L, 60000L, 90000L, 120000L), relative(api.pollTimes));
        assertTrue(engine.status().instant);
        api.holds = false;
        runUntil(200000);
        assertEquals(Arrays.asList(0L, 20000L, 40000L, 60000L, 90000L, 120000L, 150000L, 170000L, 190000L),
            relative(api.pollTimes));
        assertFalse(engine.status().instant);
    }

    @Test
    public void anEmptyAnswerAfterHalfTheWaitCountsAsHeld() {
        api.pollScript.add(FakeApi.heldFor(15000, FakeApi.tasks()));
        api.pollScript.add(FakeApi.heldFor(14999, FakeApi.tasks()));
        runUntil(50000);
        // Held for half the wait: again at once. Just under half: the plain interval.
        assertEquals(Arrays.asList(0L, 15000L, 29999L + 20000L), relative(api.pollTimes));
    }

    @Test
    public void heartbeatsEveryFiveMinutesWhilePollsAreHeldAndEveryFifteenSecondsWithout() {
        api.holds = true;
        runUntil(601000);
        assertEquals(Arrays.asList(0L, 300000L, 600000L), relative(api.heartbeatTimes));
        assertTrue("a phone whose poll the server holds is online", engine.status().isOnline(clock.now()));
        long heldUntil = clock.now() - T0;
        api.holds = false;
        runUntil(heldUntil + 61000);
        // The server heard from the phone last when it answered the held poll.
        assertEquals(Arrays.asList(0L, 300000L, 600000L, heldUntil + 15000, heldUntil + 30000, heldUntil + 45000,
            heldUntil + 60000), relative(api.heartbeatTimes));
        assertTrue(engine.status().isOnline(clock.now()));
    }

    @Test
    public void whileMessagesWaitForThePacerHeartbeatsKeepThePhoneOnline() {
        api.holds = true;
        runUntil(300000);
        List<Task> batch = new ArrayList<Task>();
        for (int i = 0; i < 10; i++) {
            batch.add(new Task("L" + i, "+15551234567", "fifty chars of text, which makes five parts here.."));
        }
        api.pollScript.add(batch);
        int beats = api.heartbeatTimes.size();
        runUntil(400000);
        assertEquals(10, sender.sent.size());
        List<Long> beatsSince = relative(api.heartbeatTimes).subList(beats, api.heartbeatTimes.size());
        assertTrue("no poll is held while the pacer holds messages back: heartbeats " + beatsSince,
            beatsSince.size() >= 3);
        assertTrue(engine.status().isOnline(clock.now()));
    }

    @Test
    public void tooManyRequestsOnALongPollWaitsExactlyRetryAfter() {
        api.holds = true;
        api.pollScript.add(FakeApi.tooMany(37000));
        runUntil(70000);
        assertEquals(Arrays.asList(0L, 37000L, 67000L), relative(api.pollTimes));
    }

    @Test
    public void aLongPollWithoutAnswerBacksOffAsBefore() {
        api.holds = true;
        api.pollScript.add(new IOException("network down"));
        api.pollScript.add(new IOException("network down"));
        runUntil(120000);
        List<Long> polls = relative(api.pollTimes);
        Backoff backoff = new DeviceEngine.Config().pollBackoff;
        for (int failure = 1; failure <= 2; failure++) {
            long gap = polls.get(failure) - polls.get(failure - 1);
            long ceiling = backoff.ceilingMillis(failure);
            assertTrue("gap " + gap + " after failure " + failure, gap >= ceiling / 2 && gap <= ceiling);
        }
        assertEquals("held polls again once it answers", 30000L, polls.get(3) - polls.get(2));
    }

    @Test
    public void aWaitOfNothingMakesPlainPolls() {
        config.longPollSeconds = 0;
        api.holds = true;
        runUntil(61000);
        assertEquals(Arrays.asList(0L, 20000L, 40000L, 60000L), relative(api.pollTimes));
        assertEquals(Arrays.asList(0, 0, 0, 0), api.pollWaits);
        assertEquals(Arrays.asList(0L, 15000L, 30000L, 45000L, 60000L), relative(api.heartbeatTimes));
    }

    @Test
    public void aPollTheServerHoldsHoldsUpNeitherReportsNorHeartbeatsNorSends() throws Exception {
        ExecutorService pollThread = Executors.newSingleThreadExecutor();
        try {
            config.pollExecutor = pollThread;
            engine = newEngine();
            FakeApi.Hold hold = new FakeApi.Hold();
            api.pollScript.add(hold);
            engine.tick();
            hold.awaitStarted();
            outbox.add("m1", Outbox.SENT, "");
            long wait = engine.tick();
            assertEquals("a report goes while the poll is held", Arrays.asList("m1 sent"), api.reports);
            assertTrue("nothing else is due: " + wait, wait > 0);
            clock.advance(wait);
            engine.tick();
            assertEquals("so does a heartbeat", 2, api.heartbeatTimes.size());
            assertEquals(1, api.pollTimes.size());

            hold.release(FakeApi.tasks("A"));
            assertTrue("the answer asks for a tick", pollsAnswered.tryAcquire(10, TimeUnit.SECONDS));
            engine.tick();
            assertEquals(Arrays.asList("A"), sender.sent);
            assertTrue("and a poll goes again at once", pollsAnswered.tryAcquire(10, TimeUnit.SECONDS));
            assertEquals(2, api.pollTimes.size());
        } finally {
            engine.stop();
            pollThread.shutdownNow();
        }
    }

    @Test
    public void stoppingDisconnectsAPollTheServerHolds() throws Exception {
        ExecutorService pollThread = Executors.newSingleThreadExecutor();
        try {
            config.pollExecutor = pollThread;
            engine = newEngine();
            FakeApi.Hold hold = new FakeApi.Hold();
            api.pollScript.add(hold);
            engine.tick();
            hold.awaitStarted();
            long started = System.nanoTime();
            engine.stop();
            long tookMillis = (System.nanoTime() - started) / 1000000L;
            assertTrue("stop() waited " + tookMillis + " ms", tookMillis < 2000);
            assertTrue(api.interrupts > 0);
            assertEquals(Long.MAX_VALUE, engine.tick());
            assertEquals("a stopped engine asks for no tick", 0, pollsAnswered.availablePermits());
        } finally {
            pollThread.shutdownNow();
        }
    }

    @Test
    public void aRefusalOfAPollAskedBeforeTheFirstRefusalIsNotTheSecond() throws Exception {
        ExecutorService pollThread = Executors.newSingleThreadExecutor();
        try {
            config.pollExecutor = pollThread;
            engine = newEngine();
            FakeApi.Hold hold = new FakeApi.Hold();
            api.pollScript.add(hold);
            engine.tick();
            hold.awaitStarted();
            api.heartbeatScript.add(FakeApi.notAuthenticated());
            clock.advance(15000);
            engine.tick(); // the first refusal, while the poll is held
            hold.release(FakeApi.notAuthenticated());
            assertTrue(pollsAnswered.tryAcquire(10, TimeUnit.SECONDS));
            clock.advance(engine.tick()); // until the heartbeat asks again
            engine.tick();
            assertEquals(3, api.heartbeatTimes.size());
            assertTrue("one refusal, then an answer: " + unpairedReasons, unpairedReasons.isEmpty());
            assertFalse(engine.status().unpaired);
        } finally {
            engine.stop();
            pollThread.shutdownNow();
        }
    }
}
