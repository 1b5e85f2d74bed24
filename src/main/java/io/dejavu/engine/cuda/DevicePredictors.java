package io.dejavu.engine.cuda;

import io.dejavu.model.OptConfig;
import io.dejavu.sparsity.LowRankPredictor;
import io.dejavu.sparsity.PredictorInput;
import io.dejavu.sparsity.Predictors;
import jcuda.Pointer;
import jcuda.driver.CUevent;

import java.util.ArrayList;
import java.util.List;

import static jcuda.driver.JCudaDriver.cuMemcpyHtoD;
import static jcuda.driver.JCudaDriver.cuMemsetD32;

/**
 * Deja Vu on the GPU: the predictors (fp16), the operating point, the weights the sparse step reads in place of
 * the dense ones, and the buffers each step's selections land in.
 *
 * <p>Per layer and kind (MLP neurons, attention heads) a predictor maps a standardised residual stream through
 * {@code down} (rank x h) and {@code up} (out x rank) to scores; the top k scores, or those above a threshold, are
 * the token's selection, and a decode step executes the union over its tokens ({@code select_union}). The
 * predictors that read the residual stream entering layer s (their own layer's input, or the look-ahead ones of
 * layer s + 1) have their down matrices stacked, so that one GEMV computes all their hidden units. The look-ahead
 * ones run on the side stream while the main stream computes layer s (its attention leaves most of the GPU idle at
 * small batches), their down-projection included where no predictor of layer s shares it, and layer s + 1 waits for
 * them by event. Predictors of layer s itself are needed at once and run on the main stream, as do MLP predictors
 * that read the MLP block's input, which must follow the attention.
 *
 * <p>Sparse weights: fc2 and out_proj transposed ([ffn][h], [h][h]) so that a selected neuron's or head's weights
 * are contiguous rows, made on the GPU from the uploaded matrices for the layers that run sparse.
 */
final class DevicePredictors {
    /** Largest batch of decode tokens a sparse step takes; larger steps run dense (their union is nearly dense). */
    static final int MAX_TOKENS = DecoderKernels.SPARSE_MAX_TOKENS;
    private static final int MLP = 0, HEADS = 1;

    /**
     * One layer's operating point.
     *
     * @param mlpTopK  select the top mlpK neurons (else those scoring >= mlpThreshold)
     * @param headsKeep heads kept per token; all heads: the layer's attention runs dense and its head predictor is
     *                  not run
     */
    record OperatingPoint(boolean mlpTopK, int mlpK, float mlpThreshold, int headsKeep) {
    }

    /**
     * Where the look-ahead predictions run: on the side stream (the product), on the main stream, or not at all,
     * every step reusing the selections made last (the benchmark's ablations: what the overlap saves, and what sparse
     * execution costs without any prediction).
     */
    enum Placement { SIDE_STREAM, MAIN_STREAM, FROZEN }

    private Placement placement = Placement.SIDE_STREAM;

    /** Graphs captured before must be dropped. */
    void place(Placement p) {
        placement = p;
    }

    /** Fills a predictor matrix (fp16, torch layout [out][in]) at a byte offset of a device allocation. */
    interface MatrixSource {
        void fill(DeviceMemory dst, long offset, int layer, boolean heads, boolean down);
    }

    /** One predictor: the layer and kind it chooses for, its up matrix, where its hidden units sit in its z rows. */
    private record Predictor(int layer, int kind, long up, int out, int zOffset) {
    }

    /**
     * The predictors reading one residual stream: their stacked down matrices [rows][h] and their z buffer; the side
     * stream's events: forked, done with x (inputRead), done.
     */
    private record Source(long down, int rows, long z, List<Predictor> predictors, CUevent fork, CUevent inputRead,
                          CUevent done) {
    }

    private final CudaContext cuda;
    private final DecoderKernels kernels;
    private final int layers, h, f, heads, headDim, rank;
    private OperatingPoint[] points;
    /** Per layer s: the predictors reading the residual stream entering layer s, or null. */
    private final Source[] sources;
    /** Per layer: the MLP predictor reading the MLP block's input (mlpInput == MLP), or null. */
    private final Predictor[] mlpOwn;
    private final long[] mlpOwnDown;
    /** Per layer and kind: the source whose done event the layer waits for (-1: runs on the main stream). */
    private final int[][] sourceOf;
    final long[] fc2T, outT;
    private final long zMain, scoresMain, scoresSide, normedSide;
    /** Per layer s, this step: whether the side stream reads x for the down-projection (see {@link #predict}). */
    private final boolean[] downAhead;
    private final long[][] mask, arrivals, index;
    private final long[] headMask;
    private final DeviceMemory counts;
    final long extraBytes;

