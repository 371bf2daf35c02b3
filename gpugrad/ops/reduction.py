"""Reductions and normalisers: sum, mean, max/min, var, logsumexp, softmax, log_softmax."""
from __future__ import annotations

import math
import warnings

import numpy as np

from .._dtype import float_result, sum_result
from .._errors import DtypeError, ShapeError
from ..autograd.function import Context, Function, named_error
from ..autograd.higher_order import derived_node
from ._common import expand_reduced, norm_dim, quiet


def _floating(op: str, x) -> None:
    """PyTorch computes ``mean``/``var``/``std`` only in floating types (an integer mean would have to
    guess a dtype); the error names the op and the fix."""
    if x.dtype.kind != "f":
        raise named_error(DtypeError, f"{op}: input dtype must be floating point, got {x.dtype} (shape "
                          f"{tuple(x.shape)}); convert it first, e.g. x.float().{op}()")


class Sum(Function):
    name = "sum"

    @staticmethod
    def forward(ctx: Context, x, dim=None, keepdim: bool = False):
        ctx.axes = norm_dim("sum", dim, x.ndim)
        ctx.shape, ctx.keepdim = x.shape, keepdim
        if x.dtype.kind != "f":  # bool and integers sum in int64, as in PyTorch
            return x.sum(axis=ctx.axes, keepdims=keepdim, dtype=sum_result(x.dtype))
        return x.sum(axis=ctx.axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx: Context, g):
        g = expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim)
        return ctx.backend.xp.broadcast_to(g, ctx.shape)


class Mean(Function):
    name = "mean"

    @staticmethod
    def forward(ctx: Context, x, dim=None, keepdim: bool = False):
        _floating("mean", x)
        ctx.axes = norm_dim("mean", dim, x.ndim)
        ctx.shape, ctx.keepdim = x.shape, keepdim
        ctx.count = x.size if ctx.axes is None else int(np.prod([x.shape[a] for a in ctx.axes]))
        return x.mean(axis=ctx.axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx: Context, g):
        g = expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim) / g.dtype.type(ctx.count)
        return ctx.backend.xp.broadcast_to(g, ctx.shape)


class _Extreme(Function):
    """max/min over ``dim`` (values only): the gradient is shared evenly between tied extremes."""

    fn = "max"

    @classmethod
    def forward(cls, ctx: Context, x, dim=None, keepdim: bool = False):
        if x.size == 0:
            raise named_error(ShapeError, f"{cls.name}: cannot reduce an empty tensor of shape {x.shape}; "
                              "give a dim whose size is not 0")
        ctx.axes = norm_dim(cls.name, dim, x.ndim)
        ctx.shape, ctx.keepdim = x.shape, keepdim
        out = getattr(x, cls.fn)(axis=ctx.axes, keepdims=keepdim)
        ctx.save_for_backward(x, out)
        return out

    @staticmethod
    def backward(ctx: Context, g):
        x, out = ctx.saved_tensors
        be = ctx.backend
        x, out = be.detach(x), be.detach(out)  # which elements tie for the extreme: piecewise constant
        o = expand_reduced(out, ctx.shape, ctx.axes, ctx.keepdim)
        mask = (x == o).astype(g.dtype)
        count = mask.sum(axis=ctx.axes, keepdims=True)
        return (expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim) / count) * mask

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """Backward reads only the values of ``x`` and the extreme (which elements tie): constants."""
        return saved


class Amax(_Extreme):
    name = "max"
    fn = "max"


class Amin(_Extreme):
    name = "min"
    fn = "min"


