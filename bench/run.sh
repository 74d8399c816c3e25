#!/usr/bin/env bash
# bench/run.sh — rethread vs. no proxy vs. nginx, on loopback, in one command.
#
#   bench/run.sh                 # full run: ROUNDS=5 × DURATION=10s per path and workload
#   QUICK=1 bench/run.sh         # 2 rounds × 3 s, small W5 prefill: a smoke test of the harness
#   WORKLOADS="W1 W3" bench/run.sh
#
# For every workload it measures three paths against the same fake upstream — direct to the
# fake, through nginx (a plain streaming reverse proxy), through rethread — interleaved: round r
# runs the paths in an order rotated by r, so drift of a shared machine (other jobs, thermal,
# page cache) spreads over all paths instead of biasing the one measured last. Figures are
# medians over rounds. See bench/README.md for the workloads and how to read the table.
#
# Settings (environment): QUICK, ROUNDS, DURATION (seconds, "10" or "10s"), WARMUP (seconds
# before each measured run, not recorded), WORKLOADS, PREFILL (W5 ledger turns),
# PREFILL_MAX_SECONDS (time budget per store for the prefill), W5_IDS (turns the W5
# follow-ups name), W4_DIRECT / W5_DIRECT (raw|repaired: what the direct and nginx paths send,
# see below), REDIS (auto|0|1), BUILD (auto|0|1), FAKE_MEM_LIMIT_MB, WRK_TIMEOUT, PREFILL_CHUNK,
# BENCH_KEEP_TMP=1, UPSTREAM (plain|tls-h1|tls-h2), NGINX_BUF (0|1), W2_CONNS (a list: "1 64" runs W2c1 and W2c64),
# FAKE_H2_GOAWAY (over HTTP/2 the fake sends GOAWAY after this many streams of a connection, as
# nginx's default keepalive_requests: 1000; 0 never).
#
# UPSTREAM=tls-h1 / tls-h2: the fake serves HTTPS offering only HTTP/1.1 / only HTTP/2 (ALPN),
# with a test CA of its own; rethread reaches it with --upstream-ca, nginx with proxy_pass
# https:// and proxy_ssl_verify against the same CA (nginx speaks HTTP/1.1 to upstreams, so under
# tls-h2 it still gets HTTP/1.1 over TLS), and `direct` is wrk / the SSE client over TLS. The
# client side of nginx and rethread stays plain HTTP. The fake makes a new CA every time it
# starts, so over TLS nginx and rethread are restarted with it at every restart of the fake
# (before every measured run): W5 (whose prefilled ledger would be lost) is plain-only.
# NGINX_BUF=1 adds the path `nginx-buf`: a second nginx, the same but with proxy_buffering on.
#
# W4 and W5 send follow-ups that only rethread can repair. Sent raw to the fake (direct, nginx)
# they get its 400, which is far less work for the upstream than a turn; sent "repaired" they
# are the bytes rethread would forward, so the upstream does the same work on every path and
# the ratio is rethread's own cost. Defaults: W4 raw (as specified: a 5 MB body answered 400
# shows the cost of splicing and forwarding a large body), W5 repaired (equal work).

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
    ROUNDS="${ROUNDS:-2}"
    DURATION="${DURATION:-3}"
    PREFILL="${PREFILL:-50000}"
else
    ROUNDS="${ROUNDS:-5}"
    DURATION="${DURATION:-10}"
    PREFILL="${PREFILL:-1000000}"
fi
DURATION="${DURATION%s}"
WARMUP="${WARMUP:-1}"
WORKLOADS="${WORKLOADS:-W1 W2 W3 W4 W5}"
PREFILL_MAX_SECONDS="${PREFILL_MAX_SECONDS:-300}"
PREFILL_CHUNK="${PREFILL_CHUNK:-30}" # seconds of prefill between two restarts of the fake
W5_IDS="${W5_IDS:-1000}"
REDIS="${REDIS:-auto}"
W4_DIRECT="${W4_DIRECT:-raw}"
W5_DIRECT="${W5_DIRECT:-repaired}"
WRK_TIMEOUT="${WRK_TIMEOUT:-30s}" # wrk's default (2 s) would count slow W2/W4 answers as errors
UPSTREAM="${UPSTREAM:-plain}"
NGINX_BUF="${NGINX_BUF:-0}"
W2_CONNS="${W2_CONNS:-16}"
FAKE_TLS="$(fake_tls_of "$UPSTREAM")" || exit 2
if [[ -n "$FAKE_TLS" && " $WORKLOADS " == *" W5 "* ]]; then
    echo "UPSTREAM=$UPSTREAM: W5 runs over plain HTTP only (the fake's new CA at every restart means restarting rethread, which would drop W5's prefilled ledger); dropping W5" >&2
    WORKLOADS="$(echo " $WORKLOADS " | sed 's/ W5 / /; s/^ *//; s/ *$//')"
