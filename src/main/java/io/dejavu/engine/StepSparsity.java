package io.dejavu.engine;

/**
 * What one forward pass computed of its sparse tokens, per layer: the share of MLP neurons and of attention heads
 * executed, averaged over the pass's sparse tokens. The one-token decode steps of a batch share the union of their
 * selections, so for them this is the union's size over the layer's width.
 *
 * @param mlpComputed   per layer, in [0, 1]
 * @param headsComputed per layer, in [0, 1]
 */
public record StepSparsity(double[] mlpComputed, double[] headsComputed) {
    /** Per layer: the share of MLP neurons skipped. */
    public double[] mlpSkipped() {
        return skipped(mlpComputed);
    }

    /** Per layer: the share of attention heads skipped. */
    public double[] headsSkipped() {
        return skipped(headsComputed);
    }

    private static double[] skipped(double[] computed) {
        double[] out = new double[computed.length];
        for (int l = 0; l < out.length; l++) out[l] = 1 - computed[l];
        return out;
    }
}
