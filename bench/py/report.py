#!/usr/bin/env python3
"""Aggregates the harness's per-run records into the results table.

    report.py add FILE WORKLOAD ROUND PATH 'BENCH_JSON-line' [key=value ...]   (one run)
    report.py note FILE KEY VALUE                                             (a fact)
    report.py render RESULTS.jsonl NOTES.jsonl OUT.md                         (the table)

`render` takes, for every workload and path, the median over rounds of each figure, prints the
Markdown to stdout, writes it to OUT.md, and exits 1 when a run broke its expectation:
 - where 2xx is expected: more than 0.1% non-2xx answers or socket errors;
 - where the fake's 400 is expected (W4/W5 direct and through nginx: the follow-up is not
   repaired there): more than 0.1% answers other than 400;
 - or a run that completed no request at all.
Ratios are ratios of medians; "added" latency is the path's median minus the direct median.
"""

import json
import statistics
import sys

BAD_FRACTION = 0.001  # 0.1 %

PATH_ORDER = ["direct", "nginx", "nginx-buf", "rethread", "rethread-redis"]

WORKLOAD_TEXT = {
    "W1c1": "W1: 2 KB JSON request → ~100 KB Responses object (rs, ig 75 KB, msg), c=1",
    "W1c64": "W1: 2 KB JSON request → ~100 KB Responses object (rs, ig 75 KB, msg), c=64",
    "W3c1": "W3: SSE stream of ~200 events, c=1",
    "W3c64": "W3: SSE stream of ~200 events, c=64",
    "W4": "W4: follow-up with a 5 MB `input_image` data URL needing repair, c=4",
    "W5": "W5: repair-needed follow-ups against a full ledger, c=64",
}


def workload_text(wl):
    if wl.startswith("W2c"):
        return f"W2: image turn, ~1.5 MB base64 `result`, c={wl[3:]} (W2_CONNS)"
    return WORKLOAD_TEXT.get(wl, wl)


def cmd_add(argv):
    path, workload, rnd, route, line = argv[:5]
    rec = json.loads(line.split("BENCH_JSON", 1)[1])
    rec.update({"workload": workload, "round": int(rnd), "path": route})
    for kv in argv[5:]:
        k, _, v = kv.partition("=")
        try:
            rec[k] = json.loads(v)
        except ValueError:
            rec[k] = v
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def cmd_note(argv):
    path, key, value = argv[:3]
    with open(path, "a") as f:
        f.write(json.dumps({"key": key, "value": value}) + "\n")


def cmd_brief(argv):
    """One progress line for a run."""
    r = json.loads(argv[0].split("BENCH_JSON", 1)[1])
    d = r["duration_us"] / 1e6 or 1
    extra = ""
    if "ttfb_p50_us" in r:
        extra = f", TTFB p50 {r['ttfb_p50_us'] / 1000:.2f} ms p99 {r['ttfb_p99_us'] / 1000:.2f} ms"
    if r.get("counted"):
        extra += f", {r['s2xx']}×2xx {r['s400']}×400 {r['sother']}×other"
    print(f"{r['requests']} req, {r['requests'] / d:.0f}/s, p50 {r['p50_us'] / 1000:.2f} ms, "
          f"p99 {r['p99_us'] / 1000:.2f} ms{extra}")


