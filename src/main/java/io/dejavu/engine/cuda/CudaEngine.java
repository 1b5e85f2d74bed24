package io.dejavu.engine.cuda;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.StepSparsity;
import io.dejavu.engine.TokenChoice;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import io.dejavu.sparsity.Predictors;
import jcuda.Pointer;
import jcuda.driver.CUevent;
import jcuda.driver.CUevent_flags;
import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import jcuda.driver.CUstreamCaptureMode;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

import static jcuda.driver.JCudaDriver.*;

/**
 * The OPT decoder on an NVIDIA GPU through the CUDA driver API (JCuda), with kernels compiled at build time
 * (src/main/cuda/decoder.cu). Weights live on the GPU as fp16, the KV cache in paged blocks ({@link KvCachePool}).
 * A forward pass of up to {@code maxBatchTokens} tokens (longer batches run in several passes, prompts split into
 * chunks) runs the linear layers as GEMV at up to 16 tokens (decode: bound by reading the weights once) and on
 * tensor cores above; a decode step of single tokens is captured once per batch size as a CUDA graph and replayed.
 *
 * <p>Deja Vu: with predictors ({@link DevicePredictors}), a decode step of up to {@link Options#sparseMaxTokens()}
 * (by default {@value Options#DEFAULT_SPARSE_MAX_TOKENS}, at most {@value DevicePredictors#MAX_TOKENS}) sparse tokens
 * computes only the union of its tokens' selected MLP neurons and attention heads: the fused sparse MLP
 * reads the selected rows of fc1 and of fc2 transposed; attention computes q, the attention and out_proj of the
 * selected heads only, and k and v of every head, so the KV cache stays exact for later tokens whatever they select.
 * The predictions for layer l + 1 run on a side stream while layer l runs. A pass with any dense or multi-token step
 * runs dense (the union with a dense member is everything), and so do prompts, as in the authors' code.
 *
 * <p>Threading: one engine is used by one thread at a time (the context is made current at each call); calls from
 * several threads at once must be serialised by the caller, as the {@link Engine} contract says.
 */
public final class CudaEngine implements Engine {
    /**
     * @param device          CUDA device index
     * @param kvCacheBytes    size of the KV cache pool; 0 = kvCacheFraction of the memory free after weights and
     *                        scratch buffers
     * @param maxBatchTokens  tokens in one forward pass (sizes the scratch buffers)
     * @param maxLogitRows    logit rows one pass returns (sizes the logits buffer)
     * @param cudaGraphs      capture and replay decode steps
     * @param poison          fill scratch buffers with NaN before each pass (tests: a kernel that skips an output
     *                        shows)
     * @param dependentLaunch capture each decode graph also with programmatic dependent launch (each kernel may
     *                        start while its predecessor drains; Hopper and newer) and keep the faster of the two
     *                        (on by default: it depends on the shapes, docs/BENCHMARKS.md); off: plain launches
     * @param wgmma           prefill GEMMs on Hopper's warpgroup MMA where the loaded kernels have it (on by
     *                        default); off: the wmma GEMM every GPU from sm_80 runs
     */
    public record Options(int device, long kvCacheBytes, double kvCacheFraction, int maxBatchTokens,
                          int maxLogitRows, boolean cudaGraphs, boolean poison, boolean dependentLaunch,
                          boolean wgmma, int sparseMaxTokens) {
        /**
         * Sparse decode steps of more tokens run dense: with the unions of real text, sparse decode is faster than
         * dense up to 8 tokens and slower from 9 at the opt-6.7b and opt-13b shapes (docs/BENCHMARKS.md).
         */
        public static final int DEFAULT_SPARSE_MAX_TOKENS = 8;

        public Options {
            if (maxBatchTokens < 1) throw new IllegalArgumentException("maxBatchTokens must be >= 1");
            if (maxLogitRows < 1) throw new IllegalArgumentException("maxLogitRows must be >= 1");
            if (sparseMaxTokens < 0 || sparseMaxTokens > DevicePredictors.MAX_TOKENS) {
                throw new IllegalArgumentException("sparseMaxTokens must be in [0, " + DevicePredictors.MAX_TOKENS
                        + "], was " + sparseMaxTokens);
            }
            if (!(kvCacheFraction > 0 && kvCacheFraction <= 0.98)) {
                throw new IllegalArgumentException("kvCacheFraction must be in (0, 0.98]");
            }
        }

        public static Options defaults() {
            return new Options(0, 0, 0.9, 2048, 256, true, false, true, true, DEFAULT_SPARSE_MAX_TOKENS);
        }

        public Options withKvCacheBytes(long bytes) {
            return new Options(device, bytes, kvCacheFraction, maxBatchTokens, maxLogitRows, cudaGraphs, poison,
                    dependentLaunch, wgmma, sparseMaxTokens);
        }

        public Options withPoison(boolean value) {
            return new Options(device, kvCacheBytes, kvCacheFraction, maxBatchTokens, maxLogitRows, cudaGraphs, value,
                    dependentLaunch, wgmma, sparseMaxTokens);
        }

        public Options withCudaGraphs(boolean value) {
            return new Options(device, kvCacheBytes, kvCacheFraction, maxBatchTokens, maxLogitRows, value, poison,
                    dependentLaunch, wgmma, sparseMaxTokens);
        }

        public Options withDependentLaunch(boolean value) {
            return new Options(device, kvCacheBytes, kvCacheFraction, maxBatchTokens, maxLogitRows, cudaGraphs, poison,
                    value, wgmma, sparseMaxTokens);
        }

        /** Whether prefill may use the Hopper GEMM (when the loaded kernels have it); false: the wmma GEMM. */
        public Options withWgmma(boolean value) {
            return new Options(device, kvCacheBytes, kvCacheFraction, maxBatchTokens, maxLogitRows, cudaGraphs, poison,
                    dependentLaunch, value, sparseMaxTokens);
        }

        /** The most tokens a decode step may have to run sparse; 0 = never sparse. */
        public Options withSparseMaxTokens(int value) {
            return new Options(device, kvCacheBytes, kvCacheFraction, maxBatchTokens, maxLogitRows, cudaGraphs, poison,
                    dependentLaunch, wgmma, value);
        }

        public Options withMaxBatchTokens(int value) {
            return new Options(device, kvCacheBytes, kvCacheFraction, value, maxLogitRows, cudaGraphs, poison,
                    dependentLaunch, wgmma, sparseMaxTokens);
        }
    }

