"""Line plots as PNG files with nothing but NumPy: the plots of ``gpugrad train``, ``diagnose`` and
``bench`` (``gpugrad/diagnostics.py``), written by ``viz.write_png``, so a plain install draws them.

A :class:`Figure` holds panels side by side; a :class:`Panel` holds lines on linear or log axes, with
optional markers and dashes, a legend placed in the emptiest corner, tick labels, axis labels and a
title. Lines are drawn at 3x resolution and averaged down (anti-aliased); text uses a built-in 5x7
pixel font (ASCII), drawn at 2x. Example::

    fig = Figure(ncols=1, title="loss")
    ax = fig.panel(xlabel="epoch", ylabel="loss", yscale="log")
    ax.line([1, 2, 3], [1.0, 0.3, 0.1], label="train", marker="o")
    fig.save("loss.png")
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from .viz import write_png

__all__ = ["Figure", "Panel", "PALETTE", "viridis"]

# 10 distinct colours (matplotlib's "tab10"), as RGB in [0, 1]
PALETTE = tuple(tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)) for h in (
    "1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf"))
_VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]) / 255.0
_INK, _GRID, _FRAME = (0.1, 0.1, 0.1), (0.88, 0.88, 0.88), (0.35, 0.35, 0.35)
_SS = 3      # lines are drawn at this many times the resolution, then averaged down
_TEXT = 2    # font pixels per glyph pixel
_GW, _GH = 5, 9  # glyph cell: 5 wide, 7 above the baseline and 2 below


def viridis(t: float) -> tuple[float, float, float]:
    """A colour of the viridis map at ``t`` in [0, 1] (dark blue to yellow)."""
    t = min(max(float(t), 0.0), 1.0) * (len(_VIRIDIS) - 1)
    i = min(int(t), len(_VIRIDIS) - 2)
    c = _VIRIDIS[i] + (t - i) * (_VIRIDIS[i + 1] - _VIRIDIS[i])
    return (float(c[0]), float(c[1]), float(c[2]))


# ------------------------------------------------------------------------------------------------ font
# The printable ASCII characters, 16 per block: each glyph is 5 columns ('#' ink, '.' blank) by 9 rows,
# glyphs separated by '|'. Rows 0-6 stand on the baseline; rows 7-8 hold descenders.
_FONT_BLOCKS = (
    (' !"#$%&\'()*+,-./', """
.....|..#..|.#.#.|.#.#.|..#..|##...|.##..|..#..|...#.|.#...|.....|.....|.....|.....|.....|.....
.....|..#..|.#.#.|.#.#.|.####|##..#|#..#.|..#..|..#..|..#..|..#..|..#..|.....|.....|.....|....#
.....|..#..|.....|#####|#.#..|...#.|#.#..|.....|.#...|...#.|#.#.#|..#..|.....|.....|.....|...#.
.....|..#..|.....|.#.#.|.###.|..#..|.#...|.....|.#...|...#.|.###.|#####|.....|#####|.....|..#..
.....|..#..|.....|#####|..#.#|.#...|#.#.#|.....|.#...|...#.|#.#.#|..#..|.....|.....|.....|.#...
.....|.....|.....|.#.#.|####.|#..##|#..#.|.....|..#..|..#..|..#..|..#..|..##.|.....|..##.|#....
.....|..#..|.....|.#.#.|..#..|...##|.##.#|.....|...#.|.#...|.....|.....|..##.|.....|..##.|.....
.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|...#.|.....|.....|.....
.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|..#..|.....|.....|.....
"""),
    ('0123456789:;<=>?', """
