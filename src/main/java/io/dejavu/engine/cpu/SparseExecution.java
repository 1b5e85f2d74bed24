package io.dejavu.engine.cpu;

import io.dejavu.engine.StepSparsity;
import io.dejavu.model.DType;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptWeights;
import io.dejavu.model.Tensor;
import io.dejavu.sparsity.LowRankPredictor;
import io.dejavu.sparsity.PredictorInput;
import io.dejavu.sparsity.Predictors;
import io.dejavu.sparsity.TopK;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.function.IntPredicate;
import java.util.stream.IntStream;

/**
 * Deja Vu on the CPU engine: per token and layer the predictors choose MLP neurons and attention heads, and only
 * those run. The MLP reads the selected rows of fc1 and of a transposed copy of fc2 (made here, in the checkpoint's
 * dtype: ffn x hidden more elements per layer) so that both are contiguous rows. Heads: K and V are computed for
 * every head (the KV cache stays exact for later tokens, whatever they select); the attention of unselected heads
 * is skipped and their output is zero, so out_proj adds nothing for them.
 */
final class SparseExecution {
    /** One layer's MLP weights as the sparse path reads them. */
    private record MlpWeights(MemorySegment fc1, DType fc1Type, float[] fc1Bias, MemorySegment fc2T, DType fc2Type,
                              float[] fc2Bias) {
    }

    private final Predictors predictors;
    private final int hidden, ffn, heads;
    private final MlpWeights[] mlp;
    private final long extraBytes;
    private final SparsityStats stats;
    /**
     * Working arrays, kept from pass to pass as the engine keeps its own (they are used by one pass at a time):
     * per worker thread, and per row for the largest pass so far.
     */
    private final Scratch[] scratches;
    /**
     * Decode rows' MLP sums, one array per slice of the union's neurons (rows x hidden each). Fixed slices summed in
     * their order keep a step's result independent of which thread ran which slice, and of the thread count: the
     * same seed gives the same tokens.
     */
    private static final int SLICES = 8;
    private final float[][] sliceSums = new float[SLICES][];
    private int capacity;
    /** Per row: its own neuron set (ffn wide) and head mask, before decode rows join theirs. */
    private int[][] rowNeurons;
    private boolean[][] rowHeads;
    /** The standardised residual streams: entering this layer and the one before (the look-ahead's), entering the MLP. */
    private float[] layerInput, previousLayerInput, mlpInput;
    private final boolean[] unionHeads, inUnion;
    private final int[] unionNeurons;

    SparseExecution(OptConfig config, OptWeights weights, Predictors predictors, int threads) {
        if (!config.activationFunction().equals("relu")) {
            throw new IllegalArgumentException("contextual sparsity needs ReLU neurons; this model uses "
                    + config.activationFunction());
        }
        if (predictors.layers().size() != config.numHiddenLayers()) {
            throw new IllegalArgumentException("predictors have " + predictors.layers().size() + " layers, the model "
                    + config.numHiddenLayers());
        }
        this.predictors = predictors;
        hidden = config.hiddenSize();
        ffn = config.ffnDim();
        heads = config.numAttentionHeads();
        mlp = new MlpWeights[config.numHiddenLayers()];
        stats = new SparsityStats(config.numHiddenLayers());
        Arena arena = Arena.ofAuto();
        long bytes = 0;
        for (int l = 0; l < mlp.length; l++) {
            OptWeights.Layer w = weights.layers().get(l);
            Tensor fc2 = w.fc2Weight();
            mlp[l] = new MlpWeights(w.fc1Weight().data(), w.fc1Weight().dtype(), floats(w.fc1Bias()),
                    transpose(fc2, arena), fc2.dtype(), floats(w.fc2Bias()));
            bytes += fc2.data().byteSize();
        }
        extraBytes = bytes;
        scratches = new Scratch[threads];
        for (int i = 0; i < threads; i++) scratches[i] = new Scratch(predictors.rank(), hidden, ffn, heads);
        unionHeads = new boolean[heads];
        inUnion = new boolean[ffn];
        unionNeurons = new int[ffn];
    }