fi
PATHS=(direct nginx rethread)
[[ "$NGINX_BUF" == 1 ]] && PATHS=(direct nginx nginx-buf rethread)
# The fake keeps every turn it generated (see lib.sh, restart_fake): at full speed one 10 s run
# of W1 c=64 or W2 can make it hold ~10 GB. When its RSS passes this limit, the run is ended
# early (SIGINT: wrk and the SSE client stop and report what they measured) and the report says
# so. Default: half the memory available at the start, at most 10 GB.
FAKE_MEM_LIMIT_MB="${FAKE_MEM_LIMIT_MB:-$(awk '/^MemAvailable:/ {m = int($2 / 2048); print (m > 10000 ? 10000 : m)}' /proc/meminfo)}"

# Image sizes handed to the fake (raw bytes; the JSON carries base64, 4/3 larger).
W1_IMAGE=75000    # → a ~100 KB Responses object
W2_IMAGE=1100000  # → a ~1.47 MB base64 result
SMALL_IMAGE=2048  # the fake's default: W3, W4's first turn, W5

bench_init
FAKE_CA="$BENCH_TMP/upstream-ca.pem"
need_tools wrk nginx python3 curl
if [[ "$REDIS" != 0 && " $WORKLOADS " == *" W5 "* ]]; then
    if [[ "$REDIS" == 1 ]]; then
        need_tools redis-server redis-cli
    elif ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        log "redis-server not installed: W5 runs without the shared-store variant (REDIS=1 installs it)"
        REDIS=0
    fi
fi
build_bins

STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$BENCH_TMP/results.jsonl"
NOTES="$BENCH_TMP/notes.jsonl"
RUNS="$BENCH_TMP/runs"
mkdir -p "$RUNS"
REPORT="$BENCH_DIR/py/report.py"
SETUP="$BENCH_DIR/py/setup_turns.py"
SSE="$BENCH_DIR/py/sse_client.py"
export BENCH_LUA_DIR="$BENCH_DIR/lua"

note() { python3 "$REPORT" note "$NOTES" "$1" "$2"; }

note date "$(date -u '+%Y-%m-%d %H:%M UTC')"
note machine "$(machine_line)"
note git "$(git_line)"
# rethread reads RETHREAD_* settings from the environment (e.g. RETHREAD_WORKERS=1): name them.
rethread_env="$(env | grep -E '^RETHREAD_' | grep -v '^RETHREAD_TENANT_SECRET=' | sort | tr '\n' ' ' || true)"
note settings "UPSTREAM=$UPSTREAM${FAKE_TLS:+ (fake offers ALPN $FAKE_TLS only)} NGINX_BUF=$NGINX_BUF W2_CONNS=$W2_CONNS FAKE_MEM_LIMIT_MB=$FAKE_MEM_LIMIT_MB ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s WORKLOADS='$WORKLOADS' PREFILL=$PREFILL PREFILL_MAX_SECONDS=$PREFILL_MAX_SECONDS W5_IDS=$W5_IDS W4_DIRECT=$W4_DIRECT W5_DIRECT=$W5_DIRECT${rethread_env:+ rethread env: ${rethread_env% }}"
if [[ -n "$FAKE_TLS" ]]; then
    note upstream "HTTPS, the fake offering ALPN $FAKE_TLS only; rethread with --upstream-ca$( [[ $FAKE_TLS == h2 ]] && echo ' (HTTP/2)' || echo ' (HTTP/1.1)'); nginx proxy_pass https with proxy_ssl_verify, session reuse, keepalive 64 (HTTP/1.1 to the upstream$( [[ $FAKE_TLS == h2 ]] && echo ': nginx offers no ALPN, so the h2-only fake speaks HTTP/1.1 to it')); direct: wrk and the SSE client over TLS, HTTP/1.1 (no ALPN). The fake makes a new CA at every start, so nginx and rethread are restarted with it before every measured run (before its warm-up): peak RSS is that of a fresh rethread per run, and growth across rounds is not measured"
fi
[[ "$QUICK" == 1 ]] && note mode "QUICK mode (2 rounds × 3 s): a trial of the harness, not the reference run"

# ---------------------------------------------------------------------------------------------
# Request bodies

# W1: a ~2 KB request (a prompt padded to 2 KB, image tool declared).
python3 - "$BENCH_TMP/w1.json" <<'EOF'
import json, sys
prompt = "Draw a lighthouse at dusk, watercolour, soft light. " * 40
body = {"model": "gpt-5", "input": [{"role": "user", "content": prompt[:1900]}],
        "tools": [{"type": "image_generation"}]}
open(sys.argv[1], "w").write(json.dumps(body))
EOF
# W3: a streamed turn. One reasoning item and 14 messages make 201 events with the fake
# (3 response events + 2 for the reasoning item + 14 per message); counted again below.
echo '{"model":"gpt-5","input":"Tell me a long story.","stream":true}' >"$BENCH_TMP/w3.json"
W3_SHAPE="rs$(printf ',msg%.0s' $(seq 14))"
# W5 prefill: the cheapest first turn that teaches rethread one turn.
echo '{"model":"gpt-5","input":"hi"}' >"$BENCH_TMP/small.json"

# ---------------------------------------------------------------------------------------------
# Servers that live for the whole run: nginx in front of the fake's (fixed) port. The fake is
# restarted on that port before every measured run (see restart_fake in lib.sh).

