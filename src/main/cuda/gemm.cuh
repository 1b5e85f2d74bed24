// Prefill GEMMs on tensor cores: C[M][N] = A[M][K] * W[N][K]^T (W rows optionally gathered through rowIndex) through
// the decoder's epilogue. Both operands are K-contiguous. Each moves N*K*2 bytes of W per BM rows of A plus M*K*2
// bytes of A per BN columns, and does 2*M*N*K FLOPs. K must be a multiple of 8 (K tails are zero-filled).
// - gemm_f16: wmma (mma.sync), any GPU from sm_80.
// - gemm_f16_wgmma: Hopper's warpgroup MMA (sm_90a), which reads both operands straight from shared memory and
//   has twice mma.sync's peak rate there (measured: 1.5x gemm_f16 on OPT's prefill matrices), with split K for
//   GEMMs of few tiles (gemm_splitk_reduce). The module carries it only in its sm_90a code; gemm_wgmma_available
//   tells the engine whether the code it loaded has it.
#pragma once
#include "epilogue.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define HAS_WGMMA 1
#endif

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int size = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(size));
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_f16: wmma 16x16x16, fp32 accumulate. Block tile 128x128, K tile 64, a 3-stage cp.async pipeline (dynamic
// shared memory, GEMM_SHARED_BYTES), 8 warps of 64x32.
#define GM_BM 128
#define GM_BN 128
#define GM_BK 64
#define GM_LD (GM_BK + 8)
#define GM_STAGES 3
#define GEMM_SHARED_BYTES (GM_STAGES * (GM_BM + GM_BN) * GM_LD * 2)


extern "C" __global__ void __launch_bounds__(256)
gemm_f16(const half* __restrict__ A, const half* __restrict__ W, const int* __restrict__ rowIndex, int M, int N,
         int K, Epilogue e) {
    pdl_wait_and_release();
    using namespace nvcuda;
    extern __shared__ __align__(128) unsigned char gmRaw[];
    half* smem = reinterpret_cast<half*>(gmRaw);
    half* As = smem;
    half* Bs = smem + GM_STAGES * GM_BM * GM_LD;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int bm = blockIdx.x * GM_BM, bn = blockIdx.y * GM_BN;  // M tiles first, as gemm_wgmma_tiles
    const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.f);

    auto load_tile = [&](int buf, int k0) {
#pragma unroll
        for (int c = 0; c < 4; c++) {
            int chunk = tid + c * 256;  // 1024 chunks of 8 halfs per operand tile
            int row = chunk >> 3, col = (chunk & 7) * 8;
            int m = bm + row, n = bn + row, k = k0 + col;
            bool kOk = k < K;
            const half* a = A + (size_t)min(m, M - 1) * K + (kOk ? k : 0);
            int wr = min(n, N - 1);
            const half* b = W + (size_t)(rowIndex ? rowIndex[wr] : wr) * K + (kOk ? k : 0);
            cp_async16(As + (buf * GM_BM + row) * GM_LD + col, a, kOk && m < M);
            cp_async16(Bs + (buf * GM_BN + row) * GM_LD + col, b, kOk && n < N);
        }
    };

    const int tiles = (K + GM_BK - 1) / GM_BK;
#pragma unroll
    for (int st = 0; st < GM_STAGES - 1; st++) {
        if (st < tiles) load_tile(st, st * GM_BK);
        asm volatile("cp.async.commit_group;");
    }
    for (int t = 0; t < tiles; t++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(GM_STAGES - 2));
        __syncthreads();  // tile t is in; every warp is done with the buffer refilled next
        int next = t + GM_STAGES - 1;
        if (next < tiles) load_tile(next % GM_STAGES, next * GM_BK);
        asm volatile("cp.async.commit_group;");
        int buf = t % GM_STAGES;
#pragma unroll
        for (int kk = 0; kk < GM_BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a[4];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> b[2];
#pragma unroll
            for (int i = 0; i < 4; i++)
                wmma::load_matrix_sync(a[i], As + (buf * GM_BM + wm + i * 16) * GM_LD + kk, GM_LD);
#pragma unroll
            for (int j = 0; j < 2; j++)
                wmma::load_matrix_sync(b[j], Bs + (buf * GM_BN + wn + j * 16) * GM_LD + kk, GM_LD);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
    }
    asm volatile("cp.async.wait_group 0;");
    __syncthreads();

    // Each warp passes its fragments through a 16x16 fp32 tile in (now free) shared memory to the epilogue.
    float* stage = reinterpret_cast<float*>(smem) + warp * 256;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(stage, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int q = lane; q < 256; q += 32) {
                int m = bm + wm + i * 16 + (q >> 4), n = bn + wn + j * 16 + (q & 15);
                if (m < M && n < N) epilogue_store(e, m, n, stage[q]);
            }
            __syncwarp();
        }
}