class MaxDim(Function):
    """``x.max(dim)`` / ``x.min(dim)`` with indices: the gradient goes to the returned index."""

    name = "max"

    @staticmethod
    def forward(ctx: Context, x, dim: int, keepdim: bool = False, largest: bool = True):
        xp = ctx.backend.xp
        axes = norm_dim("max" if largest else "min", dim, x.ndim)
        if x.ndim == 0:  # PyTorch: a 0-d tensor is its own maximum, at index 0
            ctx.zero_d = True
            idx = xp.zeros((), np.int64)
            ctx.mark_non_differentiable(idx)
            return x.copy(), idx
        (axis,) = axes
        idx = (xp.argmax if largest else xp.argmin)(x, axis=axis)
        idx = xp.expand_dims(idx, axis)
        vals = xp.take_along_axis(x, idx, axis=axis)
        ctx.axis, ctx.shape, ctx.keepdim = axis, x.shape, keepdim
        ctx.save_for_backward(idx)
        if not keepdim:
            vals, idx = vals.squeeze(axis), idx.squeeze(axis)
        idx = idx.astype(np.int64)
        ctx.mark_non_differentiable(idx)
        return vals, idx

    @staticmethod
    def backward(ctx: Context, g, _gi):
        if ctx.__dict__.get("zero_d"):
            return g
        (idx,) = ctx.saved_tensors
        be = ctx.backend
        if not ctx.keepdim:
            g = be.xp.expand_dims(g, ctx.axis)
        return be.put_along_axis_backward(g, idx, ctx.axis, ctx.shape)


class Var(Function):
    name = "var"

    @staticmethod
    def forward(ctx: Context, x, dim=None, keepdim: bool = False, correction: int = 1, op: str = "var"):
        _floating(op, x)
        ctx.axes = norm_dim(op, dim, x.ndim)
        n = x.size if ctx.axes is None else int(np.prod([x.shape[a] for a in ctx.axes]))
        dof = n - correction
        if dof <= 0:  # PyTorch: a warning, and nan (or inf) values
            warnings.warn(f"{op}(): degrees of freedom is <= 0 ({n} element(s) per reduction, correction="
                          f"{correction}); the result is nan or inf. Use correction=0 or reduce over more "
                          "elements.", UserWarning, stacklevel=4)
        centred = x - x.mean(axis=ctx.axes, keepdims=True) if x.size else x
        ctx.shape, ctx.keepdim, ctx.dof, ctx.all = x.shape, keepdim, dof, ctx.axes is None or x.ndim == 0
        ctx.save_for_backward(centred)
        with quiet(ctx.backend.xp):
            return (centred * centred).sum(axis=ctx.axes, keepdims=keepdim) / x.dtype.type(max(dof, 0))

    @staticmethod
    def backward(ctx: Context, g):
        """PyTorch's ``var_backward``: ``2 / dof * g * (x - mean)``; over all elements with ``dof <= 0``,
        ``g * (nan where x == mean, else inf)``."""
        (centred,) = ctx.saved_tensors
        g = expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim)
        dt = centred.dtype.type
        if ctx.all and ctx.dof <= 0:
            return g * ctx.backend.xp.where(centred == 0, dt(math.nan), dt(math.inf))
        scale = 2.0 / ctx.dof if ctx.dof else math.inf
        return g * centred * dt(scale)

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """``centred = x - mean(x)``, an intermediate: the output of a ``Center`` node over ``x``."""
        return derived_node(ctx, Center, (0,), saved, axes=ctx.axes)


class Center(Function):
    """``x - mean(x, axes)``: the centred values ``Var`` saves, as an op (its re-linked graph form)."""

    name = "center"

    @staticmethod
    def forward(ctx: Context, x, axes=None):
        ctx.axes = axes
        return x - x.mean(axis=axes, keepdims=True)

    @staticmethod
    def backward(ctx: Context, g):
        return g - ctx.backend.xp.mean(g, axis=ctx.axes, keepdims=True)


class LogSumExp(Function):
    name = "logsumexp"

    @staticmethod
    def forward(ctx: Context, x, dim=None, keepdim: bool = False):
        xp = ctx.backend.xp
        if x.dtype.kind != "f":
            x = x.astype(float_result(x.dtype))
        ctx.axes = norm_dim("logsumexp", dim, x.ndim)
        m = x.max(axis=ctx.axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        e = xp.exp(x - m)
        s = e.sum(axis=ctx.axes, keepdims=True)
        out = xp.log(s) + m
        e /= s
        ctx.shape, ctx.keepdim = x.shape, keepdim
        ctx.save_for_backward(e)  # softmax: d logsumexp / dx
        if not keepdim:
            out = out.squeeze(axis=ctx.axes) if ctx.axes is not None else out.reshape(())
        return out

    @staticmethod
    def backward(ctx: Context, g):
        (p,) = ctx.saved_tensors
        return p * expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim)

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """The saved softmax of ``x``, an intermediate: the output of a ``Softmax`` node over ``x``."""
        return derived_node(ctx, Softmax, (0,), saved, saved=saved, axis=ctx.axes)


