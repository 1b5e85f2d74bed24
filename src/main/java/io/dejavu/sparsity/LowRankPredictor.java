package io.dejavu.sparsity;

import java.util.Random;

/**
 * The Deja Vu predictor: two bias-free linear layers {@code in -> rank -> out} with nothing between them, so the
 * scores are a rank-limited linear function of the input. Weights in torch.nn.Linear layout, [out, in] row-major.
 * The input is a residual-stream row standardised by {@link #standardize} (see {@link PredictorInput}).
 *
 * @param down the first layer, rank x in
 * @param up   the second layer, out x rank
 */
public record LowRankPredictor(int in, int rank, int out, float[] down, float[] up) {
    public LowRankPredictor {
        if (down.length != rank * in || up.length != out * rank) {
            throw new IllegalArgumentException("predictor weights do not match " + in + " -> " + rank + " -> " + out);
        }
    }

    /** torch.nn.Linear's default initialisation: uniform in +-1/sqrt(fan_in). */
    static LowRankPredictor initial(int in, int rank, int out, Random random) {
        float[] down = new float[rank * in], up = new float[out * rank];
        fill(down, 1 / Math.sqrt(in), random);
        fill(up, 1 / Math.sqrt(rank), random);
        return new LowRankPredictor(in, rank, out, down, up);
    }

    private static void fill(float[] w, double bound, Random random) {
        for (int i = 0; i < w.length; i++) w[i] = (float) ((random.nextDouble() * 2 - 1) * bound);
    }

    /** scores[so..so+out) = up (down x[xo..xo+in)); {@code hidden} (rank floats) is scratch. */
    public void scores(float[] x, int xo, float[] hidden, float[] scores, int so) {
        for (int k = 0; k < rank; k++) hidden[k] = Vectors.dot(down, k * in, x, xo, in);
        for (int j = 0; j < out; j++) scores[so + j] = Vectors.dot(up, j * rank, hidden, 0, rank);
    }

    /** dst[do..do+n) = (src[so..] - mean) / sqrt(variance + 1e-5): LayerNorm without weight and bias. */
    public static void standardize(float[] src, int so, float[] dst, int dstOffset, int n) {
        double sum = 0, squares = 0;
        for (int i = 0; i < n; i++) sum += src[so + i];
        float mean = (float) (sum / n);
        for (int i = 0; i < n; i++) {
            float d = src[so + i] - mean;
            squares += d * d;
        }
        float scale = (float) (1 / Math.sqrt(squares / n + 1e-5));
        for (int i = 0; i < n; i++) dst[dstOffset + i] = (src[so + i] - mean) * scale;
    }
}
