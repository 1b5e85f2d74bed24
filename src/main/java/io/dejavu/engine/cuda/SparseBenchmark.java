package io.dejavu.engine.cuda;

import io.dejavu.bench.RandomPrompts;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.StepSparsity;
import io.dejavu.engine.TokenChoice;
import io.dejavu.model.OptConfig;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;

/**
 * Deja Vu decode speed on the GPU against the dense decoder of the same engine, in the same run: pseudo-random
 * weights and predictors of a model's shapes, each step timed on the wall clock around the whole step (prediction,
 * selection, sparse layers, sampling on the GPU, reading back the ids), predictor cost included.
 *
 * <p>Batches: a decode batch executes the union of its tokens' selections, and how fast that union grows with the
 * batch depends on how much the tokens' selections overlap, which random predictors do not model. So per batch size
 * the benchmark sets the neurons (and heads) each token keeps such that the union it measures matches the growth
 * measured on opt-mini's decode batches (docs/SPARSITY.md), scaled to the share kept at batch 1; the table reports
 * the union measured during the timed steps.
 */
public final class SparseBenchmark {
    /** Union of the MLP selections of a decode batch over one token's selection, measured on opt-mini (batch 1..16). */
    private static final double[][] UNION_GROWTH = {{1, 1.0}, {2, 24.3 / 14.6}, {4, 38.6 / 14.6}, {8, 52.6 / 14.6},
            {16, 67.0 / 14.6}};

    private SparseBenchmark() {
    }

    /**
     * One measured point.
     *
     * @param rule how each layer chose its MLP neurons: "top-k" per token, or "threshold" (a per-layer score
     *             threshold, as calibrated predictors do)
     */
    public record Point(int batch, String rule, double mlpKeep, double headsKeep, double denseMs, double sparseMs,
                        double sparseGraphMs, double denseAheadMs, double sparseAheadMs, double mlpComputed,
                        double headsComputed) {
        public String row() {
            return String.format("%-6d %-9s %9.3f %9.3f %11.3f %12.3f %14.3f %8.2fx %14.3f %15.3f %8.2fx %12.1f%% "
                            + "%12.1f%%", batch, rule, mlpKeep, headsKeep, denseMs, sparseMs, sparseGraphMs,
                    denseMs / sparseMs, denseAheadMs, sparseAheadMs, denseAheadMs / sparseAheadMs, 100 * mlpComputed,
                    100 * headsComputed);
        }

        public String result(String shape, int rank) {
            return String.format("RESULT engine=cuda-sparse shape=%s batch=%d rank=%d rule=%s mlp_keep=%.4f "
                            + "heads_keep=%.4f dense_ms=%.4f sparse_ms=%.4f sparse_graph_ms=%.4f speedup=%.3f "
                            + "dense_ahead_ms=%.4f sparse_ahead_ms=%.4f speedup_ahead=%.3f "
                            + "mlp_computed=%.4f heads_computed=%.4f", shape, batch, rank, rule, mlpKeep, headsKeep,
                    denseMs, sparseMs, sparseGraphMs, denseMs / sparseMs, denseAheadMs, sparseAheadMs,
                    denseAheadMs / sparseAheadMs, mlpComputed, headsComputed);
        }
    }

    public static final String HEADER = String.format("%-6s %-9s %9s %9s %11s %12s %14s %9s %14s %15s %9s %13s %13s",
            "batch", "MLP rule", "mlp kept", "heads kept", "dense ms", "sparse ms", "sparse GPU ms", "speedup",
            "dense ms ahead", "sparse ms ahead", "speedup", "MLP union", "heads union");

