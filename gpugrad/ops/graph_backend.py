"""The graph backend: ``ctx.backend`` while a backward formula records a graph (``create_graph=True``).

A backward formula is written once, against the backend interface (``ctx.backend.sum_to_shape``,
``ctx.backend.act_bias_backward``, ``ctx.backend.xp.where``, ...) and Python operators. On the normal
path those are the device backend's array methods. While recording (``gpugrad/autograd/higher_order.py``),
the formula gets Tensors and this backend: the same methods, each a differentiable op. The heavy ones
are Functions whose forward calls the real backend's fused kernel (so the first-order part of a
double-backward graph runs the same fused CPU and CUDA passes) and whose backward is again written
for both modes, so third and higher orders work.

``xp`` functions given no Tensor run the real ``xp`` (constants: masks, index arithmetic); a backend
method or ``xp`` function without a differentiable form raises instead of cutting the graph.
"""
from __future__ import annotations

from typing import Any

from ..autograd.function import GradError, named_error
from ..autograd.function import TensorBase as Tensor  # (Tensor sits above the ops: its base class)
from ..autograd.function import _make_result
from .elementwise import ActBiasBackward, ActDerivative, Maximum, Where, _carried
from .loss import CrossEntropyBackward
from .reduction import SumToShape
from .shape import Cat, Flip, GetItemBackward, PutAlongAxisBackward, TakeAlongAxis, ToCopy, Triangle


def _has_tensor(args: tuple, kwargs: dict) -> bool:
    for a in args:
        if isinstance(a, Tensor) or (isinstance(a, (list, tuple)) and any(isinstance(x, Tensor) for x in a)):
            return True
    return any(isinstance(v, Tensor) for v in kwargs.values())


