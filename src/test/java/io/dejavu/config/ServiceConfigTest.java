package io.dejavu.config;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ServiceConfigTest {
    @TempDir
    Path dir;

    private Path file(String json) throws IOException {
        Path file = dir.resolve("config.json");
        Files.writeString(file, json);
        return file;
    }

    @Test
    void theShippedFileHoldsEveryKeyWithItsDefault() {
        ServiceConfig shipped = ServiceConfig.load(Path.of("conf/config.json"), Map.of(), Map.of());
        ServiceConfig defaults = ServiceConfig.load(null, Map.of(), Map.of());
        assertEquals(defaults, shipped);
        assertEquals(Path.of("models/opt-demo"), shipped.model());
        assertEquals("auto", shipped.backend());
    }

    @Test
    void flagsWinOverTheEnvironmentWhichWinsOverTheFile() throws IOException {
        Path file = file("{\"port\": 9000, \"max_batch_size\": 4, \"api_keys\": [\"a\"], \"backend\": \"cpu\"}");
        ServiceConfig config = ServiceConfig.load(file,
                Map.of("DEJAVU_PORT", "9001", "DEJAVU_MAX_BATCH_SIZE", "8", "DEJAVU_API_KEYS", "x, y"),
                Map.of("port", "9002"));
        assertEquals(9002, config.port());
        assertEquals(8, config.maxBatchSize());
        assertEquals(List.of("x", "y"), config.apiKeys());
        assertEquals("cpu", config.backend());
        assertEquals("DEJAVU_PREFILL_CHUNK_TOKENS", ServiceConfig.envName("prefill_chunk_tokens"));
    }

    @Test
    void sparsitySettings() throws IOException {
        ServiceConfig defaults = ServiceConfig.load(null, Map.of(), Map.of());
        assertEquals(ServiceConfig.SPARSITY_AUTO, defaults.sparsity());
        assertEquals(false, defaults.sparseDefault());
        assertEquals(List.of(), defaults.sparseMlpK());
        ServiceConfig file = ServiceConfig.load(file("{\"sparsity\": \"preds/x\", \"sparse_default\": true, "
                + "\"sparse_heads_keep\": [4, 3]}"), Map.of(), Map.of());
        assertEquals("preds/x", file.sparsity());
        assertEquals(true, file.sparseDefault());
        assertEquals(List.of(4, 3), file.sparseHeadsKeep());
        ServiceConfig flags = ServiceConfig.load(null, Map.of("DEJAVU_SPARSE_DEFAULT", "true"),
                Map.of("sparse_mlp_k", "100, 200"));
        assertEquals(true, flags.sparseDefault());
        assertEquals(List.of(100, 200), flags.sparseMlpK());
        assertMessage(() -> ServiceConfig.load(null, Map.of(), Map.of("sparse_default", "yes")),
                "'sparse_default'", "--sparse-default", "true or false");
        assertMessage(() -> ServiceConfig.load(null, Map.of("DEJAVU_SPARSE_MLP_K", "10,-1"), Map.of()),
                "'sparse_mlp_k'", "DEJAVU_SPARSE_MLP_K", "positive integers");
    }

    @Test
    void theTokenBudgetDefaultsToAFullBatchPlusAPromptChunkAndCoversAFullBatch() {
        ServiceConfig defaults = ServiceConfig.load(null, Map.of(), Map.of());
        assertEquals(defaults.maxBatchSize() + defaults.prefillChunkTokens(), defaults.maxNumBatchedTokens());
        ServiceConfig set = ServiceConfig.load(null, Map.of("DEJAVU_MAX_BATCH_SIZE", "64"),
                Map.of("max_num_batched_tokens", "72"));
        assertEquals(72, set.maxNumBatchedTokens());
        assertMessage(() -> ServiceConfig.load(null, Map.of("DEJAVU_MAX_BATCH_SIZE", "64"),
                Map.of("max_num_batched_tokens", "32")), "'max_num_batched_tokens'", "--max-num-batched-tokens",
                "at least max_batch_size (64)");
    }

    @Test
    void badValuesNameTheKeyAndWhereTheyCameFrom() throws IOException {
        Path badPort = file("{\"port\": \"http\"}");
        assertMessage(() -> ServiceConfig.load(badPort, Map.of(), Map.of()),
                "'port'", "config.json", "integer");
        assertMessage(() -> ServiceConfig.load(null, Map.of("DEJAVU_MAX_BATCH_SIZE", "0"), Map.of()),
                "'max_batch_size'", "DEJAVU_MAX_BATCH_SIZE", "[1,");
        assertMessage(() -> ServiceConfig.load(null, Map.of("DEJAVU_CPU_THREADS", "-2"), Map.of()),
                "'cpu_threads'", "DEJAVU_CPU_THREADS", "[0,");
        assertMessage(() -> ServiceConfig.load(null, Map.of(), Map.of("backend", "tpu")),
                "'backend'", "--backend", "cpu, cuda, auto");
        Path unknownKey = file("{\"max_batch\": 3}");
        assertMessage(() -> ServiceConfig.load(unknownKey, Map.of(), Map.of()), "unknown key 'max_batch'", "max_batch_size");
        Path badJson = file("{\"port\": 80,}");
        assertMessage(() -> ServiceConfig.load(badJson, Map.of(), Map.of()), "not valid JSON");
        Path badList = file("{\"api_keys\": \"k\", \"cors_origins\": [3]}");
        assertMessage(() -> ServiceConfig.load(badList, Map.of(), Map.of()), "'cors_origins'", "non-empty strings");
        assertMessage(() -> ServiceConfig.load(dir.resolve("missing.json"), Map.of(), Map.of()), "no such config file");
    }

    private static void assertMessage(Runnable load, String... parts) {
        ConfigException e = assertThrows(ConfigException.class, load::run);
        for (String part : parts) assertTrue(e.getMessage().contains(part), e.getMessage() + " lacks " + part);
    }
}
