// Kernels of the dense OPT decoder (io.dejavu.engine.cuda.CudaEngine). Weights and most activations are fp16, the
// residual stream is fp32, every dot product accumulates in fp32. Each kernel's comment gives the bytes and FLOPs it
// must move so that a profile can be read against the floor: at batch 1 only the GEMVs' weight reads matter.
//
// Shapes: T tokens in a forward pass, h hidden, f ffn width, V vocabulary, H heads of width d, S sequences.
// KV cache: per layer two pools [block][head][BLOCK_TOKENS][d] fp16; a token's slot = block * BLOCK_TOKENS + offset.
#include "common.cuh"
#include "gemm.cuh"
#include "sparse.cuh"

// ---------------------------------------------------------------------------------------------------------------
// Embedding: x[t] = tokens' row (+ the position's row). Moves T*h*(2+2) bytes in, T*h*4 out; no FLOPs to speak of.
extern "C" __global__ void embed_f32(const int* __restrict__ tokens, const int* __restrict__ positions,
                                     const half* __restrict__ tokenTable, const half* __restrict__ positionTable,
                                     float* __restrict__ x, int width) {
    pdl_wait_and_release();
    int t = blockIdx.x;
    const half* te = tokenTable + (size_t)tokens[t] * width;
    const half* pe = positionTable ? positionTable + (size_t)(positions[t] + 2) * width : nullptr;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = __half2float(te[i]);
        if (pe) v += __half2float(pe[i]);
        x[(size_t)t * width + i] = v;
    }
}

// The token rows alone, fp16, for models whose embedding width differs from hidden (project_in follows).
extern "C" __global__ void embed_f16(const int* __restrict__ tokens, const half* __restrict__ tokenTable,
                                     half* __restrict__ out, int width) {
    pdl_wait_and_release();
    int t = blockIdx.x;
    const half* te = tokenTable + (size_t)tokens[t] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[(size_t)t * width + i] = te[i];
}

extern "C" __global__ void add_positions(float* __restrict__ x, const int* __restrict__ positions,
                                         const half* __restrict__ positionTable, int width) {
    pdl_wait_and_release();
    int t = blockIdx.x;
    const half* pe = positionTable + (size_t)(positions[t] + 2) * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) x[(size_t)t * width + i] += __half2float(pe[i]);
}

// ---------------------------------------------------------------------------------------------------------------
// LayerNorm of fp32 rows (two passes over the row, fp32 statistics): reads T*h*4 (twice, the second from L1),
// writes T*h*4 or T*h*2; ~8 FLOPs per element. gamma/beta null = no affine. In place when out == x (fp32).
template <typename TOut>
__device__ void layer_norm_row(const float* __restrict__ x, TOut* out, const half* gamma, const half* beta,
                               int width) {
    __shared__ float scratch[32];
    int t = blockIdx.x;
    const float* row = x + (size_t)t * width;
    TOut* dst = out + (size_t)t * width;
    // Rows of up to LN_VECTORS * 4 floats a thread (8192 at 256 threads: every OPT up to 30b) are read once into
    // registers with 16-byte loads; wider or odd rows take three passes over memory.
    constexpr int LN_VECTORS = 8;
    if (width % 4 == 0 && width <= LN_VECTORS * 4 * (int)blockDim.x) {
        float4 v[LN_VECTORS];
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < LN_VECTORS; j++) {
            int i = (threadIdx.x + j * blockDim.x) * 4;
            v[j] = i < width ? *reinterpret_cast<const float4*>(row + i) : make_float4(0.f, 0.f, 0.f, 0.f);
            s += (v[j].x + v[j].y) + (v[j].z + v[j].w);
        }
        float mean = block_sum(s, scratch) / width;
        float q = 0.f;
#pragma unroll
        for (int j = 0; j < LN_VECTORS; j++) {
            if ((threadIdx.x + j * blockDim.x) * 4 >= width) break;
            float a = v[j].x - mean, b = v[j].y - mean, c = v[j].z - mean, d = v[j].w - mean;
            q += (a * a + b * b) + (c * c + d * d);
        }
        float rstd = rsqrtf(block_sum(q, scratch) / width + 1e-5f);
#pragma unroll
        for (int j = 0; j < LN_VECTORS; j++) {
            int i = (threadIdx.x + j * blockDim.x) * 4;
            if (i >= width) break;
            float r[4] = {(v[j].x - mean) * rstd, (v[j].y - mean) * rstd, (v[j].z - mean) * rstd, (v[j].w - mean) * rstd};
            if (gamma) {
                float g[4], b[4];
                load4(gamma + i, g);
                load4(beta + i, b);
#pragma unroll
                for (int k = 0; k < 4; k++) r[k] = r[k] * g[k] + b[k];
            }
            if constexpr (sizeof(TOut) == 4) {
                *reinterpret_cast<float4*>(dst + i) = make_float4(r[0], r[1], r[2], r[3]);
            } else {
                half2 lo = __floats2half2_rn(r[0], r[1]), hi = __floats2half2_rn(r[2], r[3]);
                *reinterpret_cast<uint2*>(dst + i) = make_uint2(*reinterpret_cast<unsigned*>(&lo),
                                                                *reinterpret_cast<unsigned*>(&hi));
            }
        }
        return;
    }
    float s = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) s += row[i];
    float mean = block_sum(s, scratch) / width;
    float q = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) { float d = row[i] - mean; q += d * d; }
    float rstd = rsqrtf(block_sum(q, scratch) / width + 1e-5f);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = (row[i] - mean) * rstd;
        if (gamma) v = v * __half2float(gamma[i]) + __half2float(beta[i]);
        if constexpr (sizeof(TOut) == 4) dst[i] = v;
        else dst[i] = __float2half_rn(v);
    }
}

extern "C" __global__ void layer_norm_f32(const float* x, float* out, const half* gamma, const half* beta,
                                          int width) {
    pdl_wait_and_release();
    layer_norm_row<float>(x, out, gamma, beta, width);
}

extern "C" __global__ void layer_norm_f16(const float* __restrict__ x, half* __restrict__ out, const half* gamma,
                                          const half* beta, int width) {
    pdl_wait_and_release();
    layer_norm_row<half>(x, out, gamma, beta, width);
}

extern "C" __global__ void convert_f32_f16(const float* __restrict__ x, half* __restrict__ out, long n) {
    pdl_wait_and_release();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = __float2half_rn(x[i]);
}

// rows[r] = x[index[r]]: picks the tokens whose logits are wanted.
extern "C" __global__ void gather_rows_f32(const float* __restrict__ x, const int* __restrict__ index,
                                           float* __restrict__ out, int width) {
    pdl_wait_and_release();
    int r = blockIdx.x;
    const float* src = x + (size_t)index[r] * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[(size_t)r * width + i] = src[i];
}

