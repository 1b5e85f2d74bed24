package io.dejavu.engine.cuda;

/**
 * Typed launches of decoder.cu's kernels: grid shapes and argument order live here and nowhere else. All
 * pointers are device addresses (0 = none). Sizes and FLOPs of each kernel are documented in decoder.cu.
 */
final class DecoderKernels {
    /** Up to this many tokens a linear layer runs as GEMV (weights read once per 16 tokens); above, on tensor cores. */
    static final int GEMV_MAX_TOKENS = 16;
    /**
     * Up to this many tokens the GEMV applies the LayerNorm itself; every block recomputes the statistics, which
     * costs little for one or two rows, while more rows are cheaper normalised once by a separate kernel.
     */
    static final int FUSED_LAYER_NORM_TOKENS = 2;
    private static final int GEMV_WARPS = 8;
    /** Up to this K, one or two fp16 tokens run the GEMV variant that gives each warp four rows (decoder.cu). */
    private static final int SHORT_ROWS = 512;
    private static final int GEMV_SHARED_BYTES = 40 * 1024;  // dynamic; static shared memory comes on top
    private static final int[] GEMV_TILES = {1, 2, 4, 8, 16};
    private static final int[] GEMV_ROWS_PER_WARP = {1, 1, 2, 2, 2};
    private static final int GEMM_TILE = 128;
    /** gemm.cuh's GEMM_SHARED_BYTES: 3 stages of 128x64 A and W tiles, rows padded by 8. */
    static final int GEMM_SHARED_BYTES = 3 * (128 + 128) * 72 * 2;
    /** gemm.cuh's GEMM_WGMMA_SHARED_BYTES: 3 stages of 128x64 A and W tiles, and room to align them to 1 KiB. */
    static final int GEMM_WGMMA_SHARED_BYTES = 3 * (128 + 128) * 64 * 2 + 1024;
    /** decoder.cu's DECODE_WARPS warps. */
    static final int ATTENTION_THREADS = 128;

    private final CudaContext cuda;
    private boolean wgmma;
    /** Blocks of the Hopper GEMM that run at once on the whole GPU (set with the choice of GEMM). */
    private int wgmmaSlots;
    private long splitKWorkspace;

    DecoderKernels(CudaContext cuda) {
        this.cuda = cuda;
    }

    boolean wgmma() {
        return wgmma;
    }

    /**
     * Chooses the prefill GEMM: Hopper's warpgroup MMA where the loaded kernels have it and {@code wanted}, else the
     * wmma kernel. Returns the choice.
     */
    boolean useWgmma(boolean wanted) {
        wgmma = wanted && cuda.hasWgmma();
        String kernel = wgmma ? "gemm_f16_wgmma" : "gemm_f16";
        cuda.allowSharedMemory(kernel, wgmma ? GEMM_WGMMA_SHARED_BYTES : GEMM_SHARED_BYTES);
        if (wgmma) wgmmaSlots = cuda.residentBlocks(kernel, 256, GEMM_WGMMA_SHARED_BYTES);
        return wgmma;
    }

    /** Bytes of the split-K partial sums: up to two waves of 128x128 fp32 tiles (see {@link #kSplits}). */
    long splitKBytes() {
        return 2L * wgmmaSlots * GEMM_TILE * GEMM_TILE * 4;
    }

    /** Where the Hopper GEMM may keep split-K partial sums ({@link #splitKBytes} of device memory), 0: never split. */
    void splitKWorkspace(long address) {
        splitKWorkspace = address;
    }

    /**
     * Into how many parts the Hopper GEMM splits K. A 512-token prompt's out_proj and fc2 (N = hidden) give 128-160
     * tiles for 264 block slots on an H100/H200, one part-empty wave; split in s parts the tiles take ceil(s *
     * tiles / slots) waves of 1/s the work. Split only where that saves a fifth, each part keeps at least 4 K tiles,
     * and the partial sums fit the workspace (two waves of tiles).
     */
    static int kSplits(int tiles, int kTiles, int slots) {
        int best = 1;
        double bestCost = Math.ceil((double) tiles / slots);
        for (int s = 2; s <= 4 && (long) tiles * s <= 2L * slots && kTiles / s >= 4; s++) {
            double cost = Math.ceil((double) tiles * s / slots) / s;
            if (cost < 0.8 * bestCost) {
                best = s;
                bestCost = cost;
            }
        }
        return best;
    }

    private static int blocks(long n, int per) {
        return (int) ((n + per - 1) / per);
    }

    void embedF32(int tokens, long tokenIds, long positions, long tokenTable, long positionTable, long x, int width) {
        cuda.launch("embed_f32", tokens, 1, 1, 256, 0, tokenIds, positions, tokenTable, positionTable, x, width);
    }

