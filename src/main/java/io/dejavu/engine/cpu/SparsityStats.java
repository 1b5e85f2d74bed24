package io.dejavu.engine.cpu;

/** What sparse execution skipped, summed over sparse tokens and layers since the engine started or was reset. */
public final class SparsityStats {
    private final long[] layerTokens;
    private final double[] layerNeuronsKept;
    private long tokenLayers;
    private double neuronsSkipped, headsSkipped;

    SparsityStats(int layers) {
        layerTokens = new long[layers];
        layerNeuronsKept = new double[layers];
    }

    synchronized void add(int layer, int neuronsRun, int neurons, int headsRun, int heads) {
        tokenLayers++;
        neuronsSkipped += 1 - (double) neuronsRun / neurons;
        headsSkipped += 1 - (double) headsRun / heads;
        layerTokens[layer]++;
        layerNeuronsKept[layer] += (double) neuronsRun / neurons;
    }

    /** Per layer: the share of MLP neurons executed, averaged over sparse tokens. */
    public synchronized double[] mlpKeptByLayer() {
        double[] out = new double[layerTokens.length];
        for (int l = 0; l < out.length; l++) out[l] = layerTokens[l] == 0 ? 0 : layerNeuronsKept[l] / layerTokens[l];
        return out;
    }

    /** Sparse (token, layer) pairs counted. */
    public synchronized long tokenLayers() {
        return tokenLayers;
    }

    /** Share of MLP neurons not executed, averaged over sparse tokens and layers. */
    public synchronized double mlpSkipped() {
        return tokenLayers == 0 ? 0 : neuronsSkipped / tokenLayers;
    }

    /** Share of attention heads not executed, averaged over sparse tokens and layers. */
    public synchronized double headsSkipped() {
        return tokenLayers == 0 ? 0 : headsSkipped / tokenLayers;
    }

    public synchronized void reset() {
        tokenLayers = 0;
        neuronsSkipped = headsSkipped = 0;
        java.util.Arrays.fill(layerTokens, 0);
        java.util.Arrays.fill(layerNeuronsKept, 0);
    }
}
