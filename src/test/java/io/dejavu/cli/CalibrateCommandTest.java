package io.dejavu.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** `dejavu calibrate` then `dejavu eval --sparse` end to end, on small slices so that it takes seconds. */
class CalibrateCommandTest {
    private static final Path SHARED = Path.of(System.getProperty("dejavu.shared"));
    private static final Path MODEL = SHARED.resolve("models/opt-mini");

    @Test
    void calibratedPredictorsDriveSparseEval(@TempDir Path tmp) throws Exception {
        Path calibration = tmp.resolve("calibration.txt"), eval = tmp.resolve("eval.txt"), out = tmp.resolve("predictors");
        Files.writeString(calibration, Files.readString(SHARED.resolve("data/calibration.txt")).substring(0, 12000));
        Files.writeString(eval, Files.readString(SHARED.resolve("data/eval-sotu-1990-2001.txt")).substring(0, 3000));
        CliRun calibrate = CliRun.run("calibrate", "--model", MODEL.toString(), "--text", calibration.toString(), "--out",
                out.toString(), "--rank", "16", "--epochs", "2", "--recall", "0.95");
        assertEquals(0, calibrate.exitCode(), calibrate.err());
        JsonNode settings = new ObjectMapper().readTree(out.resolve("predictors.json").toFile());
        assertEquals(6, settings.get("layers").size());
        assertEquals(16, settings.get("rank").asInt());
        assertTrue(Files.size(out.resolve("predictors.safetensors")) > 6 * 16 * (512 + 2048) * 4);

        CliRun dense = CliRun.run("eval", "--model", MODEL.toString(), "--text", eval.toString(), "--json");
        CliRun sparse = CliRun.run("eval", "--model", MODEL.toString(), "--text", eval.toString(), "--json", "--sparse",
                "--predictors", out.toString(), "--heads-keep", "6");
        assertEquals(0, sparse.exitCode(), sparse.err());
        JsonNode d = last(dense.out()), s = last(sparse.out());
        assertEquals(d.get("tokens").asInt(), s.get("tokens").asInt());
        assertEquals(0.25, s.get("heads_skipped").asDouble(), 1e-9);
        double mlpSkipped = s.get("mlp_skipped").asDouble();
        // Two epochs on 2,700 tokens train weak predictors: at recall 0.95 they skip little, but they skip (at the
        // default 0.995, about 0.5%).
        assertTrue(mlpSkipped > 0.01 && mlpSkipped < 1, "mlp_skipped " + mlpSkipped);
        double ratio = s.get("perplexity").asDouble() / d.get("perplexity").asDouble();
        assertTrue(ratio > 1 && ratio < 1.5, "sparse / dense perplexity " + ratio);
    }

    @Test
    void badInputsAreNamedWithoutStackTrace(@TempDir Path tmp) {
        CliRun missing = CliRun.run("calibrate", "--model", MODEL.toString(), "--text", "/no/such/calibration.txt");
        assertEquals(2, missing.exitCode());
        assertTrue(missing.err().contains("/no/such/calibration.txt"), missing.err());
        assertFalse(missing.err().contains("\tat "), missing.err());
        CliRun noPredictors = CliRun.run("eval", "--model", MODEL.toString(), "--text", "/dev/null", "--sparse", "--predictors",
                tmp.toString());
        assertEquals(2, noPredictors.exitCode());
        CliRun needsSparse = CliRun.run("eval", "--model", MODEL.toString(), "--text", "/dev/null", "--heads-keep", "4");
        assertEquals(2, needsSparse.exitCode());
        assertTrue(needsSparse.err().contains("--sparse"), needsSparse.err());
    }

    private static JsonNode last(String out) throws Exception {
        String[] lines = out.strip().split("\n");
        return new ObjectMapper().readTree(lines[lines.length - 1]);
    }
}