    void embedF16(int tokens, long tokenIds, long tokenTable, long out, int width) {
        cuda.launch("embed_f16", tokens, 1, 1, 256, 0, tokenIds, tokenTable, out, width);
    }

    void addPositions(int tokens, long x, long positions, long positionTable, int width) {
        cuda.launch("add_positions", tokens, 1, 1, 256, 0, x, positions, positionTable, width);
    }

    /** LayerNorm of fp32 rows into fp32 (in place allowed) or fp16. */
    void layerNorm(int rows, long x, long out, boolean outF16, long gamma, long beta, int width) {
        cuda.launch(outF16 ? "layer_norm_f16" : "layer_norm_f32", rows, 1, 1, 256, 0, x, out, gamma, beta, width);
    }

    void toHalf(long n, long x, long out) {
        cuda.launch("convert_f32_f16", Math.min(blocks(n, 256), 4096), 1, 1, 256, 0, x, out, n);
    }

    void gatherRows(int rows, long x, long index, long out, int width) {
        cuda.launch("gather_rows_f32", rows, 1, 1, 256, 0, x, index, out, width);
    }

    /**
     * out = epilogue(input · W^T) for M tokens, W [N][K] fp16 (rows gathered through rowIndex when not 0). Small M
     * runs the GEMV, which reads fp32 or fp16 input and may apply a LayerNorm (gamma/beta) to it on the way; larger M
     * runs the tensor-core GEMM, which needs fp16 input already normalised.
     */
    void linear(int m, int n, int k, long input, boolean inputF32, long weight, long rowIndex,
                boolean layerNorm, long lnGamma, long lnBeta, Epilogue epilogue) {
        linear(m, n, k, input, k, inputF32, weight, rowIndex, 0, layerNorm, lnGamma, lnBeta, epilogue);
    }

    /**
     * As above, with input rows {@code ldx} elements apart, and for the GEMV (m <= GEMV_MAX_TOKENS) the number of
     * rows read from the device at {@code nCount} (0: n), so that a graph captured once serves any selection; n is
     * then the most rows there can be (it sizes the grid).
     */
    void linear(int m, int n, int k, long input, int ldx, boolean inputF32, long weight, long rowIndex, long nCount,
                boolean layerNorm, long lnGamma, long lnBeta, Epilogue epilogue) {
        if (k % 8 != 0 || ldx % 8 != 0) {
            throw new IllegalArgumentException("linear layer width " + k + " or input stride " + ldx
                    + " is not a multiple of 8");
        }
        if (m > FUSED_LAYER_NORM_TOKENS && m <= GEMV_MAX_TOKENS && !inputF32 && !layerNorm && k % 32 == 0) {
            cuda.launchAs("gemv_mma N=" + n + " K=" + k, "gemv_mma", blocks(n, 16), 1, 1, 256, 0,
                    input, ldx, weight, rowIndex, nCount, m, n, k, epilogue.bytes());
        } else if (m <= GEMV_MAX_TOKENS) {
            int i = 0;
            while (GEMV_TILES[i] < m) i++;
            boolean shortRows = !inputF32 && m <= 2 && k <= SHORT_ROWS;
            int tile = GEMV_TILES[i], rows = GEMV_WARPS * (shortRows ? 4 : GEMV_ROWS_PER_WARP[i]);
            int step = 256 * (shortRows ? 2 : 4);  // columns a warp reads per step (decoder.cu's 256*U)
            int limit = GEMV_SHARED_BYTES / 2 / tile;
            int chunk = k <= limit ? k : limit / step * step;
            String name = "gemv_" + (inputF32 ? "f32" : "f16") + "_m" + tile + (shortRows ? "_short" : "");
            int shared = tile * chunk * 2;
            // When all of K fits in shared memory the kernel loops over row groups: launch at most the blocks that
            // run at once, so inputs are staged and normalised once per block rather than once per 8 or 16 rows, and
            // give every block the same number of groups: 640 groups on 528 blocks would leave a second round in
            // which 112 blocks alone cannot keep enough loads in flight (13b's fc2: 64 -> 60 us, out_proj 20 -> 19).
            int groups = blocks(n, rows), grid = groups;
            if (chunk >= k) {
                int rounds = blocks(groups, cuda.residentBlocks(name, GEMV_WARPS * 32, shared));
                grid = blocks(groups, rounds);
            }
            cuda.launchAs(name + " N=" + n + " K=" + k + (layerNorm ? " +LN" : ""), name, grid,
                    blocks(m, tile), 1, GEMV_WARPS * 32, shared, input, ldx, weight, rowIndex, nCount, m, n, k, chunk,
                    lnGamma, lnBeta, layerNorm ? 1 : 0, epilogue.bytes());
        } else {
            if (inputF32 || layerNorm) throw new IllegalStateException("the GEMM takes normalised fp16 input");
            if (ldx != k || nCount != 0) throw new IllegalStateException("the GEMM takes dense rows and all of N");
            // M tiles first, so that the blocks sharing a W tile run together (gemm.cuh)
            int mTiles = blocks(m, GEMM_TILE), nTiles = blocks(n, GEMM_TILE);
            if (!wgmma) {
                cuda.launchAs("gemm_f16 N=" + n + " K=" + k, "gemm_f16", mTiles, nTiles, 1, 256, GEMM_SHARED_BYTES,
                        input, weight, rowIndex, m, n, k, epilogue.bytes());
                return;
            }
            int splits = splitKWorkspace == 0 ? 1 : kSplits(mTiles * nTiles, blocks(k, 64), wgmmaSlots);
            long partials = splits > 1 ? splitKWorkspace : 0;
            cuda.launchAs("gemm_f16_wgmma N=" + n + " K=" + k + (splits > 1 ? " split " + splits : ""),
                    "gemm_f16_wgmma", mTiles, nTiles, splits, 256, GEMM_WGMMA_SHARED_BYTES, input, weight, rowIndex,
                    m, n, k, epilogue.bytes(), partials);
            if (splits > 1) {
                cuda.launchAs("gemm_splitk_reduce N=" + n, "gemm_splitk_reduce", Math.min(blocks((long) m * n, 1024),
                        4 * wgmmaSlots), 1, 1, 256, 0, partials, splits, m, n, epilogue.bytes());
            }
        }
    }

