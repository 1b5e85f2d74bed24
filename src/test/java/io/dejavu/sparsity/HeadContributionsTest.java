package io.dejavu.sparsity;

import io.dejavu.model.OptConfig;
import io.dejavu.model.OptModel;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** A head's contribution norm through the Gram matrix equals ||W_h o_h|| computed from out_proj directly. */
class HeadContributionsTest {
    @Test
    void equalsTheNormOfTheHeadsOutputThroughItsColumnsOfOutProj() throws java.io.IOException {
        try (OptModel model = OptModel.load(Path.of(System.getProperty("dejavu.shared"), "golden/opt-tiny-preln"))) {
            OptConfig c = model.config();
            int hidden = c.hiddenSize(), heads = c.numAttentionHeads(), d = c.headDim();
            HeadContributions contributions = new HeadContributions(model);
            Random random = new Random(3);
            for (int layer = 0; layer < c.numHiddenLayers(); layer++) {
                float[] out = model.weights().layers().get(layer).outWeight().toFloatArray();
                float[] a = new float[2 * hidden];  // a second token, to check the offset
                for (int i = 0; i < a.length; i++) a[i] = (float) random.nextGaussian();
                float[] norms = new float[1 + heads];
                contributions.of(layer, a, hidden, norms, 1);
                for (int h = 0; h < heads; h++) {
                    double sq = 0;
                    for (int i = 0; i < hidden; i++) {
                        double y = 0;
                        for (int j = 0; j < d; j++) y += out[i * hidden + h * d + j] * a[hidden + h * d + j];
                        sq += y * y;
                    }
                    double want = Math.sqrt(sq);
                    assertEquals(want, norms[1 + h], 1e-4 * want, "layer " + layer + " head " + h);
                }
            }
        }
    }
}