    /**
     * @param mlpKeep   share of MLP neurons each token keeps at batch 1
     * @param headsKeep share of heads each token keeps at batch 1
     * @param sweep     also measure batch 1 at other kept shares (the curve of ms/token against the share kept)
     * @param profile   also time each kernel of one dense and one sparse decode step of the first batch size
     * @param out       where each row is printed as it is measured
     */
    public static List<Point> run(String shapeName, OptConfig config, int[] batches, int promptLen, int genLen,
                                  int rank, double mlpKeep, double headsKeep, boolean sweep, boolean profile, int seed,
                                  java.io.PrintStream out) {
        int f = config.ffnDim(), heads = config.numAttentionHeads();
        int maxBatch = Arrays.stream(batches).max().orElse(1);
        if (maxBatch > DevicePredictors.MAX_TOKENS) {
            throw new IllegalArgumentException("sparse decode takes batches up to " + DevicePredictors.MAX_TOKENS);
        }
        if (promptLen + 2 * genLen + 8 > config.maxPositionEmbeddings()) {
            throw new IllegalArgumentException("prompt-len + 2 x gen-len exceeds the model's positions");
        }
        long blocksPerSeq = (promptLen + genLen + 8 + KvCachePool.BLOCK_TOKENS - 1) / KvCachePool.BLOCK_TOKENS;
        long kvBytes = (blocksPerSeq * (2L * maxBatch + 2) + 4) * KvCachePool.blockBytes(config);
        // Every batch it is asked for runs sparse, beyond the engine's default limit: this is where it is measured.
        CudaEngine.Options options = CudaEngine.Options.defaults().withKvCacheBytes(kvBytes)
                .withMaxBatchTokens(Math.max(2048, promptLen)).withSparseMaxTokens(DevicePredictors.MAX_TOKENS);
        int mlpK = Math.max(1, (int) Math.round(mlpKeep * f)), headK = Math.max(1, (int) Math.round(headsKeep * heads));
        List<Point> points = new ArrayList<>();
        try (CudaEngine engine = CudaEngine.random(config, options, seed,
                new CudaEngine.RandomSparsity(rank, mlpK, headK))) {
            out.printf("device %s, shape %s (hidden %d, %d layers, ffn %d, %d heads), predictor rank %d, prompt %d, "
                            + "%d timed steps%n", engine.deviceName(), shapeName, config.hiddenSize(),
                    config.numHiddenLayers(), f, heads, rank, promptLen, genLen);
            out.println(HEADER);
            Random random = new Random(seed);
            for (int batch : batches) {
                double grow = growth(batch);
                matchUnion(engine, random, batch, promptLen, Math.min(1, mlpKeep * grow), Math.min(1, headsKeep * grow));
                Point p = measure(engine, random, batch, promptLen, genLen, "top-k", mlpKeep, headsKeep);
                points.add(p);
                out.println(p.row());
                if (batch == 1) {
                    engine.setSparseOperatingPoints(thresholds(engine, random, promptLen, mlpKeep, headK));
                    p = measure(engine, random, 1, promptLen, genLen, "threshold", mlpKeep, headsKeep);
                    points.add(p);
                    out.println(p.row());
                    engine.setSparseOperatingPoints(topK(engine, mlpK, headK));
                }
                if (batch == batches[0]) placements(engine, random, batch, promptLen, genLen, out);
                if (profile && batch == batches[0]) {
                    for (boolean sparse : new boolean[]{false, true}) {
                        out.printf("kernels of one %s decode step at batch %d (eager, one stream, each timed):%n",
                                sparse ? "sparse" : "dense", batch);
                        out.print(profileStep(engine, random, batch, promptLen, sparse));
                    }
                    out.println(HEADER);
                }
            }
            if (sweep) {
                out.println("batch 1, share kept swept (MLP with heads at " + headsKeep + ", then heads with MLP at "
                        + mlpKeep + "):");
                out.println(HEADER);
                for (double keep : new double[]{0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0}) {
                    engine.setSparseOperatingPoints(topK(engine, Math.max(1, (int) Math.round(keep * f)), headK));
                    Point p = measure(engine, random, 1, promptLen, genLen, "top-k", keep, headsKeep);
                    points.add(p);
                    out.println(p.row());
                }
                for (double keep : new double[]{0.25, 0.5, 0.75, 1.0}) {
                    engine.setSparseOperatingPoints(topK(engine, mlpK, Math.max(1, (int) Math.round(keep * heads))));
                    Point p = measure(engine, random, 1, promptLen, genLen, "top-k", mlpKeep, keep);
                    points.add(p);
                    out.println(p.row());
                }
            }
        }
        return points;
    }

    private static double growth(int batch) {
        for (int i = UNION_GROWTH.length - 1; i >= 0; i--) {
            if (batch >= UNION_GROWTH[i][0]) {
                if (i == UNION_GROWTH.length - 1 || batch == UNION_GROWTH[i][0]) return UNION_GROWTH[i][1];
                double b0 = UNION_GROWTH[i][0], b1 = UNION_GROWTH[i + 1][0];
                double w = (Math.log(batch) - Math.log(b0)) / (Math.log(b1) - Math.log(b0));
                return UNION_GROWTH[i][1] + w * (UNION_GROWTH[i + 1][1] - UNION_GROWTH[i][1]);
            }
        }
        return 1;
    }

