#!/usr/bin/env bash
# bench/profile.sh — where a proxy's time goes on one workload at c=1: rethread beside nginx
# (buffering on), same fake upstream, one after the other.
#
#   bench/profile.sh                      # W3 (SSE, 201 events), plain upstream, 8 s per proxy
#   WORKLOAD=W1 UPSTREAM=tls-h1 bench/profile.sh
#   RECORD=1 bench/profile.sh             # also `perf record` rethread: top symbols, user+kernel
#
# Per request it prints the proxy's CPU (task-clock), context switches, CPU migrations, page
# faults and write/read syscalls, counted by `perf stat` on the proxy's processes while the load
# runs — the figures that explain a latency gap on a machine where client, upstream and proxy
# share two cores — and the CPU split into user and kernel time (/proc, `utime`/`stime`): the
# kernel's share is the sockets' work, the same for any proxy making the same calls. Needs perf
# (Debian: linux-perf) and, like run.sh, wrk, nginx and python3.
# Settings: WORKLOAD (W1|W3), UPSTREAM (plain|tls-h1|tls-h2), SECONDS_PER (default 8), RECORD,
# PACE_MS (W3: the fake pauses this long before each event, as the API paces tokens; each event
# then arrives on its own, so per-read costs count 201 times per stream; default 0).

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORKLOAD="${WORKLOAD:-W3}"
UPSTREAM="${UPSTREAM:-plain}"
SECONDS_PER="${SECONDS_PER:-8}"
RECORD="${RECORD:-0}"
PACE_MS="${PACE_MS:-0}"
FAKE_TLS="$(fake_tls_of "$UPSTREAM")" || exit 2

bench_init
FAKE_CA="$BENCH_TMP/upstream-ca.pem"
need_tools perf wrk nginx python3 curl
build_bins
export BENCH_LUA_DIR="$BENCH_DIR/lua"

image=2048
[[ "$WORKLOAD" == W1 ]] && image=75000
FAKE_PORT="$(free_port)"
start_fake "$FAKE_PORT" "$image"
NGINX_PORT="$(free_port)"
NGINX_BUFFERING=on start_nginx "$NGINX_PORT" "$FAKE_PORT"
RT_PORT="$(free_port)"
start_rethread "$RT_PORT" "$FAKE_PORT" "$BENCH_TMP/rethread.log"

python3 - "$BENCH_TMP/w1.json" <<'EOF'
import json, sys
prompt = "Draw a lighthouse at dusk, watercolour, soft light. " * 40
json.dump({"model": "gpt-5", "input": [{"role": "user", "content": prompt[:1900]}],
           "tools": [{"type": "image_generation"}]}, open(sys.argv[1], "w"))
EOF
echo '{"model":"gpt-5","input":"Tell me a long story.","stream":true}' >"$BENCH_TMP/w3.json"
W3_SHAPE="rs$(printf ',msg%.0s' $(seq 14))"

# load PORT SECONDS → prints the number of requests completed.
load() {
    case "$WORKLOAD" in
        W1) BENCH_BODY="$BENCH_TMP/w1.json" BENCH_SHAPE=rs,ig,msg wrk -t1 -c1 -d"$2s" \
            -s "$BENCH_LUA_DIR/post.lua" "http://127.0.0.1:$1/v1/responses" |
            sed -n 's/^BENCH_JSON //p' | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])' ;;
        W3) python3 "$BENCH_DIR/py/sse_client.py" --port "$1" --body "$BENCH_TMP/w3.json" \
            --shape "$W3_SHAPE" --event-delay-ms "$PACE_MS" -c 1 --duration "$2" |
            sed -n 's/^BENCH_JSON //p' | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])' ;;
        *) die "WORKLOAD must be W1 or W3" ;;
    esac
}

EVENTS=task-clock,context-switches,cpu-migrations,page-faults,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait
printf '%s%s, %s upstream, c=1, %s s per proxy; per request:\n' "$WORKLOAD" "$( [[ $PACE_MS != 0 ]] && echo " paced ${PACE_MS} ms per event" )" "$UPSTREAM" "$SECONDS_PER"
printf '| proxy | requests | CPU µs | user µs | kernel µs | context switches | migrations | page faults | writes | reads | epoll_waits |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for proxy in nginx rethread; do
    port="$NGINX_PORT"
    pids="$(children "$NGINX_PID" | tr ' ' ',' | sed 's/,$//')"
    if [[ "$proxy" == rethread ]]; then
        port="$RT_PORT"
        pids="$RT_PID"
    fi
    # A fresh fake for each proxy: it keeps every turn it made, and slows as it grows. (Not over
    # TLS: a new fake has a new CA, which the running proxies do not trust.)
    [[ -z "$FAKE_TLS" ]] && restart_fake "$FAKE_PORT" "$image"
    load "$port" 1 >/dev/null # warm-up: connections, caches
    stat="$BENCH_TMP/stat-$proxy.txt"
    perf stat -x, -e "$EVENTS" -p "$pids" -o "$stat" -- sleep "$((SECONDS_PER + 1))" &
    perf_pid=$!
    sleep 0.5
    read -r user0 kernel0 < <(cpu_split ${pids//,/ })
    requests="$(load "$port" "$SECONDS_PER")"
    read -r user1 kernel1 < <(cpu_split ${pids//,/ })
    wait "$perf_pid" || true
    python3 - "$stat" "$proxy" "$requests" "$((user1 - user0))" "$((kernel1 - kernel0))" "$(getconf CLK_TCK)" <<'EOF'
import sys
path, proxy, n = sys.argv[1], sys.argv[2], max(int(sys.argv[3]), 1)
user, kernel = (int(t) * 1e6 / int(sys.argv[6]) / n for t in sys.argv[4:6])
v = {}
for line in open(path):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        v[f[2]] = float(f[0])
g = lambda *k: sum(v.get(x, 0) for x in k) / n
print(f"| {proxy} | {n} | {g('task-clock') * 1000:.0f} | {user:.0f} | {kernel:.0f} | {g('context-switches'):.1f} | {g('cpu-migrations'):.2f} | "
      f"{g('page-faults'):.2f} | {g('syscalls:sys_enter_write', 'syscalls:sys_enter_writev', 'syscalls:sys_enter_sendto'):.1f} | "
      f"{g('syscalls:sys_enter_read', 'syscalls:sys_enter_recvfrom'):.1f} | {g('syscalls:sys_enter_epoll_wait'):.1f} |")
EOF
done

if [[ "$RECORD" == 1 ]]; then
    data="$BENCH_TMP/rethread.perf"
    [[ -z "$FAKE_TLS" ]] && restart_fake "$FAKE_PORT" "$image"
    load "$RT_PORT" 1 >/dev/null
    perf record -F 1999 -g -p "$RT_PID" -o "$data" -- sleep "$((SECONDS_PER + 1))" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
    load "$RT_PORT" "$SECONDS_PER" >/dev/null
    wait "$perf_pid" || true
    echo
    echo "rethread, top symbols (self time, user and kernel):"
    perf report -i "$data" --no-children --sort dso,sym -g none --percent-limit 1 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -30
fi