// ---------------------------------------------------------------------------------------------------------------
// Decode GEMV / small-batch GEMM: out[m][n] = epilogue(sum_k x[m][k] * W[row(n)][k]) for up to MT tokens per block.
// Moves N*K*2 bytes of weights once (the floor at batch 1: nothing else is comparable), plus M*K*(2|4) of input per
// block from L2; 2*M*N*K FLOPs in fp32 FMA. Each warp owns R output rows; each lane reads 16 bytes of a row per load
// and keeps UNROLL*R loads in flight; the tokens' inputs are staged (optionally LayerNorm'ed, fp32 statistics) as
// fp16 in shared memory, in chunks of kChunk columns. Input rows are ldx apart. rowIndex (null = dense) gathers
// weight rows, and nCount (null = N) reads how many from the device, so that a step captured once in a graph serves
// any selection: the sparse attention's Q rows of the selected heads (Epilogue.outIndex puts each where it belongs).
#define GEMV_WARPS 8
#define LN_QUADS 5  // 4-element pieces of a row each thread keeps in registers: rows up to 5120 wide (opt-13b)

// The GEMV's staging of four consecutive inputs (columns k..k+3 of a row), shared by its one-token fast path and
// its general path so that both normalise with the same operations in the same order.
__device__ __forceinline__ void layer_norm4(float (&v)[4], float mean, float rstd, const half* gamma,
                                            const half* beta, int k) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        v[j] = (v[j] - mean) * rstd;
        if (gamma) v[j] = v[j] * __half2float(gamma[k + j]) + __half2float(beta[k + j]);
    }
}
__device__ __forceinline__ void store_f16x4(half* dst, const float (&v)[4]) {
    half2 lo = __floats2half2_rn(v[0], v[1]), hi = __floats2half2_rn(v[2], v[3]);
    uint2 packed;
    packed.x = *reinterpret_cast<unsigned*>(&lo);
    packed.y = *reinterpret_cast<unsigned*>(&hi);
    *reinterpret_cast<uint2*>(dst) = packed;
}

// Four consecutive inputs as loaded (8 bytes of fp16, 16 of fp32); BATCH: how many of them a thread loads at once
// while staging, as many as fit the one-token GEMV's registers without spilling (two at more tokens).
template <typename TIn> struct Quad;
template <> struct Quad<half> {
    using T = uint2;
    static constexpr int BATCH = 4;
};
template <> struct Quad<float> {
    using T = float4;
    static constexpr int BATCH = 2;
};

template <typename TIn, int MT, int R, int U>
__device__ void gemv(const TIn* __restrict__ x, int ldx, const half* __restrict__ W, const int* __restrict__ rowIndex,
                     const int* __restrict__ nCount, int M, int N, int K, int kChunk, const half* lnGamma,
                     const half* lnBeta, int layerNorm, const Epilogue& e) {
    extern __shared__ __align__(16) unsigned char smemRaw[];
    half* xs = reinterpret_cast<half*>(smemRaw);
    __shared__ float mean[MT], rstd[MT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int m0 = blockIdx.y * MT;
    const int mCount = min(MT, M - m0);

    // Row indices and counts come from the kernel before: wait for it before reading them. Otherwise the first
    // weights are loaded before waiting (see loadWeights below).
    const bool gathered = rowIndex != nullptr || nCount != nullptr;
    if (gathered) {
        pdl_wait_and_release();
        if (nCount) N = *nCount;
        // the grid is sized for the most rows there can be: blocks past this selection's rows have nothing to do
        if (N <= 0 || blockIdx.x * GEMV_WARPS * R >= N) return;
    }
    const int rowBase = (blockIdx.x * GEMV_WARPS + warp) * R;
    const half* wRow[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int n = min(rowBase + r, N - 1);
        wRow[r] = W + (size_t)(rowIndex ? rowIndex[n] : n) * K;
    }
    // Weights stream in steps of 256*U columns per warp, the next step's loads issued before the current step's
    // math; the first step's loads go out before the prologue so that their latency hides it.
    auto loadWeights = [&](uint4 (&w)[U][R], const half* const (&rows)[R], int kb, bool valid) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++) {
                int kk = kb + 256 * u + lane * 8;
                w[u][r] = valid && kk < K ? load_stream(rows[r] + kk) : make_uint4(0, 0, 0, 0);
            }
    };
    uint4 wCur[U][R];
    loadWeights(wCur, wRow, 0, true);
    if (!gathered) pdl_wait_and_release();

    // One or two tokens whose rows fit in registers (K <= 5120 with 256 threads), fp32 as the residual stream is:
    // read each row once and keep it there for both statistics and the normalised staging. The general path below
    // reads it three times from L2, and the whole block waits on each read before its first product. Same additions
    // in the same order as the general path.
    bool staged = false;
    if constexpr (MT <= 2 && sizeof(TIn) == 4) {
        if (layerNorm && kChunk >= K && K <= (int)blockDim.x * 4 * LN_QUADS) {
            __shared__ float red1[GEMV_WARPS];
#pragma unroll 1
            for (int m = 0; m < MT; m++) {  // a row at a time: its pieces stay in registers
                float v[LN_QUADS][4];
                if (m >= mCount) {  // a token past the batch: zeros, as the general path stages them
#pragma unroll
                    for (int q = 0; q < LN_QUADS; q++) {
                        const int k = (threadIdx.x + q * blockDim.x) * 4;
#pragma unroll
                        for (int j = 0; j < 4; j++) v[q][j] = 0.f;
                        if (k < K) store_f16x4(xs + m * kChunk + k, v[q]);
                    }
                    continue;
                }
                float part = 0.f;
#pragma unroll
                for (int q = 0; q < LN_QUADS; q++) {
                    const int k = (threadIdx.x + q * blockDim.x) * 4;
                    if (k < K) {
                        load4(x + (size_t)(m0 + m) * ldx + k, v[q]);
                        part += (v[q][0] + v[q][1]) + (v[q][2] + v[q][3]);
                    }
                }
                part = warp_sum(part);
                if (lane == 0) red1[warp] = part;
                __syncthreads();
                if (threadIdx.x == 0) {
                    float t = 0.f;
                    for (int w = 0; w < GEMV_WARPS; w++) t += red1[w];
                    mean[m] = t / K;
                }
                __syncthreads();
                const float mu = mean[m];
                part = 0.f;
#pragma unroll
                for (int q = 0; q < LN_QUADS; q++) {
                    if ((threadIdx.x + q * blockDim.x) * 4 < K) {
#pragma unroll
                        for (int j = 0; j < 4; j++) { float d = v[q][j] - mu; part += d * d; }
                    }
                }
                part = warp_sum(part);
                if (lane == 0) red1[warp] = part;  // thread 0 read the sums before the barrier above
                __syncthreads();
                if (threadIdx.x == 0) {
                    float t = 0.f;
                    for (int w = 0; w < GEMV_WARPS; w++) t += red1[w];
                    rstd[m] = rsqrtf(t / K + 1e-5f);
                }
                __syncthreads();
                const float rs = rstd[m];
#pragma unroll
                for (int q = 0; q < LN_QUADS; q++) {
                    const int k = (threadIdx.x + q * blockDim.x) * 4;
                    if (k < K) {
                        layer_norm4(v[q], mu, rs, lnGamma, lnBeta, k);
                        store_f16x4(xs + m * kChunk + k, v[q]);
                    }
                }
            }
            staged = true;
        }
    }

    if (layerNorm && !staged) {  // row statistics, two passes, all threads over 4-element pieces
        __shared__ float red[GEMV_WARPS][MT];
        float part[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) {
            part[m] = 0.f;
            if (m < mCount)
                for (int k = threadIdx.x * 4; k < K; k += blockDim.x * 4) {
                    float v[4];
                    load4(x + (size_t)(m0 + m) * ldx + k, v);
                    part[m] += (v[0] + v[1]) + (v[2] + v[3]);
                }
            part[m] = warp_sum(part[m]);
            if (lane == 0) red[warp][m] = part[m];
        }
        __syncthreads();
        if (threadIdx.x < MT) {
            float t = 0.f;
            for (int w = 0; w < GEMV_WARPS; w++) t += red[w][threadIdx.x];
            mean[threadIdx.x] = t / K;
        }
        __syncthreads();
#pragma unroll
        for (int m = 0; m < MT; m++) {
            part[m] = 0.f;
            if (m < mCount)
                for (int k = threadIdx.x * 4; k < K; k += blockDim.x * 4) {
                    float v[4];
                    load4(x + (size_t)(m0 + m) * ldx + k, v);
#pragma unroll
                    for (int j = 0; j < 4; j++) { float d = v[j] - mean[m]; part[m] += d * d; }
                }
            part[m] = warp_sum(part[m]);
            if (lane == 0) red[warp][m] = part[m];
        }
        __syncthreads();
        if (threadIdx.x < MT) {
            float t = 0.f;
            for (int w = 0; w < GEMV_WARPS; w++) t += red[w][threadIdx.x];
            rstd[threadIdx.x] = rsqrtf(t / K + 1e-5f);
        }
        __syncthreads();
    }

    // Inputs [k0, k0 + kLen) of the block's tokens into xs, LayerNorm'ed. Each thread issues a batch of loads
    // before its first store: one at a time, staging fc2's 16,384 inputs took a chain of L2 round trips while the
    // weight stream waited.
    auto stage = [&](int k0, int kLen) {
        const int quads = kLen >> 2, total = MT * quads;
        using Raw = typename Quad<TIn>::T;
        constexpr int STAGE_BATCH = MT == 1 ? Quad<TIn>::BATCH : 2;
        for (int i0 = threadIdx.x; i0 < total; i0 += STAGE_BATCH * blockDim.x) {
            Raw raw[STAGE_BATCH];
#pragma unroll
            for (int b = 0; b < STAGE_BATCH; b++) {
                const int i = i0 + b * blockDim.x, m = i / quads, k = (i - m * quads) * 4;
                raw[b] = i < total && m < mCount ? *reinterpret_cast<const Raw*>(x + (size_t)(m0 + m) * ldx + k0 + k)
                                                 : Raw{};
            }
#pragma unroll
            for (int b = 0; b < STAGE_BATCH; b++) {
                const int i = i0 + b * blockDim.x, m = i / quads, k = (i - m * quads) * 4;
                if (i >= total) break;
                float v[4];
                to_floats(raw[b], v);
                if (layerNorm && m < mCount) layer_norm4(v, mean[m], rstd[m], lnGamma, lnBeta, k0 + k);
                store_f16x4(xs + m * kChunk + k, v);
            }
        }
    };
    auto multiply = [&](float (&acc)[R][MT], const uint4 (&w)[U][R], int kb, int k0, int kEnd) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int kk = kb + 256 * u + lane * 8;
            if (kk < kEnd) {
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    uint4 xv = *reinterpret_cast<const uint4*>(xs + m * kChunk + kk - k0);
#pragma unroll
                    for (int r = 0; r < R; r++) acc[r][m] += dot8(w[u][r], xv);
                }
            }
        }
    };
    auto store = [&](float (&acc)[R][MT], int base) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            int n = base + r;
