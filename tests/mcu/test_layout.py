"""The MCU's layouts (enx_media.mcu.layout): tiles inside the canvas, even-sized, not overlapping."""
import pytest

from enx_media.mcu.layout import tiles


def overlap(a, b):
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@pytest.mark.parametrize("layout", ["single", "grid", "speaker"])
@pytest.mark.parametrize("n", range(1, 10))
def test_tiles_fit_the_canvas_even_and_apart(layout, n):
    out = tiles(layout, n, 1280, 720, speaker=n - 1)
    assert len(out) == n
    shown = [t for t in out if t[2]]
    for x, y, w, h in shown:
        assert 0 <= x and 0 <= y and x + w <= 1280 and y + h <= 720
        assert x % 2 == y % 2 == w % 2 == h % 2 == 0
    assert not any(overlap(a, b) for i, a in enumerate(shown) for b in shown[i + 1:])


def test_grids_and_the_speaker_layout():
    assert tiles("grid", 4, 1280, 720) == [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 640, 360),
                                           (640, 360, 640, 360)]
    assert len({(w, h) for _, _, w, h in tiles("grid", 9, 1280, 720)}) == 1          # 3x3
    three = tiles("grid", 3, 1280, 720)
    assert three[2] == (320, 360, 640, 360), "a short last row is centred"
    sp = tiles("speaker", 3, 1280, 720, speaker=1)
    assert sp[1] == (0, 0, 1280, 576) and sp[0][1] == sp[2][1] == 576
    with pytest.raises(ValueError):
        tiles("mosaic", 2, 1280, 720)