    /** Up to this many tokens a pass runs the split decode attention; longer ones the tiled prefill attention. */
    private static final int MAX_SPLIT_TOKENS = 64;
    /** decoder.cu's next_tokens: temperature, top-p, top-k, seed, vocabulary limit per row of logits. */
    private static final int CHOICE_INTS = 5;

    private final CudaContext cuda;
    private final DecoderKernels kernels;
    private final DeviceWeights weights;
    private final OptConfig config;
    private final Options options;
    private final KvCachePool cache;
    private final int maxTokens, maxRows, maxBlocks;
    private final int h, f, p, vocab, heads, headDim;
    /** The decode attention kernel for this model's head width. */
    private final String attentionKernel;
    private final DeviceMemory scratch, meta, counters, samplerMerge;
    private final long x, normed, queries, attended, ffn, headRows, headIn, logits, partialOut, partialMaxSum, ids;
    private final Pointer hostLogitsPtr = new Pointer();
    private final ByteBuffer hostLogits;
    /** Host buffers of the passes in flight, used in turn (see {@link PassSlot}). */
    private final PassSlot[] slots = new PassSlot[2];
    private int nextSlot;
    /** Passes queued so far. */
    private long passes;
    private final Map<Integer, CUgraphExec> graphs = new HashMap<>();
    /** Per graph key (as graphs): what {@link #fasterGraph} found. */
    private final Map<Integer, LaunchTuning> launchTunings = new HashMap<>();
    /** Null without predictors. */
    private final DevicePredictors predictors;
    private StepSparsity lastSparsity;
    private final Set<CudaSequence> open = Collections.newSetFromMap(new IdentityHashMap<>());
    private boolean closed;

    /** Sets up the sparse path on an engine's weights (before the KV cache takes the free memory), or null. */
    interface SparsitySetup {
        DevicePredictors create(CudaContext cuda, DecoderKernels kernels, DeviceWeights weights);
    }

    private CudaEngine(CudaContext cuda, DeviceWeights weights, Options options, SparsitySetup sparsity) {
        this.cuda = cuda;
        this.kernels = new DecoderKernels(cuda);
        this.weights = weights;
        this.config = weights.config;
        this.options = options;
        h = config.hiddenSize();
        f = config.ffnDim();
        p = config.wordEmbedProjDim();
        vocab = config.vocabSize();
        heads = config.numAttentionHeads();
        headDim = config.headDim();
        if (h % 8 != 0 || f % 8 != 0 || p % 8 != 0 || headDim % 2 != 0) {
            throw new IllegalArgumentException("the CUDA engine needs hidden, ffn and embedding widths divisible by 8 "
                    + "and an even head width; this model has " + h + ", " + f + ", " + p + ", " + headDim);
        }
        maxTokens = options.maxBatchTokens();
        maxRows = Math.min(options.maxLogitRows(), maxTokens);
        maxBlocks = (config.maxPositionEmbeddings() + KvCachePool.BLOCK_TOKENS - 1) / KvCachePool.BLOCK_TOKENS;
        // fails here, with the reason, for heads it does not take
        attentionKernel = DecoderKernels.attentionKernel(headDim);
        int splitTokens = Math.min(maxTokens, MAX_SPLIT_TOKENS);
        long wide = Math.max(h, p);
        long[] sizes = {
                4L * maxTokens * h,            // x: the fp32 residual stream
                2L * maxTokens * wide,         // normed: LayerNorm output / embedding rows, fp16
                2L * maxTokens * h,            // queries
                2L * maxTokens * h,            // attended: attention output
                2L * maxTokens * f,            // ffn: fc1 output
                4L * maxRows * h,              // headRows: rows whose logits are wanted
                2L * maxRows * wide,           // headIn
                4L * maxRows * vocab,          // logits
                4L * splitTokens * heads * DecoderKernels.MAX_ATTENTION_SPLITS * headDim,
                8L * splitTokens * heads * DecoderKernels.MAX_ATTENTION_SPLITS,
                4L * maxRows};                 // ids: next tokens
        long[] at = new long[sizes.length];
        long total = 0;
        for (int i = 0; i < sizes.length; i++) {
            at[i] = total;
            total += (sizes[i] + 255) / 256 * 256;
        }
        scratch = cuda.alloc(total, "scratch buffers for " + maxTokens + " tokens a pass");
        x = scratch.at(at[0]);
        normed = scratch.at(at[1]);
        queries = scratch.at(at[2]);
        attended = scratch.at(at[3]);
        ffn = scratch.at(at[4]);
        headRows = scratch.at(at[5]);
        headIn = scratch.at(at[6]);
        logits = scratch.at(at[7]);
        partialOut = scratch.at(at[8]);
        partialMaxSum = scratch.at(at[9]);
        ids = scratch.at(at[10]);
        // Split attention's merge counters: zero between launches (each merge resets its own), never poisoned.
        counters = cuda.alloc(4L * splitTokens * heads, "attention merge counters");
        cuMemsetD32(counters.ptr(0), 0, (long) splitTokens * heads);
        // The sampler's merge of a row's splits: a key and a count per row, zero between launches, never poisoned.
        samplerMerge = cuda.alloc(12L * maxRows, "sampler merge state");
        cuMemsetD32(samplerMerge.ptr(0), 0, 3L * maxRows);
        long metaBytes = 4L * metaInts(maxTokens, maxTokens, maxRows);
        meta = cuda.alloc(metaBytes, "step metadata");
        for (int i = 0; i < slots.length; i++) {
            slots[i] = new PassSlot(metaBytes, 4L * maxRows, 16L * config.numHiddenLayers());
        }
        hostLogits = pinned(hostLogitsPtr, 4L * maxRows * vocab);
        predictors = sparsity == null ? null : sparsity.create(cuda, kernels, weights);
        if (predictors != null) {
            System.err.printf("[cuda] sparse path: %.1f MiB of predictors and transposed weights%n",
                    predictors.extraBytes / 1048576.0);
        }
        if (kernels.useWgmma(options.wgmma())) {
            kernels.splitKWorkspace(cuda.alloc(kernels.splitKBytes(), "split-K partial sums of the prefill GEMM").at(0));
        }
        if (DecoderKernels.tiledAttention(headDim)) {
            cuda.allowSharedMemory("attention_prefill", DecoderKernels.prefillAttentionSharedBytes(headDim));
        }
        long kvBytes = options.kvCacheBytes() > 0 ? options.kvCacheBytes()
                : (long) (cuda.freeMemory() * options.kvCacheFraction());
        cache = new KvCachePool(cuda, config, kvBytes);
        cuda.synchronize();
    }

