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

// Column n of token m of the fused QKV projection, one half or an even column pair as a half2: to the queries for
// n < hidden, else to the token's slot of the paged K or V cache; a padding token (no slot) stores nothing.
template <typename T>
__device__ __forceinline__ void store_qkv(const Epilogue& e, int m, int n, T v) {
    if (n < e.hidden) { *reinterpret_cast<T*>(e.outF16 + (size_t)m * e.ld + n) = v; return; }
    const int slot = e.slots[m];
    if (slot < 0) return;
    const int which = n / e.hidden, w = n - which * e.hidden;
    const int head = w / e.headDim, d = w - head * e.headDim;
    const size_t idx = kv_offset(slot / BLOCK_TOKENS, slot % BLOCK_TOKENS, head, e.heads, e.headDim) + d;
    *reinterpret_cast<T*>((which == 1 ? e.kCache : e.vCache) + idx) = v;
}

__device__ __forceinline__ void epilogue_store(const Epilogue& e, int m, int row, float v) {
    const int n = e.outIndex ? e.outIndex[row] : row;
    if (e.bias) v += __half2float(e.bias[e.biasIndex ? e.biasIndex[row] : n]);
    if (e.relu) v = fmaxf(v, 0.f);
    if (e.kCache) {
        store_qkv(e, m, n, __float2half_rn(v));
        return;
    }
    size_t at = (size_t)m * e.ld + n;
    if (e.residual) v += e.residual[at];
    if (e.outF32) e.outF32[at] = v;
    else e.outF16[at] = __float2half_rn(v);
}

// Four consecutive columns n..n+3 of row m (n % 4 == 0): 16-byte loads and stores for an fp32 output with dense
// columns (out_proj's and fc2's residual add), else four epilogue_store calls.
__device__ __forceinline__ void epilogue_store4(const Epilogue& e, int m, int n, const float (&v)[4]) {
    if (e.kCache || e.outIndex || e.biasIndex || !e.outF32 || e.ld % 4 != 0) {
#pragma unroll
        for (int j = 0; j < 4; j++) epilogue_store(e, m, n + j, v[j]);
        return;
    }
    float4 r = make_float4(v[0], v[1], v[2], v[3]);
    if (e.bias) {
        const half2* b = reinterpret_cast<const half2*>(e.bias + n);
        const float2 lo = __half22float2(b[0]), hi = __half22float2(b[1]);
        r.x += lo.x; r.y += lo.y; r.z += hi.x; r.w += hi.y;
    }
    if (e.relu) { r.x = fmaxf(r.x, 0.f); r.y = fmaxf(r.y, 0.f); r.z = fmaxf(r.z, 0.f); r.w = fmaxf(r.w, 0.f); }
    const size_t at = (size_t)m * e.ld + n;
    if (e.residual) {
        const float4 res = *reinterpret_cast<const float4*>(e.residual + at);
        r.x += res.x; r.y += res.y; r.z += res.z; r.w += res.w;
    }
    *reinterpret_cast<float4*>(e.outF32 + at) = r;
}

// Two consecutive columns n, n+1 of row m (n even, n + 1 < N): one 4- or 8-byte store where the output is dense,
// which is how the GEMM's accumulators lie (pairs of adjacent columns per lane).
__device__ __forceinline__ void epilogue_store2(const Epilogue& e, int m, int n, float v0, float v1) {
    if (e.outIndex || e.biasIndex || (e.ld & 1)) {
        epilogue_store(e, m, n, v0);
        epilogue_store(e, m, n + 1, v1);
        return;
    }
    if (e.bias) {
        const float2 b = __half22float2(*reinterpret_cast<const half2*>(e.bias + n));
        v0 += b.x;
        v1 += b.y;
    }
    if (e.relu) { v0 = fmaxf(v0, 0.f); v1 = fmaxf(v1, 0.f); }
    if (e.kCache) {  // an even column pair never straddles a head (even head width) nor q/k/v (even hidden)
        store_qkv(e, m, n, __floats2half2_rn(v0, v1));
        return;
    }
    const size_t at = (size_t)m * e.ld + n;
    if (e.residual) {
        const float2 r = *reinterpret_cast<const float2*>(e.residual + at);
        v0 += r.x;
        v1 += r.y;
    }
    if (e.outF32) *reinterpret_cast<float2*>(e.outF32 + at) = make_float2(v0, v1);
    else *reinterpret_cast<half2*>(e.outF16 + at) = __floats2half2_rn(v0, v1);
}