FAKE_PORT="$(free_port)"
NGINX_PORT="$(free_port)"
NGINX2_PORT=""
NGINX2_PID=""
FAKE_PID=""
if [[ -n "$FAKE_TLS" ]]; then
    # nginx checks proxy_ssl_trusted_certificate when it starts: it needs the CA file there.
    start_fake "$FAKE_PORT" "$SMALL_IMAGE"
fi
start_nginx "$NGINX_PORT" "$FAKE_PORT"
if [[ "$NGINX_BUF" == 1 ]]; then
    NGINX2_PORT="$(free_port)"
    NGINX_PID1="$NGINX_PID"
    NGINX_BUFFERING=on start_nginx "$NGINX2_PORT" "$FAKE_PORT"
    NGINX2_PID="$NGINX_PID"
    NGINX_PID="$NGINX_PID1"
fi

RT_PID=""
RT_PORT=""
RT2_PID=""
RT2_PORT=""
REDIS_PID=""

# port_of PATH
port_of() {
    case "$1" in
        direct) echo "$FAKE_PORT" ;;
        nginx) echo "$NGINX_PORT" ;;
        nginx-buf) echo "$NGINX2_PORT" ;;
        rethread) echo "$RT_PORT" ;;
        rethread-redis) echo "$RT2_PORT" ;;
    esac
}

# proxy_pids PATH: the processes whose CPU is charged to the path.
proxy_pids() {
    case "$1" in
        direct) echo "" ;;
        nginx) echo "$NGINX_PID $(children "$NGINX_PID")" ;;
        nginx-buf) echo "$NGINX2_PID $(children "$NGINX2_PID")" ;;
        rethread) echo "$RT_PID" ;;
        rethread-redis) echo "$RT2_PID" ;;
    esac
}

# The rethread serving a path (setup turns are created through it), or the memory one.
rt_port_for() { [[ "$1" == rethread-redis ]] && echo "$RT2_PORT" || echo "$RT_PORT"; }

check_alive() {
    local name="$1" pid="$2" logf="$3"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) died; last lines of its log:"
        tail -30 "$logf" >&2 || true
        die "$name crashed during the benchmark"
    fi
}

# ---------------------------------------------------------------------------------------------
# Load generators

# guarded OUTFILE CMD...: runs a load generator with output to OUTFILE, ending it early (SIGINT)
# if the fake's RSS passes FAKE_MEM_LIMIT_MB; sets CUT to the fake's RSS (MB) when it did.
guarded() {
    local out="$1" gen rc=0
    shift
    CUT=""
    "$@" >"$out" 2>&1 &
    gen=$!
    track "$gen"
    while kill -0 "$gen" 2>/dev/null; do
        if [[ -n "$FAKE_PID" ]]; then
            local mb=$(($(rss_kb "$FAKE_PID") / 1024))
            if ((mb > FAKE_MEM_LIMIT_MB)); then
                [[ -z "$CUT" ]] && CUT="$mb"
                # Sent again at every poll: a signal that arrives before the generator has
                # installed its handler is ignored (background jobs start with SIGINT ignored).
                kill -INT "$gen" 2>/dev/null || true
            fi
        fi
        sleep 0.25
    done
    wait "$gen" || rc=$?
    untrack "$gen"
    return "$rc"
}

# url_of PORT: the Responses URL on that port; https for the fake when it serves TLS (wrk does
# not verify certificates; the SSE client and curl are given the CA).
url_of() {
    if [[ -n "$FAKE_TLS" && "$1" == "$FAKE_PORT" ]]; then
        echo "https://127.0.0.1:$1/v1/responses"
    else
        echo "http://127.0.0.1:$1/v1/responses"
    fi
}

# tls_args PORT: the SSE client's / curl's extra arguments to reach PORT (the CA for the fake).
sse_tls() { [[ -n "$FAKE_TLS" && "$1" == "$FAKE_PORT" ]] && echo "--tls-ca $FAKE_CA" || true; }
curl_tls() { [[ -n "$FAKE_TLS" && "$1" == "$FAKE_PORT" ]] && echo "--cacert $FAKE_CA" || true; }

# wrk_run PORT CONNS SECONDS LUA OUTFILE [ENV=VALUE...]: runs wrk, leaves its output in OUTFILE.
wrk_run() {
    local port="$1" conns="$2" secs="$3" lua="$4" out="$5"
    shift 5
    local threads=$((conns < 2 ? conns : 2)) # 2 cores: more wrk threads only steal CPU
    guarded "$out" env "$@" wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout "$WRK_TIMEOUT" \
        -s "$BENCH_LUA_DIR/$lua" "$(url_of "$port")" ||
        { cat "$out" >&2; die "wrk failed (see above)"; }
    grep -q '^BENCH_JSON' "$out" || { cat "$out" >&2; die "wrk printed no BENCH_JSON line"; }
}

