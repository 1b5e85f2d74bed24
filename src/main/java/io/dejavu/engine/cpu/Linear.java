package io.dejavu.engine.cpu;

import io.dejavu.model.DType;
import io.dejavu.model.Tensor;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.List;

/**
 * A torch.nn.Linear over a mapped checkpoint weight [out, in]: y = W x + b for a block of tokens, fp32 math.
 * Weight-stationary: each thread takes a range of output rows and reads each weight row from memory once per decode
 * step, or once per {@link #TOKEN_BLOCK} tokens of a prompt. A decode step (up to {@link #FEW_TOKENS} tokens) decodes
 * the weights in registers straight into the multiply-adds; longer blocks decode {@link #ROW_BLOCK} rows at a time
 * into a small float scratch and dot them with every token of the block, sharing the decoding cost among them.
 */
final class Linear {
    static final int ROW_BLOCK = 4;
    /** Tokens whose inputs stay in L2 while a row block is dotted with them (prefill, perplexity). */
    static final int TOKEN_BLOCK = 64;
    /** Up to this many tokens (a decode step of a small batch) are multiplied straight from the weights' vectors. */
    static final int FEW_TOKENS = 8;
    private static final VectorSpecies<Float> F = RowDecoder.FLOATS;

    final int outDim;
    final int inDim;
    private final MemorySegment weight;
    private final DType dtype;
    private final float[] bias;

    Linear(Tensor weight, Tensor bias) {
        this.outDim = (int) weight.shape()[0];
        this.inDim = (int) weight.shape()[1];
        this.weight = weight.data();
        this.dtype = weight.dtype();
        this.bias = bias == null ? null : bias.toFloatArray();
    }

    /**
     * Working memory of one engine's calls (it applies one call at a time): each worker's decoded weight rows for
     * blocks of tokens, and, per linear of a call, a decode step's input folded for the in-register kernels.
     */
    static final class Scratch {
        private final float[][] rows;
        private final float[][] folded;

        /** For calls of up to {@code linearsPerCall} of these linears on a pool of {@code threads}. */
        Scratch(int threads, int linearsPerCall, List<Linear> linears) {
            int maxIn = linears.stream().mapToInt(l -> l.inDim).max().orElse(0);
            rows = new float[threads][ROW_BLOCK * maxIn];
            folded = new float[linearsPerCall][paddedTokens(FEW_TOKENS) * maxIn];
        }
    }

    /** Where a call's results go: token t's outDim values from {@code offset(t)} of {@code array(t)} on. */
    private record Out(float[] flat, float[][] rows, int width) {
        float[] array(int t) {
            return rows == null ? flat : rows[t];
        }

        int offset(int t) {
            return rows == null ? t * width : 0;
        }
    }

    /** y[t] = W x[t] + b for {@code tokens} rows of {@code x} (each inDim wide), into y (tokens x outDim). */
    void apply(WorkerPool pool, Scratch scratch, float[] x, int tokens, float[] y) {
        run(pool, scratch, x, tokens, new Linear[]{this}, new Out[]{new Out(y, null, outDim)});
    }

    /**
     * {@link #apply} for {@code ys.length} tokens, token t's results into their own array ys[t] (outDim wide): rows
     * the caller keeps, such as logits, need no copying out of one large array.
     */
    void applyToRows(WorkerPool pool, Scratch scratch, float[] x, float[][] ys) {
        run(pool, scratch, x, ys.length, new Linear[]{this}, new Out[]{new Out(null, ys, outDim)});
    }

    /**
     * {@link #apply} of several linears over the same input (q, k and v), into ys[m] for linears[m], in one
     * parallel section: their rows are split among the threads as one range, so a decode step pays one hand-off
     * and one uneven finish, not three.
     */
    static void applyAll(WorkerPool pool, Scratch scratch, float[] x, int tokens, Linear[] linears, float[][] ys) {
        Out[] outs = new Out[linears.length];
        for (int m = 0; m < linears.length; m++) outs[m] = new Out(ys[m], null, linears[m].outDim);
        run(pool, scratch, x, tokens, linears, outs);
    }

