"""Bandwidth adaptation through a shaped link, with real peers on 127.0.0.1: headless Chromium publishes
720p simulcast (q/h/f) through the demo page to a real node process; a subscriber receives it through a
token-bucket UDP shaper (tests/shaper.py: queue with tail drop), and the shaper's rate cycles: free ->
`--fraction` of the rate of the layer it receives for `--hold` s -> free again. The subscriber is aiortc
(`--subscriber aiortc`: asks for the best there is, 720p; REMB-only, abs-send-time and its own estimator,
the node's path for receivers without transport-cc) or a second Chromium page (`--subscriber chromium`:
a pinned 360-line tile of the demo page; transport-cc, the node's own estimator). Per cycle:

- down: from the rate drop to the first of 5 frames in a row below the top layer (a stable lower layer);
- up: from the rate's return to the first of 5 frames in a row on the top layer again;
- freeze: the longest gap between decoded frames around each switch (a key-frame wait shows here);
- overshoot: what the node sent towards the shaped link (offered load at the shaper) over the shaped rate,
  in the limited period after the down switch; and the datagrams the shaper's queue tail-dropped.

    python bench/simulcast_adapt.py [--subscriber aiortc|chromium] [--cycles 5] [--fraction 0.6] [--json F]

Medians over the cycles are printed and written. For Chromium the picture height and frames decoded are read
from getStats every 50 ms, so its times are within that (and freeze is the longest time framesDecoded stood).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import Node  # noqa: E402  (the same real-node harness the tests use)
from media_util import (CHROMIUM, Api, Heights, chromium_page, demo_publisher, demo_video_stream,  # noqa: E402
                        page_media_address)

INBOUND = """async (streamId) => { const room = window.enxDemo.room;
  const track = room.remoteTracks.get(streamId); let out = [0, 0];
  (await room.subscribePc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video" && r.trackIdentifier === track.id)
      out = [r.frameHeight || 0, r.framesDecoded || 0]; });
  return out; }"""


class PageHeights(Heights):
    """Heights of what a demo page decodes, sampled from getStats: a sample is kept as a "frame" when
    framesDecoded moved since the last one (so gaps between them are freezes, within the sampling)."""

    def __init__(self, page, stream_id):  # noqa: super().__init__ starts a track reader we do not want
        self.frames = []
        self._task = asyncio.ensure_future(self._poll(page, stream_id))

    async def _poll(self, page, stream_id):
        decoded = 0
        while True:
            h, n = await page.evaluate(INBOUND, stream_id)
            if n > decoded and h:
                self.frames.append((time.monotonic(), h))
                decoded = n
            await asyncio.sleep(0.05)
from shaper import Shaper  # noqa: E402


def gap_around(h: Heights, t0: float, t1: float) -> float:
    times = [t for t, _ in h.frames if t0 <= t <= t1]
    return max((b - a for a, b in zip(times, times[1:])), default=t1 - t0)


async def cycle(h: Heights, shaper: Shaper, level: int, fraction: float, hold: float) -> dict:
    await asyncio.sleep(4)
    now = time.monotonic()
    top = shaper.rate_between(now - 3, now)
    shaper.rate_bps = fraction * top
    dropped, dropped_before = time.monotonic(), shaper.dropped
    down = await h.leave_height(level, hold)
    await asyncio.sleep(max(0.0, hold - (time.monotonic() - dropped)))
    offered = shaper.rate_between(dropped + down + 1.0, time.monotonic(), offered=True)
    back_on_limited = any(t > dropped + down + 1.0 and height == level for t, height in h.frames)
    shaper.rate_bps = None
    freed = time.monotonic()
    await h.settle_on(level, 30)
    up = max(0.0, h.frames[-5][0] - freed)
    return {"layer_kbps": round(top / 1e3), "shaped_kbps": round(fraction * top / 1e3), "down_s": round(down, 2),
            "up_s": round(up, 2), "freeze_down_s": round(gap_around(h, dropped, dropped + down + 1.0), 3),
            "freeze_up_s": round(gap_around(h, freed, freed + up + 1.0), 3),
            "overshoot": round(offered / (fraction * top) - 1, 3), "tail_dropped": shaper.dropped - dropped_before,
            "climbed_back_while_limited": back_on_limited}


async def run(api: Api, base: str, subscriber: str, cycles: int, fraction: float, hold: float) -> list[dict]:
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})
    out = []
    async with chromium_page() as page:
        chrome_id = await demo_publisher(page, base, api.token(room['room_id'], 'chrome', 'moderator'))
        with Shaper(await page_media_address(page)) as shaper:
            slow = None
            if subscriber == "aiortc":
                slow = api.client_for(api.token(room["room_id"], "slow", "participant"))
                slow.media_address = shaper.address
                await slow.join()
                await slow.subscribe()
                h: Heights = Heights(await slow.wait_track(await slow.wait_stream(chrome_id, "video")))
                level = 720
            else:
                viewer = await page.context.browser.new_page()
                await viewer.goto(f"{base}/demo?token={api.token(room['room_id'], 'slow', 'viewer')}"
                                  f"&media=%s:%d" % shaper.address)
                await viewer.wait_for_function(
                    """(pid) => window.enxDemo && [...window.enxDemo.room.streams.values()].some(
                       (s) => s.participant_id === pid && s.kind === "video")""", arg=chrome_id, timeout=20000)
                stream_id = await demo_video_stream(viewer, chrome_id)
                await viewer.click(f"#tile-{stream_id}")          # pinned: a 360-line tile
                h, level = PageHeights(viewer, stream_id), 360
            try:
                await h.settle_on(level, 60)
                for i in range(cycles):
                    out.append(await cycle(h, shaper, level, fraction, hold))
                    print(f"cycle {i + 1}: {out[-1]}", flush=True)
            finally:
                h.stop()
                if slow is not None:
                    await slow.leave()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscriber", choices=("aiortc", "chromium"), default="chromium")
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--fraction", type=float, default=0.6, help="shaped rate / the top layer's rate")
    ap.add_argument("--hold", type=float, default=8.0, help="seconds the link stays shaped per cycle")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", help="the node's data directory (its node.log stays there), else a temporary one")
    args = ap.parse_args()
    if CHROMIUM is None:
        sys.exit("Debian's chromium is needed (scripts/setup test installs it)")
    with tempfile.TemporaryDirectory() as d:
        node = Node(Path(args.keep) if args.keep else Path(d))
        node.start()
        try:
            api = Api(node, node.create_app("bench"))
            cycles = asyncio.run(run(api, node.base, args.subscriber, args.cycles, args.fraction, args.hold))
        finally:
            node.stop()
    keys = ("down_s", "up_s", "freeze_down_s", "freeze_up_s", "overshoot", "tail_dropped", "layer_kbps")
    medians = {k: statistics.median(c[k] for c in cycles) for k in keys}
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "")
    medians["climbed_back_while_limited"] = sum(c["climbed_back_while_limited"] for c in cycles)
    print(f"{args.subscriber}: medians over {len(cycles)} cycles at {args.fraction:.0%} of its layer's rate: "
          f"{medians}  ({model})")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "cpu": model, "python": platform.python_version(),
                                         "subscriber": args.subscriber, "fraction": args.fraction, "hold_s": args.hold, "cycles": cycles,
                                         "medians": medians}, indent=1) + "\n")


if __name__ == "__main__":
    main()
