#!/usr/bin/env bash
# tests/libfuzzer.sh [SECONDS [TARGET...]]: runs the libFuzzer targets of tests/libfuzzer/
# (cargo-fuzz: coverage-guided, AddressSanitizer) for SECONDS each (default 30), starting
# from the committed corpora in tests/fuzz/corpus/TARGET/, which it only reads. The
# checks are those of the plain-Rust fuzzer (tests/fuzz.sh), which runs in `cargo test`;
# this one adds coverage feedback and the sanitizer.
#
#   bash tests/libfuzzer.sh              every target, 30 s each
#   bash tests/libfuzzer.sh 600 unpack   the unpacker for 10 minutes
#
# cargo-fuzz needs a nightly compiler's flags (-Z sanitizer); on a stable toolchain
# RUSTC_BOOTSTRAP=1 unlocks them for this build only. It installs cargo-fuzz with
# `cargo install --locked` when it is missing.
# New inputs that grow coverage go to target/libfuzzer/corpus/TARGET/ (kept between runs,
# not committed: copy the good ones into tests/fuzz/corpus/TARGET/, where
# `cargo test --test fuzz` checks that every seed is accepted). A crash stops its target;
# the input is saved under target/libfuzzer/artifacts/TARGET/ and replayed with
#   RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/libfuzzer/build \
#     cargo fuzz run --fuzz-dir tests/libfuzzer --release --debug-assertions TARGET FILE
# or, with the same checks and a readable backtrace, by the plain fuzzer:
#   BOOT_FUZZ_REPLAY=target/libfuzzer/artifacts/TARGET/crash-… cargo test --test fuzz fuzz_TARGET
# (cargo-fuzz also makes an empty tests/libfuzzer/artifacts/, which git ignores).
# Exits non-zero when a target crashed or could not run.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: tests/libfuzzer.sh [SECONDS [TARGET...]]" >&2; exit 2 ;;
esac
[ $# -gt 0 ] && shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(wire_register wire_status jobs limits restart addr limits_set meta unpack rpm deb compressed)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "tests/libfuzzer.sh: installing cargo-fuzz (cargo install --locked cargo-fuzz)"
  cargo install --locked --quiet cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz run --fuzz-dir tests/libfuzzer --release --debug-assertions)
for target in "${targets[@]}"; do
  [ -d "tests/fuzz/corpus/$target" ] || {
    echo "tests/libfuzzer.sh: no target $target (no tests/fuzz/corpus/$target)" >&2
    exit 2
  }
done
# Built beside BootAgent's own builds, so that nothing is written in the source tree.
out=target/libfuzzer
export CARGO_TARGET_DIR="$out/build"
echo "tests/libfuzzer.sh: building the targets"
cargo fuzz build --fuzz-dir tests/libfuzzer --release --debug-assertions

# Scratch files of the metafile and package checks, removed on exit.
scratch=$(mktemp -d "${TMPDIR:-/tmp}/bootagent-libfuzzer.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

failed=()
summary=()
for target in "${targets[@]}"; do
  grown="$out/corpus/$target"
  mkdir -p "$grown" "$out/artifacts/$target"
  log="$scratch/$target.log"
  echo "tests/libfuzzer.sh: $target for $seconds s"
  status=0
  TMPDIR="$scratch" "${fuzz[@]}" "$target" "$grown" "tests/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -timeout=10 \
    -artifact_prefix="$out/artifacts/$target/" -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  # A target that crashed on a seed, or could not start, printed neither.
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "--- $target failed (exit $status); the end of its log:"
    tail -n 40 "$log"
    summary+=("$target: FAILED after ${runs:-?} inputs")
  else
    summary+=("$target: ${runs:-?} inputs in $seconds s, ${cov:-cov: ?}, corpus $(find "$grown" -type f | wc -l) grown inputs")
  fi
done

echo
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "tests/libfuzzer.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "tests/libfuzzer.sh: every target ran $seconds s without a crash"