    DevicePredictors(CudaContext cuda, DecoderKernels kernels, DeviceWeights weights, int rank, PredictorInput mlpInput,
                     PredictorInput headsInput, OperatingPoint[] points, MatrixSource matrices) {
        if (headsInput == PredictorInput.MLP) throw new IllegalArgumentException("head predictors cannot read the MLP input");
        this.cuda = cuda;
        this.kernels = kernels;
        OptConfig config = weights.config;
        this.layers = config.numHiddenLayers();
        this.h = config.hiddenSize();
        this.f = config.ffnDim();
        this.heads = config.numAttentionHeads();
        this.headDim = config.headDim();
        this.rank = rank;
        if (points.length != layers) throw new IllegalArgumentException(points.length + " operating points for " + layers + " layers");
        if (heads > DecoderKernels.SELECT_MAX_EXPANDED_ITEMS || f > DecoderKernels.SELECT_MAX_ITEMS) {
            throw new IllegalArgumentException("the CUDA sparse path takes at most " + DecoderKernels.SELECT_MAX_EXPANDED_ITEMS
                    + " heads and " + DecoderKernels.SELECT_MAX_ITEMS + " MLP neurons a layer; this model has " + heads
                    + " and " + f);
        }
        if (rank % 8 != 0) throw new IllegalArgumentException("the CUDA engine needs a predictor rank divisible by 8, got " + rank);
        this.points = points.clone();

        // Which stream each predictor reads: the input of layer s, or (-1) its own MLP block's input.
        List<List<int[]>> readers = new ArrayList<>();
        for (int s = 0; s < layers; s++) readers.add(new ArrayList<>());
        sourceOf = new int[layers][2];
        for (int l = 0; l < layers; l++) {
            sourceOf[l][MLP] = mlpInput == PredictorInput.MLP ? -1 : sourceLayer(mlpInput, l);
            sourceOf[l][HEADS] = sourceLayer(headsInput, l);
            for (int kind : new int[]{MLP, HEADS}) if (sourceOf[l][kind] >= 0) readers.get(sourceOf[l][kind]).add(new int[]{l, kind});
        }
        long extra = 0;
        sources = new Source[layers];
        for (int s = 0; s < layers; s++) {
            List<int[]> r = readers.get(s);
            if (r.isEmpty()) continue;
            int rows = r.size() * rank;
            DeviceMemory down = cuda.alloc(2L * rows * h, "predictor down matrices of layer " + s);
            DeviceMemory z = cuda.alloc(2L * MAX_TOKENS * rows, "predictor hidden units of layer " + s);
            List<Predictor> ps = new ArrayList<>();
            for (int i = 0; i < r.size(); i++) {
                int l = r.get(i)[0], kind = r.get(i)[1];
                matrices.fill(down, 2L * i * rank * h, l, kind == HEADS, true);
                ps.add(new Predictor(l, kind, up(matrices, l, kind), kind == HEADS ? heads : f, i * rank));
            }
            extra += down.bytes();
            sources[s] = new Source(down.address(), rows, z.address(), List.copyOf(ps), cuda.newEvent(), cuda.newEvent(),
                    cuda.newEvent());
        }
        mlpOwn = new Predictor[layers];
        mlpOwnDown = new long[layers];
        if (mlpInput == PredictorInput.MLP) {
            for (int l = 0; l < layers; l++) {
                DeviceMemory down = cuda.alloc(2L * rank * h, "MLP predictor down matrix of layer " + l);
                matrices.fill(down, 0, l, false, true);
                mlpOwnDown[l] = down.address();
                mlpOwn[l] = new Predictor(l, MLP, up(matrices, l, MLP), f, 0);
                extra += down.bytes();
            }
        }
        extra += (long) layers * 2 * rank * (f + heads);

        fc2T = new long[layers];
        outT = new long[layers];
        for (int l = 0; l < layers; l++) {
            DeviceWeights.Layer w = weights.layers.get(l);
            if (mlpSparse(l)) {
                DeviceMemory t2 = cuda.alloc(2L * f * h, "fc2 transposed, layer " + l);
                kernels.transpose(w.fc2Weight(), t2.address(), h, f);
                fc2T[l] = t2.address();
                extra += t2.bytes();
            }
            if (headsSparse(l)) {
                DeviceMemory to = cuda.alloc(2L * h * h, "out_proj transposed, layer " + l);
                kernels.transpose(w.outWeight(), to.address(), h, h);
                outT[l] = to.address();
                extra += to.bytes();
            }
        }

        zMain = cuda.alloc(2L * MAX_TOKENS * rank, "MLP predictor hidden units").address();
        scoresMain = cuda.alloc(4L * MAX_TOKENS * f, "MLP predictor scores").address();
        scoresSide = cuda.alloc(4L * MAX_TOKENS * Math.max(f, heads), "look-ahead predictor scores").address();
        normedSide = cuda.alloc(2L * MAX_TOKENS * h, "look-ahead predictor inputs").address();
        downAhead = new boolean[layers];
        int mlpWords = (f + 31) / 32, headWords = (heads + 31) / 32;
        mask = new long[layers][2];
        arrivals = new long[layers][2];
        index = new long[layers][2];
        headMask = new long[layers];
        long stateInts = (long) layers * (mlpWords + 1 + 2 * headWords + 1 + f + 3L * h);
        DeviceMemory state = cuda.alloc(4 * stateInts, "sparse selections");
        cuMemsetD32(state.ptr(0), 0, stateInts);
        long at = state.address();
        for (int l = 0; l < layers; l++) {
            mask[l][MLP] = at;
            at += 4L * mlpWords;
            arrivals[l][MLP] = at;
            at += 4;
            mask[l][HEADS] = at;
            at += 4L * headWords;
            headMask[l] = at;
            at += 4L * headWords;
            arrivals[l][HEADS] = at;
            at += 4;
            index[l][MLP] = at;
            at += 4L * f;
            index[l][HEADS] = at;
            at += 4L * 3 * h;
        }
        // The q/k/v rows of a sparse attention: k and v rows of every head first (they never change), then the
        // selected heads' q rows, which select_union writes.
        int[] kvRows = new int[2 * h];
        for (int i = 0; i < kvRows.length; i++) kvRows[i] = h + i;
        for (int l = 0; l < layers; l++) cuMemcpyHtoD(state.ptr(index[l][HEADS] - state.address()), Pointer.to(kvRows), 8L * h);
        counts = cuda.alloc(16L * layers, "sparse selection counts");
        cuMemsetD32(counts.ptr(0), 0, 4L * layers);
        this.extraBytes = extra;
        cuda.synchronize();
    }

