package io.dejavu.sparsity;

import io.dejavu.engine.cpu.ForwardProbe;

/**
 * What calibration records from the dense model, per layer and token: the residual stream entering the layer and
 * entering its MLP block (both standardised, as predictors read them), which
 * fc1 neurons are active (output > 0 after ReLU) and how much each head adds to the residual stream
 * ({@link HeadContributions}). Filled window by window through {@link #probe(int)}.
 */
public final class CalibrationData implements ForwardProbe {
    final int tokens, hidden, ffn, heads, layers;
    /** Per layer: tokens x hidden, the residual stream entering the layer. */
    final float[][] inputs;
    /** Per layer: tokens x hidden, the residual stream entering the MLP block. */
    final float[][] mlpInputs;
    final LabelMatrix[] active;
    /** Per layer: tokens x heads, each head's contribution norm. */
    final float[][] headNorms;
    private final HeadContributions contributions;
    /** Per token: the window it came from (validation is whole windows). */
    final int[] window;
    private int base, rows;

    CalibrationData(int tokens, int layers, int hidden, int ffn, int heads, HeadContributions contributions) {
        this.contributions = contributions;
        this.tokens = tokens;
        this.layers = layers;
        this.hidden = hidden;
        this.ffn = ffn;
        this.heads = heads;
        inputs = new float[layers][tokens * hidden];
        mlpInputs = new float[layers][tokens * hidden];
        active = new LabelMatrix[layers];
        headNorms = new float[layers][tokens * heads];
        for (int l = 0; l < layers; l++) active[l] = new LabelMatrix(tokens, ffn);
        window = new int[tokens];
    }

    /** The probe for the next forward pass, whose rows are tokens base.. of window {@code w}. */
    ForwardProbe probe(int w, int base, int rows) {
        this.base = base;
        this.rows = rows;
        for (int t = 0; t < rows; t++) window[base + t] = w;
        return this;
    }

    @Override
    public void layerInput(int layer, float[] h, int n) {
        for (int t = 0; t < rows; t++) LowRankPredictor.standardize(h, t * hidden, inputs[layer], (base + t) * hidden, hidden);
    }

    @Override
    public void mlpInput(int layer, float[] h, int n) {
        for (int t = 0; t < rows; t++) LowRankPredictor.standardize(h, t * hidden, mlpInputs[layer], (base + t) * hidden, hidden);
    }

    /** The rows a predictor of {@code layer} reading {@code input} is trained on. */
    float[] predictorInput(int layer, PredictorInput input) {
        return switch (input) {
            case LOOKAHEAD -> inputs[Math.max(layer - 1, 0)];
            case LAYER -> inputs[layer];
            case MLP -> mlpInputs[layer];
        };
    }

    @Override
    public void attentionOutput(int layer, float[] a, int n) {
        for (int t = 0; t < rows; t++) contributions.of(layer, a, t * hidden, headNorms[layer], (base + t) * heads);
    }

    @Override
    public void mlpActivations(int layer, float[] f, int n) {
        LabelMatrix m = active[layer];
        for (int t = 0; t < rows; t++) {
            for (int j = 0; j < ffn; j++) if (f[t * ffn + j] > 0) m.set(base + t, j);
        }
    }

    /** Labels "among the {@code keep} heads of largest contribution" for layer {@code layer}. */
    LabelMatrix topHeads(int layer, int keep) {
        LabelMatrix m = new LabelMatrix(tokens, heads);
        int[] chosen = new int[heads];
        float[] scratch = new float[heads];
        for (int t = 0; t < tokens; t++) {
            int count = TopK.select(headNorms[layer], t * heads, heads, keep, chosen, scratch);
            for (int i = 0; i < count; i++) m.set(t, chosen[i]);
        }
        return m;
    }

    /** Share of (token, neuron) pairs active in layer {@code layer} over the given tokens. */
    double activeShare(int layer, int[] rows) {
        long n = 0;
        for (int t : rows) n += active[layer].count(t);
        return (double) n / ((long) rows.length * ffn);
    }
}
