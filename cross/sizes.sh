#!/usr/bin/env bash
# cross/sizes.sh [--strict] [DIR]: prints the sizes of the stripped static binaries that
# cross/ci.sh saved in DIR (default target/cross) as bootagent-TARGET and
# bootagent-TARGET-tls, against their budgets, then the sizes of the peers a user would
# install instead, as Debian's package lists give them (cross/peers.awk).
#
# Budgets (MB = 1,000,000 bytes): x86_64 under 1.0 MB without TLS and 2.0 MB with it;
# aarch64 under the same and under the x86_64 binary's size. A binary over budget is
# marked OVER; --strict then makes the exit status 1.
set -euo pipefail
cd "$(dirname "$0")/.."

strict=""
if [ "${1:-}" = --strict ]; then
  strict=1
  shift
fi
dir=${1:-target/cross}
targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
peers=(supervisor mender-client monit)

mb() { awk -v b="$1" 'BEGIN { printf "%.2f MB", b / 1e6 }'; }

# cell TARGET VARIANT: sets `text` to the size of one binary and how it fares against
# its budget; sets over=1 when it is over.
over=""
cell() {
  local file="$dir/bootagent-$1$2" budget="" size
  if [ ! -f "$file" ]; then
    text="not built"
    return
  fi
  size=$(stat -c %s "$file")
  local x86_budget=1000000 x86_file="$dir/bootagent-x86_64-unknown-linux-musl$2"
  [ -z "$2" ] || x86_budget=2000000
  case "$1" in
    x86_64-*) budget=$x86_budget ;;
    aarch64-*)
      budget=$x86_budget
      if [ -f "$x86_file" ] && [ "$(stat -c %s "$x86_file")" -lt "$budget" ]; then
        budget=$(stat -c %s "$x86_file")
      fi ;;
  esac
  text=$(mb "$size")
  if [ -z "$budget" ]; then
    return
  elif [ "$size" -lt "$budget" ]; then
    text+="  ok (< $(mb "$budget"))"
  else
    over=1
    text+="  OVER ($(mb "$budget"))"
  fi
}

echo "BootAgent, stripped static binaries (MB = 1,000,000 bytes):"
printf '  %-32s %-30s %s\n' target "without TLS" "with TLS"
for target in "${targets[@]}"; do
  if [ -f "$dir/bootagent-$target.skipped" ]; then
    printf '  %-32s %s\n' "$target" "not built: $(cat "$dir/bootagent-$target.skipped")"
    continue
  fi
  cell "$target" ""
  plain=$text
  cell "$target" -tls
  printf '  %-32s %-30s %s\n' "$target" "$plain" "$text"
done

echo
if ! command -v apt-cache >/dev/null; then
  echo "peers: apt-cache is not installed, no Debian figures"
else
  echo "What a user would install instead, from Debian's package lists (Installed-Size; 'with"
  echo "dependencies': what apt-get install --no-install-recommends adds to a minimal Debian):"
  printf '  %-15s %-16s %-12s %s\n' package version "package" "with dependencies"
  apt-cache dumpavail | awk -v PEERS="${peers[*]}" -f cross/peers.awk |
    while read -r name version own total count added; do
      if [ "$version" = - ]; then
        printf '  %-15s %s\n' "$name" "not in this host's package lists (apt-get update?)"
        continue
      fi
      printf '  %-15s %-16s %-12s %s\n' "$name" "$version" "$(mb $((own * 1024)))" \
        "$(mb $((total * 1024))) in $count packages (largest: ${added//,/, })"
    done
fi

if [ -n "$over" ]; then
  echo "cross/sizes.sh: a binary is over its size budget" >&2
  [ -z "$strict" ] || exit 1
fi
