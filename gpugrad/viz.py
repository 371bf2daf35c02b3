"""Look at the computation graph: ``gg.viz.graph(tensor)`` returns it as Graphviz DOT text (and writes
``.dot`` plus ``.svg`` when the ``dot`` binary is installed). ``write_png(path, image)`` writes an
image array as a PNG file with nothing but NumPy and zlib (the plots of ``gpugrad.plot`` use it);
``field_image(z)`` colours a 2-D scalar field for it (the examples' PNGs).

Drawn the way the backprop articles draw it: leaf tensors (inputs, parameters) as boxes, ops as
ellipses, arrows in the forward direction; every node shows its op name and shape and, for small
tensors, its value and gradient (``grad`` of leaves after ``backward()``, of intermediate tensors
when they called ``retain_grad()``). Example::

    x = gg.tensor(2.0, requires_grad=True); y = gg.tensor(3.0, requires_grad=True)
    w = gg.tensor(4.0, requires_grad=True)
    s = x + y; s.retain_grad(); z = s * w; z.backward()
    print(gg.viz.graph(z, names={"x": x, "y": y, "w": w, "s": s, "z": z}))
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from typing import Mapping

import numpy as np

from .io import atomic_write
from .tensor import Tensor

__all__ = ["graph", "walk", "dot_available", "scalar_example", "write_png", "field_image"]


def scalar_example() -> dict[str, Tensor]:
    """The worked example ``z = (x + y) * w`` at x = 2, y = 3, w = 4 after ``z.backward()`` (``s = x + y``
    and ``z`` keep their gradients): ``{"x": x, "y": y, "w": w, "s": s, "z": z}``."""
    from .creation import tensor
    x = tensor(2.0, requires_grad=True)
    y = tensor(3.0, requires_grad=True)
    w = tensor(4.0, requires_grad=True)
    s = x + y
    s.retain_grad()
    z = s * w
    z.retain_grad()
    z.backward()
    return {"x": x, "y": y, "w": w, "s": s, "z": z}


def dot_available() -> bool:
    """Whether the Graphviz ``dot`` binary is on PATH (needed for SVG output)."""
    return shutil.which("dot") is not None


def walk(tensor: Tensor) -> tuple[list, list]:
    """The graph behind ``tensor``: ``(nodes, edges)``.

    ``nodes`` are the graph's op contexts (``tensor._grad_fn`` and everything reachable through
    ``ctx._edges``) followed by the leaf tensors, each once; ``edges`` are ``(source, out_idx, dest,
    input_idx)`` with ``source`` a context or a leaf tensor (``out_idx`` -1). Iterative (deep
    graphs do not hit the recursion limit)."""
    nodes: list = []
    edges: list = []
    seen: set = set()
    leaves: list = []
    root = tensor._grad_fn
    if root is None:
        return ([tensor], []) if tensor.requires_grad else ([], [])
    stack = [root]
    seen.add(id(root))
    while stack:
        node = stack.pop()
        nodes.append(node)
        for i, e in enumerate(node._edges):
            if e is None:
                continue
            src, idx = e
            edges.append((src, idx, node, i))
            if id(src) in seen:
                continue
            seen.add(id(src))
            if idx < 0:
                leaves.append(src)
            else:
                stack.append(src)
    return nodes + leaves, edges


def _fmt_array(a: np.ndarray, precision: int) -> str:
    if a.ndim == 0 or a.size == 1:
        return np.format_float_positional(float(a.reshape(-1)[0]), precision=precision, trim="-") \
            if a.dtype.kind == "f" else str(a.reshape(-1)[0])
    return np.array2string(a, precision=precision, separator=", ", suppress_small=True, max_line_width=60)


def _describe(t: Tensor | None, shape, dtype, max_elements: int, precision: int) -> list[str]:
    shape_s = "scalar" if len(shape) == 0 else str(tuple(int(s) for s in shape))
    lines = [f"{shape_s} {np.dtype(dtype).name}"]
    if t is not None and int(np.prod(shape)) <= max_elements:
        lines.append("value " + _fmt_array(t.numpy(), precision))
        if t.grad is not None:
            g = t.grad.numpy() if isinstance(t.grad, Tensor) else np.asarray(t.grad)
            lines.append("grad " + _fmt_array(g, precision))
    return lines


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def graph(tensor: Tensor, path: str | os.PathLike | None = None, names: Mapping[str, Tensor] | None = None,
          max_elements: int = 8, precision: int = 4) -> str:
    """The computation graph that produced ``tensor`` as Graphviz DOT text.

    ``names`` labels tensors (leaves or intermediate results: ``{"x": x, "w": w, "s": s}``;
    named or ``retain_grad()``-ed intermediate results show value and gradient too). Tensors with at
    most ``max_elements`` elements show their values. With ``path``, writes ``<path>.dot`` (the
    suffix of ``path`` is replaced) and, when Graphviz's ``dot`` is installed, ``<path>.svg``."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"viz.graph: expected a gpugrad Tensor, got {type(tensor).__name__}")
    names = dict(names or {})
    leaf_names: dict[int, str] = {}
    out_names: dict[tuple[int, int], tuple[str, Tensor]] = {}
    for n, t in names.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"viz.graph: names[{n!r}] is a {type(t).__name__}, expected a Tensor")
        if t._grad_fn is None:
            leaf_names[id(t)] = n
        else:
            out_names[(id(t._grad_fn), t._out_idx)] = (n, t)
    if tensor._grad_fn is not None and (id(tensor._grad_fn), tensor._out_idx) not in out_names:
        out_names[(id(tensor._grad_fn), tensor._out_idx)] = ("", tensor)

    nodes, edges = walk(tensor)
    if not nodes:  # a tensor outside any graph
        nodes = [tensor]
    ids = {id(n): f"n{i}" for i, n in enumerate(nodes)}
    lines = ["digraph gpugrad {", "  rankdir=LR;",
             '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=9];']
    for n in nodes:
        nid = ids[id(n)]
        if isinstance(n, Tensor):
            title = leaf_names.get(id(n), "leaf" if n.requires_grad else "tensor")
            body = _describe(n, n.shape, n.dtype, max_elements, precision)
            label = "\n".join([title] + body)
            lines.append(f'  {nid} [shape=box, style="rounded,filled", fillcolor="#dbe9f6", label="{_esc(label)}"];')
            continue
        parts = [n.op_name]
        for k, (shape, dtype) in enumerate(n._out_meta):
            named = out_names.get((id(n), k))
            t = named[1] if named else None
            if t is None and n._retained and k in n._retained:
                t = n._retained[k]()
            prefix = f"{named[0]} = " if named and named[0] else ("" if len(n._out_meta) == 1 else f"out{k}: ")
            desc = _describe(t, shape, dtype, max_elements, precision)
            parts.append(prefix + desc[0])
            parts.extend(desc[1:])
        fill = "#fde2c8" if n is tensor._grad_fn else "#f2f2f2"
        lines.append(f'  {nid} [shape=ellipse, style=filled, fillcolor="{fill}", label="{_esc(chr(10).join(parts))}"];')
    for src, idx, dest, i in edges:
        attrs = []
        multi_in = sum(1 for e in dest._edges if e is not None) > 1
        if multi_in:
            attrs.append(f'label="in{i}"')
        if idx > 0 or (idx == 0 and len(src._out_meta) > 1):
            attrs.append(f'taillabel="out{idx}"')
        a = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {ids[id(src)]} -> {ids[id(dest)]}{a};")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if path is not None:
        base, _ = os.path.splitext(os.fspath(path))
        dot_path = base + ".dot"
        with open(dot_path, "w", encoding="utf-8") as f:
            f.write(text)
        if dot_available():
            subprocess.run(["dot", "-Tsvg", dot_path, "-o", base + ".svg"], check=True,
                           capture_output=True, timeout=60)
    return text


