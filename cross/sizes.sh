#!/usr/bin/env bash
# cross/sizes.sh [--strict] [DIR]: prints the sizes of the stripped static binaries that
# cross/ci.sh saved in DIR (default target/cross), against their budgets, then the sizes
# of the peers a user would install instead, as Debian's package lists give them
# (cross/peers.awk). Per target, two builds, each without and with TLS:
#   small   bootagent-TARGET-small, bootagent-TARGET-tls-small (cross/build.sh --small:
#           std rebuilt with the immediate-abort panic strategy, no unwind tables); the
#           budgets are judged on this build;
#   normal  bootagent-TARGET, bootagent-TARGET-tls (cross/build.sh), shown beside it
#           with what the small build saves.
#
# Then what each optional package format (cargo features xz and zstd, on by default)
# adds to the small x86_64 build without TLS, from the builds cross/ci.sh saves as
# bootagent-x86_64-unknown-linux-musl-small-formats-{none,xz,zstd}; together they may add
# at most 150 KB (marked OVER otherwise).
#
# Budgets (MB = 1,000,000 bytes): x86_64 under 1.2 MB without TLS and 2.2 MB with it;
# aarch64 under the same and under the x86_64 binary's size (small against small). A
# target with no small build has its normal build judged instead, and the table says
# so. A binary over budget is marked OVER; --strict then makes the exit status 1.
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

# size_of TARGET SUFFIX: the size of bootagent-TARGET-SUFFIX in bytes, "" if not built.
size_of() {
  local file="$dir/bootagent-$1$2"
  if [ -f "$file" ]; then stat -c %s "$file"; fi
}

# judged TARGET TLS: the suffix of the build judged for TARGET (TLS is "" or -tls):
# the small one when it was built, else the normal one.
judged() {
  if [ -f "$dir/bootagent-$1$2-small" ]; then echo "$2-small"; else echo "$2"; fi
}

# cell TARGET TLS SUFFIX: sets `text` to the size of bootagent-TARGET-SUFFIX and, when it
# is the judged build, how it fares against its budget (sets over=1 when over); for the
# normal build beside a small one, what the small build saves.
over=""
cell() {
  local target=$1 tls=$2 suffix=$3 size budget="" x86_size small_size limit
  size=$(size_of "$target" "$suffix")
  if [ -z "$size" ]; then
    text="not built"
    return
  fi
  text=$(mb "$size")
  if [ "$suffix" != "$(judged "$target" "$tls")" ]; then
    small_size=$(size_of "$target" "$tls-small")
    [ -z "$small_size" ] || text+="  (small: -$(mb $((size - small_size))))"
    return
  fi
  local limit=1200000
  [ -z "$tls" ] || limit=2200000
  case "$target" in
    x86_64-*) budget=$limit ;;
    aarch64-*)
      budget=$limit
      x86_size=$(size_of x86_64-unknown-linux-musl "$(judged x86_64-unknown-linux-musl "$tls")")
      if [ -n "$x86_size" ] && [ "$x86_size" -lt "$budget" ]; then budget=$x86_size; fi ;;
  esac
  if [ -z "$budget" ]; then
    return
  elif [ "$size" -lt "$budget" ]; then
    text+="  ok (< $(mb "$budget"))"
  else
    over=1
    text+="  OVER ($(mb "$budget"))"
  fi
}

echo "BootAgent, stripped static binaries (MB = 1,000,000 bytes). The budgets are judged on"
echo "the small build (cross/build.sh --small: std rebuilt with panic=immediate-abort, no"
echo "unwind tables, a panic aborts without a message); the normal build is shown beside it:"
printf '  %-32s %-7s %-32s %s\n' target build "without TLS" "with TLS"
for target in "${targets[@]}"; do
  if [ -f "$dir/bootagent-$target.skipped" ]; then
    printf '  %-32s %s\n' "$target" "not built: $(cat "$dir/bootagent-$target.skipped")"
    continue
  fi
  label=$target
  for build in small normal; do
    suffix=""
    [ "$build" = normal ] || suffix=-small
    if [ "$build" = small ] && [ -z "$(size_of "$target" -small)$(size_of "$target" -tls-small)" ]; then
      printf '  %-32s %-7s %s\n' "$label" small "not built (the normal build is judged)"
      label=""
      continue
    fi
    cell "$target" "" "$suffix"
    plain=$text
    cell "$target" -tls "-tls$suffix"
    printf '  %-32s %-7s %-32s %s\n' "$label" "$build" "$plain" "$text"
    label=""
  done
done

# The optional package formats: what each adds, and all of them together.
formats_base=$(size_of x86_64-unknown-linux-musl -small-formats-none)
formats_all=$(size_of x86_64-unknown-linux-musl -small)
if [ -n "$formats_base" ] && [ -n "$formats_all" ]; then
  kb() { awk -v b="$1" 'BEGIN { printf "%+.1f KB", b / 1e3 }'; }
  echo
  echo "Package formats (cargo features), x86_64 small build without TLS; without any: $(mb "$formats_base")"
  for feature in xz zstd; do
    size=$(size_of x86_64-unknown-linux-musl "-small-formats-$feature")
    [ -n "$size" ] || continue
    printf '  %-8s %s
' "$feature" "$(kb $((size - formats_base)))"
  done
  added=$((formats_all - formats_base))
  if [ "$added" -le 150000 ]; then
    printf '  %-8s %s  ok (<= +150 KB)\n' all "$(kb "$added")"
  else
    over=1
    printf '  %-8s %s  OVER (+150 KB)\n' all "$(kb "$added")"
  fi
fi

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
