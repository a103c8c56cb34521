#!/usr/bin/env bash
# tests/bench_install.sh: installing a large package over loopback, BootAgent beside
# `curl -o f URL && sha256sum f && tar xzf f`, and BootAgent's memory while it does.
#
#   bash tests/bench_install.sh      (from anywhere; about 1-3 minutes with defaults)
#
# For each package size (BENCH_SIZES_MIB, default "64 256"):
#   * a package BasicAgent-1.0.tgz: a gzip'd tar of an executable `run`
#     (`exec sleep 100000`) and SIZE MiB from /dev/urandom, which does not compress,
#     so the .tgz is about SIZE MiB; served by the reference server
#     (`refserver --listen 127.0.0.1:0 --step 1 --files DIR`);
#   * BENCH_ROUNDS rounds (default 3), each timing both, in alternating order:
#     BootAgent: a fresh BootAgent (fresh data directory, `-L FILE -v`) registers, an
#       install job is queued with POST /admin/jobs, the round ends when its result
#       (errcode 0) is in GET /admin/agents. Figures:
#         job time       BootAgent's own log, "job ID queued" -> "job ID: errcode 0":
#                        download + SHA256 + fsync, unpack + fsync, start of `run`;
#         queue->result  POST /admin/jobs -> result seen at the server (polled every
#                        0.1 s); adds up to one step (1 s) before the job reaches the
#                        agent and up to one more before its result does;
#         phases         from the log: "queued" -> "downloaded" (download, SHA256,
#                        fsync of the file) -> "switched to" (unpack, fsync, rename,
#                        start of the child) -> "errcode";
#         CPU            utime + stime of the BootAgent process during the job;
#         VmHWM          /proc/PID/status after the job: the peak RSS of the whole
#                        process life; max VmRSS: the largest of the samples taken
#                        every 0.1 s during the job.
#     curl pipeline: `curl -o f URL && sha256sum f && tar xzf f` in a fresh directory
#       (the sum is compared with the package's), timed with $EPOCHREALTIME, stage by
#       stage, with the CPU time of its processes. Then, untimed in the comparison but
#       shown, `sync` of the files it wrote: BootAgent fsyncs what it writes, the
#       pipeline does not. That sync also keeps its dirty pages out of the next round.
#   The comparison takes each side's best (least) time over the rounds and the
#   largest RSS.
#
# Targets (from the issue): BootAgent's job no slower than the pipeline; peak RSS
# under 8 MB (8,000,000 bytes), flat in the package size (largest size's peak within
# 10 % or 0.5 MB, whichever is more, of the smallest size's).
#
# A benchmark, not a test: it prints "met" / "NOT met" beside each target and exits 0
# whatever the figures; non-zero only if it cannot run at all.
#
# Environment:
#   BENCH_SIZES_MIB     package sizes in MiB (default "64 256")
#   BENCH_FORMAT        the package's compression: gzip (default, BasicAgent-1.0.tgz),
#                       xz (.tar.xz, `xz -1`) or zstd (.tar.zst, `zstd -3`); the
#                       pipeline then runs `tar xJf` or `tar --zstd -xf`
#   BENCH_ROUNDS        rounds per size (default 3)
#   BENCH_KEEP          1 to keep the work directory (logs, packages)
#   BENCH_BOOTAGENT     a BootAgent binary to measure instead of building one
#   BENCH_REFSERVER     a refserver binary to use instead of building the example
#   CARGO_TARGET_DIR    honoured as by cargo
# Needs curl, sha256sum, tar, gzip, and jq or python3. Loopback only; every process
# it starts is ended on exit.

# The figure tables (BA_*, CP_*) are read through namerefs (show, pick), which
# the linter does not follow: SC2034 (assigned, never read) is off.
# shellcheck disable=SC2034
set -euo pipefail
export LC_ALL=C # $EPOCHREALTIME and printf with a '.' decimal point

