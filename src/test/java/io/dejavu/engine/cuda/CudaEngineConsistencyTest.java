package io.dejavu.engine.cuda;

import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.model.OptConfig;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The engine's independent paths agree on a random model with a realistic head width (64, and 128 for the
 * attention): the tiled tensor-core prefill attention against the split decode attention (the same prompt fed in
 * passes of at most 64 tokens), the Hopper prefill GEMM against the wmma one, decode graphs tuned for their launches
 * against plain ones, and batches of 2 and 16 sequences decoded together (GEMV over 2 tokens with the LayerNorm fused;
 * over 16 after a LayerNorm kernel; one graph) against each alone (one-token GEMV with the LayerNorm fused, its own
 * graph).
 */
class CudaEngineConsistencyTest {
    static final OptConfig SHAPE = shape(4);

    /** Hidden 256 in {@code heads} heads: 64 wide at 4 (opt-mini, opt-1.3b), 128 at 2 (opt-6.7b and larger). */
    private static OptConfig shape(int heads) {
        return new OptConfig(256, 4, heads, 1024, 1000, 512, 256, true, true, true, false, "relu", true, 2, 2, 1);
    }

    @BeforeEach
    void cuda() {
        Gpu.assumeCuda();
    }

    private static CudaEngine engine(int maxBatchTokens) {
        return engine(CudaEngine.Options.defaults().withMaxBatchTokens(maxBatchTokens));
    }

    private static CudaEngine engine(CudaEngine.Options options) {
        return engine(SHAPE, options);
    }

    private static CudaEngine engine(OptConfig shape, CudaEngine.Options options) {
        return CudaEngine.random(shape, options.withKvCacheBytes(64L << 20).withPoison(true), 7);
    }

    private static int[] tokens(int n, int seed) {
        Random r = new Random(seed);
        int[] t = new int[n];
        for (int i = 0; i < n; i++) t[i] = 3 + r.nextInt(SHAPE.vocabSize() - 3);
        return t;
    }

    @ParameterizedTest(name = "{0} heads of hidden 256")
    @ValueSource(ints = {4, 2})
    void tiledPrefillAttentionEqualsSplitDecodeAttention(int heads) {
        OptConfig shape = shape(heads);
        int[] prompt = tokens(300, 1);
        float[][] tiled, split;
        try (CudaEngine engine = engine(shape, CudaEngine.Options.defaults().withMaxBatchTokens(2048));
             Sequence seq = engine.newSequence()) {
            engine.forward(List.of(Step.last(seq, java.util.Arrays.copyOf(prompt, 37))));  // a tile not at position 0
            tiled = engine.forward(List.of(new Step(seq, java.util.Arrays.copyOfRange(prompt, 37, 300), true))).get(0);
        }
        try (CudaEngine engine = engine(shape, CudaEngine.Options.defaults().withMaxBatchTokens(64));
             Sequence seq = engine.newSequence()) {
            engine.forward(List.of(Step.last(seq, java.util.Arrays.copyOf(prompt, 37))));
            split = engine.forward(List.of(new Step(seq, java.util.Arrays.copyOfRange(prompt, 37, 300), true))).get(0);
        }
        assertEquals(263, tiled.length);
        for (int i = 0; i < tiled.length; i++) {
            for (float v : tiled[i]) assertTrue(Float.isFinite(v), "finite logits at " + i);
            double err = Gpu.relL2(tiled[i], split[i]);
            assertTrue(err <= 2e-3, "position " + (37 + i) + ": rel L2 " + err);
        }
    }

    /** Every position's logits of a prompt: the two prefill GEMMs, with M, N (the 1000-word lm_head) in tails. */
    @Test
    void hopperGemmEqualsWmmaGemm() {
        int[] prompt = tokens(300, 2);
        float[][] hopper, wmma;
        try (CudaEngine engine = engine(CudaEngine.Options.defaults()); Sequence seq = engine.newSequence()) {
            assumeTrue(engine.prefillGemm().equals("wgmma"), "the loaded kernels have no sm_90a code (not a Hopper GPU)");
            hopper = engine.forward(List.of(new Step(seq, prompt, true))).get(0);
        }
        try (CudaEngine engine = engine(CudaEngine.Options.defaults().withWgmma(false));
             Sequence seq = engine.newSequence()) {
            assertEquals("wmma", engine.prefillGemm());
            wmma = engine.forward(List.of(new Step(seq, prompt, true))).get(0);
        }
        assertEquals(300, hopper.length);
        for (int i = 0; i < hopper.length; i++) {
            for (float v : hopper[i]) assertTrue(Float.isFinite(v), "finite logits at " + i);
            double err = Gpu.relL2(hopper[i], wmma[i]);
            assertTrue(err <= 1e-3, "position " + i + ": rel L2 " + err);
        }
    }

