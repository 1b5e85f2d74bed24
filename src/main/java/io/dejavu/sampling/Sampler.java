package io.dejavu.sampling;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.random.RandomGenerator;
import java.util.random.RandomGeneratorFactory;

/**
 * Chooses one sequence's tokens from the model's logits. Per step: penalties (repetition, presence, frequency),
 * temperature, top-k, top-p, min-p (Hugging Face's order), then a draw from what is left. Ids at or past
 * {@code vocabLimit} are never chosen: a model's embedding is often padded past its tokenizer's vocabulary.
 *
 * <p>One sampler per sequence: it keeps that sequence's token history for the penalties and reuses work arrays the
 * size of the vocabulary. Not thread-safe.
 */
public final class Sampler {
    /** Specified by the JDK, so a seed gives the same random stream on every Java version. */
    private static final String RANDOM_ALGORITHM = "L64X128MixRandom";
    private static final VectorSpecies<Float> SPECIES = FloatVector.SPECIES_PREFERRED;
    /** Weights per partial sum of a draw. */
    private static final int DRAW_BLOCK = 256;

    private final SamplingParams params;
    private final int vocabLimit;
    private final RandomGenerator random;
    private final boolean penalized;

    /** Per id: 1 + occurrences in the output once seen in prompt or output, 0 never seen; empty when unpenalized. */
    private final int[] history;
    private int[] seenIds = new int[64];
    private int seenCount;

    private final float[] work;
    private int[] moreIds;
    private int[] candidates;
    private float[] weights;
    private float[] weightsById;
    private float[] blockSums;

    public Sampler(SamplingParams params, int vocabLimit) {
        if (vocabLimit < 1) throw new IllegalArgumentException("vocabLimit = " + vocabLimit + " must be >= 1");
        this.params = params;
        this.vocabLimit = vocabLimit;
        RandomGeneratorFactory<RandomGenerator> factory = RandomGeneratorFactory.of(RANDOM_ALGORITHM);
        this.random = params.seed() == null ? factory.create() : factory.create(params.seed());
        this.penalized = params.penalized();
        this.history = new int[penalized ? vocabLimit : 0];
        this.work = new float[penalized ? vocabLimit : 0];
    }

    public SamplingParams params() {
        return params;
    }

    /** Records the prompt for the repetition penalty (Hugging Face applies it to prompt tokens too). */
    public void observePrompt(int[] ids) {
        for (int id : ids) record(id, false);
    }

    /** Records a generated token: call it with each token chosen for the sequence. */
    public void observe(int token) {
        record(token, true);
    }

    /** The next token for these logits (at least vocabLimit wide, or all are candidates). Logits are not modified. */
    public int sample(float[] logits) {
        int n = Math.min(vocabLimit, logits.length);
        float[] x = penalized(logits, n);
        return params.isGreedy() ? argmax(x, n) : draw(x, n);
    }

    /**
     * Samples like {@link #sample(float[])} and adds the chosen token's log-probability and the {@code topLogprobs}
     * most probable alternatives, under the model's own distribution (see {@link SampleResult}).
     */
    public SampleResult sample(float[] logits, int topLogprobs) {
        if (topLogprobs < 0) throw new IllegalArgumentException("top_logprobs = " + topLogprobs + " must be >= 0");
        int token = sample(logits);
        int n = Math.min(vocabLimit, logits.length);
        double logNormalizer = logSumExp(logits, n, weightsById());
        int[] ids = candidates();
        int count = DescendingOrder.top(logits, n, topLogprobs, ids);
        List<TokenLogprob> top = new ArrayList<>(count);
        for (int j = 0; j < count; j++) top.add(new TokenLogprob(ids[j], logits[ids[j]] - logNormalizer));
        return new SampleResult(token, logits[token] - logNormalizer, top);
    }

