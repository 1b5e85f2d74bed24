"""cuBLAS (through torch.nn.functional.linear, fp16) on the prefill matrices that scripts/gpu/gemm_micro.cu times,
so the two sit side by side in one device call: python3 gemm_torch.py [M]"""
import sys

import torch

M = int(sys.argv[1]) if len(sys.argv) > 1 else 512
shapes = [("1.3b qkv", 6144, 2048), ("1.3b out", 2048, 2048), ("1.3b fc1", 8192, 2048), ("1.3b fc2", 2048, 8192),
          ("6.7b qkv", 12288, 4096), ("6.7b out", 4096, 4096), ("6.7b fc1", 16384, 4096), ("6.7b fc2", 4096, 16384),
          ("13b qkv", 15360, 5120), ("13b out", 5120, 5120), ("13b fc1", 20480, 5120), ("13b fc2", 5120, 20480)]
print(f"torch {torch.__version__}, M = {M}: ms per F.linear (20 back to back), TFLOP/s")
total = 0.0
for name, n, k in shapes:
    x = torch.randn(M, k, device="cuda", dtype=torch.float16)
    w = torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02
    b = torch.zeros(n, device="cuda", dtype=torch.float16)
    for _ in range(3):
        torch.nn.functional.linear(x, w, b)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        torch.nn.functional.linear(x, w, b)
    stop.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(stop) / 20
    total += ms
    print(f"{name:10s} N={n:5d} K={k:5d}: {ms:.3f} ms {2 * M * n * k / ms / 1e9:.0f} TFLOP/s")
print(f"sum of the 12 GEMMs: {total:.3f} ms")
