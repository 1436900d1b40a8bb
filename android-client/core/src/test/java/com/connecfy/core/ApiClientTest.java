package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.json.JSONException;
import org.json.JSONObject;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;
import com.sun.net.httpserver.HttpServer;

/** The HTTP client against a scripted local HTTP server: what goes on the wire, how errors map. */
public class ApiClientTest {
    private HttpServer server;
    private final List<String> requests = new ArrayList<String>();
    private final List<String> bodies = new ArrayList<String>();
    private final List<String> tokens = new ArrayList<String>();
    private int status = 200;
    private String reply = "{}";
    private String contentType = "application/json";
    private String retryAfter;
    /** The server answers every request this much later (or when {@link #released}). */
    private volatile long delayMillis;
    private final CountDownLatch released = new CountDownLatch(1);
    private final FakeClock clock = new FakeClock(1445412480000L);

    @Before
    public void start() throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/", new HttpHandler() {
            @Override
            public void handle(HttpExchange exchange) throws IOException {
                requests.add(exchange.getRequestMethod() + " " + exchange.getRequestURI()
                    + " " + exchange.getRequestHeaders().getFirst("Content-Type"));
                tokens.add(exchange.getRequestHeaders().getFirst("X-Device-Token"));
                bodies.add(read(exchange.getRequestBody()));
                if (delayMillis > 0) {
                    try {
                        released.await(delayMillis, TimeUnit.MILLISECONDS);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                byte[] bytes = reply.getBytes("UTF-8");
                exchange.getResponseHeaders().set("Content-Type", contentType);
                if (retryAfter != null) {
                    exchange.getResponseHeaders().set("Retry-After", retryAfter);
                }
                exchange.sendResponseHeaders(status, bytes.length == 0 ? -1 : bytes.length);
                OutputStream out = exchange.getResponseBody();
                out.write(bytes);
                out.close();
            }
        });
        server.start();
    }

    @After
    public void stop() {
        released.countDown();
        server.stop(0);
    }

    private static String read(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buffer = new byte[4096];
        int n;
        while ((n = in.read(buffer)) > 0) {
            out.write(buffer, 0, n);
        }
        return new String(out.toByteArray(), "UTF-8");
    }

    private String base() {
        return "http://127.0.0.1:" + server.getAddress().getPort() + "/";
    }

    private ApiClient device() {
        return new ApiClient(new DeviceCredentials(base(), "dev1", "tok-secret", "Pixel", 0), "test", clock);
    }

    @Test
    public void registerSendsTheCodeAndNameAndOnlyASharedNumber() throws Exception {
        status = 201;
        reply = "{\"device_id\":\"D1\",\"device_token\":\"T1\",\"device_name\":\"Pixel 7\"}";
        DeviceCredentials c = new ApiClient(base(), "test", clock).register("k7m2-qx9d", "Pixel 7", "");
        assertEquals("POST /api/devices/register/ application/json", requests.get(0));
        JSONObject body = new JSONObject(bodies.get(0));
        assertEquals("K7M2QX9D", body.getString("code"));
        assertEquals("Pixel 7", body.getString("device_name"));
        assertFalse("no number unless the user shares it", body.has("phone_number"));
        assertNull("register needs no token", tokens.get(0));
        assertEquals("D1", c.deviceId);
        assertEquals("T1", c.deviceToken);
        assertEquals(base().substring(0, base().length() - 1), c.server);
        assertEquals(clock.now(), c.pairedAt);

        new ApiClient(base(), "test", clock).register("K7M2QX9D", "Pixel 7", " +15551234567 ");
        assertEquals("+15551234567", new JSONObject(bodies.get(1)).getString("phone_number"));
    }

    @Test
    public void deviceCallsCarryTheTokenOnTheDocumentedPaths() throws Exception {
        reply = "{\"status\":\"ok\",\"device_id\":\"dev1\",\"last_seen\":\"2025-01-01T00:00:00Z\"}";
        assertEquals("2025-01-01T00:00:00Z", device().heartbeat(new Heartbeat(81, "14", "1.0.0")));
        JSONObject beat = new JSONObject(bodies.get(0));
        assertEquals(81, beat.getInt("battery"));
        assertEquals("14", beat.getString("android_version"));
        assertEquals("1.0.0", beat.getString("app_version"));

        reply = "[{\"id\":\"M1\",\"to\":\"+15559998888\",\"message\":\"Hello\"}]";
        List<Task> tasks = device().claimTasks(10);
        assertEquals(1, tasks.size());
        assertEquals("M1", tasks.get(0).id);
        assertEquals("+15559998888", tasks.get(0).to);
        assertEquals("Hello", tasks.get(0).message);

        reply = "{\"id\":\"M1\",\"status\":\"failed\"}";
        device().reportStatus("M1", "failed", "RESULT_ERROR_RADIO_OFF (2)");
        device().reportStatus("M1", "sent", "");
        device().reportStatus("M2", "failed", "RESULT_ERROR_NO_SERVICE (4)", true, null);
        device().reportStatus("M3", "sent", "", false, 2);

        assertEquals("POST /api/devices/dev1/heartbeat/ application/json", requests.get(0));
        assertEquals("GET /api/devices/dev1/tasks/?limit=10 null", requests.get(1));
        assertEquals("POST /api/sms/M1/status/ application/json", requests.get(2));
        JSONObject failed = new JSONObject(bodies.get(2));
        assertEquals("failed", failed.getString("status"));
        assertEquals("RESULT_ERROR_RADIO_OFF (2)", failed.getString("error"));
        assertFalse("no empty error on success", new JSONObject(bodies.get(3)).has("error"));
        assertFalse("no retryable unless it is", failed.has("retryable"));
        assertFalse("no sim_slot unless known", new JSONObject(bodies.get(3)).has("sim_slot"));
        JSONObject retryable = new JSONObject(bodies.get(4));
        assertTrue(retryable.getBoolean("retryable"));
        assertFalse(retryable.has("sim_slot"));
        JSONObject fromSim2 = new JSONObject(bodies.get(5));
        assertEquals(2, fromSim2.getInt("sim_slot"));
        assertFalse(fromSim2.has("retryable"));
        for (String token : tokens) {
            assertEquals("tok-secret", token);
        }
    }

    @Test
    public void aReceivedSmsGoesToTheDevicesInboundPathWithTheToken() throws Exception {
        status = 201;
        reply = "{\"id\":\"01JINBOUND\",\"direction\":\"inbound\"}";
        InboundSms sms = new InboundSms("ref-1", "+15557654321", "Hello \uD83D\uDE00", 1796472000123L, 1);
        assertEquals("01JINBOUND", device().reportInbound(sms));
        status = 200; // the same ref again: the same id
        assertEquals("01JINBOUND", device().reportInbound(sms));
        assertEquals("POST /api/devices/dev1/inbound/ application/json", requests.get(0));
        assertEquals("tok-secret", tokens.get(0));
        JSONObject body = new JSONObject(bodies.get(0));
        assertEquals("+15557654321", body.getString("from"));
        assertEquals("Hello \uD83D\uDE00", body.getString("message"));
        assertEquals("2026-12-05T12:00:00.123Z", body.getString("received_at"));
        assertEquals("ref-1", body.getString("ref"));
        assertEquals(1, body.getInt("sim_slot"));
        assertEquals(bodies.get(0), bodies.get(1));

        status = 400;
        reply = "{\"status_code\":400,\"code\":\"invalid_request\",\"detail\":\"from: not a sender\"}";
        try {
            device().reportInbound(sms);
            fail("a 400 was taken for success");
        } catch (ApiException e) {
            assertEquals(Disposition.FINAL, e.disposition());
            assertEquals("invalid_request", e.code());
        }
    }

    @Test
    public void aSuccessThatNamesNoStoredSmsIsNotTakenForOne() throws Exception {
        InboundSms sms = new InboundSms("ref-1", "+15557654321", "Hello", 0, null);
        for (String[] answer : new String[][] {{"text/html", "<html>Log in to the Wi-Fi</html>"},
                {"application/json", "{}"}, {"application/json", "{\"id\":\"\"}"}}) {
            contentType = answer[0];
            reply = answer[1];
            try {
                device().reportInbound(sms);
                fail("taken for stored: " + reply);
            } catch (IOException expected) {
                // kept and sent again with the same ref
            }
        }
    }

    @Test
    public void heartbeatOmitsUnknownFieldsAndClipsLongOnes() throws Exception {
        device().heartbeat(new Heartbeat(null, "14 with a very long vendor build suffix", null));
        JSONObject beat = new JSONObject(bodies.get(0));
        assertFalse(beat.has("battery"));
        assertFalse(beat.has("app_version"));
        assertEquals(32, beat.getString("android_version").length());
        assertEquals(100, new Heartbeat(140, null, null).battery.intValue());
    }

    @Test
    public void theJsonErrorBodyBecomesAnApiException() throws Exception {
        status = 404;
        reply = "{\"status_code\":404,\"code\":\"not_found\",\"detail\":\"no such message\"}";
        ApiException e = expectError();
        assertEquals(404, e.status());
        assertEquals("not_found", e.code());
        assertEquals("no such message", e.detail());
        assertEquals(-1, e.retryAfterMillis());
        assertEquals(Disposition.FINAL, e.disposition());
        assertFalse(e.refusesToken());
    }

    @Test
    public void tooManyRequestsCarriesRetryAfter() throws Exception {
        status = 429;
        retryAfter = "7";
        reply = "{\"status_code\":429,\"code\":\"rate_limited\",\"detail\":\"slow down\"}";
        ApiException e = expectError();
        assertEquals("rate_limited", e.code());
        assertEquals(7000, e.retryAfterMillis());
        assertEquals(Disposition.RETRY, e.disposition());

        retryAfter = "Wed, 21 Oct 2015 07:28:30 GMT";
        assertEquals(30000, expectError().retryAfterMillis());
    }

    @Test
    public void aProxyPageStillMapsByStatus() throws Exception {
        status = 502;
        contentType = "text/html";
        reply = "<html>Bad Gateway</html>";
        ApiException e = expectError();
        assertEquals("http_502", e.code());
        assertEquals(Disposition.RETRY, e.disposition());
    }

    @Test
    public void onlyTheServersJsonNotAuthenticatedRefusesTheToken() throws Exception {
        status = 401;
        reply = "{\"status_code\":401,\"code\":\"not_authenticated\",\"detail\":\"unknown device token\"}";
        assertTrue(expectError().refusesToken());
        assertEquals(Disposition.RETRY, expectError().disposition());

        contentType = "text/html; charset=utf-8";
        assertFalse("the same words, but not served as JSON", expectError().refusesToken());
        contentType = "application/json; charset=utf-8";
        assertTrue(expectError().refusesToken());
        reply = "<html><body>Please log in to the Wi-Fi</body></html>";
        contentType = "text/html";
        assertFalse("a captive portal's 401 page", expectError().refusesToken());
        contentType = "application/json";
        reply = "{\"error\":\"unauthorized\"}";
        assertFalse("another service's JSON", expectError().refusesToken());
        reply = "{\"status_code\":401,\"code\":\"invalid_credentials\",\"detail\":\"wrong password\"}";
        assertFalse("another code", expectError().refusesToken());
    }

    @Test
    public void aForbiddenAnswerNeverRefusesTheToken() throws Exception {
        status = 403;
        contentType = "text/html";
        reply = "<html>403 Forbidden (CDN)</html>";
        ApiException e = expectError();
        assertFalse("a CDN's 403 page", e.refusesToken());
        assertEquals(Disposition.RETRY, e.disposition());
        contentType = "application/json";
        reply = "{\"status_code\":403,\"code\":\"forbidden\",\"detail\":\"this token belongs to another device\"}";
        assertFalse(expectError().refusesToken());
        assertEquals(Disposition.RETRY, expectError().disposition());
    }

    @Test
    public void noServerIsAnIOException() throws Exception {
        ServerSocket socket = new ServerSocket(0);
        int port = socket.getLocalPort();
        socket.close();
        ApiClient client = new ApiClient(new DeviceCredentials("http://127.0.0.1:" + port, "d", "t", "n", 0),
            "test", clock);
        try {
            client.claimTasks(10);
            fail("no server, yet an answer");
        } catch (IOException expected) {
            // retried by the caller
        }
    }

    @Test(expected = IOException.class)
    public void anUnreadableSuccessIsAnIOException() throws Exception {
        reply = "not json";
        device().claimTasks(10);
    }

    @Test
    public void aWaitingClaimAsksToWaitAndReadsLongerThanTheWaitWhileOtherCallsKeepTheirTimeout()
            throws Exception {
        ApiClient client = device().timeouts(1000, 500);
        reply = "[]";
        client.claimTasks(10);
        assertEquals("GET /api/devices/dev1/tasks/?limit=10 null", requests.get(0));
        delayMillis = 800; // the server holds the claim longer than the plain read timeout
        assertTrue(client.claimTasks(10, 1).isEmpty());
        assertEquals("GET /api/devices/dev1/tasks/?limit=10&wait=1 null", requests.get(1));
        try {
            client.heartbeat(new Heartbeat(81, "14", "1.0.0"));
            fail("a heartbeat answered after 0.8 s did not time out at 0.5 s");
        } catch (IOException expected) {
            // java.net.SocketTimeoutException: the heartbeat's own read timeout
        }

        ApiClient defaults = device();
        assertEquals(45000, defaults.readTimeoutMillis(30));
        assertEquals(75000, defaults.readTimeoutMillis(60));
        assertEquals(20000, defaults.readTimeoutMillis(0));
        assertEquals(ApiClient.WAIT_READ_MARGIN_MILLIS + 30000, client.readTimeoutMillis(30));
    }

    @Test
    public void interruptWaitEndsAWaitingClaimAtOnce() throws Exception {
        final ApiClient client = device();
        delayMillis = 20000;
        reply = "[]";
        Thread interrupter = new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    Thread.sleep(300);
                } catch (InterruptedException e) {
                    return;
                }
                client.interruptWait();
            }
        });
        long started = System.nanoTime();
        interrupter.start();
        try {
            client.claimTasks(10, 30);
            fail("an interrupted claim answered");
        } catch (IOException expected) {
            // the connection was closed under it
        } finally {
            interrupter.join();
        }
        long tookMillis = (System.nanoTime() - started) / 1000000L;
        assertTrue("took " + tookMillis + " ms", tookMillis < 5000);
        client.interruptWait(); // with no claim waiting: nothing happens
        released.countDown();
        assertTrue(client.claimTasks(10, 30).isEmpty());
    }

    private ApiException expectError() throws IOException, JSONException {
        try {
            device().reportStatus("M1", "sent", "");
        } catch (ApiException e) {
            return e;
        }
        throw new AssertionError("no error raised for HTTP " + status);
    }
}