read -r -a SIZES <<<"${BENCH_SIZES_MIB:-64 256}"
readonly SIZES
readonly ROUNDS="${BENCH_ROUNDS:-3}"
readonly FORMAT="${BENCH_FORMAT:-gzip}"
case "$FORMAT" in
  gzip) PKG_FILE=BasicAgent-1.0.tgz COMPRESS=(gzip -1) UNTAR=(-xzf) ;;
  xz) PKG_FILE=BasicAgent-1.0.tar.xz COMPRESS=(xz -1 -T1) UNTAR=(-xJf) ;;
  zstd) PKG_FILE=BasicAgent-1.0.tar.zst COMPRESS=(zstd -q -3) UNTAR=(--zstd -xf) ;;
  *) echo "BENCH_FORMAT must be gzip, xz or zstd" >&2; exit 2 ;;
esac
readonly PKG_NAME=BasicAgent PKG_FILE COMPRESS UNTAR
readonly POLL_S=0.1            # sampling and polling interval
readonly SERVER_DEADLINE=15    # s for the reference server to listen
readonly REGISTER_DEADLINE=20  # s for a BootAgent to register
readonly JOB_DEADLINE=180      # s for one install (either side)
readonly RESULT_DEADLINE=10    # s from the agent's log line to the result at the server
readonly STOP_DEADLINE=15      # s for a BootAgent to stop its child and exit
readonly FREE_MARGIN_MIB=256   # free space wanted beyond 4 x the largest package
# Targets.
readonly RSS_TARGET_BYTES=8000000
readonly FLAT_PERCENT=10
readonly FLAT_BYTES_MIN=500000

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-install.XXXXXX")"
BOOTAGENT="" REFSERVER="" URL="" SERVER_PID=""
AGENT_PID=""                  # the BootAgent running, if any: ended on exit
CHILD_TICKS=0                 # set by children_ticks
CLK_TCK="$(getconf CLK_TCK)"
declare -A SUM=()             # size -> SHA256 hex of its package
# Per size and round, "SIZE/ROUND" -> figure (µs, kB, ticks); empty when it failed.
declare -A BA_JOB=() BA_E2E=() BA_DL=() BA_UNPACK=() BA_START=() BA_CPU=() BA_HWM=() BA_RSS=()
declare -A CP_ALL=() CP_CURL=() CP_SUM=() CP_TAR=() CP_SYNC=() CP_CPU=()
NOTES=()

# ---------------------------------------------------------------- helpers

say() { printf '[bench-install] %s\n' "$*" >&2; }
note() { NOTES+=("$1"); }

