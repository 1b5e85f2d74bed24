package io.dejavu.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.dejavu.tokenizer.Tokenizer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** `dejavu eval` end to end on a slice of the development text (the whole text takes minutes: see the report). */
class EvalCommandTest {
    private static final Path SHARED = Path.of(System.getProperty("dejavu.shared"));

    @Test
    void jsonLineReportsEveryTokenAndAPlausiblePerplexity(@TempDir Path tmp) throws Exception {
        String text = Files.readString(SHARED.resolve("data/eval-sotu-1990-2001.txt")).substring(0, 6000);
        Path file = tmp.resolve("slice.txt");
        Files.writeString(file, text);
        Path model = SHARED.resolve("models/opt-mini");
        int tokens = Tokenizer.load(model).encode(text).length;

        CliRun run = CliRun.run("eval", "--model", model.toString(), "--text", file.toString(), "--json");
        assertEquals(0, run.exitCode(), run.err());
        String[] lines = run.out().strip().split("\n");
        JsonNode result = new ObjectMapper().readTree(lines[lines.length - 1]);
        assertEquals(tokens, result.get("tokens").asInt());
        double perplexity = result.get("perplexity").asDouble();
        assertEquals(Math.exp(result.get("nll_per_token").asDouble()), perplexity, 1e-9 * perplexity);
        // The dense perplexity of the whole text is 88.6; a 1,200-token slice lands in the same range.
        assertTrue(perplexity > 40 && perplexity < 200, "perplexity " + perplexity);
        assertTrue(run.err().contains("ETA"), run.err());
    }

    @Test
    void missingTextFileIsNamedWithoutStackTrace() {
        CliRun run = CliRun.run("eval", "--model", SHARED.resolve("models/opt-mini").toString(), "--text", "/no/such/text.txt");
        assertEquals(2, run.exitCode());
        assertTrue(run.err().contains("/no/such/text.txt"), run.err());
        assertFalse(run.err().contains("\tat "), run.err());
    }
}
