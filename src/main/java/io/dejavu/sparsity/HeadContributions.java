package io.dejavu.sparsity;

import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;

/**
 * How much each attention head adds to the residual stream for a token: the L2 norm of its output after its columns
 * of out_proj, ||W_h o_h|| (W_h: out_proj's d columns of head h, o_h: the head's d attention outputs). This is the
 * head importance calibration labels by and the head oracle keeps. The norm of o_h alone ignores that out_proj scales
 * heads differently: on opt-mini, at 25-50% of heads skipped and the same count in every layer, predictors trained on
 * it stayed 1.9-9.2 points of perplexity behind the output-norm oracle, and 1.3-1.5 points with these labels
 * (docs/SPARSITY.md).
 *
 * <p>Computed as sqrt(o_h^T G_h o_h) with G_h = W_h^T W_h (d x d) made once per layer and head, so a token costs d^2
 * multiply-adds a head rather than hidden x d.
 */
public final class HeadContributions {
    private final int heads, headDim;
    /** [layer][head]: G_h row-major, d x d. */
    private final float[][][] gram;

    public HeadContributions(OptModel model) {
        OptConfig c = model.config();
        int hidden = c.hiddenSize(), layers = c.numHiddenLayers();
        this.heads = c.numAttentionHeads();
        this.headDim = c.headDim();
        gram = new float[layers][heads][headDim * headDim];
        for (int l = 0; l < layers; l++) {
            float[] out = model.weights().layers().get(l).outWeight().toFloatArray();  // [out][in]
            for (int h = 0; h < heads; h++) {
                float[] g = gram[l][h];
                for (int i = 0; i < hidden; i++) {
                    int row = i * hidden + h * headDim;
                    for (int a = 0; a < headDim; a++) {
                        float wa = out[row + a];
                        for (int b = 0; b < headDim; b++) g[a * headDim + b] += wa * out[row + b];
                    }
                }
            }
        }
    }

    /**
     * Into norms[no + h], for every head h of one token of {@code layer}: the norm of its contribution, from the
     * token's attention outputs a[ao .. ao + hidden) (heads side by side, as out_proj reads them).
     */
    public void of(int layer, float[] a, int ao, float[] norms, int no) {
        for (int h = 0; h < heads; h++) {
            float[] g = gram[layer][h];
            int o = ao + h * headDim;
            double sq = 0;
            for (int i = 0; i < headDim; i++) sq += a[o + i] * Vectors.dot(g, i * headDim, a, o, headDim);
            norms[no + h] = (float) Math.sqrt(Math.max(sq, 0));
        }
    }
}
