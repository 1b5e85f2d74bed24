package io.dejavu.server;

import io.dejavu.engine.Engine;
import io.dejavu.engine.cuda.CudaEngine;
import io.dejavu.generation.GenerationParams;
import io.dejavu.generation.Generator;
import io.dejavu.generation.Prompts;
import io.dejavu.model.OptModel;
import io.dejavu.sampling.SamplingParams;
import io.dejavu.tokenizer.Tokenizer;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The server with the CUDA engine and opt-demo (skipped where no CUDA device or kernels are present; run on the GPU
 * machine by scripts/gpu/gpu-check.sh): greedy tokens picked on the GPU are the CUDA engine's own, seeded draws repeat
 * on the GPU and on the host, a request that needs the host's sampler runs beside one that does not, and a KV cache
 * too small for the batch preempts rather than fails.
 */
class CudaServingTest {
    private static final Path MODEL = Path.of("models/opt-demo");
    private static Vertx vertx;
    private static TestServer server;

    @BeforeEach
    void start() {
        String reason = CudaEngine.unavailableReason();
        assumeTrue(reason == null, () -> "no CUDA here: " + reason);
        if (server != null) return;
        vertx = Vertx.vertx();
        server = TestServer.start(Map.of("backend", "cuda", "max_batch_size", "4"));
    }

    @AfterAll
    static void stop() throws Exception {
        if (server != null) server.close();
        if (vertx != null) vertx.close().toCompletionStage().toCompletableFuture().get(10, TimeUnit.SECONDS);
    }

    private static JsonObject generate(String id, String prompt, int maxTokens, JsonObject sampling) {
        return new JsonObject().put("type", "generate").put("id", id).put("prompt", prompt)
                .put("max_tokens", maxTokens).mergeIn(sampling);
    }

    /** Each generation's token ids in order, sent one after another so that each runs alone (batch 1). */
    private static List<List<Integer>> runAlone(List<JsonObject> generations) throws Exception {
        return runAlone(server, generations);
    }