#pragma unroll
            for (int m = 0; m < MT; m++) {
                float v = warp_sum(acc[r][m]);
                if (lane == (m & 31) && n < N && m < mCount) epilogue_store(e, m0 + m, n, v);
            }
        }
    };

    if (kChunk >= K) {
        // All of K fits in shared memory: stage (and normalise) the inputs once, then stream row groups
        // blockIdx.x, +gridDim.x, ... (the host sizes the grid to the blocks that fit at once), loading the next
        // group's first weights while the current group finishes.
        if (!staged) stage(0, K);
        __syncthreads();
        const int groups = (N + GEMV_WARPS * R - 1) / (GEMV_WARPS * R);
        int base = rowBase;
        for (int g = blockIdx.x; g < groups; g += gridDim.x) {
            const int gn = g + gridDim.x;
            const half* nextRow[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                int n = min((min(gn, groups - 1) * GEMV_WARPS + warp) * R + r, N - 1);
                nextRow[r] = W + (size_t)(rowIndex ? rowIndex[n] : n) * K;
            }
            float acc[R][MT];
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int m = 0; m < MT; m++) acc[r][m] = 0.f;
            for (int kb = 0; kb < K; kb += 256 * U) {
                uint4 wNext[U][R];
                if (kb + 256 * U >= K) loadWeights(wNext, nextRow, 0, gn < groups);
                else loadWeights(wNext, wRow, kb + 256 * U, true);
                multiply(acc, wCur, kb, 0, K);
#pragma unroll
                for (int u = 0; u < U; u++)
#pragma unroll
                    for (int r = 0; r < R; r++) wCur[u][r] = wNext[u][r];
            }
            store(acc, base);
#pragma unroll
            for (int r = 0; r < R; r++) wRow[r] = nextRow[r];
            base = (gn * GEMV_WARPS + warp) * R;
        }
        return;
    }

    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int m = 0; m < MT; m++) acc[r][m] = 0.f;

    for (int k0 = 0; k0 < K; k0 += kChunk) {
        const int kLen = min(kChunk, K - k0);
        stage(k0, kLen);
        __syncthreads();
        for (int kb = k0; kb < k0 + kLen; kb += 256 * U) {  // kChunk is a multiple of 256*U (host)
            uint4 wNext[U][R];
            loadWeights(wNext, wRow, kb + 256 * U, true);
            multiply(acc, wCur, kb, k0, k0 + kLen);
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < R; r++) wCur[u][r] = wNext[u][r];
        }
        __syncthreads();
    }
    store(acc, rowBase);
}

#define GEMV_KERNEL(NAME, TIN, MT, R, U, MIN_BLOCKS)                                                                \
    extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32, MIN_BLOCKS)                                      \
    NAME(const TIN* x, int ldx, const half* W, const int* rowIndex, const int* nCount, int M, int N, int K,          \
         int kChunk, const half* lnGamma, const half* lnBeta, int layerNorm, Epilogue e) {                         \
        gemv<TIN, MT, R, U>(x, ldx, W, rowIndex, nCount, M, N, K, kChunk, lnGamma, lnBeta, layerNorm, e);          \
    }
