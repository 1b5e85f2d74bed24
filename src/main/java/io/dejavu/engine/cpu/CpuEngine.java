package io.dejavu.engine.cpu;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import io.dejavu.engine.StepSparsity;
import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import io.dejavu.model.OptWeights;
import io.dejavu.model.Tensor;
import io.dejavu.sparsity.Predictors;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;

/**
 * The OPT forward pass on the CPU, as transformers' OPTForCausalLM computes it, in fp32 over the mapped fp16/bf16/f32
 * weights. The tokens of all steps of a batch go through each weight matrix together (see {@link Linear}); attention
 * reads each token's own sequence's KV cache.
 */
public final class CpuEngine implements Engine {
    private static final VectorSpecies<Float> F = RowDecoder.FLOATS;

    /** One decoder layer's weights; norm weights and biases are null where the config has none. */
    private record Layer(float[] attnNormWeight, float[] attnNormBias, Linear q, Linear k, Linear v, Linear out,
                         float[] mlpNormWeight, float[] mlpNormBias, Linear fc1, Linear fc2) {
    }

    /**
     * The tokens of one forward pass, concatenated over its steps.
     *
     * @param sparse  per token: its step asked for sparse execution
     * @param decode  per token: it is the only token of its step
     */
    private record Batch(int[] tokens, int[] positions, CpuSequence[] sequences, boolean[] sparse, boolean[] decode) {
        int size() {
            return tokens.length;
        }
    }

    private final OptConfig config;
    private final int hidden;
    private final int heads;
    private final int headDim;
    private final float attentionScale;
    private final boolean preNorm;
    private final boolean gelu;
    private final Tensor embedTokens;
    private final Tensor embedPositions;
    private final Linear projectIn;
    private final Linear projectOut;
    private final float[] finalNormWeight;
    private final float[] finalNormBias;
    private final Linear lmHead;
    private final Layer[] layers;
    private final OptWeights weights;
    private final WorkerPool pool;
    private final KvBlockPool kvBlocks;
    private final Linear.Scratch linearScratch;
    /** Per thread: one head's attention scores. */
    private final float[][] scoreScratch;
    /**
     * A forward pass's working arrays, rows x width each, reused from pass to pass so that a decode step allocates
     * next to nothing beyond the logits it returns (garbage made at every step sets the collector's pace, and a
     * collection that lands in a step delays every sequence of the batch). Sized for the largest pass so far.
     */
    private int capacity;
    /** The residual stream. */
    private float[] h;
    /** LayerNorm outputs: a block's input in pre-LN models; the rows whose logits are asked for, at the end. */
    private float[] normed;
    private float[] q, k, v;
    /** Attention outputs, head after head within a row; starts each layer at zero, the value of a skipped head. */
    private float[] attention;
    /** out_proj's output, then the MLP block's. */
    private float[] blockOut;
    /** fc1's outputs, ffn wide. */
    private float[] activations;
    /** word_embed_proj_dim wide: the embeddings before project_in; the final rows after project_out. */
    private float[] narrow;
    /** The dense rows of a pass that has sparse rows: their MLP inputs, and outputs; only with predictors. */
    private float[] denseIn, denseOut;
    /** One position embedding. */
    private final float[] position;
    /** Contextual sparsity, once predictors are attached. */
    private SparseExecution sparsity;
    private StepSparsity lastStepSparsity;
    private boolean closed;

    public CpuEngine(OptModel model) {
        this(model, Runtime.getRuntime().availableProcessors());
    }