# load WORKLOAD PATH SECONDS OUTFILE: one workload's load against one path.
load() {
    local wl="$1" path="$2" secs="$3" out="$4" port
    port="$(port_of "$path")"
    local plain=0 # 1: a direct/nginx path that gets the follow-up already repaired
    [[ "$path" == direct || "$path" == nginx* ]] && plain=1
    case "$wl" in
        W1c1) wrk_run "$port" 1 "$secs" post.lua "$out" BENCH_BODY="$BENCH_TMP/w1.json" BENCH_SHAPE=rs,ig,msg ;;
        W1c64) wrk_run "$port" 64 "$secs" post.lua "$out" BENCH_BODY="$BENCH_TMP/w1.json" BENCH_SHAPE=rs,ig,msg ;;
        W2c*) wrk_run "$port" "${wl#W2c}" "$secs" post.lua "$out" BENCH_BODY="$BENCH_TMP/w1.json" BENCH_SHAPE=rs,ig,msg ;;
        W3c1 | W3c64)
            local c=1
            [[ "$wl" == W3c64 ]] && c=64
            # shellcheck disable=SC2046
            guarded "$out" python3 "$SSE" --port "$port" $(sse_tls "$port") --body "$BENCH_TMP/w3.json" --shape "$W3_SHAPE" \
                -c "$c" --duration "$secs" || { cat "$out" >&2; die "sse_client failed"; }
            ;;
        W4)
            local body="$BENCH_TMP/w4.json"
            [[ $plain == 1 && "$W4_DIRECT" == repaired ]] && body="$BENCH_TMP/w4-repaired.json"
            wrk_run "$port" 4 "$secs" post.lua "$out" BENCH_BODY="$body" BENCH_COUNT_STATUS=1
            ;;
        W5)
            local rep=0
            [[ $plain == 1 && "$W5_DIRECT" == repaired ]] && rep=1
            wrk_run "$port" 64 "$secs" followup.lua "$out" BENCH_IDS="$BENCH_TMP/w5.ids" \
                BENCH_COUNT_STATUS=1 BENCH_REPAIRED=$rep
            ;;
    esac
}

image_of() {
    case "$1" in
        W1*) echo "$W1_IMAGE" ;;
        W2*) echo "$W2_IMAGE" ;;
        *) echo "$SMALL_IMAGE" ;;
    esac
}

# restart_upstream IMAGE_BYTES: a fresh fake on FAKE_PORT. Over TLS it comes with a new CA, so
# nginx (same ports) and rethread (a new port, same arguments) are restarted to trust it.
restart_upstream() {
    restart_fake "$FAKE_PORT" "$1"
    if [[ -n "$FAKE_TLS" ]]; then
        stop_proc "$NGINX_PID"
        start_nginx "$NGINX_PORT" "$FAKE_PORT"
        if [[ -n "$NGINX2_PID" ]]; then
            local keep="$NGINX_PID"
            stop_proc "$NGINX2_PID"
            NGINX_BUFFERING=on start_nginx "$NGINX2_PORT" "$FAKE_PORT"
            NGINX2_PID="$NGINX_PID"
            NGINX_PID="$keep"
        fi
        [[ -n "$RT_PID" ]] && new_rethread "$RT_WL" ${RT_ARGS[@]+"${RT_ARGS[@]}"}
    fi
    return 0
}

# fresh_upstream WORKLOAD PATH: a new fake, then what the run's requests need to exist in it.
fresh_upstream() {
    local wl="$1" path="$2"
    restart_upstream "$(image_of "$wl")"
    case "$wl" in
        W4)
            # A new image turn (through rethread, so it is learned) and the follow-up naming it.
            python3 "$SETUP" w4body --port "$(rt_port_for "$path")" --out "$BENCH_TMP/w4.json" \
                --out-repaired "$BENCH_TMP/w4-repaired.json" --cache "$BENCH_TMP/w4-image.b64" ||
                die "W4 setup failed"
            ;;
        W5)
            python3 "$SETUP" turns --port "$(rt_port_for "$path")" --count "$W5_IDS" \
                --out "$BENCH_TMP/w5.ids" || die "W5 setup failed"
            ;;
    esac
}

# expectation WORKLOAD PATH: raw W4/W5 follow-ups are only repaired through rethread; on the
# direct and nginx paths the fake answers its 400 ("… without its required 'reasoning' item").
expectation() {
    if [[ "$2" == direct || "$2" == nginx* ]] &&
        [[ ("$1" == W4 && "$W4_DIRECT" == raw) || ("$1" == W5 && "$W5_DIRECT" == raw) ]]; then
        echo 400
    else
        echo 2xx
    fi
}