// Unroll U = 4 (four 16-byte loads in flight per lane, the next four issued before the math); at one or two tokens
// registers capped so that 4 blocks (32 warps) share a multiprocessor.
GEMV_KERNEL(gemv_f32_m1, float, 1, 1, 4, 4)
GEMV_KERNEL(gemv_f32_m2, float, 2, 1, 4, 4)
GEMV_KERNEL(gemv_f32_m4, float, 4, 2, 4, 1)
GEMV_KERNEL(gemv_f32_m8, float, 8, 2, 4, 1)
GEMV_KERNEL(gemv_f32_m16, float, 16, 2, 4, 1)
GEMV_KERNEL(gemv_f16_m1, half, 1, 1, 4, 4)
GEMV_KERNEL(gemv_f16_m2, half, 2, 1, 4, 4)
GEMV_KERNEL(gemv_f16_m4, half, 4, 2, 4, 1)
GEMV_KERNEL(gemv_f16_m8, half, 8, 2, 4, 1)
GEMV_KERNEL(gemv_f16_m16, half, 16, 2, 4, 1)
// Short rows (K <= 512: the predictors' second layer, K = rank): four rows a warp, so that each lane still keeps
// eight 16-byte loads in flight.
GEMV_KERNEL(gemv_f16_m1_short, half, 1, 4, 2, 2)
GEMV_KERNEL(gemv_f16_m2_short, half, 2, 4, 2, 2)

