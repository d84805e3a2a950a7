#!/usr/bin/env bash
# Retention under load: MLLP intake at 64 connections while the background pruner deletes
# ROWS old journal rows, against the same load on the same store with pruning off, same run.
# Also the prune rate and the store file size before and after.
#
#   benches/prune_load.sh [ROWS] [MESSAGES]     (defaults 1000000 and 150000)
#
# The old rows are written straight into the SQLite file (Python's sqlite3), 100 days old and
# `processed`, ~200 bytes each, as a year of a busy ADT feed would leave them.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
ROWS=${1:-1000000}
MESSAGES=${2:-150000}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --quiet
BIN=target/release/ordobridge
DB="$WORK/data/ordobridge.db"

config() { # retention prune_interval
  mllp_intake_toml "$DB" "retention = \"$1\"
rejected_retention = \"$1\"
prune_interval = \"$2\"" > "$WORK/ob.toml"
}


# The store, created and migrated (by a dry run), then filled with old rows.
config 90d 24h
"$BIN" prune --config "$WORK/ob.toml" --dry-run > /dev/null
python3 - "$DB" "$ROWS" <<'PY'
import hashlib, sqlite3, sys, time
db, rows = sys.argv[1], int(sys.argv[2])
old = int((time.time() - 100 * 86400) * 1_000_000)
con = sqlite3.connect(db)
body = b"MSH|^~\\&|DPI|CH|OB|POSOS|20260801000000||ADT^A01^ADT_A01|%d|P|2.5\rPID|1||%d^^^CH^PI||OLD^ROW\r" + b"x" * 120
def gen():
    for i in range(rows):
        raw = body % (i, i)
        yield ("adt-in", old + i, "127.0.0.1:1", "DPI^CH", "ADT^A01", "OLD%d" % i,
               hashlib.sha256(raw).digest(), raw, "processed", old + i)
con.executemany(
    "INSERT INTO journal (channel, received_at, peer, sender, message_type, control_id,"
    " content_hash, raw, status, last_seen_at, kept) VALUES (?,?,?,?,?,?,?,?,?,?,1)", gen())
con.commit()
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
con.close()
PY
SIZE_BEFORE=$(stat -c %s "$DB")

run_load() { # label
  RUST_LOG=warn,ordobridge=info "$BIN" run --config "$WORK/ob.toml" > "$WORK/ob.log" 2>&1 & PIDS+=($!); local pid=$!
  local port; port=$(wait_port "$WORK/ob.log")
  local out; out=$("$BIN" load --to "127.0.0.1:$port" --connections 64 --messages "$MESSAGES")
  printf '| %-34s | %10s | %8s | %8s |\n' "$1" \
    "$(echo "$out" | awk '/throughput/ {print $2}')" \
    "$(echo "$out" | awk '/latency/ {print $3}')" \
    "$(echo "$out" | awk '/latency/ {print $6}')"
  echo "$pid" > "$WORK/pid"
}

echo "| intake at 64 connections           |   msg/s    | p50 ms   | p99 ms   |"
echo "|------------------------------------|------------|----------|----------|"
config forever 24h
run_load "no prune (retention forever)"
kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true

config 90d 1s
run_load "while pruning $ROWS old rows"
# Wait for the prune to finish (its log line), then stop.
for _ in $(seq 1 600); do
  grep -q "pruned rows past their retention" "$WORK/ob.log" && break
  sleep 1
done
kill "$(cat "$WORK/pid")"; wait "$(cat "$WORK/pid")" 2>/dev/null || true
LINE=$(grep "pruned rows past their retention" "$WORK/ob.log" | head -1)
echo
echo "prune: $LINE"
JOURNAL=$(echo "$LINE" | grep -o -E 'journal=[0-9]+' | cut -d= -f2)
SECONDS_TAKEN=$(echo "$LINE" | grep -o -E 'seconds=[0-9.]+' | cut -d= -f2)
echo "prune rate: $(python3 -c "print(round($JOURNAL / $SECONDS_TAKEN))") rows/s"
SIZE_STOPPED=$(stat -c %s "$DB")
# The census was still applying the load's ADT when the prune ended, so the log was never
# copied back whole; at the next quiet moment a checkpoint truncates the file: do it here.
python3 -c "import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" "$DB"
echo "store file: $((SIZE_BEFORE / 1048576)) MiB before (1,000,000 old rows), $((SIZE_STOPPED / 1048576)) MiB when the daemon stopped, $(($(stat -c %s "$DB") / 1048576)) MiB after a checkpoint (${MESSAGES} x 2 new messages kept)"
