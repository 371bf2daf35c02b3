"""Shape and indexing ops: reshape, transpose/permute, expand, squeeze, indexing, cat, stack, copies."""
from __future__ import annotations

import numpy as np

from .._dtype import result_type
from .._errors import DtypeError, ShapeError
from ..autograd.function import Context, Function, TensorBase, named_error
from ..backends import get_backend
from ._common import wrap_dim


class Reshape(Function):
    name = "reshape"

    @staticmethod
    def forward(ctx: Context, x, shape: tuple):
        ctx.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise named_error(ShapeError,
                f"reshape: cannot reshape a tensor of shape {tuple(x.shape)} ({x.size} elements) into "
                f"{tuple(shape)}; the number of elements must stay the same (use -1 for one inferred size)") from None

    @staticmethod
    def backward(ctx: Context, g):
        return g.reshape(ctx.shape)


class Permute(Function):
    name = "permute"

    @staticmethod
    def forward(ctx: Context, x, dims: tuple):
        if len(dims) != x.ndim:
            raise named_error(ShapeError,
                f"permute: dims {tuple(dims)} has {len(dims)} entries but the tensor of shape {tuple(x.shape)} has "
                f"{x.ndim} dimensions; give each dimension once")
        ctx.dims = tuple(wrap_dim("permute", d, x.ndim) for d in dims)
        if len(set(ctx.dims)) != len(dims):
            raise named_error(ShapeError,
                f"permute: dims {tuple(dims)} repeat a dimension; give each of the {x.ndim} dimensions once")
        return x.transpose(ctx.dims)

    @staticmethod
    def backward(ctx: Context, g):
        return ctx.backend.xp.transpose(g, tuple(int(d) for d in np.argsort(ctx.dims)))


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
            raise named_error(ShapeError,
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


def _int_like(k) -> bool:
    """A Python/NumPy integer or a 0-d integer array (a 0-d integer tensor indexes like an int in PyTorch)."""
    if isinstance(k, (bool, np.bool_)):
        return False
    if isinstance(k, (int, np.integer)):
        return True
    return getattr(k, "ndim", None) == 0 and k.dtype.kind in "iu"


def split_index(key) -> tuple:
    """``(first, rest)`` such that ``x[first][rest]`` indexes as PyTorch does (``first`` None: ``x[rest]``
    already does). PyTorch applies integer indices as plain selections before the advanced (array)
    indices, so ``x[1, :, 3:11:2, d, 0:2]`` keeps ``d``'s dimensions where ``d`` stands; NumPy counts the
    integers as advanced indices too, and moves the broadcast dimensions to the front when the
    integers and arrays are not adjacent. ``first`` is basic (integers, full slices, Ellipsis): a view."""
    keys = key if isinstance(key, tuple) else (key,)
    ints = [_int_like(k) for k in keys]
    if not any(ints) or not any(not i and (isinstance(k, list) or getattr(k, "ndim", 0) > 0)
                                for i, k in zip(ints, keys)):
        return None, key
    first, rest = [], []
    for k, is_int in zip(keys, ints):
        if is_int:
            first.append(int(k))
        elif k is None:
            rest.append(k)
        elif k is Ellipsis:
            first.append(k)
            rest.append(k)
        else:
            bool_dims = getattr(k, "ndim", 1) if getattr(k, "dtype", None) is not None and k.dtype.kind == "b" else 1
            first.extend([slice(None)] * bool_dims)
            rest.append(k)
    return tuple(first), tuple(rest)


class GetItem(Function):
    name = "getitem"

    @staticmethod
    def forward(ctx: Context, x, key):
        key = _on_device(ctx.backend, key)
        ctx.shape, ctx.dtype = x.shape, x.dtype
        ctx.first, ctx.key = split_index(key)
        try:
            return x[ctx.key] if ctx.first is None else x[ctx.first][ctx.key]
        except IndexError as e:
            raise named_error(IndexError, f"getitem: {e} (tensor of shape {tuple(x.shape)}, index {key!r})") from None

    @staticmethod
    def backward(ctx: Context, g):
        return ctx.backend.getitem_backward(g, ctx.key, ctx.shape, _is_advanced(ctx.key), ctx.first)


class GetItemBackward(Function):
    """Zeros with ``g`` added at ``key``: the gradient of ``x[key]`` as an op (the graph backend's
    ``getitem_backward``); its own gradient is ``g[key]``."""

    name = "getitem_backward"

    @staticmethod
    def forward(ctx: Context, g, key, shape: tuple, advanced: bool, first=None):
        ctx.key, ctx.first = key, first
        return ctx.backend.getitem_backward(g, key, shape, advanced, first)

    @staticmethod
    def backward(ctx: Context, g):
        return (g if ctx.first is None else g[ctx.first])[ctx.key]


class TakeAlongAxis(Function):
    """``x`` gathered at integer ``idx`` along ``axis`` (``backend.take_along_axis`` as an op)."""

    name = "take_along_axis"

    @staticmethod
    def forward(ctx: Context, x, idx, axis: int):
        ctx.axis, ctx.shape = axis, x.shape
        ctx.save_for_backward(idx)
        return ctx.backend.take_along_axis(x, idx, axis)

    @staticmethod
    def backward(ctx: Context, g, _gi=None):
        (idx,) = ctx.saved_tensors
        return ctx.backend.put_along_axis_backward(g, idx, ctx.axis, ctx.shape), None


class PutAlongAxisBackward(Function):
    """Zeros of ``shape`` with ``g`` added at ``idx`` along ``axis``: the gradient of
    ``take_along_axis`` as an op (the graph backend's ``put_along_axis_backward``)."""

    name = "put_along_axis_backward"

    @staticmethod
    def forward(ctx: Context, g, idx, axis: int, shape: tuple):
        ctx.axis = axis
        ctx.save_for_backward(idx)
        return ctx.backend.put_along_axis_backward(g, idx, axis, shape)

    @staticmethod
    def backward(ctx: Context, g, _gi=None):
        (idx,) = ctx.saved_tensors
        return ctx.backend.take_along_axis(g, idx, ctx.axis), None


def _same_dtype(ctx: Context, xs: tuple) -> tuple:
    """The tensors of ``cat``/``stack`` in their PyTorch result dtype (``ctx.dtypes``: theirs, for backward)."""
    dt = xs[0].dtype
    if all(x.dtype == dt for x in xs):
        return xs
    dt = result_type(*xs)
    ctx.dtypes = tuple(x.dtype for x in xs)
    return tuple(x if x.dtype == dt else x.astype(dt) for x in xs)


def _grads_back(ctx: Context, grads) -> tuple:
    dts = ctx.__dict__.get("dtypes")
    if dts is None:
        return tuple(grads)
    return tuple(g if g.dtype == d or d.kind != "f" else g.astype(d) for g, d in zip(grads, dts))


class Cat(Function):
    name = "cat"

    @staticmethod
    def forward(ctx: Context, *xs, dim: int = 0):
        if not xs:
            raise named_error(ValueError, "cat: expected a non-empty sequence of tensors")
        nd = xs[0].ndim
        d = wrap_dim("cat", dim, nd)
        for i, x in enumerate(xs):
            if x.ndim == 0:
                raise named_error(RuntimeError, f"cat: zero-dimensional tensor (at position {i}) cannot be "
                                  "concatenated; use gg.stack, or unsqueeze it first")
            if x.ndim != nd or any(x.shape[k] != xs[0].shape[k] for k in range(nd) if k != d):
                raise named_error(ShapeError,
                    f"cat: tensor {i} has shape {tuple(x.shape)} but tensor 0 has {tuple(xs[0].shape)}; all "
                    f"dimensions except dim={dim} must match")
        xs = _same_dtype(ctx, xs)
        ctx.dim, ctx.sizes = d, [x.shape[d] for x in xs]
        return ctx.backend.xp.concatenate(xs, axis=d)

    @staticmethod
    def backward(ctx: Context, g):
        splits = np.cumsum(ctx.sizes)[:-1].tolist()
        return _grads_back(ctx, ctx.backend.xp.split(g, splits, axis=ctx.dim))


class Stack(Function):
    name = "stack"

    @staticmethod
    def forward(ctx: Context, *xs, dim: int = 0):
        if not xs:
            raise named_error(ShapeError, "stack: expected a non-empty sequence of tensors")
        for i, x in enumerate(xs):
            if x.shape != xs[0].shape:
                raise named_error(ShapeError,
                    f"stack: tensor {i} has shape {tuple(x.shape)} but tensor 0 has {tuple(xs[0].shape)}; "
                    "stack needs equal shapes")
        ctx.dim = wrap_dim("stack", dim, xs[0].ndim, extra=1)
        xs = _same_dtype(ctx, xs)
        return ctx.backend.xp.stack(xs, axis=ctx.dim)

    @staticmethod
    def backward(ctx: Context, g):
        xp = ctx.backend.xp
        return _grads_back(ctx, (xp.squeeze(p, axis=ctx.dim) for p in xp.split(g, g.shape[ctx.dim], axis=ctx.dim)))


class Gather(Function):
    """``out[i][j][k] = x[index[i][j][k]][j][k]`` (for ``dim=0``): ``index`` has ``x``'s number of
    dimensions and, away from ``dim``, sizes no larger than ``x``'s (as ``torch.gather``); backward
    scatter-adds into ``x``'s shape (repeated indices accumulate)."""

    name = "gather"

    @staticmethod
    def forward(ctx: Context, x, dim: int, index):
        be = ctx.backend
        if getattr(index, "dtype", None) is None or index.dtype.kind not in "iu":
            raise named_error(DtypeError, f"gather: index must be an integer (int64) tensor, got "
                              f"{getattr(index, 'dtype', type(index).__name__)}")
        d = wrap_dim("gather", dim, x.ndim)
        if index.ndim != x.ndim and not (x.ndim == 0 and index.ndim <= 1):
            raise named_error(ShapeError, f"gather: index of shape {tuple(index.shape)} must have as many "
                              f"dimensions as the input of shape {tuple(x.shape)}")
        xs = x.reshape(1) if x.ndim == 0 else x
        ix = index.reshape(1) if index.ndim == 0 else index
        if any(ix.shape[k] > xs.shape[k] for k in range(xs.ndim) if k != d):
            raise named_error(ShapeError, f"gather: index of shape {tuple(index.shape)} is larger than the input "
                              f"of shape {tuple(x.shape)} away from dim {dim}")
        be.check_indices("gather", ix, xs.shape[d], d)
        ix = be.xp.clip(ix.astype(np.int64, copy=False), 0, xs.shape[d] - 1)  # out of range: the check reports it
        src = xs[tuple(slice(0, ix.shape[k]) if k != d else slice(None) for k in range(xs.ndim))]
        ctx.shape, ctx.dim, ctx.zero_d = x.shape, d, x.ndim == 0
        ctx.save_for_backward(ix)
        out = be.xp.take_along_axis(src, ix, axis=d)
        return out.reshape(index.shape)

    @staticmethod
    def backward(ctx: Context, g, *_):
        (ix,) = ctx.saved_tensors
        out = ctx.backend.put_along_axis_backward(g.reshape(ix.shape), ix, ctx.dim,
                                                  ctx.shape if not ctx.zero_d else (1,))
        return out.reshape(ctx.shape), None, None


class Embedding(Function):
    """``weight[index]`` (rows of a ``(num, dim)`` table, any index shape); backward scatter-adds into
    the rows used, except ``padding_idx``'s, which gets no gradient (as ``F.embedding``)."""

    name = "embedding"

    @staticmethod
    def forward(ctx: Context, index, weight, padding_idx: int | None = None):
        be = ctx.backend
        if getattr(index, "dtype", None) is None or index.dtype.kind not in "iu":
            raise named_error(DtypeError, f"embedding: indices must be an integer (int64) tensor, got "
                              f"{getattr(index, 'dtype', type(index).__name__)}")
        if weight.ndim != 2:
            raise named_error(ShapeError, f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got "
                              f"shape {tuple(weight.shape)}")
        be.check_indices("embedding", index, weight.shape[0], 0)
        index = be.xp.clip(index, 0, weight.shape[0] - 1)  # out of range: the check reports it
        ctx.shape, ctx.padding_idx = weight.shape, padding_idx
        ctx.save_for_backward(index)
        return weight[index]

    @staticmethod
    def backward(ctx: Context, g):
        (index,) = ctx.saved_tensors
        flat = index.reshape(-1)
        rows = g.reshape(-1, ctx.shape[1])
        if ctx.padding_idx is not None:  # the padding row gets no gradient
            rows = rows * (flat != ctx.padding_idx % ctx.shape[0]).astype(g.dtype).reshape(-1, 1)
        return None, ctx.backend.getitem_backward(rows, flat, ctx.shape, True)


class Split(Function):
    """Views of consecutive pieces of ``dim`` with the given sizes (``torch.split``); backward
    concatenates the pieces' gradients (zeros for pieces without one)."""

    name = "split"

    @staticmethod
    def forward(ctx: Context, x, sizes: tuple, dim: int):
        ctx.dim = dim
        bounds = np.cumsum(sizes)[:-1].tolist()
        return tuple(ctx.backend.xp.split(x, bounds, axis=dim))

    @staticmethod
    def backward(ctx: Context, *grads):
        return ctx.backend.xp.concatenate(list(grads), axis=ctx.dim)


class Pad(Function):
    """Constant padding (``F.pad(x, pad, value=v)``): ``pad`` pairs (before, after) from the last
    dimension backwards; negative amounts crop. Backward keeps the gradient of the input's part."""

    name = "pad"

    @staticmethod
    def forward(ctx: Context, x, pad: tuple, value: float = 0.0):
        if len(pad) % 2 or len(pad) // 2 > x.ndim:
            raise named_error(ShapeError, f"pad: pad {pad} must have an even length of at most 2 * ndim = "
                              f"{2 * x.ndim} for a tensor of shape {tuple(x.shape)}")
        nd = x.ndim
        before = [0] * nd
        after = [0] * nd
        for i in range(len(pad) // 2):
            before[nd - 1 - i], after[nd - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
        out_shape = tuple(s + b + a for s, b, a in zip(x.shape, before, after))
        if any(n < 0 for n in out_shape):
            raise named_error(ShapeError, f"pad: pad {pad} crops a tensor of shape {tuple(x.shape)} to the negative "
                              f"size {out_shape}")
        src = tuple(slice(max(-b, 0), s - max(-a, 0)) for s, b, a in zip(x.shape, before, after))
        dst = tuple(slice(max(b, 0), n - max(a, 0)) for n, b, a in zip(out_shape, before, after))
        out = ctx.backend.xp.full(out_shape, value, dtype=x.dtype)
        out[dst] = x[src]
        ctx.shape, ctx.src, ctx.dst = x.shape, src, dst
        return out

    @staticmethod
    def backward(ctx: Context, g):
        return ctx.backend.getitem_backward(g[ctx.dst], ctx.src, ctx.shape, False)


class Flip(Function):
    name = "flip"

    @staticmethod
    def forward(ctx: Context, x, dims: tuple):
        ctx.dims = dims
        return ctx.backend.xp.flip(x, axis=dims) if dims else x.copy()

    @staticmethod
    def backward(ctx: Context, g):
        return ctx.backend.xp.flip(g, axis=ctx.dims) if ctx.dims else g


class Triangle(Function):
    """``tril``/``triu`` of the last two dimensions (``diagonal`` as in PyTorch); the gradient is masked
    the same way."""

    name = "tril"

    @staticmethod
    def forward(ctx: Context, x, diagonal: int = 0, upper: bool = False):
        op = "triu" if upper else "tril"
        if x.ndim < 2:
            raise named_error(ShapeError, f"{op}: input must have at least 2 dimensions, got shape {tuple(x.shape)}")
        ctx.op = op
        ctx.k = int(diagonal)
        return getattr(ctx.backend.xp, op)(x, k=ctx.k)

    @staticmethod
    def backward(ctx: Context, g):
        return getattr(ctx.backend.xp, ctx.op)(g, k=ctx.k)


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
            ctx.out_device = device
            return get_backend(device).transfer(x, src, dtype)
        return x.astype(dtype)

    @staticmethod
    def backward(ctx: Context, g):
        src = get_backend(ctx.out_device) if ctx.out_device is not None else ctx.backend
        return ctx.backend.transfer(g, src, ctx.src_dtype)
