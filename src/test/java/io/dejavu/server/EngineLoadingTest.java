package io.dejavu.server;

import io.dejavu.engine.EngineFactory;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The HTTP side listens before the model is loaded: /health says the engine is loading, requests get a 503. */
class EngineLoadingTest {
    @Test
    void whileTheModelLoadsHealthAndRequestsSaySo() throws Exception {
        CountDownLatch loaded = new CountDownLatch(1);
        int port = TestServer.freePort();
        CompletableFuture<TestServer> started = CompletableFuture.supplyAsync(() -> TestServer.start(
                Map.of("port", Integer.toString(port)), (backend, cpuThreads, kvCacheMib, model, predictors) -> {
                    try {
                        loaded.await();
                    } catch (InterruptedException e) {
                        throw new IllegalStateException(e);
                    }
                    return EngineFactory.create(backend, cpuThreads, kvCacheMib, model, predictors);
                }));
        try (HttpClient http = HttpClient.newHttpClient()) {
            String base = "http://127.0.0.1:" + port;
            HttpResponse<String> health = null;
            long deadline = System.nanoTime() + 60_000_000_000L;
            while (health == null && System.nanoTime() < deadline) {
                try {
                    health = http.send(HttpRequest.newBuilder(URI.create(base + "/health")).build(),
                            HttpResponse.BodyHandlers.ofString());
                } catch (IOException notListeningYet) {
                    Thread.sleep(50);
                }
            }
            assertEquals(503, health.statusCode(), health.body());
            JsonObject body = new JsonObject(health.body());
            assertTrue(body.getBoolean("live"));
            assertFalse(body.getBoolean("ready"));
            assertEquals("loading", body.getJsonObject("engine").getString("state"));

            HttpResponse<String> early = http.send(HttpRequest.newBuilder(URI.create(base + "/v1/completions"))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": \"The\", \"max_tokens\": 2}"))
                    .header("Content-Type", "application/json").build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(503, early.statusCode(), early.body());
            assertEquals("engine_not_ready", new JsonObject(early.body()).getJsonObject("error").getString("code"));
        } finally {
            loaded.countDown();
        }
        try (TestServer server = started.get(60, TimeUnit.SECONDS)) {
            assertEquals(200, server.get("/health").statusCode());
            assertEquals(200, server.post("/v1/completions", "{\"prompt\": \"The\", \"max_tokens\": 2}").statusCode());
        }
    }
}
