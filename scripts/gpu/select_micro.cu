// Times sparse.cuh's select_union alone (cudaEvents over many launches) for the shapes of the sparse step:
// nvcc -O3 -arch=sm_90 -I src/main/cuda scripts/gpu/select_micro.cu -o /tmp/select_micro && /tmp/select_micro
#include "../../src/main/cuda/sparse.cuh"
#include <cstdio>
#include <vector>
#include <random>

static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) { printf("%s: %s\n", what, cudaGetErrorString(e)); exit(1); }
}

int main() {
    struct Case { int n, mode, k, expand, threads; const char* name; };
    Case cases[] = {{32, 1, 16, 128, 256, "heads top-16 of 32, expand 128"},
                    {32, 1, 16, 1, 256, "heads top-16 of 32, no expand"},
                    {16384, 1, 1638, 1, 1024, "mlp top-1638 of 16384"},
                    {16384, 0, 0, 1, 1024, "mlp threshold of 16384"}};
    std::mt19937 rng(1);
    std::normal_distribution<float> gauss(0.f, 0.33f);
    std::vector<float> host(16384);
    for (auto& v : host) v = gauss(rng);
    float* scores; unsigned *mask, *arrivals, *maskOut; int *index, *counts;
    check(cudaMalloc(&scores, 4 * 16384), "malloc");
    check(cudaMalloc(&mask, 4 * 512), "malloc");
    check(cudaMalloc(&arrivals, 4), "malloc");
    check(cudaMalloc(&maskOut, 4 * 512), "malloc");
    check(cudaMalloc(&index, 4 * 3 * 16384), "malloc");
    check(cudaMalloc(&counts, 8), "malloc");
    cudaMemset(mask, 0, 4 * 512);
    cudaMemset(arrivals, 0, 4);
    cudaMemcpy(scores, host.data(), 4 * 16384, cudaMemcpyHostToDevice);
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (auto& c : cases) {
        for (int rep = 0; rep < 2; rep++) {
            int reps = 200;
            cudaEventRecord(a);
            for (int i = 0; i < reps; i++)
                select_union<<<1, c.threads>>>(scores, 16384, c.n, c.mode, c.k, 0.42f, mask, arrivals, index, counts,
                                                maskOut, c.expand, 0);
            cudaEventRecord(b);
            check(cudaEventSynchronize(b), "sync");
            check(cudaGetLastError(), "launch");
            float ms;
            cudaEventElapsedTime(&ms, a, b);
            int got[2];
            cudaMemcpy(got, counts, 8, cudaMemcpyDeviceToHost);
            if (rep == 1) printf("%-36s %8.2f us a launch, rows %d\n", c.name, 1000 * ms / reps, got[1]);
        }
    }
    // an empty kernel, for the launch cost
    return 0;
}
