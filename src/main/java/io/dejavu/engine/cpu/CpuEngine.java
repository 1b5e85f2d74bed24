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
    /** Per thread: decoded weight rows. */
    private final float[][] rowScratch;
    /** Per thread: one head's attention scores. */
    private final float[][] scoreScratch;
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
        int scratch = 0;
        for (Linear linear : linears()) scratch = Math.max(scratch, linear.scratchSize());
        pool = new WorkerPool(threads);
        rowScratch = new float[threads][scratch];
        scoreScratch = new float[threads][config.maxPositionEmbeddings()];
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

    @Override
    public Sequence newSequence() {
        checkOpen();
        return new CpuSequence(this, layers.length, hidden, config.maxPositionEmbeddings());
    }

    /**
     * Lets steps run sparse ({@link Step#sparse()}) with these predictors at their operating point; replaces
     * predictors attached before. Makes a transposed copy of every fc2 ({@link #sparseExtraBytes()}).
     */
    public void attachPredictors(Predictors predictors) {
        checkOpen();
        sparsity = new SparseExecution(config, weights, predictors);
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
        SparseExecution.Plan plan = sparsePlan(batch);
        float[] h = embed(batch);
        for (int l = 0; l < layers.length; l++) {
            if (probe != null) probe.layerInput(l, h, batch.size());
            if (plan != null) plan.beforeLayer(pool, l, h);
            attentionBlock(l, batch, h, probe, plan);
            mlpBlock(l, batch, h, probe, plan);
        }
        List<float[][]> logits = logits(steps, h);
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

    /** The sparse selections of this batch; null when no step runs sparse. */
    private SparseExecution.Plan sparsePlan(Batch b) {
        for (boolean s : b.sparse()) if (s) return sparsity.plan(b.sparse(), b.decode());
        return null;
    }

    /** Token embeddings (through project_in where the model has it) plus learned positions. */
    private float[] embed(Batch b) {
        int n = b.size(), width = config.wordEmbedProjDim();
        float[] x = new float[n * width];
        for (int t = 0; t < n; t++) {
            RowDecoder.decode(embedTokens.data(), embedTokens.dtype(), (long) b.tokens()[t] * width, width, x, t * width);
        }
        float[] h = projectIn == null ? x : projectIn.apply(pool, rowScratch, x, n);
        float[] position = new float[hidden];
        for (int t = 0; t < n; t++) {
            long row = b.positions()[t] + OptConfig.POSITION_OFFSET;
            RowDecoder.decode(embedPositions.data(), embedPositions.dtype(), row * hidden, hidden, position, 0);
            for (int i = 0; i < hidden; i++) h[t * hidden + i] += position[i];
        }
        return h;
    }

    /** h += out_proj(attention(LN(h))), with the LayerNorm before (pre-LN) or after the residual (post-LN). */
    private void attentionBlock(int layer, Batch b, float[] h, ForwardProbe probe, SparseExecution.Plan plan) {
        Layer w = layers[layer];
        int n = b.size();
        float[] x = preNorm ? layerNorm(h, n, w.attnNormWeight, w.attnNormBias) : h;
        float[][] qkv = Linear.applyAll(pool, rowScratch, x, n, w.q, w.k, w.v);
        float[] q = qkv[0], k = qkv[1], v = qkv[2];
        for (int i = 0; i < q.length; i++) q[i] *= attentionScale;
        storeKeysValues(layer, b, k, v);
        float[] a = attend(layer, b, q, plan);
        if (probe != null) probe.attentionOutput(layer, a, n);
        float[] o = w.out.apply(pool, rowScratch, a, n);
        for (int i = 0; i < h.length; i++) h[i] += o[i];
        if (!preNorm) layerNormInPlace(h, n, w.attnNormWeight, w.attnNormBias);
    }

    /**
     * h += fc2(act(fc1(LN(h)))), the layer's final_layer_norm before (pre-LN) or after the residual (post-LN);
     * sparse rows run only their selected neurons.
     */
    private void mlpBlock(int layer, Batch b, float[] h, ForwardProbe probe, SparseExecution.Plan plan) {
        Layer w = layers[layer];
        int n = b.size();
        if (probe != null) probe.mlpInput(layer, h, n);
        if (plan != null) plan.beforeMlp(pool, layer, h);
        float[] x = preNorm ? layerNorm(h, n, w.mlpNormWeight, w.mlpNormBias) : h;
        float[] o;
        if (plan == null) {
            o = denseMlp(layer, w, x, n, probe);
        } else {
            o = new float[n * hidden];
            int[] dense = plan.denseRows();
            if (dense.length > 0) {
                float[] od = denseMlp(layer, w, gather(x, dense), dense.length, probe);
                for (int r = 0; r < dense.length; r++) System.arraycopy(od, r * hidden, o, dense[r] * hidden, hidden);
            }
            plan.mlp(pool, layer, x, o);
        }
        for (int i = 0; i < h.length; i++) h[i] += o[i];
        if (!preNorm) layerNormInPlace(h, n, w.mlpNormWeight, w.mlpNormBias);
    }

    private float[] denseMlp(int layer, Layer w, float[] x, int n, ForwardProbe probe) {
        float[] f = w.fc1.apply(pool, rowScratch, x, n);
        activate(f);
        if (probe != null) probe.mlpActivations(layer, f, n);
        return w.fc2.apply(pool, rowScratch, f, n);
    }

    /** The given rows of x (each hidden wide), packed. */
    private float[] gather(float[] x, int[] rows) {
        float[] out = new float[rows.length * hidden];
        for (int r = 0; r < rows.length; r++) System.arraycopy(x, rows[r] * hidden, out, r * hidden, hidden);
        return out;
    }

    private void storeKeysValues(int layer, Batch b, float[] k, float[] v) {
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
    private float[] attend(int layer, Batch b, float[] q, SparseExecution.Plan plan) {
        int n = b.size();
        float[] out = new float[n * hidden];
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
        return out;
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

    private void activate(float[] f) {
        if (gelu) {
            for (int i = 0; i < f.length; i++) f[i] = gelu(f[i]);
        } else {
            for (int i = 0; i < f.length; i++) f[i] = Math.max(f[i], 0f);
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

    private float[] layerNorm(float[] x, int n, float[] weight, float[] bias) {
        float[] y = x.clone();
        layerNormInPlace(y, n, weight, bias);
        return y;
    }

    /** LayerNorm over each row of width hidden (eps 1e-5, biased variance); no affine part when weight is null. */
    private void layerNormInPlace(float[] x, int n, float[] weight, float[] bias) {
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
                float y = (x[o + i] - mean) * scale;
                x[o + i] = weight == null ? y : y * weight[i] + bias[i];
            }
        }
    }

    /** Final LayerNorm, project_out and lm_head for the rows each step asks logits of. */
    private List<float[][]> logits(List<Step> steps, float[] h) {
        int rows = 0;
        for (Step s : steps) rows += s.allLogits() ? s.tokens().length : 1;
        float[] x = new float[rows * hidden];
        int r = 0, t = 0;
        for (Step s : steps) {
            int n = s.tokens().length;
            int first = s.allLogits() ? 0 : n - 1;
            System.arraycopy(h, (t + first) * hidden, x, r * hidden, (n - first) * hidden);
            r += n - first;
            t += n;
        }
        if (config.hasFinalLayerNorm()) layerNormInPlace(x, rows, finalNormWeight, finalNormBias);
        if (projectOut != null) x = projectOut.apply(pool, rowScratch, x, rows);
        float[] all = lmHead.apply(pool, rowScratch, x, rows);
        int vocab = config.vocabSize();
        List<float[][]> out = new ArrayList<>(steps.size());
        r = 0;
        for (Step s : steps) {
            int n = s.allLogits() ? s.tokens().length : 1;
            float[][] logits = new float[n][];
            for (int i = 0; i < n; i++, r++) logits[i] = Arrays.copyOfRange(all, r * vocab, (r + 1) * vocab);
            out.add(logits);
        }
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
