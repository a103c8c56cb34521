#!/usr/bin/env bash
# cross/qemu-proof.sh [TARGET]: proves that the cross-built binary
# target/TARGET/release/bootagent (from cross/build.sh) works on its own architecture,
# run under qemu user emulation (qemu-aarch64-static for the default TARGET,
# aarch64-unknown-linux-musl) against the reference server on loopback:
#
#   version    `-V` names TARGET
#   test       `-T` accepts a configuration and writes nothing
#   register   the agent registers, reports (more than once, so its timers run), says
#              it is the right architecture, and exits 0 on SIGTERM
#   identity   started again on the same data directory, it reports as the same agent
#              without registering again
#
# To prove more (installs, supervision of children: issues 3 and 4), write a function
# `proof_NAME` below with the helpers `start_agent`, `stop_agent`, `wait_for`, `admin`
# and `admin_post`, and add NAME to PROOFS. `cross/qemu-proof.sh TARGET NAME...` runs
# only the proofs named.
# Needs: cargo (builds the reference server for the host; REFSERVER=PATH uses a built
# one), curl, jq, and the qemu user emulator (Debian: qemu-user-static).
# Exit status 0 when every proof passed.
set -euo pipefail
cd "$(dirname "$0")/.."

PROOFS=(version test register identity)

die() {
  echo "cross/qemu-proof.sh: $*" >&2
  exit 1
}

target=${1:-aarch64-unknown-linux-musl}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && PROOFS=("$@")
# The runner, and what `uname -m` says under it (the agent reports it as host.arch).
case "$target" in
  aarch64-unknown-linux-musl) runner=(qemu-aarch64-static) arch=aarch64 ;;
  armv7-unknown-linux-musleabihf) runner=(qemu-arm-static) arch=armv7l ;;
  x86_64-unknown-linux-musl) runner=() arch=x86_64 ;;
  *) die "unknown target $target (aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf, x86_64-unknown-linux-musl)" ;;
esac
bin="target/$target/release/bootagent"
[ -x "$bin" ] || die "no $bin: build it first with cross/build.sh $target"
for tool in curl jq ${runner[@]+"${runner[0]}"}; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install curl jq qemu-user-static)"
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/bootagent-proof.XXXXXX")
server_pid="" agent_pid=""
cleanup() {
  local status=$?
  if [ -n "$agent_pid" ]; then kill -KILL "$agent_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; fi
  if [ "$status" -ne 0 ]; then
    echo "--- agent log (last 30 lines)"
    tail -n 30 "$scratch/agent.log" 2>/dev/null || true
    echo "--- reference server output (last 30 lines)"
    tail -n 30 "$scratch/server.out" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 100 ms until it succeeds;
# fails the proof naming WHAT when SECONDS pass first.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local end=$((SECONDS + seconds))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || die "no $what within $seconds s"
    sleep 0.1
  done
}

# The agent binary, under its emulator.
agent() { ${runner[@]+"${runner[@]}"} "$bin" "$@"; }

# admin PATH: GET the reference server's admin endpoint; admin_post PATH JSON: POST to it.
admin() { curl -fsS --max-time 5 "http://$server_addr$1"; }
admin_post() { curl -fsS --max-time 5 -H 'Content-Type: application/json' -d "$2" "http://$server_addr$1"; }

# start_agent ARGS...: the agent in the background on the scratch data directory
# (exec'd, so that agent_pid is the agent's own pid).
start_agent() {
  (exec ${runner[@]+"${runner[@]}"} "$bin" -D "$scratch/data" -L "$scratch/agent.log" -v "$@" \
    </dev/null >/dev/null 2>&1) &
  agent_pid=$!
}

# agent_exited: the agent's process is gone or a zombie (it is our child: `kill -0`
# would still find it until `wait`).
agent_exited() {
  local stat
  stat=$(cat "/proc/$agent_pid/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [ "${stat%% *}" = Z ]
}

# stop_agent: SIGTERM, then the agent must exit 0 within 10 s.
stop_agent() {
  kill -TERM "$agent_pid"
  wait_for 10 "exit of the agent after SIGTERM" agent_exited
  local status=0
  wait "$agent_pid" || status=$?
  agent_pid=""
  [ "$status" -eq 0 ] || die "the agent exited with status $status after SIGTERM"
}

# agent_field FILTER: a jq FILTER applied to the one agent the server knows.
agent_field() { admin /admin/agents | jq -er "if length == 1 then .[0] | $1 else empty end"; }
reports_at_least() { [ "$(agent_field .reports 2>/dev/null || echo 0)" -ge "$1" ]; }

# The reference server, built for the host (unless REFSERVER names one), on a free
# loopback port, asking for a report every second.
refserver=${REFSERVER:-target/debug/examples/refserver}
if [ -z "${REFSERVER:-}" ]; then
  cargo build --quiet --example refserver || die "cannot build the reference server (cargo build --example refserver)"
fi
[ -x "$refserver" ] || die "no reference server at $refserver"
"$refserver" --listen 127.0.0.1:0 --step 1 >"$scratch/server.out" 2>&1 &
server_pid=$!
listening() { grep -q 'listening on http://' "$scratch/server.out"; }
wait_for 30 "reference server" listening
server_addr=$(sed -n 's|.*listening on http://\([0-9.]*:[0-9]*\).*|\1|p' "$scratch/server.out" | head -n 1)
[ -n "$server_addr" ] || die "cannot read the reference server's address from its output"

proof_version() {
  local text
  text=$(agent -V)
  grep -q "($target)" <<<"$text" || die "-V does not name $target: $text"
  echo "  $(head -n 1 <<<"$text"); $(grep '^tls:' <<<"$text")"
}

proof_test() {
  local text
  text=$(agent -T -S "$server_addr" -D "$scratch/test-data") || die "-T refused the configuration: $text"
  grep -q '^ok: bootagent can run' <<<"$text" || die "-T did not say ok: $text"
  [ ! -e "$scratch/test-data" ] || die "-T created the data directory"
}

proof_register() {
  start_agent -S "$server_addr"
  wait_for 30 "two status reports" reports_at_least 2
  local reported_arch
  reported_arch=$(agent_field .host.arch)
  [ "$reported_arch" = "$arch" ] || die "the agent reported arch $reported_arch, not $arch"
  echo "  registered as $(agent_field .sn) ($(agent_field .version), arch $reported_arch), $(agent_field .reports) reports"
  stop_agent
  grep -q 'stopped' "$scratch/agent.log" || die "the agent did not log its stop"
}

proof_identity() {
  [ -e "$scratch/data/meta.json" ] || proof_register
  local sn before
  sn=$(agent_field .sn)
  before=$(agent_field .reports)
  start_agent
  wait_for 30 "report after the restart" reports_at_least $((before + 1))
  [ "$(agent_field .sn)" = "$sn" ] || die "after a restart the agent is $(agent_field .sn), not $sn"
  [ "$(agent_field .registrations)" = 1 ] || die "the agent registered again after a restart"
  stop_agent
  echo "  restarted: same agent $sn, no second registration"
}

echo "cross/qemu-proof.sh: $bin under ${runner[*]:-no emulator} against the reference server at $server_addr"
for proof in "${PROOFS[@]}"; do
  declare -F "proof_$proof" >/dev/null || die "no proof named $proof (${PROOFS[*]})"
  "proof_$proof"
  echo "ok: $proof"
done
echo "cross/qemu-proof.sh: all proofs passed for $target: ${PROOFS[*]}"
