// Kernels of the Deja Vu sparse decode step (io.dejavu.engine.cuda.CudaEngine with predictors attached): choosing
// the MLP neurons and attention heads from the predictors' scores, the union over a batch, and executing only the
// chosen rows of the weights. The predictors' two low-rank layers run as ordinary GEMVs (decoder.cu). Compiled as
// part of decoder.cu, so that the engine loads one module and finds every kernel in it.
//
// Shapes as in decoder.cu: T tokens of a decode step, h hidden, f ffn width, H heads of width d.
#pragma once
#include "common.cuh"

// ---------------------------------------------------------------------------------------------------------------
// Selection. A float's bits mapped so that unsigned order is float order (larger score, larger key).
__device__ __forceinline__ unsigned order_key(float f) {
    unsigned b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

#define SELECT_THREADS 1024
#define SELECT_PER_THREAD 32
#define SELECT_MAX_EXPANDED_ITEMS 256

// One block per token of the step: its items to execute are the top k of its scores (mode 1; ties at the k-th
// score are all taken) or those scoring >= threshold (mode 0). Each block ORs its choice into mask, so the mask ends
// as the union over the step's tokens, which is what the batch executes. The last block to finish writes the union
// as a sorted row list at index, each item expanded to `expand` consecutive rows (a head: its d rows of q or
// out_proj); counts[0] = countBase + those rows (rows the caller keeps before index: the k and v rows of every
// head), counts[1] = those rows. It copies the union to maskOut (null: not wanted) and clears mask and arrivals for
// the next step. A step of one token (one block) keeps its mask in shared memory and needs none of that.
//
// Each thread holds its items' keys (item j * blockDim.x + threadIdx.x) in registers, read once; the k-th largest
// comes from four passes of 8-bit radix selection over histograms in shared memory, one per warp so that only lanes
// of one warp ever contend for a bin (scores crowd into few bins), added up after each pass.
// n <= blockDim.x * SELECT_PER_THREAD (host).
extern "C" __global__ void __launch_bounds__(SELECT_THREADS)
select_union(const float* __restrict__ scores, int ldScores, int n, int mode, int k, float threshold, unsigned* mask,
             unsigned* arrivals, int* __restrict__ index, int* __restrict__ counts, unsigned* __restrict__ maskOut,
             int expand, int countBase) {
    pdl_wait_and_release();
    const float* row = scores + (size_t)blockIdx.x * ldScores;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    // 0 marks an absent item: no float's key is 0 but a NaN's
    unsigned keys[SELECT_PER_THREAD];
#pragma unroll
    for (int j = 0; j < SELECT_PER_THREAD; j++) {
        const int i = j * blockDim.x + threadIdx.x;
        keys[j] = i < n ? order_key(row[i]) : 0u;
    }
    unsigned least;  // keys >= least are taken
    if (mode == 0) {
        least = order_key(threshold);
    } else if (k >= n) {
        least = 1u;
    } else if (k <= 0) {
        least = 0xffffffffu;  // nothing; a key of all ones would be a NaN
    } else {
        __shared__ unsigned warpHist[SELECT_THREADS / 32][256];
        __shared__ unsigned hist[256];
        __shared__ unsigned found[2];  // the key prefix so far, and the rank still to find below it
        const int per = (n + blockDim.x - 1) / blockDim.x;
        unsigned prefix = 0, prefixMask = 0, remaining = k;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int i = lane; i < 256; i += 32) warpHist[warp][i] = 0;
            __syncwarp();
#pragma unroll
            for (int j = 0; j < SELECT_PER_THREAD; j++) {
                if (j < per && keys[j] != 0u && (keys[j] & prefixMask) == prefix)
                    atomicAdd(&warpHist[warp][(keys[j] >> shift) & 255u], 1u);
            }
            __syncthreads();
            for (int b = threadIdx.x; b < 256; b += blockDim.x) {
                unsigned total = 0;
                for (int w = 0; w < warps; w++) total += warpHist[w][b];
                hist[b] = total;
            }
            __syncthreads();
            if (warp == 0) {
                // lane L holds bins 255-8L down to 248-8L, so a prefix sum over the lanes walks down from the top
                unsigned c[8], total = 0;
#pragma unroll
                for (int j = 0; j < 8; j++) { c[j] = hist[255 - 8 * lane - j]; total += c[j]; }
                unsigned incl = total;
#pragma unroll
                for (int o = 1; o < 32; o <<= 1) {
                    unsigned v = __shfl_up_sync(0xffffffffu, incl, o);
                    if (lane >= o) incl += v;
                }
                unsigned above = incl - total;
                if (above < remaining && remaining <= incl) {
                    for (int j = 0; j < 8; j++) {
                        if (above + c[j] >= remaining) {
                            found[0] = prefix | ((unsigned)(255 - 8 * lane - j) << shift);
                            found[1] = remaining - above;
                            break;
                        }
                        above += c[j];
                    }
                }
            }
            __syncthreads();
            prefix = found[0];
            remaining = found[1];
            prefixMask |= 255u << shift;
            __syncthreads();
        }
        least = prefix;
    }
    // item j * blockDim.x + threadIdx.x: a warp's lanes are 32 consecutive items, one mask word
    __shared__ unsigned ownMask[SELECT_PER_THREAD * SELECT_THREADS / 32];
    const bool alone = gridDim.x == 1;
    {
        const int per = (n + blockDim.x - 1) / blockDim.x;
#pragma unroll
        for (int j = 0; j < SELECT_PER_THREAD; j++) {
            if (j < per) {  // the same for the whole block
                const bool take = keys[j] != 0u && keys[j] >= least;
                const unsigned bits = __ballot_sync(0xffffffffu, take);
                const int w = (j * blockDim.x + threadIdx.x) >> 5;
                if (lane == 0) {
                    if (alone) ownMask[w] = bits;
                    else if (bits) atomicOr(mask + w, bits);
                }
            }
        }
    }
    if (alone) {
        __syncthreads();
    } else {
        __shared__ bool last;
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(arrivals, 1u) == gridDim.x - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
    }
    auto word = [&](int w) { return alone ? ownMask[w] : __ldcg(mask + w); };

    // Compaction: each thread a run of consecutive words; a block-wide exclusive scan of their popcounts places them.
    __shared__ int warpBase[32];
    __shared__ int items[SELECT_MAX_EXPANDED_ITEMS];
    __shared__ int selected;
    const int words = (n + 31) >> 5;
    const int per = (words + blockDim.x - 1) / blockDim.x;
    const int w0 = min(words, threadIdx.x * per), w1 = min(words, w0 + per);
    int mine = 0;
    for (int w = w0; w < w1; w++) mine += __popc(word(w));
    int incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
    }
    if (lane == 31) warpBase[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        int total = lane < warps ? warpBase[lane] : 0, running = total;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int v = __shfl_up_sync(0xffffffffu, running, o);
            if (lane >= o) running += v;
        }
        warpBase[lane] = running - total;
    }
    __syncthreads();
    int pos = warpBase[warp] + incl - mine;
    for (int w = w0; w < w1; w++) {
        unsigned bits = word(w);
        if (maskOut) maskOut[w] = bits;
        if (!alone) mask[w] = 0u;
        while (bits) {
            const int item = w * 32 + __ffs(bits) - 1;
            bits &= bits - 1;
            if (expand == 1) index[pos] = item;
            else items[pos] = item;  // the host keeps n <= SELECT_MAX_EXPANDED_ITEMS when expand > 1
            pos++;
        }
    }
    if (threadIdx.x == blockDim.x - 1) selected = pos;
    __syncthreads();
    const int rows = selected * expand;
    if (expand > 1)
        for (int i = threadIdx.x; i < rows; i += blockDim.x) index[i] = items[i / expand] * expand + i % expand;
    if (threadIdx.x == 0) {
        counts[0] = countBase + rows;
        counts[1] = rows;
        if (!alone) *arrivals = 0u;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Sparse down-projection: x[t][c] += bias[c] + sum over the count selected rows i of a[t][i] * W[index[i]][c], for the
// T tokens of a decode step (x: the fp32 residual stream [T][h]; the rows are the union's, shared by the batch):
// - the Deja Vu MLP's second half: W = fc2 transposed, a = coef [T][ldCoef] fp32, relu(fc1 . x + b1) of the selected
//   neurons from the gathered GEMV before it (the selected rows of fc1), so both halves read whole contiguous rows;
// - out_proj of the selected heads: W = out_proj transposed, a[t][i] = gathered[t][index[i]] (attention output).
// Moves count * h * 2 bytes of weights, 2 * T * h FLOPs per row. A block owns 64 columns (128 bytes of each row) and
// one of gridDim.y interleaved shares of the rows: 8 lanes of 8 columns x 32 row lanes, U rows in flight per thread,
// then a reduction over the row lanes; with several shares they meet by atomic adds (gridDim.y per element, far
// fewer than one per chunk of rows), else plain adds. Reads count from the device: one grid serves any selection.
#define DOWN_COLUMNS 64

template <int MT, int U>
__device__ void sparse_down(const float* __restrict__ coef, int ldCoef, const half* __restrict__ gathered,
                            const half* __restrict__ W, const half* __restrict__ bias, const int* __restrict__ index,
                            const int* __restrict__ count, int T, int h, float* x) {
    pdl_wait_and_release();
    __shared__ float red[8][MT][DOWN_COLUMNS];
    const int n = *count;
    const int colLane = threadIdx.x & 7, rowLane = threadIdx.x >> 3, warp = threadIdx.x >> 5;
    const int c0 = blockIdx.x * DOWN_COLUMNS + colLane * 8;
    const int stride = 32 * gridDim.y;
    const bool live = c0 < h;
    float acc[MT][8];
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[t][e] = 0.f;
    // The row numbers of the next U rows are read one round ahead: read just before their weights, each round
    // was two dependent memory round trips (index, then weights) instead of one.
    const int first = blockIdx.y * 32 + rowLane;
    int rows[U];
#pragma unroll
    for (int u = 0; u < U; u++) rows[u] = first + u * stride < n ? index[first + u * stride] : 0;
    for (int i0 = first; i0 < n; i0 += stride * U) {
        uint4 w[U];
        float a[U][MT];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int i = i0 + u * stride;
            const bool valid = i < n && live;
            const int r = rows[u];
            w[u] = valid ? load_stream(W + (size_t)r * h + c0) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int t = 0; t < MT; t++)
                a[u][t] = valid && t < T ? (coef ? coef[(size_t)t * ldCoef + i] : __half2float(gathered[(size_t)t * h + r]))
                                         : 0.f;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int next = i0 + stride * U + u * stride;
            rows[u] = next < n ? index[next] : 0;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const half2* p = reinterpret_cast<const half2*>(&w[u]);
            float f[8];
#pragma unroll
            for (int e = 0; e < 4; e++) { float2 v = __half22float2(p[e]); f[2 * e] = v.x; f[2 * e + 1] = v.y; }
#pragma unroll
            for (int t = 0; t < MT; t++)
#pragma unroll
                for (int e = 0; e < 8; e++) acc[t][e] = fmaf(a[u][t], f[e], acc[t][e]);
        }
    }
    // a warp holds row lanes 4w .. 4w+3 of every column lane: add those by shuffles, then the 8 warps in shared memory
