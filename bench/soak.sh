#!/usr/bin/env bash
# bench/soak.sh — a bounded soak of rethread: every request kind of bench/run.sh at once, c=64.
#
#   bench/soak.sh                      # 180 s of load
#   SOAK_SECONDS=600 bench/soak.sh
#
# Five wrk processes run side by side through one rethread (memory store), 64 connections in
# all: W1 first turns with a ~100 KB answer (16), W2 image turns with a 1.5 MB result (4), W3
# streamed turns of ~200 events (16), W4 follow-ups with a 5 MB input image needing repair (4),
# W5 repair-needed follow-ups (24). rethread's RSS is sampled every second to
# bench/out/soak-rss.csv. At the end: total requests, errors (any answer but 2xx, or a socket
# error — 0 expected, since every kind is valid through rethread), and RSS after warm-up vs at
# the end. Exits non-zero when errors > 0, rethread died, or RSS grew by more than 20% after
# warm-up.
#
# Why the load comes in segments (SOAK_SEGMENT seconds, default 10): the fake upstream keeps
# every turn it generated, image results included (~7.5 MB per 1.5 MB image turn), and would
# fill the machine's memory within a minute (~8 GB per 15 s of this mix here; a segment is also
# ended early if the fakes pass FAKE_MEM_LIMIT_MB). Between segments the load stops, the fakes are
# restarted with nothing in flight (so no request fails because of it), and the turns the
# follow-ups name are created anew. rethread itself runs through the whole soak.
#
# Why a fixed ledger capacity and a prefill: rethread legitimately grows while its ledger fills
# (~0.6 KB per turn up to --capacity, default a million turns). To see leaks rather than the
# ledger filling, the soak's rethread runs with --capacity SOAK_CAPACITY (default 50000) and is
# filled to it before the clock starts, so every turn learned during the soak evicts one.
#
# Settings: SOAK_SECONDS (180), SOAK_SEGMENT (10), FAKE_MEM_LIMIT_MB, SOAK_CAPACITY (50000), SOAK_MAX_GROWTH (20,
# percent), BUILD, BENCH_KEEP_TMP.

set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SOAK_SECONDS="${SOAK_SECONDS:-180}"
SOAK_SECONDS="${SOAK_SECONDS%s}"
SOAK_SEGMENT="${SOAK_SEGMENT:-10}"
# A segment ends early (SIGINT to its wrk processes, which then report) if the two fakes together
# pass this many MB: half the memory available at the start, at most 10 GB.
FAKE_MEM_LIMIT_MB="${FAKE_MEM_LIMIT_MB:-$(awk '/^MemAvailable:/ {m = int($2 / 2048); print (m > 10000 ? 10000 : m)}' /proc/meminfo)}"
SOAK_CAPACITY="${SOAK_CAPACITY:-50000}"
SOAK_MAX_GROWTH="${SOAK_MAX_GROWTH:-20}"

bench_init
need_tools wrk nginx python3 curl
build_bins
export BENCH_LUA_DIR="$BENCH_DIR/lua"
SETUP="$BENCH_DIR/py/setup_turns.py"
RSS_CSV="$OUT_DIR/soak-rss.csv"
RUNS="$BENCH_TMP/runs"
mkdir -p "$RUNS"

# Bodies (as in run.sh).
python3 - "$BENCH_TMP/w1.json" <<'EOF'
import json, sys
prompt = "Draw a lighthouse at dusk, watercolour, soft light. " * 40
open(sys.argv[1], "w").write(json.dumps({"model": "gpt-5", "input": [{"role": "user", "content": prompt[:1900]}],
                                         "tools": [{"type": "image_generation"}]}))
EOF
echo '{"model":"gpt-5","input":"Tell me a long story.","stream":true}' >"$BENCH_TMP/w3.json"
echo '{"model":"gpt-5","input":"hi"}' >"$BENCH_TMP/small.json"
W3_SHAPE="rs$(printf ',msg%.0s' $(seq 14))"

# Two fakes behind an nginx router: "small" (75 KB images: W1, and the first turns of W4/W5,
# W3) and "big" (1.1 MB raw images: W2, chosen by the x-soak-upstream header). rethread's
# upstream is the router.
SMALL_PORT="$(free_port)"
BIG_PORT="$(free_port)"
ROUTER_PORT="$(free_port)"
RT_PORT="$(free_port)"
start_nginx "$ROUTER_PORT" "$SMALL_PORT" "$BIG_PORT"
SMALL_PID=""
BIG_PID=""
restart_fakes() {
    [[ -n "$SMALL_PID" ]] && stop_proc "$SMALL_PID"
    [[ -n "$BIG_PID" ]] && stop_proc "$BIG_PID"
    start_fake "$SMALL_PORT" 75000
    SMALL_PID="$FAKE_PID"
    start_fake "$BIG_PORT" 1100000
    BIG_PID="$FAKE_PID"
    sleep 0.2
}
restart_fakes
start_rethread "$RT_PORT" "$ROUTER_PORT" "$BENCH_TMP/rethread.log" --capacity "$SOAK_CAPACITY"