.###.|..#..|.###.|.###.|...#.|#####|..##.|#####|.###.|.###.|.....|.....|...#.|.....|.#...|.###.
#...#|.##..|#...#|#...#|..##.|#....|.#...|....#|#...#|#...#|..##.|..##.|..#..|.....|..#..|#...#
#..##|..#..|....#|....#|.#.#.|####.|#....|...#.|#...#|#...#|..##.|..##.|.#...|#####|...#.|....#
#.#.#|..#..|...#.|..##.|#..#.|....#|####.|..#..|.###.|.####|.....|.....|#....|.....|....#|...#.
##..#|..#..|..#..|....#|#####|....#|#...#|.#...|#...#|....#|..##.|.....|.#...|#####|...#.|..#..
#...#|..#..|.#...|#...#|...#.|#...#|#...#|.#...|#...#|...#.|..##.|..##.|..#..|.....|..#..|.....
.###.|.###.|#####|.###.|...#.|.###.|.###.|.#...|.###.|.##..|.....|..##.|...#.|.....|.#...|..#..
.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|...#.|.....|.....|.....|.....
.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|..#..|.....|.....|.....|.....
"""),
    ('@ABCDEFGHIJKLMNO', """
.###.|.###.|####.|.###.|####.|#####|#####|.###.|#...#|.###.|..###|#...#|#....|#...#|#...#|.###.
#...#|#...#|#...#|#...#|#...#|#....|#....|#...#|#...#|..#..|...#.|#..#.|#....|##.##|#...#|#...#
#.###|#...#|#...#|#....|#...#|#....|#....|#....|#...#|..#..|...#.|#.#..|#....|#.#.#|##..#|#...#
#.#.#|#####|####.|#....|#...#|####.|####.|#.###|#####|..#..|...#.|##...|#....|#.#.#|#.#.#|#...#
#.###|#...#|#...#|#....|#...#|#....|#....|#...#|#...#|..#..|...#.|#.#..|#....|#...#|#..##|#...#
#....|#...#|#...#|#...#|#...#|#....|#....|#...#|#...#|..#..|#..#.|#..#.|#....|#...#|#...#|#...#
.###.|#...#|####.|.###.|####.|#####|#....|.####|#...#|.###.|.##..|#...#|#####|#...#|#...#|.###.
.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....
.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....
"""),
    ('PQRSTUVWXYZ[\\]^_', """
####.|.###.|####.|.####|#####|#...#|#...#|#...#|#...#|#...#|#####|.###.|.....|.###.|..#..|.....
#...#|#...#|#...#|#....|..#..|#...#|#...#|#...#|#...#|#...#|....#|.#...|#....|...#.|.#.#.|.....
#...#|#...#|#...#|#....|..#..|#...#|#...#|#...#|.#.#.|.#.#.|...#.|.#...|.#...|...#.|#...#|.....
####.|#...#|####.|.###.|..#..|#...#|#...#|#.#.#|..#..|..#..|..#..|.#...|..#..|...#.|.....|.....
#....|#.#.#|#.#..|....#|..#..|#...#|#...#|#.#.#|.#.#.|..#..|.#...|.#...|...#.|...#.|.....|.....
#....|#..#.|#..#.|....#|..#..|#...#|.#.#.|#.#.#|#...#|..#..|#....|.#...|....#|...#.|.....|.....
#....|.##.#|#...#|####.|..#..|.###.|..#..|.#.#.|#...#|..#..|#####|.###.|.....|.###.|.....|.....
.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|#####
.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....|.....
"""),
    ('`abcdefghijklmno', """
.#...|.....|#....|.....|....#|.....|..##.|.....|#....|..#..|...#.|#....|.##..|.....|.....|.....
..#..|.....|#....|.....|....#|.....|.#..#|.....|#....|.....|.....|#....|..#..|.....|.....|.....
.....|.###.|#.##.|.###.|.##.#|.###.|.#...|.####|#.##.|.##..|..##.|#..#.|..#..|##.#.|#.##.|.###.
.....|....#|##..#|#....|#..##|#...#|###..|#...#|##..#|..#..|...#.|#.#..|..#..|#.#.#|##..#|#...#
.....|.####|#...#|#....|#...#|#####|.#...|#...#|#...#|..#..|...#.|##...|..#..|#.#.#|#...#|#...#
.....|#...#|#...#|#...#|#...#|#....|.#...|#...#|#...#|..#..|...#.|#.#..|..#..|#.#.#|#...#|#...#
.....|.####|####.|.###.|.####|.###.|.#...|.####|#...#|.###.|...#.|#..#.|.###.|#.#.#|#...#|.###.
.....|.....|.....|.....|.....|.....|.....|....#|.....|.....|#..#.|.....|.....|.....|.....|.....
.....|.....|.....|.....|.....|.....|.....|.###.|.....|.....|.##..|.....|.....|.....|.....|.....
"""),
    ('pqrstuvwxyz{|}~', """
