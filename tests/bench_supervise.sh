#!/usr/bin/env bash
# tests/bench_supervise.sh: BootAgent as a process supervisor, beside runit, s6 and
# supervisord, each supervising the same children, figures printed side by side.
#
#   bash tests/bench_supervise.sh      (from anywhere; about 3-5 minutes with defaults)
#
# 1. Crash-to-restart latency: one child of each supervisor is killed with SIGKILL
#    BENCH_KILLS times (default 20). The child writes `PID SECONDS.NANOSECONDS`
#    (date +%s.%N) when it starts; the kill time is bash's $EPOCHREALTIME taken just
#    before `kill -9`, the same clock. Latency = new child's timestamp - kill time,
#    so it includes the child's own start (sh, then a fork+exec of date): the
#    "baseline" row measures that part alone (python3 posix_spawn of the same
#    script, no supervisor), and "median - baseline" is the supervisor's share.
#    Kills are at least 1.1 s after the child's previous start, so that neither
#    BootAgent's one-start-a-second rule nor runit's and s6's 1 s minimum between
#    starts is what is measured. The supervisors take turns (one kill in flight at
#    a time, 0.1 s of quiet after each restart), so they share the machine's load.
# 2. Idle wake-ups: context switches (voluntary + nonvoluntary, every thread of every
#    supervisor process) over BENCH_IDLE_SECONDS (default 60), all supervisors idle
#    at once, each with 10 children that print nothing.
# 3. Memory to supervise 10 children: total RSS and total private memory
#    (Private_Clean + Private_Dirty of /proc/PID/smaps_rollup) of the supervisor
#    processes, not the children.
#
# Supervisor processes counted: BootAgent (one process, all its threads);
# runit: runsvdir + its 10 runsv; s6: s6-svscan + its 10 s6-supervise;
# supervisord: its python process.
#
# A benchmark, not a test: it prints "met" / "NOT met" beside each target and exits 0
# whatever the figures; non-zero only if it cannot run at all.
#
# It installs what it lacks, from Debian (root + apt-get): `apt-get update`, then
# `apt-get install -y --no-install-recommends supervisor runit s6` (with a
# policy-rc.d that forbids starting services while it installs, when the machine
# has none, so that no system-wide supervisord or runsvdir is started).
# It builds BootAgent with `cargo build --release` (host target) and, unless
# BENCH_MUSL=0, also for x86_64-unknown-linux-musl, measured as a fifth supervisor.
#
# Environment:
#   BENCH_IDLE_SECONDS  idle window (default 60)
#   BENCH_KILLS         kills per supervisor (default 20)
#   BENCH_MUSL          0 to skip the static musl build (default 1: built and measured
#                       when the rustup target is there)
#   BENCH_KEEP          1 to keep the work directory (logs, stamps, configs)
#   BENCH_BOOTAGENT     a BootAgent binary to measure instead of building one (then
#                       the musl one is measured only if BENCH_BOOTAGENT_MUSL names it)
#   CARGO_TARGET_DIR    honoured as by cargo
# Everything runs on loopback; every process it starts is ended on exit.
set -euo pipefail
export LC_ALL=C # $EPOCHREALTIME and printf with a '.' decimal point

readonly IDLE_SECONDS="${BENCH_IDLE_SECONDS:-60}"
readonly KILLS="${BENCH_KILLS:-20}"
readonly MUSL="${BENCH_MUSL:-1}"
readonly MUSL_TARGET=x86_64-unknown-linux-musl
readonly CHILDREN=10
readonly GAP_US=1100000          # least time from a child's start to its next kill
readonly QUIET_S=0.1             # pause after each restart before the next kill
readonly POLL_S=0.005            # poll interval while waiting for a restart
readonly RESTART_DEADLINE_US=5000000 # a restart slower than 5 s counts as lost
readonly START_DEADLINE=30       # s for a supervisor to start its 10 children
readonly REPORT_DEADLINE=30      # s for BootAgent's registration and first report
readonly SETTLE_SECONDS=3        # s of quiet before memory and the idle window
readonly STOP_DEADLINE=15        # s for a supervisor to stop its children and exit
# Targets.
readonly TARGET_MEDIAN_US=5000   # BootAgent's median restart latency < 5 ms
readonly SUPERVISORD_RSS_FACTOR=10

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-supervise.XXXXXX")"
SUPS=()                 # supervisors that started: names, in display order
declare -A KIND=()      # name -> bootagent | runit | s6 | supervisord
declare -A BIN=()       # BootAgent name -> binary
declare -A ROOT_PID=()  # name -> the supervisor's (top) process
declare -A LAT=()       # name -> latencies, µs, space-separated
declare -A LOST=()      # name -> restarts not seen within the deadline
declare -A IDLE=()      # name -> context switches in the idle window
declare -A RSS_KB=() PRIV_KB=() PSS_KB=() NPROC=()
declare -A NEXT_KILL=() # name -> earliest µs for the next kill
OTHER_PIDS=()           # the control server: ended on exit
ROWS=()                 # target rows: "target|BootAgent|compared with|verdict"
NOTES=()
SLEEP_FD=""             # a FIFO nobody writes: `read -t` on it sleeps without a fork
MADE_POLICY=""          # a policy-rc.d this script made for the install: removed on exit

