#!/usr/bin/env bash
# cross/build.sh TARGET [--tls] [--small] [--formats LIST]: builds the stripped, static release binary of
# BootAgent for TARGET and leaves it where cargo puts it:
#   target/TARGET/release/bootagent          the normal build
#   target/small/TARGET/release/bootagent    with --small (cargo's --target-dir target/small)
#
#   cross/build.sh x86_64-unknown-linux-musl
#   cross/build.sh aarch64-unknown-linux-musl --tls
#   cross/build.sh aarch64-unknown-linux-musl --tls --small
#   BOOT_SERVER_ADDR="booter.example.com:8080" cross/build.sh aarch64-unknown-linux-musl
#
# Targets: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl and
# armv7-unknown-linux-musleabihf (only where rustup can install its standard library).
# Plain cargo: the linker (rust-lld), the per-target rustflags (crt-static,
# relocation-model=static) and the C compilers for ring are set in .cargo/config.toml.
# BOOT_SERVER_ADDR, if set, is compiled in (see README.md).
# --formats LIST: only these of the optional package formats (cargo features `xz`,
# `zstd`, comma-separated, or `none`) instead of all of them (the default features);
# cross/ci.sh builds with each to print what each adds (cross/sizes.sh).
# After the build, checks that the binary is for TARGET, static (no interpreter, no
# dynamic section) and stripped, and prints its size and, where it can run here
# (natively or under qemu user emulation), its `-V`.
#
# --small: the same program with the standard library rebuilt from source with the
# immediate-abort panic strategy (cargo -Z build-std=std,panic_abort, rustc
# -Cpanic=immediate-abort), without unwind tables (-Cforce-unwind-tables=no), and
# without the source locations that only a panic message would print
# (-Zlocation-detail=none: about 6 KB). The
# prebuilt std links its backtrace machinery (gimli, addr2line, the unwinder, panic
# message formatting) even with `panic = "abort"`; rebuilt this way it does not, and
# with nothing left to unwind, the tables for it (.eh_frame) go too: about 0.65 MB
# less per binary without TLS, 0.8 MB with it (x86_64 at the time of writing: 1.8 ->
# 1.2 MB without TLS, 2.8 -> 2.0 MB with it; cross/sizes.sh has the figures). The size budgets are
# judged on this build. The trade-off (also in cross/README.md):
#   * a panic kills the process at once with an illegal instruction (SIGILL, exit
#     status 132 in a shell), without a message or a location, where the normal build
#     prints "panicked at FILE:LINE: MESSAGE" on stderr before aborting. BootAgent
#     does not panic on input (ARCHITECTURE.md), so a panic is a bug; to find one, run
#     the normal build, which is the one the tests run (cargo test);
#   * without unwind tables, a debugger or profiler (gdb, perf) attached to the small
#     binary cannot walk its stack; use the normal build for that too;
#   * RUSTC_BOOTSTRAP=1 lets the stable toolchain use unstable features (build-std,
#     -Zunstable-options, -Cpanic=immediate-abort, -Zlocation-detail). They may change or break with a
#     new Rust release (the spelling already changed once: the older
#     -Zbuild-std-features=panic_immediate_abort now fails); the normal build does not
#     depend on them;
#   * it needs the rust-src component (installed with rustup when missing) and builds
#     std and every dependency again: about a minute more per target, cold, 2 cores.
# The flags go in through cargo's --config, which adds them to the rustflags of
# .cargo/config.toml (an array set on the command line is appended to the file's)
# instead of replacing them as RUSTFLAGS would; the build has its own target directory
# so that the normal and the small builds do not rebuild each other.
# Do not set RUSTFLAGS for either build: it would replace the config's rustflags, and
# the binary would not be static (the checks below then fail).
# Exit status: 0 built, 1 failed, 2 bad usage, 3 TARGET's standard library cannot be
# installed here (nothing built).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "cross/build.sh: $*" >&2
  exit 1
}
usage() {
  echo "usage: cross/build.sh TARGET [--tls] [--small] [--formats xz,zstd|xz|zstd|none]  (TARGET: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf)" >&2
  exit 2
}

[ $# -ge 1 ] || usage
target=$1
shift
features=() small="" tls="" formats=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tls) tls=1 ;;
    --small) small=1 ;;
    --formats)
      [ $# -ge 2 ] || usage
      formats=$2
      shift ;;
    *) usage ;;
  esac
  shift
done
case "$formats" in
  "") [ -z "$tls" ] || features=(--features tls) ;;
  none) features=(--no-default-features ${tls:+--features tls}) ;;
  *[!a-z,]*) usage ;;
  *) features=(--no-default-features --features "$formats${tls:+,tls}") ;;
esac

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
if [ -n "$tls" ]; then
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

if [ -z "$small" ]; then
  cargo build --release --locked --target "$target" ${features[@]+"${features[@]}"}
  bin="target/$target/release/bootagent"
else
  # build-std compiles the standard library from the rust-src component.
  if [ ! -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library" ]; then
    command -v rustup >/dev/null || die "--small needs the rust-src component, and rustup is not installed"
    rustup component add rust-src || die "--small needs the rust-src component: rustup component add rust-src failed"
  fi
  # Appended to .cargo/config.toml's rustflags for this target (see the header).
  RUSTC_BOOTSTRAP=1 cargo build --release --locked --target "$target" \
    ${features[@]+"${features[@]}"} --target-dir target/small \
    -Z build-std=std,panic_abort \
    --config "target.$target.rustflags = [\"-Zunstable-options\", \"-Cpanic=immediate-abort\", \"-Cforce-unwind-tables=no\", \"-Zlocation-detail=none\"]"
  bin="target/small/$target/release/bootagent"
fi
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
# The small build has no backtrace machinery: std's RUST_BACKTRACE lookup is gone.
if [ -n "$small" ] && grep -aq RUST_BACKTRACE "$bin"; then
  die "$bin still has std's backtrace support: the immediate-abort std was not linked"
fi

size=$(stat -c %s "$bin")
echo "cross/build.sh: $bin: $size bytes$([ -z "$small" ] || echo " (small: immediate-abort std)"); $description"
if [ -z "$runner" ]; then
  "$bin" -V
elif command -v "$runner" >/dev/null; then
  "$runner" "$bin" -V
fi
