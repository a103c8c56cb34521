# tests/interop/lib.sh: what every interop case shares (sourced by tests/interop.sh).
#
# A case is a shell function `case_NAME` in tests/interop/NAME.sh; it calls `pass NAME`
# or `fail NAME WHY` for each check it makes. Everything a case starts (servers, agents)
# is registered with `track PID` and ended when the case ends; every file it writes is
# under "$WORK/NAME". All addresses are on 127.0.0.1.
#
# Names the cases use:
#   BOOTAGENT, BOOTAGENT_TLS   release binaries, without and with `--features tls`
#   REFSERVER                  the reference control server (release example)
#   free_port                  prints a free TCP port on 127.0.0.1
#   start_refserver DIR [ARGS] starts one, prints "PID PORT" into DIR/refserver.addr
#   start_agent DIR ARGS...    starts `bootagent -D DIR/data -L DIR/agent.log -v ARGS`
#   admin_job PORT JSON        queues a job at the reference server, prints its id
#   job_errcode PORT ID        the errcode the server has for job ID, or nothing
#   wait_for SECS CMD...       runs CMD every 0.2 s until it succeeds or SECS pass
#   agent_json PORT EXPR       a Python expression over `a`, the first agent's JSON

readonly POLL_S=0.2
PASSED=0
FAILED=0
FAILURES=()
TRACKED=()

pass() {
  PASSED=$((PASSED + 1))
  echo "PASS $1"
}

fail() {
  FAILED=$((FAILED + 1))
  FAILURES+=("$1")
  echo "FAIL $1: $2"
}

figure() {
  echo "FIGURE $*"
}

# Registers a process to end when the case ends.
track() {
  TRACKED+=("$1")
}

# Ends every tracked process (TERM, then KILL after 5 s).
end_tracked() {
  local pid deadline
  for pid in "${TRACKED[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 5))
  for pid in "${TRACKED[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  TRACKED=()
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for SECS CMD...: true once CMD succeeds, false when SECS passed.
wait_for() {
  local secs=$1
  shift
  local deadline=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep "$POLL_S"
  done
}

gone() {
  ! kill -0 "$1" 2>/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_refserver DIR [ARGS...]: the reference server on a free port; sets RS_PORT.
start_refserver() {
  local dir=$1
  shift
  mkdir -p "$dir"
  RS_PORT=$(free_port)
  "$REFSERVER" --listen "127.0.0.1:$RS_PORT" "$@" >"$dir/refserver-$RS_PORT.log" 2>&1 &
  RS_PID=$!
  track "$RS_PID"
  wait_for 15 port_open "$RS_PORT" || {
    echo "reference server did not listen on $RS_PORT" >&2
    return 1
  }
}

# start_agent DIR ARGS...: a BootAgent (BOOTAGENT_BIN, default BOOTAGENT) with its data
# in DIR/data and its log in DIR/agent.log; sets AGENT_PID.
start_agent() {
  local dir=$1
  shift
  mkdir -p "$dir"
  "${BOOTAGENT_BIN:-$BOOTAGENT}" -D "$dir/data" -L "$dir/agent.log" -v "$@" \
    >>"$dir/agent.stdout" 2>&1 &
  AGENT_PID=$!
  track "$AGENT_PID"
}

# The reference server's agents, as JSON.
agents_json() {
  curl -fsS --max-time 5 "http://127.0.0.1:$1/admin/agents"
}

# agent_json PORT EXPR: evaluates EXPR over `a` (the first agent known) and prints it;
# fails when there is no agent or EXPR is false or None.
agent_json() {
  agents_json "$1" 2>/dev/null | python3 -c '
import json, sys
try:
    agents = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
if not agents:
    sys.exit(1)
a = agents[0]
v = eval(sys.argv[1])
if v is None or v is False:
    sys.exit(1)
print(v if not isinstance(v, (dict, list)) else json.dumps(v))
' "$2"
}

registered() {
  agent_json "$1" 'a["registrations"] >= 1'
}

reports_at_least() {
  agent_json "$1" "a['reports'] >= $2"
}

# total_reports PORT: status reports the server got from all its agents.
total_reports() {
  agents_json "$1" | python3 -c 'import json,sys; print(sum(a["reports"] for a in json.load(sys.stdin)))'
}

total_reports_at_least() {
  [ "$(total_reports "$1")" -ge "$2" ]
}

# admin_job PORT JSON: queues the job, prints its id.
admin_job() {
  curl -fsS --max-time 5 -d "{\"job\": $2}" "http://127.0.0.1:$1/admin/jobs" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null
}

# job_errcode PORT ID: prints the errcode reported for job ID; fails while there is none.
job_errcode() {
  agent_json "$1" "a['job_results'].get('$2', {}).get('errcode')"
}

job_message() {
  agent_json "$1" "a['job_results'].get('$2', {}).get('message')"
}

# child_field PORT NAME FIELD: a field of the child NAME in the last report.
child_field() {
  agent_json "$1" "next((c.get('$3') for c in (a.get('last_report') or {}).get('agents', []) if c['name'] == '$2'), None)"
}

child_running() {
  [ "$(child_field "$1" "$2" status)" = running ]
}

# wait_job PORT ID SECS: waits for the job's result and prints its errcode.
wait_job() {
  wait_for "$3" job_errcode "$1" "$2" || return 1
  job_errcode "$1" "$2"
}

sha256_of() {
  sha256sum "$1" | cut -d' ' -f1
}

# make_package DIR NAME VERSION RUN_SCRIPT: a tar.gz NAME-VERSION.tar.gz in DIR with an
# executable `run` holding RUN_SCRIPT; prints its path.
make_package() {
  local dir=$1 name=$2 version=$3 script=$4 stage
  stage=$(mktemp -d "$dir/stage.XXXXXX")
  printf '%s\n' "$script" >"$stage/run"
  chmod 0755 "$stage/run"
  tar -C "$stage" -czf "$dir/$name-$version.tar.gz" run
  rm -rf "$stage"
  echo "$dir/$name-$version.tar.gz"
}

# An install job for the package at PATH served at URL.
install_job() {
  local name=$1 url=$2 path=$3 extra=${4:-}
  echo "{\"action\": \"install\", \"name\": \"$name\", \"url\": \"$url\", \"checksum\": \"SHA256:$(sha256_of "$path")\"$extra}"
}

# log_has FILE PATTERN: the agent log holds a line matching the extended regex.
log_has() {
  grep -Eq "$2" "$1" 2>/dev/null
}

# Seconds with a fraction, for figures.
now_s() {
  echo "$EPOCHREALTIME"
}

elapsed_s() {
  python3 -c "print(f'{$2 - $1:.2f}')"
}