    /** The most parts the decode attention splits a context into (sizes the engine's partial-output buffers). */
    static final int MAX_ATTENTION_SPLITS = 32;

    /**
     * Parts to split each (token, head)'s context into: as many as keep every block of the launch resident at once
     * (one wave), since one sequence's few heads alone would leave most of the GPU idle while their blocks wait on
     * memory, and a second wave would double the kernel's latency. {@code kernel}: {@link #attentionKernel} of the
     * model's head width.
     */
    int attentionSplits(String kernel, int tokens, int heads) {
        int resident = cuda.residentBlocks(kernel, ATTENTION_THREADS, 0);
        return Math.clamp(resident / ((long) tokens * heads), 1, MAX_ATTENTION_SPLITS);
    }

    /** The decode attention kernel for a head width: 16-byte rows where it divides by 8, and lanes enough a row. */
    static String attentionKernel(int headDim) {
        int vec = headDim % 8 == 0 ? 8 : 2;
        int lanes = 1;
        while (lanes * vec < headDim) lanes *= 2;
        if (lanes > 32) {
            throw new IllegalArgumentException("the CUDA decode attention takes heads up to " + (32 * vec)
                    + " wide, got " + headDim);
        }
        return "attention_v" + vec + "_r" + lanes;
    }

    /**
     * Attention of each query token over its sequence's cache, split along the sequence into {@code splits} equal
     * parts; the last part to finish merges them (counters: one int per (token, head), zero between launches).
     * {@code kernel}: {@link #attentionKernel} of {@code headDim}, which the caller looks up once per model rather
     * than building the name on every launch.
     */
    void attention(String kernel, int tokens, long q, int ldq, long kCache, long vCache, long blockTables,
                   int maxBlocks, long querySeq, long queryCtx, long out, long partialOut, long partialMaxSum,
                   long counters, long headMask, int heads, int headDim, int splits) {
        float scale = (float) (1.0 / Math.sqrt(headDim));
        cuda.launch(kernel, heads, tokens, splits, ATTENTION_THREADS, 0, q, ldq, kCache, vCache, blockTables,
                maxBlocks, querySeq, queryCtx, out, partialOut, partialMaxSum, counters, headMask, heads, headDim,
                scale);
    }

    /** sparse.cuh's SELECT_MAX_EXPANDED_ITEMS: items that may be expanded to several rows (heads). */
    static final int SELECT_MAX_EXPANDED_ITEMS = 256;
    /** The most items select_union chooses among: 1024 threads holding SELECT_PER_THREAD (32) keys each. */
    static final int SELECT_MAX_ITEMS = 1024 * 32;

