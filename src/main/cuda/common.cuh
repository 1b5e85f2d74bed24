// Device helpers shared by the kernels (decoder.cu, sparse.cuh): warp and block reductions, 16-byte
// streaming loads, fp16 dot products, and the programmatic-dependent-launch handshake every kernel starts with.
#pragma once
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>

#define BLOCK_TOKENS 16

// Element offset of position `offset` of cache block `block`, head `head`, in a layer's K or V pool, laid out
// [block][head][BLOCK_TOKENS][headDim] (decoder.cu).
__device__ __forceinline__ size_t kv_offset(int block, int offset, int head, int heads, int headDim) {
    return (((size_t)block * heads + head) * BLOCK_TOKENS + offset) * headDim;
}

// Programmatic dependent launch (sm_90): the engine launches every kernel allowed to start while its predecessor
// drains; each kernel waits here for its predecessor's completion (and memory) before touching activations, and at
// once lets its own successor be scheduled. The wait comes first in every kernel, before any early exit, so that
// completion stays transitive along the stream. The GEMVs issue their first weight loads before waiting.
__device__ __forceinline__ void pdl_wait_and_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : 0.f;
    return warp_sum(r);
}

__device__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : -INFINITY;
    return warp_max(r);
}

// Values as loaded, as floats: fp16 packed two, four or eight to an unsigned, uint2 or uint4; four fp32.
template <typename Packed>
__device__ __forceinline__ void to_floats(Packed raw, float* out) {
    const half2* h = reinterpret_cast<const half2*>(&raw);
#pragma unroll
    for (int i = 0; i < (int)sizeof(Packed) / 4; i++) {
        const float2 f = __half22float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void to_floats(float4 f, float* v) {
    v[0] = f.x; v[1] = f.y; v[2] = f.z; v[3] = f.w;
}

// Four consecutive inputs (16-byte aligned for fp32, 8-byte for fp16) as floats.
__device__ __forceinline__ void load4(const float* p, float* v) {
    to_floats(*reinterpret_cast<const float4*>(p), v);
}
__device__ __forceinline__ void load4(const half* p, float* v) {
    to_floats(*reinterpret_cast<const uint2*>(p), v);
}

// Weights are read once per step: bypass L1 so the activations that are reused stay there.
__device__ __forceinline__ uint4 load_stream(const void* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

__device__ __forceinline__ float dot8(uint4 w, uint4 x) {
    const half2* a = reinterpret_cast<const half2*>(&w);
    const half2* b = reinterpret_cast<const half2*>(&x);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 fa = __half22float2(a[i]), fb = __half22float2(b[i]);
        s = fmaf(fa.x, fb.x, s);
        s = fmaf(fa.y, fb.y, s);
    }
    return s;
}
