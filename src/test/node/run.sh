#!/usr/bin/env bash
# Starts a dejavu server on a free loopback port with the shipped model, runs the openai npm client tests against it,
# and stops the server with SIGTERM (graceful shutdown). Usage: src/test/node/run.sh (from anywhere).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$here"
[ -d node_modules/openai ] || npm ci --no-audit --no-fund >&2
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
log=$(mktemp)
"$root/bin/dejavu" serve --port "$port" --http-instances 1 >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 240); do
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then echo "the server did not start:" >&2; cat "$log" >&2; exit 1; fi
  sleep 0.5
done
DEJAVU_URL="http://127.0.0.1:$port" node --test openai-client.test.mjs
