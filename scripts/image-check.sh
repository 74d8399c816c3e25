#!/usr/bin/env bash
# Build the container image with podman and check it, without a container runtime:
#
#   1. build the static binary: cargo build --release --target x86_64-unknown-linux-musl
#   2. lay it out as the Dockerfile's `builder` stage would (DIR/out/rethread, CA roots,
#      passwd/group) and build the image with `--build-context builder=DIR`, so nothing is pulled
#   3. check the image: size (fails over 20 MB), user, entrypoint, env, port, healthcheck, labels
#   4. export its root filesystem and run /rethread from it with chroot as 65532:65532 against
#      the project's fake upstream (rethread-fake): `health`, the image's HEALTHCHECK command,
#      /readyz, /metrics, POST /v1/responses, the issue's image follow-up repaired, `health`
#      against a dead port (exit 1), TLS verified against the image's CA bundle, SIGTERM
#
# Without podman (or without root, which chroot needs) it prints why and exits 0 — except with
# CI=true and REQUIRE_IMAGE_CHECK=1, where that is a failure.
#
# Environment: IMAGE (tag, default rethread:check), MAX_IMAGE_BYTES (default 20000000),
# PODMAN_STORAGE_DRIVER (default vfs), NICE (niceness of the cargo builds, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
IMAGE=${IMAGE:-rethread:check}
MAX_IMAGE_BYTES=${MAX_IMAGE_BYTES:-20000000}
STORAGE_DRIVER=${PODMAN_STORAGE_DRIVER:-vfs}
RUN_AS=65532:65532
HOST_CA=/etc/ssl/certs/ca-certificates.crt

say() { printf '==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
  printf 'image-check: FAILED: %s\n' "$*" >&2
  exit 1
}
skip() {
  if [[ "${CI:-}" == "true" && "${REQUIRE_IMAGE_CHECK:-}" == "1" ]]; then
    fail "$1 (required: CI=true and REQUIRE_IMAGE_CHECK=1)"
  fi
  printf 'image-check: skipped: %s\n' "$1"
  exit 0
}

command -v podman >/dev/null 2>&1 || skip "podman is not installed (apt-get install -y podman)"
[[ "$(id -u)" == 0 ]] || skip "not root: running the image's rootfs needs chroot --userspec"
for tool in cargo curl chroot tar; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
done
[[ -r "$HOST_CA" ]] || fail "$HOST_CA is missing (apt-get install -y ca-certificates)"
CHROOT=$(command -v chroot)
PODMAN=(podman "--storage-driver=$STORAGE_DRIVER")
NICE_CMD=()
command -v nice >/dev/null 2>&1 && NICE_CMD=(nice -n "${NICE:-10}")

# ------------------------------------------------------------------------------------------
# Processes and files of this run; all removed on exit.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rethread-image-check.XXXXXX")
PIDS=()
CONTAINER=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "$CONTAINER" ]]; then
    "${PODMAN[@]}" rm -f "$CONTAINER" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait until FILE has a match of REGEX (printing the first), or fail after 30s / when PID dies.
wait_for_line() {
  local file=$1 regex=$2 pid=$3 what=$4 i match
  for ((i = 0; i < 300; i++)); do
    match=$(grep -o -E "$regex" "$file" 2>/dev/null | head -n 1 || true)
    if [[ -n "$match" ]]; then
      printf '%s\n' "$match"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "--- $what output:" >&2
  cat "$file" >&2 || true
  fail "$what did not start"
}

# ------------------------------------------------------------------------------------------
say "static binary: cargo build --release --target $TARGET -p rethread --bin rethread"
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "musl-gcc is missing (install musl-tools)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
fi
# ring and zstd compile C code for the target.
export CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc}
"${NICE_CMD[@]}" cargo build --release --target "$TARGET" -p rethread --bin rethread
BIN="target/$TARGET/release/rethread"
[[ -x "$BIN" ]] || fail "$BIN was not built"

say "builder context (the Dockerfile's builder stage, prepared here)"
CTX="$WORK/builder"
mkdir -p "$CTX/out/etc/ssl/certs"
install -m 0755 "$BIN" "$CTX/out/rethread"
if command -v strip >/dev/null 2>&1; then
  strip "$CTX/out/rethread" # as the Dockerfile's builder does
fi
if command -v readelf >/dev/null 2>&1 && readelf -l "$CTX/out/rethread" | grep -q 'program interpreter'; then
  fail "$BIN is dynamically linked; a scratch image cannot run it"
