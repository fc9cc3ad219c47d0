"""Where each input goes in the canvas: (x, y, w, h) tiles, even-sized (I420), for the MCU's layouts.

single: the first input fills the canvas. grid: the smallest square grid that holds them (2x2 up to 4,
3x3 up to 9), row by row, a last short row centred. speaker: the active speaker large on top, the others
as thumbnails in one row below (a fifth of the height).
"""
from __future__ import annotations

import math

Tile = tuple[int, int, int, int]
LAYOUTS = ("single", "grid", "speaker")
MAX_INPUTS = 9


def _even(v: float) -> int:
    return int(v) & ~1


def tiles(layout: str, n: int, width: int, height: int, speaker: int = 0) -> list[Tile]:
    """The tiles of n inputs (index order) on a width x height canvas; `speaker` is the index shown large
    in the speaker layout. ValueError for an unknown layout or an odd canvas."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}")
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError("the canvas must be even-sized, at least 16x16")
    n = max(0, min(n, MAX_INPUTS))
    if n == 0:
        return []
    if layout == "single" or n == 1:
        return [(0, 0, width, height)] + [(0, 0, 0, 0)] * (n - 1)
    if layout == "grid":
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        tw, th = _even(width / cols), _even(height / rows)
        out = []
        for i in range(n):
            r, c = divmod(i, cols)
            in_row = min(cols, n - r * cols)
            x0 = _even((width - in_row * tw) / 2)
            out.append((x0 + c * tw, r * th, tw, th))
        return out
    # speaker
    th = _even(height / 5)
    others = [i for i in range(n) if i != speaker % n]
    tw = _even(width / max(len(others), 4))
    x0 = _even((width - len(others) * tw) / 2)
    out = [(0, 0, 0, 0)] * n
    out[speaker % n] = (0, 0, width, height - th)
    for k, i in enumerate(others):
        out[i] = (x0 + k * tw, height - th, tw, th)
    return out
