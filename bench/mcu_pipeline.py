"""The MCU's cost per output frame (issue 11's compositing benchmark, the pipeline part): for 1, 4 and 9
inputs of 640x360 VP8 (a moving pattern, encoded once beforehand with libvpx), each output frame decodes one
frame of every input (PyAV), composites them into 1280x720 in the grid layout (the Cython kernel) and
encodes the canvas with the MCU's own encoder (mcu.pipeline.VideoEncoder: libvpx realtime) -- the steps
Mcu runs per frame, without the real-time pacing. The audio side per 20 ms: decode one Opus frame per input,
mix with mix-minus (the kernel), encode the full mix and every mix-minus.

Reported: medians over --repeats of the process CPU time per output frame (and per 20 ms audio frame), the
fraction of one core that 30 fps (and 50 audio frames a second) costs, and the CPU (lscpu).

    .venv/bin/python bench/mcu_pipeline.py --json bench/mcu_pipeline.json
"""
from __future__ import annotations

import argparse
import fractions
import json
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.mcu_kernels import cpu  # noqa: E402
from enx_media._native import _core  # noqa: E402
from enx_media.mcu.layout import tiles  # noqa: E402
from enx_media.mcu.pipeline import ENCODER_THREADS, FRAME_SAMPLES, AudioEncoder, Output, VideoEncoder  # noqa: E402

W, H, FPS = 1280, 720, 30
IW, IH = 640, 360


def encoded_inputs(n_frames: int) -> list[bytes]:
    """A moving pattern at 640x360, VP8 (realtime), one key frame then deltas."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = IW, IH, "yuv420p"
    enc.time_base = fractions.Fraction(1, 90000)
    enc.bit_rate = 800_000
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out = []
    yy, xx = np.mgrid[0:IH, 0:IW]
    for i in range(n_frames):
        pic = np.empty((IH * 3 // 2, IW), np.uint8)
        pic[:IH] = ((xx + 4 * i) ^ (yy + 2 * i)) & 0xFF
        pic[IH:] = 128 + (i % 32)
        f = av.VideoFrame.from_ndarray(pic, format="yuv420p")
        f.pts = i * 3000
        out += [bytes(p) for p in enc.encode(f)]
    return out


def video_pass(n: int, frames: list[bytes], count: int, threads: int = ENCODER_THREADS,
               wall: list[float] | None = None) -> float:
    decoders = [av.CodecContext.create("libvpx", "r") for _ in range(n)]
    encoder = VideoEncoder(Output(None, 0x1234, 96), W, H, FPS, 1_500_000, threads)   # packets made, not fed
    canvas = np.zeros((H * 3 // 2, W), np.uint8)
    places = tiles("grid", n, W, H)
    start, start_wall = time.process_time(), time.perf_counter()
    for k in range(count):
        data = frames[k % len(frames)] if k < len(frames) else frames[1 + (k - 1) % (len(frames) - 1)]
        for d, (x, y, w, h) in zip(decoders, places):
            for pic in d.decode(av.Packet(data)):
                _core.composite(canvas, pic.to_ndarray(format="yuv420p"), x, y, w, h, border=2, marker=6,
                                name="bench")
        encoder.encode(canvas, k * 3000, k == 0)
    if wall is not None:
        wall.append((time.perf_counter() - start_wall) / count)
    return (time.process_time() - start) / count


def audio_pass(n: int, count: int) -> float:
    src = AudioEncoder(Output(None, 0x1235, 111))
    t = np.arange(FRAME_SAMPLES * 50) / 48000
    tone = (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    payloads = []
    for k in range(50):
        payloads += [p for p in src.codec.encode(_frame(tone[k * FRAME_SAMPLES:(k + 1) * FRAME_SAMPLES], k))]
    payloads = [bytes(p) for p in payloads]
    decoders = []
    for _ in range(n):
        d = av.CodecContext.create("libopus", "r")
        d.sample_rate, d.layout, d.format = 48000, "mono", "s16"
        decoders.append(d)
    outs = [AudioEncoder(Output(None, 0x1236 + i, 111)) for i in range(n + 1)]
    frames = np.zeros((n, FRAME_SAMPLES), np.int16)
    full, minus = np.empty(FRAME_SAMPLES, np.int16), np.empty((n, FRAME_SAMPLES), np.int16)
    start = time.process_time()
    for k in range(count):
        for i, d in enumerate(decoders):
            for f in d.decode(av.Packet(payloads[k % len(payloads)])):
                a = f.to_ndarray().reshape(-1)
                frames[i, :len(a)] = a[:FRAME_SAMPLES]
        _core.mix(frames, full, minus)
        outs[0].encode(full, k * FRAME_SAMPLES)
        for i in range(n):
            outs[i + 1].encode(minus[i], k * FRAME_SAMPLES)
    return (time.process_time() - start) / count


def _frame(pcm: np.ndarray, k: int) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    f.sample_rate, f.pts, f.time_base = 48000, k * FRAME_SAMPLES, fractions.Fraction(1, 48000)
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=60, help="output frames per repeat")
    ap.add_argument("--json")
    args = ap.parse_args()
    frames = encoded_inputs(args.frames)
    result = {"cpu": cpu(), "command": " ".join(sys.argv), "canvas": f"{W}x{H}", "input": f"{IW}x{IH}",
              "video_ms_per_frame": {}, "video_core_share_at_30fps": {}, "audio_us_per_20ms": {},
              "audio_core_share": {}}
    for n in (1, 4, 9):
        costs = [video_pass(n, frames, args.frames) for _ in range(args.repeats)]
        med = statistics.median(costs)
        result["video_ms_per_frame"][n] = round(med * 1e3, 2)
        result["video_core_share_at_30fps"][n] = round(med * FPS, 3)
        print(f"video, {n} input(s): {med * 1e3:.2f} ms CPU per output frame = {med * FPS:.2f} of a core at {FPS} fps",
              flush=True)
    # the encoder's threads (the MCU's default: ENCODER_THREADS), 4 inputs: CPU and the wall time a frame takes
    result["encoder_threads"] = {}
    for threads in (1, 2):
        walls: list[float] = []
        costs = [video_pass(4, frames, args.frames, threads, walls) for _ in range(args.repeats)]
        med, wall = statistics.median(costs), statistics.median(walls)
        result["encoder_threads"][threads] = {"cpu_ms_per_frame": round(med * 1e3, 2),
                                              "wall_ms_per_frame": round(wall * 1e3, 2)}
        print(f"video, 4 inputs, encoder threads {threads}: {med * 1e3:.2f} ms CPU, {wall * 1e3:.2f} ms wall per frame",
              flush=True)
    for n in (2, 4, 10):
        costs = [audio_pass(n, 250) for _ in range(args.repeats)]
        med = statistics.median(costs)
        result["audio_us_per_20ms"][n] = round(med * 1e6, 1)
        result["audio_core_share"][n] = round(med * 50, 3)
        print(f"audio, {n} inputs: {med * 1e6:.0f} us CPU per 20 ms (decode, mix + mix-minus, {n + 1} encodes) "
              f"= {med * 50:.3f} of a core", flush=True)
    four = result["video_core_share_at_30fps"][4] + result["audio_core_share"][4]
    result["four_inputs_with_audio_core_share"] = round(four, 3)
    print(f"4 inputs of {IW}x{IH} to {W}x{H} at {FPS} fps plus the Opus mix: {four:.2f} of one core (target < 0.5)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