    /**
     * A decode graph tuned for its launches (captured with and without programmatic dependent launch, both replayed
     * to time them, the faster kept) gives the logits of plain launches bit for bit, and says what it chose.
     */
    @Test
    void launchTuningLeavesTheLogitsAsTheyWere() {
        int[] prompt = tokens(9, 5);
        float[][] plain;
        try (CudaEngine engine = engine(CudaEngine.Options.defaults().withDependentLaunch(false))) {
            plain = greedyLogits(engine, prompt, 8);
            assertNull(engine.launchTuning(1), "plain launches were asked for");
        }
        try (CudaEngine engine = engine(CudaEngine.Options.defaults())) {
            float[][] tuned = greedyLogits(engine, prompt, 8);
            for (int i = 0; i < plain.length; i++) assertArrayEquals(plain[i], tuned[i], "step " + i);
            CudaEngine.LaunchTuning tuning = engine.launchTuning(1);
            assumeTrue(tuning != null, "this GPU or driver has no programmatic dependent launch");
            assertTrue(tuning.dependentMs() > 0 && tuning.plainMs() > 0, tuning.toString());
            assertEquals(tuning.dependentMs() < tuning.plainMs(), tuning.dependent(), tuning.toString());
        }
    }

    /**
     * Readying decode steps ahead captures a graph of every size up to the limit, frees the KV cache it used, and
     * leaves a later sequence's logits as an engine without it computes them, bit for bit.
     */
    @Test
    void preparedDecodeStepsCaptureEverySizeAheadAndChangeNoResult() {
        int[] prompt = tokens(9, 6);
        float[][] unprepared;
        try (CudaEngine engine = engine(CudaEngine.Options.defaults())) {
            unprepared = greedyLogits(engine, prompt, 6);
        }
        try (CudaEngine engine = engine(CudaEngine.Options.defaults())) {
            int free = engine.freeKvCacheBlocks();
            assertEquals(5, engine.prepareDecode(5));
            assertEquals(5, engine.decodeGraphCount());
            assertEquals(free, engine.freeKvCacheBlocks(), "its sequences are closed");
            float[][] prepared = greedyLogits(engine, prompt, 6);
            assertEquals(5, engine.decodeGraphCount(), "a decode step of one sequence replays the graph made ahead");
            for (int i = 0; i < unprepared.length; i++) assertArrayEquals(unprepared[i], prepared[i], "step " + i);
        }
        try (CudaEngine engine = engine(CudaEngine.Options.defaults().withCudaGraphs(false))) {
            assertEquals(0, engine.prepareDecode(5), "nothing to ready without graphs");
        }
    }

    /** The prompt's last logits, then those of {@code steps} greedy decode steps (each one token: the graph path). */
    private static float[][] greedyLogits(CudaEngine engine, int[] prompt, int steps) {
        try (Sequence seq = engine.newSequence()) {
            float[][] trace = new float[steps + 1][];
            trace[0] = engine.forward(List.of(Step.last(seq, prompt))).get(0)[0];
            for (int i = 1; i <= steps; i++) {
                trace[i] = engine.forward(List.of(Step.last(seq, Gpu.argmax(trace[i - 1])))).get(0)[0];
            }
            return trace;
        }
    }

    /** 2 tokens: the GEMV with the LayerNorm fused for both rows; 16: the tensor-core GEMV after a LayerNorm kernel. */
    @ParameterizedTest(name = "batch of {0}")
    @ValueSource(ints = {2, 16})
    void batchDecodesLikeEachAlone(int batch) {
        int steps = 12;
        List<int[]> prompts = new ArrayList<>();
        for (int i = 0; i < batch; i++) prompts.add(tokens(5 + 9 * i, 100 + i));
        try (CudaEngine engine = engine(2048)) {
            List<float[][]> alone = new ArrayList<>();
            for (int[] prompt : prompts) {
                alone.add(greedyLogits(engine, prompt, steps));
            }
            List<Sequence> seqs = new ArrayList<>();
            List<Step> first = new ArrayList<>();
            for (int[] prompt : prompts) {
                Sequence s = engine.newSequence();
                seqs.add(s);
                first.add(Step.last(s, prompt));
            }
            List<float[][]> out = engine.forward(first);
            int argmaxEqual = 0, total = 0;
            for (int step = 0; step <= steps; step++) {
                List<Step> next = new ArrayList<>();
                for (int i = 0; i < batch; i++) {
                    float[] got = out.get(i)[0], want = alone.get(i)[step];
                    double err = Gpu.relL2(got, want);
                    assertTrue(err <= 2e-3, "sequence " + i + " step " + step + ": rel L2 " + err);
                    if (Gpu.argmax(got) == Gpu.argmax(want)) argmaxEqual++;
                    total++;
                    next.add(Step.last(seqs.get(i), Gpu.argmax(want)));
                }
                if (step < steps) out = engine.forward(next);
            }
            assertTrue(argmaxEqual >= 0.99 * total, argmaxEqual + " of " + total + " argmax equal");
            for (Sequence s : seqs) s.close();
        }
    }
}
