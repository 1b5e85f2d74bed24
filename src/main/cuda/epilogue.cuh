// Epilogue shared by the GEMV and the GEMM (decoder.cu, gemm.cuh): v = acc (+ bias[n]) (relu) (+ residual[m][n]),
// stored as fp32 or fp16, or, for the fused QKV projection (kCache != null), columns [0,h) go to outF16 (the queries)
// and [h,3h) into the paged K and V caches at slots[m]. Passed by value; io.dejavu.engine.cuda.Epilogue writes the
// same layout.
#pragma once
#include "common.cuh"

struct Epilogue {
    const half* bias;       // [N] or null
    const float* residual;  // [M][ld] or null; may alias outF32
    float* outF32;          // [M][ld] or null
    half* outF16;           // [M][ld] or null
    half* kCache;           // this layer's K pool, or null
    half* vCache;
    const int* slots;       // [M] cache slot of each token (-1: padding, not stored)
    const int* outIndex;    // [N] column each computed row lands in (row-gathered weights), or null: column n
    const int* biasIndex;   // [N] bias element of each computed row (row-gathered weights, compact output), or null
    int ld;
    int relu;
    int heads;
    int headDim;
    int hidden;
    int pad;
};

__device__ __forceinline__ void epilogue_store(const Epilogue& e, int m, int row, float v) {
    const int n = e.outIndex ? e.outIndex[row] : row;
    if (e.bias) v += __half2float(e.bias[e.biasIndex ? e.biasIndex[row] : n]);
    if (e.relu) v = fmaxf(v, 0.f);
    if (e.kCache) {
        if (n < e.hidden) { e.outF16[(size_t)m * e.ld + n] = __float2half_rn(v); return; }
        int slot = e.slots[m];
        if (slot < 0) return;
        int which = n / e.hidden, w = n - which * e.hidden;
        int head = w / e.headDim, d = w - head * e.headDim;
        size_t idx = (((size_t)(slot / BLOCK_TOKENS) * e.heads + head) * BLOCK_TOKENS + slot % BLOCK_TOKENS)
                * e.headDim + d;
        (which == 1 ? e.kCache : e.vCache)[idx] = __float2half_rn(v);
        return;
    }
    size_t at = (size_t)m * e.ld + n;
    if (e.residual) v += e.residual[at];
    if (e.outF32) e.outF32[at] = v;
    else e.outF16[at] = __float2half_rn(v);
}
