package io.dejavu.server;

import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.net.http.HttpResponse;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** GET /v1/models/{id}: OpenAI's model object with the model card the playground shows, and the page at /. */
class PlaygroundEndpointsTest {
    private static TestServer server;

    @BeforeAll
    static void start() {
        server = TestServer.start(Map.of());
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    @Test
    void modelCardDescribesTheServedModel() {
        HttpResponse<String> response = server.get("/v1/models/opt-demo");
        assertEquals(200, response.statusCode());
        JsonObject model = new JsonObject(response.body());
        assertEquals("opt-demo", model.getString("id"));
        assertEquals("model", model.getString("object"));
        JsonObject card = model.getJsonObject("card");
        assertEquals("opt-demo", card.getString("name"));
        // The total model.safetensors.index.json of opt-demo records, as transformers counted it.
        assertEquals(8_678_400L, card.getLong("parameters"));
        assertEquals(8, card.getInteger("layers"));
        assertEquals(4, card.getInteger("heads"));
        assertEquals(256, card.getInteger("hidden_size"));
        assertEquals(1024, card.getInteger("neurons"));
        assertEquals("cpu", card.getString("backend"));
        // models/opt-demo/dejavu holds calibrated predictors; the default settings load them, requests default dense.
        assertEquals("dense by default, sparse on request", card.getString("sparsity"));
        assertEquals(true, card.getBoolean("predictors_calibrated"));
        // fp16 weights plus the safetensors headers.
        assertTrue(card.getLong("weights_bytes") > 2 * 8_678_400L, card.encode());
    }

    @Test
    void anotherModelIsNotFound() {
        HttpResponse<String> response = server.get("/v1/models/opt-13b");
        assertEquals(404, response.statusCode());
        JsonObject error = new JsonObject(response.body()).getJsonObject("error");
        assertEquals("model_not_found", error.getString("code"));
        assertTrue(error.getString("message").contains("opt-demo"), error.getString("message"));
    }

    @Test
    void thePlaygroundIsServedAtTheRoot() {
        HttpResponse<String> response = server.get("/");
        assertEquals(200, response.statusCode());
        assertTrue(response.body().contains("<script type=\"module\""), "the page loads its ES modules");
        HttpResponse<String> module = server.get("/js/main.js");
        assertEquals(200, module.statusCode());
        assertTrue(module.headers().firstValue("Content-Type").orElse("").startsWith("text/javascript"));
        // Unversioned files: nothing may tell a browser to keep them after an upgrade.
        assertTrue(module.headers().firstValue("Cache-Control").isEmpty(), module.headers().toString());
    }
}
