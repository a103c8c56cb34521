# shellcheck shell=bash disable=SC2034
# (The GUEST_ variables are set here for the scripts that source this file.)
# cross/guest-lib.sh: a BootAgent guest under a real aarch64 Linux kernel, for the
# scripts that prove something on one (sourced by cross/firmware-proof.sh and
# tests/interop/cgroupv2.sh). The guest is Debian's arm64 kernel (the package
# linux-image-arm64 points to) booted by qemu-system-aarch64 -M virt, TCG, with no
# network device (-nic none), and an initramfs whose init is a static BusyBox
# (busybox-static:arm64). Its /etc/inittab:
#
#   sysinit  /etc/rc: mounts (proc, sys, dev, tmpfs on /run and /tmp, the kernel's own
#            cgroup2 on /sys/fs/cgroup), BusyBox applets, loopback up, then
#            /etc/rc.local if the caller wrote one
#   respawn  the control server: BusyBox `nc -ll -e /srv/handler` on the guest's own
#            127.0.0.1:8080, a shell script answering POST /agent/register (a step of
#            2 s) and POST /agent/status (no job); it records in /run/server:
#              registers  one agentsn per registration
#              first      the uptime at the first status report
#              reports    `UPTIME AGENTSN` per status report
#              bodies     each status report's body, one per line
#   AGENT    the line that starts BootAgent (the caller's)
#   once     /proof: the caller's checks, printing `proof:` lines, then poweroff
#
# Functions (each returns non-zero with the reason in GUEST_ERROR, so that a caller
# under `set -e` and one that reports failures as lines can both use them):
#   guest_check_tools              the host tools below are installed
#   guest_check_bin FILE           FILE is a static aarch64 binary
#   guest_debs DIR                 the kernel's and BusyBox's .deb in DIR (downloaded
#                                  once; as root, adds the arm64 architecture to dpkg
#                                  first when missing): GUEST_KERNEL_PACKAGE,
#                                  GUEST_KERNEL_DEB, GUEST_BUSYBOX_DEB
#   guest_image DIR BIN            DIR/Image (the kernel) and the tree DIR/root: BusyBox,
#                                  /etc/rc, /srv/handler, BIN as /usr/sbin/bootagent,
#                                  an empty /var/lib/bootagent
#   guest_initrd DIR AGENT_LINE    DIR/root's inittab with AGENT_LINE, packed into
#                                  DIR/initrd.gz (write /proof and the rest first)
#   guest_boot DIR CONSOLE SECS [MEM_MB]
#                                  boots it, the serial console into CONSOLE, and
#                                  waits for the guest to power off, at most SECS
#                                  (GUEST_ELAPSED: the seconds it took)
#   guest_console CONSOLE          the console's text, without carriage returns
#   guest_stop                     kills a guest still running (for a caller's trap)
#
# Needs: qemu-system-aarch64 (qemu-system-arm), apt-get, dpkg-deb, cpio, gzip, file, od.

GUEST_ERROR=""
GUEST_QEMU_PID=""

guest_check_tools() {
  local tool
  for tool in qemu-system-aarch64 apt-get apt-cache dpkg-deb cpio gzip file od; do
    command -v "$tool" >/dev/null || {
      GUEST_ERROR="$tool is not installed (apt-get install qemu-system-arm cpio dpkg file)"
      return 1
    }
  done
}

guest_check_bin() {
  case "$(file -b "$1" 2>/dev/null || echo unknown)" in
    *"ARM aarch64"*"statically linked"*) ;;
    *)
      GUEST_ERROR="$1 is not a static aarch64 binary"
      return 1 ;;
  esac
}

# guest_fetch DIR PACKAGE: PACKAGE's arm64 .deb in DIR (downloaded once), in GUEST_DEB.
guest_fetch() {
  local debs=$1 package=$2
  GUEST_DEB=$(find "$debs" -name "${package}_*_arm64.deb" -print -quit)
  if [ -z "$GUEST_DEB" ]; then
    (cd "$debs" && apt-get download -q "$package:arm64" >/dev/null 2>&1) || {
      GUEST_ERROR="apt-get download $package:arm64 failed"
      return 1
    }
    GUEST_DEB=$(find "$debs" -name "${package}_*_arm64.deb" -print -quit)
  fi
  [ -n "$GUEST_DEB" ] || {
    GUEST_ERROR="no .deb for $package in $debs"
    return 1
  }
}

guest_debs() {
  local debs=$1
  mkdir -p "$debs" || {
    GUEST_ERROR="cannot create $debs"
    return 1
  }
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [ "$(id -u)" = 0 ] || {
      GUEST_ERROR="dpkg does not know the arm64 architecture: dpkg --add-architecture arm64 && apt-get update (as root)"
      return 1
    }
    { dpkg --add-architecture arm64 && apt-get update -qq; } || {
      GUEST_ERROR="dpkg --add-architecture arm64 && apt-get update failed"
      return 1
    }
  fi
  GUEST_KERNEL_PACKAGE=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n 1)
  [ -n "$GUEST_KERNEL_PACKAGE" ] || {
    GUEST_ERROR="apt-cache cannot resolve linux-image-arm64:arm64 (apt-get update?)"
    return 1
  }
  guest_fetch "$debs" "$GUEST_KERNEL_PACKAGE" || return 1
  GUEST_KERNEL_DEB=$GUEST_DEB
  guest_fetch "$debs" busybox-static || return 1
  GUEST_BUSYBOX_DEB=$GUEST_DEB
}