    /** The logits after the repetition, presence and frequency penalties, in a work array (or logits themselves). */
    float[] penalized(float[] logits, int n) {
        if (!penalized) return logits;
        System.arraycopy(logits, 0, work, 0, n);
        float repetition = (float) params.repetitionPenalty();
        for (int i = 0; i < seenCount; i++) {
            int id = seenIds[i];
            if (id >= n) continue;
            float v = work[id];
            if (repetition != 1) v = v < 0 ? v * repetition : v / repetition;
            int occurrences = history[id] - 1;
            if (occurrences > 0) {
                v -= (float) (params.presencePenalty() + occurrences * params.frequencyPenalty());
            }
            work[id] = v;
        }
        return work;
    }

    private void record(int id, boolean generated) {
        if (id < 0) throw new IllegalArgumentException("token id " + id + " is negative");
        // Ids past the limit are never sampled, so penalizing them would change nothing.
        if (!penalized || id >= vocabLimit) return;
        if (history[id] == 0) {
            history[id] = 1;
            if (seenCount == seenIds.length) seenIds = Arrays.copyOf(seenIds, 2 * seenCount);
            seenIds[seenCount++] = id;
        }
        if (generated) history[id]++;
    }

    /** The largest value's index, ties to the lowest (NaN never wins, as with {@code >} one element at a time). */
    private static int argmax(float[] x, int n) {
        // The maximum a vector at a time, then its first index; NaN anywhere falls back to the element-wise scan.
        int i = 0;
        FloatVector max = FloatVector.broadcast(SPECIES, Float.NEGATIVE_INFINITY);
        for (int bound = SPECIES.loopBound(n); i < bound; i += SPECIES.length()) {
            max = max.max(FloatVector.fromArray(SPECIES, x, i));
        }
        float m = max.reduceLanes(VectorOperators.MAX);
        for (; i < n; i++) m = Math.max(m, x[i]);
        if (!Float.isNaN(m)) {
            for (int j = 0; j < n; j++) if (x[j] == m) return j;
        }
        int best = 0;
        for (int j = 1; j < n; j++) if (x[j] > x[best]) best = j;
        return best;
    }

    private int draw(float[] x, int n) {
        int best = argmax(x, n);
        float max = x[best];
        if (max == Float.NEGATIVE_INFINITY) return best;
        float invTemperature = (float) (1 / params.temperature());
        int topK = params.topK() > 0 && params.topK() < n ? params.topK() : n;
        double topP = params.topP();
        int[] ids = candidates();
        float[] w = weights();
        int count;
        if (topK < n) {
            count = DescendingOrder.top(x, n, topK, ids);
            double total = 0;
            for (int j = 0; j < count; j++) {
                w[j] = (float) Math.exp((x[ids[j]] - max) * invTemperature);
                total += w[j];
            }
            if (topP < 1) count = nucleus(w, count, topP * total);
        } else {
            float[] byId = weightsById();
            double total = weighAll(x, n, max, invTemperature, byId);
            // Nothing filters (the OpenAI defaults): draw from the weights as they are, skipping the candidate
            // copies below. Both paths draw with drawIndex over the weights in id order: a seed gives the same tokens.
            if (topP >= 1 && params.minP() == 0) return drawIndex(byId, n);
            if (topP < 1) {
                // Tokens lighter than (1 - topP) * total / n weigh less than (1 - topP) * total together, so the
                // nucleus never reaches them; only the rest go into the heap.
                float light = (float) ((1 - topP) * total / n);
                int heavy = 0;
                for (int id = 0; id < n; id++) if (byId[id] >= light) ids[heavy++] = id;
                DescendingOrder order = new DescendingOrder(x, ids, heavy);
                int[] nucleusIds = moreIds();
                double target = topP * total, mass = 0;
                count = 0;
                while (order.hasNext() && mass < target) {
                    int id = order.next();
                    nucleusIds[count] = id;
                    w[count++] = byId[id];
                    mass += byId[id];
                }
                System.arraycopy(nucleusIds, 0, ids, 0, count);
            } else {
                for (int id = 0; id < n; id++) ids[id] = id;
                System.arraycopy(byId, 0, w, 0, n);
                count = n;
            }
        }
        // The most probable token has weight exactly 1 and survives every filter, so min-p compares with minP itself.
        float minWeight = (float) params.minP();
        int kept = 0;
        for (int j = 0; j < count; j++) {
            if (w[j] >= minWeight) {
                ids[kept] = ids[j];
                w[kept++] = w[j];
            }
        }
        if (kept == 0) return best; // only if exp rounded the top weight below min_p = 1
        return ids[drawIndex(w, kept)];
    }

