# shellcheck shell=bash
# bench/lib.sh — shared helpers of bench/run.sh and bench/soak.sh (sourced, not run).
#
# Everything here is loopback-only: every server binds 127.0.0.1 on a free port, and every
# process a script starts is recorded in BENCH_PIDS so the EXIT trap can stop exactly those
# processes (by id, never by name) however the script ends.

set -o pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
OUT_DIR="${OUT_DIR:-$BENCH_DIR/out}"
RETHREAD_BIN="${RETHREAD_BIN:-$ROOT/target/release/rethread}"  # another build for an A/B run
FAKE_BIN="$ROOT/target/release/rethread-fake"
CLK_TCK="$(getconf CLK_TCK)"

BENCH_PIDS=()
BENCH_TMP=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Setup and teardown

bench_init() {
    mkdir -p "$OUT_DIR"
    BENCH_TMP="$(mktemp -d /tmp/rethread-bench.XXXXXX)"
    trap bench_cleanup EXIT
    # INT/TERM: exit (which runs the EXIT trap) with the conventional status.
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Stops every process this script started, newest first (wrk and samplers before the servers
# they talk to), politely and then firmly, and removes the temp dir unless asked to keep it.
bench_cleanup() {
    local rc=$?
    local i pid
    for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
        pid="${BENCH_PIDS[$i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
        pid="${BENCH_PIDS[$i]}"
        wait_gone "$pid" 30 || kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" ]]; then
        if [[ "${BENCH_KEEP_TMP:-0}" == 1 || $rc -ne 0 ]]; then
            log "logs and temp files kept in $BENCH_TMP"
        else
            rm -rf "$BENCH_TMP"
        fi
    fi
    exit "$rc"
}

track() { BENCH_PIDS+=("$1"); }

untrack() {
    local pid="$1" i
    for i in "${!BENCH_PIDS[@]}"; do
        [[ "${BENCH_PIDS[$i]}" == "$pid" ]] && unset 'BENCH_PIDS[i]'
    done
    BENCH_PIDS=("${BENCH_PIDS[@]}")
}

# wait_gone PID TENTHS: true once PID has exited, false after TENTHS × 0.1 s.
wait_gone() {
    local pid="$1" n="$2"
    while ((n-- > 0)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null
}

# stop_proc PID: stop one process we started and forget it.
stop_proc() {
    local pid="$1"
    [[ -z "$pid" ]] && return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    untrack "$pid"
}

# ---------------------------------------------------------------------------------------------
# Prerequisites

# need_tools TOOL...: each must be on PATH; as root, missing ones are installed with apt-get
# (Debian package names are the tool names, except redis-cli, which is in redis-tools).
need_tools() {
    local missing=() t
    for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
    ((${#missing[@]} == 0)) && return 0
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
        local pkgs=() p
        for t in "${missing[@]}"; do
            case "$t" in
                python3) p=python3 ;;
                redis-server) p=redis-server ;;
                redis-cli) p=redis-tools ;;
                *) p="$t" ;;
            esac
            pkgs+=("$p")
        done
        log "installing ${pkgs[*]} with apt-get"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null ||
            die "apt-get install ${pkgs[*]} failed"
        # The Debian nginx package starts a system nginx on port 80; we do not want it running.
        if [[ " ${pkgs[*]} " == *" nginx "* ]] && command -v service >/dev/null; then
            service nginx stop >/dev/null 2>&1 || true
        fi
        for t in "${missing[@]}"; do command -v "$t" >/dev/null 2>&1 || die "$t still missing after apt-get"; done
    else
        die "missing tools: ${missing[*]} (as root this script installs them with apt-get; otherwise: apt-get install -y ${missing[*]})"
    fi
}

# build_bins: BUILD=1 always builds, BUILD=0 never, default: build when a binary is missing or
# older than the sources. `--workspace` matters: from the repository root, plain
# `cargo build --release --bins` builds only the root package and not `rethread-fake`.
build_bins() {
    local mode="${BUILD:-auto}" stale=0
    if [[ "$mode" == auto ]]; then
        if [[ ! -x "$RETHREAD_BIN" || ! -x "$FAKE_BIN" ]]; then
            stale=1
        elif [[ -n "$(find "$ROOT/src" "$ROOT/fake/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" "$ROOT/fake/Cargo.toml" \
            -newer "$RETHREAD_BIN" -print -quit 2>/dev/null)" ]]; then
            stale=1
        fi
    fi
    if [[ "$mode" == 1 || $stale == 1 ]]; then
        log "building release binaries (nice cargo build --release --bins --workspace)"
        (cd "$ROOT" && nice -n 10 cargo build --release --bins --workspace) >"$BENCH_TMP/build.log" 2>&1 ||
            { tail -30 "$BENCH_TMP/build.log" >&2; die "cargo build failed"; }
    fi
    [[ -x "$RETHREAD_BIN" && -x "$FAKE_BIN" ]] || die "release binaries missing (run with BUILD=1)"
}

# ---------------------------------------------------------------------------------------------
# Ports and process stats

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

rss_kb() { awk '/^VmRSS:/ {print $2; f=1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2; f=1} END {if (!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

# cpu_split PID...: user and kernel clock ticks so far (utime and stime, fields 14 and 15 of
# /proc/PID/stat), each summed over the PIDs. The command name (field 2) may contain spaces, so
# fields are counted after its closing ')'.
cpu_split() {
    local user=0 kernel=0 pid stat f
    for pid in "$@"; do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        # After ') ' comes field 3 (state): utime (14) and stime (15) are f[11] and f[12].
        read -ra f <<<"${stat##*) }"
        user=$((user + f[11]))
        kernel=$((kernel + f[12]))
    done
    echo "$user $kernel"
}

# cpu_ticks PID...: utime+stime summed over the PIDs.
cpu_ticks() {
    local user kernel
    read -r user kernel < <(cpu_split "$@")
    echo $((user + kernel))
}

# write_calls PID...: write syscalls made so far (syscw of /proc/PID/io), summed. How many
# writes a proxy needs per answer tells whether it coalesces small upstream chunks.
write_calls() {
    local total=0 pid n
    for pid in "$@"; do
        n="$(awk '/^syscw:/ {print $2}' "/proc/$pid/io" 2>/dev/null)" || continue
        total=$((total + ${n:-0}))
    done
    echo "$total"
}

# rss_sampler PID FILE INTERVAL: appends "epoch_ms,rss_kb" every INTERVAL seconds while PID
# lives; started in the background, stopped with stop_proc. Pure builtins besides sleep, so the
# sampler itself costs next to nothing.
rss_sampler() {
    local pid="$1" file="$2" interval="$3" k v _
    while kill -0 "$pid" 2>/dev/null; do
        while read -r k v _; do
            if [[ "$k" == VmRSS: ]]; then
                printf '%s,%s\n' "$(date +%s%3N)" "$v" >>"$file"
                break
            fi
        done <"/proc/$pid/status"
        sleep "$interval"
    done
}

# children PID: direct child processes (nginx workers of the master).
children() { pgrep -P "$1" 2>/dev/null | tr '\n' ' '; }

# ---------------------------------------------------------------------------------------------
# Servers

# HTTPS upstream (bench/run.sh UPSTREAM=tls-h1|tls-h2): with FAKE_TLS set to the ALPN protocols
# the fake offers (`http/1.1` or `h2`), the fake serves HTTPS with a test CA of its own, written to
# FAKE_CA; start_rethread then reaches it over https with `--upstream-ca FAKE_CA`, and start_nginx
# with proxy_ssl_* against the same CA. Empty (the default): plain HTTP, as before.
FAKE_TLS="${FAKE_TLS:-}"
FAKE_CA="${FAKE_CA:-}"
# Over HTTP/2 the fake ends each connection with a GOAWAY after this many streams, naming the
# last, as nginx does by default (keepalive_requests 1000) and servers in front of the API do;
# 0: never.
FAKE_H2_GOAWAY="${FAKE_H2_GOAWAY:-1000}"

# fake_tls_of UPSTREAM: the ALPN the fake offers in an upstream mode (plain: none).
fake_tls_of() {
    case "$1" in
        plain) echo "" ;;
        tls-h1) echo "http/1.1" ;;
        tls-h2) echo "h2" ;;
        *) echo "UPSTREAM must be plain, tls-h1 or tls-h2 (got '$1')" >&2; return 2 ;;
    esac
}

