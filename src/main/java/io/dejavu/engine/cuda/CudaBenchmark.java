package io.dejavu.engine.cuda;

import io.dejavu.bench.RandomPrompts;
import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.TokenChoice;
import io.dejavu.model.OptConfig;
import jcuda.driver.CUevent;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Random;

import static jcuda.driver.JCudaDriver.*;

/**
 * Decode and prefill speed of the CUDA engine on pseudo-random weights of a model's shapes, next to the
 * memory-bandwidth floor: the weight bytes a decode step must read divided by the copy bandwidth measured in the same
 * run. Decode steps are timed on the wall clock around the whole step (metadata upload, graph replay, GPU sampling,
 * reading back the ids), which is what a caller waits for.
 */
public final class CudaBenchmark {
    /** The OPT sizes the benchmark knows by name (shapes of the published facebook/opt-* configs). */
    public static OptConfig namedShape(String name) {
        return switch (name) {
            case "opt-125m" -> shape(768, 12, 12, 3072);
            case "opt-1.3b" -> shape(2048, 24, 32, 8192);
            case "opt-2.7b" -> shape(2560, 32, 32, 10240);
            case "opt-6.7b" -> shape(4096, 32, 32, 16384);
            case "opt-13b" -> shape(5120, 40, 40, 20480);
            case "opt-30b" -> shape(7168, 48, 56, 28672);
            default -> null;
        };
    }

    public static final String NAMED_SHAPES = "opt-125m, opt-1.3b, opt-2.7b, opt-6.7b, opt-13b, opt-30b";

    private static OptConfig shape(int hidden, int layers, int heads, int ffn) {
        return new OptConfig(hidden, layers, heads, ffn, 50272, 2048, hidden, true, true, true, false, "relu", true,
                2, 2, 1);
    }

    /** What one run measured. */
    public record Result(String device, String shape, CudaEngine.LaunchTuning launch, int batch, int promptLen, int genLen, double prefillMs,
                         String prefillGemm, double wmmaPrefillMs, double decodeStepMs, double aheadStepMs,
                         double graphStepMs, double weightGb, double kvGb, double copyGbPerS) {
        public double tokensPerSecond() {
            return batch * 1000 / decodeStepMs;
        }

        public double achievedGbPerS() {
            return weightGb / (decodeStepMs / 1000);
        }

        public double floorMs() {
            return weightGb / copyGbPerS * 1000;
        }

        /** The floor with the KV cache's reads added: what memory allows a step at this batch and context. */
        public double floorWithKvMs() {
            return (weightGb + kvGb) / copyGbPerS * 1000;
        }

        /** Which launches the decode graph kept, and how fast each replayed; null launch: not tuned. */
        private String launchDescription() {
            return launch == null ? "plain launches (not tuned)" : String.format(Locale.ROOT,
                    "%s launches (replays: dependent %.3f ms, plain %.3f ms)", launchKind(), launch.dependentMs(),
                    launch.plainMs());
        }

        private String launchKind() {
            return launch != null && launch.dependent() ? "dependent" : "plain";
        }

        public String table() {
            return String.format("""
                    device            %s
                    shape             %s, batch %d, prompt %d, generate %d
                    decode graph      %s
                    prefill           %.2f ms (%d tokens, one sequence, best of 5, %s GEMM; with the wmma GEMM: %.2f ms)
                    decode            %.3f ms/step (each sequence's token latency), %.3f ms per token amortised, %.1f tokens/s
                    decode, run ahead %.3f ms/step (each step queued before the host reads the one before's tokens)
                    decode GPU time   %.3f ms/step (the step's graph replayed back to back: no host work between)
                    weights per step  %.2f GB, achieved %.0f GB/s
                    copy bandwidth    %.0f GB/s (read + write) -> floor %.3f ms/step (%.0f%% of floor reached)
                    KV cache reads    %.2f GB/step (mean over the timed steps) -> floor with them %.3f ms/step
                    RESULT engine=%s shape=%s batch=%d prompt=%d gen=%d prefill_ms=%.3f prefill_wmma_ms=%.3f step_ms=%.4f ahead_ms=%.4f graph_ms=%.4f tok_s=%.1f gb_s=%.1f floor_ms=%.4f kv_floor_ms=%.4f copy_gb_s=%.1f launch=%s
                    """, device, shape, batch, promptLen, genLen, launchDescription(), prefillMs, prefillMs > 0 ? promptLen : 0,
                    prefillGemm, wmmaPrefillMs,
                    decodeStepMs, decodeStepMs / batch, tokensPerSecond(), aheadStepMs, graphStepMs, weightGb, achievedGbPerS(), copyGbPerS, floorMs(),
                    100 * floorMs() / decodeStepMs, kvGb, floorWithKvMs(), "cuda", shape, batch, promptLen, genLen,
                    prefillMs, wmmaPrefillMs, decodeStepMs, aheadStepMs,
                    graphStepMs, tokensPerSecond(), achievedGbPerS(), floorMs(), floorWithKvMs(), copyGbPerS,
                    launchKind());
        }
    }