#pragma unroll
    for (int t = 0; t < MT; t++)
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float v = acc[t][e];
            v += __shfl_xor_sync(0xffffffffu, v, 8);
            v += __shfl_xor_sync(0xffffffffu, v, 16);
            if ((threadIdx.x & 31) < 8) red[warp][t][colLane * 8 + e] = v;
        }
    __syncthreads();
    for (int i = threadIdx.x; i < MT * DOWN_COLUMNS; i += blockDim.x) {
        const int t = i / DOWN_COLUMNS, c = i - t * DOWN_COLUMNS, col = blockIdx.x * DOWN_COLUMNS + c;
        if (t >= T || col >= h) continue;
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < 8; w++) v += red[w][t][c];
        if (bias && blockIdx.y == 0) v += __half2float(bias[col]);
        float* out = x + (size_t)t * h + col;
        if (gridDim.y == 1) *out += v;
        else atomicAdd(out, v);
    }
}

#define SPARSE_DOWN_KERNEL(NAME, MT, U)                                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
    NAME(const float* coef, int ldCoef, const half* gathered, const half* W, const half* bias, const int* index,    \
         const int* count, int T, int h, float* x) {                                                               \
        sparse_down<MT, U>(coef, ldCoef, gathered, W, bias, index, count, T, h, x);                                \
    }