# ------------------------------------------------------------------------------------------------ PNG
def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png(path: str | os.PathLike, image: np.ndarray) -> str:
    """Write ``image`` as an 8-bit PNG file, atomically (:func:`gpugrad.io.atomic_write`); returns
    the path. ``image``: ``(H, W)`` grayscale, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, uint8 (or
    floats in [0, 1], rounded). Needs only NumPy and zlib."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        if a.dtype.kind != "f":
            raise TypeError(f"write_png: image must be uint8 or floats in [0, 1], got {a.dtype}")
        a = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"write_png: image must be (H, W), (H, W, 3) or (H, W, 4), got shape {np.shape(image)}")
    h, w, c = a.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    # filter "Sub" (1) on every row: each byte minus the same channel of the pixel on its left
    rows = a.reshape(h, w * c).astype(np.int16)
    sub = (rows - np.concatenate([np.zeros((h, c), np.int16), rows[:, :-c]], axis=1)) & 0xFF
    raw = np.concatenate([np.ones((h, 1), np.uint8), sub.astype(np.uint8)], axis=1).tobytes()
    data = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw, 9)) + _png_chunk(b"IEND", b""))
    path = os.fspath(path)
    atomic_write(path, lambda f: f.write(data), "write_png")
    return path


# ------------------------------------------------------------------------------------------------ fields
_SEQUENTIAL = np.array([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38],
                        [0.99, 0.91, 0.14]])  # dark violet to yellow (viridis' anchors)


def field_image(z, symmetric: bool = True, vmax: float | None = None, contour: float | None = None) -> np.ndarray:
    """A 2-D scalar field ``z[row, column]`` (row 0 at the top) as an RGB ``uint8`` image for a PNG
    writer: blue-white-red around 0 with the zero line in black (``symmetric``: signed distances,
    errors) or dark violet to yellow (``symmetric=False``); ``vmax`` fixes the colour range (default:
    the field's); ``contour`` darkens the lines ``z = k * contour``. NumPy only."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"field_image: expected a 2-D field, got shape {z.shape}")
    finite = z[np.isfinite(z)]
    if symmetric:
        m = vmax if vmax is not None else (float(np.abs(finite).max()) if finite.size else 1.0) or 1.0
        t = np.clip(np.nan_to_num(z) / m, -1.0, 1.0)[..., None]
        neg, pos = np.array([0.16, 0.35, 0.72]), np.array([0.80, 0.25, 0.12])
        rgb = np.where(t < 0, 1.0 + (neg - 1.0) * -t, 1.0 + (pos - 1.0) * t)
    else:
        lo = float(finite.min()) if finite.size else 0.0
        hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
        t = np.clip((np.nan_to_num(z) - lo) / ((hi - lo) or 1.0), 0.0, 1.0) * (len(_SEQUENTIAL) - 1)
        k = np.minimum(t.astype(int), len(_SEQUENTIAL) - 2)
        rgb = _SEQUENTIAL[k] + (_SEQUENTIAL[k + 1] - _SEQUENTIAL[k]) * (t - k)[..., None]

    def edges(level):  # pixels where the level differs from the right or lower neighbour
        e = np.zeros(z.shape, dtype=bool)
        e[:, :-1] |= level[:, :-1] != level[:, 1:]
        e[:-1, :] |= level[:-1, :] != level[1:, :]
        return e
    if contour:
        rgb = np.where(edges(np.floor(np.nan_to_num(z) / contour))[..., None], rgb * 0.6, rgb)
    if symmetric:
        rgb = np.where(edges(np.nan_to_num(z) < 0)[..., None], 0.0, rgb)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
