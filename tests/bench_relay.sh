#!/usr/bin/env bash
# tests/bench_relay.sh: what relaying a noisy child's output costs BootAgent, beside what
# the child spends writing it (docs/protocol.md section 6: less than the child).
#
#   bash tests/bench_relay.sh      (from anywhere; about a minute with defaults)
#
# For each kind of writer, BootAgent supervises one child that writes to its stdout as
# fast as it can, into a log rotated at 1 MiB (the default). Over BENCH_SECONDS
# (default 10) after a second of warm-up, it reads the CPU time (user + system, from
# /proc/PID/stat, every thread) of BootAgent and of the child's processes, and prints
# both, the bytes relayed and the ratio BootAgent / child, with "met" when below 1.
#
# Writers:
#   lines   one write(2) per 40-byte line, as fast as python3 goes
#   blocks  `yes`: 8 KiB writes (glibc stdio), the cheapest writer there is
#   shell   a shell loop of `echo` (a builtin): a write(2) per line, and the shell's work
# Output beyond `child_log_bytes_per_s_max` (1 MiB/s by default) is dropped without a
# copy; a last row shows `yes` with that limit off, every byte written to the log file,
# for comparison (not a target: the file system's cost per byte is above a pipe's).
#
# A benchmark, not a test: it exits 0 whatever the figures, non-zero only if it cannot
# run. It builds BootAgent with `cargo build --release` unless BENCH_BOOTAGENT names a
# binary. No network: BootAgent is pointed at a closed loopback port (it supervises its
# children whether or not a server answers).
#
# Environment:
#   BENCH_SECONDS      measuring window per writer (default 10)
#   BENCH_BOOTAGENT    a BootAgent binary to measure instead of building one
#   BENCH_KEEP         1 to keep the work directory
#   CARGO_TARGET_DIR   honoured as by cargo
set -euo pipefail
export LC_ALL=C

readonly SECONDS_WINDOW="${BENCH_SECONDS:-10}"
readonly WARMUP_S=1
readonly START_DEADLINE_S=15

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-relay.XXXXXX")"
AGENT_PID=""

cleanup() {
    if [ -n "$AGENT_PID" ] && kill -0 "$AGENT_PID" 2>/dev/null; then
        kill -TERM "$AGENT_PID" 2>/dev/null || true
        wait "$AGENT_PID" 2>/dev/null || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

if [ -n "${BENCH_BOOTAGENT:-}" ]; then
    BIN="$BENCH_BOOTAGENT"
else
    (cd "$ROOT" && cargo build --release --quiet)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/bootagent"
fi
[ -x "$BIN" ] || { echo "no BootAgent binary at $BIN" >&2; exit 1; }

CLK_TCK="$(getconf CLK_TCK)"

# CPU ticks (utime + stime) of one process, every thread; 0 if it is gone.
ticks() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
    stat="${stat##*) }"
    # Fields after "comm)": state=1 … utime=12 stime=13.
    awk '{ print $12 + $13 }' <<<"$stat"
}

# Sum of CPU ticks of every process whose BOOT_AGENT_NAME is the child's.
child_ticks() {
    local total=0 pid
    for pid in $(pgrep -f -- "$1" || true); do
        [ "$pid" = "$AGENT_PID" ] && continue
        total=$((total + $(ticks "$pid")))
    done
    echo "$total"
}

run_writer() {
    local kind="$1" script="$2" match="$3"
    shift 3
    local data="$WORK/$kind"
    mkdir -p "$data/agents/noisy/1.0"
    printf '#!/bin/sh\n%s\n' "$script" >"$data/agents/noisy/1.0/run"
    chmod 755 "$data/agents/noisy/1.0/run"
    ln -s 1.0 "$data/agents/noisy/current"
    chmod 700 "$data"
    "$BIN" -D "$data" -S 127.0.0.1:9 -L "$data/bootagent.log" -q "$@" &
    AGENT_PID=$!
    local waited=0
    until pgrep -f -- "$match" >/dev/null; do
        sleep 0.1
        waited=$((waited + 1))
        if [ "$waited" -gt $((START_DEADLINE_S * 10)) ]; then
            echo "$kind: the child did not start" >&2
            return 1
        fi
    done
    sleep "$WARMUP_S"
    local a0 c0 a1 c1 t0 t1 b0 b1
    a0="$(ticks "$AGENT_PID")"
    c0="$(child_ticks "$match")"
    b0="$(written_bytes "$match")"
    t0="$EPOCHREALTIME"
    sleep "$SECONDS_WINDOW"
    a1="$(ticks "$AGENT_PID")"
    c1="$(child_ticks "$match")"
    b1="$(written_bytes "$match")"
    t1="$EPOCHREALTIME"
    kill -TERM "$AGENT_PID"
    wait "$AGENT_PID" || true
    AGENT_PID=""
    awk -v kind="$kind" -v a=$((a1 - a0)) -v c=$((c1 - c0)) -v hz="$CLK_TCK" \
        -v bytes=$((b1 - b0)) -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" '
        BEGIN {
            ratio = (c > 0) ? a / c : 0
            printf "%-9s BootAgent %6.2f s CPU  child %6.2f s CPU  relayed %8.1f MiB/s  ratio %.2f  %s\n",
                kind, a / hz, c / hz, bytes / t / 1048576, ratio, (kind == "unlimited") ? "(no target)" : (c > 0 && ratio < 1) ? "met" : "NOT met"
        }'
}

# Bytes the child's processes wrote so far (wchar of /proc/PID/io): what was relayed.
written_bytes() {
    local total=0 pid bytes
    for pid in $(pgrep -f -- "$1" || true); do
        [ "$pid" = "$AGENT_PID" ] && continue
        bytes="$(awk '/^wchar:/ { print $2 }' "/proc/$pid/io" 2>/dev/null || echo 0)"
        total=$((total + ${bytes:-0}))
    done
    echo "$total"
}

echo "bench_relay: BootAgent $("$BIN" -V 2>/dev/null | head -n1), ${SECONDS_WINDOW} s per writer, log rotated at 1 MiB"
echo "target: BootAgent's CPU below the child's (ratio < 1)"
run_writer lines \
    "exec python3 -u -c 'import os
line = b\"a line of output from a noisy child: 40b\\\\n\"
while True: os.write(1, line)' relay-bench-lines" "relay-bench-lines"
run_writer blocks "exec yes 'a line of output from a noisy child: relay-bench-blocks'" "relay-bench-blocks"
run_writer shell "exec sh -c 'while :; do echo a line of output from a noisy child; done' relay-bench-shell" "relay-bench-shell"
echo "for comparison, with -o child_log_bytes_per_s_max=0 (every byte written to the log; not a target):"
run_writer unlimited "exec yes 'a line of output from a noisy child: relay-bench-unlimited'" "relay-bench-unlimited" \
    -o child_log_bytes_per_s_max=0
