"""The MCU's kernels, measured side by side in one run (issue 11's compositing and mixing benchmarks, the
kernel part; the end-to-end MCU comes with its pipeline).

Compositing: 1, 4 and 9 inputs of 1280x720 (I420) placed into a 1280x720 canvas in the grid layout, per
output frame, three ways on the same pictures:
  - kernel: enx_media's Cython kernel (ext/compositor.pxi: area averaging, GIL released), into the canvas;
  - swscale: PyAV's scaler (VideoFrame.reformat, interpolation AREA) to the tile's size, then numpy copies of
    its planes into the canvas;
  - numpy: plain numpy, nearest-neighbour index gathering into the canvas (the simplest numpy version).
Mixing: 2, 10 and 50 inputs of one 20 ms frame (960 samples, 48 kHz), full mix alone and with mix-minus,
the kernel (ext/mixer.pxi) against numpy (int32 sum and clip).

Reported: medians over --repeats of the mean time per call, in microseconds, and the CPU (lscpu).

    .venv/bin/python bench/mcu_kernels.py --json bench/mcu_kernels.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from enx_media._native import _core  # noqa: E402
from enx_media.mcu.layout import tiles  # noqa: E402

W, H = 1280, 720


def cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(x.split(":", 1)[1].strip() for x in out.splitlines() if x.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def picture(seed: int) -> av.VideoFrame:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def planes(a: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = a.reshape(-1)
    return (flat[:w * h].reshape(h, w), flat[w * h:w * h * 5 // 4].reshape(h // 2, w // 2),
            flat[w * h * 5 // 4:].reshape(h // 2, w // 2))


def timed(fn, repeats: int, inner: int) -> float:
    """Median over repeats of the mean µs per call of fn (inner calls per repeat)."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        runs.append((time.perf_counter() - t) / inner * 1e6)
    return statistics.median(runs)


def composite_cases(n: int, repeats: int) -> dict[str, float]:
    frames = [picture(i) for i in range(n)]
    arrays = [f.to_ndarray() for f in frames]
    layout = tiles("grid", n, W, H)
    canvas = np.zeros((H * 3 // 2, W), np.uint8)
    cy, cu, cv = planes(canvas, W, H)

    def kernel() -> None:
        for a, (x, y, w, h) in zip(arrays, layout):
            _core.composite(canvas, a, x, y, w, h)

    def swscale() -> None:
        for f, (x, y, w, h) in zip(frames, layout):
            small = f.reformat(width=w, height=h, format="yuv420p", interpolation="AREA").to_ndarray()
            sy, su, sv = planes(small, w, h)
            cy[y:y + h, x:x + w] = sy
            cu[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = su
            cv[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = sv

    gathers = []
    for (x, y, w, h) in layout:
        gathers.append(((np.arange(h) * H // h), (np.arange(w) * W // w),
                        (np.arange(h // 2) * (H // 2) // (h // 2)), (np.arange(w // 2) * (W // 2) // (w // 2))))

    def numpy_nearest() -> None:
        for a, (x, y, w, h), (ry, rx, ryc, rxc) in zip(arrays, layout, gathers):
            sy, su, sv = planes(a, W, H)
            cy[y:y + h, x:x + w] = sy[ry][:, rx]
            cu[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = su[ryc][:, rxc]
            cv[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = sv[ryc][:, rxc]

    inner = 20
    return {"kernel_us": timed(kernel, repeats, inner), "swscale_us": timed(swscale, repeats, inner),
            "numpy_nearest_us": timed(numpy_nearest, repeats, inner)}


def mix_cases(n: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(n)
    inputs = rng.integers(-8000, 8000, (n, 960), dtype=np.int16)
    full = np.empty(960, np.int16)
    minus = np.empty((n, 960), np.int16)

    def numpy_full() -> None:
        np.clip(inputs.astype(np.int32).sum(axis=0), -32768, 32767, out=full, casting="unsafe")

    def numpy_minus() -> None:
        total = inputs.astype(np.int32).sum(axis=0)
        np.clip(total, -32768, 32767, out=full, casting="unsafe")
        np.clip(total[None, :] - inputs, -32768, 32767, out=minus, casting="unsafe")

    inner = 500
    return {"kernel_full_us": timed(lambda: _core.mix(inputs, full), repeats, inner),
            "numpy_full_us": timed(numpy_full, repeats, inner),
            "kernel_minus_us": timed(lambda: _core.mix(inputs, full, minus), repeats, inner),
            "numpy_minus_us": timed(numpy_minus, repeats, inner)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {"cpu": cpu(), "canvas": f"{W}x{H}", "inputs": f"{W}x{H}", "composite": {}, "mix": {}}
    for n in (1, 4, 9):
        r = out["composite"][n] = composite_cases(n, args.repeats)
        print(f"composite {n} input(s) -> {W}x{H}: kernel {r['kernel_us']:8.0f} µs  swscale+copy "
              f"{r['swscale_us']:8.0f} µs  numpy nearest {r['numpy_nearest_us']:8.0f} µs per output frame")
    for n in (2, 10, 50):
        r = out["mix"][n] = mix_cases(n, args.repeats)
        print(f"mix {n:2d} inputs x 20 ms: kernel {r['kernel_full_us']:6.1f} µs (numpy {r['numpy_full_us']:6.1f}); "
              f"with mix-minus kernel {r['kernel_minus_us']:6.1f} µs (numpy {r['numpy_minus_us']:6.1f})")
    print(f"({out['cpu']}, medians of {args.repeats})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
