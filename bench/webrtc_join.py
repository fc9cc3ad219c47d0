"""Real WebRTC clients against a real node process on 127.0.0.1:

1. join-to-first-frame: an aiortc subscriber (join -> subscribe -> first decoded frame of a publisher
   that is already live), and headless Chromium through /demo?token= (page load -> first frame decoded
   in the page; and Chromium as publisher -> first frame decoded by an aiortc subscriber);
2. lecture CPU: one moderator publishes VP8 + Opus to N subscribers; CPU-seconds of the node process
   per second, divided by the number of forwarded streams.

    python bench/webrtc_join.py [--quick] [--json bench/webrtc_join.json]

The subscribers' decoding runs in this process, not the node's; the node's CPU is read from
/proc/<pid>/stat, so it counts everything the node does (Python signaling, native forwarding, RTCP).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import Node  # noqa: E402  (the same real-node harness the tests use)
from media_util import COLORS, Api, ColorTrack, ToneTrack  # noqa: E402


def node_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def aiortc_join_to_first_frame(api: Api, repeats: int, spacing: float) -> list[float]:
    room = api.room(settings={"moderators": 1, "participants": 50})
    pub = api.client(room["room_id"], "pub", "moderator")
    await pub.join()
    await pub.publish([ColorTrack(COLORS[0], (640, 480)), ToneTrack()])
    times = []
    for i in range(repeats):
        sub = api.client(room["room_id"], f"sub{i}", "participant")
        started = time.monotonic()
        await sub.join()
        await sub.subscribe()
        track = await sub.wait_track(await sub.wait_stream(pub.participant_id, "video"))
        await asyncio.wait_for(track.recv(), 20)
        times.append(time.monotonic() - started)
        await sub.leave()
        # Space the joins past the core's 500 ms key-frame request limit: back-to-back joins share one
        # key frame and the later ones wait up to that limit (printed separately below).
        await asyncio.sleep(spacing)
    await pub.leave()
    return times


async def chromium_first_frames(api: Api, node: Node, repeats: int) -> dict[str, list[float]]:
    from test_webrtc_chromium import CHROMIUM, open_browser

    if CHROMIUM is None:
        return {}
    pw, browser = await open_browser()
    out = {"chromium_subscriber_s": [], "chromium_publisher_s": []}
    try:
        room = api.room(settings={"moderators": 1, "participants": 50})
        aio = api.client(room["room_id"], "aio", "moderator")
        await aio.join()
        await aio.publish([ColorTrack(COLORS[1], (640, 480)), ToneTrack()])
        await aio.subscribe()
        for i in range(repeats):
            page = await browser.new_page()
            started = time.monotonic()
            await page.goto(f"{node.base}/demo?token={api.token(room['room_id'], f'chrome{i}', 'participant')}")
            await page.wait_for_function("window.enxDemo && window.enxDemo.framesDecoded > 0", timeout=30000,
                                         polling=10)
            out["chromium_subscriber_s"].append(time.monotonic() - started)
            chrome_id = await page.evaluate("window.enxDemo.room.joined.participant_id")
            track = await aio.wait_track(await aio.wait_stream(chrome_id, "video"))
            await asyncio.wait_for(track.recv(), 20)
            out["chromium_publisher_s"].append(time.monotonic() - started)
            await page.evaluate("window.enxDemo.room.leave()")
            await page.close()
        await aio.leave()
    finally:
        await browser.close()
        await pw.stop()
    return out


async def lecture_cpu(api: Api, node: Node, subscribers: int, seconds: float) -> dict:
    room = api.room(settings={"mode": "lecture", "moderators": 1, "participants": 1999})
    teacher = api.client(room["room_id"], "teacher", "moderator")
    await teacher.join()
    await teacher.publish([ColorTrack(COLORS[2], (640, 480)), ToneTrack()])
    subs = [api.client(room["room_id"], f"s{i}", "participant") for i in range(subscribers)]
    tracks = []
    for s in subs:
        await s.join()
        await s.subscribe()
    for s in subs:
        for kind in ("video", "audio"):
            tracks.append(await s.wait_track(await s.wait_stream(teacher.participant_id, kind)))
    counts = [0] * len(tracks)

    async def drain(i, track):
        while True:
            await track.recv()
            counts[i] += 1

    drains = [asyncio.ensure_future(drain(i, t)) for i, t in enumerate(tracks)]
    await asyncio.sleep(2)  # settle: key frames, jitter buffers
    cpu0, t0, n0 = node_cpu_seconds(node.proc.pid), time.monotonic(), sum(counts)
    await asyncio.sleep(seconds)
    cpu1, t1, n1 = node_cpu_seconds(node.proc.pid), time.monotonic(), sum(counts)
    for d in drains:
        d.cancel()
    worker = api.metric("enx_media_worker_total", 'counter="packets_out"')
    for s in subs:
        await s.leave()
    await teacher.leave()
    streams = 2 * subscribers
    cpu_per_s = (cpu1 - cpu0) / (t1 - t0)
    return {"subscribers": subscribers, "forwarded_streams": streams, "seconds": round(t1 - t0, 2),
            "node_cpu_s_per_s": round(cpu_per_s, 4),
            "node_cpu_ms_per_s_per_stream": round(1000 * cpu_per_s / streams, 3),
            "frames_received_per_s": round((n1 - n0) / (t1 - t0), 1), "worker_packets_out_total": worker}


async def main(args) -> dict:
    repeats = 3 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(Path(tmp))
        node.start()
        try:
            api = Api(node, node.create_app("bench"))
            result = {"aiortc_join_to_first_frame_s": await aiortc_join_to_first_frame(api, repeats, 1.0),
                      "aiortc_back_to_back_join_to_first_frame_s": await aiortc_join_to_first_frame(api, repeats, 0)}
            result.update(await chromium_first_frames(api, node, repeats))
            result["lecture"] = await lecture_cpu(api, node, 10 if args.quick else 20, 5 if args.quick else 15)
        finally:
            node.stop()
    for key in list(result):
        if key.endswith("_s") and result[key]:
            values = result[key]
            result[key] = {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                           "max": round(max(values), 3), "n": len(values)}
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, 10 lecture subscribers for 5 s")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    out = asyncio.run(main(args))
    out["command"] = "python bench/webrtc_join.py" + (" --quick" if args.quick else "")
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