# measure WORKLOAD ROUND PATH: one measured run, appended to $RESULTS.
measure() {
    local wl="$1" round="$2" path="$3"
    local tag out pids cpu0 cpu1 w0 w1 f0 f1 sampler="" rssf="" peak=0 line reqs
    tag="$wl-r$round-$path"
    out="$RUNS/$tag.txt"
    fresh_upstream "$wl" "$path"
    if ((WARMUP > 0)); then
        load "$wl" "$path" "$WARMUP" "$RUNS/$tag.warmup.txt"
    fi
    pids="$(proxy_pids "$path")"
    if [[ "$path" == rethread* ]]; then
        local rpid="$RT_PID"
        [[ "$path" == rethread-redis ]] && rpid="$RT2_PID"
        rssf="$RUNS/$tag.rss.csv"
        rss_sampler "$rpid" "$rssf" 0.2 &
        sampler=$!
        track "$sampler"
    fi
    local rcpu0=0
    [[ "$path" == rethread-redis && -n "$REDIS_PID" ]] && rcpu0="$(cpu_ticks "$REDIS_PID")"
    cpu0="$(cpu_ticks $pids)"
    w0="$(write_calls $pids)"
    f0="$(cpu_ticks "$FAKE_PID")"
    load "$wl" "$path" "$DURATION" "$out"
    local cut="$CUT"
    cpu1="$(cpu_ticks $pids)"
    w1="$(write_calls $pids)"
    f1="$(cpu_ticks "$FAKE_PID")"
    [[ -n "$sampler" ]] && stop_proc "$sampler"
    [[ -n "$rssf" && -s "$rssf" ]] && peak="$(cut -d, -f2 "$rssf" | sort -n | tail -1)"
    check_alive rethread "$RT_PID" "$BENCH_TMP/rethread-$wl.log"
    check_alive rethread-redis "$RT2_PID" "$BENCH_TMP/rethread-redis-$wl.log"
    check_alive nginx "$NGINX_PID" "$BENCH_TMP/nginx-$NGINX_PORT/error.log"
    check_alive fake "$FAKE_PID" "$BENCH_TMP/fake-$FAKE_PORT.out"

    line="$(grep '^BENCH_JSON' "$out" | tail -1)"
    reqs="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1].split(" ",1)[1])["requests"])' "$line")"
    local per1k="null" fper1k="null" writes="null"
    if ((reqs > 0)); then
        if [[ -n "$pids" ]]; then
            per1k="$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.4f", t / hz / n * 1000}')"
            writes="$(awk -v w=$((w1 - w0)) -v n="$reqs" 'BEGIN {printf "%.1f", w / n}')"
        fi
        fper1k="$(awk -v t=$((f1 - f0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {printf "%.4f", t / hz / n * 1000}')"
    fi
    python3 "$REPORT" add "$RESULTS" "$wl" "$round" "$path" "$line" \
        expect="$(expectation "$wl" "$path")" proxy_cpu_per_1k="$per1k" fake_cpu_per_1k="$fper1k" \
        proxy_writes_per_req="$writes" cut_at_fake_mb="${cut:-null}" \
        rss_peak_kb="$peak"
    if [[ "$path" == rethread-redis && -n "$REDIS_PID" && $reqs -gt 0 ]]; then
        REDIS_TICKS=$((REDIS_TICKS + $(cpu_ticks "$REDIS_PID") - rcpu0))
        REDIS_REQS=$((REDIS_REQS + reqs))
    fi
    log "  $tag: $(python3 "$REPORT" brief "$line")$( ((peak > 0)) && echo ", rethread RSS peak $((peak / 1024)) MB")$([[ -n "$cut" ]] && echo " (ended early: the fake reached $cut MB)")"
}

# rounds WORKLOAD PATH...: ROUNDS rounds over the paths, the order rotated each round.
rounds() {
    local wl="$1"
    shift
    local paths=("$@") n=$# r i
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((i = 0; i < n; i++)); do
            measure "$wl" "$r" "${paths[$(((i + r - 1) % n))]}"
        done
    done
}

# new_rethread WORKLOAD [ARGS...]: a fresh rethread (memory store) for one workload, so its
# peak RSS and growth belong to that workload alone.
new_rethread() {
    local wl="$1"
    shift
    RT_WL="$wl"
    RT_ARGS=("$@")
    [[ -n "$RT_PID" ]] && stop_proc "$RT_PID"
    RT_PORT="$(free_port)"
    start_rethread "$RT_PORT" "$FAKE_PORT" "$BENCH_TMP/rethread-$wl.log" "$@"
}

end_workload() {
    local wl="$1"
    if [[ -n "$FAKE_TLS" ]]; then
        # Over TLS rethread was restarted before every run: the last process may have served none.
        note "$wl.rethread VmHWM at the end" "not measured over TLS (a fresh rethread per run: see the peak RSS column)"
    else
        note "$wl.rethread VmHWM at the end" "$(($(hwm_kb "$RT_PID") / 1024)) MB"
    fi
}

# ---------------------------------------------------------------------------------------------
# Checks made once per workload before measuring (through rethread, on a fresh fake)

# post_check PORT BODYFILE SHAPE → "status size inserted"
post_check() {
    local port="$1" body="$2" shape="${3:-}"
    local hdr=()
    [[ -n "$shape" ]] && hdr=(-H "x-fake-shape: $shape")
    # shellcheck disable=SC2046
    curl -sS $(curl_tls "$port") -o "$BENCH_TMP/check.body" -D "$BENCH_TMP/check.head" -w '%{http_code} %{size_download}' \
        -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' "${hdr[@]}" \
        --data-binary "@$body" "$(url_of "$port")"
    printf ' %s\n' "$(awk -F': ' 'tolower($1) == "x-rethread-inserted" {gsub(/\r/, "", $2); print $2}' "$BENCH_TMP/check.head")"
}

