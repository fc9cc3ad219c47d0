"""The MCU's compositing kernel (ext/compositor.pxi) on real decoded pictures: I420 arrays as PyAV gives
them. Placement, letterboxing, shrinking (area) and growing (bilinear) against PyAV's own scaler, borders
and markers, and bad arguments."""
import av
import numpy as np
import pytest

from enx_media._native import _core

BLACK = (16, 128, 128)


def i420(rgb, w, h):
    """A w x h picture of one colour, I420 as PyAV converts it."""
    frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), rgb, np.uint8), format="rgb24")
    return frame.reformat(format="yuv420p").to_ndarray()


def planes(a):
    """Y, U, V views of an I420 array."""
    h, w = a.shape[0] * 2 // 3, a.shape[1]
    flat = a.reshape(-1)
    return (flat[:w * h].reshape(h, w), flat[w * h:w * h * 5 // 4].reshape(h // 2, w // 2),
            flat[w * h * 5 // 4:].reshape(h // 2, w // 2))


def canvas(w=1280, h=720):
    c = np.empty((h * 3 // 2, w), np.uint8)
    for p, v in zip(planes(c), BLACK):
        p[:] = v
    return c


def gradient(w, h):
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    rgb = np.stack([np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w)), np.full((h, w), 96.0)], -1)
    return av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(format="yuv420p")


def test_each_colour_lands_in_its_tile_and_nowhere_else():
    c = canvas()
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    tiles = [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 640, 360), (640, 360, 640, 360)]
    for rgb, (x, y, w, h) in zip(colours, tiles):
        _core.composite(c, i420(rgb, 640, 360), x, y, w, h)
    rgb = av.VideoFrame.from_ndarray(c, format="yuv420p").to_ndarray(format="rgb24").astype(int)
    for want, (x, y, w, h) in zip(colours, tiles):
        inner = rgb[y + 8:y + h - 8, x + 8:x + w - 8]
        assert np.abs(inner - want).max() <= 6, (want, inner.mean(axis=(0, 1)))


def test_the_aspect_ratio_is_kept_with_black_bars():
    c = canvas(640, 360)
    _core.composite(c, i420((255, 255, 255), 480, 480), 0, 0, 640, 360)    # square into 16:9
    y, u, v = planes(c)
    assert (y[:, :140] == 16).all() and (y[:, 500:] == 16).all(), "pillarbox bars"
    assert (y[:, 142:498] > 230).all(), "the picture, 360x360 in the middle"
    assert (u[:, :70] == 128).all() and (v[:, 250:] == 128).all()


@pytest.mark.parametrize("src_size,tile", [((1280, 720), (640, 360)), ((1280, 720), (480, 270)),
                                           ((320, 180), (1280, 720)), ((640, 360), (640, 360))])
def test_shrinking_and_growing_match_pyav_scaler(src_size, tile):
    """Against swscale (area when shrinking, bilinear when growing) on a smooth gradient: within a few
    levels on average, nothing far off anywhere."""
    src = gradient(*src_size)
    w, h = tile
    c = canvas(w, h)
    _core.composite(c, src.to_ndarray(), 0, 0, w, h)
    ref = src.reformat(width=w & ~1, height=h & ~1, format="yuv420p",
                       interpolation="AREA" if w <= src_size[0] else "BILINEAR").to_ndarray()
    diff = np.abs(c[: ref.shape[0], : ref.shape[1]].astype(int) - ref.astype(int))
    assert diff.mean() < 1.5 and np.percentile(diff, 99.9) <= 6, (diff.mean(), diff.max())


def test_border_and_marker_are_drawn_inside_the_tile():
    c = canvas(640, 360)
    _core.composite(c, i420((0, 0, 0), 320, 180), 320, 180, 320, 180, border=4, border_yuv=(235, 128, 128),
                    marker=12, marker_yuv=(81, 90, 240))
    y, u, v = planes(c)
    assert (y[180:184, 320:640] == 235).all() and (y[180:360, 636:640] == 235).all()
    assert (y[:180, :] == 16).all() and (y[:, :320] == 16).all(), "nothing outside the tile"
    assert (y[190:202, 330:342] == 81).all() and (v[95:101, 165:171] == 240).all(), "the marker"


def test_bad_arguments_are_errors():
    c = canvas(640, 360)
    src = i420((1, 2, 3), 64, 36)
    with pytest.raises(ValueError):
        _core.composite(c, src, 600, 0, 100, 100)                          # outside the canvas
    with pytest.raises(ValueError):
        _core.composite(c, np.zeros((35, 64), np.uint8), 0, 0, 64, 36)      # not an I420 shape
    with pytest.raises(ValueError):
        _core.composite(c, src, 0, 0, 64, 36, border=40)
    with pytest.raises((ValueError, TypeError)):
        _core.composite(c, src.astype(np.int16), 0, 0, 64, 36)
    _core.composite(c, i420((9, 9, 9), 2, 2), 0, 0, 640, 360)              # a tiny picture: grows


def test_the_name_is_written_in_the_built_in_font_inside_the_tile():
    c = canvas(640, 360)
    x, y, w, h = 320, 180, 320, 180               # under 300 lines: the font at scale 1
    _core.composite(c, i420((0, 0, 0), 320, 180), x, y, w, h, name="Ab?")
    ly, lu, lv = planes(c)
    top, left = y + h - 2 - 8, x + 2              # inset 2, 7 rows + the shadow's
    glyph_a = [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"]
    for r, row in enumerate(glyph_a):
        for b, bit in enumerate(row):
            assert (ly[top + r, left + b] == 235) == (bit == "#"), (r, b)
    glyph_b = ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."]   # lower case drawn upper
    for r, row in enumerate(glyph_b):
        assert "".join("#" if ly[top + r, left + 6 + b] == 235 else "." for b in range(5)) == row
    assert (lu[top // 2:(top + 7) // 2, left // 2:(left + 16) // 2] == 128).all(), "no tint under the text"
    assert (ly[:y, :] == 16).all() and (ly[:, :x] == 16).all(), "nothing outside the tile"
    # a name longer than the tile is cut at its edge; non-ASCII is drawn as '?'
    c2 = canvas(640, 360)
    _core.composite(c2, i420((0, 0, 0), 64, 36), 0, 0, 64, 36, name="Ünïcode name far too long")
    assert (planes(c2)[0][:, 64:] == 16).all()
    c3 = canvas(640, 360)
    _core.composite(c3, i420((0, 0, 0), 640, 360), 0, 0, 640, 360, name="X")
    assert (planes(c3)[0][360 - 4 - 16:360 - 4 - 2, 4:14] == 235).any(), "twice as large on a large tile"