// ---------------------------------------------------------------------------------------------------------------
// gemm_f16_wgmma: block tile 128 x 128 x 64, two warpgroups of 64 rows each, a STAGES-deep cp.async pipeline.
// A stage holds the A and W tiles as rows of 64 halfs (128 bytes) in the 128-byte swizzle wgmma reads: the 16-byte
// chunk c of row r sits at chunk c ^ (r % 8), so the 8 rows of a core matrix fall into distinct banks; 8-row groups
// are 1024 bytes apart. A warpgroup's m64n128k16 reads its 64 A rows and 128 W rows by descriptor; the next 16 of K
// lie 32 bytes further (the swizzle is applied to the address, so the tile must be 1024-byte aligned).
#define WG_BM 128
#define WG_BN 128
#define WG_BK 64
// shared memory for STAGES stages, with room to align them to 1024 bytes
#define WGMMA_SHARED_BYTES(STAGES) ((STAGES) * (WG_BM + WG_BN) * WG_BK * 2 + 1024)
// Measured on an H200 (scripts/gpu/gemm_micro.cu, which times the other STAGES / INFLIGHT settings of
// gemm_wgmma_tiles; docs/BENCHMARKS.md): 3 stages and no batch left in flight, which lets two blocks share a
// multiprocessor and hide each other's barriers, beat 4-7 stages with one batch in flight (one block a
// multiprocessor) and 128x256 tiles on OPT's prefill matrices.
#define GEMM_WGMMA_STAGES 3
#define GEMM_WGMMA_SHARED_BYTES WGMMA_SHARED_BYTES(GEMM_WGMMA_STAGES)

#ifdef HAS_WGMMA
__device__ __forceinline__ uint64_t wgmma_descriptor(const void* smem) {
    uint64_t address = (unsigned)__cvta_generic_to_shared(smem);
    return ((address & 0x3FFFF) >> 4)    // start address
           | (uint64_t)(16 >> 4) << 16   // leading byte offset (unused by swizzled K-major layouts)
           | (uint64_t)(1024 >> 4) << 32 // stride byte offset: from one 8-row group to the next
           | (uint64_t)1 << 62;          // 128-byte swizzle
}

__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t a, uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21,"
        "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41,"
        "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61,"
        "%62, %63"
        "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
          "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
          "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
          "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
          "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(1));
}
#endif

extern "C" __global__ void gemm_wgmma_available(int* out) {
#ifdef HAS_WGMMA
    *out = 1;
#else
    *out = 0;
#endif
}