    public CpuEngine(OptModel model, int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be at least 1, was " + threads);
        config = model.config();
        OptWeights w = model.weights();
        weights = w;
        hidden = config.hiddenSize();
        heads = config.numAttentionHeads();
        headDim = config.headDim();
        attentionScale = (float) (1.0 / Math.sqrt(headDim));
        preNorm = config.doLayerNormBefore();
        gelu = config.activationFunction().equals("gelu");
        embedTokens = w.embedTokens();
        embedPositions = w.embedPositions();
        projectIn = w.projectIn() == null ? null : new Linear(w.projectIn(), null);
        projectOut = w.projectOut() == null ? null : new Linear(w.projectOut(), null);
        finalNormWeight = floats(w.finalLayerNormWeight());
        finalNormBias = floats(w.finalLayerNormBias());
        lmHead = new Linear(w.lmHead(), null);
        layers = new Layer[w.layers().size()];
        for (int i = 0; i < layers.length; i++) {
            OptWeights.Layer l = w.layers().get(i);
            layers[i] = new Layer(floats(l.attnLayerNormWeight()), floats(l.attnLayerNormBias()),
                    new Linear(l.qWeight(), l.qBias()), new Linear(l.kWeight(), l.kBias()),
                    new Linear(l.vWeight(), l.vBias()), new Linear(l.outWeight(), l.outBias()),
                    floats(l.mlpLayerNormWeight()), floats(l.mlpLayerNormBias()),
                    new Linear(l.fc1Weight(), l.fc1Bias()), new Linear(l.fc2Weight(), l.fc2Bias()));
        }
        pool = new WorkerPool(threads);
        kvBlocks = new KvBlockPool(layers.length, CpuSequence.BLOCK_POSITIONS * hidden);
        // Up to three linears a call: q, k and v.
        linearScratch = new Linear.Scratch(threads, 3, linears());
        scoreScratch = new float[threads][config.maxPositionEmbeddings()];
        position = new float[hidden];
    }

    private static float[] floats(Tensor t) {
        return t == null ? null : t.toFloatArray();
    }

    /** Every weight matrix, in the order a forward pass reads them. */
    private List<Linear> linears() {
        List<Linear> all = new ArrayList<>();
        if (projectIn != null) all.add(projectIn);
        for (Layer l : layers) all.addAll(List.of(l.q, l.k, l.v, l.out, l.fc1, l.fc2));
        if (projectOut != null) all.add(projectOut);
        all.add(lmHead);
        return all;
    }

    public int threads() {
        return pool.size();
    }

    @Override
    public OptConfig config() {
        return config;
    }

    @Override
    public String backend() {
        return "cpu";
    }

    /** Free KV cache blocks kept for the next sequences (tests). */
    int freeKvBlocks() {
        return kvBlocks.freeBlocks();
    }

    @Override
    public Sequence newSequence() {
        checkOpen();
        return new CpuSequence(this, kvBlocks, config.maxPositionEmbeddings());
    }

    /**
     * Lets steps run sparse ({@link Step#sparse()}) with these predictors at their operating point; replaces
     * predictors attached before. Makes a transposed copy of every fc2 ({@link #sparseExtraBytes()}).
     */
    public void attachPredictors(Predictors predictors) {
        checkOpen();
        sparsity = new SparseExecution(config, weights, predictors, pool.size());
        // The sparse path has working arrays of its own.
        capacity = 0;
    }

    /** Memory the sparse path adds (the transposed fc2 copies); 0 without predictors. */
    public long sparseExtraBytes() {
        return sparsity == null ? 0 : sparsity.extraBytes();
    }

    /** Shares of neurons and heads that sparse steps skipped; null without predictors. */
    public SparsityStats sparsityStats() {
        return sparsity == null ? null : sparsity.stats();
    }

    @Override
    public List<float[][]> forward(List<Step> steps) {
        return forward(steps, null);
    }

    @Override
    public StepSparsity lastStepSparsity() {
        return lastStepSparsity;
    }

    @Override
    public boolean sparseAvailable() {
        return sparsity != null;
    }

    /** {@link #forward(List)}, showing each layer's intermediate values to {@code probe} (may be null). */
    public List<float[][]> forward(List<Step> steps, ForwardProbe probe) {
        checkOpen();
        lastStepSparsity = null;
        if (steps.isEmpty()) return List.of();
        Batch batch = batch(steps);
        reserve(batch.size());
        SparseExecution.Plan plan = sparsePlan(batch);
        embed(batch);
        for (int l = 0; l < layers.length; l++) {
            if (probe != null) probe.layerInput(l, h, batch.size());
            if (plan != null) plan.beforeLayer(pool, l, h);
            attentionBlock(l, batch, probe, plan);
            mlpBlock(l, batch, probe, plan);
        }
        List<float[][]> logits = logits(steps);
        for (Step step : steps) ((CpuSequence) step.sequence()).advance(step.tokens().length);
        if (plan != null) lastStepSparsity = plan.report();
        return logits;
    }

