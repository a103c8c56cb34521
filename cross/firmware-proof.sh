#!/usr/bin/env bash
# cross/firmware-proof.sh [--bin FILE] [--keep]: boots a firmware image holding the static
# aarch64 BootAgent under a real aarch64 Linux kernel and proves, on its serial console,
# what a device running it would do. The image:
#
#   kernel     Debian's arm64 kernel (the package linux-image-arm64 points to), booted
#              by qemu-system-aarch64 -M virt, TCG, with no network device (-nic none)
#   initramfs  a static BusyBox (busybox-static:arm64) as init, with /etc/inittab:
#                sysinit  /etc/rc: mounts, loopback up, BusyBox applets
#                respawn  the control server: BusyBox `nc -ll -e /srv/handler` on the
#                         guest's own 127.0.0.1:8080, a shell script that answers
#                         POST /agent/register and POST /agent/status (no jobs)
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

for tool in qemu-system-aarch64 apt-get apt-cache dpkg-deb cpio gzip file od; do
  command -v "$tool" >/dev/null ||
    die "$tool is not installed (apt-get install qemu-system-arm cpio dpkg file)"
done
if [ ! -x "$bin" ]; then
  cross/build.sh aarch64-unknown-linux-musl >/dev/null 2>&1 ||
    die "no $bin, and cross/build.sh aarch64-unknown-linux-musl failed"
fi
case "$(file -b "$bin" 2>/dev/null || echo unknown)" in
  *"ARM aarch64"*"statically linked"*) ;;
  *) die "$bin is not a static aarch64 binary" ;;
esac

work=target/firmware
debs=$work/debs
mkdir -p "$debs"

# --- The Debian packages: the kernel the linux-image-arm64 metapackage points to, and
# the static BusyBox.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  [ "$(id -u)" = 0 ] || die "dpkg does not know the arm64 architecture: dpkg --add-architecture arm64 && apt-get update (as root)"
  dpkg --add-architecture arm64
  apt-get update -qq
fi
kernel_package=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null |
  sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
[ -n "$kernel_package" ] || die "apt-cache cannot resolve linux-image-arm64:arm64 (apt-get update?)"
fetch() { # fetch PACKAGE: PACKAGE's .deb in $debs (downloaded once)
  local deb
  deb=$(find "$debs" -name "${1}_*_arm64.deb" -print -quit)
  if [ -z "$deb" ]; then
    (cd "$debs" && apt-get download -q "$1:arm64" >/dev/null 2>&1) || die "apt-get download $1:arm64 failed"
    deb=$(find "$debs" -name "${1}_*_arm64.deb" -print -quit)
  fi
  [ -n "$deb" ] || die "no .deb for $1 in $debs"
  echo "$deb"
}
kernel_deb=$(fetch "$kernel_package")
busybox_deb=$(fetch busybox-static)

image=$(mktemp -d "$work/image.XXXXXX")
qemu_pid=""
cleanup() {
  local status=$?
  if [ -n "$qemu_pid" ]; then kill -KILL "$qemu_pid" 2>/dev/null || true; fi
  if [ -z "$keep" ]; then rm -rf "$image"; fi
  exit "$status"
}
trap cleanup EXIT