    private static List<List<Integer>> runAlone(TestServer server, List<JsonObject> generations) throws Exception {
        List<List<Integer>> out = new ArrayList<>();
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            for (JsonObject generation : generations) {
                ws.send(generation);
                out.add(collect(ws, 1).get(generation.getString("id")));
            }
        }
        return out;
    }

    /** The token ids of each id, in order, until {@code generations} are done, each having used all its tokens. */
    private static Map<String, List<Integer>> collect(WsClient ws, int generations) throws InterruptedException {
        Map<String, List<Integer>> tokens = new HashMap<>();
        for (int done = 0; done < generations; ) {
            JsonObject message = ws.next();
            switch (message.getString("type")) {
                case "token" -> tokens.computeIfAbsent(message.getString("id"), k -> new ArrayList<>())
                        .add(message.getInteger("token_id"));
                case "done" -> {
                    assertEquals("length", message.getString("finish_reason"), message.encode());
                    done++;
                }
                default -> throw new AssertionError("unexpected " + message.encode());
            }
        }
        return tokens;
    }

    /** Greedy tokens picked on the GPU by the server are those of the CUDA engine's logits picked on the host. */
    @Test
    void greedyTokensAreTheEnginesOwn() throws Exception {
        List<String> prompts = List.of("The President said that", "In the beginning", "Mr. Speaker, the");
        List<JsonObject> requests = new ArrayList<>();
        for (int i = 0; i < prompts.size(); i++) {
            requests.add(generate("g" + i, prompts.get(i), 12, new JsonObject().put("temperature", 0)));
        }
        List<List<Integer>> served = runAlone(requests);
        try (OptModel model = OptModel.load(MODEL);
             Engine engine = CudaEngine.load(model, CudaEngine.Options.defaults().withKvCacheBytes(64L << 20))) {
            Tokenizer tokenizer = Tokenizer.load(MODEL);
            Generator generator = new Generator(engine, tokenizer);
            for (int i = 0; i < prompts.size(); i++) {
                int[] expected = generator.generate(Prompts.withBos(tokenizer, model.config(), prompts.get(i)),
                        GenerationParams.of(12, SamplingParams.greedy()), output -> { }).generatedIds();
                assertEquals(Arrays.stream(expected).boxed().toList(), served.get(i),
                        "prompt " + i);
            }
        }
    }

    /**
     * A seed repeats a request's draws, picked on the GPU (temperature and top-p) and on the host (with a penalty,
     * which only the host applies); another seed draws otherwise.
     */
    @Test
    void seededDrawsRepeatOnTheGpuAndOnTheHost() throws Exception {
        JsonObject gpu = new JsonObject().put("temperature", 1.2).put("top_p", 0.95);
        JsonObject host = gpu.copy().put("presence_penalty", 0.5);
        List<List<Integer>> runs = runAlone(List.of(
                generate("a", "The", 16, gpu.copy().put("seed", 7)), generate("b", "The", 16, gpu.copy().put("seed", 7)),
                generate("c", "The", 16, gpu.copy().put("seed", 8)),
                generate("d", "The", 16, host.copy().put("seed", 7)), generate("e", "The", 16, host.copy().put("seed", 7)),
                generate("f", "The", 16, host.copy().put("seed", 8))));
        assertEquals(runs.get(0), runs.get(1), "the same seed on the GPU");
        assertNotEquals(runs.get(0), runs.get(2), "another seed on the GPU");
        assertEquals(runs.get(3), runs.get(4), "the same seed on the host");
        assertNotEquals(runs.get(3), runs.get(5), "another seed on the host");
    }

    /**
     * A KV cache of 4 MiB (32 blocks of 16 positions at opt-demo's shapes) holds one generation of 64 + 256 positions
     * but not four of 200: the server preempts and prefills again, and each stream gets the tokens it gets alone.
     */
    @Test
    void aSmallKvCachePreemptsAndEveryStreamGetsItsTokens() throws Exception {
        try (TestServer small = TestServer.start(Map.of("backend", "cuda", "max_batch_size", "4", "kv_cache_mib", "4",
                "max_prompt_tokens", "64", "max_output_tokens", "256"))) {
            List<String> prompts = List.of("The President said that", "In the beginning", "Mr. Speaker, the",
                    "Once upon a time");
            List<JsonObject> requests = new ArrayList<>();
            for (int i = 0; i < prompts.size(); i++) {
                requests.add(generate("k" + i, prompts.get(i), 200, new JsonObject().put("temperature", 0)));
            }
            List<List<Integer>> alone = runAlone(small, requests);
            Map<String, List<Integer>> together;
            try (WsClient ws = WsClient.connect(vertx, small.port)) {
                requests.forEach(ws::send);
                together = collect(ws, requests.size());
            }
            for (int i = 0; i < prompts.size(); i++) {
                assertEquals(alone.get(i), together.get("k" + i), "prompt " + i + " beside the others");
            }
            String metrics = small.get("/metrics").body();
            long preemptions = metrics.lines().filter(l -> l.startsWith("dejavu_preemptions_total "))
                    .mapToLong(l -> Long.parseLong(l.split(" ")[1])).sum();
            assertTrue(preemptions > 0, "four of ~205 positions do not fit 512 at once:\n" + metrics);
        }
    }

    /** A KV cache that cannot hold one generation of the longest the limits allow stops the server at start. */
    @Test
    void aKvCacheTooSmallForOneGenerationStopsTheStart() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> TestServer.start(
                Map.of("backend", "cuda", "kv_cache_mib", "1")).close());
        assertTrue(e.getMessage().contains("kv_cache_mib"), e.getMessage());
    }

    /** A request that needs the host's sampler and one that does not share steps, and both get all their tokens. */
    @Test
    void hostAndGpuSamplingShareABatch() throws Exception {
        try (WsClient ws = WsClient.connect(vertx, server.port)) {
            ws.send(generate("gpu", "The President said that", 20, new JsonObject().put("temperature", 0)));
            ws.send(generate("host", "The King", 20, new JsonObject().put("temperature", 0.8)
                    .put("frequency_penalty", 0.5).put("seed", 3)));
            Map<String, List<Integer>> tokens = collect(ws, 2);
            assertEquals(20, tokens.get("gpu").size());
            assertEquals(20, tokens.get("host").size());
        }
    }
}