# start_fake PORT IMAGE_BYTES → sets FAKE_PID. The fake prints "listening on http(s)://…" first
# (with FAKE_TLS, after writing its CA to FAKE_CA). Every start makes a new CA.
start_fake() {
    local port="$1" image_bytes="$2" out="$BENCH_TMP/fake-$1.out" i
    local tls=()
    [[ -n "$FAKE_TLS" ]] && tls=(--tls "$FAKE_TLS" --ca-out "$FAKE_CA")
    [[ -n "$FAKE_TLS" && "$FAKE_H2_GOAWAY" != 0 ]] && tls+=(--h2-goaway-after "$FAKE_H2_GOAWAY")
    "$FAKE_BIN" --listen "127.0.0.1:$port" --image-bytes "$image_bytes" "${tls[@]}" >"$out" 2>&1 &
    FAKE_PID=$!
    track "$FAKE_PID"
    for i in $(seq 100); do
        grep -q '^listening on' "$out" 2>/dev/null && return 0
        kill -0 "$FAKE_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$out" >&2
    die "the fake did not start on port $port"
}

# restart_fake PORT IMAGE_BYTES: a fresh fake on the same port. The fake remembers every turn it
# ever generated (with each image result ~5 times: response, output, stream events), so a long
# run would use gigabytes; every measured run therefore gets a fresh one. Proxies' idle pooled
# connections to the old process see its FIN and are dropped before they are reused.
restart_fake() {
    [[ -n "${FAKE_PID:-}" ]] && stop_proc "$FAKE_PID"
    start_fake "$1" "$2"
    # Give rethread/nginx a moment to notice the closed keep-alive connections.
    sleep 0.2
}