    /**
     * Sets the per-token top-k of neurons and heads so that a decode step of `batch` sequences executes unions of
     * about the given shares: starts from the per-token share, measures a few steps' unions, rescales, six times.
     */
    private static void matchUnion(CudaEngine engine, Random random, int batch, int promptLen, double mlpUnion,
                                   double headUnion) {
        int f = engine.config().ffnDim(), heads = engine.config().numAttentionHeads();
        double mlpK = mlpUnion * f / growth(batch), headK = headUnion * heads / growth(batch);
        Batch b = new Batch(engine, random, batch, promptLen);
        try {
            for (int round = 0; round < 6; round++) {
                int mk = (int) Math.clamp(Math.round(mlpK), 1, f), hk = (int) Math.clamp(Math.round(headK), 1, heads);
                engine.setSparseOperatingPoints(topK(engine, mk, hk));
                double mlp = 0, att = 0;
                for (int step = 0; step < 4; step++) {
                    StepSparsity used = b.step(true);
                    mlp += Arrays.stream(used.mlpComputed()).average().orElse(1) / 4;
                    att += Arrays.stream(used.headsComputed()).average().orElse(1) / 4;
                }
                mlpK = mlpUnion >= 1 ? f : mlpK * mlpUnion / mlp;
                headK = headUnion >= 1 ? heads : headK * headUnion / att;
            }
            engine.setSparseOperatingPoints(topK(engine, (int) Math.clamp(Math.round(mlpK), 1, f),
                    (int) Math.clamp(Math.round(headK), 1, heads)));
        } finally {
            b.close();
        }
    }

    /**
     * The same sparse step with the look-ahead predictions on the main stream instead of the side stream, and with
     * no predictions at all (each step reusing the last selections): what the overlap saves, and what prediction
     * costs on top of sparse execution.
     */
    private static void placements(CudaEngine engine, Random random, int batch, int promptLen, int genLen,
                                   java.io.PrintStream out) {
        StringBuilder line = new StringBuilder("batch " + batch + ", sparse ms/step (GPU ms) with the look-ahead predictions");
        for (DevicePredictors.Placement placement : DevicePredictors.Placement.values()) {
            engine.placePredictions(DevicePredictors.Placement.SIDE_STREAM);
            Batch b = new Batch(engine, random, batch, promptLen);
            try {
                b.step(true);  // selections for FROZEN to reuse
                engine.placePredictions(placement);
                for (int i = 0; i < 3; i++) b.step(true);
                long t0 = System.nanoTime();
                for (int i = 0; i < genLen; i++) b.step(true);
                double ms = (System.nanoTime() - t0) / 1e6 / genLen;
                Double gpu = engine.graphReplayMs(-batch, 50);
                line.append(String.format(", %s %.3f (%.3f)", placement.name().toLowerCase(java.util.Locale.ROOT)
                        .replace('_', ' '), ms, gpu == null ? Double.NaN : gpu));
            } finally {
                b.close();
            }
        }
        engine.placePredictions(DevicePredictors.Placement.SIDE_STREAM);
        out.println(line);
    }

    /** Every layer keeps the top mlpK neurons and headsK heads of each token. */
    private static DevicePredictors.OperatingPoint[] topK(CudaEngine engine, int mlpK, int headsK) {
        DevicePredictors.OperatingPoint[] points = new DevicePredictors.OperatingPoint[engine.config().numHiddenLayers()];
        Arrays.fill(points, new DevicePredictors.OperatingPoint(true, mlpK, Float.NaN, headsK));
        return points;
    }

    /**
     * Per-layer MLP score thresholds that keep `keep` of the neurons on average, as calibration sets them (no
     * per-token top-k to find), by bisection on the shares measured at batch 1; heads keep their top headsK.
     */
    private static DevicePredictors.OperatingPoint[] thresholds(CudaEngine engine, Random random, int promptLen,
                                                                double keep, int headsK) {
        int layers = engine.config().numHiddenLayers(), f = engine.config().ffnDim();
        float[] lo = new float[layers], hi = new float[layers];
        Arrays.fill(lo, -8f);
        Arrays.fill(hi, 8f);
        DevicePredictors.OperatingPoint[] points = new DevicePredictors.OperatingPoint[layers];
        Batch b = new Batch(engine, random, 1, promptLen);
        try {
            for (int round = 0; round < 16; round++) {
                for (int l = 0; l < layers; l++) {
                    points[l] = new DevicePredictors.OperatingPoint(false, f, (lo[l] + hi[l]) / 2, headsK);
                }
                engine.setSparseOperatingPoints(points);
                double[] kept = new double[layers];
                for (int step = 0; step < 4; step++) {
                    double[] share = b.step(true).mlpComputed();
                    for (int l = 0; l < layers; l++) kept[l] += share[l] / 4;
                }
                for (int l = 0; l < layers; l++) {
                    if (kept[l] > keep) lo[l] = points[l].mlpThreshold();
                    else hi[l] = points[l].mlpThreshold();
                }
            }
        } finally {
            b.close();
        }
        return points;
    }

