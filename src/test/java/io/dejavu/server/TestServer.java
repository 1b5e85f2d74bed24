package io.dejavu.server;

import io.dejavu.engine.EngineFactory;
import io.dejavu.config.ServiceConfig;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

/** A real server on a free loopback port with the shipped opt-demo model and the CPU engine, and an HTTP client. */
final class TestServer implements AutoCloseable {
    final DejavuServer server;
    final int port;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();

    private TestServer(DejavuServer server, int port) {
        this.server = server;
        this.port = port;
    }

    static TestServer start(Map<String, String> settings) {
        return start(settings, EngineFactory::create);
    }

    static TestServer start(Map<String, String> settings, EngineFactory.Maker engines) {
        Map<String, String> all = new HashMap<>(Map.of("model", "models/opt-demo", "backend", "cpu",
                "host", "127.0.0.1", "port", Integer.toString(freePort()), "http_instances", "1",
                "shutdown_grace_seconds", "2"));
        all.putAll(settings);
        ServiceConfig config = ServiceConfig.load(Path.of("conf/config.json"), Map.of(), all);
        return new TestServer(DejavuServer.start(config, "opt-demo", engines), config.port());
    }

    static int freePort() {
        try (ServerSocket socket = new ServerSocket(0)) {
            return socket.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    String url(String path) {
        return "http://127.0.0.1:" + port + path;
    }

    HttpResponse<String> get(String path) {
        return send(HttpRequest.newBuilder(URI.create(url(path))).GET());
    }

    HttpResponse<String> post(String path, String body) {
        return send(HttpRequest.newBuilder(URI.create(url(path))).POST(HttpRequest.BodyPublishers.ofString(body))
                .header("Content-Type", "application/json"));
    }

    HttpResponse<String> send(HttpRequest.Builder request) {
        try {
            return http.send(request.timeout(Duration.ofSeconds(120)).build(), HttpResponse.BodyHandlers.ofString());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException(e);
        }
    }

    HttpClient http() {
        return http;
    }

    @Override
    public void close() {
        server.close();
        http.close();
    }
}