check_workload() {
    local wl="$1" status size ins
    case "$wl" in
        W1c1)
            restart_upstream "$W1_IMAGE"
            read -r status size ins <<<"$(post_check "$RT_PORT" "$BENCH_TMP/w1.json" rs,ig,msg)"
            [[ "$status" == 200 ]] || die "W1 check: HTTP $status through rethread"
            note "W1c1.response size" "$size bytes (request $(stat -c %s "$BENCH_TMP/w1.json") bytes)"
            ;;
        W2c*)
            restart_upstream "$W2_IMAGE"
            read -r status size ins <<<"$(post_check "$RT_PORT" "$BENCH_TMP/w1.json" rs,ig,msg)"
            [[ "$status" == 200 ]] || die "W2 check: HTTP $status through rethread"
            note "$wl.response size" "$size bytes"
            ;;
        W3c1)
            restart_upstream "$SMALL_IMAGE"
            curl -sS -N -H 'Authorization: Bearer bench' -H 'Content-Type: application/json' \
                -H "x-fake-shape: $W3_SHAPE" --data-binary "@$BENCH_TMP/w3.json" \
                "http://127.0.0.1:$RT_PORT/v1/responses" >"$BENCH_TMP/w3.sse"
            local events last
            events="$(grep -c '^event:' "$BENCH_TMP/w3.sse" || true)"
            last="$(grep '^event:' "$BENCH_TMP/w3.sse" | tail -1)"
            [[ "$last" == "event: response.completed" ]] || die "W3 check: stream ends with '$last'"
            note "W3c1.events per stream" "$events (shape rs + 14 msg; $(stat -c %s "$BENCH_TMP/w3.sse") bytes)"
            # Does the upstream stall small writes (Nagle without TCP_NODELAY)? On a kept-alive
            # connection every streamed answer then waits for the receiver's delayed ACK
            # (~40 ms on Linux). The same 20 streams with and without the client acknowledging
            # at once tell: a large difference means W3 measures that stall on every path.
            local plain quick
            # shellcheck disable=SC2046
            plain="$(python3 "$SSE" --port "$FAKE_PORT" $(sse_tls "$FAKE_PORT") --body "$BENCH_TMP/w3.json" --shape "$W3_SHAPE" -c 1 --requests 20 |
                python3 -c 'import json,sys; print(json.loads(sys.stdin.read().split(" ",1)[1])["ttfb_p50_us"])')"
            # shellcheck disable=SC2046
            quick="$(python3 "$SSE" --port "$FAKE_PORT" $(sse_tls "$FAKE_PORT") --body "$BENCH_TMP/w3.json" --shape "$W3_SHAPE" -c 1 --requests 20 --quickack |
                python3 -c 'import json,sys; print(json.loads(sys.stdin.read().split(" ",1)[1])["ttfb_p50_us"])')"
            if ((plain > 20000 && quick * 4 < plain)); then
                note "W3c1.upstream Nagle stall" "YES: direct TTFB p50 $((plain / 1000)) ms, $((quick / 1000)) ms when the client ACKs at once — the fake writes small SSE chunks without TCP_NODELAY, so each stream on a kept-alive connection waits ~40 ms for a delayed ACK (the proxies' upstream sockets too); W3 latencies are dominated by it until the fake sets TCP_NODELAY"
            else
                note "W3c1.upstream Nagle stall" "no (direct TTFB p50 $((plain / 1000)) ms; $((quick / 1000)) ms with immediate ACKs)"
            fi
            ;;
        W4)
            fresh_upstream W4 rethread
            read -r status size ins <<<"$(post_check "$RT_PORT" "$BENCH_TMP/w4.json")"
            [[ "$status" == 200 && "$ins" == 2 ]] ||
                die "W4 check: through rethread HTTP $status, x-rethread-inserted '${ins}' (want 200 and 2)"
            read -r status size _ <<<"$(post_check "$FAKE_PORT" "$BENCH_TMP/w4.json")"
            [[ "$status" == 400 ]] || die "W4 check: raw follow-up sent direct: HTTP $status (want the fake's 400)"
            local raw400
            raw400="$status ($(head -c 160 "$BENCH_TMP/check.body"))"
            read -r status size _ <<<"$(post_check "$FAKE_PORT" "$BENCH_TMP/w4-repaired.json")"
            [[ "$status" == 200 ]] || die "W4 check: pre-repaired follow-up sent direct: HTTP $status (want 200)"
            note "W4.check" "through rethread: HTTP 200, x-rethread-inserted: 2; raw follow-up sent direct: HTTP $raw400; pre-repaired sent direct: HTTP 200"
            note "W4.direct and nginx send" "the $W4_DIRECT follow-up (W4_DIRECT=$W4_DIRECT)$([[ $W4_DIRECT == raw ]] && echo ': they get the fake'"'"'s 400, so the ratio shows the cost of splicing, forwarding and capturing, not equal work')"
            note "W4.request size" "$(stat -c %s "$BENCH_TMP/w4.json") bytes"
            ;;
        W5)
            local p
            for p in rethread ${RT2_PORT:+rethread-redis}; do
                fresh_upstream W5 "$p"
                head -1 "$BENCH_TMP/w5.ids" |
                    awk '{printf "{\"model\":\"gpt-5\",\"input\":[{\"role\":\"user\",\"content\":\"Now make it blue.\"},{\"type\":\"image_generation_call\",\"id\":\"%s\"}]}", $2}' \
                        >"$BENCH_TMP/w5-one.json"
                read -r status size ins <<<"$(post_check "$(rt_port_for "$p")" "$BENCH_TMP/w5-one.json")"
                [[ "$status" == 200 && "$ins" == 2 ]] ||
                    die "W5 check ($p): HTTP $status, x-rethread-inserted '${ins}' (want 200 and 2)"
            done
            # The pre-repaired follow-up the direct/nginx paths send must be accepted as it is.
            sed -n 2p "$BENCH_TMP/w5.ids" |
                awk '{printf "{\"model\":\"gpt-5\",\"input\":[{\"role\":\"user\",\"content\":\"Now make it blue.\"},{\"type\":\"item_reference\",\"id\":\"%s\"},{\"type\":\"image_generation_call\",\"id\":\"%s\"},{\"type\":\"item_reference\",\"id\":\"%s\"}]}", $1, $2, $3}' \
                    >"$BENCH_TMP/w5-repaired.json"
            read -r status size ins <<<"$(post_check "$FAKE_PORT" "$BENCH_TMP/w5-repaired.json")"
            [[ "$status" == 200 ]] || die "W5 check: pre-repaired follow-up sent direct: HTTP $status (want 200)"
            note "W5.check" "follow-up through rethread${RT2_PORT:+ (both stores)}: HTTP 200, x-rethread-inserted: 2; pre-repaired sent direct: HTTP 200"
            note "W5.direct and nginx send" "the $W5_DIRECT follow-up (W5_DIRECT=$W5_DIRECT)$([[ $W5_DIRECT == repaired ]] && echo ': the bytes rethread forwards, so the upstream does the same work on every path' || echo ': they get the fake'"'"'s 400 (not equal work)')"
            ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# W5's prefill: PREFILL first turns taught to a rethread, within PREFILL_MAX_SECONDS.