# guest_kernel DIR: DIR/Image from GUEST_KERNEL_DEB. What qemu's -kernel takes is the
# arm64 `Image`. Debian's vmlinuz is that Image itself (bookworm); newer kernels ship it
# gzip-compressed, or as an EFI zboot image (a PE file with "zimg" at offset 4, the
# payload's offset and size at 8 and 12, its compression at 24), which qemu before 9.1
# does not unpack.
guest_kernel() {
  local dir=$1 vmlinuz kernel offset size compression
  dpkg-deb --fsys-tarfile "$GUEST_KERNEL_DEB" | tar -x -C "$dir" --wildcards './boot/vmlinuz-*'
  vmlinuz=$(find "$dir/boot" -name 'vmlinuz-*' -print -quit 2>/dev/null)
  [ -n "$vmlinuz" ] || {
    GUEST_ERROR="no /boot/vmlinuz-* in $GUEST_KERNEL_DEB"
    return 1
  }
  kernel=$dir/Image
  if [ "$(head -c 2 "$vmlinuz" | od -An -t x1 | tr -d ' ')" = 1f8b ]; then
    gzip -dc "$vmlinuz" >"$kernel"
  elif [ "$(dd if="$vmlinuz" bs=1 skip=4 count=4 2>/dev/null)" = zimg ]; then
    offset=$(guest_le32 "$vmlinuz" 8) size=$(guest_le32 "$vmlinuz" 12)
    compression=$(dd if="$vmlinuz" bs=1 skip=24 count=8 2>/dev/null | tr -d '\0')
    [ "$compression" = gzip ] || {
      GUEST_ERROR="$vmlinuz: EFI zboot with $compression, only gzip is unpacked here"
      return 1
    }
    tail -c "+$((offset + 1))" "$vmlinuz" | head -c "$size" | gzip -dc >"$kernel"
  else
    cp "$vmlinuz" "$kernel"
  fi
  [ "$(dd if="$kernel" bs=1 skip=56 count=4 2>/dev/null)" = "ARMd" ] || {
    GUEST_ERROR="$vmlinuz does not hold an arm64 kernel Image (no ARMd magic)"
    return 1
  }
}

guest_le32() {
  od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '
}

guest_image() {
  local dir=$1 bin=$2 root=$1/root
  guest_kernel "$dir" || return 1
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,srv,var/log,var/lib/bootagent}
  dpkg-deb --fsys-tarfile "$GUEST_BUSYBOX_DEB" | tar -x -O ./bin/busybox >"$root/bin/busybox" || {
    GUEST_ERROR="no ./bin/busybox in $GUEST_BUSYBOX_DEB"
    return 1
  }
  chmod 0755 "$root/bin/busybox"
  ln -s ../bin/busybox "$root/sbin/init"
  ln -s busybox "$root/bin/sh"
  ln -s sbin/init "$root/init"
  install -m 0755 "$bin" "$root/usr/sbin/bootagent"

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
ip link set lo up
mkdir -p /run/server
[ ! -x /etc/rc.local ] || /etc/rc.local
echo "rc: up at $(cut -d' ' -f1 /proc/uptime) s"
EOF

  # The control server: one connection per run of this script (nc -ll -e), stdin and
  # stdout the socket.
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
    answer='{"status":0,"tags":"site=guest","step":2}' ;;
  "POST /agent/status")
    now=$(cut -d' ' -f1 /proc/uptime)
    [ -e /run/server/first ] || echo "$now" >/run/server/first
    echo "$body" | tr -d '\n' >>/run/server/bodies
    echo >>/run/server/bodies
    echo "$now $sn" >>/run/server/reports
    answer='{"status":0}' ;;
  *)
    printf 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
    exit 0 ;;
esac
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
  "${#answer}" "$answer"
EOF
  chmod 0755 "$root/etc/rc" "$root/srv/handler"
}

guest_initrd() {
  local dir=$1 agent_line=$2 root=$1/root
  cat >"$root/etc/inittab" <<EOF
::sysinit:/etc/rc
::respawn:/bin/busybox nc -ll -p 8080 -e /srv/handler
$agent_line
::once:/proof
::ctrlaltdel:/bin/busybox poweroff -f
EOF
  [ -x "$root/proof" ] || {
    GUEST_ERROR="no executable /proof in $root"
    return 1
  }
  (cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$dir/initrd.gz" || {
    GUEST_ERROR="cannot pack $root into $dir/initrd.gz"
    return 1
  }
}

guest_boot() {
  local dir=$1 console=$2 secs=$3 mem=${4:-256} start end
  start=$(date +%s.%N)
  qemu-system-aarch64 -M virt -cpu cortex-a57 -smp 1 -m "$mem" -nic none \
    -kernel "$dir/Image" -initrd "$dir/initrd.gz" \
    -append "console=ttyAMA0 rdinit=/init panic=-1 quiet" \
    -display none -monitor none -serial "file:$console" -no-reboot </dev/null &
  GUEST_QEMU_PID=$!
  end=$((SECONDS + secs))
  while kill -0 "$GUEST_QEMU_PID" 2>/dev/null; do
    if [ "$SECONDS" -ge "$end" ]; then
      guest_stop
      GUEST_ERROR="the guest did not power off within $secs s"
      return 1
    fi
    sleep 0.5
  done
  wait "$GUEST_QEMU_PID" 2>/dev/null || true
  GUEST_QEMU_PID=""
  GUEST_ELAPSED=$(echo "$start $(date +%s.%N)" | awk '{printf "%.1f", $2 - $1}')
  [ -s "$console" ] || {
    GUEST_ERROR="qemu-system-aarch64 wrote nothing on the serial console"
    return 1
  }
}

guest_stop() {
  if [ -n "$GUEST_QEMU_PID" ]; then
    kill -KILL "$GUEST_QEMU_PID" 2>/dev/null || true
    wait "$GUEST_QEMU_PID" 2>/dev/null || true
    GUEST_QEMU_PID=""
  fi
  return 0
}

guest_console() {
  tr -d '\r' <"$1"
}
