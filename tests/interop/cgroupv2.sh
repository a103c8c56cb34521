# tests/interop/cgroupv2.sh: BootAgent's cgroup v2 code on a real kernel. The hosts the
# suite runs on have cgroup v1 controllers only, so this boots Debian's arm64 kernel
# under qemu-system-aarch64 (the firmware proof's guest, cross/guest-lib.sh: TCG, no
# network device, BusyBox init, a control server in the guest) with the static aarch64
# BootAgent, on the kernel's own cgroup2 with `+memory +cpu` offered at its root.
#
# BootAgent is started the way a service manager with delegation starts it: alone in a
# cgroup of its own it may write (`/bootagent.service`). Three children are preinstalled
# in its data directory (docs/protocol.md section 8), limits in their agent.json:
#   hog     {"memory": "20M"}, runs `dd bs=64M` (a 64 MiB buffer)
#   spin    {"CPU": "20%"}, a shell loop that never sleeps
#   escape  no limits; its run script starts `setsid sleep 3001 &`, then sleeps itself
# The guest's /proof prints what it finds as `proof:` lines on the serial console; the
# host judges them, one check each:
#   cgroupv2-layout  BootAgent moved itself into bootagent.service/bootagent-supervisor;
#                    the children's processes are in bootagent.service/
#                    bootagent-children/agent-NAME-TAG with memory.oom.group 1, cpu.max
#                    "20000 100000" for spin
#   cgroupv2-cpu     spin's usage from its cpu.stat over 5 s of the guest's clock is
#                    within 10-35 % of a CPU (TCG is slow and noisy) and it was
#                    throttled (nr_throttled > 0); the figure is printed
#   cgroupv2-oom     the kernel's OOM killer killed hog in its own cgroup (its oom-kill
#                    record in the kernel log), and BootAgent reported a `killed` event
#                    for hog naming "memory 20M" in a status report to the server
#   cgroupv2-setsid  escape's grandchild runs in another session, in escape's cgroup;
#                    after `bootagent stop escape` (the local console) no process of
#                    escape is left in /proc
#   cgroupv2-respawn escape started again, BootAgent SIGKILLed (its grandchild, in
#                    another session, outlives it) and started again in its leaf (as
#                    systemd's DelegateSubgroup= does): the grandchild left is ended,
#                    escape runs once, afresh, and the children are in their cgroups,
#                    spin under its limit
#   cgroupv2-beside  a second BootAgent sharing its cgroup with another process (a login
#                    session's /user.slice/session.scope) puts its children in
#                    /user.slice/bootagent-children, enabling the controllers there
#                    itself, its child's limits written (cpu.max, memory.max,
#                    memory.swap.max 0, memory.oom.group 1); SIGTERM ends its child
#                    and removes that parent
#   cgroupv2-describe `bootagent -T` alone in a cgroup it may write says its children
#                    would go into that cgroup's bootagent-children, and creates or
#                    enables nothing there
#
# The aarch64 binary: cross/build.sh aarch64-unknown-linux-musl (cargo's incremental
# build: nothing to do when cross/ci.sh built it just before, as in CI; about 2 min
# cold). The Debian packages are cached in target/firmware/debs, shared with
# cross/firmware-proof.sh. Anything missing (qemu-system-arm, the packages, the build)
# fails the case.

# Bound of the guest's run: about 30 s under TCG on an idle machine, about a minute
# when 2 cores are shared with other work.
CGROUPV2_BOOT_DEADLINE_S=180
# What TCG's throttle must achieve of the 20 % asked: the judgement's tolerance.
CGROUPV2_CPU_PCT_MIN=10
CGROUPV2_CPU_PCT_MAX=35