# start_rethread PORT UPSTREAM_PORT LOGFILE [ARGS...] → sets RT_PID, waits for /healthz.
start_rethread() {
    local port="$1" up="$2" logf="$3" i
    shift 3
    local upstream=(--upstream "http://127.0.0.1:$up")
    [[ -n "$FAKE_TLS" ]] && upstream=(--upstream "https://127.0.0.1:$up" --upstream-ca "$FAKE_CA")
    "$RETHREAD_BIN" --listen "127.0.0.1:$port" "${upstream[@]}" --log warn "$@" >"$logf" 2>&1 &
    RT_PID=$!
    track "$RT_PID"
    for i in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && return 0
        kill -0 "$RT_PID" 2>/dev/null || break
        sleep 0.05
    done
    tail -20 "$logf" >&2
    die "rethread did not start on port $port"
}

# start_nginx PORT UPSTREAM_PORT [BIG_PORT] → sets NGINX_PID (the master, run in the foreground
# so it is our child). A plain streaming reverse proxy, as in the brief, plus:
#  - client_max_body_size 0: W4 sends 5 MB bodies (nginx's default limit is 1 MB → 413);
#  - keepalive_requests raised on both sides: nginx's default (1000) closes the client and
#    upstream connections every 1000 requests, which rethread (hyper) never does, so nginx would
#    pay reconnections the other paths do not;
#  - temp paths in the temp dir, so it needs nothing outside it.
# With BIG_PORT (the soak), requests carrying `x-soak-upstream: big` go to that second fake
# (the fake's image size is per process, and the soak mixes 100 KB and 1.5 MB image turns).
# NGINX_BUFFERING=on: proxy_buffering on (the `nginx-buf` path; default off). With FAKE_TLS:
# proxy_pass https:// to the fake, verified against FAKE_CA (name `localhost`, in the fake's
# certificate; also sent as SNI), sessions reused, TLS 1.2–1.3 (nginx 1.22's default stops at 1.2,
# rustls on the other paths negotiates 1.3). nginx speaks HTTP/1.1 to upstreams (no ALPN): with an
# h2-only fake it still gets HTTP/1.1, since a client that offers no ALPN is not refused.
start_nginx() {
    local port="$1" up="$2" big="${3:-}" dir="$BENCH_TMP/nginx-$1" i
    mkdir -p "$dir/tmp"
    local target="http://fake" routing="" tls_lines=""
    if [[ -n "$FAKE_TLS" && -z "$big" ]]; then
        target="https://fake"
        tls_lines="proxy_ssl_trusted_certificate $FAKE_CA;
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;"
    fi
    if [[ -n "$big" ]]; then
        target='http://$soak_backend'
        routing="map \$http_x_soak_upstream \$soak_backend { default fake; big big; }
    upstream big { server 127.0.0.1:$big; keepalive 64; keepalive_requests 10000000; }"
    fi
    local user_line=""
    [[ $EUID -eq 0 ]] && user_line="user root root;" # workers must reach the temp dir
    cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    upstream fake {
        server 127.0.0.1:$up;
        keepalive 64;
        keepalive_requests 10000000;
    }
    $routing
    server {
        listen 127.0.0.1:$port;
        client_max_body_size 0;
        location / {
            proxy_pass $target;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering ${NGINX_BUFFERING:-off};
            proxy_request_buffering off;
            $tls_lines
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }
    }
}
EOF
    nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' >"$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    track "$NGINX_PID"
    for i in $(seq 100); do
        # Any HTTP answer from nginx itself (even 502 while no fake runs) means it is up.
        curl -s -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && return 0
        kill -0 "$NGINX_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$dir/error.log" "$dir/stdout.log" >&2 2>/dev/null
    die "nginx did not start on port $port"
}

# start_redis PORT → sets REDIS_PID; no persistence (a benchmark must not write dumps).
start_redis() {
    local port="$1" i
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$BENCH_TMP" \
        --protected-mode yes >"$BENCH_TMP/redis-$port.log" 2>&1 &
    REDIS_PID=$!
    track "$REDIS_PID"
    for i in $(seq 100); do
        [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]] && return 0
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$BENCH_TMP/redis-$port.log" >&2
    die "redis-server did not start on port $port"
}

# metric PORT NAME: the sum of a Prometheus metric's samples from rethread's /metrics.
metric() {
    curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

# machine_line: what the numbers were measured on.
machine_line() {
    local model
    model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    printf '%s cores (nproc), %s, kernel %s, %s GiB RAM' "$(nproc)" "${model:-unknown CPU}" "$(uname -r)" \
        "$(awk '/^MemTotal:/ {printf "%.0f", $2/1048576}' /proc/meminfo)"
}

git_line() {
    (cd "$ROOT" && printf '%s%s' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        "$([[ -n "$(git status --porcelain -- src fake Cargo.toml Cargo.lock 2>/dev/null)" ]] && echo ' + uncommitted changes in src/fake/Cargo')")
}
