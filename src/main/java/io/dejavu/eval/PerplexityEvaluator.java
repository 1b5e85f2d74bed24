package io.dejavu.eval;

import io.dejavu.engine.Engine;
import io.dejavu.engine.Sequence;
import io.dejavu.engine.Step;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.util.Arrays;
import java.util.List;

/**
 * Perplexity of a token stream as golden/opt-*-perplexity.json defines it: the text is cut into windows of
 * {@code window - 1} tokens (stride equal to that, no overlap, the last window partial), each window is preceded by
 * the BOS id, and within a window every text token is predicted from its prefix. The result is the mean negative
 * log-likelihood over all text tokens, so every text token counts exactly once.
 */
public final class PerplexityEvaluator {
    /** The window of the golden figures: 511 text tokens after the BOS id. */
    public static final int DEFAULT_WINDOW = 512;
    private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;

    /** Called after each window: windows done of all, text tokens scored so far, their NLL sum. */
    @FunctionalInterface
    public interface Progress {
        void update(int windowsDone, int windows, long tokens, double nllSum);
    }

    public record Result(long tokens, double nllPerToken) {
        public double perplexity() {
            return Math.exp(nllPerToken);
        }
    }

    private final Engine engine;
    private final int window;
    private final boolean sparse;

    public PerplexityEvaluator(Engine engine) {
        this(engine, DEFAULT_WINDOW);
    }

    public PerplexityEvaluator(Engine engine, int window) {
        this(engine, window, false);
    }

    /** @param sparse run every window as a sparse step (Deja Vu), each token with its own predicted sets */
    public PerplexityEvaluator(Engine engine, int window, boolean sparse) {
        int max = engine.config().maxPositionEmbeddings();
        if (window < 2 || window > max) {
            throw new IllegalArgumentException("perplexity window " + window + " must be in [2, " + max
                    + "] (the model's max_position_embeddings)");
        }
        this.engine = engine;
        this.window = window;
        this.sparse = sparse;
    }

    public Result evaluate(int[] ids, Progress progress) {
        if (ids.length == 0) throw new IllegalArgumentException("no tokens to evaluate");
        int stride = window - 1, bos = engine.config().bosTokenId();
        int windows = (ids.length + stride - 1) / stride;
        double nllSum = 0;
        long tokens = 0;
        for (int w = 0; w < windows; w++) {
            int from = w * stride, to = Math.min(ids.length, from + stride);
            int[] input = new int[to - from + 1];
            input[0] = bos;
            System.arraycopy(ids, from, input, 1, to - from);
            // The last input token predicts nothing inside the window, so it need not be fed.
            int[] fed = Arrays.copyOf(input, input.length - 1);
            float[][] logits;
            try (Sequence s = engine.newSequence()) {
                logits = engine.forward(List.of(new Step(s, fed, true, sparse))).getFirst();
            }
            for (int p = 0; p < fed.length; p++) nllSum += logSumExp(logits[p]) - logits[p][input[p + 1]];
            tokens += fed.length;
            progress.update(w + 1, windows, tokens, nllSum);
        }
        return new Result(tokens, nllSum / tokens);
    }

    /** log(sum(exp(x))), stable; partial sums go to a double every block so that 50k-wide rows keep precision. */
    static double logSumExp(float[] x) {
        int lanes = F.length(), bound = F.loopBound(x.length), i = 0;
        FloatVector maxes = FloatVector.broadcast(F, Float.NEGATIVE_INFINITY);
        for (; i < bound; i += lanes) maxes = maxes.max(FloatVector.fromArray(F, x, i));
        float max = maxes.reduceLanes(VectorOperators.MAX);
        for (; i < x.length; i++) max = Math.max(max, x[i]);
        double sum = 0;
        for (i = 0; i < bound; ) {
            FloatVector acc = FloatVector.zero(F);
            for (int end = Math.min(bound, i + 64 * lanes); i < end; i += lanes) {
                acc = acc.add(FloatVector.fromArray(F, x, i).sub(max).lanewise(VectorOperators.EXP));
            }
            sum += acc.reduceLanes(VectorOperators.ADD);
        }
        for (; i < x.length; i++) sum += Math.exp(x[i] - max);
        return max + Math.log(sum);
    }
}
