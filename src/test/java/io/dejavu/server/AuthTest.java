package io.dejavu.server;

import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import io.vertx.junit5.VertxExtension;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** With api_keys set, the API wants a Bearer key; /health and /metrics stay open. */
@ExtendWith(VertxExtension.class)
class AuthTest {
    private static TestServer server;

    @BeforeAll
    static void start() {
        server = TestServer.start(Map.of("api_keys", "first-key,second-key"));
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    private static HttpResponse<String> models(String authorization) {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(server.url("/v1/models"))).GET();
        if (authorization != null) request.header("Authorization", authorization);
        return server.send(request);
    }

    @Test
    void theApiWantsAnAcceptedKey() {
        HttpResponse<String> missing = models(null);
        assertEquals(401, missing.statusCode());
        assertEquals("Bearer", missing.headers().firstValue("WWW-Authenticate").orElseThrow());
        assertEquals("invalid_api_key", new JsonObject(missing.body()).getJsonObject("error").getString("code"));
        assertEquals(401, models("Bearer first-ke").statusCode());
        assertEquals(401, models("Bearer first-key-and-more").statusCode());
        assertEquals(401, models("Basic first-key").statusCode());
        assertEquals(200, models("Bearer first-key").statusCode());
        assertEquals(200, models("bearer second-key").statusCode());
        assertEquals(401, server.post("/v1/completions", "{\"prompt\": \"x\"}").statusCode());
    }

    @Test
    void healthAndMetricsNeedNoKey() {
        assertEquals(200, server.get("/health").statusCode());
        assertEquals(200, server.get("/metrics").statusCode());
    }

    @Test
    void webSocketsTakeTheKeyInTheHeaderOrTheQuery(Vertx vertx) throws Exception {
        assertThrows(Exception.class, () -> WsClient.connect(vertx, server.port, "/ws", null).close());
        assertThrows(Exception.class, () -> WsClient.connect(vertx, server.port, "/ws?api_key=wrong", null).close());
        for (WsClient ws : new WsClient[]{WsClient.connect(vertx, server.port, "/ws", "Bearer second-key"),
                WsClient.connect(vertx, server.port, "/ws?api_key=first-key", null)}) {
            try (ws) {
                ws.send(new JsonObject().put("type", "generate").put("id", "a").put("prompt", "The").put("max_tokens", 2));
                assertEquals("a", ws.next("done").getString("id"));
            }
        }
    }
}