# Fill the ledger to capacity (cheap first turns), restarting the small fake every 20 s.
log "filling rethread's ledger to its capacity ($SOAK_CAPACITY turns)"
while (($(metric "$RT_PORT" rethread_turns_learned_total) < SOAK_CAPACITY)); do
    left=$((SOAK_CAPACITY - $(metric "$RT_PORT" rethread_turns_learned_total)))
    secs=$((left / 2000 + 1))
    ((secs > 20)) && secs=20
    env BENCH_BODY="$BENCH_TMP/small.json" BENCH_SHAPE=rs,msg wrk -t2 -c64 -d"${secs}s" \
        -s "$BENCH_LUA_DIR/post.lua" "http://127.0.0.1:$RT_PORT/v1/responses" >"$RUNS/prefill.txt" 2>&1 ||
        die "prefill wrk failed"
    restart_fakes
done
log "ledger: $(metric "$RT_PORT" rethread_ledger_turns) turns"

# kind → "connections lua extra-env..." (the W4/W5 kinds count statuses exactly; the others
# have large bodies, so they rely on wrk's own count of statuses > 399 and socket errors).
declare -A KIND_CONNS=([W1]=16 [W2]=4 [W3]=16 [W4]=4 [W5]=24)
KINDS=(W1 W2 W3 W4 W5)
declare -A TOTAL=() ERRORS=()
for k in "${KINDS[@]}"; do TOTAL[$k]=0; ERRORS[$k]=0; done

start_kind() {
    local kind="$1" secs="$2" out="$3" c="${KIND_CONNS[$1]}"
    local envs=() lua=post.lua
    case "$kind" in
        W1) envs=(BENCH_BODY="$BENCH_TMP/w1.json" "BENCH_SHAPE=rs,ig,msg") ;;
        W2) envs=(BENCH_BODY="$BENCH_TMP/w1.json" "BENCH_SHAPE=rs,ig,msg" BENCH_EXTRA_HEADER="x-soak-upstream: big") ;;
        W3) envs=(BENCH_BODY="$BENCH_TMP/w3.json" BENCH_SHAPE="$W3_SHAPE") ;;
        W4) envs=(BENCH_BODY="$BENCH_TMP/w4.json" BENCH_COUNT_STATUS=1) ;;
        W5) envs=(BENCH_IDS="$BENCH_TMP/w5.ids" BENCH_COUNT_STATUS=1) lua=followup.lua ;;
    esac
    env "${envs[@]}" wrk -t1 -c"$c" -d"${secs}s" --timeout 60s -s "$BENCH_LUA_DIR/$lua" \
        "http://127.0.0.1:$RT_PORT/v1/responses" >"$out" 2>&1 &
    WRK_PID=$!
    track "$WRK_PID"
}

# RSS every second, for the whole soak.
echo "elapsed_s,rss_kb" >"$RSS_CSV"
T0="$(date +%s%3N)"
(
    while kill -0 "$RT_PID" 2>/dev/null; do
        printf '%s,%s\n' "$(awk -v t0="$T0" -v now="$(date +%s%3N)" 'BEGIN {printf "%.1f", (now - t0) / 1000}')" \
            "$(rss_kb "$RT_PID")" >>"$RSS_CSV"
        sleep 1
    done
) &
SAMPLER=$!
track "$SAMPLER"

log "soak: ${SOAK_SECONDS}s of load in segments of ${SOAK_SEGMENT}s, c=64 (W1 16, W2 4, W3 16, W4 4, W5 24)"
done_s=0
seg=0
cut_segments=0
cut_this=0
while ((done_s < SOAK_SECONDS)); do
    secs="$SOAK_SEGMENT"
    ((secs > SOAK_SECONDS - done_s)) && secs=$((SOAK_SECONDS - done_s))
    seg=$((seg + 1))
    restart_fakes
    python3 "$SETUP" w4body --port "$RT_PORT" --out "$BENCH_TMP/w4.json" --cache "$BENCH_TMP/w4-image.b64" ||
        die "W4 setup failed"
    python3 "$SETUP" turns --port "$RT_PORT" --count 1000 --out "$BENCH_TMP/w5.ids" || die "W5 setup failed"
    pids=()
    for k in "${KINDS[@]}"; do
        start_kind "$k" "$secs" "$RUNS/seg$seg-$k.txt"
        pids+=("$WRK_PID")
    done
    # Wait for the segment's wrk processes, ending them early if the fakes grow too large.
    while :; do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        if ((($(rss_kb "$SMALL_PID") + $(rss_kb "$BIG_PID")) / 1024 > FAKE_MEM_LIMIT_MB)); then
            ((cut_this)) || { cut_segments=$((cut_segments + 1)); cut_this=1; }
            for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
        fi
        sleep 0.25
    done
    cut_this=0
    for p in "${pids[@]}"; do
        wait "$p" || true
        untrack "$p"
    done
    kill -0 "$RT_PID" 2>/dev/null || { tail -30 "$BENCH_TMP/rethread.log" >&2; die "rethread died during segment $seg"; }
    line=""
    for k in "${KINDS[@]}"; do
        outf="$RUNS/seg$seg-$k.txt"
        grep -q '^BENCH_JSON' "$outf" || { cat "$outf" >&2; die "wrk ($k) printed no result"; }
        read -r n e <<<"$(python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().split("BENCH_JSON", 1)[1].splitlines()[0])
