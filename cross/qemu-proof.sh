#!/usr/bin/env bash
# cross/qemu-proof.sh [--small] [TARGET [NAME...]]: proves that the cross-built binary
# target/TARGET/release/bootagent (from cross/build.sh; with --small,
# target/small/TARGET/release/bootagent from cross/build.sh TARGET --small) works on its
# own architecture, run under qemu user emulation (qemu-aarch64-static for the default
# TARGET, aarch64-unknown-linux-musl) against the reference server on loopback:
#
#   version    `-V` names TARGET
#   test       `-T` accepts a configuration and writes nothing
#   register   the agent registers, reports (more than once, so its timers run), says
#              it is the right architecture, and exits 0 on SIGTERM
#   identity   started again on the same data directory, it reports as the same agent
#              without registering again
#   supervise  a preinstalled child (agents/pre/1.0/run, agents/pre/current -> 1.0,
#              written before the agent starts) is started by the agent and reported
#              `running` at version 1.0 with its pid; killed with SIGKILL, it is started
#              again with a new pid; it is stopped with the agent
#   install    an `install` job queued through the admin API (a .tgz holding `run`,
#              served by the reference server under /files/, with its SHA256) ends with
#              errcode 0, and the child BasicAgent is reported `running` at version 1.0
#   selfupgrade a second build of TARGET (BOOT_VERSION=9.9.9, cargo's --target-dir
#              target/proof-v2) is sent as a `self_upgrade` job: errcode 0, the same
#              agent process reports version 9.9.9, the preinstalled child `up` keeps
#              its pid and parent; killed, it is restarted by the new image; the agent
#              stops on SIGTERM, and started again (the installed binary) it hands over
#              to 9.9.9. The new image is exec'd by the emulated agent, which hands
#              execve to the host kernel: under emulation this needs binfmt_misc to
#              know TARGET's machine, so the proof registers qemu for it (flag F, for
#              the time of the proof; root and a mountable binfmt_misc needed) unless
#              it is registered already, and says SKIPPED when it cannot
#
# The children are `#!/bin/sh` scripts that write their pid to a file and
# `exec sleep 1000`: programs of the host, not of TARGET. That is deliberate. qemu user
# emulation hands an emulated program's execve to the host kernel, which runs a
# host program natively (the `#!` line included) with no help; the agent's fork,
# setsid, signals and waitpid are emulated system calls like any other. A TARGET
# child, by contrast, would only start where binfmt_misc has qemu registered for
# TARGET's machine (kernel-wide, needs privileges, and /proc/sys/fs/binfmt_misc is not
# even mounted in most CI containers), so it would fail on a fresh machine for reasons
# that have nothing to do with BootAgent. The proofs check that each child's parent is
# the emulated agent's own process, so the host child proves the emulated agent's
# supervision all the same.
#
# To prove more, write a function `proof_NAME` below with the helpers `start_agent`,
# `start_registered`, `stop_agent`, `wait_for`, `admin`, `admin_post`, `agent_field`,
# `child_field` and `write_child`, and add NAME to PROOFS. `cross/qemu-proof.sh TARGET NAME...` runs
# only the proofs named.
# Needs: cargo (builds the reference server for the host; REFSERVER=PATH uses a built
# one), curl, jq, and the qemu user emulator (Debian: qemu-user-static).
# Exit status 0 when every proof passed.
set -euo pipefail
cd "$(dirname "$0")/.."

PROOFS=(version test register identity supervise install selfupgrade)

die() {
  echo "cross/qemu-proof.sh: $*" >&2
  exit 1
}

small=""
if [ "${1:-}" = --small ]; then
  small=1
  shift
