package io.dejavu.engine.cpu;

/**
 * Sees the intermediate values of a forward pass, layer by layer, for the rows (tokens) of the batch in order.
 * Calibration copies them to train the sparsity predictors; a probe may also edit the arrays it is given (zeroing
 * neurons or heads), which is how tests and oracle measurements mask a dense pass.
 * <p>
 * The arrays are the engine's working arrays: only their first {@code rows} rows are this pass's, and their contents
 * change after the call returns (the next layer, the next pass), so a probe copies what it keeps.
 */
public interface ForwardProbe {
    /** The residual stream entering decoder layer {@code layer}: rows x hidden. Read only. */
    default void layerInput(int layer, float[] h, int rows) {
    }

    /** The residual stream entering the MLP block of layer {@code layer} (after attention): rows x hidden. Read only. */
    default void mlpInput(int layer, float[] h, int rows) {
    }

    /** The attention output before out_proj, rows x hidden, head after head within a row. */
    default void attentionOutput(int layer, float[] a, int rows) {
    }

    /** The MLP's fc1 outputs after the activation, rows x ffn. */
    default void mlpActivations(int layer, float[] f, int rows) {
    }
}