    /** The linears over x in one parallel section, linears[m]'s results into outs[m]. */
    private static void run(WorkerPool pool, Scratch scratch, float[] x, int tokens, Linear[] linears, Out[] outs) {
        // Each linear's first row in the joint range, its row count rounded up to whole row blocks.
        int[] first = new int[linears.length + 1];
        for (int m = 0; m < linears.length; m++) {
            first[m + 1] = first[m] + (linears[m].outDim + ROW_BLOCK - 1) / ROW_BLOCK * ROW_BLOCK;
        }
        // A decode step's input as the in-register kernels multiply it with each linear's folded weights.
        boolean few = tokens <= FEW_TOKENS;
        int shift = few ? foldShift(x, tokens * linears[0].inDim) : 0;
        if (few) {
            for (int m = 0; m < linears.length; m++) {
                float factor = Math.scalb(RowDecoder.foldedScale(linears[m].dtype), -shift);
                scale(x, tokens * linears[m].inDim, factor, scratch.folded[m], paddedTokens(tokens) * linears[m].inDim);
            }
        }
        pool.run(first[linears.length], ROW_BLOCK, (worker, from, to) -> {
            for (int m = 0; m < linears.length; m++) {
                Linear l = linears[m];
                int rowFrom = Math.max(from, first[m]) - first[m], rowTo = Math.min(to - first[m], l.outDim);
                if (rowFrom >= rowTo) continue;
                if (tokens == 1) l.rowsOneToken(x, scratch.folded[m], shift, outs[m], rowFrom, rowTo);
                else if (few) l.rowsFewTokens(x, scratch.folded[m], shift, tokens, outs[m], rowFrom, rowTo);
                else l.rows(x, tokens, outs[m], rowFrom, rowTo, scratch.rows[worker]);
            }
        });
    }

    /** Tokens the few-token kernel reads: four at a time. */
    private static int paddedTokens(int tokens) {
        return tokens == 1 ? 1 : (tokens + 3) / 4 * 4;
    }

    /**
     * The power of two that a decode step's input ({@code x[0..count)}) is divided by so that, times a folded scale
     * of up to 2^112, no element overflows: 0 unless some |x| reaches 2^15.
     */
    private static int foldShift(float[] x, int count) {
        float max = 0;
        for (int i = 0; i < count; i++) max = Math.max(max, Math.abs(x[i]));
        return Math.max(0, Math.getExponent(max) - 14);
    }

    /**
     * out[0..count) = x times factor, then zeros up to {@code length}: the padding tokens' sums are thrown away, but
     * what an earlier call left there could be NaN or subnormal.
     */
    private static void scale(float[] x, int count, float factor, float[] out, int length) {
        for (int i = 0; i < count; i++) out[i] = x[i] * factor;
        Arrays.fill(out, count, length, 0f);
    }

    private void rows(float[] x, int tokens, Out out, int rowFrom, int rowTo, float[] w) {
        for (int t0 = 0; t0 < tokens; t0 += TOKEN_BLOCK) {
            int t1 = Math.min(tokens, t0 + TOKEN_BLOCK);
            for (int r = rowFrom; r < rowTo; r += ROW_BLOCK) {
                int rows = Math.min(ROW_BLOCK, rowTo - r);
                RowDecoder.decode(weight, dtype, (long) r * inDim, rows * inDim, w, 0);
                int t = t0;
                if (rows == ROW_BLOCK) {
                    for (; t + 1 < t1; t += 2) {
                        dot4x2(w, x, t * inDim, out.array(t), out.offset(t) + r, out.array(t + 1), out.offset(t + 1) + r);
                    }
                }
                for (; t < t1; t++) {
                    float[] y = out.array(t);
                    int yo = out.offset(t) + r;
                    for (int i = 0; i < rows; i++) y[yo + i] = dot(w, i * inDim, x, t * inDim, inDim);
                }
                addBias(out, t0, t1, r, rows);
            }
        }
    }

