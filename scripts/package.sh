#!/usr/bin/env bash
# Builds what users install, into dist/ (DIST=… for another folder):
#   rethread-VERSION-linux-x86_64, rethread-VERSION-linux-aarch64   static (musl) binaries
#   rethread_proxy-VERSION-py3-none-manylinux…musllinux…_ARCH.whl    the Python wheels (pip/uvx)
#   rethread-VERSION.tgz, rethread-linux-x64-VERSION.tgz, rethread-linux-arm64-VERSION.tgz  npm
#   SHA256SUMS
# One version for all: the crate's. x86_64 is built with musl-gcc (as the container image is);
# aarch64 with cargo-zigbuild, zig being the cross C compiler that ring and zstd need. Both come
# from the registries when missing (musl-tools from Debian; ziglang and cargo-zigbuild from the
# Python package index). macOS and Windows builds come from .github/workflows/release.yml.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${DIST:-dist}
say() { printf '==> %s\n' "$*"; }
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[[ -n "$VERSION" ]] || { echo "package: no version in Cargo.toml" >&2; exit 1; }
rm -rf "$DIST"
mkdir -p "$DIST"
NICE_CMD=()
command -v nice >/dev/null 2>&1 && NICE_CMD=(nice -n "${NICE:-10}")
# Build tools from the Python package index live in a virtualenv of their own (a system Python
# may refuse installs into itself).
TOOLS=target/package-tools
[[ -x "$TOOLS/bin/python" ]] || python3 -m venv "$TOOLS"
export PATH="$PWD/$TOOLS/bin:$PATH"

say "linux x86_64 (musl)"
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
if ! command -v musl-gcc >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
fi
export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
"${NICE_CMD[@]}" cargo build --release --locked --target x86_64-unknown-linux-musl -p rethread --bin rethread

say "linux aarch64 (musl, cargo-zigbuild)"
rustup target list --installed | grep -qx aarch64-unknown-linux-musl || rustup target add aarch64-unknown-linux-musl
if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -c 'import ziglang' >/dev/null 2>&1; then
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check ziglang cargo-zigbuild
fi
"${NICE_CMD[@]}" cargo zigbuild --release --locked --target aarch64-unknown-linux-musl -p rethread --bin rethread

X64="$DIST/rethread-$VERSION-linux-x86_64"
ARM64="$DIST/rethread-$VERSION-linux-aarch64"
install -m 0755 target/x86_64-unknown-linux-musl/release/rethread "$X64"
install -m 0755 target/aarch64-unknown-linux-musl/release/rethread "$ARM64"

say "python wheels"
python3 packaging/wheel.py "$VERSION" x86_64 "$X64" "$DIST"
python3 packaging/wheel.py "$VERSION" aarch64 "$ARM64" "$DIST"

say "npm packages"
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/rethread-npm.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
for spec in "linux-x64 x64 $X64" "linux-arm64 arm64 $ARM64"; do
  read -r platform cpu binary <<<"$spec"
  dir="$STAGE/$platform"
  mkdir -p "$dir/bin"
  sed -e "s/PLATFORM/$platform/g" -e "s/\"OS\"/\"linux\"/" -e "s/\"CPU\"/\"$cpu\"/" \
    -e "s/\"version\": \"[^\"]*\"/\"version\": \"$VERSION\"/" packaging/npm/platform/package.json >"$dir/package.json"
  install -m 0755 "$binary" "$dir/bin/rethread"
  (cd "$dir" && npm pack --silent --pack-destination "$OLDPWD/$DIST" >/dev/null)
done
cp -r packaging/npm/rethread "$STAGE/rethread"
cp packaging/python/README.md "$STAGE/rethread/README.md"
sed -i -e "s/\"0\.1\.0\"/\"$VERSION\"/g" "$STAGE/rethread/package.json"
chmod 0755 "$STAGE/rethread/bin/rethread.js"
(cd "$STAGE/rethread" && npm pack --silent --pack-destination "$OLDPWD/$DIST" >/dev/null)

(cd "$DIST" && sha256sum -- * >SHA256SUMS)
say "dist/"
ls -l "$DIST"
