package io.dejavu.engine.cpu;

import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.StepSparsity;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import io.dejavu.sparsity.LowRankPredictor;
import io.dejavu.sparsity.PredictorInput;
import io.dejavu.sparsity.Predictors;
import io.dejavu.sparsity.TopK;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Sparse execution computes exactly what a dense pass computes with the unselected neurons and heads zeroed: the
 * reference here is the dense engine with a probe that applies the same predictors' choices as masks.
 */
class SparseExecutionTest {
    private static final int[] PROMPT = {2, 133, 2335, 9, 5, 1049, 7, 4, 3034, 11, 45, 1210};
    private static OptModel model;
    private static OptConfig c;

    @BeforeAll
    static void load() {
        model = OptModel.load(Path.of(System.getProperty("dejavu.shared"), "golden/opt-tiny-preln"));
        c = model.config();
    }

    @AfterAll
    static void close() {
        model.close();
    }

    /** Random predictors: which neurons they pick does not matter here, only that both paths pick the same. */
    private static Predictors predictors(PredictorInput mlpInput, int mlpK, int headsKeep) {
        Random random = new Random(7);
        int rank = 4;
        List<Predictors.Layer> layers = new ArrayList<>();
        for (int l = 0; l < c.numHiddenLayers(); l++) {
            layers.add(new Predictors.Layer(random(random, c.hiddenSize(), rank, c.ffnDim()),
                    random(random, c.hiddenSize(), rank, c.numAttentionHeads()), mlpK, Float.NaN, headsKeep, Map.of()));
        }
        return new Predictors(rank, mlpInput, PredictorInput.LOOKAHEAD, layers);
    }

    private static LowRankPredictor random(Random random, int in, int rank, int out) {
        float[] down = new float[rank * in], up = new float[out * rank];
        for (int i = 0; i < down.length; i++) down[i] = (float) random.nextGaussian();
        for (int i = 0; i < up.length; i++) up[i] = (float) random.nextGaussian();
        return new LowRankPredictor(in, rank, out, down, up);
    }

    @ParameterizedTest
    @EnumSource(PredictorInput.class)
    void promptMatchesDenseWithTheSameNeuronsAndHeadsMasked(PredictorInput mlpInput) {
        Predictors p = predictors(mlpInput, c.ffnDim() / 4, c.numAttentionHeads() / 2);
        float[][] sparse, masked;
        try (CpuEngine engine = new CpuEngine(model, 2)) {
            engine.attachPredictors(p);
            try (Sequence s = engine.newSequence()) {
                sparse = engine.forward(List.of(new Step(s, PROMPT, true, true))).getFirst();
            }
            assertEquals(0.75, engine.sparsityStats().mlpSkipped(), 1e-9);
            assertEquals(0.5, engine.sparsityStats().headsSkipped(), 1e-9);
            try (Sequence s = engine.newSequence()) {
                masked = engine.forward(List.of(new Step(s, PROMPT, true)), new MaskingProbe(p, false)).getFirst();
            }
            float[][] dense;
            try (Sequence s = engine.newSequence()) {
                dense = engine.forward(List.of(new Step(s, PROMPT, true))).getFirst();
            }
            assertTrue(maxDifference(sparse, dense) > 1e-2, "masking must change the result for this test to mean anything");
        }
        assertTrue(maxDifference(sparse, masked) < 1e-4, "sparse and masked dense differ by " + maxDifference(sparse, masked));
    }

    @Test
    void decodeBatchRunsTheUnionOfItsMembersSetsAndDenseMembersStayDense() {
        Predictors p = predictors(PredictorInput.MLP, c.ffnDim() / 8, c.numAttentionHeads() / 2);
        int[][] prompts = {{2, 100, 200}, {2, 300, 400, 500}, {2, 600}};
        int[] next = {700, 800, 900};
        try (CpuEngine engine = new CpuEngine(model, 2)) {
            engine.attachPredictors(p);
            // Reference: each sparse decode token masked with the union of the batch's sets.
            float[][] unionMasked = new float[3][], sparse = new float[3][];
            List<Sequence> a = prefill(engine, prompts), b = prefill(engine, prompts);
            List<Step> steps = new ArrayList<>();
            for (int i = 0; i < 3; i++) steps.add(new Step(a.get(i), new int[]{next[i]}, false, false));
            List<float[][]> out = engine.forward(steps, new MaskingProbe(p, true));
            for (int i = 0; i < 3; i++) unionMasked[i] = out.get(i)[0];
            engine.sparsityStats().reset();
            steps.clear();
            for (int i = 0; i < 3; i++) steps.add(new Step(b.get(i), new int[]{next[i]}, false, true));
            out = engine.forward(steps);
            for (int i = 0; i < 3; i++) sparse[i] = out.get(i)[0];
            assertTrue(maxDifference(sparse, unionMasked) < 1e-4, "differ by " + maxDifference(sparse, unionMasked));
            // The union holds at least one member's k and at most the batch's sum of k.
            double kept = 1 - engine.sparsityStats().mlpSkipped();
            assertTrue(kept >= 1.0 / 8 && kept <= 3.0 / 8, "kept share " + kept);
            // The step's per-layer report is the union's size: its mean over layers is the share the stats counted.
            StepSparsity step = engine.lastStepSparsity();
            assertEquals(c.numHiddenLayers(), step.mlpComputed().length);
            assertEquals(kept, Arrays.stream(step.mlpComputed()).average().orElseThrow(), 1e-9);
            for (double heads : step.headsComputed()) assertTrue(heads >= 0.5 && heads <= 1, "heads computed " + heads);

            // A dense member of a mixed batch gets exactly what it gets alone.
            List<Sequence> d = prefill(engine, prompts), e = prefill(engine, prompts);
            float[] alone = engine.forward(List.of(Step.last(d.get(0), next[0]))).getFirst()[0];
            List<float[][]> mixed = engine.forward(List.of(Step.last(e.get(0), next[0]),
                    new Step(e.get(1), new int[]{next[1]}, false, true)));
            assertArrayEquals(alone, mixed.get(0)[0], 1e-5f);
            engine.forward(List.of(Step.last(d.get(0), next[1])));
            assertNull(engine.lastStepSparsity(), "a dense step reports nothing");
        }
    }

