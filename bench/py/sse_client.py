#!/usr/bin/env python3
"""W3 load client: time to first byte (TTFB) and time to last byte (TTLB) of streamed answers.

    sse_client.py --port P --body FILE --shape rs,msg,... -c 64 (--duration 10 | --requests N)
                  [--tls-ca CA.pem]   (HTTPS to the server, verified against that CA: the fake over TLS)

wrk only measures the whole request, so this client opens C keep-alive connections with raw
sockets (asyncio protocols: one callback per socket read, no per-event work in Python beyond
walking the chunk headers), sends the same POST on each again and again, and records per
request:
  - TTFB: request written → first byte of the response *body* (the first SSE event; headers
    alone do not count, since a proxy can answer headers before the upstream has sent anything);
  - TTLB: request written → the body's end (chunked terminator, or Content-Length reached).
A request counts as OK only when the status is 200 and the stream's last event is
`response.completed`. The result is one line: `BENCH_JSON {...}` with p50/p99 of both (µs).

Only the standard library, so it runs anywhere python3 does.
"""

import argparse
import asyncio
import json
import signal
import socket
import ssl
import sys
import time


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return 0
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class Response:
    """Incremental HTTP/1.1 response parser. Walks chunk headers only and remembers the name of
    the last SSE event seen (the stream must end with `response.completed`)."""

    CARRY = 128  # bytes kept between pieces so an `event: …` line split across reads is found

    def __init__(self):
        self.buf = bytearray()
        self.head_done = False
        self.status = 0
        self.chunked = False
        self.length = None  # Content-Length, when not chunked
        self.close = False
        self.got_body = False
        self.done = False
        self.carry = b""
        self.last_event = b""
        self.state = "size"  # chunked: size → data → size … → trailer
        self.remaining = 0  # bytes of the current chunk (or of the body) still to come

    def feed(self, data):
        """Consume bytes; returns the bytes past the end of this response (pipelining: none)."""
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return b""
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            del self.buf[: end + 4]
            self.status = int(head[0].split(" ", 2)[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                if name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
                elif name == "content-length":
                    self.length = int(value)
                elif name == "connection" and value.lower() == "close":
                    self.close = True
            self.head_done = True
            if not self.chunked:
                self.remaining = self.length if self.length is not None else -1
                if self.remaining == 0:
                    self.done = True
        if self.buf:
            self.got_body = True
        return self._body()

    def _keep_tail(self, piece):
        """Track the last complete `event: NAME` line in the body (C-speed searches only)."""
        window = self.carry + bytes(piece)
        i = window.rfind(b"event: ")
        while i >= 0:
            j = window.find(b"\n", i)
            if j >= 0:
                self.last_event = window[i + 7:j].rstrip(b"\r")
                break
            # The last one is incomplete: it stays in the carry; look for an earlier complete one.
            i = window.rfind(b"event: ", 0, i)
        self.carry = window[-self.CARRY:]

    def _body(self):
        buf = self.buf
        if not self.chunked:
            if self.remaining < 0:  # read until close
                self._keep_tail(buf)
                del buf[:]
                return b""
            take = min(self.remaining, len(buf))
            self._keep_tail(buf[:take])
            self.remaining -= take
            rest = bytes(buf[take:])
            del buf[:]
            if self.remaining == 0:
                self.done = True
            return rest
        pos = 0
        n = len(buf)
        while pos < n and not self.done:
            if self.state == "size":
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.state = "trailer"
                else:
                    self.state = "data"
                    self.remaining = size + 2  # the data and its CRLF
            elif self.state == "data":
                take = min(self.remaining, n - pos)
                end = pos + take
                # The chunk's closing CRLF is framing, not data: an event line split across two
                # chunks must still read as one line.
                data_left = max(self.remaining - 2, 0)
                self._keep_tail(buf[pos:pos + min(take, data_left)])
                self.remaining -= take
                pos = end
                if self.remaining == 0:
                    self.state = "size"
            else:  # trailer: header lines until an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                empty = eol == pos
                pos = eol + 2
                if empty:
                    self.done = True
        if self.done:
            rest = bytes(buf[pos:])
            del buf[:]
            return rest
        del buf[:pos]  # keep a partial chunk-size line for the next read
        return b""

    def completed_ok(self):
        # The last SSE event must be the terminal one (the fake and the API end with it).
        return self.status == 200 and self.last_event == b"response.completed"


class Conn(asyncio.Protocol):
    quickack = False  # --quickack: acknowledge every read at once (diagnostic, see main())

    def __init__(self):
        self.transport = None
        self.resp = None
        self.waiter = None
        self.t_first = None
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.resp is None:
            return
        now = time.perf_counter()
        resp = self.resp
        before = resp.got_body
        resp.feed(data)
        if self.quickack:  # Linux clears TCP_QUICKACK after use: set it again after each read
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if resp.got_body and not before:
            self.t_first = now
        if resp.done and self.waiter and not self.waiter.done():
            self.waiter.set_result(now)

    def connection_lost(self, exc):
        self.lost = True
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))


