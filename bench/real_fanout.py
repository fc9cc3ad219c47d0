#!/usr/bin/env python3
"""Real peers through the node (issue 13): one aiortc publisher (640x480 VP8, a moving picture, plus Opus)
and N aiortc subscribers in worker processes (bench/fanout_subscribers.py: real ICE, DTLS, SRTP and RTCP,
no decoding), all through the node's own signaling on 127.0.0.1, in a lecture room. After a warm-up, a
fixed window: the node's CPU (utime + stime of all its threads, /proc/<pid>/stat) against the RTP packets
the subscribers received in it (after SRTP): CPU per forwarded packet and packets per CPU-second; loss
from sequence gaps per subscriber and SSRC; the load generator's own CPU; the node's RSS per subscriber.

    .venv/bin/python bench/real_fanout.py --subscribers 50,100,200 --window 10 --json bench/real_fanout.json --png bench/real_fanout.png
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from aiortc import VideoStreamTrack

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from bench.mcu_kernels import cpu  # noqa: E402
from media_util import Api, ToneTrack  # noqa: E402  (the tests' real-node harness)
from node_util import Node  # noqa: E402

PER_PROCESS = 25
VIDEO_BPS = 1_200_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class MovingTrack(VideoStreamTrack):
    """640x480 frames that change everywhere (a drifting gradient with noise), so VP8 spends its bitrate."""

    def __init__(self) -> None:
        super().__init__()
        y, x = np.mgrid[0:480, 0:640]
        self.base = (x + y).astype(np.uint16)
        self.rng = np.random.default_rng(1)
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        luma = ((self.base + 3 * self.n) % 256).astype(np.uint8)
        luma ^= self.rng.integers(0, 24, luma.shape, dtype=np.uint8)
        img = np.stack([luma, np.roll(luma, 7, 1), np.roll(luma, 13, 0)], axis=2)
        self.n += 1
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def metrics(api: Api) -> dict[str, float]:
    """The node's Prometheus counters and gauges by their full name with labels."""
    out = {}
    for line in api.metrics().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of the process by thread id ("main": the asyncio thread)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue                      # a thread that ended meanwhile
        out["main" if task.name == str(pid) else task.name] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def proc_rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


