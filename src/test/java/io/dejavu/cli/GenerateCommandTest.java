package io.dejavu.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** `dejavu generate` end to end: tokenizer, CPU engine, KV-cache decode steps and greedy sampling together. */
class GenerateCommandTest {
    private static final Path SHARED = Path.of(System.getProperty("dejavu.shared"));

    @Test
    void greedyContinuationMatchesTransformers() throws Exception {
        JsonNode golden = new ObjectMapper().readTree(SHARED.resolve("golden/opt-mini-reference.json").toFile())
                .get("cases").get(0);
        CliRun run = CliRun.run("generate", "--model", SHARED.resolve("models/opt-mini").toString(),
                "--prompt", golden.get("prompt").asText(), "--temperature", "0", "--max-tokens", "24");
        assertEquals(0, run.exitCode(), run.err());
        assertEquals(golden.get("greedy_text").asText() + System.lineSeparator(), run.out());
        assertTrue(run.err().contains("24 generated"), run.err());
    }

    @Test
    void invalidValueIsReportedWithoutStackTrace() {
        CliRun run = CliRun.run("generate", "--prompt", "Hello", "--temperature", "3");
        assertEquals(2, run.exitCode());
        assertTrue(run.err().contains("temperature = 3.0 is out of range"), run.err());
        assertTrue(!run.err().contains("\tat "), run.err());
    }

    @Test
    void missingModelDirectoryIsNamed() {
        CliRun run = CliRun.run("generate", "--model", "/no/such/model", "--prompt", "Hello");
        assertEquals(2, run.exitCode());
        assertTrue(run.err().contains("/no/such/model"), run.err());
    }
}