class GraphXP:
    """The ``xp`` of the graph backend: NumPy's names over Tensors, as gpugrad ops."""

    def __init__(self, real_xp: Any) -> None:
        self._xp = real_xp

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._xp, name)
        if not callable(attr) or isinstance(attr, type):
            return attr  # dtypes, constants
        real = attr

        def constant_only(*args: Any, **kwargs: Any) -> Any:
            if _has_tensor(args, kwargs):
                raise named_error(GradError,
                    f"xp.{name}: no differentiable form for create_graph=True; a backward formula that calls "
                    f"it on a gradient or saved value cannot record a graph. Use one the graph backend "
                    f"defines (gpugrad/ops/graph_backend.py: GraphXP) or add one there.")
            return real(*args, **kwargs)
        return constant_only

    def zeros_like(self, x, dtype=None):
        """Zeros: a constant (no graph)."""
        if not isinstance(x, Tensor):
            return self._xp.zeros_like(x, dtype=dtype)
        return _make_result(self._xp.zeros_like(x.data, dtype=dtype), x.device, None, 0)

    def ones_like(self, x, dtype=None):
        if not isinstance(x, Tensor):
            return self._xp.ones_like(x, dtype=dtype)
        return _make_result(self._xp.ones_like(x.data, dtype=dtype), x.device, None, 0)

    def asarray(self, x, dtype=None):
        if not isinstance(x, Tensor):
            return self._xp.asarray(x, dtype=dtype)
        return x if dtype is None or x.dtype == dtype else x.to(dtype)

    # -- elementwise
    def maximum(self, a, b):
        if not _has_tensor((a, b), {}):
            return self._xp.maximum(a, b)
        return Maximum.apply(a, b)

    def clip(self, x, lo=None, hi=None):
        if not isinstance(x, Tensor):
            return self._xp.clip(x, lo, hi)
        return x.clamp(lo, hi)

    def where(self, cond, a, b):
        if not _has_tensor((cond, a, b), {}):
            return self._xp.where(cond, a, b)
        if isinstance(cond, Tensor):
            cond = cond.data
        return Where.apply(cond, a, b)

    def exp(self, x):
        return x.exp() if isinstance(x, Tensor) else self._xp.exp(x)

    def log(self, x):
        return x.log() if isinstance(x, Tensor) else self._xp.log(x)

    def sqrt(self, x):
        return x.sqrt() if isinstance(x, Tensor) else self._xp.sqrt(x)

    def sin(self, x):
        return x.sin() if isinstance(x, Tensor) else self._xp.sin(x)

    def cos(self, x):
        return x.cos() if isinstance(x, Tensor) else self._xp.cos(x)

    def tanh(self, x):
        return x.tanh() if isinstance(x, Tensor) else self._xp.tanh(x)

    def sign(self, x):
        """Piecewise constant: its derivative is zero, so the values of ``x`` are all it needs."""
        return self._xp.sign(x.data if isinstance(x, Tensor) else x)

    # -- reductions
    def sum(self, x, axis=None, keepdims: bool = False):
        if not isinstance(x, Tensor):
            return self._xp.sum(x, axis=axis, keepdims=keepdims)
        return x.sum(dim=axis, keepdim=keepdims)

    def mean(self, x, axis=None, keepdims: bool = False):
        if not isinstance(x, Tensor):
            return self._xp.mean(x, axis=axis, keepdims=keepdims)
        return x.mean(dim=axis, keepdim=keepdims)

    # -- shapes
    def broadcast_to(self, x, shape):
        if not isinstance(x, Tensor):
            return self._xp.broadcast_to(x, shape)
        return x if tuple(x.shape) == tuple(shape) else x.expand(*shape)

    def transpose(self, x, axes=None):
        if not isinstance(x, Tensor):
            return self._xp.transpose(x, axes)
        return x.permute(*(tuple(range(x.ndim - 1, -1, -1)) if axes is None else tuple(axes)))

    def swapaxes(self, x, a: int, b: int):
        return x.transpose(a, b) if isinstance(x, Tensor) else self._xp.swapaxes(x, a, b)

    def expand_dims(self, x, axis: int):
        return x.unsqueeze(axis) if isinstance(x, Tensor) else self._xp.expand_dims(x, axis)

    def squeeze(self, x, axis=None):
        return x.squeeze(axis) if isinstance(x, Tensor) else self._xp.squeeze(x, axis)

    def concatenate(self, xs, axis: int = 0):
        if not _has_tensor((list(xs),), {}):
            return self._xp.concatenate(xs, axis=axis)
        return Cat.apply(*xs, dim=axis)

    def flip(self, x, axis=None):
        if not isinstance(x, Tensor):
            return self._xp.flip(x, axis=axis)
        dims = tuple(range(x.ndim)) if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
        return Flip.apply(x, dims=tuple(d % x.ndim for d in dims))

    def tril(self, x, k: int = 0):
        return Triangle.apply(x, diagonal=k, upper=False) if isinstance(x, Tensor) else self._xp.tril(x, k=k)

    def triu(self, x, k: int = 0):
        return Triangle.apply(x, diagonal=k, upper=True) if isinstance(x, Tensor) else self._xp.triu(x, k=k)

    def cumprod(self, x, axis: int):
        """Differentiable (exact with zeros): the running products as one multiplication per position
        (while recording only: a cumulative product has no fused op of its own)."""
        if not isinstance(x, Tensor):
            return self._xp.cumprod(x, axis=axis)
        axis %= x.ndim
        pre = (slice(None),) * axis
        acc = x[pre + (slice(0, 1),)]
        parts = [acc]
        for i in range(1, x.shape[axis]):
            acc = acc * x[pre + (slice(i, i + 1),)]
            parts.append(acc)
        return Cat.apply(*parts, dim=axis)

    def split(self, x, indices_or_sections, axis: int = 0):
        if not isinstance(x, Tensor):
            return self._xp.split(x, indices_or_sections, axis=axis)
        n = x.shape[axis]
        if isinstance(indices_or_sections, int):
            k = n // indices_or_sections
            bounds = list(range(0, n + 1, k))
        else:
            bounds = [0, *indices_or_sections, n]
        pre = (slice(None),) * (axis % x.ndim)
        return [x[pre + (slice(lo, hi),)] for lo, hi in zip(bounds[:-1], bounds[1:])]