async def case(api: Api, node: Node, n: int, warmup: float, window: float, profile: str | None = None,
               profile_kind: str = "perf") -> dict:
    room = api.room(settings={"mode": "lecture", "moderators": 1, "participants": max(n, 2)})
    pub = api.client(room["room_id"], "pub", "moderator")
    await pub.join()
    rss_before = proc_rss(node.proc.pid)
    pc = await pub.publish([MovingTrack(), ToneTrack()])

    async def hold_bitrate() -> None:
        # aiortc's VP8 encoder starts at 500 kbit/s and moves with REMB; the load asked for is ~1.2 Mbit/s
        while True:
            for sender in pc.getSenders():
                encoder = getattr(sender, "_RTCRtpSender__encoder", None)
                if encoder is not None and hasattr(encoder, "target_bitrate"):
                    encoder.target_bitrate = VIDEO_BPS
            await asyncio.sleep(0.5)
    holding = asyncio.ensure_future(hold_bitrate())
    tokens = [api.token(room["room_id"], f"sub{i}", "participant") for i in range(n)]
    workers = []
    for i in range(0, n, PER_PROCESS):
        plan = {"url": api.ws_url, "tokens": tokens[i:i + PER_PROCESS], "publisher": pub.participant_id}
        workers.append(await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "bench" / "fanout_subscribers.py"), json.dumps(plan),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))
    for w in workers:
        assert w.stdout is not None
        line = (await asyncio.wait_for(w.stdout.readline(), 300)).decode().strip()
        assert line == "joined", line
    print(f"  {n} subscribers joined; warming up {warmup:.0f} s", flush=True)
    await asyncio.sleep(warmup)

    async def mark() -> None:
        for w in workers:
            assert w.stdin is not None
            w.stdin.write(b"mark\n")
            await w.stdin.drain()
        for w in workers:
            assert w.stdout is not None
            assert (await w.stdout.readline()).decode().strip() == "marked"

    await mark()
    m0 = metrics(api)
    threads0 = thread_cpu(node.proc.pid)
    cpu0, t0 = proc_cpu(node.proc.pid), time.monotonic()
    profiler = None
    if profile:
        # software sampling works in a VM; py-spy shows the Python side (--gil: only what holds the GIL,
        # so waits and idle threads are left out)
        cmd = (["perf", "record", "-e", "cpu-clock", "-F", "997", "-g", "-p", str(node.proc.pid), "-o",
                f"{profile}.perf.data", "--", "sleep", str(window)] if profile_kind == "perf" else
               [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(node.proc.pid), "-d", str(int(window)), "-r", "200", "--threads", "--gil",
                "-f", "raw", "-o", f"{profile}.py-spy.txt"])
        profiler = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(window)
    if profiler is not None:
        await profiler.wait()
    await mark()
    cpu1, t1 = proc_cpu(node.proc.pid), time.monotonic()
    threads1 = thread_cpu(node.proc.pid)
    m1 = metrics(api)
    # what the node did per second in the window (its counters that moved): the breakdown's denominators
    rates = {k: round((m1[k] - m0.get(k, 0)) / (t1 - t0), 1) for k in m1
             if k.endswith("_total") or "_total{" in k if m1[k] != m0.get(k, 0)}
    rss = proc_rss(node.proc.pid)
    results = []
    for w in workers:
        assert w.stdin is not None and w.stdout is not None
        w.stdin.write(b"stop\n")
        await w.stdin.drain()
        results.append(json.loads(await asyncio.wait_for(w.stdout.readline(), 60)))
        await w.wait()
    holding.cancel()
    await pub.leave()
    subs = [s for r in results for s in r["subscribers"]]
    packets = sum(x["packets"] for s in subs for x in s.values())
    lost = sum(x["lost"] for s in subs for x in s.values())
    node_cpu = cpu1 - cpu0
    errors = [e for r in results for e in r["errors"]]
    out = {"subscribers": n, "receiving": sum(1 for s in subs if s), "window_s": round(t1 - t0, 2),
           "packets_received": packets, "packets_per_s_per_subscriber": round(packets / max(1, len(subs)) / (t1 - t0), 1),
           "lost": lost, "node_cpu_s": round(node_cpu, 3),
           "node_us_per_packet": round(node_cpu / packets * 1e6, 2) if packets else None,
           "packets_per_cpu_s": round(packets / node_cpu) if node_cpu else None,
           "node_cpu_share": round(node_cpu / (t1 - t0), 3),
           "loadgen_cpu_s": round(sum(r["cpu_s"] or 0 for r in results), 3),
           "node_rss_kib_per_subscriber": round((rss - rss_before) / 1024 / n, 1), "errors": errors[:5],
           "node_rates_per_s": rates,
           # the asyncio thread, then the others by CPU (the busiest is the media thread)
           "node_thread_cpu_share": dict(sorted(((k, round((v - threads0.get(k, 0.0)) / (t1 - t0), 4))
                                                 for k, v in threads1.items() if v - threads0.get(k, 0.0) > 0),
                                                key=lambda kv: (kv[0] != "main", -kv[1])))}
    print(f"  {n}: {out['node_us_per_packet']} µs node CPU per forwarded packet "
          f"({out['packets_per_cpu_s']} packets per CPU-s), {lost} lost, load generator "
          f"{out['loadgen_cpu_s']} CPU-s, RSS {out['node_rss_kib_per_subscriber']} KiB per subscriber; "
          f"node threads (share of a core) {out['node_thread_cpu_share']}", flush=True)
    return out


async def run(args: argparse.Namespace) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(Path(tmp))
        creds = node.create_app("bench")
        node.start()
        try:
            api = Api(node, creds)
            return [await case(api, node, int(n), args.warmup, args.window,
                               f"{args.profile}-{n}" if args.profile else None, args.profiler)
                    for n in args.subscribers.split(",")]
        finally:
            node.stop()


def plot(cases: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c["subscribers"] for c in cases], [c["node_us_per_packet"] for c in cases], "o-", label="enx-media node")
    ax.axhline(3.0, color="gray", ls="--", label="target 3 µs")
    ax.set_xlabel("aiortc subscribers")
    ax.set_ylabel("node CPU µs per forwarded packet")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", default="50,100,200")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--json")
    ap.add_argument("--png")
    ap.add_argument("--profile", help="profile the node during each window into <this>-<N>.perf.data / .py-spy.txt "
                                      "(the CPU figure then includes the profiler's overhead)")
    ap.add_argument("--profiler", choices=("perf", "py-spy"), default="perf")
    args = ap.parse_args()
    cases = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu(), "command": " ".join(sys.argv), "cases": cases},
                                              indent=1) + "\n")
    if args.png:
        plot(cases, args.png)


if __name__ == "__main__":
    main()
