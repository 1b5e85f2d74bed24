// Times gemm.cuh's GEMMs (wmma, and wgmma in several tile configurations) on the prefill matrices of OPT shapes
// (M tokens, fp32 output through the epilogue) and checks each against a plain fp32 dot product per output
// (scripts/gpu/gemm_torch.py times cuBLAS on the same matrices):
// nvcc -O3 -std=c++17 -arch=sm_90a scripts/gpu/gemm_micro.cu -o /tmp/gemm_micro && /tmp/gemm_micro [M]
#include "../../src/main/cuda/gemm.cuh"
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) { printf("%s: %s\n", what, cudaGetErrorString(e)); exit(1); }
}

static float* workspace;  // split-K partial sums
static int multiprocessors;

// DecoderKernels.kSplits: split K where that saves a fifth of the waves, each part keeping at least 4 K tiles.
static int kSplits(int tiles, int kTiles, int slots) {
    int best = 1;
    double bestCost = std::ceil((double)tiles / slots);
    for (int s = 2; s <= 4 && (long)tiles * s <= 2L * slots && kTiles / s >= 4; s++) {
        double cost = std::ceil((double)tiles * s / slots) / s;
        if (cost < 0.8 * bestCost) { best = s; bestCost = cost; }
    }
    return best;
}

static void reduce(int splits, int M, int N, const Epilogue& e) {
    if (splits > 1) gemm_splitk_reduce<<<std::min((M * N + 1023) / 1024, 4 * 264), 256>>>(workspace, splits, M, N, e);
}

template <int STAGES, int INFLIGHT>
__global__ void __launch_bounds__(256) wgmma_variant(const half* A, const half* W, int M, int N, int K, Epilogue e,
                                                     float* partial) {
    gemm_wgmma_tiles<STAGES, INFLIGHT>(A, W, nullptr, M, N, K, e, partial);
}

struct Variant {
    const char* name;
    void (*launch)(const half*, const half*, int, int, int, Epilogue);
};

// As the engine launches them (DecoderKernels.linear): M tiles first, K split where the tiles leave the GPU part idle.
template <int STAGES, int INFLIGHT>
static Variant wgmma(const char* name) {
    check(cudaFuncSetAttribute(wgmma_variant<STAGES, INFLIGHT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               WGMMA_SHARED_BYTES(STAGES)), name);
    return {name, [](const half* A, const half* W, int M, int N, int K, Epilogue e) {
                int nTiles = (N + WG_BN - 1) / WG_BN, mTiles = (M + WG_BM - 1) / WG_BM;
                int perSm = 0;
                cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, wgmma_variant<STAGES, INFLIGHT>, 256,
                                                              WGMMA_SHARED_BYTES(STAGES));
                int splits = kSplits(nTiles * mTiles, (K + 63) / 64, perSm * multiprocessors);
                wgmma_variant<STAGES, INFLIGHT><<<dim3(mTiles, nTiles, splits), 256, WGMMA_SHARED_BYTES(STAGES)>>>(
                        A, W, M, N, K, e, splits > 1 ? workspace : nullptr);
                reduce(splits, M, N, e);
            }};
}

static void wmma(const half* A, const half* W, int M, int N, int K, Epilogue e) {
    dim3 grid((M + 127) / 128, (N + 127) / 128);
    gemm_f16<<<grid, 256, GEMM_SHARED_BYTES>>>(A, W, nullptr, M, N, K, e);
}

__global__ void reference(const half* A, const half* W, int M, int N, int K, float* C) {
    int n = blockIdx.x * blockDim.x + threadIdx.x, m = blockIdx.y;
    if (n >= N) return;
    float s = 0.f;
    for (int k = 0; k < K; k++) s = fmaf(__half2float(A[(size_t)m * K + k]), __half2float(W[(size_t)n * K + k]), s);
    C[(size_t)m * N + n] = s;
}

__global__ void fill(half* out, size_t n, unsigned seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 0x9E3779B1u ^ seed * 0x85EBCA77u;
        h ^= h >> 16; h *= 0x7FEB352Du; h ^= h >> 15; h *= 0x846CA68Bu; h ^= h >> 16;
        out[i] = __float2half_rn(((h >> 8) * (2.f / 16777216.f) - 1.f) * scale);
    }
}