// Small-batch GEMM on tensor cores for 3..16 tokens (batched decode): the same weight stream as the GEMV, but the
// products run as mma.m16n8k16 (fp16 in, fp32 accumulate), so 16 tokens cost little more than one. A block owns 16
// weight rows, each of its 8 warps an eighth of K; each lane loads 16 contiguous bytes of two rows and of the tokens' inputs per 32
// columns. Because a dot product may sum its terms in any order, the columns inside each 32-wide step are permuted
// so that these contiguous loads are already the mma's register fragments (A and B permuted alike). Moves N*K*2
// bytes of weights, 2*M*N*K FLOPs. K % 32 == 0; input fp16 [M][K].
__device__ __forceinline__ void mma16816(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                         unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

#define MMAV_STEPS 4
#define MMAV_SPLITS 8
// At least one block a multiprocessor, not more: with no minimum, ptxas chose 74 registers for three blocks and
// interleaved each warp's loads with its products, so few loads were in flight; with this bound it issues all
// 4 x 4 loads of a step first (116 registers, two blocks). opt-6.7b at 16 tokens: 7.03 -> 5.35 ms a decode step.
extern "C" __global__ void __launch_bounds__(256, 1)
gemv_mma(const half* __restrict__ x, int ldx, const half* __restrict__ W, const int* __restrict__ rowIndex,
         const int* __restrict__ nCount, int M, int N, int K, Epilogue e) {
    pdl_wait_and_release();
    if (nCount) N = *nCount;
    if (blockIdx.x * 16 >= N) return;
    __shared__ float red[MMAV_SPLITS - 1][32][8];
    const int split = threadIdx.x >> 5, lane = threadIdx.x & 31;  // each warp: one K-split of the block's 16 rows
    const int group = lane >> 2, tig = lane & 3;
    const int n0 = blockIdx.x * 16;
    const int r0 = min(n0 + group, N - 1), r1 = min(n0 + group + 8, N - 1);
    const half* w0 = W + (size_t)(rowIndex ? rowIndex[r0] : r0) * K + tig * 8;
    const half* w1 = W + (size_t)(rowIndex ? rowIndex[r1] : r1) * K + tig * 8;
    const bool tok0 = group < M, tok1 = group + 8 < M;
    const half* x0 = x + (size_t)(tok0 ? group : 0) * ldx + tig * 8;
    const half* x1 = x + (size_t)(tok1 ? group + 8 : 0) * ldx + tig * 8;
    const int steps = K / 32, per = (steps + MMAV_SPLITS - 1) / MMAV_SPLITS;
    const int s0 = split * per, s1 = min(steps, s0 + per);
    float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    const uint4 zero = make_uint4(0, 0, 0, 0);
    for (int s = s0; s < s1; s += MMAV_STEPS) {
        uint4 a[MMAV_STEPS][2], b[MMAV_STEPS][2];
#pragma unroll
        for (int i = 0; i < MMAV_STEPS; i++) {
            bool ok = s + i < s1;
            int k = (s + i) * 32;
            a[i][0] = ok ? load_stream(w0 + k) : zero;
            a[i][1] = ok ? load_stream(w1 + k) : zero;
            b[i][0] = ok && tok0 ? __ldg(reinterpret_cast<const uint4*>(x0 + k)) : zero;
            b[i][1] = ok && tok1 ? __ldg(reinterpret_cast<const uint4*>(x1 + k)) : zero;
        }
#pragma unroll
        for (int i = 0; i < MMAV_STEPS; i++) {
#pragma unroll
            for (int g = 0; g < 2; g++) {
                mma16816(acc[g], a[i][0].x, a[i][1].x, a[i][0].y, a[i][1].y, b[i][g].x, b[i][g].y);
                mma16816(acc[g], a[i][0].z, a[i][1].z, a[i][0].w, a[i][1].w, b[i][g].z, b[i][g].w);
            }
        }
    }
    if (split > 0) {
#pragma unroll
        for (int g = 0; g < 2; g++)
#pragma unroll
            for (int j = 0; j < 4; j++) red[split - 1][lane][g * 4 + j] = acc[g][j];
    }
    __syncthreads();
    if (split == 0) {
#pragma unroll
        for (int g = 0; g < 2; g++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float v = acc[g][j];
                for (int o = 0; o < MMAV_SPLITS - 1; o++) v += red[o][lane][g * 4 + j];
                int row = n0 + group + (j >= 2 ? 8 : 0);
                int token = g * 8 + tig * 2 + (j & 1);
                if (row < N && token < M) epilogue_store(e, token, row, v);
            }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Attention of T query tokens over the paged KV cache (decode, and passes the tiled prefill attention does not take):
// query t of sequence querySeq[t] attends to the first queryCtx[t] cached positions (causal: its own position + 1).
// grid (H, T, splits): split s takes the s-th of `splits` equal runs of the context, so that a graph captured once
// spreads any context over the same blocks. Reads ctx*d*2*2 bytes of K/V per (query, head), ~4*ctx*d FLOPs.
// Flash-decoding in registers: RL lanes share one cached row (VEC halfs each), so a warp takes 32/RL positions at a
// time, coalesced; every lane issues the K *and* V loads of DECODE_ITER positions before any arithmetic (V does not
// depend on the scores), so a block's positions cost one memory round trip rather than a round trip for the scores
// and another for the weighted sum. Each row group keeps a running (max, sum, output) - the online softmax - and
// the groups and warps combine theirs at the end. With splits > 1 each split writes its unnormalised output and
// (max, sum), and the last split to finish merges them (merge_splits); else the output directly. OPT scales q by
// d^-0.5 after the bias. headMask (null = every head): the heads a sparse step computes; the others' blocks leave at
// once and their output is not written (the sparse out_proj reads only the selected heads').
#define DECODE_WARPS 4
#define DECODE_ITER 8

template <int VEC> struct Vec;
template <> struct Vec<8> { using T = uint4; };
template <> struct Vec<2> { using T = unsigned; };

// The last split of a (query, head) to finish merges all splits' partial outputs (no second kernel): each split
// publishes its partials, then counts itself in; the one that completes the count merges and resets the counter.
// The merge reads every split's (max, sum), one thread each, and every split's partial output in one unrolled loop,
// so that its loads go out together: read one split after another, they were a dependent chain of L2 round trips
// (splits <= 32 = DecoderKernels.MAX_ATTENTION_SPLITS).
#define MAX_SPLITS 32
__device__ void merge_splits(const float* partialOut, const float* partialMaxSum, int* counters, half* out, int t,
                             int head, int heads, int headDim, int splits) {
    __shared__ bool last;
    __shared__ float weight[MAX_SPLITS], total;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* counter = counters + (size_t)t * heads + head;
        last = atomicAdd(counter, 1) == splits - 1;
        if (last) *counter = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const size_t base = ((size_t)t * heads + head) * splits;
    if (threadIdx.x < 32) {
        const bool mine = threadIdx.x < splits;
        const float m = mine ? __ldcg(partialMaxSum + 2 * (base + threadIdx.x)) : -INFINITY;
        const float l = mine ? __ldcg(partialMaxSum + 2 * (base + threadIdx.x) + 1) : 0.f;
        const float mx = warp_max(m);  // some split has a position: the context is not empty
        const float w = m == -INFINITY ? 0.f : __expf(m - mx);
        const float sum = warp_sum(w * l);
        weight[threadIdx.x] = w;
        if (threadIdx.x == 0) total = sum;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
        float part[MAX_SPLITS];
#pragma unroll
        for (int s = 0; s < MAX_SPLITS; s++) part[s] = s < splits ? __ldcg(partialOut + (base + s) * headDim + d) : 0.f;
        float o = 0.f;
#pragma unroll
        for (int s = 0; s < MAX_SPLITS; s++) o += weight[s] * part[s];
        out[(size_t)t * heads * headDim + head * headDim + d] = __float2half_rn(o / total);
    }
}

// Folds one online-softmax state (running max m2, sum l2, unnormalised output o2) into another (m, l, o).
template <int VEC>
__device__ __forceinline__ void softmax_fold(float& m, float& l, float (&o)[VEC], float m2, float l2,
                                             const float (&o2)[VEC]) {
    const float mx = fmaxf(m, m2);
    if (mx == -INFINITY) return;  // neither has seen a position
    const float a = m == -INFINITY ? 0.f : __expf(m - mx), b = m2 == -INFINITY ? 0.f : __expf(m2 - mx);
    l = l * a + l2 * b;
#pragma unroll
    for (int j = 0; j < VEC; j++) o[j] = o[j] * a + o2[j] * b;
    m = mx;
}

template <int VEC, int RL>
__device__ void attention_impl(const half* __restrict__ q, int ldq, const half* __restrict__ kCache,
                               const half* __restrict__ vCache, const int* __restrict__ blockTables, int maxBlocks,
                               const int* __restrict__ querySeq, const int* __restrict__ queryCtx,
                               half* __restrict__ out, float* __restrict__ partialOut,
                               float* __restrict__ partialMaxSum, int* __restrict__ counters,
                               const unsigned* __restrict__ headMask, int heads, int headDim, float scale) {
    pdl_wait_and_release();
    if (headMask && !((headMask[blockIdx.x >> 5] >> (blockIdx.x & 31)) & 1u)) return;
    using V = typename Vec<VEC>::T;
    constexpr int GROUPS = 32 / RL;                     // positions a warp takes at once
    constexpr int STRIDE = DECODE_WARPS * GROUPS;       // positions the block takes at once
    __shared__ float warpMax[DECODE_WARPS], warpSum[DECODE_WARPS];
    __shared__ float warpOut[DECODE_WARPS][RL * VEC];
    const int head = blockIdx.x, t = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int group = lane / RL, chunk = lane % RL;
    const bool inHead = chunk * VEC < headDim;
    const int ctx = queryCtx[t];
    const int per = (ctx + splits - 1) / splits;
    const int start = split * per, end = min(ctx, start + per);
    const size_t partialAt = ((size_t)t * heads + head) * splits + split;
    if (start >= end) {  // only with splits > 1: an empty split, which still counts towards the merge
        if (threadIdx.x == 0) { partialMaxSum[2 * partialAt] = -INFINITY; partialMaxSum[2 * partialAt + 1] = 0.f; }
        merge_splits(partialOut, partialMaxSum, counters, out, t, head, heads, headDim, splits);
        return;
    }
    const int* table = blockTables + (size_t)querySeq[t] * maxBlocks;
    float qv[VEC];
    {
        float raw[VEC];
        if (inHead) to_floats(*reinterpret_cast<const V*>(q + (size_t)t * ldq + head * headDim + chunk * VEC), raw);
#pragma unroll
        for (int j = 0; j < VEC; j++) qv[j] = inHead ? raw[j] * scale : 0.f;
    }
    float m = -INFINITY, l = 0.f, o[VEC];
#pragma unroll
    for (int j = 0; j < VEC; j++) o[j] = 0.f;
    // warp-uniform trip count: the row groups of a warp shuffle together, so they loop together
    for (int p0 = start + warp * GROUPS; p0 < end; p0 += STRIDE * DECODE_ITER) {
        V kr[DECODE_ITER], vr[DECODE_ITER];
#pragma unroll
        for (int i = 0; i < DECODE_ITER; i++) {
            const int p = p0 + i * STRIDE + group;
            if (p < end && inHead) {
                const size_t at = kv_offset(table[p / BLOCK_TOKENS], p % BLOCK_TOKENS, head, heads, headDim)
                        + chunk * VEC;
                kr[i] = __ldg(reinterpret_cast<const V*>(kCache + at));
                vr[i] = __ldg(reinterpret_cast<const V*>(vCache + at));
            } else {
                kr[i] = V{};
                vr[i] = V{};
            }
        }
        float s[DECODE_ITER];
        float mNew = m;
#pragma unroll
        for (int i = 0; i < DECODE_ITER; i++) {
            float kv[VEC];
            to_floats(kr[i], kv);
            float d = 0.f;
#pragma unroll
            for (int j = 0; j < VEC; j++) d = fmaf(qv[j], kv[j], d);
#pragma unroll
            for (int x = RL / 2; x > 0; x >>= 1) d += __shfl_xor_sync(0xffffffffu, d, x);
            s[i] = p0 + i * STRIDE + group < end ? d : -INFINITY;
            mNew = fmaxf(mNew, s[i]);
        }
        const bool any = mNew != -INFINITY;  // else this row group has no position left (then m is -inf too)
        const float rescale = m == -INFINITY ? 0.f : __expf(m - mNew);
        l *= rescale;
#pragma unroll
        for (int j = 0; j < VEC; j++) o[j] *= rescale;
#pragma unroll
        for (int i = 0; i < DECODE_ITER; i++) {
            const float w = any ? __expf(s[i] - mNew) : 0.f;  // 0 for an absent position
            float vv[VEC];
            to_floats(vr[i], vv);
            l += w;
#pragma unroll
            for (int j = 0; j < VEC; j++) o[j] = fmaf(w, vv[j], o[j]);
        }
        m = mNew;
    }
    // the warp's row groups, then the block's warps
#pragma unroll
    for (int x = RL; x < 32; x <<= 1) {
        float o2[VEC];
#pragma unroll
        for (int j = 0; j < VEC; j++) o2[j] = __shfl_xor_sync(0xffffffffu, o[j], x);
        const float m2 = __shfl_xor_sync(0xffffffffu, m, x), l2 = __shfl_xor_sync(0xffffffffu, l, x);
        softmax_fold<VEC>(m, l, o, m2, l2, o2);
    }
    if (group == 0) {
#pragma unroll
        for (int j = 0; j < VEC; j++) warpOut[warp][chunk * VEC + j] = o[j];
        if (chunk == 0) { warpMax[warp] = m; warpSum[warp] = l; }
    }
    __syncthreads();
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < DECODE_WARPS; w++) mx = fmaxf(mx, warpMax[w]);
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < DECODE_WARPS; w++) sum += warpMax[w] == -INFINITY ? 0.f : warpSum[w] * __expf(warpMax[w] - mx);
    for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
        float r = 0.f;
#pragma unroll
        for (int w = 0; w < DECODE_WARPS; w++)
            if (warpMax[w] != -INFINITY) r += warpOut[w][d] * __expf(warpMax[w] - mx);
        if (splits == 1) out[(size_t)t * heads * headDim + head * headDim + d] = __float2half_rn(r / sum);
        else partialOut[partialAt * headDim + d] = r;
    }
    if (splits > 1) {
        if (threadIdx.x == 0) { partialMaxSum[2 * partialAt] = mx; partialMaxSum[2 * partialAt + 1] = sum; }
        merge_splits(partialOut, partialMaxSum, counters, out, t, head, heads, headDim, splits);
    }
}

