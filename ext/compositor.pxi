# The MCU's compositing kernel: one decoded input picture scaled into its tile of the canvas, both I420
# (YUV 4:2:0, planar, the layout PyAV's to_ndarray(format="yuv420p") gives: a (3H/2, W) uint8 array,
# Y then U then V), with letterboxing that keeps its aspect ratio, a border and a coloured marker. Area
# averaging when the picture shrinks (every source pixel counted once, no aliasing of fine detail),
# bilinear when it grows; all without the GIL, so the MCU thread's encode and decode run beside it.
# Written here because PyAV's scaler (swscale) allocates a new frame per call and cannot place into a
# canvas; the bench (bench/mcu_kernels.py) measures it against swscale + numpy placement.

cdef struct Plane:
    uint8_t *p
    int w, h, stride


cdef inline Plane plane_of(uint8_t *base, int width, int height, int index) noexcept nogil:
    """Plane index (0 Y, 1 U, 2 V) of an I420 picture of width x height at base."""
    cdef Plane pl
    if index == 0:
        pl.p, pl.w, pl.h = base, width, height
    else:
        pl.w, pl.h = width // 2, height // 2
        pl.p = base + width * height + (index - 1) * pl.w * pl.h
    pl.stride = pl.w
    return pl


cdef void fill_rect(Plane *d, int x, int y, int w, int h, uint8_t v) noexcept nogil:
    cdef int j
    if x < 0:
        w += x
        x = 0
    if y < 0:
        h += y
        y = 0
    if x + w > d.w:
        w = d.w - x
    if y + h > d.h:
        h = d.h - y
    if w <= 0 or h <= 0:
        return
    for j in range(y, y + h):
        memset(d.p + j * d.stride + x, v, w)


