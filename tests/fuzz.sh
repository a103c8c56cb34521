#!/usr/bin/env bash
# tests/fuzz.sh [SECONDS]: runs each fuzz target of tests/fuzz.rs for SECONDS (default
# 10) with a fresh seed, in an optimised build that keeps overflow checks and debug
# assertions (the release profile's LTO and opt-level "z" are for the shipped binary).
# Prints each target's inputs per second; exits non-zero if a target fails.
#
#   bash tests/fuzz.sh            10 s per target, a seed from the clock
#   bash tests/fuzz.sh 300        5 minutes per target
#   BOOT_FUZZ_SEED=0x1234 bash tests/fuzz.sh 10    replay a run (same seed, same inputs
#                                 in the same order; a time budget may stop sooner or later)
#
# A failing input is saved as <target dir>/fuzz-failures/TARGET-N, and replayed alone with
#   BOOT_FUZZ_REPLAY=<that file> cargo test --test fuzz TARGET
# The targets run two at a time (cargo test's threads), so the whole run takes about
# SECONDS x 9 / 2, plus the build.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-10}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: tests/fuzz.sh [SECONDS]" >&2; exit 2 ;;
esac
seed="${BOOT_FUZZ_SEED:-$(printf '0x%016x' "$(( $(date +%s%N) & 0x7fffffffffffffff ))")}"
echo "tests/fuzz.sh: $seconds s per target, seed $seed"
echo "  (replay: BOOT_FUZZ_SEED=$seed bash tests/fuzz.sh $seconds)"

export BOOT_FUZZ_SECONDS="$seconds" BOOT_FUZZ_SEED="$seed"
export CARGO_PROFILE_RELEASE_LTO=false
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_OPT_LEVEL=3
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_PROFILE_RELEASE_STRIP=false
export CARGO_PROFILE_RELEASE_PANIC=unwind

status=0
cargo test --release --test fuzz -- --nocapture --test-threads=2 2>&1 |
  tee /dev/stderr | grep -E '^fuzz [a-z_]+: [0-9]+ inputs' >"${TMPDIR:-/tmp}/fuzz-summary.$$" ||
  status=$?
echo
echo "tests/fuzz.sh: summary (seed $seed)"
sed 's/^/  /' "${TMPDIR:-/tmp}/fuzz-summary.$$"
rm -f "${TMPDIR:-/tmp}/fuzz-summary.$$"
exit "$status"
