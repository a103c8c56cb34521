#!/usr/bin/env bash
# package/package.sh NAME VERSION [--tls] [--target TARGET]... [--bin FILE] [--out DIR]
#
# Packages BootAgent for hosts, as the original's `./contrib/package.sh BootAgent 1.2.1-1`:
# for each TARGET (default: x86_64-unknown-linux-musl and aarch64-unknown-linux-musl),
# builds the static binary with cross/build.sh TARGET [--tls] (BOOT_VERSION=VERSION, so
# the binary says the package's version), then writes into DIR
# (default target/package), each with a NAME.sha256 beside it for `sha256sum -c`:
#
#   NAME-VERSION-linux-ARCH[-tls].tar.gz  the binary, README, protocol.md, init/ for
#                                         systemd, sysvinit, OpenRC, BusyBox init and
#                                         OpenWrt procd
#   name[-tls]_VERSION_DEBARCH.deb        /usr/sbin/bootagent, the systemd unit, the
#                                         sysvinit script, /etc/default/bootagent, and
#                                         in /usr/share/doc/name: README, protocol.md,
#                                         changelog, copyright (lintian finds no error)
#
#   package/package.sh BootAgent 1.2.1-1
#   package/package.sh BootAgent 1.2.1-1 --tls --target aarch64-unknown-linux-musl
#
# --bin FILE packages FILE as it is instead of building (one TARGET, which names the
# architecture). VERSION is a Debian version without an epoch. The -tls packages are
# the builds with HTTPS; their .deb conflicts with the plain one and replaces it.
# The .deb's Maintainer is the first of Cargo.toml's `authors` (MAINTAINER="Name
# <address>" overrides it). It prints one line per file made, with its size; the
# build's own output goes to DIR/build-TARGET.log (its end is shown when it fails).
# Needs: dpkg-deb, tar, gzip, sha256sum (and what cross/build.sh needs).
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "package/package.sh: $*" >&2
  exit 1
}
usage() {
  echo "usage: package/package.sh NAME VERSION [--tls] [--target TARGET]... [--bin FILE] [--out DIR]" >&2
  exit 2
}

[ $# -ge 2 ] || usage
name=$1 version=$2
shift 2
tls="" bin="" out=target/package targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --tls) tls=1 ;;
    --target) [ $# -ge 2 ] || usage; targets+=("$2"); shift ;;
    --bin) [ $# -ge 2 ] || usage; bin=$2; shift ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift ;;
    *) usage ;;
  esac
  shift
done