// One kernel per (VEC, lanes a row): attention_v8_r16 takes head widths 65..128, attention_v2_r8 9..16 not
// divisible by 8, and so on (DecoderKernels.attentionKernel).
#define ATTENTION_KERNEL(VEC, RL)                                                                                  \
    extern "C" __global__ void __launch_bounds__(DECODE_WARPS * 32)                                                \
    attention_v##VEC##_r##RL(const half* q, int ldq, const half* kCache, const half* vCache,                       \
                             const int* blockTables, int maxBlocks, const int* querySeq, const int* queryCtx,      \
                             half* out, float* partialOut, float* partialMaxSum, int* counters,                    \
                             const unsigned* headMask, int heads, int headDim, float scale) {                      \
        attention_impl<VEC, RL>(q, ldq, kCache, vCache, blockTables, maxBlocks, querySeq, queryCtx, out,           \
                                partialOut, partialMaxSum, counters, headMask, heads, headDim, scale);             \
    }
ATTENTION_KERNEL(8, 1)
ATTENTION_KERNEL(8, 2)
ATTENTION_KERNEL(8, 4)
ATTENTION_KERNEL(8, 8)
ATTENTION_KERNEL(8, 16)
ATTENTION_KERNEL(8, 32)
ATTENTION_KERNEL(2, 1)
ATTENTION_KERNEL(2, 2)
ATTENTION_KERNEL(2, 4)
ATTENTION_KERNEL(2, 8)
ATTENTION_KERNEL(2, 16)
ATTENTION_KERNEL(2, 32)

// Prefill attention, tiled (flash-attention style, mma.sync m16n8k16, fp32 softmax and accumulators in registers):
// one block per (head, tile of up to 64 consecutive query tokens of one sequence), four warps of 16 query rows. K/V
// tiles of 64 positions go through shared memory once per query tile instead of once per query, double-buffered by
// cp.async so the next tile loads while this one is multiplied. S = Q K^T and the running softmax stay in registers
// (the S accumulator's layout is the A operand's of P V, so P never leaves them), and so does O, rescaled per row as
// the maximum grows. tiles[4*i] = {first token, tokens, sequence, position of the first}. Reads ctx*d*2*2 bytes of
// K/V per (query tile, head); 4*d FLOPs per (query, key) pair. headDim % 16 == 0, <= 128. Shared memory: Q and two
// stages of K and V, rows padded by 8 halfs (row strides of 16 modulo 128 bytes keep ldmatrix free of conflicts).
#define FA_TILE 64
#define FA_MAX_D 128

__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const half* smem, bool trans) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    if (trans)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}

__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
    half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

extern "C" __global__ void __launch_bounds__(128)
attention_prefill(const half* __restrict__ q, int ldq, const half* __restrict__ kCache, const half* __restrict__ vCache,
                  const int* __restrict__ blockTables, int maxBlocks, const int* __restrict__ tiles,
                  half* __restrict__ out, int heads, int headDim, float scale) {
    pdl_wait_and_release();
    extern __shared__ __align__(128) unsigned char faRaw[];
    const int d = headDim, ld = d + 8, chunks = d / 8, dSteps = d / 16;
    half* Qs = reinterpret_cast<half*>(faRaw);
    half* Ks = Qs + FA_TILE * ld;      // [2][FA_TILE][ld]
    half* Vs = Ks + 2 * FA_TILE * ld;  // [2][FA_TILE][ld]
    const int head = blockIdx.x, tile = blockIdx.y;
    const int first = tiles[4 * tile], count = tiles[4 * tile + 1], seq = tiles[4 * tile + 2], pos0 = tiles[4 * tile + 3];
    const int* table = blockTables + (size_t)seq * maxBlocks;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int keys = pos0 + count;  // the last query sees positions [0, keys)

    for (int i = tid; i < FA_TILE * chunks; i += 128) {
        int r = i / chunks, c = i - r * chunks;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < count) {
            v = *reinterpret_cast<const uint4*>(q + (size_t)(first + r) * ldq + head * d + c * 8);
            half2* h2 = reinterpret_cast<half2*>(&v);
#pragma unroll
            for (int j = 0; j < 4; j++) h2[j] = __float22half2_rn(make_float2(__low2float(h2[j]) * scale, __high2float(h2[j]) * scale));
        }
        *reinterpret_cast<uint4*>(Qs + r * ld + c * 8) = v;
    }
    auto loadKV = [&](int stage, int k0) {
        for (int i = tid; i < FA_TILE * chunks; i += 128) {
            int r = i / chunks, c = i - r * chunks, p = k0 + r;
            bool valid = p < keys;
            size_t at = valid ? kv_offset(table[p / BLOCK_TOKENS], p % BLOCK_TOKENS, head, heads, d) + c * 8 : 0;
            cp_async16(Ks + (stage * FA_TILE + r) * ld + c * 8, kCache + at, valid);
            cp_async16(Vs + (stage * FA_TILE + r) * ld + c * 8, vCache + at, valid);
        }
    };
    const int kTiles = (keys + FA_TILE - 1) / FA_TILE;
    loadKV(0, 0);
    asm volatile("cp.async.commit_group;");
    __syncthreads();  // Q is in shared memory

    unsigned qf[FA_MAX_D / 16][4];