    private Batch batch(List<Step> steps) {
        int total = 0;
        Map<Sequence, Boolean> seen = new IdentityHashMap<>();
        for (Step step : steps) {
            if (!(step.sequence() instanceof CpuSequence s) || s.engine() != this) {
                throw new IllegalArgumentException("step's sequence was not created by this engine");
            }
            if (seen.put(s, true) != null) {
                throw new IllegalArgumentException("a sequence appears in more than one step of the batch");
            }
            for (int id : step.tokens()) {
                if (id < 0 || id >= config.vocabSize()) {
                    throw new IllegalArgumentException("token id " + id + " is outside the vocabulary [0, "
                            + config.vocabSize() + ")");
                }
            }
            if (step.sparse() && sparsity == null) {
                throw new IllegalArgumentException("a step asks for sparse execution but no sparsity predictors are "
                        + "attached to the engine");
            }
            s.reserve(step.tokens().length);
            total += step.tokens().length;
        }
        int[] tokens = new int[total], positions = new int[total];
        CpuSequence[] sequences = new CpuSequence[total];
        boolean[] sparse = new boolean[total], decode = new boolean[total];
        int t = 0;
        for (Step step : steps) {
            CpuSequence s = (CpuSequence) step.sequence();
            for (int i = 0; i < step.tokens().length; i++, t++) {
                tokens[t] = step.tokens()[i];
                positions[t] = s.length() + i;
                sequences[t] = s;
                sparse[t] = step.sparse();
                decode[t] = step.tokens().length == 1;
            }
        }
        return new Batch(tokens, positions, sequences, sparse, decode);
    }

    /** Grows the working arrays to hold {@code tokens} rows. */
    private void reserve(int tokens) {
        if (tokens <= capacity) return;
        capacity = tokens;
        h = new float[tokens * hidden];
        normed = new float[tokens * hidden];
        q = new float[tokens * hidden];
        k = new float[tokens * hidden];
        v = new float[tokens * hidden];
        attention = new float[tokens * hidden];
        blockOut = new float[tokens * hidden];
        activations = new float[tokens * config.ffnDim()];
        narrow = new float[tokens * config.wordEmbedProjDim()];
        if (sparsity != null) {
            denseIn = new float[tokens * hidden];
            denseOut = new float[tokens * hidden];
        }
    }

    /** The sparse selections of this batch; null when no step runs sparse. */
    private SparseExecution.Plan sparsePlan(Batch b) {
        for (boolean s : b.sparse()) if (s) return sparsity.plan(b.sparse(), b.decode());
        return null;
    }

    /** h = token embeddings (through project_in where the model has it) plus learned positions. */
    private void embed(Batch b) {
        int n = b.size(), width = config.wordEmbedProjDim();
        float[] x = projectIn == null ? h : narrow;
        for (int t = 0; t < n; t++) {
            RowDecoder.decode(embedTokens.data(), embedTokens.dtype(), (long) b.tokens()[t] * width, width, x, t * width);
        }
        if (projectIn != null) projectIn.apply(pool, linearScratch, x, n, h);
        for (int t = 0; t < n; t++) {
            long row = b.positions()[t] + OptConfig.POSITION_OFFSET;
            RowDecoder.decode(embedPositions.data(), embedPositions.dtype(), row * hidden, hidden, position, 0);
            for (int i = 0; i < hidden; i++) h[t * hidden + i] += position[i];
        }
    }

    /** h += out_proj(attention(LN(h))), with the LayerNorm before (pre-LN) or after the residual (post-LN). */
    private void attentionBlock(int layer, Batch b, ForwardProbe probe, SparseExecution.Plan plan) {
        Layer w = layers[layer];
        int n = b.size(), size = n * hidden;
        float[] x = preNorm ? layerNorm(h, normed, n, w.attnNormWeight, w.attnNormBias) : h;
        Linear.applyAll(pool, linearScratch, x, n, new Linear[]{w.q, w.k, w.v}, new float[][]{q, k, v});
        for (int i = 0; i < size; i++) q[i] *= attentionScale;
        storeKeysValues(layer, b);
        attend(layer, b, plan);
        if (probe != null) probe.attentionOutput(layer, attention, n);
        w.out.apply(pool, linearScratch, attention, n, blockOut);
        for (int i = 0; i < size; i++) h[i] += blockOut[i];
        if (!preNorm) layerNorm(h, h, n, w.attnNormWeight, w.attnNormBias);
    }

