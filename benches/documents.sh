#!/usr/bin/env bash
# Documents into the EHR: `$send-to-ehr` throughput for 100 kB PDFs (accepted, then delivered
# to an MLLP EHR answering AA: python-hl7's asyncio server), and the daemon's peak RSS while
# 50 clients send 10 MiB PDFs at once. Release build, SQLite file store, one run.
#
#   benches/documents.sh [DOCUMENTS]      (default 2000 documents of 100 kB, 16 clients)
#
# IN_FLIGHT=n sets `[documents] max_in_flight` (default 4); DOCUMENTS=0 skips the 100 kB run.
#
# Prints the client's figures for each run and the daemon's idle and peak RSS (VmHWM).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
COUNT=${1:-2000}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --quiet --bin ordobridge
BIN=target/release/ordobridge
PEERS=target/bench-peers
if [ ! -x "$PEERS/venv/bin/python" ]; then
  python3 -m venv "$PEERS/venv"
  "$PEERS/venv/bin/pip" install --quiet --disable-pip-version-check hl7==0.4.5 hl7apy==1.3.5
fi
"$PEERS/venv/bin/python" -c 'import hl7apy' 2>/dev/null \
  || "$PEERS/venv/bin/pip" install --quiet --disable-pip-version-check hl7apy==1.3.5


"$PEERS/venv/bin/python" tests/peers/document_receiver.py "$WORK/ehr.log" 0 fast > "$WORK/ehr.out" 2>&1 & PIDS+=($!)
EHR_PORT=$(wait_port "$WORK/ehr.out" 'PORT ')
TOKEN=$(head -c 32 /dev/urandom | base64 | tr -d '=+/')
cat > "$WORK/ob.toml" <<TOML
[store]
path = "$WORK/data/ordobridge.db"
[log]
level = "warn"
[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:0"
[census]
ipp_authority = "CH_EXEMPLE"
[http]
bind = "127.0.0.1:0"
request_timeout = "300s"
[fhir]
token = "$TOKEN"
[outbound.ehr]
protocol = "mllp"
address = "127.0.0.1:$EHR_PORT"
[documents]
max_in_flight = ${IN_FLIGHT:-4}
[[documents.route]]
mapping = "$PWD/mappings/oru-r01-document.toml"
destination = "ehr"
TOML
RUST_LOG=warn,ordobridge::http::serve=info,ordobridge::mllp::server=info "$BIN" run --config "$WORK/ob.toml" > "$WORK/ob.log" 2>&1 & PIDS+=($!); OB_PID=$!
MLLP_PORT=$(wait_port "$WORK/ob.log" 'mllp listener started addr=Some\(127\.0\.0\.1:')
HTTP_PORT=$(wait_port "$WORK/ob.log" 'HTTP listener started addr=Some\(127\.0\.0\.1:')
"$BIN" send --to "127.0.0.1:$MLLP_PORT" samples/adt/02-a01-admit.hl7 > /dev/null
BASE="http://127.0.0.1:$HTTP_PORT"
for _ in $(seq 1 100); do
  PATIENT=$(curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/fhir/Patient?identifier=100001" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["entry"][0]["resource"]["id"] if d["total"] else "")')
  [ -n "$PATIENT" ] && break
  sleep 0.1
done
IDLE_KB=$(awk '/VmRSS/ {print $2}' "/proc/$OB_PID/status")
if [ "$COUNT" -gt 0 ]; then
  echo "## 100 kB PDFs, 16 clients"
  python3 benches/documents_load.py "$BASE" "$TOKEN" "$PATIENT" "$COUNT" 16 100000
fi
AFTER_SMALL_KB=$(awk '/VmHWM/ {print $2}' "/proc/$OB_PID/status")
echo "## 10 MiB PDFs, 50 clients at once (max_in_flight ${IN_FLIGHT:-4})"
python3 benches/documents_load.py "$BASE" "$TOKEN" "$PATIENT" 50 50 $((10 * 1024 * 1024))
PEAK_KB=$(awk '/VmHWM/ {print $2}' "/proc/$OB_PID/status")
echo "daemon RSS: idle $((IDLE_KB / 1024)) MiB, peak after the 100 kB run $((AFTER_SMALL_KB / 1024)) MiB, peak after the 10 MiB run $((PEAK_KB / 1024)) MiB"
