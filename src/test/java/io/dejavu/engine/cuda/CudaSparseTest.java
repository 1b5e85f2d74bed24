package io.dejavu.engine.cuda;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.StepSparsity;
import io.dejavu.engine.TokenChoice;
import io.dejavu.engine.cpu.CpuEngine;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import io.dejavu.sparsity.LowRankPredictor;
import io.dejavu.sparsity.PredictorInput;
import io.dejavu.sparsity.Predictors;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The CUDA sparse decode step (sparse.cuh; predictions on the side stream, union over the batch, sparse MLP,
 * sparse attention) against the dense GPU decoder and the CPU engine's sparse path.
 */
class CudaSparseTest {
    private static final Path DEMO = Path.of("models/opt-demo");
    private static final int[][] PROMPTS = {{2, 133, 2335, 9, 5, 1049, 7}, {2, 300, 400, 500}, {2, 600, 21, 87, 3000},
            {2, 45, 1210, 11}};

    @BeforeEach
    void cuda() {
        Gpu.assumeCuda();
    }

    private static CudaEngine engine(OptModel model, Predictors p) {
        return CudaEngine.load(model, CudaEngine.Options.defaults().withKvCacheBytes(64L << 20).withPoison(true), p);
    }

    /**
     * All-zero predictors score every item alike, and the top-k takes every tie: the sparse path then executes
     * every neuron and head, through the side stream (look-ahead), the fused sparse MLP and the sparse attention,
     * and must give the dense decoder's logits.
     */
    @ParameterizedTest
    @ValueSource(strings = {"opt-tiny-preln", "opt-tiny-postln-proj"})
    void fullSelectionsGiveTheDenseResult(String name) {
        try (OptModel model = OptModel.load(Gpu.golden(name))) {
            OptConfig c = model.config();
            List<Predictors.Layer> layers = new ArrayList<>();
            for (int l = 0; l < c.numHiddenLayers(); l++) {
                layers.add(new Predictors.Layer(zero(c.hiddenSize(), c.ffnDim()), zero(c.hiddenSize(), c.numAttentionHeads()),
                        c.ffnDim() / 4, Float.NaN, c.numAttentionHeads() / 2, Map.of()));
            }
            Predictors p = new Predictors(8, PredictorInput.LOOKAHEAD, PredictorInput.LOOKAHEAD, layers);
            try (CudaEngine gpu = engine(model, p)) {
                for (int batch : new int[]{1, 3}) {
                    List<Sequence> dense = prefill(gpu, batch), sparse = prefill(gpu, batch);
                    int[] next = {700, 800, 900};
                    for (int step = 0; step < 6; step++) {
                        List<float[][]> want = gpu.forward(steps(dense, next, batch, false));
                        assertEquals(null, gpu.lastStepSparsity(), "a dense step reports no sparsity");
                        List<float[][]> got = gpu.forward(steps(sparse, next, batch, true));
                        StepSparsity s = gpu.lastStepSparsity();
                        assertNotNull(s);
                        for (int l = 0; l < c.numHiddenLayers(); l++) {
                            assertEquals(1.0, s.mlpComputed()[l], 1e-9, "layer " + l + " neurons");
                            assertEquals(1.0, s.headsComputed()[l], 1e-9, "layer " + l + " heads");
                        }
                        for (int i = 0; i < batch; i++) {
                            double err = Gpu.relL2(got.get(i)[0], want.get(i)[0]);
                            assertTrue(err < 2e-3, name + " batch " + batch + " step " + step + " sequence " + i
                                    + ": rel L2 " + err);
                            next[i] = Gpu.argmax(want.get(i)[0]);
                        }
                    }
                    dense.forEach(Sequence::close);
                    sparse.forEach(Sequence::close);
                }
            }
        }
    }