case_cgroupv2() {
  local dir=$1 bin console image
  # shellcheck source=cross/guest-lib.sh
  . "$ROOT/cross/guest-lib.sh"
  if ! guest_check_tools; then
    fail cgroupv2 "$GUEST_ERROR"
    return
  fi
  echo "cgroupv2: building the aarch64 binary (log: $dir/build.log)" >&2
  if ! (cd "$ROOT" && bash cross/build.sh aarch64-unknown-linux-musl) >"$dir/build.log" 2>&1; then
    fail cgroupv2 "cross/build.sh aarch64-unknown-linux-musl failed: $(grep -m1 -iE 'error|cross/build.sh:' "$dir/build.log")"
    return
  fi
  bin=$ROOT/target/aarch64-unknown-linux-musl/release/bootagent
  if ! guest_check_bin "$bin" || ! guest_debs "$ROOT/target/firmware/debs"; then
    fail cgroupv2 "$GUEST_ERROR"
    return
  fi
  image=$dir/image
  mkdir -p "$image"
  if ! guest_image "$image" "$bin"; then
    fail cgroupv2 "$GUEST_ERROR"
    return
  fi
  cgroupv2_guest "$image/root"
  if ! guest_initrd "$image" "::once:/srv/agent"; then
    fail cgroupv2 "$GUEST_ERROR"
    return
  fi
  console=$dir/console.log
  local booted=""
  guest_boot "$image" "$console" "$CGROUPV2_BOOT_DEADLINE_S" 512 && booted=1
  guest_console "$console" >"$dir/console.txt" 2>/dev/null
  grep -E '^(proof|rc):' "$dir/console.txt" >&2
  if ! grep -q '^proof: done' "$dir/console.txt"; then
    fail cgroupv2 "${booted:+the guest powered off, }$([ -n "$booted" ] || echo "$GUEST_ERROR, ")its /proof did not finish; console: $(tail -n 5 "$dir/console.txt" | tr '\n' '|')"
    return
  fi
  echo "cgroupv2: guest ran ${GUEST_ELAPSED:-?} s; $GUEST_KERNEL_PACKAGE" >&2
  cgroupv2_judge "$dir/console.txt"
}

# proof_value FILE STEP KEY: the value of KEY on the console line `proof: STEP ...`,
# written there as KEY=VALUE (up to the next space) or KEY='VALUE' (spaces allowed).
proof_value() {
  sed -n "s/^proof: $2 .*\\b$3='\\([^']*\\)'.*/\\1/p; t; s/^proof: $2 .*\\b$3=\\([^ ]*\\).*/\\1/p" "$1" | head -n 1
}