    private long up(MatrixSource matrices, int layer, int kind) {
        int out = kind == HEADS ? heads : f;
        DeviceMemory m = cuda.alloc(2L * out * rank, (kind == HEADS ? "head" : "MLP") + " predictor up matrix of layer " + layer);
        matrices.fill(m, 0, layer, kind == HEADS, false);
        return m.address();
    }

    /** The layer whose input a look-ahead or same-layer predictor of layer l reads. */
    private static int sourceLayer(PredictorInput input, int l) {
        return input == PredictorInput.LOOKAHEAD ? Math.max(l - 1, 0) : l;
    }

    /** Uploads a model's calibrated predictors at their operating point. */
    static DevicePredictors upload(CudaContext cuda, DecoderKernels kernels, DeviceWeights weights, Predictors p) {
        OptConfig c = weights.config;
        OperatingPoint[] points = new OperatingPoint[c.numHiddenLayers()];
        for (int l = 0; l < points.length; l++) {
            Predictors.Layer x = p.layers().get(l);
            points[l] = new OperatingPoint(!x.mlpByThreshold(), x.mlpK(), x.mlpThreshold(), x.headsKeep());
        }
        return new DevicePredictors(cuda, kernels, weights, p.rank(), p.mlpInput(), p.headsInput(), points,
                (dst, offset, layer, isHeads, down) -> {
                    LowRankPredictor lr = isHeads ? p.layers().get(layer).heads() : p.layers().get(layer).mlp();
                    float[] values = down ? lr.down() : lr.up();
                    short[] half = new short[values.length];
                    for (int i = 0; i < values.length; i++) half[i] = Float.floatToFloat16(values[i]);
                    cuMemcpyHtoD(dst.ptr(offset), Pointer.to(half), 2L * half.length);
                });
    }