# prefill PORT LABEL: wrk (c=64) sends cheap first turns in chunks of PREFILL_CHUNK seconds;
# the fake is restarted between chunks (it would otherwise keep ~17 KB per turn: 17 GB for a
# million). Progress is rethread's own count of learned turns.
prefill() {
    local port="$1" label="$2" start now learned=0 chunk rate remaining reqs=0 bad=0 line r b
    start="$(date +%s)"
    while :; do
        now="$(date +%s)"
        learned="$(metric "$port" rethread_turns_learned_total)"
        ((learned >= PREFILL)) && break
        remaining=$((PREFILL_MAX_SECONDS - (now - start)))
        ((remaining <= 0)) && break
        chunk="$PREFILL_CHUNK"
        # The first chunk is short: it measures the rate the next ones are sized with.
        ((learned == 0)) && chunk=5
        ((chunk > remaining)) && chunk="$remaining"
        if ((now > start && learned > 0)); then
            rate=$((learned / (now - start)))
            local need=$(((PREFILL - learned) / (rate > 0 ? rate : 1) + 1))
            ((need < chunk)) && chunk="$need"
        fi
        restart_fake "$FAKE_PORT" "$SMALL_IMAGE"
        wrk_run "$port" 64 "$chunk" post.lua "$RUNS/prefill-$label.txt" \
            BENCH_BODY="$BENCH_TMP/small.json" BENCH_SHAPE=rs,msg
        line="$(grep '^BENCH_JSON' "$RUNS/prefill-$label.txt")"
        read -r r b <<<"$(python3 -c '
import json, sys
r = json.loads(sys.argv[1].split(" ", 1)[1])
print(r["requests"], r["err_status"] + r["err_read"] + r["err_connect"] + r["err_write"] + r["err_timeout"])' "$line")"
        reqs=$((reqs + r))
        bad=$((bad + b))
        log "  prefill $label: $(metric "$port" rethread_turns_learned_total) turns learned"
    done
    # Shared-store writes complete after the response: wait until the count settles.
    local prev=-1
    while learned="$(metric "$port" rethread_turns_learned_total)"; ((learned != prev)); do
        prev="$learned"
        sleep 1
    done
    local secs=$(($(date +%s) - start))
    ((secs < 1)) && secs=1
    note "W5.prefill ($label)" "$learned turns in ${secs}s ($((learned / secs)) turns/s through rethread at c=64, fake restarted every ${PREFILL_CHUNK}s)$( ((learned < PREFILL)) && echo "; PREFILL=$PREFILL did not fit in PREFILL_MAX_SECONDS=$PREFILL_MAX_SECONDS")"
    if ((reqs > 0 && bad * 1000 > reqs)); then
        die "W5 prefill ($label): $bad of $reqs requests failed"
    fi
    PREFILLED="$learned"
}

# ---------------------------------------------------------------------------------------------
# The workloads