#pragma unroll
    for (int kc = 0; kc < FA_MAX_D / 16; kc++)
        if (kc < dSteps) ldmatrix_x4(qf[kc], Qs + (warp * 16 + (lane & 15)) * ld + kc * 16 + (lane >> 4) * 8, false);
    float o[FA_MAX_D / 8][4];
#pragma unroll
    for (int n = 0; n < FA_MAX_D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float rowMax[2] = {-INFINITY, -INFINITY}, rowSum[2] = {0.f, 0.f};  // rows g and g + 8 of this warp
    const int qpos = pos0 + warp * 16 + g;                               // position of row g (row g + 8: qpos + 8)
    const bool warpLive = warp * 16 < count;
    const int warpLast = pos0 + min(count, warp * 16 + 16) - 1;

    for (int j = 0; j < kTiles; j++) {
        if (j + 1 < kTiles) loadKV((j + 1) & 1, (j + 1) * FA_TILE);
        asm volatile("cp.async.commit_group;");
        asm volatile("cp.async.wait_group 1;");
        __syncthreads();  // tile j is in for every thread
        const int k0 = j * FA_TILE;
        const half* Kt = Ks + (j & 1) * FA_TILE * ld;
        const half* Vt = Vs + (j & 1) * FA_TILE * ld;
        if (warpLive && k0 <= warpLast) {
            float sc[8][4];
#pragma unroll
            for (int n = 0; n < 8; n++) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
            for (int kc = 0; kc < FA_MAX_D / 16; kc++) {
                if (kc >= dSteps) break;
#pragma unroll
                for (int n2 = 0; n2 < 4; n2++) {
                    unsigned r[4];
                    ldmatrix_x4(r, Kt + (n2 * 16 + (lane & 7) + ((lane >> 4) << 3)) * ld + kc * 16 + ((lane >> 3) & 1) * 8,
                                false);
                    mma16816(sc[2 * n2], qf[kc][0], qf[kc][1], qf[kc][2], qf[kc][3], r[0], r[1]);
                    mma16816(sc[2 * n2 + 1], qf[kc][0], qf[kc][1], qf[kc][2], qf[kc][3], r[2], r[3]);
                }
            }
            // causal mask and the running softmax; a row's 64 scores are spread over the 4 lanes of its quad
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    int p = k0 + n * 8 + 2 * t4 + (c & 1), row = c >> 1;
                    if (p > qpos + 8 * row || p >= keys) sc[n][c] = -INFINITY;
                    mx[row] = fmaxf(mx[row], sc[n][c]);
                }
            float alpha[2], mNew[2];
#pragma unroll
            for (int row = 0; row < 2; row++) {
                mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 1));
                mx[row] = fmaxf(mx[row], __shfl_xor_sync(0xffffffffu, mx[row], 2));
                mNew[row] = fmaxf(rowMax[row], mx[row]);
                alpha[row] = mNew[row] == -INFINITY ? 1.f : __expf(rowMax[row] - mNew[row]);
                rowMax[row] = mNew[row];
                rowSum[row] *= alpha[row];
            }
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int c = 0; c < 4; c++) {
                    int row = c >> 1;
                    float e = mNew[row] == -INFINITY ? 0.f : __expf(sc[n][c] - mNew[row]);
                    sc[n][c] = e;
                    rowSum[row] += e;
                }
#pragma unroll
            for (int n = 0; n < FA_MAX_D / 8; n++) {
                o[n][0] *= alpha[0]; o[n][1] *= alpha[0];
                o[n][2] *= alpha[1]; o[n][3] *= alpha[1];
            }
            // O += P V: the scores of keys 16*kc .. 16*kc+15 are the A fragment of one m16n8k16 step
#pragma unroll
            for (int kc = 0; kc < 4; kc++) {
                unsigned a0 = pack_half2(sc[2 * kc][0], sc[2 * kc][1]), a1 = pack_half2(sc[2 * kc][2], sc[2 * kc][3]);
                unsigned a2 = pack_half2(sc[2 * kc + 1][0], sc[2 * kc + 1][1]);
                unsigned a3 = pack_half2(sc[2 * kc + 1][2], sc[2 * kc + 1][3]);
#pragma unroll
                for (int n2 = 0; n2 < FA_MAX_D / 16; n2++) {
                    if (n2 >= dSteps) break;
                    unsigned r[4];
                    ldmatrix_x4(r, Vt + (kc * 16 + (lane & 15)) * ld + n2 * 16 + (lane >> 4) * 8, true);
                    mma16816(o[2 * n2], a0, a1, a2, a3, r[0], r[1]);
                    mma16816(o[2 * n2 + 1], a0, a1, a2, a3, r[2], r[3]);
                }
            }
        }
        __syncthreads();  // every warp is done with stage j & 1 before the next iteration refills it
    }
    asm volatile("cp.async.wait_group 0;");

#pragma unroll
    for (int row = 0; row < 2; row++) {
        rowSum[row] += __shfl_xor_sync(0xffffffffu, rowSum[row], 1);
        rowSum[row] += __shfl_xor_sync(0xffffffffu, rowSum[row], 2);
    }
