#!/usr/bin/env bash
# cross/build.sh TARGET [--tls]: builds the stripped, static release binary of BootAgent
# for TARGET and leaves it where cargo puts it, target/TARGET/release/bootagent.
#
#   cross/build.sh x86_64-unknown-linux-musl
#   cross/build.sh aarch64-unknown-linux-musl --tls
#   BOOT_SERVER_ADDR="booter.example.com:8080" cross/build.sh aarch64-unknown-linux-musl
#
# Targets: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl and
# armv7-unknown-linux-musleabihf (only where rustup can install its standard library).
# Plain cargo: the linker (rust-lld) and the C compilers for ring are set in
# .cargo/config.toml. BOOT_SERVER_ADDR, if set, is compiled in (see README.md).
# After the build, checks that the binary is for TARGET, static (no interpreter, no
# dynamic section) and stripped, and prints its size and, where it can run here
# (natively or under qemu user emulation), its `-V`.
# Exit status: 0 built, 1 failed, 2 bad usage, 3 TARGET's standard library cannot be
# installed here (nothing built).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "cross/build.sh: $*" >&2
  exit 1
}
usage() {
  echo "usage: cross/build.sh TARGET [--tls]  (TARGET: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf)" >&2
  exit 2
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
target=$1
features=()
if [ $# -eq 2 ]; then
  [ "$2" = --tls ] || usage
  features=(--features tls)
fi

# Per target: what `file` calls the machine, the C compiler ring needs for `--tls`
# (as in .cargo/config.toml) and the Debian package that has it, the qemu runner.
case "$target" in
  x86_64-unknown-linux-musl)
    machine="x86-64" cc=musl-gcc cc_package=musl-tools runner="" ;;
  aarch64-unknown-linux-musl)
    machine="ARM aarch64" cc=aarch64-linux-gnu-gcc cc_package=gcc-aarch64-linux-gnu
    runner=qemu-aarch64-static ;;
  armv7-unknown-linux-musleabihf)
    machine="ARM, EABI5" cc=arm-linux-gnueabihf-gcc cc_package=gcc-arm-linux-gnueabihf
    runner=qemu-arm-static ;;
  *) usage ;;
esac

for tool in cargo file readelf; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install file binutils)"
done
if [ ${#features[@]} -gt 0 ]; then
  command -v "$cc" >/dev/null ||
    die "--tls needs $cc to compile ring for $target (apt-get install $cc_package)"
fi

# The target's standard library, from rustup when it is not there yet.
# (Captured first: `grep -q` in a pipeline can fail it with SIGPIPE under pipefail.)
if command -v rustup >/dev/null && ! grep -qx "$target" <<<"$(rustup target list --installed)"; then
  if ! rustup_err=$(rustup target add "$target" 2>&1); then
    echo "cross/build.sh: cannot install the standard library for $target with rustup, so it is not built here: $(echo "$rustup_err" | grep -m1 -i error)" >&2
    exit 3
  fi
fi

cargo build --release --locked --target "$target" ${features[@]+"${features[@]}"}

bin="target/$target/release/bootagent"
[ -x "$bin" ] || die "cargo finished but $bin is missing"

# Static, stripped, and for the right machine.
description=$(file -b "$bin")
case "$description" in
  *"$machine"*) ;;
  *) die "$bin is not a $machine binary: $description" ;;
esac
case "$description" in
  *"statically linked"*) ;;
  *) die "$bin is not statically linked: $description" ;;
esac
case "$description" in
  *", stripped"*) ;;
  *) die "$bin is not stripped: $description" ;;
esac
if grep -q INTERP <<<"$(readelf -lW "$bin")"; then
  die "$bin asks for a program interpreter (dynamic loader)"
fi
if ! grep -q "There is no dynamic section" <<<"$(readelf -dW "$bin")"; then
  die "$bin has a dynamic section"
fi

size=$(stat -c %s "$bin")
echo "cross/build.sh: $bin: $size bytes; $description"
if [ -z "$runner" ]; then
  "$bin" -V
elif command -v "$runner" >/dev/null; then
  "$runner" "$bin" -V
fi