    public static Result run(String shapeName, OptConfig config, int batch, int promptLen, int genLen, int seed,
                             boolean profile, boolean dependentLaunch) {
        if (promptLen < 1 || genLen < 1 || batch < 1) throw new IllegalArgumentException("batch, prompt and gen must be >= 1");
        if (promptLen + genLen + 1 > config.maxPositionEmbeddings()) {
            throw new IllegalArgumentException("prompt-len + gen-len exceeds the model's " + config.maxPositionEmbeddings()
                    + " positions");
        }
        long blocksPerSeq = (promptLen + genLen + 1 + KvCachePool.BLOCK_TOKENS - 1) / KvCachePool.BLOCK_TOKENS;
        long warmBlocks = (HOST_WARMUP_PROMPT + HOST_WARMUP_STEPS + 1 + KvCachePool.BLOCK_TOKENS - 1) / KvCachePool.BLOCK_TOKENS;
        long kvBytes = (blocksPerSeq * (2 * batch + 1) + warmBlocks + 4) * KvCachePool.blockBytes(config);
        CudaEngine.Options options = CudaEngine.Options.defaults().withKvCacheBytes(kvBytes)
                .withMaxBatchTokens(Math.max(2048, promptLen)).withDependentLaunch(dependentLaunch);
        System.err.printf("[bench] %s: making %.2f GB of random fp16 weights on the GPU%n", shapeName,
                DeviceWeightsSize.of(config) / 1e9);
        try (CudaEngine engine = CudaEngine.random(config, options, seed)) {
            double copy = copyBandwidth(engine);
            Random random = new Random(seed);
            int[] prompt = RandomPrompts.of(random, config, promptLen);

            // prefill with the engine's GEMM, and with the wmma GEMM as the baseline of the same run
            String gemm = engine.prefillGemm();
            double prefillMs = bestPrefill(engine, prompt);
            engine.preferWgmma(false);
            double wmmaPrefillMs = bestPrefill(engine, prompt);
            engine.preferWgmma(true);
            warmHostSide(engine, config, random);
            // two sets of sequences with the same prompts, so that both loops decode at the same context lengths
            List<int[]> prompts = new ArrayList<>();
            for (int i = 0; i < batch; i++) prompts.add(i == 0 ? prompt : RandomPrompts.of(random, config, promptLen));
            List<Sequence> seqs = new ArrayList<>(), aheadSeqs = new ArrayList<>();
            int[] next = prefilled(engine, prompts, seqs), aheadFirst = prefilled(engine, prompts, aheadSeqs);
            double aheadMs = decodeMs(engine, aheadSeqs, aheadFirst, genLen, true, false);
            for (Sequence s : aheadSeqs) s.close();
            double stepMs = decodeMs(engine, seqs, next, genLen, false, false);
            List<TokenChoice> greedy = Collections.nCopies(batch, TokenChoice.greedy());
            Double gpuStepMs = engine.graphReplayMs(batch, 50);
            if (profile) {
                List<Step> steps = new ArrayList<>(batch);
                for (Sequence s : seqs) steps.add(Step.last(s, config.bosTokenId()));
                System.out.println("kernels of one decode step (eager, timed one by one):");
                System.out.print(engine.profile(() -> engine.nextTokens(steps, greedy)));
                try (Sequence extra = engine.newSequence()) {
                    System.out.println("kernels of one prefill of " + promptLen + " tokens:");
                    System.out.print(engine.profile(() -> engine.forward(List.of(Step.last(extra, prompt)))));
                }
            }
            for (Sequence s : seqs) s.close();
            return new Result(engine.deviceName(), shapeName, engine.launchTuning(batch), batch, promptLen, genLen, prefillMs, gemm,
                    wmmaPrefillMs, stepMs, aheadMs,
                    gpuStepMs == null ? Double.NaN : gpuStepMs,
                    engine.weightBytesPerStep() / 1e9, kvBytesPerStep(config, batch, promptLen, genLen) / 1e9, copy);
        }
    }

