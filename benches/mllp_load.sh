#!/usr/bin/env bash
# MLLP load comparison: ordobridge (every ACK after its frame is durable: `fdatasync` of the intake
# log, or the journal's commit with `intake_log = false`) against two peers
# that answer AA without storing anything: python-hl7's asyncio MLLP server (PyPI `hl7`) and
# Medplum's Hl7Server (npm `@medplum/hl7`). Same load tool, same corpus, same run.
#
#   benches/mllp_load.sh [MESSAGES]     (default 200000 for 64 connections, 20000 for 1;
#                                        python-hl7, much slower, gets a twentieth of that)
#
# Prints a markdown table (msgs/s, p50, p99) and ordobridge's idle and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
MESSAGES=${1:-200000}
SINGLE=$((MESSAGES / 10))
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --quiet
BIN=target/release/ordobridge
PEERS=target/bench-peers
if [ ! -x "$PEERS/venv/bin/python" ]; then
  python3 -m venv "$PEERS/venv"
  "$PEERS/venv/bin/pip" install --quiet --disable-pip-version-check hl7==0.4.5
fi
if [ ! -d "$PEERS/node/node_modules/@medplum/hl7" ]; then
  mkdir -p "$PEERS/node"
  (cd "$PEERS/node" && npm init -y >/dev/null && npm install --silent @medplum/hl7@4 >/dev/null)
fi


mllp_intake_toml "$WORK/data/ordobridge.db" > "$WORK/ob.toml"
RUST_LOG=warn,ordobridge=info "$BIN" run --config "$WORK/ob.toml" > "$WORK/ob.log" 2>&1 & PIDS+=($!); OB_PID=$!
OB_PORT=$(wait_port "$WORK/ob.log")
"$PEERS/venv/bin/python" tests/peers/python_hl7_server.py 0 > "$WORK/py.log" 2>&1 & PIDS+=($!)
PY_PORT=$(wait_port "$WORK/py.log")
NODE_PATH="$PWD/$PEERS/node/node_modules" node tests/peers/medplum_server.js 0 > "$WORK/node.log" 2>&1 & PIDS+=($!)
NODE_PORT=$(wait_port "$WORK/node.log")
IDLE_KB=$(awk '/VmRSS/ {print $2}' "/proc/$OB_PID/status")

run() { # name port connections messages
  local out
  out=$("$BIN" load --to "127.0.0.1:$2" --connections "$3" --messages "$4" || true)
  local rate p50 p99
  rate=$(echo "$out" | awk '/throughput/ {print $2}')
  p50=$(echo "$out" | awk '/latency/ {print $3}')
  p99=$(echo "$out" | awk '/latency/ {print $6}')
  local ok
  ok=$(echo "$out" | awk '/acked ok/ {print $3}')
  printf '| %-29s | %5s | %8s | %10s | %8s | %8s |\n' "$1" "$3" "$ok" "$rate" "$p50" "$p99"
}

echo "| receiver                      | conns |  acked   |   msg/s    | p50 ms   | p99 ms   |"
echo "|-------------------------------|-------|----------|------------|----------|----------|"
for conns in 64 1; do
  n=$MESSAGES; [ "$conns" = 1 ] && n=$SINGLE
  run "ordobridge (durable ACK)" "$OB_PORT" "$conns" "$n"
  run "python-hl7 asyncio (no store)" "$PY_PORT" "$conns" "$((n / 20))"
  run "medplum Hl7Server (no store)" "$NODE_PORT" "$conns" "$n"
done
PEAK_KB=$(awk '/VmHWM/ {print $2}' "/proc/$OB_PID/status")
echo
echo "ordobridge RSS: idle $((IDLE_KB / 1024)) MiB, peak $((PEAK_KB / 1024)) MiB"
