package io.dejavu.server;

import io.vertx.core.Vertx;
import io.vertx.core.http.WebSocketClientOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.junit5.VertxExtension;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.HashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The /ws protocol against a real server and the CPU engine. */
@ExtendWith(VertxExtension.class)
class WebSocketApiTest {
    private static TestServer server;

    @BeforeAll
    static void start() {
        server = TestServer.start(Map.of("max_frame_bytes", "2048"));
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    private static JsonObject generate(String id, String prompt, int maxTokens) {
        return new JsonObject().put("type", "generate").put("id", id).put("prompt", prompt)
                .put("max_tokens", maxTokens).put("temperature", 0);
    }

    @Test
    void tokensArriveInOrderThenDoneWithUsage(Vertx vertx) throws Exception {
        JsonObject http = new JsonObject(server.post("/v1/completions",
                "{\"prompt\": \"The king said\", \"max_tokens\": 10, \"temperature\": 0}").body());
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(generate("g1", "The king said", 10));
            StringBuilder text = new StringBuilder();
            int index = 0;
            while (true) {
                JsonObject message = ws.next();
                assertEquals("g1", message.getString("id"));
                if (message.getString("type").equals("done")) {
                    assertEquals(index, message.getJsonObject("usage").getInteger("completion_tokens"));
                    assertEquals(http.getJsonArray("choices").getJsonObject(0).getString("finish_reason"),
                            message.getString("finish_reason"));
                    assertTrue(message.getJsonObject("timing").getDouble("time_to_first_token_ms") > 0);
                    break;
                }
                assertEquals("token", message.getString("type"));
                assertEquals(index++, message.getInteger("index"));
                assertTrue(message.getInteger("token_id") >= 0);
                assertTrue(message.containsKey("sparsity"), "the field is there for the sparse engine");
                assertNull(message.getValue("sparsity"), "a dense engine reports no sparsity");
                assertTrue(message.getJsonObject("timing").getDouble("step_ms") > 0);
                text.append(message.getString("text"));
            }
            assertEquals(http.getJsonArray("choices").getJsonObject(0).getString("text"), text.toString());
        }
    }

    @Test
    void severalGenerationsShareOneConnection(Vertx vertx) throws Exception {
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(generate("a", "In the beginning", 6));
            ws.send(new JsonObject().put("type", "generate").put("id", "b").put("max_tokens", 6).put("temperature", 0)
                    .put("messages", new JsonArray().add(new JsonObject().put("role", "user").put("content", "Hi"))));
            Map<String, Integer> next = new HashMap<>(Map.of("a", 0, "b", 0));
            int done = 0;
            while (done < 2) {
                JsonObject message = ws.next();
                String id = message.getString("id");
                if (message.getString("type").equals("done")) {
                    assertEquals(next.get(id), message.getJsonObject("usage").getInteger("completion_tokens"));
                    done++;
                } else {
                    assertEquals(next.get(id), message.getInteger("index"), "tokens of " + id + " in order, none twice");
                    next.put(id, next.get(id) + 1);
                }
            }
        }
    }

    @Test
    void cancelEndsTheGenerationAsCancelled(Vertx vertx) throws Exception {
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(generate("long", "And the LORD", 250));
            ws.next("token");
            ws.send(new JsonObject().put("type", "cancel").put("id", "long"));
            JsonObject done = ws.next("done");
            assertEquals("cancelled", done.getString("finish_reason"));
            assertTrue(done.getJsonObject("usage").getInteger("completion_tokens") < 250);
        }
    }

    @Test
    void badMessagesGetErrorsAndTheConnectionGoesOn(Vertx vertx) throws Exception {
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.sendText("{not json");
            assertError(ws.next(), null, "invalid_json");
            ws.send(new JsonObject().put("type", "generate").put("prompt", "x"));
            assertError(ws.next(), null, "invalid_value");
            ws.send(new JsonObject().put("type", "dance").put("id", "t"));
            assertError(ws.next(), "t", "invalid_value");
            ws.send(generate("p", "x", 5).put("top_p", 7));
            JsonObject badParam = ws.next();
            assertError(badParam, "p", "invalid_value");
            assertEquals("top_p", badParam.getJsonObject("error").getString("param"));
            ws.send(generate("u", "x", 5).put("stream", true));
            assertError(ws.next(), "u", "unknown_parameter");
            ws.send(new JsonObject().put("type", "cancel").put("id", "nobody"));
            assertError(ws.next(), "nobody", "not_found");
            ws.send(generate("big", "x ".repeat(2000), 5));
            assertError(ws.next(), "big", "message_too_large");
            ws.sendText("[\"" + "x".repeat(3000) + "\"]");
            assertError(ws.next(), null, "message_too_large");

            ws.send(generate("ok", "The", 3));
            assertEquals("ok", ws.next("done").getString("id"));
            assertFalse(ws.closed);
        }
    }

    /**
     * Past 4 times max_frame_bytes Vert.x does not read the message at all; the connection closes with 1009 (message
     * too big), whether the message came in one frame or in several.
     */
    @ParameterizedTest
    @ValueSource(ints = {65536, 4096})
    void aMessageFarPastTheLimitClosesTheConnectionAsTooBig(int clientFrameBytes, Vertx vertx) throws Exception {
        try (WsClient ws = WsClient.connect(vertx, server.port, "/ws", null,
                new WebSocketClientOptions().setMaxFrameSize(clientFrameBytes))) {
            ws.send(generate("huge", "x ".repeat(5000), 5));
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (!ws.closed && System.nanoTime() < deadline) Thread.sleep(10);
            assertTrue(ws.closed);
            assertEquals((short) 1009, ws.closeStatus);
        }
        assertEquals(200, server.get("/health").statusCode());
    }

    @Test
    void aDuplicateIdIsRefused(Vertx vertx) throws Exception {
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(generate("same", "And the LORD", 250));
            ws.send(generate("same", "And the LORD", 5));
            JsonObject message = ws.next();
            while (!message.getString("type").equals("error")) message = ws.next();
            assertError(message, "same", "invalid_value");
            ws.send(new JsonObject().put("type", "cancel").put("id", "same"));
            assertEquals("cancelled", ws.next("done").getString("finish_reason"));
        }
    }

    @Test
    void closingTheConnectionCancelsItsGenerations(Vertx vertx) throws Exception {
        long before = finished("cancelled");
        WsClient ws = WsClient.connect(vertx, server.port);
        ws.send(generate("x", "And the LORD", 250));
        ws.send(generate("y", "In the beginning", 250));
        ws.next("token");
        ws.close();
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (finished("cancelled") < before + 2 && System.nanoTime() < deadline) Thread.sleep(20);
        assertEquals(before + 2, finished("cancelled"));
    }

    private static long finished(String reason) {
        String prefix = "dejavu_finished_total{reason=\"" + reason + "\"} ";
        return server.get("/metrics").body().lines().filter(l -> l.startsWith(prefix))
                .mapToLong(l -> Long.parseLong(l.substring(prefix.length()))).sum();
    }

    private static void assertError(JsonObject message, String id, String code) {
        assertEquals("error", message.getString("type"), message.encode());
        assertEquals(id, message.getString("id"), message.encode());
        assertEquals(code, message.getJsonObject("error").getString("code"), message.encode());
    }
}