    @Test
    void sparseStepWithoutPredictorsIsRefused() {
        try (CpuEngine engine = new CpuEngine(model, 1); Sequence s = engine.newSequence()) {
            var e = assertThrows(IllegalArgumentException.class,
                    () -> engine.forward(List.of(new Step(s, PROMPT, false, true))));
            assertTrue(e.getMessage().contains("no sparsity predictors"), e.getMessage());
        }
    }

    private static List<Sequence> prefill(CpuEngine engine, int[][] prompts) {
        List<Sequence> out = new ArrayList<>();
        for (int[] prompt : prompts) {
            Sequence s = engine.newSequence();
            engine.forward(List.of(Step.last(s, prompt)));
            out.add(s);
        }
        return out;
    }

    private static double maxDifference(float[][] a, float[][] b) {
        double max = 0;
        for (int i = 0; i < a.length; i++) for (int j = 0; j < a[i].length; j++) max = Math.max(max, Math.abs(a[i][j] - b[i][j]));
        return max;
    }

    /** Zeroes, in a dense pass, the fc1 outputs and head outputs that the predictors would not select. */
    private static final class MaskingProbe implements ForwardProbe {
        private final Predictors p;
        private final boolean union;
        private final int hidden = c.hiddenSize(), ffn = c.ffnDim(), heads = c.numAttentionHeads();
        private float[] previous;
        private boolean[][] headMask, neuronMask;

        MaskingProbe(Predictors p, boolean union) {
            this.p = p;
            this.union = union;
        }

        @Override
        public void layerInput(int layer, float[] h, int rows) {
            float[] current = standardized(h, rows), ahead = previous != null ? previous : current;
            Predictors.Layer x = p.layers().get(layer);
            headMask = masks(x.heads(), x.headsKeep(), p.headsInput() == PredictorInput.LOOKAHEAD ? ahead : current, rows);
            if (p.mlpInput() != PredictorInput.MLP) {
                neuronMask = masks(x.mlp(), x.mlpK(), p.mlpInput() == PredictorInput.LOOKAHEAD ? ahead : current, rows);
            }
            previous = current;
        }

        @Override
        public void mlpInput(int layer, float[] h, int rows) {
            Predictors.Layer x = p.layers().get(layer);
            if (p.mlpInput() == PredictorInput.MLP) neuronMask = masks(x.mlp(), x.mlpK(), standardized(h, rows), rows);
        }

        @Override
        public void attentionOutput(int layer, float[] a, int rows) {
            int headDim = hidden / heads;
            for (int t = 0; t < rows; t++) {
                for (int hd = 0; hd < heads; hd++) {
                    if (!headMask[t][hd]) java.util.Arrays.fill(a, t * hidden + hd * headDim, t * hidden + (hd + 1) * headDim, 0f);
                }
            }
        }

        @Override
        public void mlpActivations(int layer, float[] f, int rows) {
            for (int t = 0; t < rows; t++) for (int j = 0; j < ffn; j++) if (!neuronMask[t][j]) f[t * ffn + j] = 0;
        }

        private float[] standardized(float[] h, int rows) {
            float[] out = new float[rows * hidden];
            for (int t = 0; t < rows; t++) LowRankPredictor.standardize(h, t * hidden, out, t * hidden, hidden);
            return out;
        }

        private boolean[][] masks(LowRankPredictor predictor, int k, float[] input, int rows) {
            int out = predictor.out();
            boolean[][] masks = new boolean[rows][out];
            float[] hiddenUnits = new float[predictor.rank()], scores = new float[out], tmp = new float[out];
            int[] chosen = new int[out];
            for (int t = 0; t < rows; t++) {
                predictor.scores(input, t * hidden, hiddenUnits, scores, 0);
                int count = TopK.select(scores, 0, out, k, chosen, tmp);
                for (int i = 0; i < count; i++) masks[t][chosen[i]] = true;
            }
            if (union) {
                for (int t = 1; t < rows; t++) for (int j = 0; j < out; j++) masks[0][j] |= masks[t][j];
                for (int t = 1; t < rows; t++) masks[t] = masks[0];
            }
            return masks;
        }
    }
}