class Softmax(Function):
    name = "softmax"

    @staticmethod
    def forward(ctx: Context, x, dim: int = -1):
        xp = ctx.backend.xp
        ctx.axis = norm_dim("softmax", dim, x.ndim)  # () for a 0-d tensor
        e = xp.exp(x - x.max(axis=ctx.axis, keepdims=True))
        e /= e.sum(axis=ctx.axis, keepdims=True)
        ctx.save_for_backward(e)
        return e

    @staticmethod
    def backward(ctx: Context, g):
        (y,) = ctx.saved_tensors
        gy = g * y
        return gy - y * ctx.backend.xp.sum(gy, axis=ctx.axis, keepdims=True)


class LogSoftmax(Function):
    name = "log_softmax"

    @staticmethod
    def forward(ctx: Context, x, dim: int = -1):
        xp = ctx.backend.xp
        ctx.axis = norm_dim("log_softmax", dim, x.ndim)
        shifted = x - x.max(axis=ctx.axis, keepdims=True)
        out = shifted - xp.log(xp.exp(shifted).sum(axis=ctx.axis, keepdims=True))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, g):
        (out,) = ctx.saved_tensors
        xp = ctx.backend.xp
        return g - xp.exp(out) * xp.sum(g, axis=ctx.axis, keepdims=True)


class Prod(Function):
    """Product over all elements or one ``dim``; bool and integers multiply in int64 (as in PyTorch).
    Backward: each element's gradient is the product of the others, from exclusive cumulative products
    (exact with zeros in the input, where ``out / x`` is not)."""

    name = "prod"

    @staticmethod
    def forward(ctx: Context, x, dim=None, keepdim: bool = False):
        axes = norm_dim("prod", dim, x.ndim) if dim is None or not isinstance(dim, (tuple, list)) else None
        if dim is not None and axes is None:
            raise named_error(TypeError, f"prod: dim must be None or one int, got {dim!r}")
        ctx.axes, ctx.shape, ctx.keepdim = axes, x.shape, keepdim
        ctx.save_for_backward(x)
        if x.dtype.kind != "f":
            return x.prod(axis=axes, keepdims=keepdim, dtype=sum_result(x.dtype))
        return x.prod(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx: Context, g):
        (x,) = ctx.saved_tensors
        xp = ctx.backend.xp
        g = expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim)
        if ctx.axes == ():
            return g
        if ctx.axes is None:
            return (_others_product(xp, x.reshape(-1), 0).reshape(x.shape) * g)
        return _others_product(xp, x, ctx.axes[0]) * g


def _others_product(xp, x, axis: int):
    """For every element, the product of the other elements along ``axis``."""
    n = x.shape[axis]
    if n == 0:
        return x.copy()

    def part(a, b):
        return x[tuple(slice(a, b) if d == axis else slice(None) for d in range(x.ndim))]
    ones = xp.ones_like(part(0, 1))
    left = xp.cumprod(xp.concatenate([ones, part(0, n - 1)], axis=axis), axis=axis)
    right = xp.flip(xp.cumprod(xp.flip(xp.concatenate([part(1, n), ones], axis=axis), axis=axis), axis=axis),
                    axis=axis)
    return left * right


class SumToShape(Function):
    """``backend.sum_to_shape`` as an op (broadcast gradients summed back): the graph backend's form
    of that method; its backward broadcasts back."""

    name = "sum_to_shape"

    @staticmethod
    def forward(ctx: Context, g, shape: tuple):
        ctx.shape = g.shape
        return ctx.backend.sum_to_shape(g, shape)

    @staticmethod
    def backward(ctx: Context, g):
        if g.ndim > len(ctx.shape):  # sum_to_shape reshaped a gradient with fewer dimensions
            return g.reshape(ctx.shape)
        return ctx.backend.xp.broadcast_to(g, ctx.shape)
