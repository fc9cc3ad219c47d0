#!/usr/bin/env python3
"""Webhook delivery under a burst (issue 12's measure): N session events (default 1000: a session start, then
participants joining and leaving) published on an embedded Engine's event bus as fast as the loop takes
them, each written to the outbox with its change (SQLite, WAL) and delivered by the WebhookDispatcher to one
receiver (an HTTP server on 127.0.0.1 in this process's thread). Reported: latency from publishing an event
to the receiver having it (events go out in order, so the i-th arrival is the i-th event), p50 / p99 / max,
the time until the last one arrived, and the cost of writing an event with its change. Medians over repeats.

    .venv/bin/python bench/webhook_burst.py --events 1000 --repeats 3 --json bench/webhook_burst.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.mcu_kernels import cpu  # noqa: E402
from enx_media import events as ev  # noqa: E402
from enx_media.config import Settings  # noqa: E402
from enx_media.control.webhooks import WebhookDispatcher  # noqa: E402
from enx_media.engine import Engine  # noqa: E402


def receiver(arrivals: list[float]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"       # keep-alive: as a real receiver behind a load balancer would

        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            arrivals.append(time.monotonic())
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


async def burst(n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(Settings(data_dir=tmp, webhook_allow_loopback="on"))
        creds = engine.apps.create("bench")
        room = engine.rooms.create(creds.app_id, {"name": "burst", "settings": {"mode": "lecture"}})
        arrivals: list[float] = []
        server = receiver(arrivals)
        engine.webhooks.create(creds.app_id, {"url": f"http://127.0.0.1:{server.server_address[1]}/hooks"})
        engine.dispatcher = WebhookDispatcher(engine.store, allow_loopback=True, retry_s=0.1, give_up_s=3600)
        engine.dispatcher.start()
        published: list[float] = []
        write_s = 0.0
        sid, rid, aid = "s-bench", room.room_id, creds.app_id
        for i in range(n):
            if i == 0:
                e: ev.Event = ev.SessionStarted(sid, rid, aid)
            elif i % 2:
                e = ev.ParticipantJoined(sid, rid, aid, f"p{i}", f"u{i}", f"user {i}", "participant", f"t{i}")
            else:
                e = ev.ParticipantLeft(sid, rid, aid, f"p{i - 1}", "left")
            published.append(time.monotonic())
            t = time.perf_counter()
            engine.events.publish(e)         # the session recorder writes the change and its webhook event
            write_s += time.perf_counter() - t
            await asyncio.sleep(0)           # events come in one per message: the loop runs between them
        end = time.monotonic() + 120
        while len(arrivals) < n and time.monotonic() < end:
            await asyncio.sleep(0.01)
        await engine.dispatcher.stop()
        server.shutdown()
        engine.store.close()
    lat = sorted(a - p for a, p in zip(arrivals, published))
    return {"events": n, "arrived": len(arrivals), "p50_ms": round(lat[len(lat) // 2] * 1e3, 1),
            "p99_ms": round(lat[int(0.99 * (len(lat) - 1))] * 1e3, 1), "max_ms": round(lat[-1] * 1e3, 1),
            "last_after_s": round(arrivals[-1] - published[0], 2), "write_us_per_event": round(write_s / n * 1e6, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = []
    for r in range(args.repeats):
        res = asyncio.run(burst(args.events))
        runs.append(res)
        print(f"repeat {r + 1}: {res}", flush=True)
    keys = ("p50_ms", "p99_ms", "max_ms", "last_after_s", "write_us_per_event")
    med = {k: statistics.median(x[k] for x in runs) for k in keys}
    print(f"medians of {args.repeats}: {med}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu(), "command": " ".join(sys.argv), "medians": med,
                                               "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
