#!/usr/bin/env python3
"""Issue 14's goals, read from the raw results of `bench/run.sh` runs (one per upstream mode).

    python3 bench/py/goals.py plain=bench/out/results-A.jsonl tls-h1=…B.jsonl tls-h2=…C.jsonl

For every mode, workload (W1c1, W1c64, W2c1, W2c64, W3c1, W3c64) and figure it prints, as
markdown rows, rethread's added latency (the path's median over rounds minus direct's) against
the *better* nginx's (buffering off or on, whichever added less for that figure) and their
ratio; req/s against the better nginx's; and rethread's peak RSS. The goals: added latency at
most 1.00× the better nginx's, req/s at least 1.00×, peak RSS under 64 MiB at W2c64. Where the
better nginx added nothing or less (≤ 0: at c=64 a proxy's batching can beat the direct path), a
ratio means nothing, and the goal is read as rethread's latency ≤ that nginx's: "met"/"missed".
Only the standard library.
"""

import json
import statistics
import sys

NGINXES = ("nginx", "nginx-buf")
LABEL = {"nginx": "off", "nginx-buf": "on"}
WORKLOADS = ("W1c1", "W1c64", "W2c1", "W2c64", "W3c1", "W3c64")


def medians(rows):
    """{path: {figure: median over rounds}}."""
    by_path = {}
    for r in rows:
        by_path.setdefault(r["path"], []).append(r)
    out = {}
    for path, rs in by_path.items():
        fig = {}
        keys = ["ttfb_p50_us", "ttfb_p99_us", "ttlb_p50_us", "ttlb_p99_us"] if "ttfb_p50_us" in rs[0] \
            else ["p50_us", "p99_us"]
        for k in keys:
            fig[k] = statistics.median(r[k] for r in rs)
        fig["rps"] = statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in rs if r["duration_us"])
        cpu = [r["proxy_cpu_per_1k"] for r in rs if r.get("proxy_cpu_per_1k") is not None]
        fig["cpu"] = statistics.median(cpu) if cpu else None
        fig["rss_mb"] = max(r.get("rss_peak_kb", 0) for r in rs) / 1024
        out[path] = fig
    return out


def latency_row(mode, wl, name, key, m):
    direct = m["direct"][key]
    added = {p: m[p][key] - direct for p in ("rethread",) + NGINXES if p in m}
    best = min((p for p in NGINXES if p in added), key=lambda p: added[p])
    ours, theirs = added["rethread"], added[best]
    if theirs > 0:
        r = ours / theirs
        verdict = f"{r:.2f}×" + ("" if r <= 1.0 else " **missed**")
    else:
        # nginx added nothing: compare the latencies themselves.
        verdict = "met (nginx ≤ direct)" if m["rethread"][key] <= m[best][key] else \
            f"**missed** (+{(m['rethread'][key] - m[best][key]) / 1000:.2f} ms over nginx; nginx ≤ direct)"
    return (f"| {mode} | {wl} | {name} | {ours / 1000:+.2f} | {theirs / 1000:+.2f} ({LABEL[best]}) | {verdict} |")


def main(argv):
    runs = []
    for arg in argv:
        mode, _, path = arg.partition("=")
        runs.append((mode, [json.loads(line) for line in open(path)]))
    print("| mode | workload | figure | rethread added, ms | better nginx added, ms | ratio |")
    print("|---|---|---|---:|---:|---|")
    extra = []
    for mode, rows in runs:
        for wl in WORKLOADS:
            wr = [r for r in rows if r["workload"] == wl]
            if not wr:
                continue
            m = medians(wr)
            if "ttfb_p50_us" in m["direct"]:
                figs = [("TTFB p50", "ttfb_p50_us"), ("TTFB p99", "ttfb_p99_us"),
                        ("TTLB p50", "ttlb_p50_us"), ("TTLB p99", "ttlb_p99_us")]
            else:
                figs = [("p50", "p50_us"), ("p99", "p99_us")]
            for name, key in figs:
                print(latency_row(mode, wl, name, key, m))
            best = max((p for p in NGINXES if p in m), key=lambda p: m[p]["rps"])
            rt = m["rethread"]
            cpu = f"{rt['cpu']:.3f} / {m[best]['cpu']:.3f}" if rt["cpu"] is not None and m[best]["cpu"] is not None else "—"
            extra.append(f"| {mode} | {wl} | {rt['rps']:.0f} vs {m[best]['rps']:.0f} ({LABEL[best]}) | "
                         f"{rt['rps'] / m[best]['rps']:.2f}×{'' if rt['rps'] >= m[best]['rps'] else ' **missed**'} | "
                         f"{cpu} | {rt['rss_mb']:.0f} |")
    print()
    print("| mode | workload | req/s rethread vs better nginx | ratio | CPU s/1k req rethread / that nginx | rethread peak RSS, MiB |")
    print("|---|---|---:|---|---:|---:|")
    for row in extra:
        print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
