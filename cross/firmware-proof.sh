#!/usr/bin/env bash
# cross/firmware-proof.sh [--bin FILE] [--keep]: boots a firmware image holding the static
# aarch64 BootAgent under a real aarch64 Linux kernel and proves, on its serial console,
# what a device running it would do. The image (made and booted by cross/guest-lib.sh,
# which tests/interop/cgroupv2.sh shares):
#
#   kernel     Debian's arm64 kernel (the package linux-image-arm64 points to), booted
#              by qemu-system-aarch64 -M virt, TCG, with no network device (-nic none)
#   initramfs  a static BusyBox (busybox-static:arm64) as init, with /etc/inittab:
#                sysinit  /etc/rc: mounts, loopback up, BusyBox applets, the hostname
#                respawn  the control server: BusyBox `nc -ll -e /srv/handler` on the
#                         guest's own 127.0.0.1:8080, a shell script that answers
#                         POST /agent/register and POST /agent/status (no jobs) and
#                         keeps what it saw in /run/server
#                respawn  BootAgent: the line of package/init/busybox/inittab as
#                         shipped, with `-S 127.0.0.1:8080 -v` added to its options
#                once     /proof: the checks below, then poweroff
#              the static aarch64 BootAgent (cross/build.sh aarch64-unknown-linux-musl,
#              or --bin FILE) and a preinstalled child, agents/pre/1.0/run
#
# What /proof checks, each within a deadline, printing one `proof:` line per step:
#   register   the agent registers with the server in the guest
#   report     it reports, and the time from kernel start to its first report is printed
#   supervise  the preinstalled child is reported running; killed with SIGKILL, it is
#              started again under a new pid
#   respawn    BootAgent itself killed with SIGKILL is started again by init, reports
#              with the same agentsn without registering again, and the child runs
#              again, one instance only
#
# Exit status 0 only when the console showed every step and `proof: all passed`.
# The Debian packages are downloaded once into target/firmware/debs (apt-get download;
# as root, the arm64 architecture is added to dpkg first when it is missing).
# Needs: qemu-system-aarch64 (qemu-system-arm), apt-get, dpkg-deb, cpio, gzip.
# --keep leaves the image and the console log in target/firmware/.
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "cross/firmware-proof.sh: $*" >&2
  exit 1
}
usage() {
  echo "usage: cross/firmware-proof.sh [--bin FILE] [--keep]" >&2
  exit 2
}

bin=target/aarch64-unknown-linux-musl/release/bootagent keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) [ $# -ge 2 ] || usage; bin=$2; shift ;;
    --keep) keep=1 ;;
    *) usage ;;
  esac
  shift
done

# Bound of the guest's run: it powers off after about 5 s under TCG (the image is made
# in as many again).
BOOT_DEADLINE_S=${BOOT_DEADLINE_S:-240}

# shellcheck source=cross/guest-lib.sh
. cross/guest-lib.sh
guest_check_tools || die "$GUEST_ERROR"
if [ ! -x "$bin" ]; then
  cross/build.sh aarch64-unknown-linux-musl >/dev/null 2>&1 ||
    die "no $bin, and cross/build.sh aarch64-unknown-linux-musl failed"
fi
guest_check_bin "$bin" || die "$GUEST_ERROR"

work=target/firmware
guest_debs "$work/debs" || die "$GUEST_ERROR"

image=$(mktemp -d "$work/image.XXXXXX")
cleanup() {
  local status=$?
  guest_stop
  if [ -z "$keep" ]; then rm -rf "$image"; fi
  exit "$status"
}
trap cleanup EXIT

guest_image "$image" "$bin" || die "$GUEST_ERROR"
root=$image/root

# The preinstalled child: what a firmware image ships (docs/protocol.md section 8).
mkdir -p "$root/var/lib/bootagent/agents/pre/1.0"
cat >"$root/var/lib/bootagent/agents/pre/1.0/run" <<'EOF'
#!/bin/sh
exec sleep 100000
EOF
chmod 0755 "$root/var/lib/bootagent/agents/pre/1.0/run"
ln -s 1.0 "$root/var/lib/bootagent/agents/pre/current"
cat >"$root/etc/rc.local" <<'EOF'
#!/bin/sh
hostname firmware-proof
EOF
chmod 0755 "$root/etc/rc.local"

