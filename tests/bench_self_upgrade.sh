#!/usr/bin/env bash
# tests/bench_self_upgrade.sh: BootAgent upgrading itself over loopback, with one child
# running, and what it costs.
#
#   bash tests/bench_self_upgrade.sh      (from anywhere; about 1-4 minutes, most of it
#                                          building the two release binaries)
#
# Builds the release binary twice: as it is, and with BOOT_VERSION=9.9.9 (its own
# target directory). Starts the reference server (`refserver --listen 127.0.0.1:0
# --step 1 --files DIR`), then BENCH_ROUNDS rounds (default 3), each: a fresh data
# directory with one preinstalled child that writes a line with a nanosecond timestamp
# every 10 ms; BootAgent 1 registers; a `self_upgrade` job to the second binary
# (probation BENCH_PROBATION_S, default 3) is queued; the round ends with its result.
# Figures, per round:
#   receipt -> first report   BootAgent's log: "job ID queued" -> the first status report
#                             answered by the new image ("took over by exec" is its start);
#   receipt -> exec           "job ID queued" -> "exec ..." (download, SHA256, -V check);
#   child downtime            the child's pid before and after, its restarts in the last
#                             report (target: same pid, 0 restarts), and the largest gap
#                             between two of its lines from 1 s before the exec to 1 s
#                             after the first report (it writes every 10 ms: a gap near
#                             that means it never waited on BootAgent);
#   peak RSS                  the largest VmRSS of the BootAgent process sampled every
#                             10 ms from the job to its result, and VmHWM of each image.
# A benchmark, not a test: exits 0 whatever the figures; non-zero only if it cannot run.
#
# Environment: BENCH_ROUNDS, BENCH_PROBATION_S, BENCH_KEEP=1 (keep the work directory),
# CARGO_TARGET_DIR (honoured as by cargo). Needs curl and python3. Loopback only; every
# process it starts is ended on exit.
set -euo pipefail
export LC_ALL=C

readonly ROUNDS="${BENCH_ROUNDS:-3}"
readonly PROBATION_S="${BENCH_PROBATION_S:-3}"
readonly V2=9.9.9
readonly DEADLINE_S=120

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-selfup.XXXXXX")"
SERVER_PID="" AGENT_PID="" URL=""

say() { printf '[bench-self-upgrade] %s\n' "$*" >&2; }

