#!/usr/bin/env bash
# End-to-end test of the browser playground: Debian's chromium driven by playwright-core against two real servers
# (models/opt-demo, CPU engine, free loopback ports): an open one, and one that asks for an API key.
# Installs what it needs (chromium from apt when missing, playwright-core from npm), stops the servers on exit, and
# exits non-zero on failure. Screenshots go to target/e2e/. Usage: src/test/e2e/run.sh (from anywhere).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$here"

if ! [ -x /usr/bin/chromium ]; then
  [ "$(id -u)" = 0 ] || { echo "e2e: needs Debian's chromium; run as root or: apt-get install -y chromium" >&2; exit 1; }
  apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2
fi
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund >&2

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
servers=()
logs=()
cleanup() {
  for pid in "${servers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "${logs[@]}"
}
trap cleanup EXIT

# start_server PORT ARGS...: starts bin/dejavu serve in the background and waits until /health answers.
start_server() {
  local port=$1 log
  shift
  log=$(mktemp)
  logs+=("$log")
  "$root/bin/dejavu" serve --model "$root/models/opt-demo" --backend cpu --host 127.0.0.1 --port "$port" \
    --http-instances 1 --webroot "$root/webroot" "$@" >"$log" 2>&1 &
  local pid=$!
  servers+=("$pid")
  for _ in $(seq 1 240); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "e2e: the server did not start:" >&2; cat "$log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "e2e: the server on port $port did not answer in 120 s" >&2
  exit 1
}

open_port=$(free_port)
start_server "$open_port" --max-prompt-tokens 96
keyed_port=$(free_port)
start_server "$keyed_port" --api-keys e2e-secret

mkdir -p "$root/target/e2e"
DEJAVU_URL="http://127.0.0.1:$open_port" DEJAVU_KEYED_URL="http://127.0.0.1:$keyed_port" DEJAVU_KEY=e2e-secret \
  SCREENSHOTS="$root/target/e2e" node --test --test-concurrency=1 playground.test.mjs