STOP = False  # set by SIGINT/SIGTERM: finish the requests in flight, start no new one


async def worker(loop, port, request, deadline, budget, stats, tls=None):
    conn = None
    while True:
        if STOP or (deadline is not None and time.perf_counter() >= deadline):
            return
        if budget is not None:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        if conn is None or conn.lost:
            if tls is None:
                _, conn = await loop.create_connection(Conn, "127.0.0.1", port)
            else:  # the fake's test certificate names localhost and 127.0.0.1
                _, conn = await loop.create_connection(Conn, "127.0.0.1", port, ssl=tls,
                                                       server_hostname="localhost")
        conn.resp = Response()
        conn.t_first = None
        conn.waiter = loop.create_future()
        t0 = time.perf_counter()
        conn.transport.write(request)
        try:
            t_end = await asyncio.wait_for(conn.waiter, 120)
        except (ConnectionError, asyncio.TimeoutError) as e:
            stats["errors"] += 1
            stats["error_kinds"][type(e).__name__] = stats["error_kinds"].get(type(e).__name__, 0) + 1
            if conn.transport:
                conn.transport.close()
            conn = None
            continue
        resp = conn.resp
        if resp.completed_ok():
            stats["ttfb"].append((conn.t_first or t_end) - t0)
            stats["ttlb"].append(t_end - t0)
        else:
            stats["errors"] += 1
            key = f"status {resp.status}" if resp.status != 200 else "no response.completed at the end"
            stats["error_kinds"][key] = stats["error_kinds"].get(key, 0) + 1
        if resp.close:
            conn.transport.close()
            conn = None


async def run(args):
    with open(args.body, "rb") as f:
        body = f.read()
    headers = [
        "POST /v1/responses HTTP/1.1",
        f"Host: 127.0.0.1:{args.port}",
        "Content-Type: application/json",
        "Authorization: Bearer bench",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
    ]
    if args.shape:
        headers.append(f"x-fake-shape: {args.shape}")
    if args.event_delay_ms:
        headers.append(f"x-fake-delay-ms: {args.event_delay_ms}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    loop = asyncio.get_running_loop()

    def stop():
        global STOP
        STOP = True

    # Installed explicitly: a background job of a non-interactive shell starts with SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler of its own.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    stats = {"ttfb": [], "ttlb": [], "errors": 0, "error_kinds": {}}
    start = time.perf_counter()
    deadline = start + args.duration if args.requests is None else None
    budget = [args.requests] if args.requests is not None else None
    tls = ssl.create_default_context(cafile=args.tls_ca) if args.tls_ca else None
    await asyncio.gather(*(worker(loop, args.port, request, deadline, budget, stats, tls)
                           for _ in range(args.connections)))
    elapsed = time.perf_counter() - start
    ttfb = sorted(stats["ttfb"])
    ttlb = sorted(stats["ttlb"])
    us = lambda s: int(s * 1e6)
    ok = len(ttlb)
    out = {
        "requests": ok + stats["errors"],
        "ok": ok,
        "errors": stats["errors"],
        "error_kinds": stats["error_kinds"],
        "duration_us": us(elapsed),
        "ttfb_p50_us": us(percentile(ttfb, 50)),
        "ttfb_p99_us": us(percentile(ttfb, 99)),
        "ttlb_p50_us": us(percentile(ttlb, 50)),
        "ttlb_p99_us": us(percentile(ttlb, 99)),
        # The generic columns of the report use TTLB as "the" latency of a stream.
        "p50_us": us(percentile(ttlb, 50)),
        "p99_us": us(percentile(ttlb, 99)),
    }
    print("BENCH_JSON " + json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--body", required=True, help="request body file (must say \"stream\": true)")
    p.add_argument("--shape", default="", help="x-fake-shape header")
    p.add_argument("--event-delay-ms", type=int, default=0,
                   help="x-fake-delay-ms header: the fake's pause before each event (paced like the API's tokens)")
    p.add_argument("--tls-ca", default="",
                   help="connect with TLS (HTTP/1.1, no ALPN), trusting this CA file (PEM)")
    p.add_argument("-c", "--connections", type=int, default=1)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--duration", type=float, help="seconds; requests in flight at the end complete")
    g.add_argument("--requests", type=int, help="total requests over all connections")
    p.add_argument("--quickack", action="store_true",
                   help="diagnostic: disable delayed ACKs on the client sockets. A server that "
                        "writes small chunks without TCP_NODELAY stalls ~40 ms per answer on a "
                        "kept-alive connection until the client ACKs; this shows whether it does")
    args = p.parse_args()
    Conn.quickack = args.quickack
    try:
        asyncio.run(run(args))
    except OSError as e:
        sys.exit(f"sse_client: {e}")


if __name__ == "__main__":
    main()
