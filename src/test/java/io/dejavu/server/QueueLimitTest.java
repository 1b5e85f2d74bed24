package io.dejavu.server;

import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import io.vertx.junit5.VertxExtension;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.net.http.HttpResponse;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Beyond one running and one waiting request, requests are refused at once: 429 with Retry-After, or a WebSocket error. */
@ExtendWith(VertxExtension.class)
class QueueLimitTest {
    private static TestServer server;

    @BeforeAll
    static void start() {
        // 1000 tokens at 5 ms a step or more: the running request outlasts the test's steps on any engine.
        server = TestServer.start(Map.of("max_batch_size", "1", "queue_limit", "1", "max_output_tokens", "1000"),
                HookedEngine.slowed(5));
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    private static JsonObject generate(String id) {
        return new JsonObject().put("type", "generate").put("id", id).put("prompt", "And the LORD").put("max_tokens", 1000);
    }

    @Test
    void aFullQueueRefusesAtOnce(Vertx vertx) throws Exception {
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(generate("running"));
            assertEquals("running", ws.next("token").getString("id"));
            ws.send(generate("waiting"));
            // The second waits in the queue; give its submission time to land before filling past the limit.
            long deadline = System.nanoTime() + 5_000_000_000L;
            while (queued() < 1 && System.nanoTime() < deadline) Thread.sleep(10);
            assertEquals(1, queued());

            HttpResponse<String> refused = server.post("/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 1}");
            assertEquals(429, refused.statusCode());
            assertEquals("1", refused.headers().firstValue("Retry-After").orElseThrow());
            assertEquals("queue_full", new JsonObject(refused.body()).getJsonObject("error").getString("code"));

            ws.send(generate("third"));
            JsonObject error = ws.next("error");
            assertEquals("third", error.getString("id"));
            assertEquals("queue_full", error.getJsonObject("error").getString("code"));

            // A waiting request that is cancelled ends at once and gives its place back, while the running one goes on.
            ws.send(new JsonObject().put("type", "cancel").put("id", "waiting"));
            JsonObject waitingDone = ws.next("done");
            assertEquals("waiting", waitingDone.getString("id"));
            assertEquals("cancelled", waitingDone.getString("finish_reason"));
            assertEquals(0, queued());
            ws.send(generate("fourth"));
            deadline = System.nanoTime() + 5_000_000_000L;
            while (queued() < 1 && System.nanoTime() < deadline) Thread.sleep(10);
            assertEquals(1, queued());

            ws.send(new JsonObject().put("type", "cancel").put("id", "running"));
            ws.send(new JsonObject().put("type", "cancel").put("id", "fourth"));
            int cancelled = 0;
            while (cancelled < 2) {
                JsonObject done = ws.next("done");
                assertEquals("cancelled", done.getString("finish_reason"));
                cancelled++;
            }
        }
        String metrics = server.get("/metrics").body();
        assertTrue(metrics.contains("dejavu_errors_total{kind=\"queue_full\"} 2"), metrics);
    }

    private static int queued() {
        return new JsonObject(server.get("/health").body()).getJsonObject("engine").getInteger("queued");
    }
}