    /**
     * The fp16 keys and values a timed decode step's attention reads, on average: every sequence's, every layer's,
     * for each position up to its own (decodeMs times genLen steps after its unmeasured ones).
     */
    private static double kvBytesPerStep(OptConfig config, int batch, int promptLen, int genLen) {
        double positions = promptLen + Math.min(DECODE_WARMUP_STEPS, genLen) + (genLen + 1) / 2.0;
        return batch * positions * KvCachePool.blockBytes(config) / KvCachePool.BLOCK_TOKENS;
    }

    /** New sequences, one per prompt, prefilled; returns each one's first generated token (greedy). */
    static int[] prefilled(CudaEngine engine, List<int[]> prompts, List<Sequence> into) {
        int[] first = new int[prompts.size()];
        for (int i = 0; i < prompts.size(); i++) {
            into.add(engine.newSequence());
            first[i] = engine.nextTokens(List.of(Step.last(into.get(i), prompts.get(i))), List.of(TokenChoice.greedy()))[0];
        }
        return first;
    }

    /** Decode steps run before decodeMs starts its clock. */
    static final int DECODE_WARMUP_STEPS = 3;

    /**
     * Wall ms a greedy decode step of these sequences takes, over genLen steps after {@link #DECODE_WARMUP_STEPS}
     * unmeasured. Each step's tokens are read before the next step is queued, or, run ahead, the next step is queued
     * first (as the server does): then the GPU does not wait for the host between steps. With {@code sparse} the
     * steps ask for sparse execution.
     */
    static double decodeMs(CudaEngine engine, List<Sequence> seqs, int[] first, int genLen, boolean ahead,
                           boolean sparse) {
        List<TokenChoice> greedy = Collections.nCopies(seqs.size(), TokenChoice.greedy());
        int warmup = Math.min(DECODE_WARMUP_STEPS, genLen);
        int[] next = first;
        Engine.PendingTokens pending = null;
        long t0 = 0;
        for (int step = 0; step < genLen + warmup; step++) {
            if (step == warmup) t0 = System.nanoTime();
            List<Step> steps = new ArrayList<>(seqs.size());
            for (int i = 0; i < seqs.size(); i++) steps.add(new Step(seqs.get(i), new int[]{next[i]}, false, sparse));
            if (!ahead) {
                next = engine.nextTokens(steps, greedy);
                continue;
            }
            if (pending == null) pending = engine.submitNextTokens(steps, greedy);
            // the tokens of these steps are placeholders: each sequence is fed what pending picks for it
            Engine.PendingTokens following = engine.submitFollowing(pending, steps, greedy);
            next = pending.await();
            pending = following;
        }
        double ms = (System.nanoTime() - t0) / 1e6 / genLen;
        if (pending != null) pending.await();
        return ms;
    }

