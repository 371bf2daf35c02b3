"""Helpers shared by the op families: broadcasting checks, dims (PyTorch's wrapping and errors), and the
dtype rules of binary ops (``gpugrad/_dtype.py``: ``promote``)."""
from __future__ import annotations

import contextlib
import operator
import weakref

import numpy as np

from .._dtype import promote
from .._errors import ShapeError, named_error


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
        raise named_error(ShapeError,
            f"{op}: shapes {tuple(sa)} and {tuple(sb)} are not broadcastable: dimension {bad - n} is {pa[bad]} vs {pb[bad]}. "
            "Fix: make each trailing dimension equal or 1 (reshape/unsqueeze one operand, or transpose it).") from None
    return sa, sb


def wrap_dim(op: str, dim, ndim: int, extra: int = 0) -> int:
    """PyTorch's ``maybe_wrap_dim``: ``dim`` as a non-negative index into ``ndim + extra`` positions
    (``extra=1`` for ``unsqueeze``/``stack``, which may address one past the end; a 0-d tensor counts
    as 1-d). Outside ``[-n, n - 1]``: ``IndexError`` with PyTorch's message."""
    if dim.__class__ is int and -ndim - extra <= dim < ndim + extra:  # the common case, inline
        return dim % (ndim + extra)
    try:
        d = operator.index(dim)
    except TypeError:
        raise named_error(TypeError, f"{op}: dim must be an int, got {type(dim).__name__} {dim!r}") from None
    n = max(ndim + extra, 1)
    if not -n <= d < n:
        raise named_error(IndexError,
            f"{op}: Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {d})")
    return d % n


def norm_dim(op: str, dim, ndim: int) -> tuple | None:
    """``dim`` (None, an int, or a sequence of ints) as a sorted tuple of distinct non-negative axes;
    ``None`` means all. A 0-d tensor accepts dim 0 and -1 and reduces over no axis, as in PyTorch."""
    if dim is None:
        return None
    if dim.__class__ is int and -ndim <= dim < ndim:  # the common case, inline
        return (dim % ndim,)
    dims = (dim,) if not isinstance(dim, (tuple, list)) else tuple(dim)
    out = [wrap_dim(op, d, ndim) for d in dims]
    if len(set(out)) != len(out):
        dup = next(d for d in out if out.count(d) > 1)
        raise named_error(ShapeError, f"{op}: dim {dup} appears multiple times in the list of dims {tuple(dims)}")
    return tuple(sorted(out)) if ndim else ()


def expand_reduced(g, shape: tuple, axes: tuple | None, keepdim: bool):
    """Reinsert reduced axes into ``g`` so it broadcasts against ``shape``."""
    if axes is None:
        return g.reshape((1,) * len(shape)) if g.ndim != len(shape) else g
    if not keepdim:
        for a in axes:
            g = g.reshape(g.shape[:a] + (1,) + g.shape[a:])
    return g


def coerce(ctx, a, b, op_float: bool = False) -> tuple:
    """``(a, b)`` of a binary op cast to PyTorch's result dtype (``_dtype.promote``); when a cast
    happens, ``ctx.casts`` keeps the input dtypes for :func:`uncast`. Fast when nothing changes: two
    arrays of one floating dtype, or a floating array and a Python number."""
    if hasattr(a, "dtype") and a.dtype.kind == "f":
        if b.__class__ is float or b.__class__ is int or (hasattr(b, "dtype") and b.dtype == a.dtype):
            return a, b
    a2, b2, _ = promote(a, b, op_float)
    if a2 is not a or b2 is not b:
        ctx.casts = (getattr(a, "dtype", None), getattr(b, "dtype", None))
        # a higher order re-links a saved cast to its input (autograd/higher_order.py: _cast_input)
        ctx.cast_src = (_cast_link(a2, a), _cast_link(b2, b))
    return a2, b2


def _cast_link(cast, orig) -> tuple | None:
    """``(weak reference to cast, orig's dtype)`` for an operand ``coerce`` cast, else None. Weak: a cast
    the op does not save (Add's, Sub's) must not live as long as the node, uncounted by saved_bytes, nor
    a saved one after backward releases it; neither is the input's own array kept."""
    if cast is orig or not hasattr(cast, "nbytes"):  # unchanged, or a Python scalar (casts are arrays)
        return None
    return weakref.ref(cast), orig.dtype


def uncast(ctx, ga, gb) -> tuple:
    """The gradients of a binary op back in their inputs' dtypes (after :func:`coerce` cast them)."""
    casts = ctx.__dict__.get("casts")
    if casts is None:
        return ga, gb
    da, db = casts
    if ga is not None and da is not None and ga.dtype != da:
        ga = ctx.backend.astype(ga, da)
    if gb is not None and db is not None and gb.dtype != db:
        gb = ctx.backend.astype(gb, db)
    return ga, gb


def quiet(xp):
    """NumPy's floating-point warnings off where nan/inf is the defined answer (log of 0, a mean over no
    element); CuPy has none."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore") if xp is np else contextlib.nullcontext()