// Split K (partial != null): block z of gridDim.z sums its share of the K tiles and stores the raw sums to
// partial[z][M][N]; gemm_splitk_reduce adds the shares and applies the epilogue. (Having the last of a tile's blocks
// add them instead, counted by an atomic, measured slower: one block then does a whole tile's epilogue.)
template <int STAGES, int INFLIGHT>
__device__ __forceinline__ void gemm_wgmma_tiles(const half* __restrict__ A, const half* __restrict__ W,
                                                 const int* __restrict__ rowIndex, int M, int N, int K,
                                                 const Epilogue& e, float* __restrict__ partial) {
#ifdef HAS_WGMMA
    constexpr int STAGE_BYTES = (WG_BM + WG_BN) * WG_BK * 2;
    extern __shared__ unsigned char wgRaw[];
    unsigned char* base = wgRaw + ((1024 - ((unsigned)__cvta_generic_to_shared(wgRaw) & 1023)) & 1023);
    const int tid = threadIdx.x, group = tid >> 7;
    // M tiles first: the blocks that share a W tile run at the same time, so W comes from DRAM once, not once per M
    // tile (a 512-token prompt's fc1 at 13b: 210 MB of W, four M tiles, a 50 MB L2)
    const int bm = blockIdx.x * WG_BM, bn = blockIdx.y * WG_BN;
    constexpr int A_LOADS = WG_BM * 8 / 256, B_LOADS = WG_BN * 8 / 256;

    // Each thread copies 16-byte chunks of fixed rows: their sources (clamped in bounds, zero-filled outside M or
    // N) and swizzled places are resolved once.
    const half* aSrc[A_LOADS];
    const half* bSrc[B_LOADS];
    unsigned aDst[A_LOADS], bDst[B_LOADS];
    bool aOk[A_LOADS], bOk[B_LOADS];
    const int chunk = tid & 7;
#pragma unroll
    for (int i = 0; i < A_LOADS; i++) {
        int r = (tid >> 3) + i * 32, m = bm + r;
        aSrc[i] = A + (size_t)min(m, M - 1) * K + chunk * 8;
        aDst[i] = r * 128 + ((chunk ^ (r & 7)) << 4);
        aOk[i] = m < M;
    }
#pragma unroll
    for (int i = 0; i < B_LOADS; i++) {
        int r = (tid >> 3) + i * 32, n = bn + r, row = min(n, N - 1);
        bSrc[i] = W + (size_t)(rowIndex ? rowIndex[row] : row) * K + chunk * 8;
        bDst[i] = WG_BM * 128 + r * 128 + ((chunk ^ (r & 7)) << 4);
        bOk[i] = n < N;
    }
    auto loadTile = [&](int stage, int k0) {
        unsigned char* s = base + stage * STAGE_BYTES;
        bool kOk = k0 + chunk * 8 < K;
#pragma unroll
        for (int i = 0; i < A_LOADS; i++) cp_async16(s + aDst[i], aSrc[i] + (kOk ? k0 : 0), kOk && aOk[i]);
#pragma unroll
        for (int i = 0; i < B_LOADS; i++) cp_async16(s + bDst[i], bSrc[i] + (kOk ? k0 : 0), kOk && bOk[i]);
    };

    float acc[64];
#pragma unroll
    for (int c = 0; c < 64; c++) acc[c] = 0.f;

    // Loads run AHEAD tiles in front of the math; INFLIGHT batches of wgmma may still run when the next is issued
    // (the stage a load refills was last read AHEAD + 1 tiles ago, and every warpgroup has waited for that batch
    // before the barrier).
    constexpr int AHEAD = STAGES - 1 - INFLIGHT;
    const int allTiles = (K + WG_BK - 1) / WG_BK, share = (allTiles + gridDim.z - 1) / gridDim.z;
    const int first = blockIdx.z * share, tiles = max(0, min(allTiles - first, share));
    const int kFirst = first * WG_BK;
#pragma unroll
    for (int s = 0; s < AHEAD; s++) {
        if (s < tiles) loadTile(s, kFirst + s * WG_BK);
        asm volatile("cp.async.commit_group;");
    }
    for (int t = 0; t < tiles; t++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(AHEAD - 1));
        // cp.async wrote through the generic proxy; wgmma reads through the async proxy
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();  // tile t is in for every thread; no warpgroup still reads the stage refilled next
        int next = t + AHEAD;
        if (next < tiles) loadTile(next % STAGES, kFirst + next * WG_BK);
        asm volatile("cp.async.commit_group;");
        const unsigned char* s = base + (t % STAGES) * STAGE_BYTES;
        uint64_t a = wgmma_descriptor(s + group * 64 * 128), b = wgmma_descriptor(s + WG_BM * 128);
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
        for (int kk = 0; kk < WG_BK / 16; kk++) {
            wgmma_m64n128k16(acc, a + kk * 2, b + kk * 2);
        }
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(INFLIGHT) : "memory");
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    asm volatile("cp.async.wait_group 0;");

    // Accumulator layout: warp w of the warpgroup holds rows 16w..16w+15; per 8 columns c, registers 4c..4c+3 are
    // (row lane/4, columns 2*(lane%4) + 0/1) and the same 8 rows further down.
    const int lane = tid & 31, row0 = bm + group * 64 + ((tid >> 5) & 3) * 16 + (lane >> 2);
