"""An independent PNG decoder for the tests of gpugrad's PNG writer (``gg.viz.write_png``) and of the
plots drawn with it: 8-bit grayscale/RGB/RGBA, non-interlaced, every filter type of the PNG
specification, each chunk checked against its CRC."""
from __future__ import annotations

import struct
import zlib

import numpy as np

_CHANNELS = {0: 1, 2: 3, 6: 4}


def _unfilter(ftype: int, line: np.ndarray, prev: np.ndarray, c: int) -> np.ndarray:
    """One scanline's bytes from its filtered bytes ``line`` and the previous decoded line ``prev``."""
    if ftype == 0:
        return line.copy()
    if ftype == 1:  # Sub: each byte plus the decoded byte ``c`` to its left, a running sum per channel
        return (np.cumsum(line.reshape(-1, c), axis=0) & 0xFF).reshape(-1)
    if ftype == 2:  # Up
        return (line + prev) & 0xFF
    cur = np.zeros_like(line)
    for i in range(line.size):  # Average and Paeth depend on the decoded byte to the left: one at a time
        a = cur[i - c] if i >= c else 0
        b, cc = prev[i], prev[i - c] if i >= c else 0
        if ftype == 3:
            pred = (a + b) // 2
        else:
            p = a + b - cc
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else cc
        cur[i] = (line[i] + pred) & 0xFF
    return cur


def read_png(path) -> np.ndarray:
    """Decode an 8-bit grayscale/RGB/RGBA, non-interlaced PNG into ``(H, W, C)`` uint8."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks = 8, {}
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + payload), kind
        chunks.setdefault(kind, []).append(payload)
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert depth == 8 and interlace == 0 and b"IEND" in chunks
    c = _CHANNELS[ctype]
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    stride = w * c
    assert len(raw) == h * (stride + 1)
    out = np.zeros((h, stride), dtype=np.int64)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        assert ftype <= 4, f"unknown filter type {ftype}"
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        out[y] = prev = _unfilter(ftype, line, prev, c)
    return out.reshape(h, w, c).astype(np.uint8)
