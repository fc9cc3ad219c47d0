"""Bandwidth adaptation through a shaped link, with real peers on 127.0.0.1: headless Chromium publishes
720p simulcast (q/h/f) through the demo page to a real node process; an aiortc subscriber asks for the best
there is through a token-bucket UDP shaper (tests/shaper.py: queue with tail drop), and the shaper's rate
cycles: free -> `--fraction` of the top layer's rate for `--hold` s -> free again. Per cycle:

- down: from the rate drop to the first of 5 frames in a row below the top layer (a stable lower layer);
- up: from the rate's return to the first of 5 frames in a row on the top layer again;
- freeze: the longest gap between decoded frames around each switch (a key-frame wait shows here);
- overshoot: what the node sent towards the shaped link (offered load at the shaper) over the shaped rate,
  in the limited period after the down switch; and the datagrams the shaper's queue tail-dropped.

    python bench/simulcast_adapt.py [--cycles 5] [--fraction 0.6] [--json bench/simulcast_adapt.json]

Medians over the cycles are printed and written. The subscriber is REMB-only (aiortc: abs-send-time and its
own estimator), the path the node's estimator takes for receivers without transport-cc.
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
from media_util import CHROMIUM, Api, Heights, chromium_page, node_media_address  # noqa: E402
from shaper import Shaper  # noqa: E402


def gap_around(h: Heights, t0: float, t1: float) -> float:
    times = [t for t, _ in h.frames if t0 <= t <= t1]
    return max((b - a for a, b in zip(times, times[1:])), default=t1 - t0)


async def run(api: Api, base: str, cycles: int, fraction: float, hold: float) -> list[dict]:
    room = api.room(settings={"mode": "group", "moderators": 1, "participants": 5})
    out = []
    async with chromium_page() as page:
        watcher = await api.joined(room["room_id"], "watcher", "participant")
        await watcher.subscribe()
        await page.goto(f"{base}/demo?token={api.token(room['room_id'], 'chrome', 'moderator')}")
        await page.wait_for_function("window.enxDemo && window.enxDemo.published", timeout=20000)
        chrome_id = await page.evaluate("window.enxDemo.room.joined.participant_id")
        await watcher.wait_stream(chrome_id, "video")
        with Shaper(node_media_address(watcher)) as shaper:
            slow = api.client_for(api.token(room["room_id"], "slow", "participant"))
            slow.media_address = shaper.address
            await slow.join()
            await slow.subscribe()
            h = Heights(await slow.wait_track(await slow.wait_stream(chrome_id, "video")))
            try:
                await h.settle_on(720, 60)
                for i in range(cycles):
                    await asyncio.sleep(4)
                    now = time.monotonic()
                    top = shaper.rate_between(now - 3, now)
                    shaper.rate_bps = fraction * top
                    dropped, dropped_before = time.monotonic(), shaper.dropped
                    down = await h.leave_height(720, hold)
                    await asyncio.sleep(max(0.0, hold - (time.monotonic() - dropped)))
                    t_limited = dropped + down + 1.0
                    offered = shaper.rate_between(t_limited, time.monotonic(), offered=True)
                    freeze_down = gap_around(h, dropped, dropped + down + 1.0)
                    shaper.rate_bps = None
                    freed = time.monotonic()
                    up = await h.settle_on(720, 30)
                    up = h.frames[-5][0] - freed
                    out.append({"top_kbps": round(top / 1e3), "shaped_kbps": round(fraction * top / 1e3),
                                "down_s": round(down, 2), "up_s": round(up, 2),
                                "freeze_down_s": round(freeze_down, 3),
                                "freeze_up_s": round(gap_around(h, freed, freed + up + 1.0), 3),
                                "overshoot": round(offered / (fraction * top) - 1, 3),
                                "tail_dropped": shaper.dropped - dropped_before})
                    print(f"cycle {i + 1}: {out[-1]}", flush=True)
            finally:
                h.stop()
                await slow.leave()
        await watcher.leave()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
            cycles = asyncio.run(run(api, node.base, args.cycles, args.fraction, args.hold))
        finally:
            node.stop()
    keys = ("down_s", "up_s", "freeze_down_s", "freeze_up_s", "overshoot", "tail_dropped", "top_kbps")
    medians = {k: statistics.median(c[k] for c in cycles) for k in keys}
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "")
    print(f"medians over {len(cycles)} cycles at {args.fraction:.0%} of the top layer: {medians}  ({model})")
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "cpu": model, "python": platform.python_version(),
                                         "fraction": args.fraction, "hold_s": args.hold, "cycles": cycles,
                                         "medians": medians}, indent=1) + "\n")


if __name__ == "__main__":
    main()