# ---------------------------------------------------------------- helpers

say() { printf '[bench-supervise] %s\n' "$*" >&2; }
note() { NOTES+=("$1"); }
row() { ROWS+=("$1|$2|$3|$4"); }

# Now in µs since the epoch (the same clock as `date +%s.%N`).
now_us() { local t=$EPOCHREALTIME; echo $((10#${t%.*} * 1000000 + 10#${t#*.})); }

# "SECONDS.NANOSECONDS" -> µs.
stamp_us() {
  local s=${1%.*} ns=${1#*.}000000000
  echo $((10#$s * 1000000 + 10#${ns:0:6}))
}

# µs -> "1.234 ms".
ms() { printf '%d.%03d ms' $(($1 / 1000)) $(($1 % 1000)); }

# µs -> "+1.234 ms" / "-0.120 ms".
signed_ms() { if (($1 < 0)); then echo "-$(ms $((-$1)))"; else echo "+$(ms "$1")"; fi; }

# kB -> "1.23 MB" (10^6 bytes).
mb() { awk -v k="$1" 'BEGIN { printf "%.2f MB", k * 1024 / 1e6 }'; }

# Sleeps $1 seconds (fractions allowed) without forking; interruptible by traps.
snooze() {
  if [[ -n $SLEEP_FD ]]; then read -r -t "$1" -u "$SLEEP_FD" _ || true; else sleep "$1"; fi
}

# Waits until "$@" succeeds, polling every 0.1 s, for at most $1 seconds.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    snooze 0.1
  done
}

# True while process $1 runs; a zombie counts as gone (bash does not reap its
# children while it runs a trap, so `kill -0` alone would wait for nothing).
alive() {
  local stat
  [[ -r /proc/$1/stat ]] || return 1
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}
gone() { ! alive "$1"; }

# True when pid $1 runs `sleep 100000` (one of the benchmark's children).
is_child_sleep() {
  local argv=()
  [[ -r /proc/$1/cmdline ]] || return 1
  mapfile -d '' argv 2>/dev/null <"/proc/$1/cmdline" || return 1
  [[ ${#argv[@]} -eq 2 && ${argv[0]##*/} == sleep && ${argv[1]} == 100000 ]]
}

# ---------------------------------------------------------------- cleanup

# Ends process $1: SIGTERM, up to $2 s, then SIGKILL.
stop_pid() {
  local pid="$1" grace="${2:-5}"
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait_until "$grace" gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Kills every child whose pid a stamp file recorded and that still runs our sleep.
kill_stray_children() {
  local file pid _t
  for file in "$WORK"/*/stamps/*; do
    [[ -f $file ]] || continue
    while read -r pid _t; do
      if is_child_sleep "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done <"$file"
  done
}

cleanup() {
  local name pid
  trap - EXIT INT TERM
  remove_policy
  for name in "${SUPS[@]}"; do stop_supervisor "$name" || true; done
  for pid in "${OTHER_PIDS[@]}"; do stop_pid "$pid" 2; done
  kill_stray_children
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- installs and builds

have_peers() { command -v supervisord && command -v runsvdir && command -v runsv &&
  command -v sv && command -v s6-svscan && command -v s6-supervise && command -v s6-svscanctl; } >/dev/null

# Installs Debian's supervisor, runit and s6 when any of their programs is missing.
install_peers() {
  have_peers && return 0
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    say "supervisor/runit/s6 missing and not root with apt-get: peers not installed"
    return 0
  fi
  local policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then # no service may start during the install
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && MADE_POLICY=$policy
  fi
  say "installing supervisor runit s6 (apt-get)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends supervisor runit s6; } >"$WORK/apt.log" 2>&1; then
    say "apt-get failed:"
    tail -n 10 "$WORK/apt.log" | sed 's/^/    /' >&2
  fi
  remove_policy
}

remove_policy() { if [[ -n $MADE_POLICY ]]; then rm -f "$MADE_POLICY"; MADE_POLICY=""; fi; }

# Cargo's target directory (cargo runs in $ROOT: a relative one is from there).
target_dir() {
  local dir="${CARGO_TARGET_DIR:-target}"
  if [[ $dir == /* ]]; then echo "$dir"; else echo "$ROOT/$dir"; fi
}

# cargo build --release "$@"; the log goes to $WORK/$1.build.log.
cargo_build() {
  local name="$1" start=$SECONDS
  shift
  say "building $name ..."
  if (cd "$ROOT" && cargo build --release "$@") >"$WORK/$name.build.log" 2>&1; then
    say "built $name in $((SECONDS - start)) s"
    return 0
  fi
  say "building $name failed:"
  { grep -E -m 8 -A3 '^error' "$WORK/$name.build.log" || tail -n 10 "$WORK/$name.build.log"; } |
    cut -c1-300 | sed 's/^/    /' >&2
  return 1
}

# Builds the host and (optionally) musl binaries; registers them as supervisors.
build_bootagent() {
  if [[ -n ${BENCH_BOOTAGENT:-} ]]; then # given: no build
    KIND[bootagent]=bootagent BIN[bootagent]="$BENCH_BOOTAGENT"
    if [[ -n ${BENCH_BOOTAGENT_MUSL:-} ]]; then
      KIND[bootagent-musl]=bootagent BIN[bootagent-musl]="$BENCH_BOOTAGENT_MUSL"
    fi
    note "binaries given (not built): ${BIN[*]}"
    return 0
  fi
  if ! cargo_build host; then
    say "no host build: cannot run"
    exit 1
  fi
  KIND[bootagent]=bootagent BIN[bootagent]="$(target_dir)/release/bootagent"
  [[ $MUSL == 1 ]] || return 0
  if [[ ! -d "$(rustc --print sysroot)/lib/rustlib/$MUSL_TARGET/lib" ]]; then
    note "musl: the rustup target $MUSL_TARGET is not installed; not measured"
  elif cargo_build musl --target "$MUSL_TARGET"; then
    KIND[bootagent-musl]=bootagent BIN[bootagent-musl]="$(target_dir)/$MUSL_TARGET/release/bootagent"
  else
    note "musl: the build failed (see above); not measured"
  fi
}

# ---------------------------------------------------------------- the control server

# A tiny control server on 127.0.0.1 (port chosen by the kernel, in $WORK/port);
# one line per request in $WORK/requests.log. It stops by itself after $1 s.
start_server() {
  cat >"$WORK/server.py" <<'PY'
import http.server, json, os, sys, time
port_file, log_file, lifetime = sys.argv[1], sys.argv[2], float(sys.argv[3])
ANSWERS = {"/agent/register": {"status": 0, "step": 600},
           "/agent/status": {"status": 0, "jobs": []}}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
        answer = ANSWERS.get(self.path)
        body = json.dumps(answer if answer is not None else {}).encode()
        self.send_response(200 if answer is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        with open(log_file, "a") as log:
            log.write(f"{time.time():.3f} POST {self.path}\n")

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
server.timeout = 0.5
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
deadline = time.monotonic() + lifetime
while time.monotonic() < deadline:
    server.handle_request()
PY
  : >"$WORK/requests.log"
  python3 -u "$WORK/server.py" "$WORK/port" "$WORK/requests.log" "$1" >"$WORK/server.out" 2>&1 &
  OTHER_PIDS+=($!)
  wait_until 10 test -s "$WORK/port" || { say "the server did not start"; cat "$WORK/server.out" >&2; exit 1; }
  say "control server on 127.0.0.1:$(cat "$WORK/port")"
}

count_requests() { grep -c "POST $1" "$WORK/requests.log" || true; }

# ---------------------------------------------------------------- the children

# Writes the child script $1 that appends "PID SECONDS.NANOSECONDS" to $2 at start.
make_child() {
  cat >"$1" <<EOF
#!/bin/sh
# Benchmark child: records its pid and start time, then sleeps, printing nothing.
echo "\$\$ \$(date +%s.%N)" >>'$2'
exec sleep 100000
EOF
  chmod 755 "$1"
}

child_name() { printf 'child%02d' "$1"; }
stamp_file() { echo "$WORK/$1/stamps/$(child_name "$2")"; }

# Lines in file $1 (0 when missing), without a fork.
line_count() {
  local lines=()
  [[ -f $1 ]] && mapfile -t lines <"$1"
  echo "${#lines[@]}"
}

# True when every child of supervisor $1 has started at least once.
all_started() {
  local i
  for ((i = 1; i <= CHILDREN; i++)); do
    [[ -s $(stamp_file "$1" "$i") ]] || return 1
  done
}

# ---------------------------------------------------------------- the supervisors

# BootAgent: agents/childNN/{1.0/run,current -> 1.0,agent.json} under its data dir.
start_bootagent() {
  local name="$1" data="$WORK/$1/data" i dir
  for ((i = 1; i <= CHILDREN; i++)); do
    dir="$data/agents/$(child_name "$i")"
    mkdir -p "$dir/1.0"
    make_child "$dir/1.0/run" "$(stamp_file "$name" "$i")"
    ln -s 1.0 "$dir/current"
    echo '{"restart": {"delay_s": 0, "failures_max": 1000}}' >"$dir/agent.json"
  done
  "${BIN[$name]}" -S "127.0.0.1:$(cat "$WORK/port")" -D "$data" >"$WORK/$name/supervisor.log" 2>&1 &
  ROOT_PID[$name]=$!
}

# runit: runsvdir over service/childNN/run.
start_runit() {
  local name="$1" i dir
  for ((i = 1; i <= CHILDREN; i++)); do
    dir="$WORK/$name/service/$(child_name "$i")"
    mkdir -p "$dir"
    make_child "$dir/run" "$(stamp_file "$name" "$i")"
  done
  runsvdir "$WORK/$name/service" >"$WORK/$name/supervisor.log" 2>&1 &
  ROOT_PID[$name]=$!
}

# s6: s6-svscan over scan/childNN/run.
start_s6() {
  local name="$1" i dir
  for ((i = 1; i <= CHILDREN; i++)); do
    dir="$WORK/$name/scan/$(child_name "$i")"
    mkdir -p "$dir"
    make_child "$dir/run" "$(stamp_file "$name" "$i")"
  done
  s6-svscan "$WORK/$name/scan" >"$WORK/$name/supervisor.log" 2>&1 &
  ROOT_PID[$name]=$!
}

# supervisord: a generated config, autorestart=true, startsecs=0, in the foreground.
start_supervisord() {
  local name="$1" i dir conf="$WORK/$1/supervisord.conf"
  mkdir -p "$WORK/$name/logs"
  cat >"$conf" <<EOF
[supervisord]
nodaemon=true
logfile=$WORK/$name/supervisord.log
pidfile=$WORK/$name/supervisord.pid
childlogdir=$WORK/$name/logs
loglevel=info
EOF
  for ((i = 1; i <= CHILDREN; i++)); do
    dir="$WORK/$name/programs/$(child_name "$i")"
    mkdir -p "$dir"
    make_child "$dir/run" "$(stamp_file "$name" "$i")"
    cat >>"$conf" <<EOF

[program:$(child_name "$i")]
command=$dir/run
directory=$dir
autostart=true
autorestart=true
startsecs=0
startretries=1000
stopwaitsecs=5
redirect_stderr=true
stdout_logfile=$WORK/$name/logs/$(child_name "$i").log
EOF
  done
  supervisord -n -c "$conf" >"$WORK/$name/supervisor.log" 2>&1 &
  ROOT_PID[$name]=$!
}

# Starts supervisor $1 and waits for its 10 children; on failure, says why.
start_supervisor() {
  local name="$1"
  mkdir -p "$WORK/$name/stamps"
  "start_${KIND[$name]}" "$name"
  SUPS+=("$name")
  if ! wait_until "$START_DEADLINE" all_started "$name"; then
    say "$name: its children did not all start within ${START_DEADLINE} s; log:"
    tail -n 10 "$WORK/$name/supervisor.log" | sed 's/^/    /' >&2
    note "$name: children did not all start; left out"
    stop_supervisor "$name"
    unset 'SUPS[-1]'
    return 1
  fi
  say "$name: pid ${ROOT_PID[$name]}, $CHILDREN children running"
}

# The supervisor's processes: its top process, plus runsv / s6-supervise children.
supervisor_pids() {
  local root="${ROOT_PID[$1]}"
  alive "$root" || return 0
  echo "$root"
  case "${KIND[$1]}" in
    runit) pgrep -P "$root" -x runsv || true ;;
    s6) pgrep -P "$root" -x s6-supervise || true ;;
  esac
}

# Stops supervisor $1 the way its own tools do, then its top process.
stop_supervisor() {
  local name="$1" root="${ROOT_PID[$1]:-}"
  [[ -n $root ]] && alive "$root" || return 0
  case "${KIND[$name]}" in
    runit) # down + exit every runsv (kill after 7 s), then runsvdir
      timeout "$STOP_DEADLINE" sv -w 7 force-shutdown "$WORK/$name/service"/* >/dev/null 2>&1 || true
      kill -HUP "$root" 2>/dev/null || true ;;
    s6) # SIGTERM to every s6-supervise (they bring their service down), then exit
      timeout 5 s6-svscanctl -t "$WORK/$name/scan" 2>/dev/null || true ;;
    *) kill -TERM "$root" 2>/dev/null || true ;; # both stop their children first
  esac
  wait_until "$STOP_DEADLINE" gone "$root" ||
    say "$name: did not exit within ${STOP_DEADLINE} s; killing it"
  stop_pid "$root" 1
}

# ---------------------------------------------------------------- measurements

# Sum of voluntary + nonvoluntary context switches over every thread of pids "$@".
# (A thread that ends meanwhile counts 0.)
switches() {
  local pid files=()
  for pid in "$@"; do files+=("/proc/$pid/task/"*/status); done
  if ((${#files[@]} == 0)); then echo 0; return; fi
  { cat "${files[@]}" 2>/dev/null || true; } |
    awk '$1 ~ /^(non)?voluntary_ctxt_switches:$/ { n += $2 } END { print n + 0 }'
}

# Sum over pids "${@:3}" of the kB fields named in $2 (space-separated) of
# /proc/PID/$1 (a process that is gone counts 0).
sum_kb() {
  local file="$1" keys="$2" pid total=0 v
  shift 2
  for pid in "$@"; do
    v=$(awk -v keys="$keys" 'BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) want[k[i] ":"] = 1 }
      ($1 in want) { s += $2 } END { print s + 0 }' "/proc/$pid/$file" 2>/dev/null) || v=0
    total=$((total + v))
  done
  echo "$total"
}

# Private kB of process $1's mappings of its own executable (from smaps).
exe_private_kb() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || { echo 0; return; }
  awk -v exe="$exe" '/^[0-9a-f]+-[0-9a-f]+ / { mine = ($6 == exe) }
    mine && /^Private_(Clean|Dirty):/ { n += $2 } END { print n + 0 }' "/proc/$1/smaps" 2>/dev/null || echo 0
}

measure_memory() {
  local name pids=() exe_kb
  for name in "${SUPS[@]}"; do
    mapfile -t pids < <(supervisor_pids "$name")
    NPROC[$name]=${#pids[@]}
    RSS_KB[$name]=$(sum_kb status VmRSS "${pids[@]}")
    PRIV_KB[$name]=$(sum_kb smaps_rollup "Private_Clean Private_Dirty" "${pids[@]}")
    PSS_KB[$name]=$(sum_kb smaps_rollup Pss "${pids[@]}")
    if [[ ${KIND[$name]} == bootagent && ${#pids[@]} -gt 0 ]]; then
      exe_kb=$(exe_private_kb "${pids[0]}")
      note "$name: private $(mb "${PRIV_KB[$name]}") = $(mb "$exe_kb") of its own executable's pages (mapped by this process only, so private; runsv's are shared by 10) + $(mb $((PRIV_KB[$name] - exe_kb))) of the rest (heap, stacks, data)"
    fi
    if [[ ${KIND[$name]} == runit ]]; then # the runsv processes alone
      RUNSV_PRIV_KB=$(sum_kb smaps_rollup "Private_Clean Private_Dirty" "${pids[@]:1}")
      RUNSV_COUNT=$((${#pids[@]} - 1))
    fi
  done
}

# Counts every supervisor's context switches over the same idle window.
measure_idle() {
  local name pids=() requests_before
  local -A before=()
  for name in "${SUPS[@]}"; do
    mapfile -t pids < <(supervisor_pids "$name")
    before[$name]="$(switches "${pids[@]}")"
  done
  requests_before=$(count_requests /agent/)
  say "idle window: ${IDLE_SECONDS} s, all supervisors at once ..."
  snooze "$IDLE_SECONDS"
  for name in "${SUPS[@]}"; do
    mapfile -t pids < <(supervisor_pids "$name")
    IDLE[$name]=$(($(switches "${pids[@]}") - ${before[$name]}))
  done
  note "server requests during the idle window: $(($(count_requests /agent/) - requests_before)) (step 600 s: none due)"
}

# Median and worst of the space-separated µs values in $1: "MEDIAN WORST", or "- -"
# when there are none (median of an even count: mean of the two middle values).
median_worst() {
  tr ' ' '\n' <<<"$1" | sort -n | awk 'NF { v[++n] = $1 } END {
    if (n == 0) { print "- -"; exit }
    m = (n % 2) ? v[(n + 1) / 2] : int((v[n / 2] + v[n / 2 + 1]) / 2)
    print m, v[n] }'
}

# Baseline: the child's own start (sh, then date) with no supervisor to speak of.
# A python3 coprocess that, for each line it reads, kills its previous child (not
# timed), takes the time and posix_spawn()s the child script (vfork + exec, as
# cheap as a spawn gets), then prints that time in µs. It takes its turn among the
# supervisors, so it runs under the same load.
start_baseline() {
  mkdir -p "$WORK/baseline/stamps"
  make_child "$WORK/baseline/run" "$(stamp_file baseline 1)"
  : >"$(stamp_file baseline 1)"
  coproc BASELINE { python3 -c '
import os, signal, sys, time
script, pid = sys.argv[1], 0
quiet = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
         (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)]
for _ in sys.stdin:
    if pid:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    t0 = time.time_ns()
    pid = os.posix_spawn(script, [script], os.environ, file_actions=quiet)
    print(t0 // 1000, flush=True)
if pid:
    os.kill(pid, signal.SIGKILL)
' "$WORK/baseline/run"; }
  OTHER_PIDS+=("$BASELINE_PID")
}

# One timed spawn by the baseline coprocess; records it like kill_once does.
baseline_once() {
  local file n t0 start
  file=$(stamp_file baseline 1)
  n=$(line_count "$file")
  echo go >&"${BASELINE[1]}"
  read -r -t 5 t0 <&"${BASELINE[0]}" || { LOST[baseline]=$((${LOST[baseline]:-0} + 1)); return 0; }
  if wait_for_line "$file" "$n" "$((t0 + RESTART_DEADLINE_US))"; then
    start=$(stamp_us "$(last_stamp "$file")")
    LAT[baseline]+="$((start - t0)) "
    echo "baseline $t0 $(last_pid "$file") $start" >>"$WORK/latency.tsv"
  else
    LOST[baseline]=$((${LOST[baseline]:-0} + 1))
  fi
  snooze "$QUIET_S"
}

# Waits until file $1 has more than $2 lines, or until µs $3: true if it did.
wait_for_line() {
  until (($(line_count "$1") > $2)); do
    (($(now_us) < $3)) || return 1
    snooze "$POLL_S"
  done
}

# The last line's timestamp / pid of stamp file $1.
last_line() { local lines=(); mapfile -t lines <"$1"; echo "${lines[-1]}"; }
last_stamp() { local l; l=$(last_line "$1"); echo "${l#* }"; }
last_pid() { local l; l=$(last_line "$1"); echo "${l%% *}"; }

# One kill of child01 of supervisor $1, timed; records the latency or a loss.
kill_once() {
  local name="$1" file pid n t0 now
  file=$(stamp_file "$name" 1)
  now=$(now_us)
  if ((now < ${NEXT_KILL[$name]:-0})); then
    snooze "$(printf '%d.%06d' $(((NEXT_KILL[$name] - now) / 1000000)) $(((NEXT_KILL[$name] - now) % 1000000)))"
  fi
  pid=$(last_pid "$file")
  n=$(line_count "$file")
  t0=$(now_us)
  kill -KILL "$pid" 2>/dev/null || true
  if wait_for_line "$file" "$n" "$((t0 + RESTART_DEADLINE_US))"; then
    local start
    start=$(stamp_us "$(last_stamp "$file")")
    LAT[$name]+="$((start - t0)) "
    echo "$name $t0 $(last_pid "$file") $start" >>"$WORK/latency.tsv"
    NEXT_KILL[$name]=$((start + GAP_US))
  else
    LOST[$name]=$((${LOST[$name]:-0} + 1))
    NEXT_KILL[$name]=$(($(now_us) + GAP_US))
  fi
  snooze "$QUIET_S"
}

# KILLS rounds; in each, the baseline spawns once and every supervisor in turn
# loses child01 once.
measure_latency() {
  local round name
  say "restart latency: $KILLS kills per supervisor, taking turns ..."
  start_baseline
  for ((round = 1; round <= KILLS; round++)); do
    baseline_once
    for name in "${SUPS[@]}"; do kill_once "$name"; done
  done
}

# BootAgent's own part of a restart: from the kill to its log line "child01:
# started, pid N" for the new pid; prints "MEDIAN WORST" in µs, or "- -".
bootagent_reaction() {
  python3 - "$1" "$WORK/latency.tsv" "$WORK/$1/supervisor.log" <<'PY'
import datetime, re, sys
name, tsv, log = sys.argv[1:4]
started = {}
line_re = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d+)Z .*child01: started, pid (\d+)")
for line in open(log, errors="replace"):
    m = line_re.match(line)
    if m:
        t = datetime.datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
        started[m[3]] = int(t.timestamp()) * 1000000 + int((m[2] + "000000")[:6])
values = sorted(started[pid] - int(t_kill) for who, t_kill, pid, _ in
                (l.split() for l in open(tsv)) if who == name and pid in started)
if values:
    n = len(values)
    median = values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) // 2
    print(median, values[-1])
else:
    print("- -")
PY
}

# ---------------------------------------------------------------- report

# "met" when the arithmetic condition $1 holds, else "NOT met".
verdict() { if (($1)); then echo met; else echo "NOT met"; fi; }

# Registers the BootAgent target rows for BootAgent build $1.
target_rows() {
  local name="$1" label="$2" med rt med_x
  read -r med _ <<<"$(median_worst "${LAT[$name]:-}")"
  if [[ $med == - ]]; then
    row "$label: restart latency median < 5 ms" "no restart seen" "-" "NOT met"
  else
    row "$label: restart latency median < 5 ms" "$(ms "$med")" "target $(ms "$TARGET_MEDIAN_US")" \
      "$(verdict "med < TARGET_MEDIAN_US")"
    for rt in runit supervisord; do
      [[ -n ${LAT[$rt]:-} ]] || continue
      read -r med_x _ <<<"$(median_worst "${LAT[$rt]}")"
      row "$label: median below $rt's" "$(ms "$med")" "$rt $(ms "$med_x")" \
        "$(verdict "med < med_x")"
    done
  fi
  row "$label: idle wake-ups = 0" "${IDLE[$name]:-?}" "s6 ${IDLE[s6]:-n/a}" \
    "$(verdict "${IDLE[$name]:-1} == 0")"
  if [[ -n ${RSS_KB[supervisord]:-} ]]; then
    row "$label: RSS < supervisord's / $SUPERVISORD_RSS_FACTOR" "$(mb "${RSS_KB[$name]}")" \
      "supervisord $(mb "${RSS_KB[supervisord]}") / $SUPERVISORD_RSS_FACTOR = $(mb $((RSS_KB[supervisord] / SUPERVISORD_RSS_FACTOR)))" \
      "$(verdict "${RSS_KB[$name]} * SUPERVISORD_RSS_FACTOR < ${RSS_KB[supervisord]}")"
  fi
  if [[ -n ${RUNSV_PRIV_KB:-} ]]; then
    row "$label: private < runit's ${RUNSV_COUNT} runsv" "$(mb "${PRIV_KB[$name]}")" \
      "runsv x${RUNSV_COUNT} $(mb "$RUNSV_PRIV_KB")" \
      "$(verdict "${PRIV_KB[$name]} < RUNSV_PRIV_KB")"
  fi
}

# Pads '|'-separated lines into columns (plain POSIX awk); a rule under the header.
columns() {
  awk -F'|' '
    { n = NR; nf = (NF > nf ? NF : nf); for (i = 1; i <= NF; i++) { c[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } }
    END { for (r = 1; r <= n; r++) {
        line = ""; for (i = 1; i <= nf; i++) line = line sprintf("%-" w[i] "s  ", c[r, i]); sub(/ +$/, "", line); print line
        if (r == 1) { t = 0; for (i = 1; i <= nf; i++) t += w[i] + 2; s = ""; for (k = 0; k < t - 2; k++) s = s "-"; print s } } }'
}

print_figures() {
  local name med worst lat base
  read -r base _ <<<"$(median_worst "${LAT[baseline]:-}")"
  {
    echo "supervisor|processes|restart median|restart worst|median - baseline|lost|idle wake-ups / ${IDLE_SECONDS} s|RSS total|private total|PSS total"
    for name in baseline "${SUPS[@]}"; do
      read -r med worst <<<"$(median_worst "${LAT[$name]:-}")"
      if [[ $med == - ]]; then
        lat="-|-|-"
      elif [[ $base == - || $name == baseline ]]; then
        lat="$(ms "$med")|$(ms "$worst")|-"
      else
        lat="$(ms "$med")|$(ms "$worst")|$(signed_ms $((med - base)))"
      fi
      if [[ $name == baseline ]]; then
        echo "baseline: posix_spawn, no supervisor|-|$lat|${LOST[baseline]:-0}|-|-|-|-"
        continue
      fi
      echo "$name|${NPROC[$name]:-?}|$lat|${LOST[$name]:-0}|${IDLE[$name]:-?}|$(mb "${RSS_KB[$name]:-0}")|$(mb "${PRIV_KB[$name]:-0}")|$(mb "${PSS_KB[$name]:-0}")"
    done
  } | columns
}

print_report() {
  local name med worst
  for name in "${SUPS[@]}"; do
    [[ ${KIND[$name]} == bootagent ]] || continue
    read -r med worst <<<"$(bootagent_reaction "$name")"
    [[ $med == - ]] && continue
    note "$name: kill -> its own log line 'started, pid N' (the spawn done, before the child runs): median $(ms "$med"), worst $(ms "$worst")"
  done
  echo
  echo "Supervising $CHILDREN children: BootAgent beside runit, s6 and supervisord ($(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  print_figures
  echo
  for name in "${SUPS[@]}"; do
    [[ ${KIND[$name]} == bootagent ]] && target_rows "$name" "$name"
  done
  { echo "target|BootAgent|compared with|verdict"; printf '%s\n' "${ROWS[@]}"; } | columns
  echo
  echo "Restart latency: kill -9 of child01 -> the new child's own 'date +%s.%N' at its start;"
  echo "  it includes that start (sh + fork/exec of date), which the baseline row measures alone"
  echo "  (python3 posix_spawn of the same script, taking its turn among the supervisors);"
  echo "  'median - baseline' estimates the supervisor's part."
  echo "  Each kill >= 1.1 s after the child's previous start, so BootAgent's one-start-a-second"
  echo "  rule and runit's/s6's 1 s minimum between starts do not dominate; $KILLS kills each."
  echo "Idle wake-ups: voluntary + nonvoluntary context switches of every thread of the"
  echo "  supervisor processes, all supervisors idle over the same window."
  echo "Memory: VmRSS and Private_Clean + Private_Dirty (smaps_rollup) summed over the supervisor"
  echo "  processes (not the children); MB = 10^6 bytes."
  for name in "${NOTES[@]}"; do echo "$name"; done
}

# ---------------------------------------------------------------- main

# Peers whose programs are there, in display order after BootAgent.
register_peers() {
  if command -v runsvdir >/dev/null && command -v runsv >/dev/null; then
    KIND[runit]=runit
  else
    note "runit: runsvdir/runsv missing; not measured"
  fi
  if command -v s6-svscan >/dev/null && command -v s6-supervise >/dev/null; then
    KIND[s6]=s6
  else
    note "s6: s6-svscan/s6-supervise missing; not measured"
  fi
  if command -v supervisord >/dev/null; then
    KIND[supervisord]=supervisord
  else
    note "supervisord: missing; not measured"
  fi
}

reported_at_least() { (($(count_requests /agent/status) >= $1)); }

# Waits for each BootAgent's registration and first report.
wait_reports() {
  local n=0 name
  for name in "${SUPS[@]}"; do [[ ${KIND[$name]} == bootagent ]] && n=$((n + 1)); done
  wait_until "$REPORT_DEADLINE" reported_at_least "$n" ||
    note "BootAgent: only $(count_requests /agent/status) of $n first reports within ${REPORT_DEADLINE} s"
}

main() {
  local name
  say "work directory $WORK"
  note "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs); latency figures are sensitive to it"
  mkfifo "$WORK/sleep.fifo"
  exec {SLEEP_FD}<>"$WORK/sleep.fifo"
  install_peers
  build_bootagent
  register_peers
  start_server $((IDLE_SECONDS + 20 * KILLS + 300))
  for name in bootagent bootagent-musl runit s6 supervisord; do
    [[ -n ${KIND[$name]:-} ]] || continue
    start_supervisor "$name" || true
  done
  wait_reports
  snooze "$SETTLE_SECONDS"
  for name in "${SUPS[@]}"; do
    [[ ${KIND[$name]} == bootagent ]] || continue
    note "$name: $(find "/proc/${ROOT_PID[$name]}/task" -mindepth 1 -maxdepth 1 | wc -l) threads; $("${BIN[$name]}" status -D "$WORK/$name/data" | grep -c ' running ') of $CHILDREN children 'running' in 'bootagent status'; binary $(stat -c %s "${BIN[$name]}") bytes"
  done
  measure_memory
  measure_idle
  measure_latency
  print_report
}

main "$@"
