#!/usr/bin/env python3
"""Recording's CPU cost per recorded stream (issue 12's measure).

S camera streams (640x480 VP8 at ~1.2 Mbit/s, 30 fps, a moving pattern) and S Opus voices (48 kbit/s, 20 ms
frames), encoded once beforehand by the MCU's encoders and packetized as RTP, are fed in real time to S + S
Python-fed producers of a native worker; the node's Recorder records every one of them to its own file
(WebM), exactly as in a room: the core's tap, the recorder's thread, the frame buffers, PyAV's muxer.
Reported per stream and media second: the recorder thread's CPU (utime + stime of that thread, from
/proc), which is all the recording adds to the node; the feeding (what a publisher's packets cost the node
anyway) is left out. Medians over repeats.

    .venv/bin/python bench/recording.py --streams 1,4,16 --seconds 10 --repeats 3 --json bench/recording.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.mcu_kernels import cpu  # noqa: E402
from enx_media.mcu.pipeline import AudioEncoder, Output, VideoEncoder  # noqa: E402
from enx_media.recording.recorder import Recorder, StreamInfo  # noqa: E402
from enx_media.sfu.worker import Worker  # noqa: E402
from enx_media.store import SqliteStore  # noqa: E402

FPS, W, H = 30, 640, 480
CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def clip(seconds: int) -> tuple[list[list[bytes]], list[list[bytes]]]:
    """Per video frame and per 20 ms of audio, the RTP packets (SSRC 1 and 2: rewritten per stream)."""
    video = VideoEncoder(Output(None, 1, 96), W, H, FPS, 1_200_000, 1)
    audio = AudioEncoder(Output(None, 2, 111))
    y, x = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(seconds * FPS):
        luma = ((x + 4 * i) % 256 ^ (y // 8) * 16).astype(np.uint8)
        canvas = np.concatenate([luma, np.full((H // 2, W), 128, np.uint8)])
        packets, _ = video.encode(canvas, i * 90000 // FPS, i == 0)
        frames.append(packets)
    t = np.arange(960) / 48000
    voice = [audio.encode((8000 * np.sin(2 * np.pi * 440 * (t + k * 0.02))).astype(np.int16), k * 960)
             for k in range(seconds * 50)]
    return frames, voice


def restamp(packets: list[bytes], ssrc: int) -> list[bytes]:
    tag = ssrc.to_bytes(4, "big")
    return [p[:8] + tag + p[12:] for p in packets]


async def run(streams: int, frames: list[list[bytes]], voice: list[list[bytes]], seconds: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "enx.sqlite3")
        worker = Worker("127.0.0.1", 0)
        recorder = Recorder(worker, store, Path(tmp) / "recordings", lambda: None)
        recorder.start()
        assert recorder._thread is not None and recorder._thread.native_id is not None
        feeds, infos = [], []
        for i in range(streams):
            for kind, codec, clip_, ssrc in (("video", "vp8", frames, 0x1000 + i), ("audio", "opus", voice, 0x2000 + i)):
                p = worker.create_direct_producer(codec, ssrc)
                handle = SimpleNamespace(recorded=False, top_ssrc=ssrc)
                infos.append(StreamInfo(p, handle, f"{kind}{i}", f"p{i}", f"user{i}", kind, "camera", codec))
                feeds.append((p, [restamp(x, ssrc) for x in clip_], 1 / FPS if kind == "video" else 0.02))
        take = recorder.begin("app", "room", "session", "bench", infos)
        tid = recorder._thread.native_id
        before = thread_cpu(tid)
        start = time.monotonic()
        due = [0] * len(feeds)
        while time.monotonic() - start < seconds:
            now = time.monotonic() - start
            for k, (p, packets, step) in enumerate(feeds):
                while due[k] < len(packets) and due[k] * step <= now:
                    worker.feed(p, packets[due[k]])
                    due[k] += 1
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.2)                 # the last reads
        spent = thread_cpu(tid) - before
        recorder.end(take)
        await recorder.stop()
        await asyncio.sleep(0.1)
        files = store.recordings.find("app", session_id="session")
        sizes = {f.kind: f.bytes for f in files}
        store.close()
    return {"streams": streams, "recorder_cpu_s": round(spent, 3),
            "cpu_ms_per_stream_per_media_s": round(spent / (2 * streams) / seconds * 1e3, 3),
            "files": len(files), "ready": sum(f.state == "ready" for f in files),
            "video_bytes": sizes.get("video"), "audio_bytes": sizes.get("audio")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", default="1,4,16", help="camera+voice pairs recorded at once")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    print("encoding the clip ...", flush=True)
    frames, voice = clip(args.seconds)
    cases = []
    for n in (int(x) for x in args.streams.split(",")):
        runs = [asyncio.run(run(n, frames, voice, args.seconds)) for _ in range(args.repeats)]
        med = statistics.median(r["cpu_ms_per_stream_per_media_s"] for r in runs)
        print(f"{n} x (video + audio): recorder {med} ms CPU per stream per media second "
              f"({[r['cpu_ms_per_stream_per_media_s'] for r in runs]}); files {runs[-1]['ready']}/{runs[-1]['files']} "
              f"ready", flush=True)
        cases.append({"pairs": n, "median_cpu_ms_per_stream_per_media_s": med, "runs": runs})
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu(), "command": " ".join(sys.argv), "cases": cases},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