cgroupv2_judge() {
  local console=$1 agent v why
  local spin_cg escape_cg spin_oom escape_oom spin_max
  # The layout.
  agent=$(proof_value "$console" layout agent)
  spin_cg=$(proof_value "$console" layout spin)
  escape_cg=$(proof_value "$console" layout escape)
  spin_oom=$(proof_value "$console" layout spin_oom_group)
  escape_oom=$(proof_value "$console" layout escape_oom_group)
  spin_max=$(proof_value "$console" layout spin_cpu_max)
  why=""
  [ "$agent" = /bootagent.service/bootagent-supervisor ] ||
    why="BootAgent is in ${agent:-no cgroup}, not /bootagent.service/bootagent-supervisor"
  case "$spin_cg" in
    /bootagent.service/bootagent-children/agent-spin-*) ;;
    *) why="${why:+$why; }spin is in ${spin_cg:-no cgroup}" ;;
  esac
  case "$escape_cg" in
    /bootagent.service/bootagent-children/agent-escape-*) ;;
    *) why="${why:+$why; }escape is in ${escape_cg:-no cgroup}" ;;
  esac
  [ "$spin_oom" = 1 ] && [ "$escape_oom" = 1 ] ||
    why="${why:+$why; }memory.oom.group is ${spin_oom:-unknown} (spin), ${escape_oom:-unknown} (escape)"
  [ "$spin_max" = "20000 100000" ] || why="${why:+$why; }spin's cpu.max is '${spin_max:-unknown}'"
  if [ -z "$why" ]; then
    pass "cgroupv2-layout (BootAgent in $agent, children in /bootagent.service/bootagent-children, memory.oom.group 1)"
  else
    fail cgroupv2-layout "$why"
  fi

  # The CPU throttle.
  v=$(proof_value "$console" cpu achieved_pct)
  local throttled seconds
  throttled=$(proof_value "$console" cpu nr_throttled)
  seconds=$(proof_value "$console" cpu seconds)
  if [ -z "$v" ]; then
    fail cgroupv2-cpu "no measurement: $(grep -m1 '^proof: cpu' "$console")"
  else
    figure "cgroupv2 CPU throttle: asked 20 %, achieved $v % (spin's cpu.stat over $seconds s, nr_throttled $throttled, qemu TCG)"
    if awk -v v="$v" -v lo="$CGROUPV2_CPU_PCT_MIN" -v hi="$CGROUPV2_CPU_PCT_MAX" \
      'BEGIN { exit !(v >= lo && v <= hi) }' && [ "${throttled:-0}" -gt 0 ]; then
      pass "cgroupv2-cpu (asked 20 %, achieved $v %)"
    else
      fail cgroupv2-cpu "achieved $v % of a CPU (asked 20 %, judged $CGROUPV2_CPU_PCT_MIN-$CGROUPV2_CPU_PCT_MAX %), nr_throttled ${throttled:-unknown}"
    fi
  fi

  # The memory limit: the kernel's kill, then BootAgent's event.
  local memcg event
  memcg=$(proof_value "$console" oom task_memcg)
  event=$(proof_value "$console" oom event)
  why=""
  case "$memcg" in
    /bootagent.service/bootagent-children/agent-hog-*) ;;
    *) why="the kernel log has no oom-kill in hog's cgroup (task_memcg '${memcg:-none}')" ;;
  esac
  case "$event" in
    *'"event":"killed"'*) ;;
    *) event="" ;;
  esac
  case "$event" in
    *'"name":"hog"'*'memory 20M'* | *'memory 20M'*'"name":"hog"'*) ;;
    *) why="${why:+$why; }no killed event for hog naming memory 20M in a report (${event:-none})" ;;
  esac
  if [ -z "$why" ]; then
    pass "cgroupv2-oom (kernel: oom-kill in $memcg; reported: $event)"
  else
    fail cgroupv2-oom "$why"
  fi

  # setsid.
  local session_child session_grandchild grandchild_cg stopped left
  session_child=$(proof_value "$console" setsid child_session)
  session_grandchild=$(proof_value "$console" setsid grandchild_session)
  grandchild_cg=$(proof_value "$console" setsid grandchild_cgroup)
  stopped=$(proof_value "$console" setsid stop)
  left=$(proof_value "$console" setsid left)
  why=""
  [ -n "$session_grandchild" ] && [ "$session_grandchild" != "$session_child" ] ||
    why="the grandchild is not in a session of its own (${session_grandchild:-none} vs ${session_child:-none})"
  [ -n "$escape_cg" ] && [ "$grandchild_cg" = "$escape_cg" ] ||
    why="${why:+$why; }the grandchild is in ${grandchild_cg:-no cgroup}, not escape's ${escape_cg:-none}"
  case "$stopped" in
    0:*) ;;
    *) why="${why:+$why; }bootagent stop escape answered '${stopped:-nothing}'" ;;
  esac
  [ "$left" = 0 ] || why="${why:+$why; }${left:-an unknown number of} processes of escape left after the stop"
  if [ -z "$why" ]; then
    pass "cgroupv2-setsid (grandchild in session $session_grandchild, stopped with its child: none left)"
  else
    fail cgroupv2-setsid "$why"
  fi
  cgroupv2_judge_respawn "$console"
  cgroupv2_judge_beside "$console"
  cgroupv2_judge_describe "$console"
}