.....|.....|.....|.....|.#...|.....|.....|.....|.....|.....|.....|...##|..#..|##...|.....
.....|.....|.....|.....|.#...|.....|.....|.....|.....|.....|.....|..#..|..#..|..#..|.....
####.|.####|#.##.|.####|###..|#...#|#...#|#...#|#...#|#...#|#####|..#..|..#..|..#..|.#...
#...#|#...#|##..#|#....|.#...|#...#|#...#|#...#|.#.#.|#...#|...#.|.#...|..#..|...#.|#.#.#
#...#|#...#|#....|.###.|.#...|#...#|#...#|#.#.#|..#..|#...#|..#..|..#..|..#..|..#..|...#.
#...#|#...#|#....|....#|.#..#|#..##|.#.#.|#.#.#|.#.#.|#...#|.#...|..#..|..#..|..#..|.....
####.|.####|#....|####.|..##.|.##.#|..#..|.#.#.|#...#|.####|#####|...##|..#..|##...|.....
#....|....#|.....|.....|.....|.....|.....|.....|.....|....#|.....|.....|..#..|.....|.....
#....|....#|.....|.....|.....|.....|.....|.....|.....|.###.|.....|.....|.....|.....|.....
"""),
)


def _parse_font() -> dict[str, np.ndarray]:
    font = {}
    for chars, text in _FONT_BLOCKS:
        rows = [r.split("|") for r in text.strip("\n").splitlines()]
        for k, ch in enumerate(chars):
            font[ch] = np.array([[c == "#" for c in row[k]] for row in rows], dtype=bool)
    return font


_FONT = _parse_font()


def _text_width(s: str, scale: int = _TEXT) -> int:
    return max(0, (len(s) * (_GW + 1) - 1) * scale)


def _text_bitmap(s: str, scale: int = _TEXT) -> np.ndarray:
    """Boolean ink mask of ``s`` in the built-in font, ``(9 * scale, width)``; other characters print as '?'."""
    cells = [_FONT.get(ch, _FONT["?"]) for ch in s]
    gap = np.zeros((_GH, 1), dtype=bool)
    parts = [p for c in cells for p in (c, gap)][:-1] or [np.zeros((_GH, 0), dtype=bool)]
    return np.kron(np.concatenate(parts, axis=1), np.ones((scale, scale), dtype=bool))


def _wrap(s: str, width: int, scale: int = _TEXT) -> list[str]:
    """``s`` broken at spaces into lines no wider than ``width`` pixels (a long word stays whole)."""
    lines: list[str] = []
    for word in s.split(" "):
        if lines and _text_width(lines[-1] + " " + word, scale) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


# ------------------------------------------------------------------------------------------------ ticks
def _nice_step(span: float, n: int) -> float:
    raw = span / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw)


def _linear_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = _nice_step(hi - lo, n)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 12) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt_linear(v: float, step: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9) + (1 if str(step).rstrip("0").endswith("25") else 0))
    return f"{v:,.{decimals}f}"


def _fmt_power(v: float) -> str:
    """A log-axis tick: plain from 0.001 to 5000 (0.01, 20, 500), else mantissa and exponent (1e-7, 2e5)."""
    if 1e-3 - 1e-12 <= v < 1e4:
        return f"{v:g}"
    return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of a log10 axis from ``lo`` to ``hi`` (log10 values): powers of ten, thinned to at most 7;
    1-2-5 steps inside a short range."""
    k0, k1 = math.ceil(lo - 1e-9), math.floor(hi + 1e-9)
    if k1 - k0 >= 1:
        every = max(1, math.ceil((k1 - k0 + 1) / 7))
        return [10.0 ** k for k in range(k0, k1 + 1) if (k - k0) % every == 0]
    ticks = [m * 10.0 ** k for k in range(k0 - 1, k1 + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if lo - 1e-9 <= math.log10(t) <= hi + 1e-9]
    return ticks if len(ticks) >= 2 else [10.0 ** lo, 10.0 ** hi]


# ------------------------------------------------------------------------------------------------ panels
class _Series:
    def __init__(self, x, y, color, label, marker, dashed, width, alpha) -> None:
        self.x = np.asarray(x, dtype=np.float64).ravel()
        self.y = np.asarray(y, dtype=np.float64).ravel()
        if self.x.shape != self.y.shape:
            raise ValueError(f"plot: x and y differ in length ({self.x.size} and {self.y.size})")
        self.color, self.label, self.marker, self.dashed = color, label, marker, dashed
        self.width, self.alpha = float(width), float(alpha)


class Panel:
    """One set of axes: lines on linear or log scales (``"linear"``, ``"log"``; x also ``"log2"``)."""

    def __init__(self, title: str = "", xlabel: str = "", ylabel: str = "", xscale: str = "linear",
                 yscale: str = "linear", xticks: Sequence[float] | None = None) -> None:
        if xscale not in ("linear", "log", "log2") or yscale not in ("linear", "log"):
            raise ValueError(f"plot: unknown scale xscale={xscale!r}, yscale={yscale!r}")
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        self.xscale, self.yscale, self.xticks = xscale, yscale, xticks
        self.series: list[_Series] = []
        self.hlines: list[_Series] = []
        self.legend = True

    def line(self, x: Sequence[float], y: Sequence[float], color: tuple | None = None, label: str | None = None,
             marker: str | None = None, dashed: bool = False, width: float = 1.5, alpha: float = 1.0) -> None:
        """A polyline through the finite points (a NaN or, on a log axis, a value <= 0 breaks it);
        ``marker`` ``"o"`` or ``"s"`` also draws each point."""
        if marker not in (None, "o", "s"):
            raise ValueError(f"plot: marker must be None, 'o' or 's', got {marker!r}")
        color = PALETTE[len(self.series) % len(PALETTE)] if color is None else color
        self.series.append(_Series(x, y, color, label, marker, dashed, width, alpha))

    def hline(self, y: float, color: tuple = (0.84, 0.15, 0.16), label: str | None = None,
              dashed: bool = True) -> None:
        """A horizontal line across the panel at ``y``."""
        self.hlines.append(_Series([0.0], [y], color, label, None, dashed, 1.2, 1.0))

    # ---- scales
    def _fx(self, v: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.xscale == "linear":
                return v
            return np.where(v > 0, np.log2(v) if self.xscale == "log2" else np.log10(v), np.nan)

    def _fy(self, v: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return v if self.yscale == "linear" else np.where(v > 0, np.log10(v), np.nan)

    def _limits(self) -> tuple[float, float, float, float]:
        xs = np.concatenate([self._fx(s.x) for s in self.series] or [np.zeros(0)])
        ys = np.concatenate([self._fy(s.y) for s in self.series + self.hlines] or [np.zeros(0)])
        xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
        x0, x1 = (float(xs.min()), float(xs.max())) if xs.size else (0.0, 1.0)
        y0, y1 = (float(ys.min()), float(ys.max())) if ys.size else (0.0, 1.0)
        if x1 - x0 < 1e-12:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if y1 - y0 < 1e-12:
            pad = 0.5 if self.yscale == "log" else max(abs(y0) * 0.1, 0.5)
            y0, y1 = y0 - pad, y1 + pad
        px, py = 0.03 * (x1 - x0), 0.06 * (y1 - y0)
        return x0 - px, x1 + px, y0 - py, y1 + py

    def _ticks(self, lims) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
        """(position in axis units, label) of the x and y ticks."""
        x0, x1, y0, y1 = lims
        if self.xticks is not None:
            xt = [(float(self._fx(np.array([t]))[0]), f"{t:g}") for t in self.xticks]
        elif self.xscale == "linear":
            ts = _linear_ticks(x0, x1)
            xt = [(t, _fmt_linear(t, ts[1] - ts[0] if len(ts) > 1 else 1.0)) for t in ts]
        else:
            base = 2.0 if self.xscale == "log2" else 10.0
            xt = [(k, f"{base ** k:g}") for k in range(math.ceil(x0), math.floor(x1) + 1)]
        if self.yscale == "linear":
            ts = _linear_ticks(y0, y1)
            yt = [(t, _fmt_linear(t, ts[1] - ts[0] if len(ts) > 1 else 1.0)) for t in ts]
        else:
            yt = [(math.log10(t), _fmt_power(t)) for t in _log_ticks(y0, y1)]
        return ([(p, s) for p, s in xt if x0 <= p <= x1], [(p, s) for p, s in yt if y0 <= p <= y1])


# ------------------------------------------------------------------------------------------------ raster
def _stamp(mask: np.ndarray, px: np.ndarray, py: np.ndarray, radius: float, round_: bool = True) -> None:
    """Set ``mask`` inside a disc (or square) of ``radius`` around each point (pixel coordinates)."""
    if px.size == 0:
        return
    r = max(radius, 0.5)
    k = int(math.ceil(r))
    oy, ox = np.mgrid[-k:k + 1, -k:k + 1]
    keep = (ox ** 2 + oy ** 2 <= r * r + 0.25) if round_ else (np.maximum(abs(ox), abs(oy)) <= r)
    ox, oy = ox[keep], oy[keep]
    h, w = mask.shape
    for start in range(0, px.size, 20000):  # bounded temporaries
        cx = np.rint(px[start:start + 20000])[:, None].astype(np.int64) + ox[None, :]
        cy = np.rint(py[start:start + 20000])[:, None].astype(np.int64) + oy[None, :]
        ok = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        mask[cy[ok], cx[ok]] = True


def _polyline_points(px: np.ndarray, py: np.ndarray, dashed: bool, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every half pixel along the segments between consecutive finite points."""
    ok = np.isfinite(px[:-1]) & np.isfinite(py[:-1]) & np.isfinite(px[1:]) & np.isfinite(py[1:])
    x0, y0, x1, y1 = px[:-1][ok], py[:-1][ok], px[1:][ok], py[1:][ok]
    if x0.size == 0:
        return np.zeros(0), np.zeros(0)
    seg = np.hypot(x1 - x0, y1 - y0)
    n = np.ceil(seg / 0.5).astype(np.int64) + 1
    idx = np.repeat(np.arange(x0.size), n)
    t = (np.arange(idx.size) - np.repeat(np.cumsum(n) - n, n)) / np.maximum(np.repeat(n - 1, n), 1)
    xs, ys = x0[idx] + t * (x1 - x0)[idx], y0[idx] + t * (y1 - y0)[idx]
    if dashed:  # 6 on, 4 off (final pixels), measured along the whole line
        along = (np.concatenate([[0.0], np.cumsum(seg)[:-1]])[idx] + t * seg[idx]) / scale
        on = (along % 10.0) < 6.0
        xs, ys = xs[on], ys[on]
    return xs, ys


class Figure:
    """Panels side by side and an optional title; ``save(path)`` writes the PNG."""

    def __init__(self, ncols: int = 1, width: int | None = None, height: int = 420, title: str = "") -> None:
        self.ncols = int(ncols)
        self.width = int(width if width is not None else 120 + 480 * self.ncols)
        self.height = int(height)
        self.title = title
        self.panels: list[Panel] = []

    def panel(self, **kwargs) -> Panel:
        """A new :class:`Panel` (keyword arguments as its constructor), left to right."""
        if len(self.panels) >= self.ncols:
            raise ValueError(f"plot: this figure has {self.ncols} panel(s)")
        p = Panel(**kwargs)
        self.panels.append(p)
        return p

    def render(self) -> np.ndarray:
        """The image, ``(height, width, 3)`` float in [0, 1]."""
        img = np.ones((self.height, self.width, 3), dtype=np.float64)
        top = 8
        if self.title:
            for line in _wrap(self.title, self.width - 20):
                _put_text(img, line, self.width // 2, top, _INK, "center")
                top += (_GH + 3) * _TEXT
        col_w = self.width // self.ncols
        for i, p in enumerate(self.panels):
            _draw_panel(img, p, i * col_w, top, col_w, self.height - top)
        return img

    def save(self, path: str | os.PathLike) -> str:
        """Write the figure as a PNG file (atomically); returns the path."""
        return write_png(path, self.render())


def _put_text(img: np.ndarray, s: str, x: int, y: int, color, anchor: str = "left", vertical: bool = False) -> None:
    """Draw ``s`` with its top-left (or top-centre / top-right) corner at (x, y); ``vertical`` turns it
    90 degrees counter-clockwise, centred on y."""
    bm = _text_bitmap(s)
    if vertical:
        bm = np.rot90(bm)
        x0, y0 = x, y - bm.shape[0] // 2
    else:
        x0 = x - (bm.shape[1] // 2 if anchor == "center" else bm.shape[1] if anchor == "right" else 0)
        y0 = y
    h, w = img.shape[:2]
    ys, xs = np.nonzero(bm)
    ys, xs = ys + y0, xs + x0
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    img[ys[ok], xs[ok]] = color


def _draw_panel(img: np.ndarray, p: Panel, left: int, top: int, width: int, height: int) -> None:
    lims = p._limits()
    xt, yt = p._ticks(lims)
    x0, x1, y0, y1 = lims
    th = _GH * _TEXT
    title_lines = _wrap(p.title, width - 20) if p.title else []
    ytw = max([_text_width(s) for _, s in yt] or [0])
    ax_l = left + 10 + (th + 6 if p.ylabel else 0) + ytw + 8
    ax_r = left + width - 16
    ax_t = top + (len(title_lines) * (th + 4) + 6 if title_lines else 6)
    ax_b = top + height - (th + 10) - (th + 6 if p.xlabel else 0)
    if ax_r - ax_l < 20 or ax_b - ax_t < 20:
        raise ValueError(f"plot: the figure ({img.shape[1]} x {img.shape[0]}) is too small for its panels")
    for k, line in enumerate(title_lines):
        _put_text(img, line, (ax_l + ax_r) // 2, top + k * (th + 4), _INK, "center")

    def to_px(v, lo, hi, a, b):  # axis units -> final pixels (b < a for y)
        return a + (np.asarray(v, dtype=np.float64) - lo) / (hi - lo) * (b - a)

    for pos, s in xt:  # grid, ticks and their labels
        x = int(round(float(to_px(pos, x0, x1, ax_l, ax_r))))
        img[ax_t:ax_b, x] = _GRID
        img[ax_b:ax_b + 4, x] = _FRAME
        _put_text(img, s, x, ax_b + 6, _INK, "center")
    for pos, s in yt:
        y = int(round(float(to_px(pos, y0, y1, ax_b, ax_t))))
        img[y, ax_l:ax_r] = _GRID
        img[y, ax_l - 4:ax_l] = _FRAME
        _put_text(img, s, ax_l - 6, y - th // 2 + _TEXT, _INK, "right")
    if p.xlabel:
        _put_text(img, p.xlabel, (ax_l + ax_r) // 2, ax_b + th + 14, _INK, "center")
    if p.ylabel:
        _put_text(img, p.ylabel, left + 8, (ax_t + ax_b) // 2, _INK, vertical=True)

    # the lines, at _SS times the resolution, averaged down
    h, w = ax_b - ax_t, ax_r - ax_l
    sub = np.repeat(np.repeat(img[ax_t:ax_b, ax_l:ax_r], _SS, axis=0), _SS, axis=1)
    occupied = np.zeros((h, w), dtype=bool)
    for s in p.hlines + p.series:
        if s in p.hlines:
            yv = float(p._fy(s.y)[0])
            px, py = np.array([0.0, w * _SS - 1.0]), np.full(2, float(to_px(yv, y0, y1, h * _SS - 1, 0)))
        else:
            px = to_px(p._fx(s.x), x0, x1, 0, w * _SS - 1)
            py = to_px(p._fy(s.y), y0, y1, h * _SS - 1, 0)
        mask = np.zeros((h * _SS, w * _SS), dtype=bool)
        lx, ly = _polyline_points(px, py, s.dashed, _SS)
        _stamp(mask, lx, ly, s.width * _SS / 2)
        if s.marker is not None:
            fin = np.isfinite(px) & np.isfinite(py)
            _stamp(mask, px[fin], py[fin], 2.5 * _SS, round_=s.marker == "o")
        a = s.alpha
        sub[mask] = sub[mask] * (1 - a) + np.asarray(s.color) * a
        occupied |= mask.reshape(h, _SS, w, _SS).any(axis=(1, 3))
    img[ax_t:ax_b, ax_l:ax_r] = sub.reshape(h, _SS, w, _SS, 3).mean(axis=(1, 3))
    img[ax_t, ax_l:ax_r + 1] = img[ax_b, ax_l:ax_r + 1] = _FRAME
    img[ax_t:ax_b + 1, ax_l] = img[ax_t:ax_b + 1, ax_r] = _FRAME
    entries = [s for s in p.series + p.hlines if s.label]
    if p.legend and entries:
        _legend(img, entries, occupied, ax_l, ax_t, ax_r, ax_b)


def _legend(img, entries, occupied, ax_l, ax_t, ax_r, ax_b) -> None:
    """A framed legend at the corner or edge of the axes that covers the fewest drawn pixels."""
    th = _GH * _TEXT
    row = th + 4
    lw = max(_text_width(s.label) for s in entries) + 40
    lh = len(entries) * row + 8
    if lw > ax_r - ax_l - 8 or lh > ax_b - ax_t - 8:
        return
    xs = (ax_r - 6 - lw, ax_l + 6, (ax_l + ax_r - lw) // 2)  # right, left, centre; then top, bottom, middle
    ys = (ax_t + 6, ax_b - 6 - lh, (ax_t + ax_b - lh) // 2)
    spots = [(x, y) for y in ys for x in xs][:-1]  # not the very centre
    x, y = min(spots, key=lambda c: occupied[c[1] - ax_t:c[1] - ax_t + lh, c[0] - ax_l:c[0] - ax_l + lw].sum())
    img[y:y + lh, x:x + lw] = 1.0
    img[y, x:x + lw] = img[y + lh - 1, x:x + lw] = (0.7, 0.7, 0.7)
    img[y:y + lh, x] = img[y:y + lh, x + lw - 1] = (0.7, 0.7, 0.7)
    for k, s in enumerate(entries):
        cy = y + 4 + k * row + th // 2 - 1
        for dx in range(6, 30):
            if not s.dashed or (dx - 6) % 10 < 6:
                img[cy - 1:cy + 1, x + dx] = s.color
        if s.marker is not None:
            img[cy - 3:cy + 3, x + 15:x + 21] = s.color
        _put_text(img, s.label, x + 34, y + 4 + k * row + _TEXT, _INK)