    /** Grows the per-row arrays to {@code rows} rows. */
    private void reserve(int rows) {
        if (rows <= capacity) return;
        capacity = rows;
        rowNeurons = new int[rows][ffn];
        rowHeads = new boolean[rows][heads];
        layerInput = new float[rows * hidden];
        previousLayerInput = new float[rows * hidden];
        mlpInput = new float[rows * hidden];
        for (int i = 0; i < SLICES; i++) sliceSums[i] = new float[rows * hidden];
    }

    private static float[] floats(Tensor t) {
        return t == null ? null : t.toFloatArray();
    }

    /** fc2 [hidden, ffn] as [ffn, hidden], element bytes copied as they are. */
    private static MemorySegment transpose(Tensor t, Arena arena) {
        int rows = (int) t.shape()[0], columns = (int) t.shape()[1], size = t.dtype().bytes;
        MemorySegment src = t.data(), dst = arena.allocate(src.byteSize(), 8);
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < columns; c++) {
                MemorySegment.copy(src, ((long) r * columns + c) * size, dst, ((long) c * rows + r) * size, size);
            }
        }
        return dst;
    }

    /** Memory the transposed fc2 copies take. */
    long extraBytes() {
        return extraBytes;
    }

    SparsityStats stats() {
        return stats;
    }

    /**
     * The selections of one forward pass.
     *
     * @param sparse row t runs sparse
     * @param shared row t is the one token of a sparse decode step: such rows execute the union of their sets
     */
    Plan plan(boolean[] sparse, boolean[] shared) {
        reserve(sparse.length);
        return new Plan(sparse, shared);
    }

    private interface RowTask {
        void run(int row, Scratch scratch);
    }

    /** One worker's arrays: predictor scores and top-k, a neuron's decoded rows. */
    private static final class Scratch {
        final float[] hiddenUnits, scores, tmp;
        final int[] chosenHeads;
        final float[] fc1Row, fc2Row;
        /** A row on its own, for {@link Plan#neuron}. */
        final int[] row = new int[1];

        Scratch(int rank, int hidden, int ffn, int heads) {
            hiddenUnits = new float[rank];
            scores = new float[ffn];
            tmp = new float[ffn];
            chosenHeads = new int[heads];
            fc1Row = new float[hidden];
            fc2Row = new float[hidden];
        }
    }

    final class Plan {
        private final int n;
        private final boolean[] sparse, shared;
        private final int[] ownRows, sharedRows, denseRows;
        /** Per row: the selected neurons (sorted) and how many; shared rows all point at the union. */
        private final int[][] neurons;
        private final int[] neuronCount;
        private final boolean[][] headSelected;
        /** Per layer: the shares of neurons and heads executed, summed over this pass's sparse rows. */
        private final double[] mlpComputed, headsComputed;

        private Plan(boolean[] sparse, boolean[] shared) {
            this.n = sparse.length;
            this.sparse = sparse;
            this.shared = shared;
            ownRows = rows(t -> sparse[t] && !shared[t]);
            sharedRows = rows(t -> sparse[t] && shared[t]);
            denseRows = rows(t -> !sparse[t]);
            neurons = new int[n][];
            neuronCount = new int[n];
            headSelected = new boolean[n][];
            mlpComputed = new double[mlp.length];
            headsComputed = new double[mlp.length];
        }

        /** Per layer, the shares executed, averaged over this pass's sparse rows. */
        StepSparsity report() {
            int rows = ownRows.length + sharedRows.length;
            double[] neuronShare = new double[mlpComputed.length], headShare = new double[headsComputed.length];
            for (int l = 0; l < neuronShare.length; l++) {
                neuronShare[l] = mlpComputed[l] / rows;
                headShare[l] = headsComputed[l] / rows;
            }
            return new StepSparsity(neuronShare, headShare);
        }

        private int[] rows(IntPredicate p) {
            return IntStream.range(0, n).filter(p).toArray();
        }

        int[] denseRows() {
            return denseRows;
        }

        boolean headSelected(int row, int head) {
            return !sparse[row] || headSelected[row][head];
        }

        /**
         * At the start of layer {@code layer} (h: its input): chooses its heads, and its neurons unless the MLP
         * predictors read the MLP block's input.
         */
        void beforeLayer(WorkerPool pool, int layer, float[] h) {
            float[] swap = previousLayerInput;
            previousLayerInput = layerInput;
            layerInput = swap;
            float[] current = standardized(pool, h, layerInput);
            // The look-ahead predictors read the previous layer's input; layer 0 has only its own.
            float[] ahead = layer > 0 ? previousLayerInput : current;
            Predictors.Layer p = predictors.layers().get(layer);
            float[] headsIn = predictors.headsInput() == PredictorInput.LOOKAHEAD ? ahead : current;
            forSparseRows(pool, (t, scratch) -> headSelected[t] = selectHeads(p.heads(), p.headsKeep(), headsIn, t, scratch));
            if (sharedRows.length > 0) unionHeads();
            if (predictors.mlpInput() != PredictorInput.MLP) {
                selectNeurons(pool, p, predictors.mlpInput() == PredictorInput.LOOKAHEAD ? ahead : current);
            }
        }

        /** Before the MLP block of layer {@code layer} (h: its input): chooses its neurons if not done yet. */
        void beforeMlp(WorkerPool pool, int layer, float[] h) {
            Predictors.Layer p = predictors.layers().get(layer);
            if (predictors.mlpInput() == PredictorInput.MLP) selectNeurons(pool, p, standardized(pool, h, mlpInput));
            for (int t = 0; t < n; t++) {
                if (!sparse[t]) continue;
                int headCount = 0;
                for (boolean b : headSelected[t]) if (b) headCount++;
                stats.add(layer, neuronCount[t], ffn, headCount, heads);
                mlpComputed[layer] += (double) neuronCount[t] / ffn;
                headsComputed[layer] += (double) headCount / heads;
            }
        }

        private void selectNeurons(WorkerPool pool, Predictors.Layer p, float[] input) {
            forSparseRows(pool, (t, scratch) -> {
                p.mlp().scores(input, t * hidden, scratch.hiddenUnits, scratch.scores, 0);
                int[] set = rowNeurons[t];
                if (p.mlpByThreshold()) {
                    int count = 0;
                    for (int j = 0; j < ffn; j++) if (scratch.scores[j] >= p.mlpThreshold()) set[count++] = j;
                    neuronCount[t] = count;
                } else {
                    neuronCount[t] = TopK.select(scratch.scores, 0, ffn, p.mlpK(), set, scratch.tmp);
                }
                neurons[t] = set;
            });
            if (sharedRows.length > 0) unionNeurons();
        }

        /** The sparse rows of h standardised into out, as predictors read them; returns out. */
        private float[] standardized(WorkerPool pool, float[] h, float[] out) {
            forSparseRows(pool, (t, scratch) -> LowRankPredictor.standardize(h, t * hidden, out, t * hidden, hidden));
            return out;
        }

        private void forSparseRows(WorkerPool pool, RowTask task) {
            pool.run(n, 1, (worker, from, to) -> {
                for (int t = from; t < to; t++) if (sparse[t]) task.run(t, scratches[worker]);
            });
        }

        private boolean[] selectHeads(LowRankPredictor p, int keep, float[] input, int t, Scratch scratch) {
            boolean[] mask = rowHeads[t];
            Arrays.fill(mask, keep >= heads);
            if (keep >= heads) return mask;
            int[] chosen = scratch.chosenHeads;
            p.scores(input, t * hidden, scratch.hiddenUnits, scratch.scores, 0);
            int count = TopK.select(scratch.scores, 0, heads, keep, chosen, scratch.tmp);
            for (int i = 0; i < count; i++) mask[chosen[i]] = true;
            return mask;
        }

        /** Decode rows share one head set: the union of theirs. */
        private void unionHeads() {
            boolean[] union = unionHeads;
            Arrays.fill(union, false);
            for (int t : sharedRows) for (int hd = 0; hd < heads; hd++) union[hd] |= headSelected[t][hd];
            for (int t : sharedRows) headSelected[t] = union;
        }

        /** Decode rows share one neuron list: the union of theirs. */
        private void unionNeurons() {
            Arrays.fill(inUnion, false);
            for (int t : sharedRows) for (int i = 0; i < neuronCount[t]; i++) inUnion[neurons[t][i]] = true;
            int count = 0;
            int[] union = unionNeurons;
            for (int j = 0; j < ffn; j++) if (inUnion[j]) union[count++] = j;
            for (int t : sharedRows) {
                neurons[t] = union;
                neuronCount[t] = count;
            }
        }

        /** o[t] = fc2(relu(fc1(x[t]))) over the selected neurons, for every sparse row t; o is n x hidden. */
        void mlp(WorkerPool pool, int layer, float[] x, float[] o) {
            MlpWeights w = mlp[layer];
            pool.run(ownRows.length, 1, (worker, from, to) -> {
                Scratch scratch = scratches[worker];
                for (int r = from; r < to; r++) {
                    int t = ownRows[r];
                    scratch.row[0] = t;
                    for (int i = 0; i < neuronCount[t]; i++) neuron(w, neurons[t][i], x, scratch.row, o, 0, scratch);
                }
            });
            if (sharedRows.length > 0) {
                int[] union = neurons[sharedRows[0]];
                int count = neuronCount[sharedRows[0]];
                int blocks = (count + 7) / 8;  // slices start at multiples of 8 neurons
                pool.run(SLICES, 1, (worker, from, to) -> {
                    Scratch scratch = scratches[worker];
                    for (int slice = from; slice < to; slice++) {
                        float[] acc = sliceSums[slice];
                        Arrays.fill(acc, 0, sharedRows.length * hidden, 0f);
                        int lo = Math.min(count, blocks * slice / SLICES * 8);
                        int hi = Math.min(count, blocks * (slice + 1) / SLICES * 8);
                        for (int i = lo; i < hi; i++) neuron(w, union[i], x, sharedRows, acc, -1, scratch);
                    }
                });
                for (float[] acc : sliceSums) {
                    for (int s = 0; s < sharedRows.length; s++) {
                        int t = sharedRows[s];
                        for (int i = 0; i < hidden; i++) o[t * hidden + i] += acc[s * hidden + i];
                    }
                }
            }
            if (w.fc2Bias != null) {
                for (int t = 0; t < n; t++) {
                    if (sparse[t]) for (int i = 0; i < hidden; i++) o[t * hidden + i] += w.fc2Bias[i];
                }
            }
        }

        /**
         * Neuron j for the given rows: f = relu(fc1[j] . x[t] + b1[j]), out += f * fc2T[j]. The output row of
         * rows[s] is rows[s] when {@code slotted} is 0, s when it is -1 (a compact accumulator).
         */
        private void neuron(MlpWeights w, int j, float[] x, int[] rows, float[] out, int slotted, Scratch scratch) {
            float[] row1 = scratch.fc1Row, row2 = scratch.fc2Row;
            RowDecoder.decode(w.fc1, w.fc1Type, (long) j * hidden, hidden, row1, 0);
            boolean decoded = false;
            float bias = w.fc1Bias == null ? 0 : w.fc1Bias[j];
            for (int s = 0; s < rows.length; s++) {
                int t = rows[s];
                float f = Linear.dot(row1, 0, x, t * hidden, hidden) + bias;
                if (f <= 0) continue;
                if (!decoded) {
                    RowDecoder.decode(w.fc2T, w.fc2Type, (long) j * hidden, hidden, row2, 0);
                    decoded = true;
                }
                CpuEngine.axpy(f, row2, 0, out, (slotted == 0 ? t : s) * hidden, hidden);
            }
        }
    }
}
