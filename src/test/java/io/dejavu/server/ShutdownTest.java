package io.dejavu.server;

import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import io.vertx.junit5.VertxExtension;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Graceful shutdown: in-flight generations get the grace period, then end as cancelled; WebSockets close with 1001. */
@ExtendWith(VertxExtension.class)
class ShutdownTest {
    @Test
    void inFlightGenerationsEndCleanlyAndSocketsCloseGoingAway(Vertx vertx) throws Exception {
        TestServer server = TestServer.start(Map.of("shutdown_grace_seconds", "1", "max_output_tokens", "1000"));
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(new JsonObject().put("type", "generate").put("id", "short").put("prompt", "The").put("max_tokens", 2));
            ws.send(new JsonObject().put("type", "generate").put("id", "long").put("prompt", "The").put("max_tokens", 1000));
            ws.next("token");
            Thread closing = Thread.ofPlatform().start(server::close);
            int done = 0;
            while (done < 2) {
                JsonObject message = ws.next("done");
                assertEquals(message.getString("id").equals("short") ? "length" : "cancelled",
                        message.getString("finish_reason"), message.encode());
                done++;
            }
            closing.join(30_000);
            long deadline = System.nanoTime() + 5_000_000_000L;
            while (!ws.closed && System.nanoTime() < deadline) Thread.sleep(10);
            assertTrue(ws.closed);
            assertEquals((short) 1001, ws.closeStatus);
        }
    }
}