    /**
     * Draws an index of w[0..n) with probability proportional to its weight. The weights are summed in blocks of
     * {@link #DRAW_BLOCK}, a vector at a time, and the draw skips whole blocks by their sums before it walks one:
     * over a full vocabulary, adding 50,000 doubles one after another twice took most of a sampled token's time.
     */
    private int drawIndex(float[] w, int n) {
        int blocks = (n + DRAW_BLOCK - 1) / DRAW_BLOCK;
        float[] sums = blockSums();
        double total = 0;
        for (int b = 0; b < blocks; b++) {
            int from = b * DRAW_BLOCK, to = Math.min(n, from + DRAW_BLOCK), i = from;
            FloatVector sum = FloatVector.zero(SPECIES);
            for (int bound = from + SPECIES.loopBound(to - from); i < bound; i += SPECIES.length()) {
                sum = sum.add(FloatVector.fromArray(SPECIES, w, i));
            }
            float blockSum = sum.reduceLanes(VectorOperators.ADD);
            for (; i < to; i++) blockSum += w[i];
            sums[b] = blockSum;
            total += blockSum;
        }
        double u = random.nextDouble() * total;
        for (int b = 0; b < blocks; b++) {
            if (u >= sums[b] && b < blocks - 1) {
                u -= sums[b];
                continue;
            }
            int from = b * DRAW_BLOCK, to = Math.min(n, from + DRAW_BLOCK);
            for (int i = from; i < to; i++) {
                u -= w[i];
                if (u < 0) return i;
            }
            return to - 1; // rounding left u just above the block's last weight
        }
        return n - 1;
    }

    /** The length of the shortest prefix of the (descending) weights whose sum reaches target. */
    private static int nucleus(float[] w, int count, double target) {
        double mass = 0;
        for (int j = 0; j < count; j++) {
            mass += w[j];
            if (mass >= target) return j + 1;
        }
        return count;
    }

    /**
     * Writes exp((x - max) / T) for ids [0, n) and returns their sum. Vectorized: exp over the whole vocabulary is
     * the costliest part of a step. (Lane count and exp implementation can differ between CPUs, so a seed reproduces
     * tokens on one machine, not necessarily bit for bit on another.)
     */
    private static double weighAll(float[] x, int n, float max, float invTemperature, float[] out) {
        int i = 0;
        FloatVector sum = FloatVector.zero(SPECIES);
        for (int bound = SPECIES.loopBound(n); i < bound; i += SPECIES.length()) {
            FloatVector w = FloatVector.fromArray(SPECIES, x, i).sub(max).mul(invTemperature)
                    .lanewise(VectorOperators.EXP);
            w.intoArray(out, i);
            sum = sum.add(w);
        }
        double total = sum.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) {
            out[i] = (float) Math.exp((x[i] - max) * invTemperature);
            total += out[i];
        }
        return total;
    }

    private static double logSumExp(float[] logits, int n, float[] scratch) {
        float max = logits[argmax(logits, n)];
        if (max == Float.NEGATIVE_INFINITY) return max;
        return max + Math.log(weighAll(logits, n, max, 1, scratch));
    }

    private int[] moreIds() {
        if (moreIds == null) moreIds = new int[vocabLimit];
        return moreIds;
    }

    private int[] candidates() {
        if (candidates == null) candidates = new int[vocabLimit];
        return candidates;
    }

    private float[] weights() {
        if (weights == null) weights = new float[vocabLimit];
        return weights;
    }

    private float[] blockSums() {
        if (blockSums == null) blockSums = new float[(vocabLimit + DRAW_BLOCK - 1) / DRAW_BLOCK];
        return blockSums;
    }

    private float[] weightsById() {
        if (weightsById == null) weightsById = new float[vocabLimit];
        return weightsById;
    }
}