cleanup() {
  if [[ -n $AGENT_PID ]]; then kill -9 "$AGENT_PID" 2>/dev/null || true; fi
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
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

# µs since the epoch of the first line of log $1 holding $2 (after line $3, if given).
log_us() {
  local line
  line=$(tail -n +"${3:-1}" "$1" | grep -m1 -F -- "$2") || return 1
  date -u -d "${line%% *}" +%s%6N
}

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

say "building the release binaries (this one, and BOOT_VERSION=$V2)"
(cd "$ROOT" && cargo build --release --quiet --bin bootagent --example refserver)
(cd "$ROOT" && BOOT_VERSION=$V2 cargo build --release --quiet --bin bootagent \
  --target-dir "$TARGET/bench-self-upgrade")
V1_BIN="$TARGET/release/bootagent"
V2_BIN="$TARGET/bench-self-upgrade/release/bootagent"
mkdir -p "$WORK/files"
cp "$V2_BIN" "$WORK/files/bootagent-$V2"
SUM=$(sha256sum "$V2_BIN" | cut -d' ' -f1)

"$TARGET/release/examples/refserver" --listen 127.0.0.1:0 --step 1 --files "$WORK/files" \
  >"$WORK/refserver.out" 2>&1 &
SERVER_PID=$!
wait_until 15 grep -q -m1 'refserver listening on http://127\.0\.0\.1:' "$WORK/refserver.out"
read -r URL < <(grep -o -m1 'http://127\.0\.0\.1:[0-9]*' "$WORK/refserver.out")
say "reference server on $URL; $(stat -c %s "$V2_BIN") byte binary to upgrade to"

printf '%-6s %-22s %-16s %-24s %-14s %s\n' round "receipt->1st report" "receipt->exec" \
  "child pid / restarts" "max line gap" "peak RSS (VmHWM old/new)"
for round in $(seq 1 "$ROUNDS"); do
  data="$WORK/r$round/data"
  mkdir -p "$data/agents/ticker/1.0"
  chmod 700 "$data"
  cat >"$data/agents/ticker/1.0/run" <<'EOF'
#!/bin/sh
while :; do date +%s%N; sleep 0.01; done
EOF
  chmod 755 "$data/agents/ticker/1.0/run"
  ln -s 1.0 "$data/agents/ticker/current"
  log="$WORK/r$round/agent.log"
  "$V1_BIN" -S "${URL#http://}" -D "$data" -L "$log" -v </dev/null >/dev/null 2>&1 &
  AGENT_PID=$!
  wait_until 20 grep -q -s -m1 'registered as ' "$log"
  sn=$(grep -m1 -o 'registered as [^ ]*' "$log" | cut -d' ' -f3)
  wait_until 20 test -s "$data/logs/ticker.log"
  child_before=$(pgrep -P "$AGENT_PID" | head -1)
  hwm_old=$(awk '/VmHWM/ {print $2}' "/proc/$AGENT_PID/status")
  id="bench-$round"
  curl -sS -o /dev/null -d "{\"sn\":\"$sn\",\"job\":{\"id\":\"$id\",\"action\":\"self_upgrade\",
    \"url\":\"$URL/files/bootagent-$V2\",\"checksum\":\"SHA256:$SUM\",
    \"probation\":$PROBATION_S}}" "$URL/admin/jobs"
  peak=0 hwm_new=0
  deadline=$((SECONDS + DEADLINE_S))
  result=""
  while ((SECONDS < deadline)); do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$AGENT_PID/status" 2>/dev/null || echo 0)
    ((rss > peak)) && peak=$rss
    result=$(curl -sS --max-time 5 "$URL/admin/agents" |
      json "next((str(a['job_results']['$id']['errcode']) for a in d if '$id' in (a.get('job_results') or {})), '')")
    [[ -n $result ]] && break
    sleep 0.01
  done
  hwm_new=$(awk '/VmHWM/ {print $2}' "/proc/$AGENT_PID/status" 2>/dev/null || echo 0)
  if [[ $result != 0 ]]; then
    say "round $round: no success (result '${result:-none}'); log in $log"
    printf '%-6s %s\n' "$round" "failed"
  else
    queued=$(log_us "$log" "job $id queued")
    exec_at=$(log_us "$log" "exec $data")
    took=$(grep -n -m1 -F 'took over by exec' "$log" | cut -d: -f1)
    first=$(log_us "$log" "/agent/status: HTTP 200" "$took")
    child_after=$(pgrep -P "$AGENT_PID" | head -1)
    restarts=$(curl -sS "$URL/admin/agents" |
      json "[x['restarts'] for a in d for x in (a.get('last_report') or {}).get('agents', []) if x['name']=='ticker'][0]")
    # Lines written from 1 s before the exec to 1 s after the first report (ns stamps).
    gap=$(awk -v from="$(((exec_at - 1000000) * 1000))" -v to="$(((first + 1000000) * 1000))" \
      '$1 >= from && $1 <= to { if (p) { g = ($1 - p) / 1e6; if (g > m) m = g } p = $1 }
       END { printf "%.1f ms", m }' "$data/logs/ticker.log")
    same=$([[ $child_before == "$child_after" ]] && echo same || echo CHANGED)
    printf '%-6s %-22s %-16s %-24s %-14s %s\n' "$round" \
      "$(((first - queued) / 1000)) ms" "$(((exec_at - queued) / 1000)) ms" \
      "$child_before $same / $restarts" "$gap" \
      "$((peak * 1024 / 1000)) kB ($((hwm_old * 1024 / 1000)) / $((hwm_new * 1024 / 1000)) kB)"
  fi
  kill "$AGENT_PID" 2>/dev/null || true
  wait "$AGENT_PID" 2>/dev/null || true
  AGENT_PID=""
done
echo "targets: children's downtime 0 (same pid, 0 restarts); receipt -> first report and"
echo "peak RSS are figures (the first report includes the probe of -V and the download)."
