#!/usr/bin/env bash
# Instructions per message on the daemon's tokio workers (MLLP framing, HL7 parse, duplicate
# hash, ACK, census interpretation), counted by callgrind: unlike msgs/s on this shared machine,
# the count does not swing with the other processes' load, so two builds compare exactly.
#
#   benches/mllp_callgrind.sh BIN [MESSAGES] [CONNECTIONS]   (defaults 5000 messages, 64)
#
# Runs BIN under `valgrind --tool=callgrind --separate-threads=yes` with a fresh store, loads it
# with `BIN load` (synthetic ADT, unique MSH-10), stops it, and prints per message: the tokio
# workers' total, the same without SHA-256 (valgrind hides the CPU's SHA extensions, so the
# duplicate hash runs in software here, ~50,000 instructions, where the daemon uses SHA-NI), the
# MLLP connection task (`Handler::run`: read, parse, journal request, ACK), `read_hl7` and the
# census processor. Needs `valgrind` and `callgrind_annotate` (Debian `valgrind`).
set -euo pipefail
BIN=$(realpath "$1")
MESSAGES=${2:-5000}
CONNS=${3:-64}
WORK=$(mktemp -d)
VG=""
cleanup() { [ -n "$VG" ] && kill "$VG" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
source "$(dirname "$0")/lib.sh"
mllp_intake_toml "$WORK/ordobridge.db" > "$WORK/ob.toml"
RUST_LOG=warn,ordobridge=info valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$WORK/cg.out" \
  "$BIN" run --config "$WORK/ob.toml" > "$WORK/ob.log" 2>&1 & VG=$!
# Under valgrind the daemon takes a while to start: up to 5 minutes.
port=$(wait_port "$WORK/ob.log" '127\.0\.0\.1:' 600 0.5)
"$BIN" load --to "127.0.0.1:$port" --connections "$CONNS" --messages "$MESSAGES" > "$WORK/load.txt"
# Let the census processor catch up before stopping.
sleep 5
kill -INT "$VG"; wait "$VG" || true; VG=""
# The tokio workers are the threads whose profile names `Handler<H>::run`.
total=0; sha=0; handler=0; readhl7=0; processor=0
sum() { { grep -F "$1" "$2" || true; } | awk '{gsub(",", "", $1); s += $1} END {print s + 0}'; }
for f in "$WORK"/cg.out-*; do
  # From the work folder: callgrind_annotate shortens paths under the current folder.
  (cd "$WORK" && callgrind_annotate --inclusive=yes "$f") > "$f.txt" 2>/dev/null || continue
  grep -qF 'ordobridge::mllp::server::Handler<H>::run::{{closure}} [' "$f.txt" || continue
  total=$((total + $(grep -m1 '^summary' "$f" | awk '{print $2}')))
  sha=$((sha + $(sum 'ordobridge::store::writer::Prepared::new [' "$f.txt")))
  handler=$((handler + $(sum '/src/mllp/server.rs:ordobridge::mllp::server::Handler<H>::run::{{closure}} [' "$f.txt")))
  readhl7=$((readhl7 + $(sum 'ordobridge::engine::intake::read_hl7 [' "$f.txt")))
  processor=$((processor + $(sum '/src/engine/lease.rs:ordobridge::engine::lease::run_leased::{{closure}} [' "$f.txt")))
done
n=$MESSAGES
echo "$(basename "$BIN"), $n messages, $CONNS connections, instructions per message on the tokio workers:"
echo "  total $((total / n)), without SHA-256 $(((total - sha) / n))"
echo "  MLLP connection task $((handler / n)), without SHA-256 $(((handler - sha) / n)); read_hl7 $((readhl7 / n))"
echo "  census processor $((processor / n))"
