package io.dejavu.sparsity;

/**
 * Which residual stream a predictor reads, relative to the layer whose neurons or heads it chooses. The row is
 * standardised first (LayerNorm without its affine part), which makes training insensitive to the stream's scale.
 */
public enum PredictorInput {
    /** The residual stream entering the previous layer (layer 0: its own input), so it can run a layer ahead. */
    LOOKAHEAD("lookahead"),
    /** The residual stream entering the layer, before its attention. */
    LAYER("layer"),
    /** The residual stream entering the layer's MLP block, after its attention (MLP predictors only). */
    MLP("mlp");

    public final String wireName;

    PredictorInput(String wireName) {
        this.wireName = wireName;
    }

    public static PredictorInput of(String name) {
        for (PredictorInput p : values()) if (p.wireName.equals(name)) return p;
        throw new IllegalArgumentException("unknown predictor input '" + name + "'; known: lookahead, layer, mlp");
    }
}