    /**
     * A decode step's matvec, the memory-bound case: weights are decoded in registers straight into the
     * multiply-adds. Four rows at a time share each load of x, and they are taken a quarter of the range apart, so
     * that each is its own sequential stream through its own pages, which the hardware prefetchers follow. Four
     * neighbouring rows instead (four short streams within one page) read memory at a quarter of the speed of a plain
     * read, one row at a time at two thirds (docs/BENCHMARKS.md).
     * <p>
     * The weights come as {@link RowDecoder#loadFolded} gives them, without the power-of-two scale that ends an fp16
     * decoding; {@code scaled} is x times that scale and times 2^-shift (see {@link #foldShift}), and each row's sum
     * is multiplied back by 2^shift. Powers of two scale exactly, so with shift 0 (any |x| below 2^15) every product
     * and sum is the one of x and the decoded weights, one multiply per weight vector cheaper.
     */
    private void rowsOneToken(float[] x, float[] scaled, int shift, Out out, int rowFrom, int rowTo) {
        int n = inDim, lanes = F.length(), bound = F.loopBound(n), quarter = (rowTo - rowFrom) / 4;
        float[] y = out.array(0);
        int yo = out.offset(0);
        for (int r = rowFrom; r < rowFrom + quarter; r++) {
            long gap = (long) quarter * n, e0 = (long) r * n, e1 = e0 + gap, e2 = e1 + gap, e3 = e2 + gap;
            FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0;
            for (int i = 0; i < bound; i += lanes) {
                FloatVector xv = FloatVector.fromArray(F, scaled, i);
                a0 = RowDecoder.loadFolded(weight, dtype, e0 + i).fma(xv, a0);
                a1 = RowDecoder.loadFolded(weight, dtype, e1 + i).fma(xv, a1);
                a2 = RowDecoder.loadFolded(weight, dtype, e2 + i).fma(xv, a2);
                a3 = RowDecoder.loadFolded(weight, dtype, e3 + i).fma(xv, a3);
            }
            y[yo + r] = finishRow(a0, shift, e0, bound, x, 0);
            y[yo + r + quarter] = finishRow(a1, shift, e1, bound, x, 0);
            y[yo + r + 2 * quarter] = finishRow(a2, shift, e2, bound, x, 0);
            y[yo + r + 3 * quarter] = finishRow(a3, shift, e3, bound, x, 0);
        }
        for (int r = rowFrom + 4 * quarter; r < rowTo; r++) {
            long e = (long) r * n;
            FloatVector a = FloatVector.zero(F);
            for (int i = 0; i < bound; i += lanes) {
                a = RowDecoder.loadFolded(weight, dtype, e + i).fma(FloatVector.fromArray(F, scaled, i), a);
            }
            y[yo + r] = finishRow(a, shift, e, bound, x, 0);
        }
        addBias(out, 0, 1, rowFrom, rowTo - rowFrom);
    }

    /**
     * A small batch's decode step: like {@link #rowsOneToken}, weights are decoded in registers and multiplied with
     * the inputs there, so that reading the weights overlaps the arithmetic (decoding rows into a buffer first, as
     * {@link #rows} does, made the two wait for each other). Two rows half the range apart, four tokens at a time;
     * {@code scaled} holds the tokens' inputs folded as for one token, padded with zero tokens to a multiple of four.
     */
    private void rowsFewTokens(float[] x, float[] scaled, int shift, int tokens, Out out, int rowFrom, int rowTo) {
        int n = inDim, lanes = F.length(), bound = F.loopBound(n), half = (rowTo - rowFrom + 1) / 2;
        for (int ra = rowFrom; ra < rowFrom + half; ra++) {
            // With an odd count of rows the last one is computed twice.
            int rb = Math.min(ra + half, rowTo - 1);
            long ea = (long) ra * n, eb = (long) rb * n;
            for (int t = 0; t < tokens; t += 4) {
                int o0 = t * n, o1 = o0 + n, o2 = o1 + n, o3 = o2 + n;
                FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
                for (int i = 0; i < bound; i += lanes) {
                    FloatVector wa = RowDecoder.loadFolded(weight, dtype, ea + i);
                    FloatVector wb = RowDecoder.loadFolded(weight, dtype, eb + i);
                    FloatVector x0 = FloatVector.fromArray(F, scaled, o0 + i);
                    FloatVector x1 = FloatVector.fromArray(F, scaled, o1 + i);
                    FloatVector x2 = FloatVector.fromArray(F, scaled, o2 + i);
                    FloatVector x3 = FloatVector.fromArray(F, scaled, o3 + i);
                    a0 = wa.fma(x0, a0);
                    b0 = wb.fma(x0, b0);
                    a1 = wa.fma(x1, a1);
                    b1 = wb.fma(x1, b1);
                    a2 = wa.fma(x2, a2);
                    b2 = wb.fma(x2, b2);
                    a3 = wa.fma(x3, a3);
                    b3 = wb.fma(x3, b3);
                }
                finishTokenRows(a0, b0, t, tokens, ra, rb, shift, bound, x, out);
                finishTokenRows(a1, b1, t + 1, tokens, ra, rb, shift, bound, x, out);
                finishTokenRows(a2, b2, t + 2, tokens, ra, rb, shift, bound, x, out);
                finishTokenRows(a3, b3, t + 3, tokens, ra, rb, shift, bound, x, out);
            }
        }
        addBias(out, 0, tokens, rowFrom, rowTo - rowFrom);
    }