cgroupv2_judge_beside() {
  local console=$1 agent child why=""
  agent=$(proof_value "$console" beside agent)
  child=$(proof_value "$console" beside child)
  [ "$agent" = /user.slice/session.scope ] || why="the second BootAgent is in ${agent:-no cgroup}"
  case "$child" in
    /user.slice/bootagent-children/agent-q-*) ;;
    *) why="${why:+$why; }its child is in ${child:-no cgroup}, not in /user.slice/bootagent-children" ;;
  esac
  [ "$(proof_value "$console" beside cpu_max)" = "30000 100000" ] ||
    why="${why:+$why; }its child's cpu.max is '$(proof_value "$console" beside cpu_max)'"
  [ "$(proof_value "$console" beside oom_group)" = 1 ] ||
    why="${why:+$why; }its child's memory.oom.group is '$(proof_value "$console" beside oom_group)'"
  [ "$(proof_value "$console" beside memory_max)" = $((48 * 1024 * 1024)) ] ||
    why="${why:+$why; }its child's memory.max is '$(proof_value "$console" beside memory_max)'"
  # memory.swap.max exists where the kernel accounts swap; BootAgent writes 0 there.
  case "$(proof_value "$console" beside swap_max)" in
    0 | "") ;;
    *) why="${why:+$why; }its child's memory.swap.max is '$(proof_value "$console" beside swap_max)'" ;;
  esac
  [ "$(proof_value "$console" beside left)" = 0 ] || why="${why:+$why; }its child outlived it"
  [ "$(proof_value "$console" beside released)" = yes ] ||
    why="${why:+$why; }/user.slice/bootagent-children is left after it stopped"
  if [ -z "$why" ]; then
    pass "cgroupv2-beside (a BootAgent sharing /user.slice/session.scope: child in /user.slice/bootagent-children, cpu.max 30000 100000, memory.max 48M, memory.swap.max $(proof_value "$console" beside swap_max), ended and removed with it)"
  else
    fail cgroupv2-beside "$why ($(grep -m 1 '^proof: beside' "$console"))"
  fi
}

cgroupv2_judge_describe() {
  local console=$1 said why=""
  said=$(proof_value "$console" describe said)
  case "$said" in
    "resource limits: cgroup v2 (/sys/fs/cgroup/check.service/bootagent-children)"*) ;;
    *) why="bootagent -T said '${said:-nothing}'" ;;
  esac
  [ -z "$(proof_value "$console" describe made)$(proof_value "$console" describe subtree)" ] ||
    why="${why:+$why; }bootagent -T made '$(proof_value "$console" describe made)', enabled '$(proof_value "$console" describe subtree)'"
  if [ -z "$why" ]; then
    pass "cgroupv2-describe (bootagent -T alone in a cgroup: $said, nothing made)"
  else
    fail cgroupv2-describe "$why"
  fi
}

cgroupv2_judge_respawn() {
  local console=$1 agent old_agent alive children grandchildren escape_cg spin_cg spin_max why=""
  old_agent=$(proof_value "$console" respawn old_agent)
  agent=$(proof_value "$console" respawn agent)
  alive=$(proof_value "$console" respawn old_grandchild_alive)
  children=$(proof_value "$console" respawn children)
  grandchildren=$(proof_value "$console" respawn grandchildren)
  escape_cg=$(proof_value "$console" respawn escape_cgroup)
  spin_cg=$(proof_value "$console" respawn spin_cgroup)
  spin_max=$(proof_value "$console" respawn spin_cpu_max)
  [ -n "$agent" ] && [ "$agent" != "$old_agent" ] || why="no new BootAgent (${agent:-none})"
  [ "$(proof_value "$console" respawn agent_cgroup)" = /bootagent.service/bootagent-supervisor ] ||
    why="${why:+$why; }the new BootAgent is in $(proof_value "$console" respawn agent_cgroup)"
  [ "$alive" = no ] || why="${why:+$why; }the grandchild left by the killed BootAgent still runs"
  [ "$children" = 1 ] && [ "$grandchildren" = 1 ] ||
    why="${why:+$why; }escape runs ${children:-?} times, its grandchild ${grandchildren:-?} times"
  case "$escape_cg $spin_cg" in
    "/bootagent.service/bootagent-children/agent-escape-"*" /bootagent.service/bootagent-children/agent-spin-"*) ;;
    *) why="${why:+$why; }children in ${escape_cg:-none} and ${spin_cg:-none}" ;;
  esac
  [ "$spin_max" = "20000 100000" ] || why="${why:+$why; }spin's cpu.max is '${spin_max:-unknown}'"
  if [ -z "$why" ]; then
    pass "cgroupv2-respawn (BootAgent SIGKILLed and started again in its leaf: the escaped grandchild ended, escape and spin afresh under their limits)"
  else
    fail cgroupv2-respawn "$why"
  fi
}