#pragma unroll
    for (int c = 0; c < 64; c += 2) {  // registers c, c+1: columns n, n+1 of one row
        int m = row0 + ((c & 2) ? 8 : 0), n = bn + (c >> 2) * 8 + (lane & 3) * 2;
        if (m >= M || n >= N) continue;
        if (n + 1 < N && N % 2 == 0) {
            if (partial) *reinterpret_cast<float2*>(partial + ((size_t)blockIdx.z * M + m) * N + n) =
                    make_float2(acc[c], acc[c + 1]);
            else epilogue_store2(e, m, n, acc[c], acc[c + 1]);
        } else {
            for (int j = 0; j < 2 && n + j < N; j++) {
                if (partial) partial[((size_t)blockIdx.z * M + m) * N + n + j] = acc[c + j];
                else epilogue_store(e, m, n + j, acc[c + j]);
            }
        }
    }
#endif
}

// Two blocks a multiprocessor (at most 128 registers a thread): the measured configuration depends on it.
extern "C" __global__ void __launch_bounds__(256, 2)
gemm_f16_wgmma(const half* __restrict__ A, const half* __restrict__ W, const int* __restrict__ rowIndex, int M, int N,
               int K, Epilogue e, float* __restrict__ partial) {
    pdl_wait_and_release();
    gemm_wgmma_tiles<GEMM_WGMMA_STAGES, 0>(A, W, rowIndex, M, N, K, e, partial);
}

// The split-K GEMM's epilogue: out[m][n] = epilogue(sum over z of partial[z][m][n]), in a fixed order so that the
// result does not depend on timing. Reads splits*M*N*4 bytes (up to 4 splits, DecoderKernels.kSplits), 16 at a time
// where N allows, every split's load issued before the first add; the fp32 residual epilogue of out_proj and fc2
// reads and writes 16 bytes at a time too.
extern "C" __global__ void gemm_splitk_reduce(const float* __restrict__ partial, int splits, int M, int N,
                                              Epilogue e) {
    pdl_wait_and_release();
    const size_t total = (size_t)M * N, stride = (size_t)gridDim.x * blockDim.x;
    const int vec = N % 4 == 0 ? 4 : 1;
    for (size_t i = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) * vec; i < total; i += stride * vec) {
        float4 part[4];
#pragma unroll
        for (int z = 0; z < 4; z++) {
            const float* p = partial + z * total + i;
            part[z] = z >= splits ? make_float4(0.f, 0.f, 0.f, 0.f)
                      : vec == 4 ? *reinterpret_cast<const float4*>(p) : make_float4(*p, 0.f, 0.f, 0.f);
        }
        float v[4];
        v[0] = ((part[0].x + part[1].x) + part[2].x) + part[3].x;
        v[1] = ((part[0].y + part[1].y) + part[2].y) + part[3].y;
        v[2] = ((part[0].z + part[1].z) + part[2].z) + part[3].z;
        v[3] = ((part[0].w + part[1].w) + part[2].w) + part[3].w;
        const int m = (int)(i / N), n = (int)(i % N);
        if (vec == 4) {
            epilogue_store4(e, m, n, v);
        } else {
            epilogue_store(e, m, n, v[0]);
        }
    }
}