    /**
     * Pseudo-random predictors of a given rank for a config (the benchmark's: the step's speed depends on the
     * shapes and on how many rows the selections keep, not on which), look-ahead inputs as in the paper, top-k.
     */
    static DevicePredictors random(CudaContext cuda, DecoderKernels kernels, DeviceWeights weights, int rank, int mlpK,
                                   int headsKeep, int seed) {
        OptConfig c = weights.config;
        OperatingPoint[] points = new OperatingPoint[c.numHiddenLayers()];
        java.util.Arrays.fill(points, new OperatingPoint(true, mlpK, Float.NaN, headsKeep));
        int h = c.hiddenSize();
        return new DevicePredictors(cuda, kernels, weights, rank, PredictorInput.LOOKAHEAD, PredictorInput.LOOKAHEAD,
                points, (dst, offset, layer, isHeads, down) -> {
                    long n = (long) rank * (down ? h : isHeads ? c.numAttentionHeads() : c.ffnDim());
                    kernels.fillRandom(dst.at(offset), n, seed + 4 * layer + (isHeads ? 2 : 0) + (down ? 1 : 0),
                            (float) (1 / Math.sqrt(down ? h : rank)));
                });
    }

    /**
     * New operating points, one per layer (the benchmark sweeps them); graphs captured before must be dropped. Only
     * kinds that ran sparse at construction can run sparse (their transposed weights exist).
     */
    void setOperatingPoints(OperatingPoint[] next) {
        OperatingPoint[] old = points;
        points = next.clone();
        for (int l = 0; l < layers; l++) {
            if ((mlpSparse(l) && fc2T[l] == 0) || (headsSparse(l) && outT[l] == 0)) {
                points = old;
                throw new IllegalStateException("layer " + l + " was set up dense for the MLP or the heads");
            }
        }
    }

    boolean mlpSparse(int layer) {
        OperatingPoint p = points[layer];
        return !p.mlpTopK() || p.mlpK() < f;
    }

    boolean headsSparse(int layer) {
        return points[layer].headsKeep() < heads;
    }

    /**
     * The predictors reading the residual stream entering layer s (x, fp32 [t][h]). Those of layer s itself are
     * needed at once and run on the main stream, with the stacked down-projection all of them share. The look-ahead
     * ones (layer s + 1) run on the side stream while the main stream computes layer s, and so does the
     * down-projection when no predictor of layer s needs it first: the main stream then lets the side stream read x
     * before layer s adds to it ({@link #awaitInputRead}). (Launched after layer s's q/k/v projection instead, so as
     * to overlap only the attention, the look-ahead selections left the step 0.08 ms slower at opt-6.7b's shape: a
     * shorter window for the same work.)
     */
    void predict(int s, int t, long x, long normed) {
        Source src = sources[s];
        downAhead[s] = false;
        if (placement == Placement.FROZEN || src == null || src.predictors().stream().noneMatch(this::active)) return;
        boolean own = src.predictors().stream().anyMatch(p -> active(p) && p.layer() == s);
        if (own || placement == Placement.MAIN_STREAM) {
            standardizedLinear(t, src.rows(), src.down(), x, normed, src.z());
            for (Predictor p : src.predictors()) {
                if (active(p) && p.layer() == s) select(p, t, src.z() + 2L * p.zOffset(), src.rows(), scoresMain);
            }
        }
        if (src.predictors().stream().noneMatch(p -> active(p) && p.layer() > s)) return;
        downAhead[s] = !own && placement == Placement.SIDE_STREAM;
        Runnable work = () -> {
            if (downAhead[s]) {
                standardizedLinear(t, src.rows(), src.down(), x, normedSide, src.z());
                cuda.record(src.inputRead());
            }
            for (Predictor p : src.predictors()) {
                if (active(p) && p.layer() > s) select(p, t, src.z() + 2L * p.zOffset(), src.rows(), scoresSide);
            }
        };
        if (placement == Placement.MAIN_STREAM) work.run();
        else cuda.onSideStream(src.fork(), src.done(), work);
    }

    /** Before layer s first writes x: the side stream has read it, where {@link #predict} left that to it. */
    void awaitInputRead(int s) {
        if (downAhead[s]) cuda.waitFor(sources[s].inputRead());
    }

    /** Whether layer l's selection of a kind comes from the side stream (a look-ahead predictor of layer l - 1). */
    private boolean ahead(int l, int kind) {
        return placement == Placement.SIDE_STREAM && sourceOf[l][kind] >= 0 && sourceOf[l][kind] < l;
    }

