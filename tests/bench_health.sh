#!/usr/bin/env bash
# tests/bench_health.sh: what health checks cost an idle agent (docs/protocol.md
# section 6, "Health").
#
#   bash tests/bench_health.sh      (from anywhere; about 5 minutes, most of it the
#                                    idle windows and the release build)
#
# Builds the release binary and the reference server, then, twice, starts BootAgent
# (step 600: no report falls in the window) with 10 preinstalled children that each
# write a heartbeat every 20 s and otherwise sleep:
#   with       `health: {heartbeat_file, heartbeat_timeout_s: H}` on every child;
#   without    the same children with no health settings (the baseline: 0 wake-ups).
# After the first report and a settling pause, it counts BootAgent's context switches
# (voluntary + nonvoluntary, every thread) over BENCH_IDLE_SECONDS (default 180), and
# its read(2) calls (`syscr` of /proc/PID/io; a heartbeat read is two: the value, then
# the end of the file; the cgroup OOM-kill counts that every wake-up reads, at most
# once a second, are in the count too).
# Target: one check per child per timeout and nothing else, i.e. at most
# 10 x window / H reads, and wake-ups at most the number of distinct check times
# (children started together are checked in one wake-up).
# A benchmark, not a test: exits 0 whatever the figures; non-zero only if it cannot run.
#
# Environment: BENCH_IDLE_SECONDS (default 180), BENCH_HEARTBEAT_S (H, default 60),
# BENCH_KEEP=1 (keep the work directory), CARGO_TARGET_DIR (honoured as by cargo).
# Loopback only; every process it starts is ended on exit.
set -euo pipefail
export LC_ALL=C

readonly IDLE_SECONDS="${BENCH_IDLE_SECONDS:-180}"
readonly HEARTBEAT_S="${BENCH_HEARTBEAT_S:-60}"
readonly CHILDREN=10
readonly SETTLE_SECONDS=3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-health.XXXXXX")"
SERVER_PID="" AGENT_PID=""

say() { printf '[bench-health] %s\n' "$*" >&2; }

cleanup() {
  if [[ -n $AGENT_PID ]]; then kill "$AGENT_PID" 2>/dev/null || true; fi
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  sleep 0.5
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# read(2) calls of process $1 so far.
syscr() { awk '$1 == "syscr:" { print $2 }' /proc/"$1"/io; }

# Sum of voluntary + nonvoluntary context switches over all threads of $1.
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '$1 ~ /^(non)?voluntary_ctxt_switches:$/ { n += $2 } END { print n + 0 }'
}

say "building the release binary and the reference server"
(cd "$ROOT" && cargo build --release --quiet --bin bootagent --example refserver)
BIN="$TARGET/release/bootagent"

"$TARGET/release/examples/refserver" --listen 127.0.0.1:0 --step 600 \
  >"$WORK/refserver.out" 2>&1 &
SERVER_PID=$!
wait_until 15 grep -q -m1 'refserver listening on http://127\.0\.0\.1:' "$WORK/refserver.out"
read -r URL < <(grep -o -m1 'http://127\.0\.0\.1:[0-9]*' "$WORK/refserver.out")

# run LABEL SETTINGS: one idle window; prints a row.
run() {
  local label=$1 settings=$2 data log before after reads_before reads_after name
  data="$WORK/$label/data"
  log="$WORK/$label/agent.log"
  for i in $(seq 1 "$CHILDREN"); do
    name="c$i"
    mkdir -p "$data/agents/$name/1.0"
    cat >"$data/agents/$name/1.0/run" <<'EOF'
#!/bin/sh
while :; do date +%s > hb; sleep 20; done
EOF
    chmod 755 "$data/agents/$name/1.0/run"
    ln -s 1.0 "$data/agents/$name/current"
    printf '%s\n' "$settings" >"$data/agents/$name/agent.json"
  done
  chmod 700 "$data"
  "$BIN" -S "${URL#http://}" -D "$data" -L "$log" </dev/null >/dev/null 2>&1 &
  AGENT_PID=$!
  if ! wait_until 30 grep -q -s -m1 'registered as \|reporting to' "$log"; then
    wait_until 30 test -s "$data/state.json" || { say "$label: no start; log:"; tail "$log" >&2; return 1; }
  fi
  sleep "$SETTLE_SECONDS"
  before=$(switches "$AGENT_PID")
  reads_before=$(syscr "$AGENT_PID")
  say "$label: counting for ${IDLE_SECONDS} s ..."
  sleep "$IDLE_SECONDS"
  after=$(switches "$AGENT_PID")
  reads_after=$(syscr "$AGENT_PID")
  kill "$AGENT_PID" 2>/dev/null || true
  wait "$AGENT_PID" 2>/dev/null || true
  AGENT_PID=""
  printf '%-10s %-18s %-18s %s\n' "$label" "$((after - before))" \
    "$((reads_after - reads_before))" "$((2 * CHILDREN * IDLE_SECONDS / HEARTBEAT_S))"
}

printf 'BootAgent idle with %d children, step 600, window %d s, heartbeat timeout %d s\n' \
  "$CHILDREN" "$IDLE_SECONDS" "$HEARTBEAT_S"
printf '%-10s %-18s %-18s %s\n' run "context switches" "read(2) calls" \
  "target reads (2 x 10 x window / H)"
run without '{}'
run with "{\"health\": {\"heartbeat_file\": \"hb\", \"heartbeat_timeout_s\": $HEARTBEAT_S}}"