    /**
     * Per token, the top k of its score row (topK) or the items scoring at least threshold; the union over the
     * tokens as a row list at index (each item expanded to {@code expand} rows), counts[0] = countBase + those rows,
     * counts[1] = those rows; the union's bit mask to maskOut (0: none). mask and arrivals must be zero (the kernel
     * leaves them so).
     */
    void selectUnion(int tokens, long scores, int ldScores, int n, boolean topK, int k, float threshold, long mask,
                     long arrivals, long index, long counts, long maskOut, int expand, int countBase) {
        if (expand > 1 && n > SELECT_MAX_EXPANDED_ITEMS) {
            throw new IllegalArgumentException("at most " + SELECT_MAX_EXPANDED_ITEMS + " items expand to rows, got " + n);
        }
        if (n > SELECT_MAX_ITEMS) throw new IllegalArgumentException("at most " + SELECT_MAX_ITEMS + " items, got " + n);
        // enough threads to hold the keys (32 each), and at least 256 to expand a few heads into many rows
        int threads = Math.clamp((n + 31) / 32 * 32, 256, 1024);
        cuda.launchAs("select_union N=" + n, "select_union", tokens, 1, 1, threads, 0, scores, ldScores, n,
                topK ? 1 : 0, k, threshold, mask, arrivals, index, counts, maskOut, expand, countBase);
    }

    private static final int[] SPARSE_TILES = {1, 2, 4, 8, 16};
    /** sparse.cuh's DOWN_COLUMNS: the columns one block of sparse_down owns. */
    private static final int DOWN_COLUMNS = 64;

    /** The largest token count the sparse kernels take in one launch. */
    static final int SPARSE_MAX_TOKENS = 16;

    /**
     * x[t] += bias + sum over the rows i < *count of a[t][i] * w[index[i]] (sparse.cuh's sparse_down), a = coef
     * [t][ldCoef] (the sparse MLP's ReLU outputs), or, when coef is 0, gathered[t][index[i]] (the selected heads'
     * attention output, for out_proj). The column slices of h times enough shares of the rows to fill the GPU.
     */
    void sparseDown(int tokens, long coef, int ldCoef, long gathered, long w, long bias, long index, long count, int h,
                    long x) {
        int i = 0;
        while (SPARSE_TILES[i] < tokens) i++;
        String name = "sparse_down_m" + SPARSE_TILES[i];
        int slices = blocks(h, DOWN_COLUMNS);
        int shares = Math.clamp(Math.round(2f * cuda.multiprocessors() / slices), 1, 16);
        cuda.launchAs(name + (coef != 0 ? " MLP" : " out_proj") + " h=" + h, name, slices, shares, 1, 256, 0,
                coef, ldCoef, gathered, w, bias, index, count, tokens, h, x);
    }

    /** out = in transposed, fp16 [rows][cols] -> [cols][rows]. */
    void transpose(long in, long out, int rows, int cols) {
        cuda.launch("transpose_f16", blocks(cols, 32), blocks(rows, 32), 1, 256, 0, in, out, rows, cols);
    }

    static final int PREFILL_TILE = 64;

    /** Whether the tiled prefill attention handles this head width (wmma tiles of 16, shared memory). */
    static boolean tiledAttention(int headDim) {
        return headDim % 16 == 0 && headDim <= 128;
    }

    static int prefillAttentionSharedBytes(int headDim) {
        return 640 * (headDim + 8);  // a Q tile and two stages of K and V tiles, fp16, rows padded by 8 (decoder.cu)
    }

    /** Tiled causal attention over query tiles described by {@code tiles} (see decoder.cu). */
    void prefillAttention(int tileCount, long q, int ldq, long kCache, long vCache, long blockTables, int maxBlocks,
                          long tiles, long out, int heads, int headDim) {
        cuda.launch("attention_prefill", heads, tileCount, 1, 128, prefillAttentionSharedBytes(headDim), q, ldq, kCache,
                vCache, blockTables, maxBlocks, tiles, out, heads, headDim, (float) (1.0 / Math.sqrt(headDim)));
    }

    /**
     * Splits of a row the greedy pick shares out (decoder.cu's next_tokens): 16 at one row, fewer as rows fill the
     * GPU, so that a launch stays near 256 blocks.
     */
    static int samplerSplits(int rows) {
        return Math.max(1, Math.min(16, 256 / rows));
    }

    /** @param keys,counts the splits' merge state: 8 and 4 bytes a row, zero between launches */
    void nextTokens(int rows, long logits, int vocab, long choice, long ids, long keys, long counts) {
        cuda.launch("next_tokens", rows, samplerSplits(rows), 1, 1024, 0, logits, vocab, choice, ids, keys, counts);
    }

    void fillRandom(long out, long n, int seed, float scale) {
        cuda.launch("fill_random_f16", Math.min(blocks(n, 256), 8192), 1, 1, 256, 0, out, n, seed, scale);
    }

    void fill(long out, long n, float value) {
        cuda.launch("fill_f16", Math.min(blocks(n, 256), 8192), 1, 1, 256, 0, out, n, value);
    }

    void copy(long src, long dst, long bytes) {
        long n = bytes / 16;
        cuda.launch("copy16", Math.min(blocks(n, 256), 132 * 16), 1, 1, 256, 0, src, dst, n);
    }
}
