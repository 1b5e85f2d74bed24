package io.dejavu.server;

import io.vertx.core.Vertx;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.junit5.VertxExtension;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The per-request "sparse" switch against a real server with opt-demo's shipped predictors (models/opt-demo/dejavu,
 * loaded by the default "sparsity": "auto") on the CPU engine, and a server without predictors.
 */
@ExtendWith(VertxExtension.class)
class SparseServingTest {
    private static final int LAYERS = 8;
    private static TestServer server;

    @BeforeAll
    static void start() {
        server = TestServer.start(Map.of());
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    private static JsonObject generate(String id, boolean sparse, int maxTokens) {
        return new JsonObject().put("type", "generate").put("id", id).put("prompt", "The President said that")
                .put("max_tokens", maxTokens).put("temperature", 0).put("sparse", sparse);
    }

    /** The token messages of each id, in order, until every id is done. */
    private static Map<String, List<JsonObject>> collect(WsClient ws, int generations) throws InterruptedException {
        Map<String, List<JsonObject>> tokens = new HashMap<>();
        int done = 0;
        while (done < generations) {
            JsonObject message = ws.next();
            switch (message.getString("type")) {
                case "token" -> tokens.computeIfAbsent(message.getString("id"), k -> new ArrayList<>()).add(message);
                case "done" -> {
                    assertEquals("length", message.getString("finish_reason"), message.encode());
                    done++;
                }
                default -> throw new AssertionError("unexpected " + message.encode());
            }
        }
        return tokens;
    }

    private static double mean(JsonArray values) {
        double sum = 0;
        for (int i = 0; i < values.size(); i++) sum += values.getDouble(i);
        return sum / values.size();
    }

    @Test
    void sparseTokensCarryPerLayerFiguresWithMostNeuronsSkipped(Vertx vertx) throws Exception {
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(generate("s", true, 12));
            List<JsonObject> tokens = collect(ws, 1).get("s");
            assertEquals(12, tokens.size());
            // The first token comes from the prompt's pass, which stays dense.
            assertNull(tokens.getFirst().getValue("sparsity"));
            assertNull(tokens.getFirst().getValue("head_sparsity"));
            for (JsonObject token : tokens.subList(1, tokens.size())) {
                JsonArray mlp = token.getJsonArray("sparsity"), heads = token.getJsonArray("head_sparsity");
                assertNotNull(mlp, token.encode());
                assertEquals(LAYERS, mlp.size());
                assertEquals(LAYERS, heads.size());
                for (int l = 0; l < LAYERS; l++) {
                    assertTrue(mlp.getDouble(l) > 0 && mlp.getDouble(l) < 1, token.encode());
                    // The calibrated operating point keeps every head of opt-demo.
                    assertEquals(0.0, heads.getDouble(l), token.encode());
                }
                assertTrue(mean(mlp) > 0.6, "most MLP neurons are skipped: " + mlp);
            }
        }
        String metrics = server.get("/metrics").body();
        double achieved = metrics.lines().filter(l -> l.startsWith("dejavu_sparsity_achieved "))
                .mapToDouble(l -> Double.parseDouble(l.substring(l.indexOf(' ') + 1))).findFirst().orElseThrow();
        assertTrue(achieved > 0.6, "the last step ran sparse: " + achieved);
    }