def bad_count(r):
    """Answers that broke the run's expectation (see the module doc)."""
    sock = sum(r.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    if "errors" in r and "err_status" not in r:  # the SSE client's record
        return r["errors"]
    if str(r.get("expect")) == "400":
        return r["requests"] - r.get("s400", 0) + sock
    if r.get("counted"):
        return r["requests"] - r.get("s2xx", 0) + sock
    return r.get("err_status", 0) + sock


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ms(us):
    return "—" if us is None else f"{us / 1000:.2f}"


def ratio(a, b):
    return "—" if a is None or not b else f"{a / b:.2f}×"


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def render(results_path, notes_path, out_path):
    runs = [json.loads(l) for l in open(results_path) if l.strip()]
    notes = {}
    try:
        for l in open(notes_path):
            if l.strip():
                n = json.loads(l)
                notes[n["key"]] = n["value"]
    except FileNotFoundError:
        pass

    failures = []
    lines = []
    w = lines.append
    w(f"# rethread benchmark — {notes.get('date', '?')}")
    w("")
    if notes.get("mode"):
        w(f"**{notes['mode']}**")
        w("")
    w(f"- Machine: {notes.get('machine', '?')}")
    w(f"- Code: {notes.get('git', '?')}")
    w(f"- Settings: {notes.get('settings', '?')}")
    w("- Every figure is the median over rounds; paths were interleaved within each round "
      "(order rotated every round). Latencies in ms. *CPU/1k* = CPU seconds (user+sys) of the "
      "proxy process(es) per 1,000 requests; *writes/req* = the proxy's write syscalls per request "
      "(/proc/PID/io syscw); *fake CPU/1k* the same as CPU/1k for the upstream fake. "
      "*bad* = answers that broke the expectation, summed over rounds.")
    w("- Everything (load generator, fake upstream, proxy) shares the same cores, so absolute "
      "figures are bounded by the fake's own cost; the ratios are the point.")
    w("")

    workloads = []
    for r in runs:
        if r["workload"] not in workloads:
            workloads.append(r["workload"])

    summary = []
    cuts = []
    for wl in workloads:
        wr = [r for r in runs if r["workload"] == wl]
        paths = [p for p in PATH_ORDER if any(r["path"] == p for r in wr)]
        sse = any("ttfb_p50_us" in r for r in wr)
        w(f"## {workload_text(wl)}")
        w("")
        agg = {}
        for p in paths:
            pr = [r for r in wr if r["path"] == p]
            a = {
                "rounds": len(pr),
                "p50": med([r["p50_us"] for r in pr]),
                "p99": med([r["p99_us"] for r in pr]),
                "rps": med([r["requests"] / (r["duration_us"] / 1e6) for r in pr if r["duration_us"]]),
                "cpu": med([r.get("proxy_cpu_per_1k") for r in pr]),
                "fcpu": med([r.get("fake_cpu_per_1k") for r in pr]),
                "writes": med([r.get("proxy_writes_per_req") for r in pr]),
                "rss": max([r.get("rss_peak_kb") or 0 for r in pr]) or None,
                "bad": sum(bad_count(r) for r in pr),
                "requests": sum(r["requests"] for r in pr),
                "expect": pr[0].get("expect", "2xx"),
            }
            if sse:
                for k in ("ttfb_p50_us", "ttfb_p99_us", "ttlb_p50_us", "ttlb_p99_us"):
                    a[k] = med([r[k] for r in pr])
            agg[p] = a
            for r in pr:
                if r.get("cut_at_fake_mb"):
                    cuts.append(f"{wl} round {r['round']} {p}: ended after {r['duration_us'] / 1e6:.1f} s, "
                                f"the fake holding {r['cut_at_fake_mb']} MB (FAKE_MEM_LIMIT_MB)")
                b = bad_count(r)
                if r["requests"] == 0:
                    failures.append(f"{wl} round {r['round']} {p}: no request completed")
                elif b / r["requests"] > BAD_FRACTION:
                    kinds = r.get("error_kinds") or {
                        k: r.get(k) for k in ("s2xx", "s400", "sother", "err_status", "err_read",
                                              "err_connect", "err_write", "err_timeout") if r.get(k)}
                    failures.append(f"{wl} round {r['round']} {p}: {b} of {r['requests']} answers "
                                    f"not {r.get('expect', '2xx')} ({kinds})")
        if sse:
            w("| path | TTFB p50 | TTFB p99 | TTLB p50 | TTLB p99 | streams/s | CPU/1k | writes/req | fake CPU/1k | peak RSS MB | bad |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for p in paths:
                a = agg[p]
                w(f"| {p} | {ms(a['ttfb_p50_us'])} | {ms(a['ttfb_p99_us'])} | {ms(a['ttlb_p50_us'])} | "
                  f"{ms(a['ttlb_p99_us'])} | {fmt(a['rps'], '.0f')} | {fmt(a['cpu'], '.3f')} | {fmt(a['writes'], '.0f')} | "
                  f"{fmt(a['fcpu'], '.3f')} | {fmt(a['rss'] and a['rss'] / 1024, '.0f')} | {a['bad']} |")
        else:
            w("| path | expects | p50 | p99 | req/s | CPU/1k | writes/req | fake CPU/1k | peak RSS MB | bad |")
            w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            for p in paths:
                a = agg[p]
                w(f"| {p} | {a['expect']} | {ms(a['p50'])} | {ms(a['p99'])} | {fmt(a['rps'], '.0f')} | "
                  f"{fmt(a['cpu'], '.3f')} | {fmt(a['writes'], '.0f')} | {fmt(a['fcpu'], '.3f')} | "
                  f"{fmt(a['rss'] and a['rss'] / 1024, '.0f')} | {a['bad']} |")
        w("")
        d, n, rt = agg.get("direct"), agg.get("nginx"), agg.get("rethread")
        if d and n and rt:
            keys = [("p50", "p50"), ("p99", "p99")]
            if sse:
                keys = [("TTFB p50", "ttfb_p50_us"), ("TTFB p99", "ttfb_p99_us"),
                        ("TTLB p50", "ttlb_p50_us"), ("TTLB p99", "ttlb_p99_us")]
            w("| figure | rethread/direct | rethread/nginx | added by rethread | added by nginx | added ratio |")
            w("|---|---:|---:|---:|---:|---:|")
            for label, k in keys:
                ar = rt[k] - d[k] if rt[k] is not None and d[k] is not None else None
                an = n[k] - d[k] if n[k] is not None and d[k] is not None else None
                added_ratio = "—" if ar is None or an is None or an <= 0 else f"{ar / an:.2f}×"
                w(f"| {label} | {ratio(rt[k], d[k])} | {ratio(rt[k], n[k])} | {ms(ar)} | {ms(an)} | {added_ratio} |")
            w(f"| req/s | {ratio(rt['rps'], d['rps'])} | {ratio(rt['rps'], n['rps'])} | | | |")
            if rt["cpu"] is not None and n["cpu"]:
                w(f"| proxy CPU/1k | | {ratio(rt['cpu'], n['cpu'])} | | | |")
            w("")
            nb = agg.get("nginx-buf")
            if nb:
                # The issue-14 goals compare with the better of nginx's two settings, per figure.
                w("Against the better nginx per figure (buffering off or on): rethread's added latency ÷ "
                  "the better nginx's added latency, and req/s ÷ the better nginx's.")
                w("")
                w("| figure | added by rethread | added by better nginx (which) | added ratio |")
                w("|---|---:|---:|---:|")
                for label, k in keys:
                    if rt[k] is None or d[k] is None:
                        continue
                    best = min((x for x in (("nginx", n[k]), ("nginx-buf", nb[k])) if x[1] is not None),
                               key=lambda x: x[1], default=None)
                    if best is None:
                        continue
                    ar, an = rt[k] - d[k], best[1] - d[k]
                    w(f"| {label} | {ms(ar)} | {ms(an)} ({best[0]}) | "
                      f"{'—' if an <= 0 else f'{ar / an:.2f}×'} |")
                bn = max(("nginx", n["rps"]), ("nginx-buf", nb["rps"]), key=lambda x: x[1] or 0)
                w(f"| req/s | {fmt(rt['rps'], '.0f')} | {fmt(bn[1], '.0f')} ({bn[0]}) | {ratio(rt['rps'], bn[1])} |")
                w("")
            p50k = "ttlb_p50_us" if sse else "p50"
            summary.append((wl, rt[p50k] / d[p50k] if d[p50k] else None,
                            rt[p50k] / n[p50k] if n[p50k] else None,
                            rt["rps"] / d["rps"] if d["rps"] else None,
                            rt["rps"] / n["rps"] if n["rps"] else None, rt["rss"], rt["cpu"]))
        rr = agg.get("rethread-redis")
        if rt and rr:
            w(f"Shared store (Redis) vs memory store: p50 {ratio(rr['p50'], rt['p50'])}, "
              f"p99 {ratio(rr['p99'], rt['p99'])}, req/s {ratio(rr['rps'], rt['rps'])}, rethread CPU/1k "
              f"{ratio(rr['cpu'], rt['cpu'])}; redis-server CPU/1k: {notes.get('W5.redis_cpu_per_1k', '?')} s.")
            w("")
        for k in sorted(notes):
            if k.startswith(wl + ".") and not k.endswith("_cpu_per_1k"):
                w(f"- {k[len(wl) + 1:]}: {notes[k]}")
        if any(k.startswith(wl + ".") and not k.endswith("_cpu_per_1k") for k in notes):
            w("")

    if summary:
        w("## Summary (medians; latency = p50, TTLB for W3)")
        w("")
        w("| workload | p50 rethread/direct | p50 rethread/nginx | req/s rethread/direct | req/s rethread/nginx | rethread peak RSS MB | rethread CPU/1k |")
        w("|---|---:|---:|---:|---:|---:|---:|")
        for wl, a, b, c, d_, rss, cpu in summary:
            w(f"| {wl} | {fmt(a, '.2f')}× | {fmt(b, '.2f')}× | {fmt(c, '.2f')}× | {fmt(d_, '.2f')}× | "
              f"{fmt(rss and rss / 1024, '.0f')} | {fmt(cpu, '.3f')} |")
        w("")
    general = [k for k in notes if "." not in k and k not in ("date", "machine", "git", "settings", "mode")]
    for k in general:
        w(f"- {k}: {notes[k]}")
    if cuts:
        w("")
        w("Runs ended early because the fake upstream's memory (it keeps every turn) passed the limit:")
        w("")
        for c in cuts:
            w(f"- {c}")
    if failures:
        w("")
        w("## FAILURES")
        w("")
        for f_ in failures:
            w(f"- {f_}")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(out_path, "w") as f:
        f.write(text)
    return 1 if failures else 0


def main():
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "add":
        cmd_add(argv)
    elif cmd == "brief":
        cmd_brief(argv)
    elif cmd == "note":
        cmd_note(argv)
    elif cmd == "render":
        sys.exit(render(*argv[:3]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
