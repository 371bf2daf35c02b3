"""Helpers shared by the op families."""
from __future__ import annotations

import numpy as np

from ..autograd.function import named_error


def check_broadcast(op: str, a, b) -> tuple:
    """The shapes of ``a`` and ``b``; raises a clear error if they cannot broadcast together."""
    sa = a.shape if hasattr(a, "shape") else ()
    sb = b.shape if hasattr(b, "shape") else ()
    if sa == sb:
        return sa, sb
    try:
        np.broadcast_shapes(sa, sb)
    except ValueError:
        n = max(len(sa), len(sb))
        pa, pb = (1,) * (n - len(sa)) + sa, (1,) * (n - len(sb)) + sb
        bad = next(i for i in range(n) if pa[i] != pb[i] and pa[i] != 1 and pb[i] != 1)
        raise named_error(ValueError,
            f"{op}: shapes {tuple(sa)} and {tuple(sb)} are not broadcastable: dimension {bad - n} is {pa[bad]} vs {pb[bad]}. "
            "Fix: make each trailing dimension equal or 1 (reshape/unsqueeze one operand, or transpose it).") from None
    return sa, sb


def norm_dim(op: str, dim, ndim: int) -> tuple | None:
    """Normalise ``dim`` (int, tuple or None) to a sorted tuple of non-negative axes."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise named_error(IndexError,
                f"{op}: dim {d} is out of range for a tensor with {ndim} dimension(s) "
                f"(valid: {-max(ndim, 1)} to {max(ndim, 1) - 1})")
        out.append(d % max(ndim, 1))
    return tuple(sorted(set(out)))


def expand_reduced(g, shape: tuple, axes: tuple | None, keepdim: bool):
    """Reinsert reduced axes into ``g`` so it broadcasts against ``shape``."""
    if axes is None:
        return g.reshape((1,) * len(shape)) if g.ndim != len(shape) else g
    if not keepdim:
        for a in axes:
            g = g.reshape(g.shape[:a] + (1,) + g.shape[a:])
    return g
