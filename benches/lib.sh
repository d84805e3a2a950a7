# Shared by the benchmark scripts: `source benches/lib.sh` from the repository's root.

# wait_port FILE [PATTERN] [TRIES] [PAUSE]: waits until FILE holds PATTERN followed by a port
# number and prints the port; after TRIES × PAUSE seconds (300 × 0.1 s), prints FILE and exits
# the script. The default pattern takes a peer's `PORT n` line or the daemon's listening line
# (its first `127.0.0.1:n`); give `addr=127\.0\.0\.1:` when the log also names a database URL.
wait_port() {
  local file=$1 pattern=${2:-'(PORT |127\.0\.0\.1:)'} tries=${3:-300} pause=${4:-0.1}
  for _ in $(seq 1 "$tries"); do
    local port
    port=$(grep -o -m1 -E "$pattern[0-9]+" "$file" 2>/dev/null | grep -o -E '[0-9]+$' || true)
    if [ -n "$port" ]; then echo "$port"; return; fi
    sleep "$pause"
  done
  echo "no port in $file" >&2; cat "$file" >&2; exit 1
}

# mllp_intake_toml STORE_PATH [STORE_LINES]: prints the daemon's configuration of the MLLP
# intake benchmarks: the store at STORE_PATH (STORE_LINES added to `[store]`), warnings and the
# engine's info lines (the listening line gives the port), one MLLP listener on a free port
# that takes the load tool's connections from one address.
mllp_intake_toml() {
  cat <<TOML
[store]
path = "$1"
${2:-}
TOML
  mllp_listener_toml
}

# mllp_listener_toml: the `[log]` and `[inbound.adt-in]` tables of mllp_intake_toml, for a
# script that writes its own store (and cluster) tables before them.
mllp_listener_toml() {
  cat <<TOML
[log]
level = "warn,ordobridge::engine=info"
[inbound.adt-in]
protocol = "mllp"
bind = "127.0.0.1:0"
# the load tool opens 64 connections from one address
max_connections_per_peer = 256
TOML
}