# cgroupv2_guest ROOT: the children, the launcher and /proof in the image's tree.
cgroupv2_guest() {
  local root=$1 agents=$1/var/lib/bootagent/agents
  mkdir -p "$agents"/{hog,spin,escape}/1.0
  local name
  for name in hog spin escape; do
    ln -s 1.0 "$agents/$name/current"
  done
  printf '#!/bin/sh\nexec dd if=/dev/zero of=/dev/null bs=64M count=1\n' >"$agents/hog/1.0/run"
  echo '{"limits": {"memory": "20M"}}' >"$agents/hog/agent.json"
  printf '#!/bin/sh\nwhile :; do :; done\n' >"$agents/spin/1.0/run"
  echo '{"limits": {"CPU": "20%"}}' >"$agents/spin/agent.json"
  printf '#!/bin/sh\nsetsid sleep 3001 &\nexec sleep 3000\n' >"$agents/escape/1.0/run"
  chmod 0755 "$agents"/*/1.0/run

  # What the init system does for a service: memory and cpu offered to the root's
  # children (a cgroup v2 host's service manager does this).
  cat >"$root/etc/rc.local" <<'EOF'
#!/bin/sh
hostname cgroupv2
dmesg -n 1
echo "+memory +cpu" >/sys/fs/cgroup/cgroup.subtree_control
EOF
  # BootAgent as a service manager with delegation starts it: alone in a cgroup of its
  # own, which it may write (systemd's Delegate=yes).
  cat >"$root/srv/agent" <<'EOF'
#!/bin/sh
mkdir -p /sys/fs/cgroup/bootagent.service
echo $$ >/sys/fs/cgroup/bootagent.service/cgroup.procs
exec /usr/sbin/bootagent -S 127.0.0.1:8080 -v -D /var/lib/bootagent -L /var/log/bootagent.log
EOF

  cat >"$root/proof" <<'EOF'
#!/bin/sh
# Each step prints `proof: STEP KEY=VALUE...` (the host judges them) or
# `proof: STEP FAILED: why`, then goes on; `proof: done` at the end.
cg=/sys/fs/cgroup
say() { echo "proof: $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
wait_for() {
  seconds=$1; shift
  end=$(( $(cut -d. -f1 /proc/uptime) + seconds ))
  until "$@"; do
    [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ] || return 1
    sleep 0.2
  done
}
# pid_of NAME: the pid of child NAME in the last report, when it runs there.
pid_of() {
  tail -n 1 /run/server/bodies 2>/dev/null |
    sed -n "s/.*\"name\":\"$1\",\"version\":\"[^\"]*\",\"status\":\"running\",\"uptime\":[0-9]*,\"pid\":\([0-9]*\).*/\1/p"
}
running() { p=$(pid_of "$1"); [ -n "$p" ] && [ "$p" != 0 ]; }
cgroup_of() { sed -n 's/^0:://p' "/proc/$1/cgroup" 2>/dev/null; }
# pids_with ARGS: the processes whose command line is exactly ARGS.
pids_with() {
  for p in /proc/[0-9]*; do
    [ "$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" = "$* " ] && echo "${p#/proc/}"
  done
}
session_of() { cut -d' ' -f6 "/proc/$1/stat" 2>/dev/null; }
# The first `killed` event of hog the server got (an event's keys come in any order).
killed_event() {
  grep -o '{[^{}]*}' /run/server/bodies 2>/dev/null | grep '"name":"hog"' | grep -m 1 '"event":"killed"'
}
has_killed_event() { [ -n "$(killed_event)" ]; }
escape_up() { [ -n "$(pids_with sleep 3000)" ] && [ -n "$(pids_with sleep 3001)" ]; }
escape_gone() { [ -z "$(pids_with sleep 3000)$(pids_with sleep 3001)" ]; }
registered() { [ -s /run/server/registers ]; }

say "kernel $(uname -r) cgroup2: controllers='$(cat $cg/cgroup.controllers)' root subtree_control='$(cat $cg/cgroup.subtree_control)'"
if ! wait_for 60 registered; then
  say "register FAILED: no registration within 60 s"
  tail -n 20 /var/log/bootagent.log
  say "done"
  poweroff -f
fi
if ! wait_for 30 running spin || ! wait_for 30 running escape; then
  say "start FAILED: spin and escape not reported running within 30 s"
fi
say "mechanism $(grep -m 1 -o 'resource limits: .*' /var/log/bootagent.log)"