fi
install -m 0644 "$HOST_CA" "$CTX/out/etc/ssl/certs/ca-certificates.crt"
echo 'rethread:x:65532:65532:rethread:/nonexistent:/sbin/nologin' >"$CTX/out/etc/passwd"
echo 'rethread:x:65532:' >"$CTX/out/etc/group"
mkdir -p "$CTX/out/var/lib/rethread" # the file store's directory (the COPY gives it to 65532)
chmod 0644 "$CTX/out/etc/passwd" "$CTX/out/etc/group"
(cd "$CTX" && find . -type f -printf '    %P (%s bytes)\n' | sort)

# ------------------------------------------------------------------------------------------
say "podman build -t $IMAGE (builder stage replaced by the directory above)"
OLD_ID=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
"${PODMAN[@]}" build --isolation=chroot --format docker --pull=never --layers=false \
  --build-context "builder=$CTX" -t "$IMAGE" .
NEW_ID=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n "$OLD_ID" && "$OLD_ID" != "$NEW_ID" ]]; then
  "${PODMAN[@]}" rmi "$OLD_ID" >/dev/null 2>&1 || true # the previous run's image, now untagged
fi

say "image size and configuration"
SIZE=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
[[ "$SIZE" =~ ^[0-9]+$ ]] || fail "cannot read the image size (got '$SIZE')"
SAVED=$("${PODMAN[@]}" save --format docker-archive "$IMAGE" 2>/dev/null | wc -c || true)
echo "image size: $SIZE bytes ($(awk -v n="$SIZE" 'BEGIN { printf "%.1f", n / 1000000 }') MB)"
echo "saved archive (podman save): $SAVED bytes"
((SIZE <= MAX_IMAGE_BYTES)) || fail "the image is $SIZE bytes, over the limit of $MAX_IMAGE_BYTES"
ok "at most $MAX_IMAGE_BYTES bytes"

expect_config() { # FORMAT EXPECTED
  local got
  got=$("${PODMAN[@]}" image inspect --format "$1" "$IMAGE")
  [[ "$got" == "$2" ]] || fail "image $1 is '$got', expected '$2'"
  ok "$1 = $got"
}
expect_config '{{.Config.User}}' '65532:65532'
expect_config '{{json .Config.Entrypoint}}' '["/rethread"]'
# shellcheck disable=SC2016 # Go template variables, not shell ones
expect_config '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' '8080/tcp '
expect_config '{{range $v, $_ := .Config.Volumes}}{{$v}} {{end}}' '/var/lib/rethread '
expect_config '{{range .Config.Env}}{{if eq . "RETHREAD_LISTEN=0.0.0.0:8080"}}{{.}}{{end}}{{end}}' 'RETHREAD_LISTEN=0.0.0.0:8080'
expect_config '{{json .HealthCheck.Test}}' '["CMD","/rethread","health"]'
expect_config '{{index .Config.Labels "org.opencontainers.image.title"}}' 'rethread'
expect_config '{{index .Config.Labels "org.opencontainers.image.licenses"}}' 'Apache-2.0'
for label in description source; do
  got=$("${PODMAN[@]}" image inspect --format "{{index .Config.Labels \"org.opencontainers.image.$label\"}}" "$IMAGE")
  [[ -n "$got" && "$got" != "<no value>" ]] || fail "label org.opencontainers.image.$label is missing"
  ok "org.opencontainers.image.$label = $got"
done

say "export the image's root filesystem"
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS"
CONTAINER=$("${PODMAN[@]}" create --no-healthcheck "$IMAGE")
"${PODMAN[@]}" export "$CONTAINER" | tar -x -C "$ROOTFS"
"${PODMAN[@]}" rm -f "$CONTAINER" >/dev/null
CONTAINER=""
(cd "$ROOTFS" && find . -type f -printf '    /%P (%s bytes)\n' | sort)
for f in rethread etc/passwd etc/group etc/ssl/certs/ca-certificates.crt; do
  [[ -f "$ROOTFS/$f" ]] || fail "/$f is missing from the image"
done
[[ -x "$ROOTFS/rethread" ]] || fail "/rethread is not executable"
[[ -d "$ROOTFS/var/lib/rethread" ]] || fail "/var/lib/rethread (the file store's volume) is missing"
[[ "$(stat -c %u "$ROOTFS/var/lib/rethread")" == 65532 ]] || fail "/var/lib/rethread is not owned by 65532"
ok "/var/lib/rethread belongs to 65532"