int main(int argc, char** argv) {
    int M = argc > 1 ? atoi(argv[1]) : 512;
    check(cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, 0), "multiprocessors");
    check(cudaMalloc(&workspace, (size_t)2 * 264 * 128 * 128 * 4), "workspace");  // DecoderKernels.splitKBytes
    check(cudaFuncSetAttribute(gemm_f16, cudaFuncAttributeMaxDynamicSharedMemorySize, GEMM_SHARED_BYTES), "wmma");
    std::vector<Variant> variants = {
        {"gemm_f16 (wmma 128x128x64, 3 stages)", wmma},
        wgmma<3, 0>("wgmma 128x128x64, 3 stages, 0 in flight"),
        wgmma<4, 1>("wgmma 128x128x64, 4 stages, 1 in flight"),
        wgmma<7, 1>("wgmma 128x128x64, 7 stages, 1 in flight"),
    };
    struct Shape { const char* name; int N, K; };
    Shape shapes[] = {{"1.3b qkv", 6144, 2048},  {"1.3b out", 2048, 2048},  {"1.3b fc1", 8192, 2048},
                      {"1.3b fc2", 2048, 8192},  {"6.7b qkv", 12288, 4096}, {"6.7b out", 4096, 4096},
                      {"6.7b fc1", 16384, 4096}, {"6.7b fc2", 4096, 16384}, {"13b qkv", 15360, 5120},
                      {"13b out", 5120, 5120},   {"13b fc1", 20480, 5120},  {"13b fc2", 5120, 20480},
                      {"tails", 1000, 264}};
    size_t maxA = (size_t)M * 20480, maxW = (size_t)20480 * 5120, maxC = (size_t)M * 20480;
    half *A, *W;
    float *C, *ref;
    check(cudaMalloc(&A, maxA * 2), "A");
    check(cudaMalloc(&W, maxW * 2), "W");
    check(cudaMalloc(&C, maxC * 4), "C");
    check(cudaMalloc(&ref, maxC * 4), "ref");
    fill<<<1024, 256>>>(A, maxA, 1, 1.0f);
    fill<<<1024, 256>>>(W, maxW, 2, 0.02f);
    check(cudaDeviceSynchronize(), "fill");
    cudaEvent_t t0, t1;
    cudaEventCreate(&t0);
    cudaEventCreate(&t1);
    printf("M = %d; ms per GEMM (20 launches back to back), TFLOP/s, rel L2 against fp32 dot products\n", M);
    std::vector<double> total(variants.size(), 0.0);
    for (auto& s : shapes) {
        printf("%-10s N=%5d K=%5d:", s.name, s.N, s.K);
        Epilogue e{};
        e.ld = s.N;
        std::vector<float> hostRef((size_t)M * s.N), host((size_t)M * s.N);
        reference<<<dim3((s.N + 255) / 256, M), 256>>>(A, W, M, s.N, s.K, ref);
        check(cudaMemcpy(hostRef.data(), ref, hostRef.size() * 4, cudaMemcpyDeviceToHost), "reference");
        for (size_t v = 0; v < variants.size(); v++) {
            e.outF32 = C;
            check(cudaMemset(e.outF32, 0xff, (size_t)M * s.N * 4), "poison");
            for (int i = 0; i < 3; i++) variants[v].launch(A, W, M, s.N, s.K, e);
            cudaEventRecord(t0);
            for (int i = 0; i < 20; i++) variants[v].launch(A, W, M, s.N, s.K, e);
            cudaEventRecord(t1);
            check(cudaEventSynchronize(t1), variants[v].name);
            float ms;
            cudaEventElapsedTime(&ms, t0, t1);
            ms /= 20;
            if (s.K != 264) total[v] += ms;
            cudaMemcpy(host.data(), C, host.size() * 4, cudaMemcpyDeviceToHost);
            double num = 0, den = 0;
            for (size_t i = 0; i < host.size(); i++) {
                double d = host[i] - hostRef[i];
                num += d * d;
                den += (double)hostRef[i] * hostRef[i];
            }
            double err = std::isnan(num) ? INFINITY : std::sqrt(num / den);
            printf(" | %.3f %.0f %.0e", ms, 2.0 * M * s.N * s.K / ms / 1e9, err);
        }
        printf("\n");
    }
    printf("sum of the 12 OPT GEMMs per variant (ms):\n");
    for (size_t v = 0; v < variants.size(); v++) printf("  %-48s %.3f\n", variants[v].name, total[v]);
    return 0;
}