sock = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
bad = (r["requests"] - r["s2xx"]) if r["counted"] else r["err_status"]
print(r["requests"], bad + sock)' "$outf")"
        TOTAL[$k]=$((TOTAL[$k] + n))
        ERRORS[$k]=$((ERRORS[$k] + e))
        line+=" $k $n"
        ((e > 0)) && line+=" ($e errors)"
    done
    done_s=$((done_s + secs))
    log "  segment $seg (${done_s}s):$line; rethread RSS $(($(rss_kb "$RT_PID") / 1024)) MB, fakes $((($(rss_kb "$SMALL_PID") + $(rss_kb "$BIG_PID")) / 1024)) MB"
done
stop_proc "$SAMPLER"

# ---------------------------------------------------------------------------------------------
# Verdict

total=0
errors=0
for k in "${KINDS[@]}"; do
    total=$((total + TOTAL[$k]))
    errors=$((errors + ERRORS[$k]))
done
read -r after_warmup at_end verdict <<<"$(python3 - "$RSS_CSV" "$SOAK_MAX_GROWTH" <<'EOF'
import csv, sys
rows = [(float(r["elapsed_s"]), int(r["rss_kb"])) for r in csv.DictReader(open(sys.argv[1]))]
limit = float(sys.argv[2])
end = rows[-1][0] if rows else 0
# RSS moves with the bodies in flight (5 MB requests, 1.5 MB answers), so compare the highest
# RSS just after warm-up (20–40 % of the soak) with the highest over the last 20 %.
def peak(lo, hi):
    vals = [v for t, v in rows if lo * end <= t <= hi * end]
    return max(vals) if vals else 0
a, b = peak(0.2, 0.4), peak(0.8, 1.0)
grew = a > 0 and (b - a) * 100 / a > limit
print(a, b, "GREW" if grew else "ok")
EOF
)"
growth="$(awk -v a="$after_warmup" -v b="$at_end" 'BEGIN {printf "%+.1f", a ? (b - a) * 100 / a : 0}')"

report="$OUT_DIR/soak-$(date +%Y%m%d-%H%M%S).md"
{
    echo "# rethread soak — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- Machine: $(machine_line)"
    echo "- Code: $(git_line)"
    echo "- ${SOAK_SECONDS}s of load at c=64 through rethread (--capacity $SOAK_CAPACITY, filled first), segments of ${SOAK_SEGMENT}s"
    echo
    echo "| kind | connections | requests | errors |"
    echo "|---|---:|---:|---:|"
    for k in "${KINDS[@]}"; do echo "| $k | ${KIND_CONNS[$k]} | ${TOTAL[$k]} | ${ERRORS[$k]} |"; done
    echo "| all | 64 | $total | $errors |"
    echo
    echo "- rethread RSS after warm-up (peak over 20–40% of the soak): $((after_warmup / 1024)) MB"
    echo "- rethread RSS at the end (peak over the last 20%): $((at_end / 1024)) MB ($growth%, limit +$SOAK_MAX_GROWTH%)"
    echo "- rethread VmHWM: $(($(hwm_kb "$RT_PID") / 1024)) MB; ledger $(metric "$RT_PORT" rethread_ledger_turns) turns, $(metric "$RT_PORT" rethread_ledger_evictions) evicted"
    echo "- RSS samples: ${RSS_CSV#"$ROOT"/}"
    ((cut_segments == 0)) || echo "- $cut_segments segment(s) ended early: the fakes passed FAKE_MEM_LIMIT_MB=$FAKE_MEM_LIMIT_MB"
} | tee "$report"

rc=0
if ((errors > 0)); then
    log "FAIL: $errors errors (0 expected); wrk outputs kept in $BENCH_TMP/runs"
    rc=1
fi
if [[ "$verdict" == GREW ]]; then
    log "FAIL: rethread's RSS grew by $growth% after warm-up (limit $SOAK_MAX_GROWTH%)"
    rc=1
fi
((total > 0)) || { log "FAIL: no request completed"; rc=1; }
((rc == 0)) && log "soak passed: $total requests, 0 errors, RSS $growth% after warm-up"
exit "$rc"
