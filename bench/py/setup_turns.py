#!/usr/bin/env python3
"""Setup steps of the follow-up workloads (W4, W5) and of the soak.

    setup_turns.py turns  --port P --count N --out IDS   [--shape rs,ig,msg] [--concurrency 8]
    setup_turns.py w4body --port P --out BODY [--image-mb 5] [--cache FILE]

`turns` creates N first turns through rethread (so rethread learns them and the fake knows
them) and writes, one turn per line, the ids of its reasoning item, image call and message
("rs_… ig_… msg_…"): W5's follow-ups name the image call; the other two let a follow-up be
built already repaired. `w4body` creates one image turn and writes W4's follow-up: a user
message with a ~5 MB base64 `input_image` data URL, then the bare image call that needs its
reasoning; with --out-repaired also the same follow-up as rethread forwards it (the reasoning
item and the message inserted around the image call as item_references).

Only the standard library: the harness must run on a bare Debian with python3.
"""

import argparse
import base64
import http.client
import json
import sys
import threading
import time

HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench"}


def post(conn_box, port, body, headers, tries=5):
    """POST /v1/responses on a kept-alive connection; reconnects and retries on socket errors
    (a proxy may hand us a connection error right after the fake was restarted)."""
    last = None
    for attempt in range(tries):
        try:
            if conn_box[0] is None:
                conn_box[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn = conn_box[0]
            conn.request("POST", "/v1/responses", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status == 200:
                return json.loads(data)
            last = f"HTTP {resp.status}: {data[:300]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
            if conn_box[0] is not None:
                conn_box[0].close()
            conn_box[0] = None
        time.sleep(0.05 * (attempt + 1))
    raise RuntimeError(f"turn creation failed after {tries} tries: {last}")


def ids_of(resp):
    """The turn's reasoning, image call and message ids (shape rs,ig,msg)."""
    return " ".join(first_of_type(resp, t) for t in ("reasoning", "image_generation_call", "message"))


def first_of_type(resp, item_type):
    for item in resp.get("output", []):
        if item.get("type") == item_type:
            return item["id"]
    raise RuntimeError(f"no {item_type} in response output: {[i.get('type') for i in resp.get('output', [])]}")


def cmd_turns(args):
    headers = dict(HEADERS, **{"x-fake-shape": args.shape})
    body = json.dumps({"model": "gpt-5", "input": "Draw a small red square.",
                       "tools": [{"type": "image_generation"}]}).encode()
    ids = [None] * args.count
    errors = []
    next_i = [0]
    lock = threading.Lock()

    def worker():
        box = [None]
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= args.count or errors:
                break
            try:
                ids[i] = ids_of(post(box, args.port, body, headers))
            except Exception as e:  # reported once below; the harness fails on it
                with lock:
                    errors.append(str(e))
                break

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"setup_turns: {errors[0]}")
    with open(args.out, "w") as f:
        f.write("\n".join(ids) + "\n")


def cmd_w4body(args):
    headers = dict(HEADERS, **{"x-fake-shape": "rs,ig,msg"})
    body = json.dumps({"model": "gpt-5", "input": "Draw a small red square.",
                       "tools": [{"type": "image_generation"}]}).encode()
    rs, ig, msg = ids_of(post([None], args.port, body, headers)).split()
    # The base64 of ~5 MB is built once and cached: each W4 run needs a fresh image call id
    # (the fake is new for every run) but the same image.
    b64 = None
    if args.cache:
        try:
            with open(args.cache, "rb") as f:
                b64 = f.read()
        except FileNotFoundError:
            pass
    if b64 is None:
        target = int(args.image_mb * 1024 * 1024)
        raw_len = target * 3 // 4
        raw = b"\x89PNG\r\n\x1a\n" + bytes(i % 251 for i in range(raw_len - 8))
        b64 = base64.b64encode(raw)
        if args.cache:
            with open(args.cache, "wb") as f:
                f.write(b64)
    prefix = (b'{"model":"gpt-5","input":[{"role":"user","content":[{"type":"input_image",'
              b'"image_url":"data:image/png;base64,')
    suffix = b'"}]},{"type":"image_generation_call","id":"' + ig.encode() + b'"}]}'
    with open(args.out, "wb") as f:
        f.write(prefix + b64 + suffix)
    if args.out_repaired:
        ref = lambda i: b'{"type":"item_reference","id":"' + i.encode() + b'"}'
        repaired = (b'"}]},' + ref(rs) + b',{"type":"image_generation_call","id":"' + ig.encode()
                    + b'"},' + ref(msg) + b']}')
        with open(args.out_repaired, "wb") as f:
            f.write(prefix + b64 + repaired)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("turns")
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--shape", default="rs,ig,msg")
    t.add_argument("--concurrency", type=int, default=8)
    w = sub.add_parser("w4body")
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--image-mb", type=float, default=5.0)
    w.add_argument("--cache")
    w.add_argument("--out-repaired")
    args = p.parse_args()
    {"turns": cmd_turns, "w4body": cmd_w4body}[args.cmd](args)


if __name__ == "__main__":
    main()
