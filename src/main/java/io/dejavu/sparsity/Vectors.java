package io.dejavu.sparsity;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/** The float kernels predictor training and inference spend their time in, on the Vector API. */
final class Vectors {
    static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;

    private Vectors() {
    }

    /** a[ao..ao+n) . b[bo..bo+n) */
    static float dot(float[] a, int ao, float[] b, int bo, int n) {
        int lanes = F.length(), bound = F.loopBound(n), i = 0;
        FloatVector acc = FloatVector.zero(F);
        for (; i < bound; i += lanes) {
            acc = FloatVector.fromArray(F, a, ao + i).fma(FloatVector.fromArray(F, b, bo + i), acc);
        }
        float s = acc.reduceLanes(VectorOperators.ADD);
        for (; i < n; i++) s += a[ao + i] * b[bo + i];
        return s;
    }

    /** p[i] = sigmoid(s[i]) over n elements from offset o. */
    static void sigmoid(float[] s, float[] p, int o, int n) {
        int lanes = F.length(), bound = F.loopBound(n), i = 0;
        for (; i < bound; i += lanes) {
            FloatVector e = FloatVector.fromArray(F, s, o + i).neg().lanewise(VectorOperators.EXP);
            FloatVector.broadcast(F, 1f).div(e.add(1f)).intoArray(p, o + i);
        }
        for (; i < n; i++) p[o + i] = (float) (1 / (1 + Math.exp(-s[o + i])));
    }

    /** For the n rows z[r] (rank floats each) and every j < out: s[r * out + j] = up[j] . z[r]. */
    static void blockScores(float[] up, float[] z, int n, int rank, int out, float[] s) {
        for (int j = 0; j < out; j++) {
            for (int r = 0; r < n; r++) s[r * out + j] = dot(up, j * rank, z, r * rank, rank);
        }
    }

    /**
     * The backward pass through {@code up} for n rows: gradUp[j] += sum over r of g[r * out + j] z[r], and
     * dz[r] += g[r * out + j] up[j]; each row of up and gradUp is loaded once for all n rows.
     */
    static void blockBackUp(float[] g, float[] z, float[] up, int n, int rank, int out, float[] gradUp, float[] dz) {
        int lanes = F.length(), bound = F.loopBound(rank);
        for (int j = 0; j < out; j++) {
            int wo = j * rank, i = 0;
            for (; i < bound; i += lanes) {
                FloatVector w = FloatVector.fromArray(F, up, wo + i), acc = FloatVector.fromArray(F, gradUp, wo + i);
                for (int r = 0; r < n; r++) {
                    FloatVector gr = FloatVector.broadcast(F, g[r * out + j]);
                    acc = FloatVector.fromArray(F, z, r * rank + i).fma(gr, acc);
                    w.fma(gr, FloatVector.fromArray(F, dz, r * rank + i)).intoArray(dz, r * rank + i);
                }
                acc.intoArray(gradUp, wo + i);
            }
            for (; i < rank; i++) {
                for (int r = 0; r < n; r++) {
                    float gr = g[r * out + j];
                    gradUp[wo + i] += gr * z[r * rank + i];
                    dz[r * rank + i] += gr * up[wo + i];
                }
            }
        }
    }

    /** gradDown[k] += sum over r < n of dz[r * rank + k] x[offsets[r]..+in), for every k < rank. */
    static void blockBackDown(float[] dz, float[] x, int[] offsets, int n, int rank, int in, float[] gradDown) {
        int lanes = F.length(), bound = F.loopBound(in);
        for (int k = 0; k < rank; k++) {
            int wo = k * in, i = 0;
            for (; i < bound; i += lanes) {
                FloatVector acc = FloatVector.fromArray(F, gradDown, wo + i);
                for (int r = 0; r < n; r++) {
                    acc = FloatVector.fromArray(F, x, offsets[r] + i).fma(FloatVector.broadcast(F, dz[r * rank + k]), acc);
                }
                acc.intoArray(gradDown, wo + i);
            }
            for (; i < in; i++) {
                for (int r = 0; r < n; r++) gradDown[wo + i] += dz[r * rank + k] * x[offsets[r] + i];
            }
        }
    }
}
