#!/usr/bin/env bash
# Inbox throughput: N small HL7 files (default 2,000) dropped at once into a file channel;
# measures the time until every file is committed and archived. Also N HPRIM files with
# witnesses. Prints files/s for each.
#
#   benches/inbox.sh [N]
#   OB_BIN=path/to/ordobridge benches/inbox.sh [N]   # that binary, not built (to compare builds:
#                                                  # run the old and the new one after the other)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
BIN=${OB_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --quiet
  BIN=./target/release/ordobridge
fi
cat > "$WORK/ob.toml" <<TOML
[store]
path = "$WORK/data/ob.db"
[log]
level = "warn"
[inbound.hl7]
protocol = "file"
folder = "$WORK/in/hl7"
create_folder = true
patterns = ["*.hl7"]
format = "hl7"
ready = "stable"
stable_for = "1ms"
poll_interval = "20ms"
[inbound.hprim]
protocol = "file"
folder = "$WORK/in/hprim"
create_folder = true
patterns = ["*.HPR"]
format = "hprim"
ready = "witness"
poll_interval = "20ms"
TOML
mkdir -p "$WORK/stage/hl7" "$WORK/stage/hprim" "$WORK/in/hl7" "$WORK/in/hprim"
python3 - "$WORK/stage" "$N" <<'PY'
import sys
stage, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    open(f"{stage}/hl7/m{i:05}.hl7", "w").write(
        f"MSH|^~\\&|DPI|CH|OB|POSOS|20261122101500||ADT^A01^ADT_A01|B{i:06}|P|2.5\r"
        f"PID|1||{100000+i}^^^CH_EXEMPLE^PI||DURAND^JEANNE||19750412|F\r"
        f"PV1|1|I|CARDIO||||||||||||||||{900000+i}^^^CH_EXEMPLE^VN\r")
    open(f"{stage}/hprim/R{i:05}.HPR", "wb").write((
        f"H|~^\\&|R{i:05}.HPR||LAB01~LABO||ORU|||CHEX||P|H2.2~C|20261122103000\r\n"
        f"P|1|{100000+i}|L{i}||DURAND~JEANNE||19750412|F\r\n"
        "OBR|1|||NFS~Numeration|||20261122080000\r\n"
        "OBX|1|NM|HB~Hemoglobine||12.9|g/dL|12.0-16.0|N|||F\r\nL|1\r\n").encode("latin-1"))
PY
"$BIN" run --config "$WORK/ob.toml" > "$WORK/log" 2>&1 &
PID=$!
sleep 1
count() { find "$1" -name "$2" 2>/dev/null | wc -l; }
measure() { # kind pattern
  local start end
  start=$(date +%s.%N)
  mv "$WORK/stage/$1"/* "$WORK/in/$1/"
  if [ "$1" = hprim ]; then for f in "$WORK/in/hprim"/*.HPR; do : > "${f%.HPR}.OK"; done; fi
  until [ "$(count "$WORK/in/$1/archive" "$2")" -ge "$N" ]; do sleep 0.05; done
  end=$(date +%s.%N)
  python3 -c "print(f'$1: $N files committed and archived in {$end-$start:.2f} s = {$N/($end-$start):.0f} files/s')"
}
measure hl7 '*.hl7'
measure hprim '*.HPR'
