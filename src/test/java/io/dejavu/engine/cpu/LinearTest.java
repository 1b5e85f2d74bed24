package io.dejavu.engine.cpu;

import io.dejavu.model.DType;
import io.dejavu.model.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Linear against a double-precision reference, for widths that leave vector tails and row counts that leave uneven
 * thread chunks, on both the one-token (decode) path and the token-block path.
 */
class LinearTest {
    private static final int[][] SHAPES = {{37, 45}, {64, 48}, {9, 7}, {130, 96}, {16, 2048}};

    @Test
    void matchesReferenceForEveryDTypeWidthAndTokenCount() {
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            Random random = new Random(7);
            for (DType dtype : DType.values()) {
                for (int[] shape : SHAPES) {
                    int out = shape[0], in = shape[1];
                    MemorySegment w = arena.allocate((long) out * in * dtype.bytes);
                    MemorySegment b = arena.allocate((long) out * 4);
                    for (int i = 0; i < out * in; i++) set(w, dtype, i, (float) random.nextGaussian());
                    for (int i = 0; i < out; i++) b.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, random.nextFloat());
                    Linear linear = new Linear(new Tensor("w", dtype, new long[]{out, in}, w, null),
                            new Tensor("b", DType.F32, new long[]{out}, b, null));
                    float[][] scratch = new float[pool.size()][linear.scratchSize()];
                    for (int tokens : new int[]{1, 3}) {
                        float[] x = new float[tokens * in];
                        for (int i = 0; i < x.length; i++) x[i] = (float) random.nextGaussian();
                        float[] y = linear.apply(pool, scratch, x, tokens);
                        for (int t = 0; t < tokens; t++) {
                            for (int r = 0; r < out; r++) {
                                double expected = b.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, r);
                                for (int i = 0; i < in; i++) expected += (double) dtype.get(w, (long) r * in + i) * x[t * in + i];
                                assertEquals(expected, y[t * out + r], 1e-4 * Math.sqrt(in),
                                        dtype + " " + out + "x" + in + ", " + tokens + " tokens, token " + t + " row " + r);
                            }
                        }
                    }
                }
            }
        }
    }

    private static void set(MemorySegment w, DType dtype, long index, float value) {
        switch (dtype) {
            case F16 -> w.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, Float.floatToFloat16(value));
            case BF16 -> w.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, (short) (Float.floatToRawIntBits(value) >>> 16));
            case F32 -> w.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index, value);
        }
    }
}