#pragma unroll
    for (int row = 0; row < 2; row++) {
        int r = warp * 16 + g + 8 * row;
        if (r >= count) continue;
        float inv = 1.f / rowSum[row];
        half* dst = out + (size_t)(first + r) * heads * d + head * d + 2 * t4;
#pragma unroll
        for (int n = 0; n < FA_MAX_D / 8; n++)
            if (n < d / 8)
                *reinterpret_cast<half2*>(dst + n * 8) = __floats2half2_rn(o[n][2 * row] * inv, o[n][2 * row + 1] * inv);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Next token per row of logits [rows][V] on the GPU, so only one int per sequence crosses the bus. choice[r] =
// {temperature, topP, topK (as float), seed low 32 bits as float bits, vocabulary limit as int bits (0 = V)}: ids
// from the limit on are never chosen. temperature 0 = argmax (lowest index on ties). Otherwise: keep the topK largest
// logits (0 = all) and, of those, the smallest set whose probability reaches topP (thresholds found by bisection:
// each step one pass over the row), then draw by Gumbel-max among the kept, which samples exactly the renormalised
// distribution. Reads the row ~70 times from L2 when sampling, once when greedy.
// grid (rows, splits): a greedy row is shared by its splits, each taking the argmax of a run of it and folding it into
// the row's key (value and index packed so that atomicMax keeps the largest value, then the lowest index); the last
// split to finish writes the id and resets the key and the count for the next launch. One block alone reads a row of
// 50,272 logits in ~8 us, mostly latency; 16 take ~3. A sampled row needs the whole row per bisection step: its
// first split does all of it, and the others leave at once.
__device__ __forceinline__ unsigned long long argmax_key(float v, int i) {
    unsigned bits = __float_as_uint(v);
    bits = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);  // orders as the floats do
    return ((unsigned long long)bits << 32) | (0xFFFFFFFFu - (unsigned)i);
}
__device__ __forceinline__ float uniform01(unsigned seed, unsigned i) {
    unsigned h = seed * 0x9E3779B1u ^ (i + 0x7F4A7C15u) * 0x85EBCA77u;
    h ^= h >> 16; h *= 0x7FEB352Du; h ^= h >> 15; h *= 0x846CA68Bu; h ^= h >> 16;
    return ((h >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

extern "C" __global__ void __launch_bounds__(1024)
next_tokens(const float* __restrict__ logits, int V, const float* __restrict__ choice, int* __restrict__ ids,
            unsigned long long* __restrict__ keys, int* __restrict__ counts) {
    pdl_wait_and_release();
    __shared__ float scratch[32];
    __shared__ float bestV[32];
    __shared__ int bestI[32];
    const int r = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int split = blockIdx.y, splits = gridDim.y;
    const float* row = logits + (size_t)r * V;
    const float temperature = choice[5 * r], topP = choice[5 * r + 1];
    const int topK = (int)choice[5 * r + 2];
    const unsigned seed = __float_as_uint(choice[5 * r + 3]);
    const int limit = __float_as_int(choice[5 * r + 4]);
    if (limit > 0 && limit < V) V = limit;  // the row's stride was taken above
    const bool greedy = temperature <= 0.f;
    if (!greedy && split > 0) return;
    // this split's run of a greedy row (whole float4 groups), or the whole row
    const int run = greedy ? ((V + splits - 1) / splits + 3) & ~3 : V;
    const int from = greedy ? min(V, split * run) : 0, to = greedy ? min(V, from + run) : V;

    // Greedy needs no maximum first (block-uniform branch, so the barriers inside are safe).
    float mx = -INFINITY;
    if (!greedy) {
        for (int i = tid; i < V; i += blockDim.x) mx = fmaxf(mx, row[i]);
        mx = block_max(mx, scratch);
    }

    float kThreshold = -INFINITY, pThreshold = 0.f;
    if (!greedy && topK > 0 && topK < V) {
        // count(l >= lo) >= topK holds from the start (lo = the minimum); find the largest such threshold
        float mn = INFINITY;
        for (int i = tid; i < V; i += blockDim.x) mn = fminf(mn, row[i]);
        float lo = -block_max(-mn, scratch), hi = mx;
        for (int it = 0; it < 40; it++) {
            float mid = 0.5f * (lo + hi);
            float c = 0.f;
            for (int i = tid; i < V; i += blockDim.x) c += row[i] >= mid ? 1.f : 0.f;
            if (block_sum(c, scratch) >= topK) lo = mid; else hi = mid;
        }
        kThreshold = lo;
    }
    if (!greedy && topP < 1.f) {
        float z = 0.f;
        for (int i = tid; i < V; i += blockDim.x)
            if (row[i] >= kThreshold) z += __expf((row[i] - mx) / temperature);
        z = block_sum(z, scratch);
        float lo = 0.f, hi = 1.f;  // probabilities relative to the largest (which is 1)
        for (int it = 0; it < 30; it++) {
            float mid = 0.5f * (lo + hi);
            float s = 0.f;
            for (int i = tid; i < V; i += blockDim.x) {
                float p = __expf((row[i] - mx) / temperature);
                if (row[i] >= kThreshold && p >= mid) s += p;
            }
            if (block_sum(s, scratch) >= topP * z) lo = mid; else hi = mid;
        }
        pThreshold = lo;
    }

    float best = -INFINITY;
    int bi = 0x7fffffff;
    // Greedy over rows of whole 16-byte groups: each thread takes four consecutive logits a load.
    const bool vectors = greedy && (to & 3) == 0 && (reinterpret_cast<size_t>(row) & 15) == 0;
    if (vectors) {
        const float4* row4 = reinterpret_cast<const float4*>(row);
        for (int j = from / 4 + tid; j < to / 4; j += blockDim.x) {
            float4 v = row4[j];
            float l[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (l[e] > best || (l[e] == best && 4 * j + e < bi)) { best = l[e]; bi = 4 * j + e; }
        }
    }
    for (int i = vectors ? to : from + tid; i < to; i += blockDim.x) {
        float l = row[i], key;
        if (greedy) key = l;
        else {
            float lp = (l - mx) / temperature;
            if (l < kThreshold || __expf(lp) < pThreshold) continue;
            key = lp - __logf(-__logf(uniform01(seed, i)));
        }
        if (key > best || (key == best && i < bi)) { best = key; bi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
    }
    if (lane == 0) { bestV[warp] = best; bestI[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        int warps = blockDim.x >> 5;
        best = lane < warps ? bestV[lane] : -INFINITY;
        bi = lane < warps ? bestI[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, best, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > best || (ov == best && oi < bi)) { best = ov; bi = oi; }
        }
        if (lane == 0) {
            if (!greedy || splits == 1) {
                ids[r] = bi == 0x7fffffff ? 0 : bi;
            } else {
                if (bi != 0x7fffffff) atomicMax(keys + r, argmax_key(best, bi));
                __threadfence();
                if (atomicAdd(counts + r, 1) == splits - 1) {  // every split has folded its key in
                    unsigned long long key = atomicExch(keys + r, 0ull);
                    counts[r] = 0;
                    ids[r] = key == 0 ? 0 : (int)(0xFFFFFFFFu - (unsigned)(key & 0xFFFFFFFFu));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Benchmark support: deterministic pseudo-random fp16 weights made on the GPU (uniform in [-scale, scale]), a
// constant fill (LayerNorm gamma = 1), and a 16-byte copy to measure the bandwidth the floor is computed from.
extern "C" __global__ void fill_random_f16(half* __restrict__ out, long n, unsigned seed, float scale) {
    pdl_wait_and_release();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = __float2half_rn((2.f * uniform01(seed, (unsigned)i ^ (unsigned)(i >> 32) * 0x27d4eb2du) - 1.f) * scale);
}

extern "C" __global__ void fill_f16(half* __restrict__ out, long n, float value) {
    pdl_wait_and_release();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = __float2half_rn(value);
}

extern "C" __global__ void copy16(const uint4* __restrict__ src, uint4* __restrict__ dst, long n) {
    pdl_wait_and_release();
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        dst[i] = src[i];
}
