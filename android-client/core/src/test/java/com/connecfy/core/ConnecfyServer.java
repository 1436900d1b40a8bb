package com.connecfy.core;

import java.io.File;
import java.io.IOException;
import java.net.HttpURLConnection;
import java.net.ServerSocket;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * A real {@code connecfy serve} process on a loopback port with its private Redis in a
 * data directory, for the integration test. Started again on the same directory and
 * port it keeps its data (append-only file), as a restarted server does.
 */
final class ConnecfyServer {
    private final String binary;
    private final File dataDir;
    private final Map<String, String> settings;
    final int port;
    final String url;
    private final File log;
    private Process process;

    ConnecfyServer(String binary, File dataDir, Map<String, String> settings) throws IOException {
        this.binary = binary;
        this.dataDir = dataDir;
        this.settings = settings;
        ServerSocket socket = new ServerSocket(0);
        this.port = socket.getLocalPort();
        socket.close();
        this.url = "http://127.0.0.1:" + port;
        this.log = new File(dataDir, "server.log");
        if (!dataDir.isDirectory() && !dataDir.mkdirs()) {
            throw new IOException("cannot create " + dataDir);
        }
    }

    void start() throws IOException, InterruptedException {
        ProcessBuilder builder = new ProcessBuilder(binary, "serve", "--host", "127.0.0.1", "--port",
            String.valueOf(port), "--data-dir", dataDir.getPath(), "--workers", "1");
        builder.directory(dataDir);
        builder.redirectErrorStream(true);
        builder.redirectOutput(ProcessBuilder.Redirect.appendTo(log));
        Map<String, String> env = builder.environment();
        env.remove("REDIS_URL");
        env.keySet().removeIf(k -> k.startsWith("CONNECFY_"));
        env.putAll(settings);
        process = builder.start();
        long deadline = System.currentTimeMillis() + 20000;
        String last = "no answer";
        while (System.currentTimeMillis() < deadline) {
            if (!process.isAlive()) {
                throw new IllegalStateException("connecfy serve exited with " + process.exitValue() + ":\n" + output());
            }
            try {
                HttpURLConnection c = (HttpURLConnection) new URL(url + "/readyz").openConnection();
                c.setConnectTimeout(1000);
                c.setReadTimeout(1000);
                int status = c.getResponseCode();
                c.disconnect();
                if (status == 200) {
                    return;
                }
                last = "HTTP " + status;
            } catch (IOException e) {
                last = e.toString();
            }
            Thread.sleep(100);
        }
        process.destroyForcibly();
        throw new IllegalStateException("connecfy serve not ready (" + last + "):\n" + output());
    }

    /** SIGTERM; the exit status. */
    int stop() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(15, TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor();
            throw new IllegalStateException("connecfy serve ignored SIGTERM:\n" + output());
        }
        return process.exitValue();
    }

    void kill() {
        if (process != null && process.isAlive()) {
            process.destroyForcibly();
        }
    }

    String output() {
        try {
            return new String(Files.readAllBytes(log.toPath()), StandardCharsets.UTF_8);
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }
}
