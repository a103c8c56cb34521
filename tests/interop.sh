#!/usr/bin/env bash
# tests/interop.sh: BootAgent against the software fleets run, on loopback.
#
#   bash tests/interop.sh [CASE...]     (as root; CI runs it from .ci/run)
#
# Cases (tests/interop/*.sh, each a function case_NAME):
#   nginx      package downloads through 301/302/307/308 redirects; nginx as a reverse
#              proxy in front of the reference server; HTTPS with the fleet's own CA
#              (openssl), TLS 1.2 and TLS 1.3 only, mutual TLS (ssl_verify_client on);
#              wrong CA, expired certificate, wrong name refused with a clear log line
#   vsftpd     ftp:// installs: anonymous, user:password@ with ':' and '@' percent-encoded,
#              passive mode; 530 and 550 give errcode 2
#   squid      Debian's default squid.conf (CONNECT only to 443): control traffic and
#              downloads over plain http in absolute form, https through CONNECT,
#              NO_PROXY bypassing it; checked in squid's access log
#   haproxy    two reference servers behind HAProxy (round robin, health checks): the
#              agent keeps reporting through the one address while a backend dies and
#              comes back
#   daemons    redis-server and nginx as child agents, installed by jobs with limits:
#              kill -9 restarts them, a worker's memory kill is reported, stopping
#              leaves no process, also after BootAgent itself was SIGKILLed
#   cgroupv2   cgroup v2 on a real kernel (the hosts the suite runs on may have v1
#              controllers only): Debian's arm64 kernel under qemu-system-aarch64 with
#              the static aarch64 build, through cross/guest-lib.sh (the firmware
#              proof's guest). In a delegated cgroup: BootAgent moves into its leaf,
#              children beside it with memory.oom.group 1; a 20M child over its limit
#              is OOM-killed and reported; a 20 % child is throttled near 20 % (from
#              cpu.stat; the figure is printed); a setsid grandchild is stopped with
#              its child; after a SIGKILL of BootAgent, what it left is ended
#
# It installs what it needs from Debian (apt-get, as root), builds the release binaries,
# runs each case, prints `PASS name` or `FAIL name: why` per check, `FIGURE ...` lines,
# and closes with `N passed, M failed`. Exit 0 only when nothing failed. A server that
# cannot be installed fails its case; no case is skipped silently.
#
# Environment: INTEROP_KEEP=1 keeps the work directory; CARGO_TARGET_DIR as for cargo.
set -uo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
# shellcheck source=tests/interop/lib.sh
. tests/interop/lib.sh

ALL_CASES=(nginx vsftpd squid haproxy daemons cgroupv2)
if [ $# -gt 0 ]; then
  CASES=("$@")
else
  CASES=("${ALL_CASES[@]}")
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bootagent-interop.XXXXXX")"
chmod 0755 "$WORK"
cleanup() {
  end_tracked
  if [ "${INTEROP_KEEP:-}" = 1 ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# qemu-system-arm, cpio, file, binutils: the cgroupv2 case's guest and its build.
PACKAGES=(nginx-light vsftpd squid haproxy redis-server openssl curl python3 procps
  stress-ng iproute2 qemu-system-arm cpio file binutils)
install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "interop: missing packages ${missing[*]} and cannot install them (not root or no apt-get)" >&2
    return 1
  fi
  apt-get update -qq >/dev/null 2>&1
  # Packages that start a service on install: stop them at once, the cases run their own.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >"$WORK/apt.log" 2>&1 || {
    tail -5 "$WORK/apt.log" >&2
    return 1
  }
  for svc in nginx squid haproxy redis-server vsftpd; do
    service "$svc" stop >/dev/null 2>&1 || true
  done
}

if ! install_packages; then
  for c in "${CASES[@]}"; do
    fail "$c" "its servers could not be installed"
  done
  echo "${PASSED} passed, ${FAILED} failed"
  exit 1
fi

echo "interop: building the release binaries" >&2
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release --quiet --bin bootagent --example refserver || exit 2
cp "$TARGET_DIR/release/bootagent" "$WORK/bootagent"
cp "$TARGET_DIR/release/examples/refserver" "$WORK/refserver"
cargo build --release --quiet --features tls --bin bootagent || exit 2
cp "$TARGET_DIR/release/bootagent" "$WORK/bootagent-tls"
BOOTAGENT="$WORK/bootagent"
BOOTAGENT_TLS="$WORK/bootagent-tls"
REFSERVER="$WORK/refserver"
export BOOTAGENT BOOTAGENT_TLS REFSERVER WORK

for c in "${CASES[@]}"; do
  file="tests/interop/$c.sh"
  if [ ! -f "$file" ]; then
    fail "$c" "no such case ($file)"
    continue
  fi
  # shellcheck source=/dev/null
  . "$file"
  echo "== $c" >&2
  started=$SECONDS
  mkdir -p "$WORK/$c"
  "case_$c" "$WORK/$c"
  end_tracked
  echo "== $c took $((SECONDS - started)) s" >&2
done

if [ "$FAILED" -gt 0 ]; then
  echo "failed: ${FAILURES[*]}" >&2
fi
echo "${PASSED} passed, ${FAILED} failed"
[ "$FAILED" -eq 0 ]