    @Test
    void denseAndSparseRequestsShareOneBatch(Vertx vertx) throws Exception {
        String alone = new JsonObject(server.post("/v1/completions",
                "{\"prompt\": \"The President said that\", \"max_tokens\": 16, \"temperature\": 0}").body())
                .getJsonArray("choices").getJsonObject(0).getString("text");
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(generate("dense", false, 16));
            ws.send(generate("sparse", true, 16));
            Map<String, List<JsonObject>> tokens = collect(ws, 2);
            boolean shared = false;
            StringBuilder denseText = new StringBuilder();
            for (JsonObject token : tokens.get("dense")) {
                assertNull(token.getValue("sparsity"), "a dense request's tokens are computed densely");
                shared |= token.getJsonObject("timing").getInteger("batch_size") == 2;
                denseText.append(token.getString("text"));
            }
            assertTrue(shared, "the two requests ran in one batch");
            long sparseInPair = tokens.get("sparse").stream()
                    .filter(t -> t.getJsonObject("timing").getInteger("batch_size") == 2 && t.getValue("sparsity") != null)
                    .count();
            assertTrue(sparseInPair > 0, "sparse tokens were made in the shared batch");
            // The dense rows of a mixed batch run the dense path: the same text as the request alone.
            assertEquals(alone, denseText.toString());
        }
    }

    @Test
    void httpEndpointsTakeTheSwitch() {
        HttpResponse<String> completion = server.post("/v1/completions",
                "{\"prompt\": \"The King\", \"max_tokens\": 6, \"temperature\": 0, \"sparse\": true}");
        assertEquals(200, completion.statusCode(), completion.body());
        HttpResponse<String> chat = server.post("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", "
                + "\"content\": \"Hi\"}], \"max_tokens\": 6, \"sparse\": true, \"stream\": true}");
        assertEquals(200, chat.statusCode(), chat.body());
        assertTrue(chat.body().endsWith("data: [DONE]\n\n"), chat.body());
        HttpResponse<String> wrongType = server.post("/v1/completions", "{\"prompt\": \"The\", \"sparse\": \"yes\"}");
        assertEquals(400, wrongType.statusCode());
        assertEquals("sparse", new JsonObject(wrongType.body()).getJsonObject("error").getString("param"));
    }

    @Test
    void modelCardSaysThePredictorsAreLoaded() {
        JsonObject card = new JsonObject(server.get("/v1/models/opt-demo").body()).getJsonObject("card");
        assertEquals(true, card.getBoolean("predictors_calibrated"));
        assertEquals("dense by default, sparse on request", card.getString("sparsity"));
    }

    @Test
    void sparseWithoutPredictorsIsRefused(Vertx vertx) throws Exception {
        try (TestServer dense = TestServer.start(Map.of("sparsity", "dense"))) {
            for (String path : List.of("/v1/completions", "/v1/chat/completions")) {
                String body = path.endsWith("chat/completions")
                        ? "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"sparse\": true}"
                        : "{\"prompt\": \"The\", \"sparse\": true}";
                HttpResponse<String> response = dense.post(path, body);
                assertEquals(400, response.statusCode(), path);
                JsonObject error = new JsonObject(response.body()).getJsonObject("error");
                assertEquals("sparse", error.getString("param"));
                assertEquals("sparsity_unavailable", error.getString("code"));
                assertTrue(error.getString("message").contains("no sparsity predictors"), error.encode());
            }
            assertEquals(200, dense.post("/v1/completions", "{\"prompt\": \"The\", \"max_tokens\": 2, \"sparse\": false}")
                    .statusCode());
            try (WsClient ws = WsClient.connect(vertx, dense.port)) {
                ws.send(generate("g", true, 4));
                JsonObject error = ws.next();
                assertEquals("error", error.getString("type"));
                assertEquals("g", error.getString("id"));
                assertEquals("sparsity_unavailable", error.getJsonObject("error").getString("code"));
            }
            assertEquals(false, new JsonObject(dense.get("/v1/models/opt-demo").body()).getJsonObject("card")
                    .getBoolean("predictors_calibrated"));
        }
    }

    @Test
    void aConfiguredPredictorsDirectoryMustLoad() {
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> TestServer.start(Map.of("sparsity", "models/no-such-predictors")));
        assertTrue(e.getMessage().contains("models/no-such-predictors"), e.getMessage());
        IllegalStateException k = assertThrows(IllegalStateException.class,
                () -> TestServer.start(Map.of("sparse_heads_keep", "9")));
        assertTrue(k.getMessage().contains("sparse_heads_keep"), k.getMessage());
    }
}