# Now in µs since the epoch (the clock of BootAgent's log timestamps).
now_us() { local t=$EPOCHREALTIME; echo $((10#${t%.*} * 1000000 + 10#${t#*.})); }

# µs -> "1.234 s".
secs() { printf '%d.%03d s' $(($1 / 1000000)) $(($1 % 1000000 / 1000)); }

# kB -> "1.23 MB" (10^6 bytes).
mb() { awk -v k="$1" 'BEGIN { printf "%.2f MB", k * 1024 / 1e6 }'; }

# Clock ticks -> "1.23 s".
cpu_s() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f s", t / hz }'; }

# $1 / $2 -> "1.23x".
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

# Figure $2 of array named $1 or "n/a"; $3 formats it.
show() {
  local -n table="$1"
  if [[ -n ${table[$2]:-} ]]; then "$3" "${table[$2]}"; else echo n/a; fi
}

# Waits until "$@" succeeds, polling every $POLL_S, for at most $1 seconds.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep "$POLL_S"
  done
}

# True while process $1 runs (a zombie counts as gone).
alive() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}
gone() { ! alive "$1"; }

# Field $2 (e.g. VmRSS) of /proc/$1/status, in kB; fails when the process is gone.
proc_kb() {
  local key value _unit
  while read -r key value _unit; do
    if [[ $key == "$2:" ]]; then echo "$value"; return 0; fi
  done 2>/dev/null <"/proc/$1/status"
  return 1
}

# utime + stime of process $1 (all its threads), in clock ticks.
proc_ticks() {
  local stat fields
  read -r stat <"/proc/$1/stat" || return 1
  read -r -a fields <<<"${stat##*) }" # fields[0] is field 3 (state)
  echo $((fields[11] + fields[12]))
}

# Sets CHILD_TICKS: CPU ticks (user + system) of this shell's reaped children so far.
# Call it directly, never in $(...): a subshell has no reaped children.
children_ticks() {
  local out="$WORK/times" line=()
  times >"$out" # a builtin: the second line is the children's user and system time
  mapfile -t line <"$out"
  CHILD_TICKS=0
  [[ ${line[1]:-} =~ ^([0-9]+)m([0-9.]+)s\ ([0-9]+)m([0-9.]+)s$ ]] || return 0
  CHILD_TICKS=$(awk -v um="${BASH_REMATCH[1]}" -v us="${BASH_REMATCH[2]}" -v sm="${BASH_REMATCH[3]}" \
    -v ss="${BASH_REMATCH[4]}" -v hz="$CLK_TCK" 'BEGIN { printf "%d", (um * 60 + us + sm * 60 + ss) * hz + 0.5 }')
}

# Kills every process carrying one of this run's data directories in BOOT_AGENT_DIR
# (children a BootAgent failed to stop); nothing else can carry $WORK.
kill_strays() {
  local file pid
  for file in /proc/[0-9]*/environ; do
    grep -q -z -F "BOOT_AGENT_DIR=$WORK/" "$file" 2>/dev/null || continue
    pid=${file#/proc/}
    pid=${pid%/environ}
    say "killing a leftover child, pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
  done
}

# ---------------------------------------------------------------- cleanup

# Ends process $1: SIGTERM, up to $2 s, then SIGKILL; reaps it.
stop_pid() {
  local pid="$1" grace="${2:-5}"
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_until "$grace" gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  trap - EXIT INT TERM
  if [[ -n $AGENT_PID ]]; then stop_pid "$AGENT_PID" "$STOP_DEADLINE"; fi
  kill_strays
  if [[ -n $SERVER_PID ]]; then stop_pid "$SERVER_PID" 5; fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- checks and builds

check_tools() {
  local tool
  for tool in curl sha256sum tar gzip awk; do
    command -v "$tool" >/dev/null || { say "$tool is missing: cannot run"; exit 1; }
  done
  if ! command -v jq >/dev/null && ! command -v python3 >/dev/null; then
    say "neither jq nor python3: cannot read the admin API"; exit 1
  fi
  [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { say "BENCH_ROUNDS must be a positive count"; exit 1; }
  local size biggest=0
  for size in "${SIZES[@]}"; do
    [[ $size =~ ^[1-9][0-9]*$ ]] || { say "bad size in BENCH_SIZES_MIB: $size"; exit 1; }
    ((size > biggest)) && biggest=$size
  done
  # The package, BootAgent's download and unpacked copy, the pipeline's two copies.
  local need_kb=$(((4 * biggest + FREE_MARGIN_MIB) * 1024)) free_kb
  free_kb=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
  ((free_kb >= need_kb)) || { say "need $((need_kb / 1024)) MiB free in $WORK, have $((free_kb / 1024))"; exit 1; }
}

# Cargo's target directory (cargo runs in $ROOT: a relative one is from there).
target_dir() {
  local dir="${CARGO_TARGET_DIR:-target}"
  if [[ $dir == /* ]]; then echo "$dir"; else echo "$ROOT/$dir"; fi
}

# cargo build --release "$@", the log in $WORK/build.log.
cargo_build() {
  say "cargo build --release $* ..."
  if (cd "$ROOT" && cargo build --release "$@") >>"$WORK/build.log" 2>&1; then return 0; fi
  say "the build failed:"
  { grep -E -m 8 -A3 '^error' "$WORK/build.log" || tail -n 10 "$WORK/build.log"; } |
    cut -c1-300 | sed 's/^/    /' >&2
  exit 1
}

build() {
  BOOTAGENT="${BENCH_BOOTAGENT:-}" REFSERVER="${BENCH_REFSERVER:-}"
  [[ -n $BOOTAGENT ]] || { cargo_build && BOOTAGENT="$(target_dir)/release/bootagent"; }
  [[ -n $REFSERVER ]] || { cargo_build --example refserver && REFSERVER="$(target_dir)/release/examples/refserver"; }
  [[ -x $BOOTAGENT && -x $REFSERVER ]] || { say "no binaries: $BOOTAGENT $REFSERVER"; exit 1; }
}

# ---------------------------------------------------------------- packages and server

# $WORK/files/SIZEm/BasicAgent-1.0.tgz: `run` and SIZE MiB of random data; SUM[size].
make_package() {
  local size="$1" src="$WORK/pkg-src" dir="$WORK/files/${1}m" sum
  mkdir -p "$src" "$dir"
  printf '#!/bin/sh\nexec sleep 100000\n' >"$src/run"
  chmod 755 "$src/run"
  head -c "${size}M" /dev/urandom >"$src/data.bin"
  tar -C "$src" -cf - run data.bin | "${COMPRESS[@]}" >"$dir/$PKG_FILE"
  rm -rf "$src"
  sync "$dir/$PKG_FILE" # no dirty pages of it left to write back during a round
  read -r sum _ < <(sha256sum "$dir/$PKG_FILE")
  SUM[$size]=$sum
  say "package ${size}m/$PKG_FILE: $(stat -c %s "$dir/$PKG_FILE") bytes"
}

server_listening() { grep -q -m1 'refserver listening on http://127\.0\.0\.1:' "$WORK/refserver.out"; }

# The reference server on 127.0.0.1, a port the kernel picks; sets URL.
start_server() {
  "$REFSERVER" --listen 127.0.0.1:0 --step 1 --files "$WORK/files" >"$WORK/refserver.out" 2>&1 &
  SERVER_PID=$!
  wait_until "$SERVER_DEADLINE" server_listening || {
    say "the reference server did not start:"; cat "$WORK/refserver.out" >&2; exit 1
  }
  # The line names the address twice ("listening on URL ...; try: curl -s URL/admin").
  read -r URL < <(grep -o -m1 'http://127\.0\.0\.1:[0-9]*' "$WORK/refserver.out")
  say "reference server on $URL"
}

# "ERRCODE<TAB>MESSAGE" of job $2 of agent $1 as the server has it; nothing if none yet.
server_result() {
  local agents
  agents=$(curl -sS --max-time 5 "$URL/admin/agents") || return 0
  if command -v jq >/dev/null; then
    jq -r --arg sn "$1" --arg id "$2" \
      '.[] | select(.sn == $sn) | .job_results[$id] // empty | "\(.errcode)\t\(.message)"' <<<"$agents"
  else
    python3 -c '
import json, sys
for a in json.loads(sys.stdin.read()):
    r = a.get("sn") == sys.argv[1] and (a.get("job_results") or {}).get(sys.argv[2])
    if r: print("%s\t%s" % (r.get("errcode"), r.get("message")))' "$1" "$2" <<<"$agents"
  fi
}

# ---------------------------------------------------------------- BootAgent's side

# The timestamp (µs since the epoch) of the first line of log $1 holding $2.
log_us() {
  local line
  line=$(grep -m1 -F -- "$2" "$1") || return 1
  date -u -d "${line%% *}" +%s%6N
}

registered() { grep -q -s -m1 'registered as ' "$1"; }
job_logged() { grep -q -s -m1 -F "job $2: errcode" "$1"; }

# One BootAgent install of the SIZE MiB package; figures under key "SIZE/ROUND".
run_bootagent() {
  local size="$1" key="$1/$2" id="bench-${1}m-$2" dir="$WORK/agent-$1-$2" pid sn line
  local log t_queue t_done deadline ticks0 rss max_rss=0 result="" body
  mkdir -p "$dir"
  log="$dir/bootagent.log"
  "$BOOTAGENT" -S "${URL#http://}" -D "$dir/data" -L "$log" -v >"$dir/stderr" 2>&1 &
  pid=$!
  AGENT_PID=$pid
  if ! wait_until "$REGISTER_DEADLINE" registered "$log"; then
    note "$key: BootAgent did not register within ${REGISTER_DEADLINE} s"
    finish_bootagent "$pid" "$dir"; return 0
  fi
  line=$(grep -o -m1 'registered as [0-9a-f-]*' "$log")
  sn=${line#registered as }
  body="{\"sn\": \"$sn\", \"job\": {\"id\": \"$id\", \"action\": \"install\", \"name\": \"$PKG_NAME\","
  body+=" \"url\": \"$URL/files/${size}m/$PKG_FILE\", \"checksum\": \"SHA256:${SUM[$size]}\"}}"
  ticks0=$(proc_ticks "$pid")
  t_queue=$(now_us)
  if ! curl -sS --max-time 5 -d "$body" "$URL/admin/jobs" | grep -q '"status":0'; then
    note "$key: the server did not queue the job"
    finish_bootagent "$pid" "$dir"; return 0
  fi
  # Until the agent logs the job's end: its RSS every $POLL_S.
  deadline=$((SECONDS + JOB_DEADLINE))
  until job_logged "$log" "$id"; do
    rss=$(proc_kb "$pid" VmRSS) || break
    ((rss > max_rss)) && max_rss=$rss
    ((SECONDS < deadline)) || break
    sleep "$POLL_S"
  done
  BA_HWM[$key]=$(proc_kb "$pid" VmHWM) || true
  BA_RSS[$key]=$max_rss
  BA_CPU[$key]=$(($(proc_ticks "$pid") - ticks0)) || true
  # Then until the server has the result.
  deadline=$((SECONDS + RESULT_DEADLINE))
  while [[ -z $result ]] && job_logged "$log" "$id" && ((SECONDS < deadline)); do
    result=$(server_result "$sn" "$id")
    [[ -n $result ]] || sleep "$POLL_S"
  done
  t_done=$(now_us)
  record_bootagent "$key" "$log" "$id" "$result" "$t_queue" "$t_done"
  finish_bootagent "$pid" "$dir"
}

# Files the figures of one BootAgent round from its log and the server's result.
record_bootagent() {
  local key="$1" log="$2" id="$3" result="$4" t_queue="$5" t_done="$6"
  local t_start t_dl t_switch t_end
  if [[ ${result%%$'\t'*} != 0 ]]; then
    note "$key: no errcode 0 at the server (${result:-nothing}); log: $(grep -m1 -F "job $id: errcode" "$log" || echo none)"
    BA_HWM[$key]="" BA_RSS[$key]=""
    return 0
  fi
  BA_E2E[$key]=$((t_done - t_queue))
  if t_start=$(log_us "$log" "job $id queued") && t_end=$(log_us "$log" "job $id: errcode 0"); then
    BA_JOB[$key]=$((t_end - t_start))
    if t_dl=$(log_us "$log" "] downloaded ") && t_switch=$(log_us "$log" ": switched to "); then
      BA_DL[$key]=$((t_dl - t_start)) BA_UNPACK[$key]=$((t_switch - t_dl)) BA_START[$key]=$((t_end - t_switch))
    fi
  else
    note "$key: the job's start or end is not in BootAgent's log"
  fi
  return 0
}

# Stops BootAgent $1 (it stops its child first) and removes its directory $2.
finish_bootagent() {
  stop_pid "$1" "$STOP_DEADLINE"
  AGENT_PID=""
  kill_strays
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then rm -rf "$2/data"; else rm -rf "$2"; fi
}

# ---------------------------------------------------------------- the pipeline's side

# curl -o f URL && sha256sum f && tar xzf f, in directory $1, for the SIZE MiB
# package; sets T_CURL, T_SUM, T_TAR (µs since the epoch at each stage's end).
pipeline() {
  local dir="$1" size="$2" sum
  curl -sS --fail --max-time "$JOB_DEADLINE" -o "$dir/f" "$URL/files/${size}m/$PKG_FILE" \
    2>>"$dir/errors" && T_CURL=$(now_us) &&
    read -r sum _ < <(sha256sum "$dir/f") && T_SUM=$(now_us) &&
    { [[ $sum == "${SUM[$size]}" ]] || { echo "sha256sum: $sum" >>"$dir/errors"; false; }; } &&
    tar -C "$dir" "${UNTAR[@]}" "$dir/f" 2>>"$dir/errors" && T_TAR=$(now_us)
}

# One curl pipeline for the SIZE MiB package; figures under key "SIZE/ROUND".
run_pipeline() {
  local size="$1" key="$1/$2" dir="$WORK/curl-$1-$2" t0 ticks0 t_sync
  T_CURL="" T_SUM="" T_TAR=""
  mkdir -p "$dir"
  children_ticks
  ticks0=$CHILD_TICKS
  t0=$(now_us)
  if pipeline "$dir" "$size"; then
    children_ticks
    CP_CPU[$key]=$((CHILD_TICKS - ticks0))
    sync "$dir/f" "$dir/run" "$dir/data.bin" "$dir"
    t_sync=$(now_us)
    CP_ALL[$key]=$((T_TAR - t0)) CP_CURL[$key]=$((T_CURL - t0))
    CP_SUM[$key]=$((T_SUM - T_CURL)) CP_TAR[$key]=$((T_TAR - T_SUM)) CP_SYNC[$key]=$((t_sync - T_TAR))
  else
    note "$key: the curl pipeline failed: $(head -c 300 "$dir/errors" 2>/dev/null || true)"
  fi
  rm -rf "$dir"
}

# ---------------------------------------------------------------- figures

# Least (min) or largest (max) figure of array $2 over the rounds of size $3.
pick() {
  local how="$1" size="$3" round best="" v
  local -n table="$2"
  for ((round = 1; round <= ROUNDS; round++)); do
    v=${table[$size/$round]:-}
    [[ -n $v ]] || continue
    if [[ -z $best ]] || { [[ $how == min ]] && ((v < best)); } || { [[ $how == max ]] && ((v > best)); }; then
      best=$v
    fi
  done
  echo "$best"
}

print_rounds() {
  local size round key
  printf '\nBootAgent, every round (job = its log, queued -> errcode 0):\n'
  printf '%-6s %-5s | %-9s %-13s | %-9s %-9s %-9s | %-7s | %-8s %-8s\n' size round job \
    'queue->result' 'dl+sha' 'unpack' start CPU VmHWM 'max RSS'
  for size in "${SIZES[@]}"; do
    for ((round = 1; round <= ROUNDS; round++)); do
      key=$size/$round
      printf '%-6s %-5s | %-9s %-13s | %-9s %-9s %-9s | %-7s | %-8s %-8s\n' "${size}M" "$round" \
        "$(show BA_JOB "$key" secs)" "$(show BA_E2E "$key" secs)" "$(show BA_DL "$key" secs)" \
        "$(show BA_UNPACK "$key" secs)" "$(show BA_START "$key" secs)" "$(show BA_CPU "$key" cpu_s)" \
        "$(show BA_HWM "$key" mb)" "$(show BA_RSS "$key" mb)"
    done
  done
  printf '\ncurl pipeline, every round (sync: after it, not in its time):\n'
  printf '%-6s %-5s | %-9s | %-9s %-9s %-9s | %-7s | %-9s\n' size round pipeline curl sha256sum \
    'tar x' CPU '+sync'
  for size in "${SIZES[@]}"; do
    for ((round = 1; round <= ROUNDS; round++)); do
      key=$size/$round
      printf '%-6s %-5s | %-9s | %-9s %-9s %-9s | %-7s | %-9s\n' "${size}M" "$round" \
        "$(show CP_ALL "$key" secs)" "$(show CP_CURL "$key" secs)" "$(show CP_SUM "$key" secs)" \
        "$(show CP_TAR "$key" secs)" "$(show CP_CPU "$key" cpu_s)" "$(show CP_SYNC "$key" secs)"
    done
  done
}

# One target row: what, figure, verdict.
verdict_row() { printf '%-52s %-30s %s\n' "$1" "$2" "$3"; }
met() { if "$@"; then echo met; else echo 'NOT met'; fi; }
le() { (($1 <= $2)); }
lt() { (($1 < $2)); }

print_summary() {
  local size job e2e cp hwm rss first_hwm="" last_hwm="" first="" last="" allow
  printf '\nSummary (best time of %s round(s), largest RSS):\n' "$ROUNDS"
  printf '%-6s | %-11s %-13s | %-13s | %-7s | %-13s %-9s\n' size 'BootAgent' 'queue->result' \
    'curl pipeline' ratio 'peak (VmHWM)' 'max RSS'
  for size in "${SIZES[@]}"; do
    job=$(pick min BA_JOB "$size") e2e=$(pick min BA_E2E "$size") cp=$(pick min CP_ALL "$size")
    hwm=$(pick max BA_HWM "$size") rss=$(pick max BA_RSS "$size")
    printf '%-6s | %-11s %-13s | %-13s | %-7s | %-13s %-9s\n' "${size}M" \
      "${job:+$(secs "$job")}" "${e2e:+$(secs "$e2e")}" "${cp:+$(secs "$cp")}" \
      "$([[ -n $job && -n $cp ]] && ratio "$job" "$cp")" "${hwm:+$(mb "$hwm")}" "${rss:+$(mb "$rss")}"
  done
  printf '\nTargets:\n'
  for size in "${SIZES[@]}"; do
    job=$(pick min BA_JOB "$size") cp=$(pick min CP_ALL "$size") hwm=$(pick max BA_HWM "$size")
    if [[ -n $job && -n $cp ]]; then
      verdict_row "${size} MiB: BootAgent's job no slower than the pipeline" \
        "$(secs "$job") vs $(secs "$cp") ($(ratio "$job" "$cp"))" "$(met le "$job" "$cp")"
    else
      verdict_row "${size} MiB: BootAgent's job no slower than the pipeline" "n/a" "NOT met"
    fi
    if [[ -n $hwm ]]; then
      verdict_row "${size} MiB: BootAgent's peak RSS under 8 MB" "$(mb "$hwm")" \
        "$(met lt $((hwm * 1024)) "$RSS_TARGET_BYTES")"
      [[ -n $first_hwm ]] || { first_hwm=$hwm first=$size; }
      last_hwm=$hwm last=$size
    else
      verdict_row "${size} MiB: BootAgent's peak RSS under 8 MB" "n/a" "NOT met"
    fi
  done
  if [[ -n $first && $first != "$last" ]]; then
    allow=$((first_hwm * 1024 * FLAT_PERCENT / 100)) # bytes
    ((allow >= FLAT_BYTES_MIN)) || allow=$FLAT_BYTES_MIN
    verdict_row "peak RSS flat: ${last} MiB within $(mb $((allow / 1024))) of ${first} MiB" \
      "$(mb "$last_hwm") vs $(mb "$first_hwm")" "$(met le $(((last_hwm - first_hwm) * 1024)) "$allow")"
  fi
}

print_notes() {
  local n
  printf '\nNotes:\n'
  printf -- '- host: %s CPU(s), %s; work directory on %s (%s)\n' "$(nproc)" "$(uname -r)" \
    "$(df -P "$WORK" | awk 'NR == 2 { print $1 }')" "$(stat -f -c %T "$WORK")"
  printf -- '- load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf -- '- dl+sha = queued -> "downloaded" (download, SHA256, fsync); unpack = -> "switched to"'
  printf ' (gunzip, untar, fsync, rename); start = -> errcode 0\n'
  for n in "${NOTES[@]}"; do printf -- '- %s\n' "$n"; done
}

# ---------------------------------------------------------------- main

main() {
  local size round started=$SECONDS
  check_tools
  build
  for size in "${SIZES[@]}"; do make_package "$size"; done
  start_server
  for size in "${SIZES[@]}"; do
    for ((round = 1; round <= ROUNDS; round++)); do
      say "${size} MiB, round $round/$ROUNDS"
      if ((round % 2)); then
        run_bootagent "$size" "$round"
        run_pipeline "$size" "$round"
      else
        run_pipeline "$size" "$round"
        run_bootagent "$size" "$round"
      fi
    done
  done
  printf 'BootAgent install benchmark: %s over loopback (refserver --step 1), %s\n' \
    "$PKG_FILE" "$BOOTAGENT"
  print_rounds
  print_summary
  print_notes
  say "done in $((SECONDS - started)) s"
}

main "$@"