# --- The kernel: what qemu's -kernel takes is the arm64 `Image`. Debian's vmlinuz is
# that Image itself (bookworm); newer kernels ship it gzip-compressed, or as an EFI zboot
# image (a PE file with "zimg" at offset 4, the payload's offset and size at 8 and 12,
# its compression at 24), which qemu before 9.1 does not unpack.
dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$image" --wildcards './boot/vmlinuz-*'
vmlinuz=$(find "$image/boot" -name 'vmlinuz-*' -print -quit)
[ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $kernel_deb"
kernel=$image/Image
le32() { od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '; }
if [ "$(head -c 2 "$vmlinuz" | od -An -t x1 | tr -d ' ')" = 1f8b ]; then
  gzip -dc "$vmlinuz" >"$kernel"
elif [ "$(dd if="$vmlinuz" bs=1 skip=4 count=4 2>/dev/null)" = zimg ]; then
  offset=$(le32 "$vmlinuz" 8) size=$(le32 "$vmlinuz" 12)
  compression=$(dd if="$vmlinuz" bs=1 skip=24 count=8 2>/dev/null | tr -d '\0')
  [ "$compression" = gzip ] || die "$vmlinuz: EFI zboot with $compression, only gzip is unpacked here"
  tail -c "+$((offset + 1))" "$vmlinuz" | head -c "$size" | gzip -dc >"$kernel"
else
  cp "$vmlinuz" "$kernel"
fi
[ "$(dd if="$kernel" bs=1 skip=56 count=4 2>/dev/null)" = "ARMd" ] ||
  die "$vmlinuz does not hold an arm64 kernel Image (no ARMd magic)"

# --- The initramfs.
root=$image/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,srv,var/log,var/lib/bootagent}
dpkg-deb --fsys-tarfile "$busybox_deb" | tar -x -O ./bin/busybox >"$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
ln -s ../bin/busybox "$root/sbin/init"
ln -s busybox "$root/bin/sh"
ln -s sbin/init "$root/init"
install -m 0755 "$bin" "$root/usr/sbin/bootagent"

# The preinstalled child: what a firmware image ships (docs/protocol.md section 8).
mkdir -p "$root/var/lib/bootagent/agents/pre/1.0"
cat >"$root/var/lib/bootagent/agents/pre/1.0/run" <<'EOF'
#!/bin/sh
exec sleep 100000
EOF
chmod 0755 "$root/var/lib/bootagent/agents/pre/1.0/run"
ln -s 1.0 "$root/var/lib/bootagent/agents/pre/current"

cat >"$root/etc/rc" <<'EOF'
#!/bin/sh
# sysinit: what a firmware's rcS does before its services start.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
hostname firmware-proof
ip link set lo up
mkdir -p /run/server
echo "rc: up at $(cut -d' ' -f1 /proc/uptime) s"
EOF

# The control server: one connection per run of this script (nc -ll -e), stdin and
# stdout the socket. It answers register with a step of 2 s and status with no job,
# and records what it saw in /run/server for /proof.
cat >"$root/srv/handler" <<'EOF'
#!/bin/sh
cr=$(printf '\r')
read -r method path version
length=0
while read -r line; do
  line=${line%"$cr"}
  [ -z "$line" ] && break
  case "$line" in
    [Cc]ontent-[Ll]ength:*) length=${line#*:}; length=${length# } ;;
  esac
done
body=$(head -c "$length")
sn=$(echo "$body" | sed -n 's/.*"agentsn":"\([0-9a-f-]*\)".*/\1/p')
case "$method $path" in
  "POST /agent/register")
    echo "$sn" >>/run/server/registers
    answer='{"status":0,"tags":"site=firmware-proof","step":2}' ;;
  "POST /agent/status")
    now=$(cut -d' ' -f1 /proc/uptime)
    [ -e /run/server/first ] || echo "$now" >/run/server/first
    pre=$(echo "$body" | sed -n 's/.*"name":"pre","version":"[^"]*","status":"\([a-z]*\)","uptime":[0-9]*,"pid":\([0-9]*\).*/\1 \2/p')
    echo "$now $sn ${pre:-none}" >>/run/server/reports
    answer='{"status":0}' ;;
  *)
    printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
    exit 0 ;;
esac
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
  "${#answer}" "$answer"
EOF
chmod 0755 "$root/etc/rc" "$root/srv/handler"

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
pre_pid() { tail -n 1 /run/server/reports 2>/dev/null | sed -n 's/.* running \([0-9]*\)$/\1/p'; }
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
cat >"$root/etc/inittab" <<EOF
::sysinit:/etc/rc
::respawn:/bin/busybox nc -ll -p 8080 -e /srv/handler
${agent_line/a=\"-D /a=\"-S 127.0.0.1:8080 -v -D }
::once:/proof
::ctrlaltdel:/bin/busybox poweroff -f
EOF

(cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$image/initrd.gz"

# --- Boot.
console=$image/console.log
start=$(date +%s.%N)
qemu-system-aarch64 -M virt -cpu cortex-a57 -smp 1 -m 256 -nic none \
  -kernel "$kernel" -initrd "$image/initrd.gz" \
  -append "console=ttyAMA0 rdinit=/init panic=-1 quiet" \
  -display none -monitor none -serial "file:$console" -no-reboot </dev/null &
qemu_pid=$!
end=$((SECONDS + BOOT_DEADLINE_S))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ "$SECONDS" -ge "$end" ]; then
    kill -KILL "$qemu_pid" 2>/dev/null || true
    echo "cross/firmware-proof.sh: the guest did not power off within $BOOT_DEADLINE_S s" >&2
    break
  fi
  sleep 0.5
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=""
elapsed=$(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')

tr -d '\r' <"$console" | grep -E '^(proof|rc):' || true
[ -z "$keep" ] || cp "$console" "$work/console.log"
for step in register report supervise respawn "all passed"; do
  if ! tr -d '\r' <"$console" | grep -q "^proof: $step"; then
    echo "--- serial console (last 40 lines)"
    tr -d '\r' <"$console" | tail -n 40
    die "the console does not show '$step'"
  fi
done
first=$(tr -d '\r' <"$console" | sed -n 's/^proof: report: first report \([0-9.]*\) s.*/\1/p')
echo "cross/firmware-proof.sh: boot to first report: $first s (from the kernel's start to the server's receipt of the first status report, qemu TCG); whole proof: $elapsed s; $kernel_package, $(basename "$busybox_deb")"
