package io.dejavu.server;

import io.dejavu.engine.cpu.CpuEngine;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.net.http.HttpResponse;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** An engine failure fails the requests of that step with a clear error; the server goes on serving. */
class EngineFaultTest {
    /** What the next forward pass throws, if anything. */
    private static final AtomicReference<Throwable> failNextStep = new AtomicReference<>();
    private static TestServer server;

    @BeforeAll
    static void start() {
        server = TestServer.start(Map.of(), (backend, cpuThreads, kvCacheMib, model, predictors) ->
                new HookedEngine(new CpuEngine(model), () -> {
                    switch (failNextStep.getAndSet(null)) {
                        case null -> { }
                        case RuntimeException e -> throw e;
                        case Error e -> throw e;
                        default -> throw new IllegalStateException("unchecked throwables only");
                    }
                }));
    }

    @AfterAll
    static void stop() {
        server.close();
    }

    /** An exception, and an Error such as running out of memory, which the engine thread survives as well. */
    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void aFailedStepFailsItsRequestsOnly(boolean error) {
        String fault = error ? "simulated out of memory" : "simulated device fault";
        long before = engineErrors();
        String request = "{\"prompt\": \"The king said\", \"max_tokens\": 4, \"temperature\": 0}";
        failNextStep.set(error ? new OutOfMemoryError(fault) : new IllegalStateException(fault));
        HttpResponse<String> failed = server.post("/v1/completions", request);
        assertEquals(500, failed.statusCode());
        JsonObject body = new JsonObject(failed.body()).getJsonObject("error");
        assertEquals("engine_error", body.getString("code"));
        assertTrue(body.getString("message").contains(fault), body.getString("message"));

        HttpResponse<String> next = server.post("/v1/completions", request);
        assertEquals(200, next.statusCode(), next.body());
        assertEquals(4, new JsonObject(next.body()).getJsonObject("usage").getInteger("completion_tokens"));
        assertEquals(200, server.get("/health").statusCode());
        assertEquals(before + 1, engineErrors());
    }

    private static long engineErrors() {
        String prefix = "dejavu_errors_total{kind=\"engine\"} ";
        return server.get("/metrics").body().lines().filter(l -> l.startsWith(prefix))
                .mapToLong(l -> Long.parseLong(l.substring(prefix.length()))).sum();
    }
}
