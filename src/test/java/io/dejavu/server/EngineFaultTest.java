package io.dejavu.server;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.model.OptConfig;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.net.http.HttpResponse;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** An engine failure fails the requests of that step with a clear error; the server goes on serving. */
class EngineFaultTest {
    private static final AtomicBoolean failNextStep = new AtomicBoolean();
    private static TestServer server;

    /** The real CPU engine, made to fail one forward pass on demand. */
    private record FailingOnce(Engine engine) implements Engine {
        @Override
        public OptConfig config() {
            return engine.config();
        }

        @Override
        public String backend() {
            return engine.backend();
        }

        @Override
        public Sequence newSequence() {
            return engine.newSequence();
        }

        @Override
        public List<float[][]> forward(List<Step> steps) {
            if (failNextStep.getAndSet(false)) throw new IllegalStateException("simulated device fault");
            return engine.forward(steps);
        }

        @Override
        public void close() {
            engine.close();
        }
    }

    @BeforeAll
    static void start() {
        server = TestServer.start(Map.of(), (backend, model, predictors) -> new FailingOnce(new CpuEngine(model)));
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    @Test
    void aFailedStepFailsItsRequestsOnly() {
        String request = "{\"prompt\": \"The king said\", \"max_tokens\": 4, \"temperature\": 0}";
        failNextStep.set(true);
        HttpResponse<String> failed = server.post("/v1/completions", request);
        assertEquals(500, failed.statusCode());
        JsonObject error = new JsonObject(failed.body()).getJsonObject("error");
        assertEquals("engine_error", error.getString("code"));
        assertTrue(error.getString("message").contains("simulated device fault"), error.getString("message"));

        HttpResponse<String> next = server.post("/v1/completions", request);
        assertEquals(200, next.statusCode(), next.body());
        assertEquals(4, new JsonObject(next.body()).getJsonObject("usage").getInteger("completion_tokens"));
        assertEquals(200, server.get("/health").statusCode());
        assertTrue(server.get("/metrics").body().contains("dejavu_errors_total{kind=\"engine\"} 1"));
    }
}