    /** Token t's outputs of rows ra and rb, unless t is padding. */
    private void finishTokenRows(FloatVector a, FloatVector b, int t, int tokens, int ra, int rb, int shift, int bound,
                                 float[] x, Out out) {
        if (t >= tokens) return;
        float[] y = out.array(t);
        int yo = out.offset(t);
        y[yo + ra] = finishRow(a, shift, (long) ra * inDim, bound, x, t * inDim);
        y[yo + rb] = finishRow(b, shift, (long) rb * inDim, bound, x, t * inDim);
    }

    /** A row's sum: its vector lanes scaled back by 2^shift, plus its elements from {@code from} on times x[xo..]. */
    private float finishRow(FloatVector acc, int shift, long rowStart, int from, float[] x, int xo) {
        float s = Math.scalb(acc.reduceLanes(VectorOperators.ADD), shift);
        for (int i = from; i < inDim; i++) s += dtype.get(weight, rowStart + i) * x[xo + i];
        return s;
    }

    private void addBias(Out out, int t0, int t1, int r, int rows) {
        if (bias == null) return;
        for (int t = t0; t < t1; t++) {
            float[] y = out.array(t);
            int yo = out.offset(t) + r;
            for (int i = 0; i < rows; i++) y[yo + i] += bias[r + i];
        }
    }

    /**
     * Four consecutive decoded weight rows of {@code w} dotted with two consecutive input rows, into ya[yao..] and
     * yb[ybo..]: eight accumulators for six loads, so the multiply-adds rather than the loads set the pace.
     */
    private void dot4x2(float[] w, float[] x, int xo, float[] ya, int yao, float[] yb, int ybo) {
        int n = inDim, lanes = F.length(), bound = F.loopBound(n), i = 0;
        FloatVector a0 = FloatVector.zero(F), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (; i < bound; i += lanes) {
            FloatVector xa = FloatVector.fromArray(F, x, xo + i), xb = FloatVector.fromArray(F, x, xo + n + i);
            FloatVector w0 = FloatVector.fromArray(F, w, i), w1 = FloatVector.fromArray(F, w, n + i);
            FloatVector w2 = FloatVector.fromArray(F, w, 2 * n + i), w3 = FloatVector.fromArray(F, w, 3 * n + i);
            a0 = w0.fma(xa, a0);
            a1 = w1.fma(xa, a1);
            a2 = w2.fma(xa, a2);
            a3 = w3.fma(xa, a3);
            b0 = w0.fma(xb, b0);
            b1 = w1.fma(xb, b1);
            b2 = w2.fma(xb, b2);
            b3 = w3.fma(xb, b3);
        }
        finish(a0, w, 0, x, xo, i, ya, yao);
        finish(a1, w, 1, x, xo, i, ya, yao + 1);
        finish(a2, w, 2, x, xo, i, ya, yao + 2);
        finish(a3, w, 3, x, xo, i, ya, yao + 3);
        finish(b0, w, 0, x, xo + n, i, yb, ybo);
        finish(b1, w, 1, x, xo + n, i, yb, ybo + 1);
        finish(b2, w, 2, x, xo + n, i, yb, ybo + 2);
        finish(b3, w, 3, x, xo + n, i, yb, ybo + 3);
    }

    /** y[yo] = the lanes of acc plus decoded row {@code row}'s tail from element {@code from} on. */
    private void finish(FloatVector acc, float[] w, int row, float[] x, int xo, int from, float[] y, int yo) {
        float s = acc.reduceLanes(VectorOperators.ADD);
        for (int j = from; j < inDim; j++) s += w[row * inDim + j] * x[xo + j];
        y[yo] = s;
    }

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
}