    /**
     * h += fc2(act(fc1(LN(h)))), the layer's final_layer_norm before (pre-LN) or after the residual (post-LN);
     * sparse rows run only their selected neurons.
     */
    private void mlpBlock(int layer, Batch b, ForwardProbe probe, SparseExecution.Plan plan) {
        Layer w = layers[layer];
        int n = b.size(), size = n * hidden;
        if (probe != null) probe.mlpInput(layer, h, n);
        if (plan != null) plan.beforeMlp(pool, layer, h);
        float[] x = preNorm ? layerNorm(h, normed, n, w.mlpNormWeight, w.mlpNormBias) : h;
        if (plan == null) {
            denseMlp(layer, w, x, n, probe, blockOut);
        } else {
            // The sparse rows' outputs are sums from zero.
            Arrays.fill(blockOut, 0, size, 0f);
            int[] dense = plan.denseRows();
            if (dense.length > 0) {
                for (int r = 0; r < dense.length; r++) System.arraycopy(x, dense[r] * hidden, denseIn, r * hidden, hidden);
                denseMlp(layer, w, denseIn, dense.length, probe, denseOut);
                for (int r = 0; r < dense.length; r++) System.arraycopy(denseOut, r * hidden, blockOut, dense[r] * hidden, hidden);
            }
            plan.mlp(pool, layer, x, blockOut);
        }
        for (int i = 0; i < size; i++) h[i] += blockOut[i];
        if (!preNorm) layerNorm(h, h, n, w.mlpNormWeight, w.mlpNormBias);
    }

    /** out = fc2(act(fc1(x))) for n rows. */
    private void denseMlp(int layer, Layer w, float[] x, int n, ForwardProbe probe, float[] out) {
        w.fc1.apply(pool, linearScratch, x, n, activations);
        activate(activations, n * config.ffnDim());
        if (probe != null) probe.mlpActivations(layer, activations, n);
        w.fc2.apply(pool, linearScratch, activations, n, out);
    }

    private void storeKeysValues(int layer, Batch b) {
        for (int t = 0; t < b.size(); t++) {
            int pos = b.positions()[t], block = pos / CpuSequence.BLOCK_POSITIONS, slot = pos % CpuSequence.BLOCK_POSITIONS;
            float[] keys = b.sequences()[t].keys(block, layer), values = b.sequences()[t].values(block, layer);
            for (int head = 0; head < heads; head++) {
                int to = (head * CpuSequence.BLOCK_POSITIONS + slot) * headDim;
                System.arraycopy(k, t * hidden + head * headDim, keys, to, headDim);
                System.arraycopy(v, t * hidden + head * headDim, values, to, headDim);
            }
        }
    }

    /** Causal softmax attention of every token and head over its sequence's cache up to its own position. */
    private void attend(int layer, Batch b, SparseExecution.Plan plan) {
        int n = b.size();
        float[] out = attention;
        Arrays.fill(out, 0, n * hidden, 0f);
        pool.run(n * heads, 1, (worker, from, to) -> {
            for (int task = from; task < to; task++) {
                // Later tokens attend over more positions: interleave both ends so contiguous chunks balance.
                int u = task / heads, head = task % heads;
                int t = (u & 1) == 0 ? u >> 1 : n - 1 - (u >> 1);
                // A skipped head's output stays zero, so out_proj adds nothing for it.
                if (plan != null && !plan.headSelected(t, head)) continue;
                attendHead(layer, b.sequences()[t], b.positions()[t], head, q, out,
                        t * hidden + head * headDim, scoreScratch[worker]);
            }
        });
    }

