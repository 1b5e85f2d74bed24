#!/usr/bin/env python3
"""Inter-token latency of a running dejavu-serve as streaming clients see it.

Sends N concurrent streaming /v1/completions requests (greedy, max_tokens each, the same prompt), ROUNDS times,
and prints one line: tokens/s, p50 and p99 of the gaps between a stream's consecutive chunks, and p50 of the time
to the first chunk. Standard library only (the GPU machine has no network to install from).

    python3 scripts/gpu/service_itl.py --port 8080 --streams 16 --max-tokens 128 [--extra '{"min_p": 1e-9}']
"""
import argparse
import http.client
import json
import threading
import time


def stream(port, body, gaps, firsts, counts, errors):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start = time.perf_counter()
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            errors.append(f"HTTP {response.status}: {response.read()[:200]!r}")
            return
        last, tokens = None, 0
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if not chunk.get("choices") or chunk["choices"][0].get("finish_reason") and not chunk["choices"][0].get("text"):
                continue
            now = time.perf_counter()
            if last is None:
                firsts.append(now - start)
            else:
                gaps.append(now - last)
            last, tokens = now, tokens + 1
        counts.append(tokens)
        conn.close()
    except Exception as e:  # reported, not raised: one failed stream must not hide the others' figures
        errors.append(repr(e))


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt", default="The history of the world is")
    parser.add_argument("--extra", default="{}", help="JSON object merged into each request")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    body = {"prompt": args.prompt, "max_tokens": args.max_tokens, "temperature": 0, "stream": True}
    body.update(json.loads(args.extra))
    gaps, firsts, counts, errors = [], [], [], []
    wall = 0.0
    for _ in range(args.rounds):
        threads = [threading.Thread(target=stream, args=(args.port, body, gaps, firsts, counts, errors))
                   for _ in range(args.streams)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall += time.perf_counter() - start
    if errors or not gaps:
        print(f"{args.label} errors: {errors[:3]}")
        raise SystemExit(1)
    print(f"{args.label} streams {args.streams} tokens {sum(counts)} tok/s {sum(counts) / wall:.0f} "
          f"itl_p50_ms {1000 * percentile(gaps, 50):.3f} itl_p99_ms {1000 * percentile(gaps, 99):.3f} "
          f"ttft_p50_ms {1000 * percentile(firsts, 50):.1f}")


if __name__ == "__main__":
    main()
