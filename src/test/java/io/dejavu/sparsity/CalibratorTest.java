package io.dejavu.sparsity;

import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Calibration of a tiny random OPT: the predictors learn, and what is written reads back the same. */
class CalibratorTest {
    @Test
    void defaultsUseTheWholeCalibrationTextAndARankTheCudaEngineTakes() throws java.io.IOException {
        Path shared = Path.of(System.getProperty("dejavu.shared"));
        Calibrator.Options defaults = Calibrator.Options.defaults();
        assertEquals(0.995, defaults.recallTarget());
        for (Path dir : new Path[]{shared.resolve("models/opt-mini"), Path.of("models/opt-demo")}) {
            int tokens = io.dejavu.tokenizer.Tokenizer.load(dir)
                    .encode(java.nio.file.Files.readString(shared.resolve("data/calibration.txt"))).length;
            assertTrue(tokens < defaults.maxTokens(), dir + ": " + tokens + " tokens");
            try (OptModel model = OptModel.load(dir)) {
                int rank = defaults.rankFor(model.config());
                assertEquals(model.config().hiddenSize() / 2, rank, dir.toString());
                assertEquals(0, rank % 8);
            }
        }
        // opt-6.7b's hidden size: capped, so that the predictors' bytes stay below the sparse MLP's
        OptConfig large = new OptConfig(4096, 32, 32, 16384, 50272, 2048, 4096, true, true, true, false, "relu", true,
                2, 2, 1);
        assertEquals(512, defaults.rankFor(large));
    }

    @Test
    void predictorsLearnAndRoundTrip(@TempDir Path dir) throws java.io.IOException {
        try (OptModel model = OptModel.load(Path.of(System.getProperty("dejavu.shared"), "golden/opt-tiny-preln"))) {
            Random random = new Random(11);
            int[] ids = new int[4000];
            // A small vocabulary, so that tokens repeat as in text.
            for (int i = 0; i < ids.length; i++) ids[i] = 4 + random.nextInt(300);
            Calibrator.Options o = new Calibrator.Options(8, 6, 3e-3f, 128, 0.95, ids.length, PredictorInput.MLP, false, false, 2);
            Calibrator.Outcome outcome = new Calibrator(new java.io.PrintStream(java.io.OutputStream.nullOutputStream()))
                    .run(model, ids, o);
            Predictors p = outcome.predictors();
            assertEquals(2, p.layers().size());
            for (Predictors.Layer layer : p.layers()) {
                double[] recall = (double[]) layer.stats().get("mlp_recall_at_half_per_epoch");
                assertTrue(recall[recall.length - 1] > recall[0] + 0.02, "recall did not rise: " + java.util.Arrays.toString(recall));
                assertTrue(recall[recall.length - 1] > 0.8, "recall too low: " + java.util.Arrays.toString(recall));
                assertTrue((double) layer.stats().get("mlp_recall") >= 0.95);
                assertTrue(layer.mlpK() > 0 && layer.mlpK() < model.config().ffnDim());
            }
            p.write(dir, model.config(), outcome.summary());
            Predictors back = Predictors.read(dir, model.config());
            assertEquals(p.rank(), back.rank());
            assertEquals(p.mlpInput(), back.mlpInput());
            for (int l = 0; l < 2; l++) {
                assertEquals(p.layers().get(l).mlpK(), back.layers().get(l).mlpK());
                assertArrayEquals(p.layers().get(l).mlp().up(), back.layers().get(l).mlp().up());
                assertArrayEquals(p.layers().get(l).heads().down(), back.layers().get(l).heads().down());
            }
        }
    }
}