    private void attendHead(int layer, CpuSequence s, int pos, int head, float[] q, float[] out, int offset,
                            float[] scores) {
        int count = pos + 1, blockPositions = CpuSequence.BLOCK_POSITIONS;
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < count; j++) {
            float[] keys = s.keys(j / blockPositions, layer);
            float score = Linear.dot(q, offset, keys, (head * blockPositions + j % blockPositions) * headDim, headDim);
            scores[j] = score;
            max = Math.max(max, score);
        }
        float sum = expInPlace(scores, count, max);
        float inv = 1f / sum;
        for (int j = 0; j < count; j++) {
            float[] values = s.values(j / blockPositions, layer);
            axpy(scores[j] * inv, values, (head * blockPositions + j % blockPositions) * headDim, out, offset, headDim);
        }
    }

    /** scores[j] = exp(scores[j] - max); returns their sum. */
    private static float expInPlace(float[] scores, int n, float max) {
        int lanes = F.length(), bound = F.loopBound(n), i = 0;
        FloatVector acc = FloatVector.zero(F);
        for (; i < bound; i += lanes) {
            FloatVector e = FloatVector.fromArray(F, scores, i).sub(max).lanewise(VectorOperators.EXP);
            e.intoArray(scores, i);
            acc = acc.add(e);
        }
        float sum = acc.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) {
            scores[i] = (float) Math.exp(scores[i] - max);
            sum += scores[i];
        }
        return sum;
    }

    /** y[yo..] += a * x[xo..] over n elements. */
    static void axpy(float a, float[] x, int xo, float[] y, int yo, int n) {
        int lanes = F.length(), bound = F.loopBound(n), i = 0;
        FloatVector av = FloatVector.broadcast(F, a);
        for (; i < bound; i += lanes) {
            FloatVector.fromArray(F, x, xo + i).fma(av, FloatVector.fromArray(F, y, yo + i)).intoArray(y, yo + i);
        }
        for (; i < n; i++) y[yo + i] += a * x[xo + i];
    }

    private void activate(float[] f, int count) {
        if (gelu) {
            for (int i = 0; i < count; i++) f[i] = gelu(f[i]);
        } else {
            for (int i = 0; i < count; i++) f[i] = Math.max(f[i], 0f);
        }
    }

    /** transformers' "gelu": the exact erf form. */
    static float gelu(float x) {
        return (float) (0.5 * x * (1 + erf(x / Math.sqrt(2))));
    }

    /** erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7, under float precision here). */
    private static double erf(double x) {
        double t = 1 / (1 + 0.3275911 * Math.abs(x));
        double y = 1 - t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
                * Math.exp(-x * x);
        return x >= 0 ? y : -y;
    }

    /**
     * y = LayerNorm(x) over each of n rows of width hidden (eps 1e-5, biased variance), no affine part when weight is
     * null; y may be x. Returns y.
     */
    private float[] layerNorm(float[] x, float[] y, int n, float[] weight, float[] bias) {
        for (int t = 0; t < n; t++) {
            int o = t * hidden;
            double sum = 0;
            for (int i = 0; i < hidden; i++) sum += x[o + i];
            float mean = (float) (sum / hidden);
            double squares = 0;
            for (int i = 0; i < hidden; i++) {
                float d = x[o + i] - mean;
                squares += d * d;
            }
            float scale = (float) (1 / Math.sqrt(squares / hidden + OptConfig.LAYER_NORM_EPS));
            for (int i = 0; i < hidden; i++) {
                float z = (x[o + i] - mean) * scale;
                y[o + i] = weight == null ? z : z * weight[i] + bias[i];
            }
        }
        return y;
    }

    /** Final LayerNorm, project_out and lm_head for the rows each step asks logits of. */
    private List<float[][]> logits(List<Step> steps) {
        int rows = 0;
        for (Step s : steps) rows += s.allLogits() ? s.tokens().length : 1;
        float[] x = normed;
        int r = 0, t = 0;
        for (Step s : steps) {
            int n = s.tokens().length;
            int first = s.allLogits() ? 0 : n - 1;
            System.arraycopy(h, (t + first) * hidden, x, r * hidden, (n - first) * hidden);
            r += n - first;
            t += n;
        }
        if (config.hasFinalLayerNorm()) layerNorm(x, x, rows, finalNormWeight, finalNormBias);
        if (projectOut != null) {
            projectOut.apply(pool, linearScratch, x, rows, narrow);
            x = narrow;
        }
        // The caller keeps the rows: fresh arrays, which lm_head fills in place.
        float[][] all = new float[rows][];
        List<float[][]> out = new ArrayList<>(steps.size());
        r = 0;
        for (Step s : steps) {
            float[][] logits = new float[s.allLogits() ? s.tokens().length : 1][];
            for (int i = 0; i < logits.length; i++) logits[i] = all[r++] = new float[config.vocabSize()];
            out.add(logits);
        }
        lmHead.applyToRows(pool, linearScratch, x, all);
        return out;
    }

    private void checkOpen() {
        if (closed) throw new IllegalStateException("the CPU engine was closed");
    }

    @Override
    public void close() {
        closed = true;
        pool.close();
    }
}