# (d) The layout.
a=$(pidof bootagent)
spin=$(pid_of spin) escape=$(pid_of escape)
spin_cg=$(cgroup_of "$spin") escape_cg=$(cgroup_of "$escape")
say "layout agent=$(cgroup_of "$a") spin=$spin_cg escape=$escape_cg spin_oom_group=$(cat "$cg$spin_cg/memory.oom.group" 2>/dev/null) escape_oom_group=$(cat "$cg$escape_cg/memory.oom.group" 2>/dev/null) service_subtree='$(cat $cg/bootagent.service/cgroup.subtree_control 2>/dev/null)' service_procs='$(cat $cg/bootagent.service/cgroup.procs 2>/dev/null)' spin_cpu_max='$(cat "$cg$spin_cg/cpu.max" 2>/dev/null)'"

# (b) The CPU throttle: spin's usage over 5 s of the guest's clock.
stat="$cg$spin_cg/cpu.stat"
if [ -r "$stat" ]; then
  u0=$(sed -n 's/^usage_usec //p' "$stat") n0=$(sed -n 's/^nr_throttled //p' "$stat") t0=$(now)
  sleep 5
  u1=$(sed -n 's/^usage_usec //p' "$stat") n1=$(sed -n 's/^nr_throttled //p' "$stat") t1=$(now)
  tu=$(sed -n 's/^throttled_usec //p' "$stat")
  say "cpu $(awk -v u0="$u0" -v u1="$u1" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "achieved_pct=%.1f seconds=%.2f", (u1 - u0) / 10000 / (t1 - t0), t1 - t0 }') nr_throttled=$((n1 - n0)) throttled_usec=$tu"
else
  say "cpu FAILED: no $stat"
fi

# (a) The memory limit: the kernel's OOM kill in hog's cgroup, and BootAgent's event.
if ! wait_for 30 has_killed_event; then
  say "oom FAILED: no killed event for hog within 30 s"
  echo "--- hog in the agent log"
  grep hog /var/log/bootagent.log | tail -n 20
  echo "--- hog's events reported"
  grep -o '{[^{}]*"name":"hog"[^{}]*}' /run/server/bodies | sort -u | tail -n 10
fi
record=$(dmesg | grep -m 1 'oom-kill:')
memcg=$(echo "$record" | sed -n 's/.*task_memcg=\([^,]*\).*/\1/p')
say "oom task_memcg=$memcg task=$(echo "$record" | sed -n 's/.*task=\([^,]*\).*/\1/p') event='$(killed_event | tr "'" '"')'"

# (c) setsid: the grandchild left the child's session; stopping the child ends it too.
wait_for 10 escape_up || say "setsid FAILED: escape's processes not both up"
child=$(pids_with sleep 3000) grandchild=$(pids_with sleep 3001)
before="child=$child child_session=$(session_of "$child") grandchild=$grandchild grandchild_session=$(session_of "$grandchild") grandchild_cgroup=$(cgroup_of "$grandchild")"
answer=$(bootagent stop escape -D /var/lib/bootagent 2>&1)
code=$?
wait_for 15 escape_gone
left=$({ pids_with sleep 3000; pids_with sleep 3001; } | wc -w)
say "setsid $before left=$left stop='$code: $(echo "$answer" | head -n 1 | tr "'" '"')'"

# (e) BootAgent SIGKILLed while escape's grandchild runs, and started again in its leaf
# (as systemd's DelegateSubgroup= does): the grandchild its predecessor left is ended,
# escape runs once, afresh.
bootagent start escape -D /var/lib/bootagent >/dev/null 2>&1
wait_for 15 escape_up || say "respawn FAILED: escape not started again"
old_child=$(pids_with sleep 3000) old_grandchild=$(pids_with sleep 3001) old_agent=$(pidof bootagent)
kill -9 "$old_agent"
agent_gone() { ! kill -0 "$old_agent" 2>/dev/null; }
wait_for 10 agent_gone || say "respawn FAILED: BootAgent survived SIGKILL"
reports=$(wc -l </run/server/reports)
setsid /srv/agent-again >/dev/null 2>&1 &
restarted() {
  [ "$(wc -l </run/server/reports)" -gt "$reports" ] && running escape && [ "$(pid_of escape)" != "$old_child" ] &&
    [ -n "$(pids_with sleep 3001)" ] && [ "$(pids_with sleep 3001)" != "$old_grandchild" ]
}
wait_for 30 restarted || say "respawn FAILED: escape not reported running afresh within 30 s"
alive=no
[ -d "/proc/$old_grandchild" ] && alive=yes
a=$(pidof bootagent) escape=$(pid_of escape) spin=$(pid_of spin)
say "respawn old_agent=$old_agent agent=$a agent_cgroup=$(cgroup_of "$a") old_grandchild=$old_grandchild old_grandchild_alive=$alive children=$(pids_with sleep 3000 | wc -w) grandchildren=$(pids_with sleep 3001 | wc -w) escape_cgroup=$(cgroup_of "$escape") spin_cgroup=$(cgroup_of "$spin") spin_cpu_max='$(cat "$cg$(cgroup_of "$spin")/cpu.max" 2>/dev/null)'"