cdef int scale_area(const Plane *s, Plane *d, int dx, int dy, int dw, int dh) noexcept nogil:
    """Box-average s into the dw x dh rectangle of d at (dx, dy): each destination pixel is the mean of
    the source pixels whose centres fall in it (dw <= s.w, dh <= s.h). The same size is a copy, half the
    size sums 2x2 blocks; any other size sums, row by row, each destination column's run of source pixels
    into 32-bit accumulators, then scales once per pixel. 0, or -1 without memory."""
    cdef int i, j, sy, sx, ya, yb
    cdef const uint8_t *row
    cdef const uint8_t *r1
    cdef uint8_t *out
    cdef int *col
    cdef uint32_t *acc
    cdef float *inv
    cdef float ih
    cdef uint32_t a
    if dw == s.w and dh == s.h:
        for j in range(dh):
            memcpy(d.p + (dy + j) * d.stride + dx, s.p + j * s.stride, dw)
        return 0
    if dw * 2 == s.w and dh * 2 == s.h:
        for j in range(dh):
            row = s.p + 2 * j * s.stride
            r1 = row + s.stride
            out = d.p + (dy + j) * d.stride + dx
            for i in range(dw):
                out[i] = <uint8_t>((row[2 * i] + row[2 * i + 1] + r1[2 * i] + r1[2 * i + 1] + 2) >> 2)
        return 0
    col = <int *>malloc((dw + 1) * sizeof(int))
    acc = <uint32_t *>malloc(dw * sizeof(uint32_t))
    inv = <float *>malloc(dw * sizeof(float))
    if col == NULL or acc == NULL or inv == NULL:
        free(col)
        free(acc)
        free(inv)
        return -1
    for i in range(dw + 1):
        col[i] = <int>((<int64_t>i * s.w) // dw)       # destination column i sums source columns col[i]..col[i+1]-1
    for i in range(dw):
        inv[i] = 1.0 / (col[i + 1] - col[i])
    for j in range(dh):
        ya = <int>((<int64_t>j * s.h) // dh)
        yb = <int>((<int64_t>(j + 1) * s.h) // dh)
        memset(acc, 0, dw * sizeof(uint32_t))
        for sy in range(ya, yb):
            row = s.p + sy * s.stride
            for i in range(dw):
                a = 0
                for sx in range(col[i], col[i + 1]):
                    a += row[sx]
                acc[i] += a
        ih = 1.0 / (yb - ya)
        out = d.p + (dy + j) * d.stride + dx
        for i in range(dw):
            out[i] = <uint8_t>(acc[i] * inv[i] * ih + 0.5)
    free(col)
    free(acc)
    free(inv)
    return 0


cdef int scale_bilinear(const Plane *s, Plane *d, int dx, int dy, int dw, int dh) noexcept nogil:
    """Bilinear s into the dw x dh rectangle of d at (dx, dy), sample centres aligned, 16.16 fixed point."""
    cdef int *xi = <int *>malloc(dw * sizeof(int))
    cdef int *xf = <int *>malloc(dw * sizeof(int))
    cdef int i, j, y0, y1, fy, a, b
    cdef int64_t pos
    cdef const uint8_t *r0
    cdef const uint8_t *r1
    cdef uint8_t *out
    if xi == NULL or xf == NULL:
        free(xi)
        free(xf)
        return -1
    for i in range(dw):
        pos = ((2 * i + 1) * (<int64_t>s.w << 16)) // (2 * dw) - 32768
        if pos < 0:
            pos = 0
        xi[i] = <int>(pos >> 16)
        xf[i] = <int>(pos & 0xffff)
        if xi[i] >= s.w - 1:
            xi[i] = s.w - 1
            xf[i] = 0
    for j in range(dh):
        pos = ((2 * j + 1) * (<int64_t>s.h << 16)) // (2 * dh) - 32768
        if pos < 0:
            pos = 0
        y0 = <int>(pos >> 16)
        fy = <int>(pos & 0xffff)
        y1 = y0 + 1 if y0 < s.h - 1 else y0
        r0 = s.p + y0 * s.stride
        r1 = s.p + y1 * s.stride
        out = d.p + (dy + j) * d.stride + dx
        for i in range(dw):
            b = xi[i] + 1 if xi[i] < s.w - 1 else xi[i]
            a = (r0[xi[i]] * (65536 - xf[i]) + r0[b] * xf[i]) >> 8
            b = (r1[xi[i]] * (65536 - xf[i]) + r1[b] * xf[i]) >> 8
            out[i] = <uint8_t>(((<int64_t>a * (65536 - fy) + <int64_t>b * fy) + (1 << 23)) >> 24)
    free(xi)
    free(xf)
    return 0


cdef int compose_tile(uint8_t *canvas, int cw, int ch, const uint8_t *src, int sw, int sh, int x, int y,
                      int w, int h, int border, const uint8_t *border_yuv, int marker,
                      const uint8_t *marker_yuv) noexcept nogil:
    """src (sw x sh) letterboxed into the w x h tile at (x, y) of the canvas (cw x ch), all I420 with even
    sizes and positions; the tile's bars black; a border of `border` pixels inside the tile's edge and a
    marker square of `marker` pixels at its top-left corner in the given Y, U, V colours (border 0 / marker
    0: none). 0, or -1 without memory."""
    cdef int k, dw, dh, ox, oy, sc
    cdef Plane s, d
    cdef uint8_t bk[3]
    bk[0], bk[1], bk[2] = 16, 128, 128
    # the largest picture of src's aspect ratio that fits, even-sized, centred
    if <int64_t>w * sh <= <int64_t>h * sw:
        dw = w
        dh = <int>((<int64_t>w * sh // sw) & ~1)
    else:
        dh = h
        dw = <int>((<int64_t>h * sw // sh) & ~1)
    if dw < 2 or dh < 2:
        return 0
    ox = x + ((w - dw) // 2 & ~1)
    oy = y + ((h - dh) // 2 & ~1)
    for k in range(3):
        sc = 1 if k == 0 else 2
        d = plane_of(canvas, cw, ch, k)
        s = plane_of(<uint8_t *>src, sw, sh, k)
        # the bars: the tile outside the picture
        fill_rect(&d, x // sc, y // sc, w // sc, (oy - y) // sc, bk[k])
        fill_rect(&d, x // sc, (oy + dh) // sc, w // sc, (y + h - oy - dh) // sc, bk[k])
        fill_rect(&d, x // sc, oy // sc, (ox - x) // sc, dh // sc, bk[k])
        fill_rect(&d, (ox + dw) // sc, oy // sc, (x + w - ox - dw) // sc, dh // sc, bk[k])
        if dw <= sw and dh <= sh:
            if scale_area(&s, &d, ox // sc, oy // sc, dw // sc, dh // sc) != 0:
                return -1
        elif scale_bilinear(&s, &d, ox // sc, oy // sc, dw // sc, dh // sc) != 0:
            return -1
        if border > 0:
            fill_rect(&d, x // sc, y // sc, w // sc, max(border // sc, 1), border_yuv[k])
            fill_rect(&d, x // sc, (y + h - border) // sc, w // sc, max(border // sc, 1), border_yuv[k])
            fill_rect(&d, x // sc, y // sc, max(border // sc, 1), h // sc, border_yuv[k])
            fill_rect(&d, (x + w - border) // sc, y // sc, max(border // sc, 1), h // sc, border_yuv[k])
        if marker > 0:
            fill_rect(&d, (x + 2 * border + 2) // sc, (y + 2 * border + 2) // sc, marker // sc, marker // sc,
                      marker_yuv[k])
    return 0


# The participant's name on its tile, in a built-in 5x7 bitmap font (drawn here for this project: upper case,
# digits and a little punctuation; lower case is drawn as upper case, anything else as '?').
_GLYPHS = {
    "A": ".###. #...# #...# ##### #...# #...# #...#", "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.", "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####", "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####", "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.", "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#", "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#", "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.", "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#", "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.", "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.", "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.", "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..", "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.", "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####", "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.", "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.", "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.", "9": ".###. #...# #...# .#### ....# ...#. .##..",
    " ": "..... ..... ..... ..... ..... ..... .....", "-": "..... ..... ..... ##### ..... ..... .....",
    "_": "..... ..... ..... ..... ..... ..... #####", ".": "..... ..... ..... ..... ..... .##.. .##..",
    "'": "..#.. ..#.. .#... ..... ..... ..... .....", "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...", "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "@": ".###. #...# #.### #.#.# #.### #.... .###.",
}
cdef uint8_t FONT[128][7]       # rows of 5 bits (bit 4: the leftmost column), by ASCII code


def _load_font():
    cdef int c, r
    for c in range(128):
        ch = chr(c).upper()
        rows = _GLYPHS.get(ch, _GLYPHS["?"]).split()
        for r in range(7):
            FONT[c][r] = int(rows[r].replace("#", "1").replace(".", "0"), 2)


_load_font()


cdef void draw_text(uint8_t *canvas, int cw, int ch, const uint8_t *text, int n, int x, int y, int limit_x,
                    int scale) noexcept nogil:
    """Text at (x, y) (its top-left) in white on the Y plane with a dark shadow one scale step right and
    down, its pixels' chroma neutral; glyphs 6 columns apart at `scale`; nothing at or beyond limit_x."""
    cdef Plane yp = plane_of(canvas, cw, ch, 0)
    cdef Plane up = plane_of(canvas, cw, ch, 1)
    cdef Plane vp = plane_of(canvas, cw, ch, 2)
    cdef int i, r, b, gx, pass_, px, py, ox
    cdef uint8_t code, bits
    for pass_ in range(2):                  # the shadow first, then the glyphs over it
        ox = scale if pass_ == 0 else 0
        for i in range(n):
            code = text[i] if text[i] < 128 else 63     # '?'
            gx = x + i * 6 * scale
            if gx + 5 * scale + ox > limit_x:
                break
            for r in range(7):
                bits = FONT[code][r]
                for b in range(5):
                    if not (bits >> (4 - b)) & 1:
                        continue
                    px = gx + b * scale + ox
                    py = y + r * scale + ox
                    fill_rect(&yp, px, py, scale, scale, 16 if pass_ == 0 else 235)
                    if pass_ == 1:
                        fill_rect(&up, px // 2, py // 2, max(scale // 2, 1), max(scale // 2, 1), 128)
                        fill_rect(&vp, px // 2, py // 2, max(scale // 2, 1), max(scale // 2, 1), 128)


cdef inline int _i420_dims(const uint8_t[:, ::1] a, int *w, int *h) except -1:
    if a.shape[0] % 3 or a.shape[1] % 2 or (a.shape[0] // 3 * 2) % 2 or a.shape[0] < 3:
        raise ValueError("an I420 picture is a (3H/2, W) uint8 array with even W and H")
    w[0] = <int>a.shape[1]
    h[0] = <int>(a.shape[0] // 3 * 2)
    return 0


def composite(uint8_t[:, ::1] canvas not None, const uint8_t[:, ::1] src not None, int x, int y, int w, int h,
              *, int border=0, tuple border_yuv=(235, 128, 128), int marker=0, tuple marker_yuv=(81, 90, 240),
              str name=""):
    """Scale src into the w x h tile at (x, y) of canvas, both I420 arrays as PyAV's
    VideoFrame.to_ndarray(format="yuv420p") gives them ((3H/2, W) uint8), keeping src's aspect ratio
    (black bars), with a border, a marker square (sizes in pixels, colours as Y, U, V) and `name` at the
    bottom left in the built-in font (twice as large on tiles of 300 lines or more). Area averaging
    when it shrinks, bilinear when it grows; the GIL is released. Positions and sizes are rounded down to
    even numbers; the tile must lie inside the canvas."""
    cdef int cw, ch, sw, sh, r
    cdef uint8_t by[3]
    cdef uint8_t my[3]
    cdef bytes label = name.encode("ascii", "replace")
    cdef const uint8_t *lp = label
    cdef int ln = len(label), scale, inset
    _i420_dims(canvas, &cw, &ch)
    _i420_dims(src, &sw, &sh)
    x, y, w, h = x & ~1, y & ~1, w & ~1, h & ~1
    if x < 0 or y < 0 or w < 2 or h < 2 or x + w > cw or y + h > ch:
        raise ValueError("the tile must lie inside the canvas")
    if not 0 <= border <= min(w, h) // 4 or not 0 <= marker <= min(w, h) // 2:
        raise ValueError("border up to a quarter, marker up to half of the tile's smaller side")
    for i in range(3):
        by[i] = border_yuv[i]
        my[i] = marker_yuv[i]
    scale = 2 if h >= 300 else 1
    inset = border + 2 * scale
    with nogil:
        r = compose_tile(&canvas[0, 0], cw, ch, &src[0, 0], sw, sh, x, y, w, h, border, by, marker, my)
        if r == 0 and ln and h >= 8 * scale + 2 * inset:
            draw_text(&canvas[0, 0], cw, ch, lp, ln, x + inset, y + h - inset - 8 * scale, x + w - border, scale)
    if r != 0:
        raise MemoryError()
