#!/usr/bin/env bash
# Runs on the GPU machine in one call: unpacks the Java runtime carried in .device/, runs the GPU tests, the CUDA
# benchmark and the PyTorch baseline on the same shapes, and prints one comparison table. Builds nothing there.
# .device/ holds: jre.tar.xz (../shared/device/make-jre.sh), dejavu-serve.jar, test-classes/, junit/*.jar,
# GpuTestMain.class, shared.tar.xz (the tiny golden models) and these scripts. Logs go to $OUT.
# STAGES (default "tests bench torch sparse sanitizer") picks stages; BENCH_RUNS lists SHAPE:BATCH runs of the dense
# decoder; SPARSE_SHAPES the shapes of the Deja Vu benchmark (dense and sparse decode side by side, batches
# SPARSE_BATCHES, plus the curve of ms/token against the share kept); "load" runs the service load test on the host's
# CPUs LOAD_RUNS times.
set -uo pipefail
D=${DEVICE_DIR:-.device}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
STAGES=${STAGES:-tests bench torch sparse sanitizer}
BENCH_RUNS=${BENCH_RUNS:-opt-1.3b:1 opt-6.7b:1 opt-13b:1 opt-6.7b:16}
PROMPT=${PROMPT_LEN:-512}
GEN=${GEN_LEN:-128}
[ -x /tmp/jre/bin/java ] || tar xJf "$D/jre.tar.xz" -C /tmp
[ -d /tmp/shared/golden ] || tar xJf "$D/shared.tar.xz" -C /tmp
JAVA=(/tmp/jre/bin/java --add-modules=jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Xmx8g)
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/device.txt"
status=0
if [[ " $STAGES " == *" tests "* ]]; then
  CP="$D/dejavu-serve.jar:$D/test-classes:$D:$(ls "$D"/junit/*.jar | tr '\n' ':')"
  "${JAVA[@]}" -Ddejavu.shared=/tmp/shared -cp "$CP" GpuTestMain 2>&1 | tee "$OUT/tests.log" || status=1
fi
if [[ " $STAGES " == *" sanitizer "* ]] && command -v compute-sanitizer >/dev/null; then
  CP="$D/dejavu-serve.jar:$D/test-classes:$D:$(ls "$D"/junit/*.jar | tr '\n' ':')"
  timeout "${SANITIZER_TIMEOUT:-300}" compute-sanitizer --tool memcheck --error-exitcode 9 "${JAVA[@]}" \
    -Ddejavu.shared=/tmp/shared -cp "$CP" GpuTestMain ${SANITIZER_TESTS:-io.dejavu.engine.cuda.CudaEngineGoldenTest} \
    > "$OUT/sanitizer.log" 2>&1
  echo "compute-sanitizer memcheck exit status $? (0 = clean, 9 = errors found, 124 = timed out)" | tee -a "$OUT/sanitizer.log"
  grep -E "ERROR SUMMARY|tests (successful|failed)|^FAILED" "$OUT/sanitizer.log"
fi
if [[ " $STAGES " == *" bench "* ]]; then
  for run in $BENCH_RUNS; do
    "${JAVA[@]}" -jar "$D/dejavu-serve.jar" bench --backend cuda --shape "${run%%:*}" --batch "${run##*:}" \
      --prompt-len "$PROMPT" --gen-len "$GEN" ${BENCH_FLAGS:-} 2>&1 | tee -a "$OUT/bench-cuda.log"
  done
fi
if [[ " $STAGES " == *" sparse "* ]]; then
  for shape in ${SPARSE_SHAPES:-opt-6.7b opt-13b}; do
    "${JAVA[@]}" -jar "$D/dejavu-serve.jar" bench --backend cuda --sparse --shape "$shape" --batch "${SPARSE_BATCHES:-1,2,4,8,16}" \
      --prompt-len "$PROMPT" --gen-len "$GEN" ${SPARSE_FLAGS:---sweep} 2>&1 | tee -a "$OUT/bench-sparse.log"
  done
fi
if [[ " $STAGES " == *" torch "* ]]; then
  PYTHONUNBUFFERED=1 python3 "$D/torch_baseline.py" $BENCH_RUNS --prompt-len "$PROMPT" --gen-len "$GEN" 2>&1 \
    | grep -v Warning | tee "$OUT/bench-torch.log"
fi
if [[ " $STAGES " == *" load "* ]]; then
  # The service load test on the host's CPUs (the CPU engine; the GPU idles), LOAD_RUNS rounds. The model is opt-mini's
  # shapes with random weights (its work depends on the shapes only), made by transformers from the carried config.
  M=/tmp/opt-mini-shape
  [ -f "$M/model.safetensors" ] || python3 - "$D/mini" "$M" <<'PY'
import shutil, sys, torch, transformers
src, dst = sys.argv[1:]
torch.manual_seed(0)
transformers.OPTForCausalLM(transformers.OPTConfig.from_pretrained(src)).half().save_pretrained(dst)
for name in ("generation_config.json", "tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt"):
    shutil.copy(f"{src}/{name}", dst)
PY
  for run in $(seq "${LOAD_RUNS:-1}"); do
    "${JAVA[@]}" -XX:+UseG1GC -Xms8g -Xmx8g -Xmn6g -XX:+AlwaysPreTouch -cp "$D/dejavu-serve.jar:$D/test-classes" \
      io.dejavu.bench.ServiceLoadBenchmark "$M" 64 48 ${LOAD_SETTINGS:-max_num_batched_tokens=68 cpu_threads=11} 2>&1 \
      | tee -a "$OUT/load.log" | grep -E "goal|delivered|p99 / p50"
  done
fi
python3 "$D/compare.py" "$OUT"/bench-*.log 2>/dev/null | tee "$OUT/table.md"
exit $status