# (f) Beside: a second BootAgent that shares its cgroup (a login session's scope) puts
# its children's parent beside that cgroup, enabling the controllers there itself.
mkdir -p /var/lib/other/agents/q/1.0 $cg/user.slice/session.scope
printf '#!/bin/sh\nexec sleep 3002\n' >/var/lib/other/agents/q/1.0/run
chmod 0755 /var/lib/other/agents/q/1.0/run
ln -s 1.0 /var/lib/other/agents/q/current
echo '{"limits": {"CPU": "30%", "memory": "48M"}}' >/var/lib/other/agents/q/agent.json
echo $$ >$cg/user.slice/session.scope/cgroup.procs
/usr/sbin/bootagent -S 127.0.0.1:9 -v -D /var/lib/other -L /var/log/other.log &
other=$!
q_up() { [ -n "$(pids_with sleep 3002)" ]; }
wait_for 20 q_up || say "beside FAILED: the second agent's child did not start"
q=$(pids_with sleep 3002)
q_cg=$(cgroup_of "$q")
beside="agent=$(cgroup_of "$other") child=$q_cg cpu_max='$(cat "$cg$q_cg/cpu.max" 2>/dev/null)' oom_group=$(cat "$cg$q_cg/memory.oom.group" 2>/dev/null) memory_max=$(cat "$cg$q_cg/memory.max" 2>/dev/null) swap_max=$(cat "$cg$q_cg/memory.swap.max" 2>/dev/null) slice_subtree='$(cat $cg/user.slice/cgroup.subtree_control)'"
kill -TERM "$other"
other_gone() { ! kill -0 "$other" 2>/dev/null; }
wait_for 20 other_gone || say "beside FAILED: the second agent did not stop on SIGTERM"
released=no
[ -d $cg/user.slice/bootagent-children ] || released=yes
say "beside $beside left=$(pids_with sleep 3002 | wc -w) released=$released mechanism='$(grep -m 1 -o 'resource limits: .*' /var/log/other.log | tr "'" '"')'"

# (g) `bootagent -T` alone in a cgroup it may write says where the children would go,
# and makes nothing there.
mkdir $cg/check.service
said=$(sh -c "echo \$\$ >$cg/check.service/cgroup.procs && exec bootagent -T -D /tmp/check -S 127.0.0.1:9" 2>&1 |
  grep -m 1 -o 'resource limits: .*' | tr "'" '"')
say "describe made='$(cd $cg/check.service && ls -d bootagent-* 2>/dev/null)' subtree='$(cat $cg/check.service/cgroup.subtree_control)' said='$said'"
say "done"
poweroff -f
EOF
  # Started again after a SIGKILL, in the leaf its predecessor moved into, as
  # systemd's DelegateSubgroup=bootagent-supervisor puts a service's main process.
  cat >"$root/srv/agent-again" <<'EOF'
#!/bin/sh
echo $$ >/sys/fs/cgroup/bootagent.service/bootagent-supervisor/cgroup.procs
exec /usr/sbin/bootagent -S 127.0.0.1:8080 -v -D /var/lib/bootagent -L /var/log/bootagent.log
EOF
  chmod 0755 "$root/etc/rc.local" "$root/srv/agent" "$root/srv/agent-again" "$root/proof"
}