# Run the image's entrypoint as the container would: its user, a clean environment.
in_image() { # ENV=VALUE... -- ARGS...
  local envs=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do
    envs+=("$1")
    shift
  done
  shift
  env -i "${envs[@]}" "$CHROOT" --userspec="$RUN_AS" "$ROOTFS" /rethread "$@"
}

# ------------------------------------------------------------------------------------------
say "the fake upstream (rethread-fake)"
"${NICE_CMD[@]}" cargo build -p rethread-fake --bin rethread-fake
"target/debug/rethread-fake" --listen 127.0.0.1:0 >"$WORK/fake.out" 2>"$WORK/fake.err" &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
FAKE_URL=$(wait_for_line "$WORK/fake.out" 'listening on http://[0-9.]+:[0-9]+' "$FAKE_PID" rethread-fake)
FAKE_URL=${FAKE_URL#listening on }
ok "rethread-fake at $FAKE_URL"

# Start /rethread from the rootfs on an ephemeral port; prints its base URL.
start_rethread() { # LOG_FILE UPSTREAM
  # A simple command, not in_image: $! must be rethread itself (env and chroot exec it).
  env -i RETHREAD_LOG=info "$CHROOT" --userspec="$RUN_AS" "$ROOTFS" /rethread \
    --listen 127.0.0.1:0 --upstream "$2" --log-format json >"$1" 2>&1 &
  RT_PID=$!
  PIDS+=("$RT_PID")
  RT_URL=$(wait_for_line "$1" 'listening on http://127\.0\.0\.1:[0-9]+' "$RT_PID" rethread)
  RT_URL=${RT_URL#listening on }
}

say "/rethread from the image, as $RUN_AS, in front of the fake"
start_rethread "$WORK/rethread.log" "$FAKE_URL"
ok "listening at $RT_URL (pid $RT_PID)"
ids=$(awk '/^Uid:/ { u = $2 } /^Gid:/ { g = $2 } END { print u ":" g }' "/proc/$RT_PID/status")
[[ "$ids" == "$RUN_AS" ]] || fail "rethread runs as $ids, expected $RUN_AS"
ok "runs as uid:gid $ids"

in_image -- health --url "$RT_URL" >/dev/null || fail "rethread health --url $RT_URL did not exit 0"
ok "rethread health --url $RT_URL exits 0"
# The image's HEALTHCHECK command, with the image's RETHREAD_LISTEN form (0.0.0.0:PORT).
in_image "RETHREAD_LISTEN=0.0.0.0:${RT_URL##*:}" -- health >/dev/null ||
  fail "the HEALTHCHECK command (/rethread health) did not exit 0"
ok "HEALTHCHECK command (/rethread health, RETHREAD_LISTEN=0.0.0.0:${RT_URL##*:}) exits 0"
status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$RT_URL/readyz")
[[ "$status" == 200 ]] || fail "GET /readyz answered $status"
ok "GET /readyz: 200"

post() { # BODY OUT_FILE HEADERS_FILE BASE_URL -> prints the status
  curl -sS --max-time 30 -o "$2" -D "$3" -w '%{http_code}' "$4/v1/responses" \
    -H 'authorization: Bearer x' -H 'content-type: application/json' -d "$1"
}
status=$(post '{"model":"gpt-5","input":"hi"}' "$WORK/r0.json" "$WORK/r0.h" "$RT_URL")
[[ "$status" == 200 ]] || fail "POST /v1/responses answered $status: $(head -c 500 "$WORK/r0.json")"
ok "POST /v1/responses through the image: 200"

# The issue's program: an image turn, then a follow-up that hands back only the image call's id.
TOOLS='"tools":[{"type":"image_generation"}]'
status=$(post "{\"model\":\"gpt-5\",\"input\":\"Draw a cat\",$TOOLS}" "$WORK/r1.json" "$WORK/r1.h" "$RT_URL")
[[ "$status" == 200 ]] || fail "the image turn answered $status: $(head -c 500 "$WORK/r1.json")"
IG=$(grep -o -m1 -E '"id": ?"ig_[A-Za-z0-9_-]+"' "$WORK/r1.json" | grep -o -E 'ig_[A-Za-z0-9_-]+' | head -n1 || true)
[[ -n "$IG" ]] || fail "no image_generation_call in the image turn"
FOLLOWUP="{\"model\":\"gpt-5\",\"input\":[{\"role\":\"user\",\"content\":\"Now make it realistic\"},{\"type\":\"image_generation_call\",\"id\":\"$IG\"}],$TOOLS}"
status=$(post "$FOLLOWUP" "$WORK/direct.json" "$WORK/direct.h" "$FAKE_URL")
[[ "$status" == 400 ]] || fail "the fake accepted the unrepaired follow-up directly ($status); the check proves nothing"
status=$(post "$FOLLOWUP" "$WORK/r2.json" "$WORK/r2.h" "$RT_URL")
[[ "$status" == 200 ]] || fail "the follow-up with only $IG answered $status: $(head -c 500 "$WORK/r2.json")"
inserted=$(grep -i '^x-rethread-inserted:' "$WORK/r2.h" | tr -dc '0-9' || true)
[[ -n "$inserted" && "$inserted" -ge 1 ]] || fail "the follow-up was not repaired (x-rethread-inserted: '${inserted}')"
ok "follow-up with only $IG: 400 from the fake directly, 200 through the image (x-rethread-inserted: $inserted)"

metrics=$(curl -sS --max-time 10 "$RT_URL/metrics") || fail "GET /metrics failed"
grep -q '^rethread_' <<<"$metrics" || fail "GET /metrics has no rethread_ series"
ok "GET /metrics: $(grep -c '^rethread_' <<<"$metrics") rethread_ samples"

set +e
in_image -- health --url http://127.0.0.1:1 >/dev/null 2>&1
code=$?
set -e
[[ "$code" == 1 ]] || fail "rethread health against a dead port exited $code, expected 1"
ok "rethread health --url http://127.0.0.1:1 (nothing listening) exits 1"

kill -TERM "$RT_PID"
for ((i = 0; i < 100; i++)); do
  kill -0 "$RT_PID" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$RT_PID" 2>/dev/null && fail "rethread did not stop within 10s of SIGTERM"
set +e
wait "$RT_PID"
code=$?
set -e
[[ "$code" == 0 ]] || fail "rethread exited $code on SIGTERM, expected 0"
ok "SIGTERM: exits 0"

# ------------------------------------------------------------------------------------------
# TLS: an https upstream is verified against the image's /etc/ssl/certs/ca-certificates.crt.
# A local server with a certificate from a throwaway CA must be refused (502) with the image's
# bundle as built, and accepted once that CA is appended to the bundle in the exported rootfs.
if command -v openssl >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
  say "TLS upstream verified against the image's CA bundle"
  TLS="$WORK/tls"
  mkdir -p "$TLS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=image-check test CA' \
    -keyout "$TLS/ca.key" -out "$TLS/ca.crt" \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign' 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj '/CN=127.0.0.1' \
    -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"$TLS/ext"
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 1 -extfile "$TLS/ext" -out "$TLS/server.crt" 2>/dev/null
  python3 - "$TLS/server.crt" "$TLS/server.key" >"$WORK/tls.out" 2>"$WORK/tls.err" <<'PY' &
import http.server, ssl, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"object":"list","data":[]}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"listening on https://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
PY
  TLS_PID=$!
  PIDS+=("$TLS_PID")
  TLS_URL=$(wait_for_line "$WORK/tls.out" 'listening on https://127\.0\.0\.1:[0-9]+' "$TLS_PID" "the TLS test server")
  TLS_URL=${TLS_URL#listening on }

  start_rethread "$WORK/rethread-tls1.log" "$TLS_URL"
  status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 "$RT_URL/v1/models" -H 'authorization: Bearer x')
  [[ "$status" == 502 ]] || fail "an upstream certificate from an unknown CA answered $status, expected 502"
  why=$({ grep -o -E 'invalid peer certificate[^",]*|UnknownIssuer' "$WORK/rethread-tls1.log" || echo 'no certificate error logged'; } | head -n 1)
  ok "unknown CA refused: 502 ($why)"
  kill "$RT_PID" 2>/dev/null || true
  wait "$RT_PID" 2>/dev/null || true

  cat "$TLS/ca.crt" >>"$ROOTFS/etc/ssl/certs/ca-certificates.crt"
  start_rethread "$WORK/rethread-tls2.log" "$TLS_URL"
  status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 20 "$RT_URL/v1/models" -H 'authorization: Bearer x')
  [[ "$status" == 200 ]] || fail "with the CA in /etc/ssl/certs/ca-certificates.crt the upstream answered $status, expected 200: $(tail -n 5 "$WORK/rethread-tls2.log")"
  ok "CA appended to the rootfs's /etc/ssl/certs/ca-certificates.crt: 200"
else
  say "TLS check skipped: needs openssl and python3"
fi

echo "image-check: passed ($IMAGE, $SIZE bytes)"