SPARSE_DOWN_KERNEL(sparse_down_m1, 1, 8)
SPARSE_DOWN_KERNEL(sparse_down_m2, 2, 8)
SPARSE_DOWN_KERNEL(sparse_down_m4, 4, 4)
SPARSE_DOWN_KERNEL(sparse_down_m8, 8, 2)
SPARSE_DOWN_KERNEL(sparse_down_m16, 16, 2)

// ---------------------------------------------------------------------------------------------------------------
// out[c][r] = in[r][c] for an fp16 matrix [rows][cols], through 32x32 tiles in shared memory (both sides coalesced):
// makes the transposed copies of fc2 and out_proj once, when predictors are attached. Moves 2 * rows * cols * 2 bytes.
extern "C" __global__ void transpose_f16(const half* __restrict__ in, half* __restrict__ out, int rows, int cols) {
    pdl_wait_and_release();
    __shared__ half tile[32][33];
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5, step = blockDim.x >> 5;
    for (int i = ty; i < 32; i += step) {
        int r = r0 + i, c = c0 + tx;
        if (r < rows && c < cols) tile[i][tx] = in[(size_t)r * cols + c];
    }
    __syncthreads();
    for (int i = ty; i < 32; i += step) {
        int c = c0 + i, r = r0 + tx;
        if (r < rows && c < cols) out[(size_t)c * rows + r] = tile[tx][i];
    }
}
