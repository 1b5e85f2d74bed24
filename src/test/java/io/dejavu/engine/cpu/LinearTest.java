package io.dejavu.engine.cpu;

import io.dejavu.model.DType;
import io.dejavu.model.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Linear against a double-precision reference, for widths that leave vector tails and row counts that leave uneven
 * thread chunks, on the one-token and few-token (decode) paths and the token-block path.
 */
class LinearTest {
    private static final int[][] SHAPES = {{37, 45}, {64, 48}, {9, 7}, {130, 96}, {16, 2048}};

    /** A Linear and the weights and bias it was made of. */
    private record Case(Linear linear, DType dtype, MemorySegment weight, MemorySegment bias) {
    }

    @Test
    void matchesReferenceForEveryDTypeWidthAndTokenCount() {
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            Random random = new Random(7);
            for (DType dtype : DType.values()) {
                for (int[] shape : SHAPES) {
                    Case c = randomLinear(arena, random, dtype, shape[0], shape[1]);
                    for (int tokens : new int[]{1, 3, Linear.FEW_TOKENS, Linear.FEW_TOKENS + 1}) {
                        float[] x = randomInput(random, tokens * shape[1]);
                        assertMatches(c, x, tokens, apply(pool, c.linear, x, tokens));
                    }
                }
            }
        }
    }

    /** Several linears in one section: row counts that are not whole row blocks must not shift the next one's rows. */
    @Test
    void applyAllMatchesEachLinearAlone() {
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            Random random = new Random(11);
            Case[] cases = {randomLinear(arena, random, DType.F16, 37, 45),
                    randomLinear(arena, random, DType.BF16, 9, 45), randomLinear(arena, random, DType.F16, 64, 45)};
            Linear[] linears = {cases[0].linear, cases[1].linear, cases[2].linear};
            for (int tokens : new int[]{1, 3}) {
                float[] x = randomInput(random, tokens * 45);
                float[][] ys = new float[linears.length][];
                for (int m = 0; m < linears.length; m++) ys[m] = new float[tokens * linears[m].outDim];
                Linear.applyAll(pool, new Linear.Scratch(pool.size(), linears.length, List.of(linears)), x, tokens, linears, ys);
                for (int m = 0; m < cases.length; m++) assertMatches(cases[m], x, tokens, ys[m]);
            }
        }
    }

    /** Each token's results in an array of its own (the logits rows a caller keeps), on every path. */
    @Test
    void applyToRowsFillsOneArrayPerToken() {
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            Random random = new Random(19);
            Case c = randomLinear(arena, random, DType.F16, 130, 96);
            Linear.Scratch scratch = new Linear.Scratch(pool.size(), 1, List.of(c.linear));
            for (int tokens : new int[]{1, 3, Linear.FEW_TOKENS, Linear.FEW_TOKENS + 3}) {
                float[] x = randomInput(random, tokens * 96);
                float[][] rows = new float[tokens][130];
                c.linear.applyToRows(pool, scratch, x, rows);
                float[] y = new float[tokens * 130];
                for (int t = 0; t < tokens; t++) System.arraycopy(rows[t], 0, y, t * 130, 130);
                assertMatches(c, x, tokens, y);
            }
        }
    }

    /**
     * An engine reuses its scratch and its input and output arrays from call to call, larger than a smaller call
     * needs: what is left in them (here NaN, past the input and in the output) must not reach a call's results.
     */
    @Test
    void staleValuesInReusedArraysDoNotReachTheResults() {
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            Random random = new Random(17);
            Case c = randomLinear(arena, random, DType.F16, 37, 45);
            int most = Linear.FEW_TOKENS + 1;
            Linear.Scratch scratch = new Linear.Scratch(pool.size(), 1, List.of(c.linear));
            float[] x = new float[most * 45], y = new float[most * 37];
            for (int tokens : new int[]{most, Linear.FEW_TOKENS, 3, 1, 5, 2, most}) {
                float[] input = randomInput(random, tokens * 45);
                Arrays.fill(x, Float.NaN);
                Arrays.fill(y, Float.NaN);
                System.arraycopy(input, 0, x, 0, input.length);
                c.linear.apply(pool, scratch, x, tokens, y);
                assertMatches(c, input, tokens, y);
            }
        }
    }

    /**
     * A decode step scales its input by 2^112 for fp16 weights; inputs from 2^15 up (here up to 2^17) must be scaled
     * down first rather than overflow.
     */
    @Test
    void oneTokenInputsBeyondTheFoldedRangeDoNotOverflow() {
        try (Arena arena = Arena.ofShared(); WorkerPool pool = new WorkerPool(2)) {
            Random random = new Random(13);
            Case c = randomLinear(arena, random, DType.F16, 37, 45);
            float[] x = randomInput(random, 45);
            for (int i = 0; i < x.length; i++) x[i] *= 0x1p15f;
            assertMatches(c, x, 1, apply(pool, c.linear, x, 1));
        }
    }

    private static Case randomLinear(Arena arena, Random random, DType dtype, int out, int in) {
        MemorySegment w = arena.allocate((long) out * in * dtype.bytes);
        MemorySegment b = arena.allocate((long) out * 4);
        for (int i = 0; i < out * in; i++) set(w, dtype, i, (float) random.nextGaussian());
        for (int i = 0; i < out; i++) b.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, i, random.nextFloat());
        return new Case(new Linear(new Tensor("w", dtype, new long[]{out, in}, w, null),
                new Tensor("b", DType.F32, new long[]{out}, b, null)), dtype, w, b);
    }

    private static float[] randomInput(Random random, int n) {
        float[] x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float) random.nextGaussian();
        return x;
    }

    private static float[] apply(WorkerPool pool, Linear linear, float[] x, int tokens) {
        float[] y = new float[tokens * linear.outDim];
        linear.apply(pool, new Linear.Scratch(pool.size(), 1, List.of(linear)), x, tokens, y);
        return y;
    }

    /** y against W x + b computed in double from the weights as the checkpoint stores them. */
    private static void assertMatches(Case c, float[] x, int tokens, float[] y) {
        int out = c.linear.outDim, in = c.linear.inDim;
        double scale = 1;
        for (float v : x) scale = Math.max(scale, Math.abs(v));
        for (int t = 0; t < tokens; t++) {
            for (int r = 0; r < out; r++) {
                double expected = c.bias.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, r);
                for (int i = 0; i < in; i++) {
                    expected += (double) c.dtype.get(c.weight, (long) r * in + i) * x[t * in + i];
                }
                assertEquals(expected, y[t * out + r], 1e-4 * Math.sqrt(in) * scale,
                        c.dtype + " " + out + "x" + in + ", " + tokens + " tokens, token " + t + " row " + r);
            }
        }
    }

    private static void set(MemorySegment w, DType dtype, long index, float value) {
        switch (dtype) {
            case F16 -> w.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index, Float.floatToFloat16(value));
            case BF16 -> w.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, index,
                    (short) (Float.floatToRawIntBits(value) >>> 16));
            case F32 -> w.setAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, index, value);
        }
    }
}
