package io.dejavu.sparsity;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/** The two float kernels predictor training and inference spend their time in, on the Vector API. */
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

    /** y[yo..yo+n) += a * x[xo..xo+n) */
    static void axpy(float a, float[] x, int xo, float[] y, int yo, int n) {
        int lanes = F.length(), bound = F.loopBound(n), i = 0;
        FloatVector av = FloatVector.broadcast(F, a);
        for (; i < bound; i += lanes) {
            FloatVector.fromArray(F, x, xo + i).fma(av, FloatVector.fromArray(F, y, yo + i)).intoArray(y, yo + i);
        }
        for (; i < n; i++) y[yo + i] += a * x[xo + i];
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
}