    /**
     * opt-demo with its calibrated predictors, at the shipped operating point (MLP by threshold, every head) and at
     * one with sparse heads (3 of 4) and a top-k MLP: GPU sparse decoding against the CPU engine's sparse decoding of
     * the same tokens. The GPU scores in fp16, so items next to the threshold may flip: the shares executed must
     * agree within 3 points, the logits closely, the argmax nearly always.
     */
    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void sparseDecodingMatchesTheCpuEngine(boolean sparseHeads) {
        try (OptModel model = OptModel.load(DEMO)) {
            OptConfig c = model.config();
            Predictors p = Predictors.read(DEMO.resolve(Predictors.MODEL_SUBDIRECTORY), c);
            if (sparseHeads) {
                int[] mlpK = new int[c.numHiddenLayers()], heads = new int[c.numHiddenLayers()];
                Arrays.fill(mlpK, c.ffnDim() / 4);
                Arrays.fill(heads, c.numAttentionHeads() - 1);
                p = p.withOperatingPoint(mlpK, heads);
            }
            try (CpuEngine cpu = new CpuEngine(model); CudaEngine gpu = engine(model, p)) {
                cpu.attachPredictors(p);
                int batch = PROMPTS.length, steps = 24, argmaxEqual = 0, count = 0;
                double worst = 0, sum = 0, shareGap = 0;
                List<Sequence> cs = prefill(cpu, batch), gs = prefill(gpu, batch);
                int[] next = {700, 800, 900, 1000};
                for (int step = 0; step < steps; step++) {
                    int size = step % 2 == 0 ? batch : 1;  // alternate a batch (union) and one sequence alone
                    List<float[][]> want = cpu.forward(steps(cs, next, size, true));
                    StepSparsity cpuShares = cpu.lastStepSparsity();
                    List<float[][]> got = gpu.forward(steps(gs, next, size, true));
                    StepSparsity gpuShares = gpu.lastStepSparsity();
                    for (int l = 0; l < c.numHiddenLayers(); l++) {
                        shareGap = Math.max(shareGap, Math.abs(cpuShares.mlpComputed()[l] - gpuShares.mlpComputed()[l]));
                        shareGap = Math.max(shareGap, Math.abs(cpuShares.headsComputed()[l] - gpuShares.headsComputed()[l]));
                    }
                    for (int i = 0; i < size; i++) {
                        double err = Gpu.relL2(got.get(i)[0], want.get(i)[0]);
                        worst = Math.max(worst, err);
                        sum += err;
                        count++;
                        next[i] = Gpu.argmax(want.get(i)[0]);
                        if (Gpu.argmax(got.get(i)[0]) == next[i]) argmaxEqual++;
                    }
                }
                System.out.printf("opt-demo sparse%s, GPU vs CPU: mean rel L2 %.2e, worst %.2e, argmax %d/%d, "
                        + "largest share gap %.3f%n", sparseHeads ? " (3 of 4 heads)" : "", sum / count, worst,
                        argmaxEqual, count, shareGap);
                assertTrue(shareGap <= 0.03, "shares executed differ by " + shareGap);
                assertTrue(sum / count <= 2e-2, "mean rel L2 " + sum / count);
                assertTrue(argmaxEqual >= 0.9 * count, argmaxEqual + " of " + count + " argmax equal");
            }
        }
    }

    /**
     * Sparse decode steps run ahead (each queued before the tokens of the one before are read, its counts read back
     * with its tokens) give the tokens and the shares executed of steps run in turn.
     */
    @Test
    void sparseStepsRunAheadGiveTheTokensAndSharesOfStepsRunInTurn() {
        try (OptModel model = OptModel.load(DEMO);
             CudaEngine gpu = engine(model, Predictors.read(DEMO.resolve(Predictors.MODEL_SUBDIRECTORY), model.config()))) {
            int batch = PROMPTS.length, count = 12;
            List<TokenChoice> greedy = java.util.Collections.nCopies(batch, TokenChoice.greedy());
            int[] start = {700, 800, 900, 1000};
            List<int[]> tokens = new ArrayList<>();
            List<StepSparsity> shares = new ArrayList<>();
            List<Sequence> seqs = prefill(gpu, batch);
            int[] next = start;
            for (int i = 0; i < count; i++) {
                next = gpu.nextTokens(steps(seqs, next, batch, true), greedy);
                tokens.add(next);
                shares.add(gpu.lastStepSparsity());
            }
            seqs.forEach(Sequence::close);

            seqs = prefill(gpu, batch);
            List<Step> first = steps(seqs, start, batch, true);
            Engine.PendingTokens pending = gpu.submitNextTokens(first, greedy);
            for (int i = 0; i < count; i++) {
                Engine.PendingTokens following = i + 1 < count ? gpu.submitFollowing(pending, first, greedy) : null;
                assertArrayEquals(tokens.get(i), pending.await(), "step " + i);
                StepSparsity got = pending.sparsity();
                assertNotNull(got, "a sparse step's shares");
                for (int l = 0; l < model.config().numHiddenLayers(); l++) {
                    assertEquals(shares.get(i).mlpComputed()[l], got.mlpComputed()[l], 0.03, "step " + i + " layer " + l);
                }
                assertTrue(Arrays.stream(got.mlpComputed()).min().orElseThrow() < 1, "step " + i + " ran sparse");
                pending = following;
            }
            seqs.forEach(Sequence::close);
        }
    }

