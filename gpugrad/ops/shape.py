"""Shape and indexing ops: reshape, transpose/permute, expand, squeeze, indexing, cat, stack, copies."""
from __future__ import annotations

import numpy as np

from ..autograd.function import Context, Function, TensorBase, named_error
from ..backends import get_backend


class Reshape(Function):
    name = "reshape"

    @staticmethod
    def forward(ctx: Context, x, shape: tuple):
        ctx.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise named_error(ValueError,
                f"reshape: cannot reshape a tensor of shape {tuple(x.shape)} ({x.size} elements) into "
                f"{tuple(shape)}; the number of elements must stay the same (use -1 for one inferred size)") from None

    @staticmethod
    def backward(ctx: Context, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    name = "permute"

    @staticmethod
    def forward(ctx: Context, x, dims: tuple):
        if sorted(d % max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
            raise named_error(ValueError,
                f"permute: dims {tuple(dims)} are not a permutation of the {x.ndim} dimensions of a tensor "
                f"of shape {tuple(x.shape)}")
        ctx.dims = tuple(d % x.ndim for d in dims)
        return x.transpose(ctx.dims)

    @staticmethod
    def backward(ctx: Context, g):
        return g.transpose(tuple(np.argsort(ctx.dims)))


class Expand(Function):
    name = "expand"

    @staticmethod
    def forward(ctx: Context, x, shape: tuple):
        xp = ctx.backend.xp
        shape = tuple(x.shape[i - (len(shape) - x.ndim)] if s == -1 else s for i, s in enumerate(shape))
        ctx.shape = x.shape
        try:
            return xp.broadcast_to(x, shape)
        except ValueError:
            raise named_error(ValueError,
                f"expand: cannot expand shape {tuple(x.shape)} to {shape}: only size-1 dimensions can grow") from None

    @staticmethod
    def backward(ctx: Context, g):
        return ctx.backend.sum_to_shape(g, ctx.shape)


def _index_arrays(key):
    """Replace Tensors inside an index by their arrays."""
    if isinstance(key, TensorBase):
        return key.data
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, TensorBase) else k for k in key)
    if isinstance(key, list):
        return np.asarray(key)
    return key


def _on_device(be, key):
    """Move NumPy index arrays to the tensor's device (a CuPy array cannot be indexed by them)."""
    if isinstance(key, tuple):
        return tuple(be.asarray(k) if isinstance(k, np.ndarray) else k for k in key)
    return be.asarray(key) if isinstance(key, np.ndarray) else key


def _is_advanced(key) -> bool:
    """True if the index holds an integer/boolean array (needs scatter-add in backward)."""
    keys = key if isinstance(key, tuple) else (key,)
    return any(hasattr(k, "shape") and hasattr(k, "dtype") and not isinstance(k, np.generic) for k in keys)


class GetItem(Function):
    name = "getitem"

    @staticmethod
    def forward(ctx: Context, x, key):
        key = _on_device(ctx.backend, key)
        ctx.shape, ctx.dtype, ctx.key = x.shape, x.dtype, key
        try:
            return x[key]
        except IndexError as e:
            raise named_error(IndexError, f"getitem: {e} (tensor of shape {tuple(x.shape)}, index {key!r})") from None

    @staticmethod
    def backward(ctx: Context, g):
        be = ctx.backend
        out = be.xp.zeros(ctx.shape, dtype=g.dtype)
        if _is_advanced(ctx.key):
            be.index_add(out, ctx.key, g)
        else:
            out[ctx.key] = g
        return out


class Cat(Function):
    name = "cat"

    @staticmethod
    def forward(ctx: Context, *xs, dim: int = 0):
        if not xs:
            raise ValueError("cat: expected a non-empty sequence of tensors")
        nd = xs[0].ndim
        d = dim % max(nd, 1)
        for i, x in enumerate(xs):
            if x.ndim != nd or any(x.shape[k] != xs[0].shape[k] for k in range(nd) if k != d):
                raise named_error(ValueError,
                    f"cat: tensor {i} has shape {tuple(x.shape)} but tensor 0 has {tuple(xs[0].shape)}; all "
                    f"dimensions except dim={dim} must match")
        ctx.dim, ctx.sizes = d, [x.shape[d] for x in xs]
        return ctx.backend.xp.concatenate(xs, axis=d)

    @staticmethod
    def backward(ctx: Context, g):
        splits = np.cumsum(ctx.sizes)[:-1].tolist()
        return tuple(ctx.backend.xp.split(g, splits, axis=ctx.dim))


class Stack(Function):
    name = "stack"

    @staticmethod
    def forward(ctx: Context, *xs, dim: int = 0):
        if not xs:
            raise ValueError("stack: expected a non-empty sequence of tensors")
        for i, x in enumerate(xs):
            if x.shape != xs[0].shape:
                raise named_error(ValueError,
                    f"stack: tensor {i} has shape {tuple(x.shape)} but tensor 0 has {tuple(xs[0].shape)}; "
                    "stack needs equal shapes")
        ctx.dim = dim % (xs[0].ndim + 1)
        return ctx.backend.xp.stack(xs, axis=ctx.dim)

    @staticmethod
    def backward(ctx: Context, g):
        xp = ctx.backend.xp
        return tuple(xp.squeeze(p, axis=ctx.dim) for p in xp.split(g, g.shape[ctx.dim], axis=ctx.dim))


class Clone(Function):
    name = "clone"

    @staticmethod
    def forward(ctx: Context, x):
        return x.copy()

    @staticmethod
    def backward(ctx: Context, g):
        return g


class ToCopy(Function):
    """Move to another device and/or dtype; the gradient goes back the same way."""

    name = "to"

    @staticmethod
    def forward(ctx: Context, x, device, dtype):
        src = ctx.backend
        ctx.src_dtype = x.dtype
        if device != src.device:
            dst = get_backend(device)
            host = src.to_numpy(x)
            x = dst.from_numpy(host if dtype == x.dtype else host.astype(dtype))
            ctx.out_device = device
            return x if x.dtype == dtype else x.astype(dtype)
        return x.astype(dtype)

    @staticmethod
    def backward(ctx: Context, g):
        if ctx.out_device is not None:
            g = ctx.backend.from_numpy(get_backend(ctx.out_device).to_numpy(g))
        return g if g.dtype == ctx.src_dtype else g.astype(ctx.src_dtype)
