#!/usr/bin/env bash
# cross/ci.sh: the cross builds, the proof on ARM and the packages, as CI runs them
# (`bash cross/ci.sh` from .ci/run; also by hand, as root for the installs).
#
#  1. installs the tools (Debian packages, rustup targets) when run as root;
#  2. shellcheck on every shell script of cross/ and package/;
#  3. cross/build.sh for each target, without and with TLS; each binary is saved as
#     target/cross/bootagent-TARGET[-tls] and proven under qemu (cross/qemu-proof.sh,
#     every proof: register, identity, supervision of a preinstalled child, an install
#     job) right after it is built (x86_64 runs natively);
#     armv7 is built only where rustup can install its standard library, and says so;
#     then, for x86_64 and aarch64, the small builds (cross/build.sh --small: std
#     rebuilt with panic=immediate-abort, the build the size budgets are judged on),
#     saved as target/cross/bootagent-TARGET[-tls]-small and proven the same way;
#  4. the size table (cross/sizes.sh --strict): small and normal builds, budgets on
#     the small; a binary over its budget (or formats adding over 150 KB) fails CI;
#  5. the firmware proof (cross/firmware-proof.sh): the aarch64 binary, normal and
#     small, in a BusyBox initramfs under Debian's arm64 kernel in qemu-system-aarch64;
#  6. package/package.sh BootAgent VERSION-1, without and with TLS, into target/package
#     (with the sizes of the files), and lintian on every .deb (no error allowed).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== cross/ci.sh: %s\n' "$*"; }
die() {
  echo "cross/ci.sh: $*" >&2
  exit 1
}

required=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
optional=(armv7-unknown-linux-musleabihf)
small=("${required[@]}")

step "tools"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-user-static gcc-aarch64-linux-gnu libc6-dev-arm64-cross musl-tools dpkg-dev \
    file binutils curl jq shellcheck qemu-system-arm cpio lintian >/dev/null
fi
for target in "${required[@]}"; do
  rustup target add "$target" >/dev/null 2>&1 ||
    die "rustup cannot install the standard library for $target"
done
# The standard library's source, for the small builds (cargo -Z build-std).
rustup component add rust-src >/dev/null 2>&1 ||
  die "rustup cannot install the rust-src component (needed by cross/build.sh --small)"
armv7_std=""
if rustup target add armv7-unknown-linux-musleabihf >/dev/null 2>&1; then
  armv7_std=1
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc-arm-linux-gnueabihf libc6-dev-armhf-cross >/dev/null
  fi
fi

step "shellcheck"
if command -v shellcheck >/dev/null; then
  shellcheck cross/*.sh package/package.sh package/debian/{postinst,prerm,postrm} \
    package/init/sysvinit/bootagent package/init/openrc/bootagent package/init/openwrt/bootagent
  # Settings files, sourced by the scripts: their variables are used elsewhere.
  shellcheck -s sh -e SC2034 package/init/sysvinit/bootagent.default package/init/openrc/bootagent.conf
  echo "shellcheck: clean"
else
  die "shellcheck is not installed (apt-get install shellcheck)"
fi

step "cross builds and proofs"
rm -rf target/cross
mkdir -p target/cross
for target in "${required[@]}" "${optional[@]}"; do
  if [ "$target" = armv7-unknown-linux-musleabihf ] && [ -z "$armv7_std" ]; then
    echo "its standard library cannot be installed here (rustup target add fails)" \
      >"target/cross/bootagent-$target.skipped"
    echo "cross/ci.sh: $target: not built, its standard library cannot be installed here"
    continue
  fi
  for variant in "" --tls; do
    cross/build.sh "$target" ${variant:+"$variant"}
    cp "target/$target/release/bootagent" "target/cross/bootagent-$target${variant:+-tls}"
    cross/qemu-proof.sh "$target"
  done
done
for target in "${small[@]}"; do
  for variant in "" --tls; do
    cross/build.sh "$target" --small ${variant:+"$variant"}
    cp "target/small/$target/release/bootagent" "target/cross/bootagent-$target${variant:+-tls}-small"
    cross/qemu-proof.sh --small "$target"
  done
done

# What each optional package format adds: x86_64, small, without TLS, with none of
# them and with each alone (cross/sizes.sh prints the differences).
for formats in none xz zstd; do
  cross/build.sh x86_64-unknown-linux-musl --small --formats "$formats"
  cp target/small/x86_64-unknown-linux-musl/release/bootagent \
    "target/cross/bootagent-x86_64-unknown-linux-musl-small-formats-$formats"
done

step "sizes"
# --strict: a binary over its size budget fails CI.
cross/sizes.sh --strict

step "firmware proof (aarch64 kernel, BusyBox init, qemu-system-aarch64)"
cross/firmware-proof.sh --bin target/cross/bootagent-aarch64-unknown-linux-musl
cross/firmware-proof.sh --bin target/cross/bootagent-aarch64-unknown-linux-musl-small

step "packages"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)-1
rm -rf target/package
package/package.sh BootAgent "$version"
package/package.sh BootAgent "$version" --tls
(cd target/package && sha256sum -c --quiet ./*.sha256)

step "lintian"
for deb in target/package/*.deb; do
  status=0
  said=$(lintian --fail-on error "$deb" 2>&1) || status=$?
  # Root is how CI runs; lintian's warning about it says nothing of the package.
  grep -v '^running with root privileges' <<<"$said" || true
  [ "$status" -eq 0 ] || die "lintian reports errors in $deb"
done
echo "lintian: no errors"
echo "cross/ci.sh: done in $SECONDS s"
