"""Reductions and normalisers: sum, mean, max/min, var, logsumexp, softmax, log_softmax."""
from __future__ import annotations

import numpy as np

from ..autograd.function import Context, Function
from ..autograd.higher_order import derived_node
from ._common import expand_reduced, norm_dim


class Sum(Function):
    name = "sum"

    @staticmethod
    def forward(ctx: Context, x, dim=None, keepdim: bool = False):
        ctx.axes = norm_dim("sum", dim, x.ndim)
        ctx.shape, ctx.keepdim = x.shape, keepdim
        return x.sum(axis=ctx.axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx: Context, g):
        g = expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim)
        return ctx.backend.xp.broadcast_to(g, ctx.shape)


class Mean(Function):
    name = "mean"

    @staticmethod
    def forward(ctx: Context, x, dim=None, keepdim: bool = False):
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
            raise ValueError(f"{cls.name}: cannot reduce an empty tensor of shape {x.shape}")
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
        (axis,) = norm_dim("max" if largest else "min", dim, x.ndim)
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
        (idx,) = ctx.saved_tensors
        be = ctx.backend
        if not ctx.keepdim:
            g = be.xp.expand_dims(g, ctx.axis)
        return be.put_along_axis_backward(g, idx, ctx.axis, ctx.shape)


class Var(Function):
    name = "var"

    @staticmethod
    def forward(ctx: Context, x, dim=None, keepdim: bool = False, correction: int = 1):
        ctx.axes = norm_dim("var", dim, x.ndim)
        n = x.size if ctx.axes is None else int(np.prod([x.shape[a] for a in ctx.axes]))
        if n - correction <= 0:
            raise ValueError(f"var: {n} element(s) per reduction with correction={correction} gives a "
                             "division by zero; use correction=0 or reduce over more elements")
        centred = x - x.mean(axis=ctx.axes, keepdims=True)
        ctx.shape, ctx.keepdim, ctx.denom = x.shape, keepdim, n - correction
        ctx.save_for_backward(centred)
        return (centred * centred).sum(axis=ctx.axes, keepdims=keepdim) / x.dtype.type(ctx.denom)

    @staticmethod
    def backward(ctx: Context, g):
        (centred,) = ctx.saved_tensors
        g = expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim)
        return g * centred * centred.dtype.type(2.0 / ctx.denom)

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
        (ctx.axis,) = norm_dim("softmax", dim, x.ndim)
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
        (ctx.axis,) = norm_dim("log_softmax", dim, x.ndim)
        shifted = x - x.max(axis=ctx.axis, keepdims=True)
        out = shifted - xp.log(xp.exp(shifted).sum(axis=ctx.axis, keepdims=True))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, g):
        (out,) = ctx.saved_tensors
        xp = ctx.backend.xp
        return g - xp.exp(out) * xp.sum(g, axis=ctx.axis, keepdims=True)


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
