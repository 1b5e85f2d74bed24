package io.dejavu.server;

import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import io.vertx.junit5.VertxExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Graceful shutdown: new work is refused at once, in-flight generations get the grace period (and can still be
 * cancelled), then end as cancelled; WebSockets close with 1001.
 */
@ExtendWith(VertxExtension.class)
class ShutdownTest {
    @Test
    void inFlightGenerationsEndCleanlyAndSocketsCloseGoingAway(Vertx vertx) throws Exception {
        // At 5 ms a step or more, "long" cannot finish its 1000 tokens within the grace, however fast the engine.
        TestServer server = TestServer.start(Map.of("shutdown_grace_seconds", "2", "max_output_tokens", "1000"),
                HookedEngine.slowed(5));
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(new JsonObject().put("type", "generate").put("id", "short").put("prompt", "The").put("max_tokens", 2));
            ws.send(new JsonObject().put("type", "generate").put("id", "long").put("prompt", "The").put("max_tokens", 1000));
            ws.send(new JsonObject().put("type", "generate").put("id", "leaves").put("prompt", "The").put("max_tokens", 1000));
            ws.next("token");
            Thread closing = Thread.ofPlatform().start(server::close);
            // Draining: not ready any more, and new work is refused while the running generation may finish.
            long deadline = System.nanoTime() + 5_000_000_000L;
            HttpResponse<String> health = server.get("/health");
            while (health.statusCode() == 200 && System.nanoTime() < deadline) health = server.get("/health");
            assertEquals(503, health.statusCode());
            assertEquals("draining", new JsonObject(health.body()).getJsonObject("engine").getString("state"));
            HttpResponse<String> late = server.post("/v1/completions", "{\"prompt\": \"The\", \"max_tokens\": 2}");
            assertEquals(503, late.statusCode());
            assertEquals("shutting_down", new JsonObject(late.body()).getJsonObject("error").getString("code"));
            // A client may still cancel while the server drains: its generation ends now, not at the end of the grace.
            ws.send(new JsonObject().put("type", "cancel").put("id", "leaves"));
            List<String> order = new ArrayList<>();
            while (order.size() < 3) {
                JsonObject message = ws.next("done");
                assertEquals(message.getString("id").equals("short") ? "length" : "cancelled",
                        message.getString("finish_reason"), message.encode());
                order.add(message.getString("id"));
            }
            assertTrue(order.indexOf("leaves") < order.indexOf("long"), order.toString());
            closing.join(30_000);
            deadline = System.nanoTime() + 5_000_000_000L;
            while (!ws.closed && System.nanoTime() < deadline) Thread.sleep(10);
            assertTrue(ws.closed);
            assertEquals((short) 1001, ws.closeStatus);
        }
    }
}