    /** A decode batch executes the union of its members' selections: no fewer than any one, no more than all. */
    @Test
    void aBatchExecutesTheUnionOfItsMembersSelections() {
        try (OptModel model = OptModel.load(DEMO)) {
            OptConfig c = model.config();
            Predictors p = Predictors.read(DEMO.resolve(Predictors.MODEL_SUBDIRECTORY), c);
            try (CudaEngine gpu = engine(model, p)) {
                int batch = PROMPTS.length, layers = c.numHiddenLayers();
                int[] next = {700, 800, 900, 1000};
                double[][] alone = new double[batch][];
                for (int i = 0; i < batch; i++) {
                    try (Sequence s = gpu.newSequence()) {
                        gpu.forward(List.of(Step.last(s, PROMPTS[i])));
                        gpu.forward(List.of(new Step(s, new int[]{next[i]}, false, true)));
                        alone[i] = gpu.lastStepSparsity().mlpComputed();
                    }
                }
                List<Sequence> seqs = prefill(gpu, batch);
                gpu.forward(steps(seqs, next, batch, true));
                double[] union = gpu.lastStepSparsity().mlpComputed();
                seqs.forEach(Sequence::close);
                for (int l = 0; l < layers; l++) {
                    double max = 0, sum = 0;
                    for (double[] a : alone) {
                        max = Math.max(max, a[l]);
                        sum += a[l];
                    }
                    assertTrue(union[l] >= max - 1e-9 && union[l] <= Math.min(1, sum) + 1e-9,
                            "layer " + l + ": union " + union[l] + ", members " + max + " at most, " + sum + " together");
                }
                assertTrue(Arrays.stream(union).sum() > Arrays.stream(alone[0]).sum(), "the union grew");
            }
        }
    }

    /**
     * With predictors, readying decode steps ahead captures the sparse graphs too (up to Options.sparseMaxTokens), and
     * a sparse step afterwards replays its graph and computes the union as before.
     */
    @Test
    void preparedDecodeStepsIncludeTheSparseOnes() {
        try (OptModel model = OptModel.load(DEMO);
             CudaEngine gpu = engine(model, Predictors.read(DEMO.resolve(Predictors.MODEL_SUBDIRECTORY), model.config()))) {
            int free = gpu.freeKvCacheBlocks();
            assertEquals(3 + 3, gpu.prepareDecode(3), "3 dense and 3 sparse sizes");
            assertEquals(6, gpu.decodeGraphCount());
            assertEquals(free, gpu.freeKvCacheBlocks());
            List<Sequence> seqs = prefill(gpu, 2);
            gpu.forward(steps(seqs, new int[]{700, 800}, 2, true));
            double least = Arrays.stream(gpu.lastStepSparsity().mlpComputed()).min().orElseThrow();
            seqs.forEach(Sequence::close);
            assertTrue(least < 1.0, "the step of 2 ran sparse");
            assertEquals(6, gpu.decodeGraphCount(), "through the graph readied ahead");
        }
    }

    /**
     * Past Options.sparseMaxTokens (8 by default) a decode step of sparse tokens runs dense, since its union is then
     * nearly dense and the sparse step slower; a larger limit lets the same batch run sparse.
     */
    @Test
    void largerBatchesRunDenseUnlessTheLimitAllowsThem() {
        try (OptModel model = OptModel.load(DEMO)) {
            OptConfig c = model.config();
            Predictors p = Predictors.read(DEMO.resolve(Predictors.MODEL_SUBDIRECTORY), c);
            int batch = CudaEngine.Options.DEFAULT_SPARSE_MAX_TOKENS + 1;
            for (int limit : new int[]{CudaEngine.Options.DEFAULT_SPARSE_MAX_TOKENS, DevicePredictors.MAX_TOKENS}) {
                CudaEngine.Options options = CudaEngine.Options.defaults().withKvCacheBytes(64L << 20)
                        .withSparseMaxTokens(limit);
                try (CudaEngine gpu = CudaEngine.load(model, options, p)) {
                    List<Sequence> seqs = new ArrayList<>();
                    List<Step> decode = new ArrayList<>();
                    for (int i = 0; i < batch; i++) {
                        Sequence s = gpu.newSequence();
                        gpu.forward(List.of(Step.last(s, PROMPTS[i % PROMPTS.length])));
                        seqs.add(s);
                        decode.add(new Step(s, new int[]{700 + i}, false, true));
                    }
                    gpu.forward(decode);
                    double least = Arrays.stream(gpu.lastStepSparsity().mlpComputed()).min().orElseThrow();
                    seqs.forEach(Sequence::close);
                    if (limit < batch) assertEquals(1.0, least, 1e-9, "a batch of " + batch + " ran dense");
                    else assertTrue(least < 1.0, "with limit " + limit + " the batch of " + batch + " ran sparse");
                }
            }
        }
    }

    private static LowRankPredictor zero(int in, int out) {
        return new LowRankPredictor(in, 8, out, new float[8 * in], new float[out * 8]);
    }

    private static List<Sequence> prefill(Engine engine, int count) {
        List<Sequence> out = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            Sequence s = engine.newSequence();
            engine.forward(List.of(Step.last(s, PROMPTS[i])));
            out.add(s);
        }
        return out;
    }

    private static List<Step> steps(List<Sequence> seqs, int[] next, int count, boolean sparse) {
        List<Step> out = new ArrayList<>();
        for (int i = 0; i < count; i++) out.add(new Step(seqs.get(i), new int[]{next[i]}, false, sparse));
        return out;
    }
}