    private static final int HOST_WARMUP_PROMPT = 16, HOST_WARMUP_STEPS = 500;

    /**
     * Decode steps of a throwaway sequence, so that the host side of a step (metadata, launches, reading the tokens
     * back: Java code) runs compiled, as in a server that has been decoding for a while, rather than in the
     * interpreter: after 3 warm-up steps alone, the host left the GPU idle for 80-110 us a step at opt-6.7b, after
     * 300 for 20-50 (docs/BENCHMARKS.md). Its own sequence, so the measured ones keep their context length.
     */
    private static void warmHostSide(CudaEngine engine, OptConfig config, Random random) {
        List<TokenChoice> greedy = List.of(TokenChoice.greedy());
        try (Sequence warm = engine.newSequence()) {
            int token = engine.nextTokens(List.of(Step.last(warm, RandomPrompts.of(random, config, HOST_WARMUP_PROMPT))),
                    greedy)[0];
            // half of the steps each way the benchmark decodes (the last few positions go to decodeMs's own warm-up)
            int steps = Math.min(HOST_WARMUP_STEPS, config.maxPositionEmbeddings() - HOST_WARMUP_PROMPT - 1) / 2 - 4;
            for (int i = 0; i < steps; i++) token = engine.nextTokens(List.of(Step.last(warm, token)), greedy)[0];
            decodeMs(engine, List.of(warm), new int[]{token}, steps, true, false);
        }
    }

    /** Wall time of one sequence's prefill up to its first token: the best of 5 after a warm-up. */
    private static double bestPrefill(CudaEngine engine, int[] prompt) {
        double best = Double.MAX_VALUE;
        for (int i = 0; i < 6; i++) {
            try (Sequence s = engine.newSequence()) {
                long t0 = System.nanoTime();
                engine.nextTokens(List.of(Step.last(s, prompt)), List.of(TokenChoice.greedy()));
                if (i > 0) best = Math.min(best, (System.nanoTime() - t0) / 1e6);
            }
        }
        return best;
    }

    /** Device-to-device copy of 1 GiB, counted as bytes read plus written, best of 10. */
    static double copyBandwidth(CudaEngine engine) {
        CudaContext cuda = engine.cuda();
        DecoderKernels k = new DecoderKernels(cuda);
        long bytes = 1L << 30;
        DeviceMemory a = cuda.alloc(bytes, "bandwidth test source"), b = cuda.alloc(bytes, "bandwidth test target");
        CUevent start = new CUevent(), stop = new CUevent();
        cuEventCreate(start, 0);
        cuEventCreate(stop, 0);
        float best = Float.MAX_VALUE;
        for (int i = 0; i < 12; i++) {
            cuEventRecord(start, cuda.stream());
            k.copy(a.address(), b.address(), bytes);
            cuEventRecord(stop, cuda.stream());
            cuEventSynchronize(stop);
            float[] ms = {0};
            cuEventElapsedTime(ms, start, stop);
            if (i >= 2) best = Math.min(best, ms[0]);
        }
        cuEventDestroy(start);
        cuEventDestroy(stop);
        cuda.free(a);
        cuda.free(b);
        return 2.0 * bytes / (best / 1000) / 1e9;
    }

    /** Weight bytes of a config, for progress output before the engine exists. */
    private static final class DeviceWeightsSize {
        static double of(OptConfig c) {
            long h = c.hiddenSize(), f = c.ffnDim(), p = c.wordEmbedProjDim();
            return 2.0 * (c.numHiddenLayers() * (4 * h * h + 2 * h * f) + (long) c.vocabSize() * p
                    + (long) (c.maxPositionEmbeddings() + 2) * h);
        }
    }
}