    /** Before layer l's attention: its head selection is ready (when its heads run sparse). */
    void awaitHeads(int l) {
        if (headsSparse(l) && ahead(l, HEADS)) cuda.waitFor(sources[sourceOf[l][HEADS]].done());
    }

    /**
     * Before layer l's MLP, which reads x (fp32 [t][h]): its neuron selection is ready, computed here on the main
     * stream when the predictor reads the MLP block's input.
     */
    void awaitMlp(int l, int t, long x, long normed) {
        if (!mlpSparse(l) || placement == Placement.FROZEN) return;
        if (mlpOwn[l] == null) {
            if (ahead(l, MLP)) cuda.waitFor(sources[sourceOf[l][MLP]].done());
            return;
        }
        standardizedLinear(t, rank, mlpOwnDown[l], x, normed, zMain);
        select(mlpOwn[l], t, zMain, rank, scoresMain);
    }

    private boolean active(Predictor p) {
        return p.kind() == HEADS ? headsSparse(p.layer()) : mlpSparse(p.layer());
    }

    /** z = down . standardise(x): LayerNorm without weight and bias, as the predictors were trained. */
    private void standardizedLinear(int t, int rows, long down, long x, long normed, long z) {
        Epilogue out = Epilogue.f16(0, false, z, rows);
        if (t <= DecoderKernels.FUSED_LAYER_NORM_TOKENS) {
            kernels.linear(t, rows, h, x, true, down, 0, true, 0, 0, out);
        } else {
            kernels.layerNorm(t, x, normed, true, 0, 0, h);
            kernels.linear(t, rows, h, normed, false, down, 0, false, 0, 0, out);
        }
    }

    /** Scores of one predictor from its hidden units (z rows ldz apart), then the union of the tokens' selections. */
    private void select(Predictor p, int t, long z, int ldz, long scores) {
        kernels.linear(t, p.out(), rank, z, ldz, false, p.up(), 0, 0, false, 0, 0, Epilogue.f32(0, 0, scores, p.out()));
        OperatingPoint op = points[p.layer()];
        long count = counts.address() + 16L * p.layer() + 8L * p.kind();
        if (p.kind() == HEADS) {
            kernels.selectUnion(t, scores, p.out(), heads, true, op.headsKeep(), 0f, mask[p.layer()][HEADS],
                    arrivals[p.layer()][HEADS], outRows(p.layer()), count, headMask[p.layer()], headDim, 2 * h);
        } else {
            kernels.selectUnion(t, scores, p.out(), f, op.mlpTopK(), op.mlpK(), op.mlpThreshold(), mask[p.layer()][MLP],
                    arrivals[p.layer()][MLP], index[p.layer()][MLP], count, 0, 1, 0);
        }
    }

    /** The rows of q/k/v the sparse attention computes: every k and v row, then the selected heads' q rows. */
    long qkvRows(int l) {
        return index[l][HEADS];
    }

    /** Device int: how many q/k/v rows. */
    long qkvRowCount(int l) {
        return counts.address() + 16L * l + 8L * HEADS;
    }

    /** The selected heads' rows (of q, and of out_proj transposed): the entries of qkvRows after the k and v rows. */
    long outRows(int l) {
        return index[l][HEADS] + 8L * h;
    }

    /** Device int: how many out_proj input rows. */
    long outRowCount(int l) {
        return qkvRowCount(l) + 4;
    }

    long headMask(int l) {
        return headMask[l];
    }

    long neurons(int l) {
        return index[l][MLP];
    }

    long neuronCount(int l) {
        return counts.address() + 16L * l + 4;
    }

    /** The selection counts of every layer, [layer][kind][all rows, items' rows], for {@link #shares}. */
    DeviceMemory counts() {
        return counts;
    }

    /**
     * From the counts of a sparse step: per layer the share of MLP neurons and of heads it computed (1 where a kind
     * ran dense).
     */
    double[][] shares(int[] counted) {
        double[] mlp = new double[layers], att = new double[layers];
        for (int l = 0; l < layers; l++) {
            mlp[l] = mlpSparse(l) ? (double) counted[4 * l + 1] / f : 1;
            att[l] = headsSparse(l) ? (double) counted[4 * l + 3] / (heads * (double) headDim) : 1;
        }
        return new double[][]{mlp, att};
    }
}