    private static ByteBuffer pinned(Pointer host, long bytes) {
        cuMemAllocHost(host, bytes);
        return host.getByteBuffer(0, bytes).order(ByteOrder.nativeOrder());
    }

    /** Why the CUDA backend cannot run here, or null when it can. */
    public static String unavailableReason() {
        try {
            return CudaContext.unavailableReason();
        } catch (LinkageError e) {
            return "the JCuda natives do not load on this platform (" + e.getMessage() + ")";
        }
    }

    public static boolean isAvailable() {
        return unavailableReason() == null;
    }

    /** Uploads a model's weights to the GPU. */
    public static CudaEngine load(OptModel model, Options options) {
        return load(model, options, null);
    }

    /**
     * Uploads a model's weights and, when predictors are given, sets up Deja Vu sparse decoding with them (steps
     * may then ask for it, {@link Step#sparse()}).
     */
    public static CudaEngine load(OptModel model, Options options, Predictors predictors) {
        if (predictors != null && !model.config().activationFunction().equals("relu")) {
            throw new IllegalArgumentException("contextual sparsity needs ReLU neurons; this model uses "
                    + model.config().activationFunction());
        }
        CudaContext cuda = new CudaContext(options.device());
        try {
            return new CudaEngine(cuda, DeviceWeights.upload(cuda, model.weights()), options, predictors == null ? null
                    : (c, k, w) -> DevicePredictors.upload(c, k, w, predictors));
        } catch (RuntimeException e) {
            cuda.close();
            throw e;
        }
    }

    /** An engine over pseudo-random weights made on the GPU with a config's shapes (benchmarks). */
    public static CudaEngine random(OptConfig config, Options options, int seed) {
        return random(config, options, seed, null);
    }

    /** Pseudo-random predictors for {@link #random}: rank, and the top-k kept per token of neurons and heads. */
    public record RandomSparsity(int rank, int mlpK, int headsKeep) {
    }

    /**
     * The same with pseudo-random predictors (look-ahead inputs, top-k per token), for the sparse benchmark: its speed
     * depends on how many rows the selections keep, not on which.
     */
    public static CudaEngine random(OptConfig config, Options options, int seed, RandomSparsity sparsity) {
        CudaContext cuda = new CudaContext(options.device());
        try {
            DecoderKernels k = new DecoderKernels(cuda);
            return new CudaEngine(cuda, DeviceWeights.random(cuda, k, config, seed), options, sparsity == null ? null
                    : (c, kk, w) -> DevicePredictors.random(c, kk, w, sparsity.rank(), sparsity.mlpK(),
                    sparsity.headsKeep(), seed + 1000));
        } catch (RuntimeException e) {
            cuda.close();
            throw e;
        }
    }

    @Override
    public boolean sparseAvailable() {
        return predictors != null;
    }

    @Override
    public StepSparsity lastStepSparsity() {
        return lastSparsity;
    }

    /**
     * New operating points, one per layer (the benchmark sweeps them); drops the captured graphs, whose kernel
     * arguments held the old ones.
     */
    void setSparseOperatingPoints(DevicePredictors.OperatingPoint[] points) {
        if (predictors == null) throw new IllegalStateException("no predictors");
        predictors.setOperatingPoints(points);
        dropGraphs();
    }

    /** Where the look-ahead predictions run from now on (the benchmark's ablations); drops the captured graphs. */
    void placePredictions(DevicePredictors.Placement placement) {
        if (predictors == null) throw new IllegalStateException("no predictors");
        predictors.place(placement);
        dropGraphs();
    }

    private void dropGraphs() {
        cuda.makeCurrent();
        for (CUgraphExec g : graphs.values()) cuGraphExecDestroy(g);
        graphs.clear();
        launchTunings.clear();
    }

    @Override
    public OptConfig config() {
        return config;
    }

    @Override
    public String backend() {
        return "cuda";
    }

    /** Runs {@code work} eagerly (no graphs) timing each kernel; returns the per-kernel table. */
    String profile(Runnable work) {
        cuda.makeCurrent();
        cuda.startProfile();
        try {
            work.run();
        } catch (RuntimeException e) {
            cuda.stopProfile();
            throw e;
        }
        return cuda.stopProfile();
    }

