#!/usr/bin/env bash
# tests/bench_fleet.sh: does a fleet spread itself? N real agents (release build) against
# one small loopback server (tests/fleetserver/), started together, through four stages:
#
#   cold       the common start: every agent registers and reports at once      (the
#              time it takes to start N processes, then 1 step)
#   steady     the reports of the fleet, spread by each agent's phase           (2 steps)
#   refused    the server's socket is closed: connections refused               (90 s)
#   recover    the server is back                                               (2 steps)
#   throttled  every request is answered 503 with Retry-After                   (60 s)
#   recover    the server is back                                               (2 steps)
#
# It prints the requests per second over time (the server counts them; attempts refused
# by the kernel are not seen), each stage's mean and peak, and the targets:
#   steady peak/mean <= 2.0 (the steady window starts one step after the common start);
#   recovery peak <= 2 x the steady mean, after both outages;
# then each agent's CPU and resident memory, and the log lines an agent wrote about the
# outages. A benchmark, not a test: it exits 0 whatever the figures, non-zero only if it
# cannot run. Loopback only; bounded: about 7 steps + 150 s, plus the build.
#
#   bash tests/bench_fleet.sh                       (1000 agents, step 60 s: ~10 min)
#   BENCH_STEP=30 bash tests/bench_fleet.sh         (shorter)
#
# Environment: BENCH_AGENTS (1000), BENCH_STEP (60, seconds), BENCH_RETRY_AFTER (30),
# BENCH_REFUSED_S (90), BENCH_THROTTLED_S (60), CARGO_TARGET_DIR as cargo does.
set -euo pipefail

readonly AGENTS="${BENCH_AGENTS:-1000}"
readonly STEP="${BENCH_STEP:-60}"
readonly RETRY_AFTER="${BENCH_RETRY_AFTER:-30}"
readonly REFUSED_S="${BENCH_REFUSED_S:-90}"
readonly THROTTLED_S="${BENCH_THROTTLED_S:-60}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bootagent-fleet.XXXXXX")"
SERVER_PID=""
AGENT_PIDS=()

say() { printf '[bench_fleet] %s\n' "$*" >&2; }

cleanup() {
    local pid
    for pid in "${AGENT_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    [[ -n "$SERVER_PID" ]] && kill -TERM "$SERVER_PID" 2>/dev/null || true
    for pid in "${AGENT_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

for n in "$AGENTS" "$STEP" "$RETRY_AFTER" "$REFUSED_S" "$THROTTLED_S"; do
    [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || { say "not a positive whole number: $n"; exit 2; }
done

say "building the release binary and the fleet server"
(cd "$ROOT" && cargo build --release --quiet --bin bootagent --example fleetserver)
BIN="$TARGET_DIR/release/bootagent"
SERVER="$TARGET_DIR/release/examples/fleetserver"

STAGES="cold=$STEP,steady=$((2 * STEP)),refused=$REFUSED_S,recover=$((2 * STEP)),throttled=$THROTTLED_S,recover=$((2 * STEP))"
TOTAL=$((7 * STEP + REFUSED_S + THROTTLED_S))
ulimit -n 65536 2>/dev/null || true
"$SERVER" --listen 127.0.0.1:0 --step "$STEP" --retry-after "$RETRY_AFTER" \
    --stages "$STAGES" --started-file "$WORK/started" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
ADDR=""
for _ in $(seq 100); do
    ADDR="$(sed -n 's/^listening on //p' "$WORK/server.out")"
    [[ -n "$ADDR" ]] && break
    sleep 0.1
done
[[ -n "$ADDR" ]] || { say "the fleet server did not start"; cat "$WORK/server.err" >&2; exit 1; }

say "starting $AGENTS agents against $ADDR (step $STEP s, Retry-After $RETRY_AFTER s); ~$TOTAL s"
for i in $(seq "$AGENTS"); do
    "$BIN" -D "$WORK/a$i" -S "$ADDR" -L "$WORK/a$i.log" -o limit_mechanism=proc \
        </dev/null >/dev/null 2>&1 &
    AGENT_PIDS+=($!)
done
STARTED=$(date +%s)
touch "$WORK/started"   # the cold stage's step counts from here
say "all started in $(( STARTED - $(stat -c %Y "$WORK/server.out") )) s; waiting for the stages"

# Just before the last stage ends: each agent's CPU time and resident memory.
sleep $((TOTAL - 5))
TICKS=$(getconf CLK_TCK)
ELAPSED=$(( $(date +%s) - STARTED ))
alive=0; cpu_ticks=0; cpu_max=0; rss_sum=0; rss_max=0
for pid in "${AGENT_PIDS[@]}"; do
    [[ -r /proc/$pid/stat ]] || continue
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    ticks=$(( f[11] + f[12] ))   # utime + stime (fields 14 and 15)
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    alive=$((alive + 1)); cpu_ticks=$((cpu_ticks + ticks)); rss_sum=$((rss_sum + rss))
    (( ticks > cpu_max )) && cpu_max=$ticks
    (( rss > rss_max )) && rss_max=$rss
done

wait "$SERVER_PID" || true
SERVER_PID=""
cat "$WORK/server.out" | sed '1d'

echo
echo "agents alive at the end: $alive of $AGENTS"
if (( alive > 0 )); then
    awk -v t="$cpu_ticks" -v m="$cpu_max" -v n="$alive" -v hz="$TICKS" -v s="$ELAPSED" 'BEGIN {
        printf "per-agent CPU: mean %.3f s (%.3f %% of a core over %d s), max %.3f s\n",
            t / n / hz, 100 * t / n / hz / s, s, m / hz }'
    awk -v r="$rss_sum" -v m="$rss_max" -v n="$alive" 'BEGIN {
        printf "per-agent RSS: mean %.0f KiB, max %d KiB (fleet %.0f MiB)\n", r / n, m, r / 1024 }'
fi
# Lines each agent logged about the outages (the first, the reminders, the recovery).
awk '/failed|throttling|still no answer|answered again/ { n[FILENAME]++ }
     END { for (f in n) { s += n[f]; if (n[f] > m) m = n[f]; c++ }
           if (c) printf "outage log lines per agent: mean %.1f, max %d (both outages)\n", s / c, m }' \
    "$WORK"/a*.log
