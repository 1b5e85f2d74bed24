"""Reads RESULT lines (CUDA benchmark and PyTorch baseline) from the given logs and prints one comparison table."""
import sys

GOALS = {("opt-1.3b", 1): 1.15, ("opt-6.7b", 1): 5.2, ("opt-13b", 1): 10.0}

rows, sparse = {}, []
for path in sys.argv[1:]:
    for line in open(path, errors="replace"):
        if not line.startswith("RESULT "):
            continue
        kv = dict(p.split("=", 1) for p in line.split()[1:])
        if kv["engine"] == "cuda-sparse":
            sparse.append(kv)
        else:
            rows.setdefault((kv["shape"], int(kv["batch"])), {})[kv["engine"]] = kv

print("| shape | batch | floor ms/step | CUDA ms/step | CUDA GPU ms/step (graph back to back) | CUDA with PDL | % of floor | CUDA tokens/s | CUDA GB/s | goal | "
      "PyTorch ms/step | CUDA prefill ms | CUDA prefill ms, wmma GEMM | PyTorch prefill ms |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (shape, batch), e in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    c, t, n = e.get("cuda"), e.get("torch"), e.get("cuda-pdl")
    f = lambda d, k, fmt="{:.3f}": fmt.format(float(d[k])) if d and k in d else "-"
    pct = f"{100 * float(c['floor_ms']) / float(c['step_ms']):.0f}%" if c else "-"
    goal = GOALS.get((shape, batch))
    print(f"| {shape} | {batch} | {f(c, 'floor_ms')} | {f(c, 'step_ms')} | {f(c, 'graph_ms')} | {f(n, 'step_ms')} | {pct} | {f(c, 'tok_s', '{:.0f}')} | "
          f"{f(c, 'gb_s', '{:.0f}')} | {'<= %.2f' % goal if goal else '-'} | {f(t, 'step_ms')} | "
          f"{f(c, 'prefill_ms', '{:.2f}')} | {f(c, 'prefill_wmma_ms', '{:.2f}')} | {f(t, 'prefill_ms', '{:.2f}')} |")

if sparse:
    print()
    print("| shape | batch | rank | MLP rule | MLP kept a token | heads kept a token | dense ms/step | sparse ms/step | sparse GPU ms/step | speedup | MLP union | heads union |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kv in sparse:
        g = lambda k, fmt="{:.3f}": fmt.format(float(kv[k]))
        print(f"| {kv['shape']} | {kv['batch']} | {kv['rank']} | {kv.get('rule', 'top-k')} | {g('mlp_keep', '{:.2f}')} | {g('heads_keep', '{:.2f}')} | "
              f"{g('dense_ms')} | {g('sparse_ms')} | {g('sparse_graph_ms')} | {g('speedup', '{:.2f}x')} | "
              f"{100 * float(kv['mlp_computed']):.1f}% | {100 * float(kv['heads_computed']):.1f}% |")
