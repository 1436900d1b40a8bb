package com.connecfy.core;

import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class PairingTest {
    @Rule
    public TemporaryFolder folder = new TemporaryFolder();

    @Test
    public void loadDoesNotWaitForARegisterInProgress() throws Exception {
        final Pairing pairing = new Pairing(TempDir.storage(folder, "phone"));
        final ServerSocket server = new ServerSocket(0);
        final CountDownLatch requested = new CountDownLatch(1);
        final Socket[] accepted = new Socket[1];
        Thread slowServer = new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    Socket socket = server.accept();
                    accepted[0] = socket;
                    InputStream in = socket.getInputStream();
                    in.read(); // the request arrived; no answer comes
                    requested.countDown();
                } catch (IOException e) {
                    requested.countDown();
                }
            }
        });
        slowServer.start();
        final PairingPayload payload = PairingPayload.parse(
            "connecfy://pair?server=http%3A%2F%2F127.0.0.1%3A" + server.getLocalPort() + "&code=K7M2QX9D");
        Thread pair = new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    pairing.pair(payload, "Phone", "", "test", Clock.SYSTEM);
                } catch (Exception expected) {
                    // the server hangs up
                }
            }
        });
        pair.start();
        assertTrue(requested.await(5, TimeUnit.SECONDS));
        final CountDownLatch loaded = new CountDownLatch(1);
        Thread ui = new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    pairing.load();
                } catch (IOException e) {
                    throw new IllegalStateException(e);
                }
                loaded.countDown();
            }
        });
        ui.start();
        try {
            assertTrue("load() returns while register waits for its answer", loaded.await(2, TimeUnit.SECONDS));
        } finally {
            accepted[0].close();
            server.close();
            pair.join(5000);
            ui.join(5000);
        }
    }
}