# /proof: the checks, on the console. wait_for SECONDS WHAT COMMAND... polls COMMAND.
cat >"$root/proof" <<'EOF'
#!/bin/sh
fail() { echo "proof: FAILED: $*"; echo "--- agent log"; tail -n 20 /var/log/bootagent.log; echo "--- reports"; tail -n 5 /run/server/reports; poweroff -f; }
wait_for() {
  seconds=$1 what=$2; shift 2
  end=$(( $(cut -d. -f1 /proc/uptime) + seconds ))
  until "$@"; do
    [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ] || fail "no $what within $seconds s"
    sleep 0.2
  done
}
registered() { [ -s /run/server/registers ]; }
reported() { [ -s /run/server/first ]; }
reports() { wc -l </run/server/reports 2>/dev/null || echo 0; }
# pre_pid: the pid of `pre` in the last report, if it is running there.
pre_pid() { tail -n 1 /run/server/bodies 2>/dev/null | sed -n 's/.*"name":"pre","version":"[^"]*","status":"running","uptime":[0-9]*,"pid":\([0-9]*\).*/\1/p'; }
pre_running() { p=$(pre_pid); [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "${1:-}" ]; }
agent_pid() { pidof bootagent; }
# One bootagent process (not the -T of the inittab line beside it), not the killed one.
agent_respawned() { a=$(agent_pid) && [ "$(echo "$a" | wc -w)" = 1 ] && [ "$a" != "$1" ]; }
reports_after() { [ "$(reports)" -gt "$1" ]; }

wait_for 60 "registration" registered
sn=$(head -n 1 /run/server/registers)
echo "proof: register: agentsn $sn"
wait_for 30 "status report" reported
echo "proof: report: first report $(cat /run/server/first) s after the kernel started"

wait_for 30 "report of the preinstalled child running" pre_running
p1=$(pre_pid)
[ "$(cat /proc/$p1/comm)" = sleep ] || fail "pid $p1 of pre is not its sleep"
kill -9 "$p1"
wait_for 30 "report of pre running again after kill -9" pre_running "$p1"
p2=$(pre_pid)
echo "proof: supervise: pre killed with SIGKILL (pid $p1), running again (pid $p2)"

a1=$(agent_pid)
n=$(reports)
kill -9 "$a1"
wait_for 30 "BootAgent started again by init" agent_respawned "$a1"
a2=$(agent_pid)
wait_for 30 "report from the respawned agent" reports_after "$n"
wait_for 30 "pre running again under the new agent" pre_running "$p2"
last_sn=$(tail -n 1 /run/server/reports | cut -d' ' -f2)
[ "$last_sn" = "$sn" ] || fail "the respawned agent reports as $last_sn, not $sn"
[ "$(wc -l </run/server/registers)" = 1 ] || fail "the respawned agent registered again"
instances=$(pidof sleep | wc -w)
[ "$instances" = 1 ] || fail "$instances instances of pre run"
echo "proof: respawn: BootAgent killed with SIGKILL (pid $a1), started again by init (pid $a2), same agentsn, pre running once (pid $(pre_pid))"
echo "proof: all passed"
poweroff -f
EOF
chmod 0755 "$root/proof"

# The BootAgent line of the inittab as shipped, pointed at the server in the guest.
agent_line=$(grep '^::respawn:' package/init/busybox/inittab)
case "$agent_line" in
  *'a="-D /var/lib/bootagent"'*) ;;
  *) die "package/init/busybox/inittab: no a=\"-D /var/lib/bootagent\" in its line" ;;
esac
guest_initrd "$image" "${agent_line/a=\"-D /a=\"-S 127.0.0.1:8080 -v -D }" || die "$GUEST_ERROR"

# --- Boot.
console=$image/console.log
guest_boot "$image" "$console" "$BOOT_DEADLINE_S" || echo "cross/firmware-proof.sh: $GUEST_ERROR" >&2

guest_console "$console" | grep -E '^(proof|rc):' || true
[ -z "$keep" ] || cp "$console" "$work/console.log"
for step in register report supervise respawn "all passed"; do
  if ! guest_console "$console" | grep -q "^proof: $step"; then
    echo "--- serial console (last 40 lines)"
    guest_console "$console" | tail -n 40
    die "the console does not show '$step'"
  fi
done
first=$(guest_console "$console" | sed -n 's/^proof: report: first report \([0-9.]*\) s.*/\1/p')
echo "cross/firmware-proof.sh: boot to first report: $first s (from the kernel's start to the server's receipt of the first status report, qemu TCG); whole proof: ${GUEST_ELAPSED:-?} s; $GUEST_KERNEL_PACKAGE, $(basename "$GUEST_BUSYBOX_DEB")"
