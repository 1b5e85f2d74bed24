#!/usr/bin/env bash
# Compiles every src/main/cuda/*.cu into a fatbin (sm_80 and sm_90a cubins plus compute_90 PTX, so newer GPUs
# JIT it) under the given output folder, which Maven packs into the jar. sm_90a (H100/H200) adds Hopper's
# warpgroup MMA to the prefill GEMM; the PTX leaves it out. Without nvcc the CPU engine still builds.
set -euo pipefail
out=${1:?usage: build.sh OUTPUT_DIR}
src=$(cd "$(dirname "$0")" && pwd)
shopt -s nullglob
sources=("$src"/*.cu)
if [ ${#sources[@]} -eq 0 ]; then exit 0; fi
if ! command -v nvcc >/dev/null 2>&1; then
  echo "[cuda] nvcc not found: building without CUDA kernels (the cpu backend still works)"
  exit 0
fi
mkdir -p "$out"
for cu in "${sources[@]}"; do
  name=$(basename "$cu" .cu)
  if [ "$out/$name.fatbin" -nt "$cu" ] && [ -z "$(find "$src" -name '*.cuh' -newer "$out/$name.fatbin")" ]; then continue; fi
  echo "[cuda] nvcc $name.cu"
  nvcc -O3 -std=c++17 -lineinfo --fatbin \
    -gencode arch=compute_80,code=sm_80 \
    -gencode arch=compute_90a,code=sm_90a \
    -gencode arch=compute_90,code=compute_90 \
    -o "$out/$name.fatbin" "$cu"
done