    /** The pass whose metadata is on the device, captured as a graph, its kernels launched dependently or not. */
    private CUgraphExec capture(int t, int s, int r, boolean sparse, boolean dependent) {
        cuda.useDependentLaunch(dependent);
        cuStreamBeginCapture(cuda.stream(), CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
        CUgraph captured = new CUgraph();
        try {
            encode(t, s, r, kernels.attentionSplits(attentionKernel, t, heads), 0, sparse);
        } catch (RuntimeException e) {
            try {
                cuStreamEndCapture(cuda.stream(), captured);  // leave the stream usable
            } catch (RuntimeException ignored) {
                e.addSuppressed(ignored);
            }
            throw e;
        } finally {
            cuda.useDependentLaunch(false);
        }
        cuStreamEndCapture(cuda.stream(), captured);
        CUgraphExec graph = new CUgraphExec();
        cuGraphInstantiate(graph, captured, 0);
        cuGraphUpload(graph, cuda.stream());  // so that the first replay does not pay for it
        cuGraphDestroy(captured);
        return graph;
    }

    /**
     * The pass captured twice, with and without programmatic dependent launch, keeping whichever replays faster
     * (alternated, {@link #TUNING_ROUNDS} rounds of {@link #TUNING_REPLAYS}). Which is faster depends on the shapes:
     * on an H200 the dependent launch made opt-6.7b's batch-1 step 2.8% faster and opt-13b's 6% slower
     * (docs/BENCHMARKS.md). Replaying recomputes the same pass: its cache slots get the same values again. The first
     * step of each batch size pays for it: a second capture and 16 replays.
     */
    private CUgraphExec fasterGraph(int key, int t, int s, int r, boolean sparse) {
        CUgraphExec plain = capture(t, s, r, sparse, false), dependent = capture(t, s, r, sparse, true);
        double plainMs = 0, dependentMs = 0;
        for (int round = 0; round < TUNING_ROUNDS; round++) {
            plainMs += replayMs(plain, TUNING_REPLAYS);
            dependentMs += replayMs(dependent, TUNING_REPLAYS);
        }
        boolean faster = dependentMs < plainMs;
        cuGraphExecDestroy(faster ? plain : dependent);
        launchTunings.put(key, new LaunchTuning(faster, dependentMs / TUNING_ROUNDS, plainMs / TUNING_ROUNDS));
        return faster ? dependent : plain;
    }

    private static final int TUNING_ROUNDS = 2, TUNING_REPLAYS = 4;

    /**
     * Which launch a decode graph kept: {@code dependent} when programmatic dependent launch replayed faster, with
     * the mean replay times of both ways (ms).
     */
    public record LaunchTuning(boolean dependent, double dependentMs, double plainMs) {
    }

    /** Decode graphs captured so far, dense and sparse. */
    int decodeGraphCount() {
        return graphs.size();
    }

    /** The launch tuning of the dense decode graph of {@code tokens} tokens; null when none was tuned. */
    public LaunchTuning launchTuning(int tokens) {
        return launchTunings.get(tokens);
    }

    /**
     * GPU time of one decode step of {@code batch} sequences: its captured graph (the last step's metadata) replayed
     * {@code reps} times back to back, so no host work sits between replays. Rewrites the last step's cache slots
     * with the same values. Null when no graph of that batch size was captured yet.
     */
    Double graphReplayMs(int batch, int reps) {
        CUgraphExec graph = graphs.get(batch);
        if (graph == null) return null;
        cuda.makeCurrent();
        return replayMs(graph, reps);
    }

    /** Mean ms of {@code reps} back-to-back replays of a graph, after one unmeasured. */
    private double replayMs(CUgraphExec graph, int reps) {
        jcuda.driver.CUevent start = new jcuda.driver.CUevent(), stop = new jcuda.driver.CUevent();
        cuEventCreate(start, 0);
        cuEventCreate(stop, 0);
        cuGraphLaunch(graph, cuda.stream());  // warm
        cuEventRecord(start, cuda.stream());
        for (int i = 0; i < reps; i++) cuGraphLaunch(graph, cuda.stream());
        cuEventRecord(stop, cuda.stream());
        cuEventSynchronize(stop);
        float[] ms = {0};
        cuEventElapsedTime(ms, start, stop);
        cuEventDestroy(start);
        cuEventDestroy(stop);
        return (double) ms[0] / reps;
    }

    CudaContext cuda() {
        return cuda;
    }

    /** The prefill GEMM in use: "wgmma" (Hopper) or "wmma". */
    String prefillGemm() {
        return kernels.wgmma() ? "wgmma" : "wmma";
    }

    /** As {@link Options#withWgmma}, for an engine already made (the benchmark's same-run baseline). */
    void preferWgmma(boolean value) {
        cuda.makeCurrent();
        kernels.useWgmma(value && options.wgmma());
    }

    public String deviceName() {
        return cuda.deviceName();
    }

    /** Weight bytes one decode step must read (the memory-bandwidth floor's numerator). */
    public long weightBytesPerStep() {
        return weights.bytesPerStep;
    }

    @Override
    public int kvCacheBlockTokens() {
        return KvCachePool.BLOCK_TOKENS;
    }

    @Override
    public int kvCacheBlocks() {
        return cache.blocks();
    }

    @Override
    public int freeKvCacheBlocks() {
        return cache.freeBlocks();
    }

    @Override
    public Sequence newSequence() {
        checkOpen();
        CudaSequence s = new CudaSequence(this);
        open.add(s);
        return s;
    }

    void release(CudaSequence s) {
        if (open.remove(s)) s.freeBlocks(cache);
    }

    @Override
    public List<float[][]> forward(List<Step> steps) {
        float[][][] out = new float[steps.size()][][];
        for (int i = 0; i < steps.size(); i++) out[i] = new float[steps.get(i).allLogits() ? steps.get(i).tokens().length : 1][];
        run(steps, null, out, null);
        return List.of(out);
    }

    /**
     * Captures (and tunes, {@link #fasterGraph}) the decode graph of every size from 1 to {@code maxSequences} that a
     * graph serves, dense and, with predictors, sparse, by a throwaway greedy step of that many new one-token
     * sequences each (a graph serves any context: its attention splits depend on the size only). At most
     * {@code maxSequences} KV cache blocks are in use at once.
     */
    @Override
    public int prepareDecode(int maxSequences) {
        if (!options.cudaGraphs()) return 0;
        // each readied size's sequences hold a block of the KV cache apiece while it runs
        int most = Math.min(Math.min(maxSequences, cache.freeBlocks()), Math.min(MAX_SPLIT_TOKENS, maxRows));
        int sparseMost = predictors == null ? 0 : Math.min(most, Math.min(options.sparseMaxTokens(), maxTokens / 2));
        int readied = 0;
        for (int t = 1; t <= most; t++) {
            for (boolean sparse : t <= sparseMost ? new boolean[]{false, true} : new boolean[]{false}) {
                List<Sequence> sequences = new ArrayList<>(t);
                try {
                    List<Step> steps = new ArrayList<>(t);
                    for (int i = 0; i < t; i++) {
                        sequences.add(newSequence());
                        steps.add(Step.last(sequences.get(i), config.bosTokenId()).withSparse(sparse));
                    }
                    nextTokens(steps, Collections.nCopies(t, TokenChoice.greedy()));
                    readied++;
                } finally {
                    sequences.forEach(Sequence::close);
                }
            }
        }
        return readied;
    }

    @Override
    public boolean samplesOnDevice() {
        return true;
    }

    /** Picks on the GPU where a step has a choice; only the other steps' logit rows are copied to the host. */
    @Override
    public Picks nextTokensOrLogits(List<Step> steps, List<TokenChoice> choices) {
        if (choices.size() != steps.size()) {
            throw new IllegalArgumentException(steps.size() + " steps but " + choices.size() + " token choices");
        }
        for (Step s : steps) {
            if (s.allLogits()) throw new IllegalArgumentException("steps must want last logits only");
        }
        int[] next = new int[steps.size()];
        float[][][] out = new float[steps.size()][][];
        for (int i = 0; i < out.length; i++) if (choices.get(i) == null) out[i] = new float[1][];
        run(steps, choices, out, next);
        float[][] logits = new float[steps.size()][];
        for (int i = 0; i < out.length; i++) if (out[i] != null) logits[i] = out[i][0];
        return new Picks(next, logits);
    }

    /**
     * Decode steps whose tokens are all picked on the GPU and whose pass replays a graph run ahead: the step is queued
     * and its tokens read when asked, so that the next step can be queued behind it first ({@link #submitFollowing}).
     */
    @Override
    public boolean runsAhead() {
        return replaysGraph(1);
    }

    @Override
    public PendingTokens submitNextTokens(List<Step> steps, List<TokenChoice> choices) {
        if (!runsAheadFor(steps, choices)) return Engine.super.submitNextTokens(steps, choices);
        return submit(steps, choices, false);
    }

    /** The step after {@code previous} is queued at once: its tokens go from that step's picks to its input on the GPU. */
    @Override
    public PendingTokens submitFollowing(PendingTokens previous, List<Step> steps, List<TokenChoice> choices) {
        // its picks are still in the device's ids buffer only while no pass has run since
        if (!(previous instanceof Submitted before) || before.engine() != this || before.pass != passes
                || !before.sequences.equals(steps.stream().map(Step::sequence).toList())
                || !runsAheadFor(steps, choices)) {
            return Engine.super.submitFollowing(previous, steps, choices);
        }
        return submit(steps, choices, true);
    }

    /** Whether these steps make one decode pass, replayed as a graph, whose every token is picked on the GPU. */
    private boolean runsAheadFor(List<Step> steps, List<TokenChoice> choices) {
        if (steps.isEmpty() || choices.size() != steps.size() || !replaysGraph(steps.size())) return false;
        for (int i = 0; i < steps.size(); i++) {
            Step step = steps.get(i);
            if (choices.get(i) == null || step.tokens().length != 1 || step.allLogits()) return false;
        }
        return true;
    }

    private Submitted submit(List<Step> steps, List<TokenChoice> choices, boolean tokensOnDevice) {
        checkOpen();
        cuda.makeCurrent();
        validate(steps);
        List<Piece> pieces = new ArrayList<>(steps.size());
        List<Sequence> sequences = new ArrayList<>(steps.size());
        for (int i = 0; i < steps.size(); i++) {
            Step step = steps.get(i);
            pieces.add(new Piece(i, (CudaSequence) step.sequence(), step.tokens(), 0, 1, false, step.sparse()));
            sequences.add(step.sequence());
        }
        lastSparsity = null;
        Enqueued pass = enqueue(pieces, choices, true, tokensOnDevice);
        cuEventRecord(pass.slot().done, cuda.stream());
        Submitted submitted = new Submitted(pass, passes, sequences);
        pass.slot().unread = submitted;
        return submitted;
    }

    /** A decode pass on the stream; its picked tokens are in its slot once its event has passed. */
    private final class Submitted implements PendingTokens {
        final Enqueued enqueued;
        /** Which pass it was ({@link #passes} when it was queued). */
        final long pass;
        final List<Sequence> sequences;
        private int[] tokens;
        private StepSparsity sparsity;

        Submitted(Enqueued enqueued, long pass, List<Sequence> sequences) {
            this.enqueued = enqueued;
            this.pass = pass;
            this.sequences = sequences;
        }

        CudaEngine engine() {
            return CudaEngine.this;
        }

        @Override
        public int[] await() {
            if (tokens == null) {
                PassSlot slot = enqueued.slot();
                cuEventSynchronize(slot.done);
                tokens = new int[enqueued.r()];
                slot.ids.clear().asIntBuffer().get(tokens);  // a decode pass's rows are its steps, in order
                if (enqueued.sparseTokens() > 0) {
                    double[][] shares = shares(enqueued);
                    sparsity = new StepSparsity(shares[0], shares[1]);
                }
                slot.unread = null;
            }
            return tokens;
        }

        @Override
        public StepSparsity sparsity() {
            return sparsity;
        }
    }

    /** A piece of a step that goes into one pass: tokens [from, to) of the step. */
    private record Piece(int step, CudaSequence sequence, int[] tokens, int from, int to, boolean allLogits,
                         boolean sparse) {
        int count() {
            return to - from;
        }

        int rows() {
            return allLogits ? to - from : (to == tokens.length ? 1 : 0);
        }
    }

    private void run(List<Step> steps, List<TokenChoice> choices, float[][][] logitsOut, int[] nextOut) {
        checkOpen();
        cuda.makeCurrent();
        validate(steps);
        lastSparsity = null;
        int layers = config.numHiddenLayers();
        tallyMlp = new double[layers];
        tallyHeads = new double[layers];
        tallyTokens = 0;
        List<Piece> pass = new ArrayList<>();
        int tokens = 0, rows = 0;
        for (int s = 0; s < steps.size(); s++) {
            Step step = steps.get(s);
            CudaSequence seq = (CudaSequence) step.sequence();
            int n = step.tokens().length;
            for (int from = 0; from < n; ) {
                int take = Math.min(n - from, maxTokens - tokens);
                if (step.allLogits()) take = Math.min(take, maxRows - rows);
                boolean last = from + take == n;
                if (take == 0 || (!step.allLogits() && last && rows == maxRows)) {
                    runPass(pass, choices, logitsOut, nextOut);
                    pass.clear();
                    tokens = rows = 0;
                    continue;
                }
                Piece piece = new Piece(s, seq, step.tokens(), from, from + take, step.allLogits(), step.sparse());
                pass.add(piece);
                tokens += take;
                rows += piece.rows();
                from += take;
                if (from < n) {  // the pass is full: the rest of this step goes to the next
                    runPass(pass, choices, logitsOut, nextOut);
                    pass.clear();
                    tokens = rows = 0;
                }
            }
        }
        if (!pass.isEmpty()) runPass(pass, choices, logitsOut, nextOut);
        if (tallyTokens > 0) {
            for (int l = 0; l < layers; l++) {
                tallyMlp[l] /= tallyTokens;
                tallyHeads[l] /= tallyTokens;
            }
            lastSparsity = new StepSparsity(tallyMlp, tallyHeads);
        }
    }

    /** What the sparse tokens of this run's passes computed, summed over them (see {@link #lastStepSparsity}). */
    private double[] tallyMlp, tallyHeads;
    private int tallyTokens;

    private void validate(List<Step> steps) {
        if (steps.isEmpty()) throw new IllegalArgumentException("forward needs at least one step");
        Set<Sequence> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        for (Step step : steps) {
            if (!(step.sequence() instanceof CudaSequence seq) || seq.engine() != this) {
                throw new IllegalArgumentException("a step's sequence was not made by this CUDA engine");
            }
            if (seq.closed()) throw new IllegalArgumentException("a step's sequence is closed");
            if (!seen.add(seq)) throw new IllegalArgumentException("a sequence appears in two steps of one forward");
            if (seq.length() + step.tokens().length > config.maxPositionEmbeddings()) {
                throw new IllegalArgumentException("sequence of length " + seq.length() + " + " + step.tokens().length
                        + " tokens exceeds the model's " + config.maxPositionEmbeddings() + " positions");
            }
            for (int t : step.tokens()) {
                if (t < 0 || t >= vocab) throw new IllegalArgumentException("token id " + t + " outside [0, " + vocab + ")");
            }
        }
    }

    /** Whether a decode pass of {@code t} tokens replays its CUDA graph (captured the first time it meets t). */
    private boolean replaysGraph(int t) {
        return options.cudaGraphs() && !cuda.profiling() && t <= Math.min(MAX_SPLIT_TOKENS, maxRows);
    }

    /** Ints of the metadata block for a pass of T tokens, S sequences and R logit rows (see {@link #runPass}). */
    private int metaInts(int t, int s, int r) {
        return tilesAt(t, s, r) + 4 * (t / DecoderKernels.PREFILL_TILE + s + 1);
    }

    /** Where the metadata's token choices begin, after the block tables (see {@link #runPass}). */
    private int choicesAt(int t, int s) {
        return 6 * t + s * maxBlocks;
    }

    /** Where the metadata's query tiles begin, after the token choices. */
    private int tilesAt(int t, int s, int r) {
        return choicesAt(t, s) + CHOICE_INTS * r;
    }

    /**
     * Host-side buffers of one pass: the source of its metadata upload and the destination of its picked tokens
     * (pinned), and an event after its last copy. There are two, used in turn, so that a pass can be queued while the
     * one before still runs and its tokens are still to be read ({@link #submitFollowing}).
     */
    private static final class PassSlot {
        final Pointer metaPtr = new Pointer(), idsPtr = new Pointer(), countsPtr = new Pointer();
        /** counts: a sparse pass's selection sizes per layer ({@link DevicePredictors#counts}). */
        final ByteBuffer meta, ids, counts;
        final CUevent done = new CUevent();
        /** A submitted pass whose tokens are still in {@link #ids}, unread. */
        Submitted unread;

        PassSlot(long metaBytes, long idsBytes, long countsBytes) {
            meta = pinned(metaPtr, metaBytes);
            ids = pinned(idsPtr, idsBytes);
            counts = pinned(countsPtr, countsBytes);
            cuEventCreate(done, CUevent_flags.CU_EVENT_DISABLE_TIMING);
        }

        void free() {
            cuEventDestroy(done);
            cuMemFreeHost(metaPtr);
            cuMemFreeHost(idsPtr);
            cuMemFreeHost(countsPtr);
        }
    }

    /** The next pass's slot; a submitted pass that used it before has its tokens read first. */
    private PassSlot takeSlot() {
        PassSlot slot = slots[nextSlot];
        nextSlot ^= 1;
        if (slot.unread != null) slot.unread.await();
        return slot;
    }

    /** A queued pass: where its rows' results are, and what it ran. */
    private record Enqueued(PassSlot slot, int r, int[] rowStep, boolean sparse, int sparseTokens) {
    }

    private void runPass(List<Piece> pieces, List<TokenChoice> choices, float[][][] logitsOut, int[] nextOut) {
        boolean picking = nextOut != null;
        Enqueued pass = enqueue(pieces, choices, picking, false);
        int r = pass.r();
        int[] rowStep = pass.rowStep();
        // Logit rows cross to the host where no token is picked on the GPU: all rows, or those of steps without a
        // choice, each where it lies.
        boolean[] wanted = new boolean[r];
        for (int row = 0; row < r; row++) {
            wanted[row] = logitsOut != null && logitsOut[rowStep[row]] != null
                    && (!picking || choices.get(rowStep[row]) == null);
            if (picking && wanted[row]) {
                cuda.download(hostLogitsPtr.withByteOffset(4L * row * vocab), scratch,
                        logits - scratch.address() + 4L * row * vocab, 4L * vocab);
            }
        }
        if (!picking) cuda.download(hostLogitsPtr, scratch, logits - scratch.address(), 4L * r * vocab);
        cuda.synchronize();
        if (picking) {
            IntBuffer got = pass.slot().ids.clear().asIntBuffer();
            for (int row = 0; row < r; row++) nextOut[rowStep[row]] = got.get(row);
        }
        FloatBuffer got = hostLogits.clear().asFloatBuffer();
        for (int row = 0; row < r; row++) {
            if (!wanted[row]) continue;
            float[] l = new float[vocab];
            got.get(row * vocab, l);
            float[][] stepRows = logitsOut[rowStep[row]];
            if (stepRows.length == 1) stepRows[0] = l;
            else {
                // allLogits rows of one step come in order; earlier passes filled the first ones
                int k = 0;
                while (stepRows[k] != null) k++;
                stepRows[k] = l;
            }
        }
        if (pass.sparseTokens() > 0) tally(shares(pass), pass.sparseTokens());
    }

    /**
     * Queues one pass on the stream, with its tokens picked on the GPU and copied to its slot where {@code pick};
     * with {@code tokensOnDevice} its tokens are the ones the pass before picked, copied on the device (the pieces'
     * own are placeholders). The pieces' sequences count the pass's tokens when this returns.
     */
    private Enqueued enqueue(List<Piece> pieces, List<TokenChoice> choices, boolean pick, boolean tokensOnDevice) {
        int t = 0, r = 0, sparseTokens = 0;
        boolean decode = true, allSparse = true;
        for (Piece piece : pieces) {
            piece.sequence().reserve(cache, piece.count());
            t += piece.count();
            r += piece.rows();
            decode &= piece.count() == 1 && piece.rows() == 1;
            allSparse &= piece.sparse();
            if (piece.sparse()) sparseTokens += piece.count();
        }
        // The sparse MLP keeps its fp32 ReLU outputs in the ffn buffer (sized for maxTokens fp16 rows).
        boolean sparse = predictors != null && decode && allSparse
                && t <= Math.min(options.sparseMaxTokens(), maxTokens / 2);
        int s = pieces.size();
        // Metadata, one upload: tokens, positions, slots, query's sequence, query's context, logit rows [T each],
        // block tables [S][maxBlocks], token choices [R][CHOICE_INTS].
        PassSlot slot = takeSlot();
        passes++;
        IntBuffer ints = slot.meta.clear().asIntBuffer();
        int ti = 0, ri = 0;
        int[] rowStep = new int[r];
        int[] rowPosition = new int[r];
        for (int si = 0; si < s; si++) {
            Piece piece = pieces.get(si);
            CudaSequence seq = piece.sequence();
            for (int i = piece.from(); i < piece.to(); i++, ti++) {
                int pos = seq.length() + i - piece.from();
                ints.put(ti, piece.tokens()[i]);
                ints.put(t + ti, pos);
                ints.put(2 * t + ti, seq.slot(pos));
                ints.put(3 * t + ti, si);
                ints.put(4 * t + ti, pos + 1);
                if (piece.allLogits() || i == piece.tokens().length - 1) {
                    ints.put(5 * t + ri, ti);
                    rowStep[ri] = piece.step();
                    rowPosition[ri++] = pos;
                }
            }
            for (int b = 0; b < seq.blockCount(); b++) ints.put(6 * t + si * maxBlocks + b, seq.block(b));
        }
        int choiceAt = choicesAt(t, s);
        if (choices != null) {
            for (int row = 0; row < r; row++) {
                // a step that wants its logits instead still gets a (greedy) pick, which is not read
                TokenChoice c = Objects.requireNonNullElse(choices.get(rowStep[row]), TokenChoice.greedy());
                int at = choiceAt + CHOICE_INTS * row;
                ints.put(at, Float.floatToRawIntBits(c.temperature()));
                ints.put(at + 1, Float.floatToRawIntBits(c.topP()));
                ints.put(at + 2, Float.floatToRawIntBits(c.topK()));
                ints.put(at + 3, c.drawSeed(rowPosition[row]));
                ints.put(at + 4, c.vocabLimit());
            }
        }
        // query tiles of the tiled prefill attention: up to 64 consecutive tokens of one sequence each
        int tileBase = tilesAt(t, s, r), tiles = 0;
        boolean tiled = t > MAX_SPLIT_TOKENS && DecoderKernels.tiledAttention(headDim);
        if (tiled) {
            int token = 0;
            for (int si = 0; si < s; si++) {
                Piece piece = pieces.get(si);
                for (int off = 0; off < piece.count(); off += DecoderKernels.PREFILL_TILE, tiles++) {
                    ints.put(tileBase + 4 * tiles, token + off);
                    ints.put(tileBase + 4 * tiles + 1, Math.min(DecoderKernels.PREFILL_TILE, piece.count() - off));
                    ints.put(tileBase + 4 * tiles + 2, si);
                    ints.put(tileBase + 4 * tiles + 3, piece.sequence().length() + off);
                }
                token += piece.count();
            }
        }
        cuda.upload(meta, 0, slot.metaPtr, 4L * metaInts(t, s, r));
        if (tokensOnDevice) cuda.copy(meta, 0, scratch, ids - scratch.address(), 4L * t);
        if (options.poison()) cuMemsetD16Async(scratch.ptr(0), (short) 0x7E00, scratch.bytes() / 2, cuda.stream());

        if (decode && replaysGraph(t)) {
            int key = sparse ? -t : t;
            CUgraphExec graph = graphs.get(key);
            if (graph == null) {
                graph = options.dependentLaunch() && cuda.canLaunchDependent() ? fasterGraph(key, t, s, r, sparse)
                        : capture(t, s, r, sparse, false);
                graphs.put(key, graph);
            }
            cuGraphLaunch(graph, cuda.stream());
        } else if (t <= MAX_SPLIT_TOKENS) {
            encode(t, s, r, kernels.attentionSplits(attentionKernel, t, heads), 0, sparse);
        } else {
            encode(t, s, r, 1, tiles, false);
        }
        if (sparse) cuda.download(slot.countsPtr, predictors.counts(), 0, 16L * config.numHiddenLayers());
        if (pick) {
            kernels.nextTokens(r, logits, vocab, meta.at(4L * choiceAt), ids, samplerMerge.at(0),
                    samplerMerge.at(8L * maxRows));
            cuda.download(slot.idsPtr, scratch, ids - scratch.address(), 4L * r);
        }
        for (Piece piece : pieces) piece.sequence().advance(piece.count());
        return new Enqueued(slot, r, rowStep, sparse, sparseTokens);
    }

    /**
     * Per layer, the shares of MLP neurons and of heads a finished pass computed for its sparse tokens: what its
     * selections counted, or everything where it ran dense.
     */
    private double[][] shares(Enqueued pass) {
        if (!pass.sparse()) {
            double[] all = new double[config.numHiddenLayers()];
            Arrays.fill(all, 1);
            return new double[][]{all, all.clone()};
        }
        int[] counted = new int[4 * config.numHiddenLayers()];
        pass.slot().counts.clear().asIntBuffer().get(counted);
        return predictors.shares(counted);
    }

    /** Adds a pass's sparse tokens to the run's figures (shares as {@link #shares}). */
    private void tally(double[][] shares, int tokens) {
        for (int l = 0; l < tallyMlp.length; l++) {
            tallyMlp[l] += tokens * shares[0][l];
            tallyHeads[l] += tokens * shares[1][l];
        }
        tallyTokens += tokens;
    }

    /** Issues one pass's kernels on the stream (also while capturing a graph: no host work in here). */
    private void encode(int t, int s, int r, int splits, int tiles, boolean sparse) {
        long tilesAddr = meta.at(4L * tilesAt(t, s, r));
        long tokens = meta.at(0), positions = meta.at(4L * t), slots = meta.at(8L * t), querySeq = meta.at(12L * t),
                queryCtx = meta.at(16L * t), rowIndex = meta.at(20L * t), tables = meta.at(24L * t);
        DeviceWeights w = weights;
        boolean gemv = t <= DecoderKernels.GEMV_MAX_TOKENS;
        boolean preLn = config.doLayerNormBefore();

        if (!config.hasProjections()) {
            kernels.embedF32(t, tokens, positions, w.embedTokens, w.embedPositions, x, h);
        } else {
            kernels.embedF16(t, tokens, w.embedTokens, normed, p);
            kernels.linear(t, h, p, normed, false, w.projectIn, 0, false, 0, 0, Epilogue.f32(0, 0, x, h));
            kernels.addPositions(t, x, positions, w.embedPositions, h);
        }
        for (int l = 0; l < w.layers.size(); l++) {
            DeviceWeights.Layer layer = w.layers.get(l);
            // The predictors reading this layer's input must read it before the layer adds to it.
            if (sparse) {
                predictors.predict(l, t, x, normed);
            }
            boolean sparseHeads = sparse && predictors.headsSparse(l);
            Epilogue qkv = Epilogue.qkv(layer.qkvBias(), queries, cache.keys(l), cache.values(l), slots, heads, headDim);
            if (sparseHeads) {
                predictors.awaitHeads(l);
                long rows = predictors.qkvRows(l);
                linearFromResidual(t, 3 * h, layer.qkvWeight(), rows, predictors.qkvRowCount(l), preLn,
                        layer.attnNormGamma(), layer.attnNormBeta(), qkv.scatteredBy(rows), gemv);
            } else {
                linearFromResidual(t, 3 * h, layer.qkvWeight(), 0, 0, preLn, layer.attnNormGamma(),
                        layer.attnNormBeta(), qkv, gemv);
            }
            if (tiles > 0) {
                kernels.prefillAttention(tiles, queries, h, cache.keys(l), cache.values(l), tables, maxBlocks,
                        tilesAddr, attended, heads, headDim);
            } else {
                kernels.attention(attentionKernel, t, queries, h, cache.keys(l), cache.values(l), tables, maxBlocks,
                        querySeq, queryCtx, attended, partialOut, partialMaxSum, counters.address(),
                        sparseHeads ? predictors.headMask(l) : 0, heads, headDim, splits);
            }
            if (sparse) predictors.awaitInputRead(l);
            if (sparseHeads) {
                kernels.sparseDown(t, 0, 0, attended, predictors.outT[l], layer.outBias(), predictors.outRows(l),
                        predictors.outRowCount(l), h, x);
            } else {
                kernels.linear(t, h, h, attended, false, layer.outWeight(), 0, false, 0, 0,
                        Epilogue.f32(layer.outBias(), x, x, h));
            }
            if (!preLn) kernels.layerNorm(t, x, x, false, layer.attnNormGamma(), layer.attnNormBeta(), h);
            if (sparse && predictors.mlpSparse(l)) {
                // The selected rows of fc1 (ReLU outputs in the order of the selection, fp32, in the ffn buffer),
                // then the same rows of fc2 transposed.
                predictors.awaitMlp(l, t, x, normed);
                long neurons = predictors.neurons(l), count = predictors.neuronCount(l);
                linearFromResidual(t, f, layer.fc1Weight(), neurons, count, preLn, layer.mlpNormGamma(),
                        layer.mlpNormBeta(), Epilogue.gatheredRelu(layer.fc1Bias(), neurons, ffn, f), gemv);
                kernels.sparseDown(t, ffn, f, 0, predictors.fc2T[l], layer.fc2Bias(), neurons, count, h, x);
            } else {
                linearFromResidual(t, f, layer.fc1Weight(), 0, 0, preLn, layer.mlpNormGamma(), layer.mlpNormBeta(),
                        Epilogue.f16(layer.fc1Bias(), true, ffn, f), gemv);
                kernels.linear(t, h, f, ffn, false, layer.fc2Weight(), 0, false, 0, 0,
                        Epilogue.f32(layer.fc2Bias(), x, x, h));
            }
            if (!preLn) kernels.layerNorm(t, x, x, false, layer.mlpNormGamma(), layer.mlpNormBeta(), h);
        }

        long rowsIn = x;
        if (r != t) {
            kernels.gatherRows(r, x, rowIndex, headRows, h);
            rowsIn = headRows;
        }
        boolean norm = config.hasFinalLayerNorm();
        Epilogue toLogits = Epilogue.f32(0, 0, logits, vocab);
        if (r <= DecoderKernels.FUSED_LAYER_NORM_TOKENS || (r <= DecoderKernels.GEMV_MAX_TOKENS && !norm)) {
            if (config.hasProjections()) {
                kernels.linear(r, p, h, rowsIn, true, w.projectOut, 0, norm, w.finalNormGamma, w.finalNormBeta,
                        Epilogue.f16(0, false, headIn, p));
                kernels.linear(r, vocab, p, headIn, false, w.lmHead, 0, false, 0, 0, toLogits);
            } else {
                kernels.linear(r, vocab, h, rowsIn, true, w.lmHead, 0, norm, w.finalNormGamma, w.finalNormBeta,
                        toLogits);
            }
        } else {
            if (norm) kernels.layerNorm(r, rowsIn, headIn, true, w.finalNormGamma, w.finalNormBeta, h);
            else kernels.toHalf((long) r * h, rowsIn, headIn);
            if (config.hasProjections()) {
                kernels.linear(r, p, h, headIn, false, w.projectOut, 0, false, 0, 0, Epilogue.f16(0, false, normed, p));
                kernels.linear(r, vocab, p, normed, false, w.lmHead, 0, false, 0, 0, toLogits);
            } else {
                kernels.linear(r, vocab, h, headIn, false, w.lmHead, 0, false, 0, 0, toLogits);
            }
        }
    }

    /**
     * A linear layer fed from the residual stream x: pre-LN models normalise it first (fused into the GEMV, a
     * separate kernel before the GEMM), post-LN models feed it as it is. rowIndex/nCount (0: all n rows) gather the
     * weight rows of a sparse step.
     */
    private void linearFromResidual(int t, int n, long weight, long rowIndex, long nCount, boolean layerNorm,
                                    long gamma, long beta, Epilogue epilogue, boolean gemv) {
        if (t <= DecoderKernels.FUSED_LAYER_NORM_TOKENS || (gemv && !layerNorm)) {
            kernels.linear(t, n, h, x, h, true, weight, rowIndex, nCount, layerNorm, gamma, beta, epilogue);
            return;
        }
        if (layerNorm) kernels.layerNorm(t, x, normed, true, gamma, beta, h);
        else kernels.toHalf((long) t * h, x, normed);
        kernels.linear(t, n, h, normed, h, false, weight, rowIndex, nCount, false, 0, 0, epilogue);
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("the CUDA engine is closed");
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        try {
            cuda.makeCurrent();
            cuda.synchronize();  // a pass queued ahead and never read may still be copying into the buffers freed below
        } finally {
            dropGraphs();
            for (PassSlot slot : slots) slot.free();
            cuMemFreeHost(hostLogitsPtr);
            cuda.close();
        }
    }
}