for tool in dpkg-deb tar gzip sha256sum md5sum; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install dpkg-dev coreutils tar gzip)"
done
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9.+-]*$ ]] || die "bad NAME $name: letters, digits, . + - only"
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "bad VERSION $version: a Debian version without epoch, e.g. 1.2.1-1"
if [ ${#targets[@]} -eq 0 ]; then
  if [ -n "$bin" ]; then
    targets=(x86_64-unknown-linux-musl)
  else
    targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
  fi
fi
if [ -n "$bin" ]; then
  [ ${#targets[@]} -eq 1 ] || die "--bin packages one binary: give one --target"
  if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then die "--bin $bin: not an executable file"; fi
fi

suffix=${tls:+-tls}
package=${name,,}$suffix # Debian package names are lowercase
upstream=${version%-*}
cargo_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
maintainer=${MAINTAINER:-$(sed -n 's/^authors = \["\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)}
[[ "$maintainer" =~ ^[^\<\>]+\ \<[^@\<\>\ ]+@[^@\<\>\ ]+\.[^@\<\>\ ]+\>$ ]] ||
  die "maintainer \"$maintainer\" is not \"Name <address>\" (Cargo.toml authors, or MAINTAINER=)"
case "$maintainer" in
  *@localhost*) die "maintainer $maintainer: an address on localhost reaches nobody" ;;
esac
# The changelog's date: the last commit's (reproducible), else now.
changelog_date=$(date -R -u -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")
if [ "$upstream" != "$cargo_version" ]; then
  echo "package/package.sh: note: VERSION $version, but Cargo.toml says $cargo_version" >&2
fi

mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# sha256 FILE: writes FILE.sha256 in the `sha256sum -c` format, beside FILE, and
# prints the summary line of FILE.
sha256() {
  (cd "$(dirname "$1")" && sha256sum "$(basename "$1")" >"$(basename "$1").sha256")
  printf 'package/package.sh: %s  %s bytes\n' "$1" "$(stat -c %s "$1")"
}

# tarball ARCH BIN: NAME-VERSION-linux-ARCH[-tls].tar.gz.
tarball() {
  local stem="$name-$version-linux-$1$suffix"
  local root="$stage/$stem" init=package/init
  install -d -m 0755 "$root"/init/{systemd,sysvinit,openrc,busybox,openwrt}
  install -m 0755 "$2" "$root/bootagent"
  install -m 0644 package/README "$root/README"
  install -m 0644 docs/protocol.md "$root/protocol.md"
  install -m 0644 "$init/systemd/bootagent.service" "$root/init/systemd/"
  install -m 0755 "$init/sysvinit/bootagent" "$root/init/sysvinit/bootagent"
  install -m 0644 "$init/sysvinit/bootagent.default" "$root/init/sysvinit/"
  install -m 0755 "$init/openrc/bootagent" "$root/init/openrc/bootagent"
  install -m 0644 "$init/openrc/bootagent.conf" "$root/init/openrc/"
  install -m 0644 "$init/busybox/inittab" "$root/init/busybox/"
  install -m 0755 "$init/openwrt/bootagent" "$root/init/openwrt/bootagent"
  install -m 0644 "$init/openwrt/bootagent.config" "$root/init/openwrt/"
  tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner -cf - "$stem" |
    gzip -9n >"$out/$stem.tar.gz"
  sha256 "$out/$stem.tar.gz"
}

# deb DEBARCH BIN: name[-tls]_VERSION_DEBARCH.deb.
deb() {
  local root="$stage/deb-$1" init=package/init
  local file="$out/${package}_${version}_$1.deb"
  install -d -m 0755 "$root/DEBIAN" "$root/usr/sbin" "$root/lib/systemd/system" \
    "$root/etc/init.d" "$root/etc/default" "$root/usr/share/doc/$package"
  install -m 0755 "$2" "$root/usr/sbin/bootagent"
  install -m 0644 "$init/systemd/bootagent.service" "$root/lib/systemd/system/"
  install -m 0755 "$init/sysvinit/bootagent" "$root/etc/init.d/bootagent"
  install -m 0644 "$init/sysvinit/bootagent.default" "$root/etc/default/bootagent"
  local doc="$root/usr/share/doc/$package"
  install -m 0644 package/README "$doc/README"
  install -m 0644 package/debian/copyright "$doc/copyright"
  # Documentation over 4 kB is compressed (Debian policy 12.3), the changelog always;
  # a Debian revision (1.2.1-1) makes it changelog.Debian.gz, a native version changelog.gz.
  gzip -9n <docs/protocol.md >"$doc/protocol.md.gz"
  local changelog="$doc/changelog.Debian.gz"
  [[ "$version" == *-* ]] || changelog="$doc/changelog.gz"
  printf '%s (%s) unstable; urgency=medium\n\n  * BootAgent %s%s.\n\n -- %s  %s\n' \
    "$package" "$version" "$upstream" "${tls:+, with HTTPS}" "$maintainer" "$changelog_date" |
    gzip -9n >"$changelog"
  chmod 0644 "$doc/protocol.md.gz" "$changelog"
  # BootAgent is static on purpose (one binary for every host, firmware images first).
  install -d -m 0755 "$root/usr/share/lintian/overrides"
  printf '%s: statically-linked-binary [usr/sbin/bootagent]\n' "$package" \
    >"$root/usr/share/lintian/overrides/$package"
  chmod 0644 "$root/usr/share/lintian/overrides/$package"
  install -m 0755 package/debian/postinst package/debian/prerm package/debian/postrm "$root/DEBIAN/"
  printf '/etc/default/bootagent\n/etc/init.d/bootagent\n' >"$root/DEBIAN/conffiles"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  local variant="" relations=""
  if [ -n "$tls" ]; then
    variant="
 This build speaks HTTPS (rustls) as well as HTTP."
    relations="Provides: ${package%-tls}
Conflicts: ${package%-tls}
Replaces: ${package%-tls}
"
  else
    relations="Conflicts: $package-tls
Replaces: $package-tls
"
  fi
  cat >"$root/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $1
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Section: admin
Priority: optional
${relations}Description: agent that keeps the software on a fleet of hosts alive
 BootAgent registers with a control server, reports the host's status on a
 schedule, and installs and supervises the child agents the server sends.
 One static binary with no dependencies, started by systemd or sysvinit.$variant
EOF
  chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"
  dpkg-deb --root-owner-group --build "$root" "$file" >/dev/null
  sha256 "$file"
}

for target in "${targets[@]}"; do
  case "$target" in
    x86_64-unknown-linux-musl) arch=x86_64 debarch=amd64 ;;
    aarch64-unknown-linux-musl) arch=aarch64 debarch=arm64 ;;
    armv7-unknown-linux-musleabihf) arch=armv7 debarch=armhf ;;
    *) die "unknown target $target (x86_64-unknown-linux-musl, aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf)" ;;
  esac
  binary=$bin
  if [ -z "$binary" ]; then
    log="$out/build-$target${suffix}.log"
    if ! BOOT_VERSION="$version" cross/build.sh "$target" ${tls:+--tls} >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      die "cannot build $target (cross/build.sh $target ${tls:+--tls}; whole output in $log)"
    fi
    binary="target/$target/release/bootagent"
    # The binary must say the package's version (where it can run here: natively or
    # under qemu user emulation).
    said=""
    case "$target" in
      x86_64-*) [ "$(uname -m)" != x86_64 ] || said=$("$binary" -V) ;;
      aarch64-*) if command -v qemu-aarch64-static >/dev/null; then said=$(qemu-aarch64-static "$binary" -V); fi ;;
    esac
    if [ -n "$said" ]; then
      [[ "$said" == "bootagent $version "* ]] || die "$binary says \"${said%%$'\n'*}\", not version $version"
    fi
    echo "package/package.sh: built ${said:+${said%%$'\n'*}: }$binary"
  fi
  tarball "$arch" "$binary"
  deb "$debarch" "$binary"
done