REDIS_TICKS=0
REDIS_REQS=0
START_ALL="$(date +%s)"
for wl in $WORKLOADS; do
    case "$wl" in
        W1)
            for sub in W1c1 W1c64; do
                log "$sub: ${ROUNDS} rounds × ${DURATION}s × ${#PATHS[@]} paths"
                new_rethread "$sub"
                check_workload "$sub"
                rounds "$sub" "${PATHS[@]}"
                end_workload "$sub"
            done
            ;;
        W2)
            for conns in $W2_CONNS; do
                sub="W2c$conns"
                log "$sub: ${ROUNDS} rounds × ${DURATION}s × ${#PATHS[@]} paths"
                new_rethread "$sub"
                check_workload "$sub"
                rounds "$sub" "${PATHS[@]}"
                end_workload "$sub"
                # Growth across rounds: the peak RSS of each rethread round, in order.
                note "$sub.rethread peak RSS per round (MB)$([[ -n "$FAKE_TLS" ]] && echo ', a fresh rethread each run over TLS')" "$(python3 - "$RESULTS" "$sub" <<'EOF'
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
peaks = [r["rss_peak_kb"] // 1024 for r in rs if r["workload"] == sys.argv[2] and r["path"] == "rethread"]
grow = len(peaks) > 1 and all(b >= a for a, b in zip(peaks, peaks[1:])) and peaks[-1] > peaks[0] * 1.1
print(", ".join(map(str, peaks)) + (" — grows every round (+%d%%)" % ((peaks[-1] / peaks[0] - 1) * 100) if grow
      else " — no growth across rounds" if peaks else ""))
EOF
)"
            done
            ;;
        W3)
            for sub in W3c1 W3c64; do
                log "$sub: ${ROUNDS} rounds × ${DURATION}s × ${#PATHS[@]} paths"
                new_rethread "$sub"
                check_workload "$sub"
                rounds "$sub" "${PATHS[@]}"
                end_workload "$sub"
            done
            ;;
        W4)
            log "W4: ${ROUNDS} rounds × ${DURATION}s × ${#PATHS[@]} paths"
            new_rethread W4
            check_workload W4
            rounds W4 "${PATHS[@]}"
            end_workload W4
            ;;
        W5)
            log "W5: prefill $PREFILL turns (at most ${PREFILL_MAX_SECONDS}s per store), then ${ROUNDS} rounds × ${DURATION}s"
            new_rethread W5
            prefill "$RT_PORT" memory
            note "W5.rethread RSS after prefill (memory store)" "$(($(rss_kb "$RT_PID") / 1024)) MB for $PREFILLED turns"
            paths=("${PATHS[@]}")
            if [[ "$REDIS" != 0 ]]; then
                REDIS_PORT="$(free_port)"
                start_redis "$REDIS_PORT"
                RT2_PORT="$(free_port)"
                # start_rethread sets RT_PID; keep the memory-store instance's id aside.
                mem_pid="$RT_PID"
                RETHREAD_TENANT_SECRET=bench start_rethread "$RT2_PORT" "$FAKE_PORT" \
                    "$BENCH_TMP/rethread-redis-W5.log" --store "redis://127.0.0.1:$REDIS_PORT/0"
                RT2_PID="$RT_PID"
                RT_PID="$mem_pid"
                prefill "$RT2_PORT" redis
                note "W5.redis-server memory after prefill" "$(redis-cli -p "$REDIS_PORT" info memory | awk -F: '/^used_memory_human/ {gsub(/\r/, "", $2); print $2}') for $(redis-cli -p "$REDIS_PORT" dbsize) keys"
                paths+=(rethread-redis)
            fi
            check_workload W5
            rounds W5 "${paths[@]}"
            end_workload W5
            note "W5.rethread RSS at the end (memory store)" "$(($(rss_kb "$RT_PID") / 1024)) MB, ledger $(metric "$RT_PORT" rethread_ledger_turns) turns, $(metric "$RT_PORT" rethread_ledger_evictions) evicted"
            note "W5.cold-fallback retries (memory store)" "$(metric "$RT_PORT" rethread_fallback_retries_total)"
            if ((REDIS_REQS > 0)); then
                note "W5.cold-fallback retries (redis store)" "$(metric "$RT2_PORT" rethread_fallback_retries_total) (a lookup that times out — store_timeout, 10 ms by default — goes on without memory; the upstream's 400 then names the reasoning item and rethread retries)"
                note "W5.redis_cpu_per_1k" "$(awk -v t="$REDIS_TICKS" -v hz="$CLK_TCK" -v n="$REDIS_REQS" 'BEGIN {printf "%.4f", t / hz / n * 1000}')"
                note "W5.rethread-redis store errors" "$(metric "$RT2_PORT" rethread_store_errors_total)"
            fi
            ;;
        *) die "unknown workload $wl (known: W1 W2 W3 W4 W5)" ;;
    esac
done
note "total time" "$(($(date +%s) - START_ALL)) s of measurement (after the build)"

# ---------------------------------------------------------------------------------------------
# Report

OUT_MD="$OUT_DIR/results-$STAMP.md"
cp "$RESULTS" "$OUT_DIR/results-$STAMP.jsonl"
rc=0
python3 "$REPORT" render "$RESULTS" "$NOTES" "$OUT_MD" || rc=$?
log "wrote $OUT_MD"
((rc == 0)) || log "some runs broke their expectation: see FAILURES above"
exit "$rc"
