#!/usr/bin/env bash
# MLLP intake, two ordobridge builds against the null responder, alternating in one run: every
# round starts a fresh daemon (fresh store) per build, loads it over 64 connections (every ACK
# after an fsync'd commit, the census applied behind while the load runs), then loads the null
# responder (benches/mllp_null.rs: reads frames, answers AA, parses and stores nothing). Prints
# msgs/s, p50/p99 and the ratio to the null responder of the same round.
#
#   benches/mllp_ab.sh OLD_BIN NEW_BIN [MESSAGES] [ROUNDS] [CONNECTIONS]
#       (defaults 100000 messages, 4 rounds, 64 connections)
#
# With 1 connection every ACK needs its own commit, so each round also prints the serial
# bound (issue 15): 1 / (median `fdatasync` of a small append in the stores' folder + the null
# responder's median round trip), and each build's ratio to it.
#
# The last two lines compare the builds: new / old round by round, their median, and in how
# many rounds the new build was faster (the old one runs first in odd rounds, second in even
# ones).
#
# "stop s" is how long the daemon took to stop after the load (SIGTERM): with the intake log,
# the journal copying what the flood left behind.
#
# OLD_STORE / NEW_STORE (environment) add lines to each build's `[store]` table, to compare
# settings with one binary: `OLD_STORE='intake_log = false' benches/mllp_ab.sh BIN BIN` (the
# intake log is on by default since session 10; builds before it need `intake_log = true`).
#
# Build first: `cargo build --release && cargo bench --bench mllp_null --no-run`; OLD_BIN is a
# copy of target/release/ordobridge from the main being compared.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
OLD=$1
NEW=$2
MESSAGES=${3:-100000}
ROUNDS=${4:-4}
CONNS=${5:-64}
OLD_STORE=${OLD_STORE:-}
NEW_STORE=${NEW_STORE:-}
WORK=$(mktemp -d)
PIDS=()
ratios=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

NULL_BIN=$(find target/release/deps -maxdepth 1 -type f -executable -name 'mllp_null-*' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
[ -x "$NULL_BIN" ] || { echo "no mllp_null bench binary: cargo bench --bench mllp_null --no-run" >&2; exit 1; }


# load PORT: prints "rate p50 p99"
load() {
  local out
  out=$("$NEW" load --to "127.0.0.1:$1" --connections "$CONNS" --messages "$MESSAGES" || true)
  echo "$(echo "$out" | awk '/throughput/ {print $2}') $(echo "$out" | awk '/latency/ {print $3, $6}' | tr -d ',')"
}

"$NULL_BIN" 0 > "$WORK/null.log" 2>&1 & PIDS+=($!)
NULL_PORT=$(wait_port "$WORK/null.log")

# fsync_ms: the median fdatasync of a 200-byte append in the stores' folder, in ms.
fsync_ms() {
  python3 - "$WORK/fsync-probe" <<'PY'
import os, statistics, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
took = []
for _ in range(500):
    os.write(fd, b"x" * 200)
    start = time.perf_counter()
    os.fdatasync(fd)
    took.append(time.perf_counter() - start)
os.close(fd)
os.unlink(sys.argv[1])
print(f"{statistics.median(took) * 1000:.3f}")
PY
}

echo "| round | receiver | msg/s | p50 ms | p99 ms | / null | / serial bound | stop s |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  read -r null_rate null_p50 null_p99 <<< "$(load "$NULL_PORT")"
  echo "| $round | null responder | $null_rate | $null_p50 | $null_p99 | | |"
  bound=""
  if [ "$CONNS" = 1 ]; then
    fsync=$(fsync_ms)
    bound=$(awk -v f="$fsync" -v n="$null_p50" 'BEGIN { printf "%.0f", 1000 / (f + n) }')
    echo "| $round | serial bound: 1 / (fdatasync $fsync ms + null round trip $null_p50 ms) | $bound | | | | |"
  fi
  # Odd rounds run the old build first, even rounds the new one, so that an order effect
  # (the second build of a round runs on a machine the first has just loaded) cancels out.
  order="old new"; [ $((round % 2)) = 0 ] && order="new old"
  for name in $order; do
    bin=$OLD; [ "$name" = new ] && bin=$NEW
    dir="$WORK/$name-$round"
    mkdir -p "$dir"
    store_lines=$OLD_STORE; [ "$name" = new ] && store_lines=$NEW_STORE
    mllp_intake_toml "$dir/ordobridge.db" "$store_lines" > "$dir/ob.toml"
    RUST_LOG=warn,ordobridge=info "$bin" run --config "$dir/ob.toml" > "$dir/ob.log" 2>&1 & pid=$!; PIDS+=($pid)
    port=$(wait_port "$dir/ob.log")
    read -r rate p50 p99 <<< "$(load "$port")"
    ratio=$(awk -v a="$rate" -v b="$null_rate" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b }')
    to_bound=$(awk -v a="$rate" -v b="$bound" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b }')
    stop_started=$(date +%s.%N)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    stop=$(awk -v a="$stop_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    echo "| $round | ordobridge $name | $rate | $p50 | $p99 | $ratio | $to_bound | $stop |"
    if [ "$name" = old ]; then old_rate=$rate; else new_rate=$rate; fi
    rm -rf "$dir"
  done
  # "first" is the build that ran first in this round; a round where a load failed (no rate)
  # is left out of the summary.
  first=${order%% *}
  ratio=$(awk -v a="$new_rate" -v b="$old_rate" 'BEGIN { if (a > 0 && b > 0) printf "%.3f", a / b }')
  [ -n "$ratio" ] && ratios+=("$ratio $first")
  old_rate=""; new_rate=""
done
# new / old round by round, their median (all rounds, and by which build ran first), and in
# how many rounds the new build was faster.
echo
printf '%s\n' "${ratios[@]}" | awk -v rounds="$ROUNDS" '
  function median(values, n,    i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && values[j - 1] > values[j]; j--) {
      t = values[j]; values[j] = values[j - 1]; values[j - 1] = t
    }
    return (n % 2) ? values[(n + 1) / 2] : (values[n / 2] + values[n / 2 + 1]) / 2
  }
  NF == 2 {
    all[++n] = $1; line = line " " $1
    if ($1 > 1) faster++
    if ($2 == "old") old_first[++o] = $1; else new_first[++f] = $1
  }
  END {
    if (n == 0) { print "new / old: no round where both builds were measured"; exit }
    printf "new / old: median %.3f (old first %s, new first %s), new faster in %d of %d rounds measured (%d run)\n", median(all, n), o ? sprintf("%.3f", median(old_first, o)) : "-", f ? sprintf("%.3f", median(new_first, f)) : "-", faster, n, rounds
    print "new / old round by round:" line
  }'
[ $((ROUNDS % 2)) = 0 ] || echo "(an odd number of rounds: the old build ran first once more than the new one)"