fi
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
bin="target${small:+/small}/$target/release/bootagent"
[ -x "$bin" ] || die "no $bin: build it first with cross/build.sh $target${small:+ --small}"
for tool in curl jq sha256sum tar ${runner[@]+"${runner[0]}"}; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install curl jq qemu-user-static)"
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/bootagent-proof.XXXXXX")
server_pid="" agent_pid=""
cleanup() {
  local status=$?
  if [ -n "$agent_pid" ]; then kill -KILL "$agent_pid" 2>/dev/null || true; fi
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; fi
  # Children the agent left behind when a proof failed (it normally takes them along).
  local pid_file pid
  for pid_file in "$scratch"/*.pid; do
    [ -f "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sleep ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  if [ "$status" -ne 0 ]; then
    echo "--- agent log (last 30 lines)"
    tail -n 30 "$scratch/agent.log" 2>/dev/null || true
    echo "--- reference server output (last 30 lines)"
    tail -n 30 "$scratch/server.out" 2>/dev/null || true
  fi
  if [ -n "${binfmt_entry:-}" ]; then echo -1 >"$binfmt_entry" 2>/dev/null || true; fi
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

# gone PID: the process is gone or a zombie (`kill -0` still finds a zombie).
gone() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [ "${stat%% *}" = Z ]
}

# agent_exited: the agent's process is gone or a zombie (it is our child: a zombie
# until `wait`).
agent_exited() { gone "$agent_pid"; }

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
mkdir "$scratch/files"
"$refserver" --listen 127.0.0.1:0 --step 1 --files "$scratch/files" >"$scratch/server.out" 2>&1 &
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

# write_child FILE PIDFILE: a child agent's `run` (see the header): writes its pid to
# PIDFILE, then becomes a long sleep.
write_child() {
  cat >"$1" <<EOF
#!/bin/sh
echo \$\$ >"$2.tmp" && mv "$2.tmp" "$2"
exec sleep 1000
EOF
  chmod 0755 "$1"
}

# child_field NAME FILTER: a jq FILTER applied to child NAME in the agent's last report.
# A question about two fields asks both of one report: a report may come between two
# requests, and a child waiting to be restarted is reported with pid 0.
child_field() { agent_field ".last_report.agents[]? | select(.name == \"$1\") | $2"; }
# running_pid NAME: the pid of NAME from a report that says it is running.
running_pid() { child_field "$1" 'select(.status == "running") | .pid' 2>/dev/null; }
child_running() { running_pid "$1" >/dev/null; }
# child_restarted NAME PID: NAME is running again, under another pid than PID.
child_restarted() {
  local pid
  pid=$(running_pid "$1") && [ "$pid" != "$2" ]
}
# job_done ID: the server has the result of job ID.
job_done() { agent_field ".job_results[\"$1\"]" >/dev/null 2>&1; }
# pid_file_says FILE PID: FILE (written by the child) holds PID.
pid_file_says() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }

# check_child NAME PIDFILE: NAME is reported running at version 1.0, its pid is the one
# its `run` wrote, and its parent is the agent's process; prints the pid.
check_child() {
  local name=$1 pid_file=$2 pid version ppid
  pid=$(running_pid "$name") || die "$name is no longer reported running"
  version=$(child_field "$name" .version) || die "no version reported for $name"
  [ "$version" = 1.0 ] || die "$name is reported at version $version, not 1.0"
  wait_for 10 "pid $pid of $name in $pid_file" pid_file_says "$pid_file" "$pid"
  ppid=$(awk '$1 == "PPid:" { print $2 }' "/proc/$pid/status" 2>/dev/null) ||
    die "$name: no process $pid"
  [ "$ppid" = "$agent_pid" ] || die "$name (pid $pid) is a child of $ppid, not of the agent ($agent_pid)"
  echo "$pid"
}

# start_registered: starts the agent and waits for a report, registering first when
# no earlier proof did.
start_registered() {
  local before=0
  [ ! -e "$scratch/data/meta.json" ] || before=$(agent_field .reports)
  start_agent -S "$server_addr"
  wait_for 30 "report after the start" reports_at_least $((before + 1))
}

proof_supervise() {
  local dir="$scratch/data/agents/pre" pid_file="$scratch/pre.pid" pid new_pid restarts
  mkdir -p "$dir/1.0"
  chmod 0700 "$scratch/data"
  write_child "$dir/1.0/run" "$pid_file"
  ln -sfn 1.0 "$dir/current"
  start_registered
  wait_for 30 "report of the preinstalled child pre running" child_running pre
  pid=$(check_child pre "$pid_file")
  echo "  preinstalled child pre: running at version 1.0, pid $pid, a child of the agent ($agent_pid)"
  kill -KILL "$pid"
  wait_for 30 "restart of pre after kill -9 $pid" child_restarted pre "$pid"
  new_pid=$(check_child pre "$pid_file")
  restarts=$(child_field pre .restarts)
  [ "$restarts" -ge 1 ] || die "pre was restarted but reports $restarts restarts"
  echo "  kill -9 $pid: restarted as pid $new_pid ($restarts restart)"
  stop_agent
  wait_for 10 "end of the child pre (pid $new_pid) with the agent" gone "$new_pid"
  echo "  stopped with the agent"
}

proof_install() {
  local package="$scratch/package" pid_file="$scratch/BasicAgent.pid" sum id job result errcode pid
  mkdir -p "$package"
  write_child "$package/run" "$pid_file"
  tar czf "$scratch/files/BasicAgent-1.0.tgz" -C "$package" run
  sum=$(sha256sum "$scratch/files/BasicAgent-1.0.tgz")
  sum=${sum%% *}
  start_registered
  id="qemu-proof-install-$(date +%s)-$$"
  job=$(jq -cn --arg sn "$(agent_field .sn)" --arg id "$id" --arg sum "$sum" \
    --arg url "http://$server_addr/files/BasicAgent-1.0.tgz" \
    '{sn: $sn, job: {id: $id, action: "install", name: "BasicAgent", url: $url, checksum: ("SHA256:" + $sum)}}')
  admin_post /admin/jobs "$job" >/dev/null || die "the reference server refused the job $job"
  wait_for 60 "result of the install job $id" job_done "$id"
  result=$(agent_field ".job_results[\"$id\"]" | jq -c .)
  errcode=$(jq -r .errcode <<<"$result")
  [ "$errcode" = 0 ] || die "the install job failed: $result"
  wait_for 30 "report of BasicAgent running" child_running BasicAgent
  pid=$(check_child BasicAgent "$pid_file")
  echo "  install job $id: $result"
  echo "  BasicAgent: running at version 1.0, pid $pid, a child of the agent ($agent_pid)"
  stop_agent
  wait_for 10 "end of the child BasicAgent (pid $pid) with the agent" gone "$pid"
}

# binfmt_ready: the host kernel can run a TARGET binary (natively, or through a
# binfmt_misc entry for qemu, registered here when none is and it can be).
binfmt_entry=""
binfmt_ready() {
  [ ${#runner[@]} -eq 0 ] && return 0
  local dir=/proc/sys/fs/binfmt_misc magic mask machine
  if [ ! -e "$dir/register" ]; then
    mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null || return 1
  fi
  case "$arch" in
    aarch64) machine='\xb7\x00' magic='\x7fELF\x02\x01\x01' mask='\xff\xff\xff\xff\xff\xff\xff' ;;
    armv7l) machine='\x28\x00' magic='\x7fELF\x01\x01\x01' mask='\xff\xff\xff\xff\xff\xff\xff' ;;
    *) return 1 ;;
  esac
  # An entry of the distribution (qemu-user-static's) or of an earlier run will do.
  if grep -qs "^interpreter .*${runner[0]}" "$dir"/qemu-* "$dir"/bootagent-proof-* 2>/dev/null; then
    grep -qs '^enabled' "$dir"/qemu-* "$dir"/bootagent-proof-* && return 0
  fi
  local name="bootagent-proof-$arch" interpreter
  interpreter=$(command -v "${runner[0]}") || return 1
  # binfmt_misc reads the \x escapes itself: they go in as text.
  local zeros='\x00\x00\x00\x00\x00\x00\x00\x00\x00' ones='\xff\xff\xff\xff\xff\xff\xff\xff'
  printf '%s\n' ":$name:M::$magic$zeros\x02\x00$machine:$mask\x00$ones\xfe\xff\xff\xff:$interpreter:F" \
    >"$dir/register" 2>/dev/null || return 1
  binfmt_entry="$dir/$name"
}

proof_selfupgrade() {
  local dir="$scratch/data/agents/up" pid_file="$scratch/up.pid" v2=9.9.9 new sum id job
  local result errcode pid new_pid before
  if ! binfmt_ready; then
    echo "  SKIPPED: the host kernel cannot run a $target binary (no binfmt_misc entry for"
    echo "  ${runner[0]}, and none can be registered here: needs root and binfmt_misc)"
    return 0
  fi
  BOOT_VERSION=$v2 cargo build --quiet --release --locked --target "$target" \
    --target-dir target/proof-v2 || die "cannot build the second binary (BOOT_VERSION=$v2)"
  new="target/proof-v2/$target/release/bootagent"
  cp "$new" "$scratch/files/bootagent-$v2"
  sum=$(sha256sum "$new")
  sum=${sum%% *}
  mkdir -p "$dir/1.0"
  chmod 0700 "$scratch/data"
  write_child "$dir/1.0/run" "$pid_file"
  ln -sfn 1.0 "$dir/current"
  start_registered
  wait_for 30 "report of the preinstalled child up running" child_running up
  pid=$(check_child up "$pid_file")
  before=$agent_pid
  id="qemu-proof-selfupgrade-$(date +%s)-$$"
  job=$(jq -cn --arg sn "$(agent_field .sn)" --arg id "$id" --arg sum "$sum" \
    --arg url "http://$server_addr/files/bootagent-$v2" \
    '{sn: $sn, job: {id: $id, action: "self_upgrade", url: $url, checksum: ("SHA256:" + $sum), probation: 3}}')
  admin_post /admin/jobs "$job" >/dev/null || die "the reference server refused the job $job"
  wait_for 120 "result of the self_upgrade job $id" job_done "$id"
  result=$(agent_field ".job_results[\"$id\"]" | jq -c .)
  errcode=$(jq -r .errcode <<<"$result")
  [ "$errcode" = 0 ] || die "the self_upgrade job failed: $result"
  ! agent_exited || die "the agent's process ended during the self-upgrade"
  [ "$agent_pid" = "$before" ] || die "the agent's pid changed"
  case "$(agent_field .version)" in
    bootagent-$v2-*) ;;
    *) die "the agent reports $(agent_field .version) after the upgrade, not $v2" ;;
  esac
  [ "$(check_child up "$pid_file")" = "$pid" ] || die "the child up was restarted by the upgrade"
  [ "$(child_field up .restarts)" = 0 ] || die "the child up counts a restart"
  echo "  self_upgrade job $id: $result"
  echo "  same agent process $agent_pid now reports $(agent_field .version); child up kept pid $pid"
  kill -KILL "$pid"
  wait_for 30 "restart of up by the new image" child_restarted up "$pid"
  new_pid=$(check_child up "$pid_file")
  echo "  kill -9 $pid: restarted by the new image as pid $new_pid"
  stop_agent
  wait_for 10 "end of the child up (pid $new_pid) with the agent" gone "$new_pid"
  before=$(agent_field .reports)
  start_agent
  wait_for 30 "report after the restart" reports_at_least $((before + 1))
  case "$(agent_field .version)" in
    bootagent-$v2-*) ;;
    *) die "started again, the installed binary runs $(agent_field .version), not $v2" ;;
  esac
  echo "  started again: the installed binary handed over to $v2"
  stop_agent
}

echo "cross/qemu-proof.sh: $bin under ${runner[*]:-no emulator} against the reference server at $server_addr"
for proof in "${PROOFS[@]}"; do
  declare -F "proof_$proof" >/dev/null || die "no proof named $proof (${PROOFS[*]})"
  "proof_$proof"
  echo "ok: $proof"
done
echo "cross/qemu-proof.sh: all proofs passed for $target: ${PROOFS[*]}"
