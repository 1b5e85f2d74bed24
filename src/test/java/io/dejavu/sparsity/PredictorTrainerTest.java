package io.dejavu.sparsity;

import org.junit.jupiter.api.Test;

import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The blocked training kernels against plain loops. */
class PredictorTrainerTest {
    @Test
    void blockKernelsMatchPlainLoops() {
        Random random = new Random(5);
        // rank and in not multiples of the vector length, so the scalar tails run too
        int n = 5, rank = 19, out = 7, in = 37;
        float[] up = randoms(random, out * rank), z = randoms(random, n * rank), g = randoms(random, n * out);
        float[] x = randoms(random, 10 * in);
        int[] offsets = {3 * in, 0, 9 * in, 4 * in, 7 * in};

        float[] s = new float[n * out];
        Vectors.blockScores(up, z, n, rank, out, s);
        float[] gradUp = randoms(random, out * rank), gradUp0 = gradUp.clone(), dz = new float[n * rank];
        Vectors.blockBackUp(g, z, up, n, rank, out, gradUp, dz);
        float[] gradDown = randoms(random, rank * in), gradDown0 = gradDown.clone();
        Vectors.blockBackDown(dz, x, offsets, n, rank, in, gradDown);

        for (int r = 0; r < n; r++) {
            for (int j = 0; j < out; j++) {
                double dot = 0;
                for (int k = 0; k < rank; k++) dot += up[j * rank + k] * z[r * rank + k];
                assertEquals(dot, s[r * out + j], 1e-4);
            }
            for (int k = 0; k < rank; k++) {
                double sum = 0;
                for (int j = 0; j < out; j++) sum += g[r * out + j] * up[j * rank + k];
                assertEquals(sum, dz[r * rank + k], 1e-4);
            }
        }
        for (int j = 0; j < out; j++) {
            for (int k = 0; k < rank; k++) {
                double sum = gradUp0[j * rank + k];
                for (int r = 0; r < n; r++) sum += g[r * out + j] * z[r * rank + k];
                assertEquals(sum, gradUp[j * rank + k], 1e-4);
            }
        }
        for (int k = 0; k < rank; k++) {
            for (int i = 0; i < in; i++) {
                double sum = gradDown0[k * in + i];
                for (int r = 0; r < n; r++) sum += dz[r * rank + k] * x[offsets[r] + i];
                assertEquals(sum, gradDown[k * in + i], 1e-4);
            }
        }
    }

    private static float[] randoms(Random random, int n) {
        float[] a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float) random.nextGaussian();
        return a;
    }
}