    /**
     * Dense then sparse decode of `batch` fresh sequences of the same prompt length, each timed over genLen steps,
     * each step's tokens read before the next is queued; then both again run ahead, as the server decodes.
     */
    private static Point measure(CudaEngine engine, Random random, int batch, int promptLen, int genLen, String rule,
                                 double mlpKeep, double headsKeep) {
        double dense = decode(engine, random, batch, promptLen, genLen, false)[0];
        double[] sparse = decode(engine, random, batch, promptLen, genLen, true);
        return new Point(batch, rule, mlpKeep, headsKeep, dense, sparse[0], sparse[1],
                decodeAhead(engine, random, batch, promptLen, genLen, false),
                decodeAhead(engine, random, batch, promptLen, genLen, true), sparse[2], sparse[3]);
    }

    /** Ms per step of fresh sequences decoded run ahead (see {@link CudaBenchmark#decodeMs}). */
    private static double decodeAhead(CudaEngine engine, Random random, int batch, int promptLen, int genLen,
                                      boolean sparse) {
        Batch b = new Batch(engine, random, batch, promptLen);
        try {
            return CudaBenchmark.decodeMs(engine, b.seqs, b.next, genLen, true, sparse);
        } finally {
            b.close();
        }
    }

    /** {ms per step, GPU ms per step (graph replays), MLP share computed, heads share computed}. */
    private static double[] decode(CudaEngine engine, Random random, int batch, int promptLen, int genLen,
                                   boolean sparse) {
        Batch b = new Batch(engine, random, batch, promptLen);
        try {
            for (int step = 0; step < CudaBenchmark.DECODE_WARMUP_STEPS; step++) b.step(sparse);
            long t0 = System.nanoTime();
            double mlp = 0, att = 0;
            for (int step = 0; step < genLen; step++) {
                StepSparsity used = b.step(sparse);
                if (used != null) {
                    mlp += Arrays.stream(used.mlpComputed()).average().orElse(1) / genLen;
                    att += Arrays.stream(used.headsComputed()).average().orElse(1) / genLen;
                }
            }
            double ms = (System.nanoTime() - t0) / 1e6 / genLen;
            Double graph = engine.graphReplayMs(sparse ? -batch : batch, 50);
            return new double[]{ms, graph == null ? Double.NaN : graph, sparse ? mlp : 1, sparse ? att : 1};
        } finally {
            b.close();
        }
    }

    /**
     * Kernel times of one decode step of `batch` sequences (prefilled and warmed up outside the profile), the
     * look-ahead predictions on the main stream so that no kernel's time includes another's.
     */
    private static String profileStep(CudaEngine engine, Random random, int batch, int promptLen, boolean sparse) {
        Batch b = new Batch(engine, random, batch, promptLen);
        try {
            b.step(sparse);
            engine.placePredictions(DevicePredictors.Placement.MAIN_STREAM);
            return engine.profile(() -> b.step(sparse));
        } finally {
            engine.placePredictions(DevicePredictors.Placement.SIDE_STREAM);
            b.close();
        }
    }

    /** Sequences prefilled with random prompts, decoded greedily one step at a time. */
    private static final class Batch {
        private final CudaEngine engine;
        private final List<Sequence> seqs = new ArrayList<>();
        private final List<TokenChoice> greedy;
        private int[] next;

        Batch(CudaEngine engine, Random random, int batch, int promptLen) {
            this.engine = engine;
            greedy = Collections.nCopies(batch, TokenChoice.greedy());
            List<int[]> prompts = new ArrayList<>(batch);
            for (int i = 0; i < batch; i++) prompts.add(RandomPrompts.of(random, engine.config(), promptLen));
            next = CudaBenchmark.prefilled(engine, prompts, seqs);
        }

        /** One decode step of every sequence; what its sparse tokens computed (null for a dense step). */
        StepSparsity step(boolean sparse) {
            List<Step> steps = new ArrayList<>(seqs.size());
            for (int i = 0; i < seqs.size(); i++) steps.add(new Step(seqs.get(i), new int[]{next[i]}, false, sparse));
            next = engine.nextTokens(steps, greedy);
            return engine.lastStepSparsity();
        }

        void close() {
            seqs.forEach(Sequence::close);
        }
    }
}