class GraphBackend:
    """A device backend's interface as differentiable ops over Tensors (see the module docstring)."""

    records = True

    def __init__(self, real: Any) -> None:
        self.real = real
        self.device = real.device
        self.name = real.name
        self.xp = GraphXP(real.xp)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # a protocol lookup (copy's __deepcopy__, pickle's...): not a formula's call
            raise AttributeError(name)
        raise named_error(GradError,
            f"backend.{name}: no differentiable form for create_graph=True, so the backward formula that "
            f"calls it cannot record a graph. Add one to gpugrad/ops/graph_backend.py: GraphBackend (an op whose "
            f"forward calls the {self.real.name} backend's {name} and whose backward is differentiable).")

    def is_array(self, a) -> bool:
        return isinstance(a, Tensor) or self.real.is_array(a)

    def detach(self, a):
        return a.data if isinstance(a, Tensor) else a

    def sum_to_shape(self, g, shape: tuple):
        if tuple(g.shape) == tuple(shape):
            return g
        if not isinstance(g, Tensor):
            return self.real.sum_to_shape(g, shape)
        return SumToShape.apply(g, shape=tuple(shape))

    def getitem_backward(self, g, key, shape: tuple, advanced: bool, first=None):
        return GetItemBackward.apply(g, key=key, shape=shape, advanced=advanced, first=first)

    def take_along_axis(self, x, idx, axis: int):
        return TakeAlongAxis.apply(x, idx, axis=axis)

    def put_along_axis_backward(self, g, idx, axis: int, shape: tuple):
        return PutAlongAxisBackward.apply(g, idx, axis=axis, shape=shape)

    def astype(self, a, dtype):
        if not isinstance(a, Tensor):
            return a.astype(dtype)
        return a if a.dtype == dtype else ToCopy.apply(a, device=self.device, dtype=dtype)

    def transfer(self, x, src, dtype):
        return ToCopy.apply(x, device=self.device, dtype=dtype)

    def linear_backward(self, dz, x, w, need_dx: bool, need_dw: bool, dw_out=None):
        """The two GEMMs of a linear layer's backward as matmul ops (GEMMs, differentiable again)."""
        return (dz @ w if need_dx else None), (dz.T @ x if need_dw else None)

    def act_backward(self, dy, s, act: str, params=None):
        return self.act_derivative(dy, s, act, params, 1)

    def act_derivative(self, dy, s, act: str, params=None, order: int = 1):
        """``s``: an ``ActSaved`` (the saved array and the Tensor standing for z), see ops/elementwise.py."""
        z, v = _carried(s)
        return ActDerivative.apply(dy, z, s=v, act=act, params=params, order=order)

    def act_bias_backward(self, dy, s, act: str, with_bias: bool, params=None, order: int = 1, db_out=None):
        if act == "identity" and order == 1:
            return dy, (self.sum_to_shape(dy, (dy.shape[-1],)) if with_bias else None)
        if not with_bias:
            return self.act_derivative(dy, s, act, params, order), None
        z, v = _carried(s)
        return ActBiasBackward.apply(dy, z, s=v, act=act, params=params, order=order)

    def layer_norm_backward(self, dy, x2, w, mean, rstd, need_dx: bool, need_params: bool):
        """Layer norm's gradients written with ops (differentiable again), from ``mean`` and ``rstd`` as
        Tensors (``LayerNorm.graph_saved`` recomputes them from x): the first-order part of a
        double-backward graph through a layer norm runs these ops, not the fused pass, whose own
        derivative has no kernel."""
        mean, rstd = mean.reshape(-1, 1), rstd.reshape(-1, 1)
        xhat = (x2 - mean) * rstd
        gx = dy * w if w is not None else dy
        dx = rstd * (gx - gx.mean(dim=1, keepdim=True) - xhat * (gx * xhat).mean(dim=1, keepdim=True)) \
            if need_dx else None
        return dx, (dy * xhat).sum(dim=0) if need_params else None, dy.sum(dim=0) if need_params else None

    def cross_entropy_backward(self, probs, target, g, mul: float = 1.0, ignore_index: int = -100,
                               label_smoothing: float = 0.0):
        return CrossEntropyBackward.apply(probs, g, target, mul=mul, ignore_index=ignore_index,
                                          label_smoothing=label_smoothing)


def graph_backend(real: Any) -> GraphBackend:
    """The graph backend over ``real``: one per device backend, kept on it (not in a module-level table,
    which would keep every backend it ever saw alive)."""
    gb = real.__dict__.get("_graph_backend")
    if gb is None:
        gb = real._graph_backend = GraphBackend(real)
    return gb


__all__ = ["GraphBackend", "GraphXP", "graph_backend"]
