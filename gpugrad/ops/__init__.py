"""The differentiable functions, as plain functions on Tensors (the layer ``Tensor`` methods,
``gg.*`` and ``gg.nn.functional`` call). Each op's forward and backward live in one class in its
family module; nothing here branches on the device."""
from __future__ import annotations

from collections import namedtuple
from typing import TYPE_CHECKING, Any, Sequence

from .._device import device as _device_t
from ..autograd.function import TensorBase, _make_result, named_error
from . import elementwise as _e, linalg as _l, loss as _lo, reduction as _r, shape as _s

if TYPE_CHECKING:  # Tensor sits above the ops (its methods are these functions)
    from ..tensor import Tensor

MinMax = namedtuple("MinMax", ["values", "indices"])



# ---------------------------------------------------------------- arithmetic
def add(a, b) -> Tensor:
    return _e.Add.apply(a, b)


def sub(a, b) -> Tensor:
    return _e.Sub.apply(a, b)


def mul(a, b) -> Tensor:
    return _e.Mul.apply(a, b)


def div(a, b) -> Tensor:
    return _e.Div.apply(a, b)


def pow(a, b) -> Tensor:  # noqa: A001
    return _e.Pow.apply(a, b)


def neg(x) -> Tensor:
    return _e.Neg.apply(x)


def exp(x) -> Tensor:
    return _e.Exp.apply(x)


def log(x) -> Tensor:
    return _e.Log.apply(x)


def sqrt(x) -> Tensor:
    return _e.Sqrt.apply(x)


def abs(x) -> Tensor:  # noqa: A001
    return _e.Abs.apply(x)


def sin(x) -> Tensor:
    return _e.Sin.apply(x)


def cos(x) -> Tensor:
    return _e.Cos.apply(x)


def tanh(x) -> Tensor:
    return _e.Tanh.apply(x)


def sigmoid(x) -> Tensor:
    return _e.Sigmoid.apply(x)


def relu(x) -> Tensor:
    return _e.Relu.apply(x)


def leaky_relu(x, negative_slope: float = 0.01) -> Tensor:
    return _e.LeakyRelu.apply(x, negative_slope=negative_slope)


def gelu(x, approximate: str = "none") -> Tensor:
    """GELU: exact (erf) by default, ``approximate="tanh"`` for the tanh form."""
    return _e.Gelu.apply(x, approximate=approximate)


def activation(x, name: str, params=None) -> Tensor:
    """Any activation of ``gpugrad/kernels/activations.py`` by name, with its parameters (a tuple in the
    record's order, a dict by name, or None for the defaults): what the activation modules call."""
    if name in ("gelu", "gelu_tanh"):
        return _e.Gelu.apply(x, approximate="none" if name == "gelu" else "tanh")
    if name == "identity":
        return x
    f = _e.BY_ACTIVATION.get(name)
    if f is None:
        raise named_error(ValueError, f"activation: unknown activation {name!r}; expected one of "
                          f"{tuple(_e.BY_ACTIVATION) + ('gelu', 'gelu_tanh', 'identity')}")
    if params is None or (not isinstance(params, dict) and not f.params):
        return f.apply(x)
    kw = params if isinstance(params, dict) else dict(zip(f.params, params if isinstance(params, (tuple, list))
                                                          else (params,)))
    return f.apply(x, **kw)


# The activations added with the expression language: PyTorch's torch.nn.functional signatures. ``inplace``
# is accepted and ignored (every op here returns a new tensor), as for relu.
def silu(x, inplace: bool = False) -> Tensor:
    """``x * sigmoid(x)`` (SiLU, swish)."""
    return _e.Silu.apply(x)


def softplus(x, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, and ``x`` itself where ``beta x > threshold``."""
    return _e.Softplus.apply(x, beta=beta, threshold=threshold)


def elu(x, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """``x`` for ``x > 0``, else ``alpha (exp(x) - 1)``."""
    return _e.Elu.apply(x, alpha=alpha)


def selu(x, inplace: bool = False) -> Tensor:
    """``scale * elu(x, alpha)`` with PyTorch's constants (alpha ~ 1.6733, scale ~ 1.0507)."""
    return _e.Selu.apply(x)


def mish(x, inplace: bool = False) -> Tensor:
    """``x * tanh(softplus(x))``."""
    return _e.Mish.apply(x)


def hardswish(x, inplace: bool = False) -> Tensor:
    """``x * relu6(x + 3) / 6``."""
    return _e.Hardswish.apply(x)


def hardsigmoid(x, inplace: bool = False) -> Tensor:
    """``relu6(x + 3) / 6``."""
    return _e.Hardsigmoid.apply(x)


def relu6(x, inplace: bool = False) -> Tensor:
    """``min(max(x, 0), 6)``."""
    return _e.Relu6.apply(x)


def hardtanh(x, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:
    """``min(max(x, min_val), max_val)``."""
    if min_val > max_val:
        raise named_error(ValueError, f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    return _e.Hardtanh.apply(x, min_val=min_val, max_val=max_val)


def logsigmoid(x) -> Tensor:
    """``log(sigmoid(x))``, in its stable form (min(x, 0) minus log1p of exp(-|x|))."""
    return _e.LogSigmoid.apply(x)


def maximum(a, b) -> Tensor:
    return _e.Maximum.apply(a, b)


def minimum(a, b) -> Tensor:
    return _e.Minimum.apply(a, b)


def clamp(x, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    return _e.Clamp.apply(x, min=min, max=max)


clip = clamp


def where(cond, a, b) -> Tensor:
    """Elementwise ``a if cond else b`` (differentiable in ``a`` and ``b``)."""
    if not isinstance(a, TensorBase) and not isinstance(b, TensorBase) and isinstance(cond, TensorBase):
        a = _make_result(cond._backend().asarray(a), cond.device, None, 0)
    return _e.Where.apply(cond, a, b)


# ---------------------------------------------------------------- reductions
def sum(x, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return _r.Sum.apply(x, dim=dim, keepdim=keepdim)


def mean(x, dim=None, keepdim: bool = False) -> Tensor:
    return _r.Mean.apply(x, dim=dim, keepdim=keepdim)


def amax(x, dim=None, keepdim: bool = False) -> Tensor:
    return _r.Amax.apply(x, dim=dim, keepdim=keepdim)


def amin(x, dim=None, keepdim: bool = False) -> Tensor:
    return _r.Amin.apply(x, dim=dim, keepdim=keepdim)


def max(x, dim: int | None = None, keepdim: bool = False):  # noqa: A001
    """Maximum of all elements, or ``(values, indices)`` along ``dim`` (as PyTorch)."""
    if isinstance(dim, TensorBase):
        return maximum(x, dim)
    if dim is None:
        return _r.Amax.apply(x)
    return MinMax(*_r.MaxDim.apply(x, dim=dim, keepdim=keepdim, largest=True))


def min(x, dim: int | None = None, keepdim: bool = False):  # noqa: A001
    """Minimum of all elements, or ``(values, indices)`` along ``dim`` (as PyTorch)."""
    if isinstance(dim, TensorBase):
        return minimum(x, dim)
    if dim is None:
        return _r.Amin.apply(x)
    return MinMax(*_r.MaxDim.apply(x, dim=dim, keepdim=keepdim, largest=False))


def var(x, dim=None, keepdim: bool = False, correction: int = 1, unbiased: bool | None = None) -> Tensor:
    if unbiased is not None:
        correction = 1 if unbiased else 0
    return _r.Var.apply(x, dim=dim, keepdim=keepdim, correction=correction)


def std(x, dim=None, keepdim: bool = False, correction: int = 1) -> Tensor:
    return sqrt(var(x, dim=dim, keepdim=keepdim, correction=correction))


def logsumexp(x, dim=None, keepdim: bool = False) -> Tensor:
    return _r.LogSumExp.apply(x, dim=dim, keepdim=keepdim)


def softmax(x, dim: int = -1) -> Tensor:
    return _r.Softmax.apply(x, dim=dim)


def log_softmax(x, dim: int = -1) -> Tensor:
    return _r.LogSoftmax.apply(x, dim=dim)


def _nondiff(x: Tensor, arr) -> Tensor:
    return _make_result(arr, x.device, None, 0)


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    xp = x._backend().xp
    if dim is None:
        return _nondiff(x, xp.asarray(xp.argmax(x.data)).astype("int64"))
    out = xp.argmax(x.data, axis=dim)
    return _nondiff(x, (xp.expand_dims(out, dim) if keepdim else out).astype("int64"))


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    xp = x._backend().xp
    if dim is None:
        return _nondiff(x, xp.asarray(xp.argmin(x.data)).astype("int64"))
    out = xp.argmin(x.data, axis=dim)
    return _nondiff(x, (xp.expand_dims(out, dim) if keepdim else out).astype("int64"))


# ---------------------------------------------------------------- shapes
def _shape_arg(shape: Sequence) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def reshape(x, *shape) -> Tensor:
    shape = _shape_arg(shape)
    if shape == x.shape:
        return x
    return _s.Reshape.apply(x, shape=shape)


view = reshape


def permute(x, *dims) -> Tensor:
    return _s.Permute.apply(x, dims=_shape_arg(dims))


def transpose(x, dim0: int = 0, dim1: int = 1) -> Tensor:
    nd = x.ndim
    if nd < 2:
        return x
    dims = list(range(nd))
    a, b = dim0 % nd, dim1 % nd
    dims[a], dims[b] = dims[b], dims[a]
    return _s.Permute.apply(x, dims=tuple(dims))


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    nd = x.ndim
    if nd == 0:
        return reshape(x, 1)
    s, e = start_dim % nd, end_dim % nd
    shape = x.shape[:s] + (-1,) + x.shape[e + 1:]
    return reshape(x, shape)


def unsqueeze(x, dim: int) -> Tensor:
    d = dim % (x.ndim + 1)
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def squeeze(x, dim: int | None = None) -> Tensor:
    if dim is None:
        return reshape(x, tuple(s for s in x.shape if s != 1))
    d = dim % (x.ndim or 1)
    if x.ndim == 0 or x.shape[d] != 1:
        return x
    return reshape(x, x.shape[:d] + x.shape[d + 1:])


def expand(x, *shape) -> Tensor:
    return _s.Expand.apply(x, shape=_shape_arg(shape))


def getitem(x, key) -> Tensor:
    return _s.GetItem.apply(x, key=_s._index_arrays(key))


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return _s.Cat.apply(*tensors, dim=dim)


concatenate = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    return _s.Stack.apply(*tensors, dim=dim)


def clone(x) -> Tensor:
    return _s.Clone.apply(x)


def to_copy(x, device: _device_t, dtype) -> Tensor:
    return _s.ToCopy.apply(x, device=device, dtype=dtype)


# ---------------------------------------------------------------- linear algebra
def matmul(a, b) -> Tensor:
    if not isinstance(a, TensorBase) or not isinstance(b, TensorBase):
        raise named_error(TypeError, f"matmul: both operands must be Tensors, got {type(a).__name__} and "
                          f"{type(b).__name__}")
    return _l.MatMul.apply(a, b)


def linear(x, weight, bias=None) -> Tensor:
    """``x @ weight.T + bias`` (weight is ``(out_features, in_features)``)."""
    return _l.FusedLinear.apply(x, weight, bias, activation="identity")


def fused_linear(x, weight, bias=None, activation: str = "identity", negative_slope: float | None = None,
                 **params: float) -> Tensor:
    """``activation(x @ weight.T + bias)`` in one GEMM and one fused pass, saving only what backward needs.
    The activation's parameters by their PyTorch names: ``negative_slope`` (leaky_relu), ``beta`` and
    ``threshold`` (softplus), ``alpha`` (elu), ``min_val`` and ``max_val`` (hardtanh); ``negative_slope``
    is ignored by the other activations (the older signature passed it always)."""
    if negative_slope is not None and activation == "leaky_relu":  # ignored by the others, as before
        params["negative_slope"] = negative_slope
    return _l.FusedLinear.apply(x, weight, bias, activation=activation, params=params or None)


# ---------------------------------------------------------------- losses, dropout
def mse_loss(input, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    return _lo.MSELoss.apply(input, target, reduction=reduction)


def cross_entropy(input, target, reduction: str = "mean", ignore_index: int = -100,  # noqa: A002
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``(N, C)`` against integer class ids ``(N,)``, via stable log-softmax."""
    return _lo.CrossEntropy.apply(input, target, reduction=reduction, ignore_index=ignore_index,
                                  label_smoothing=label_smoothing)


def nll_loss(input, target, reduction: str = "mean", ignore_index: int = -100) -> Tensor:  # noqa: A002
    return _lo.NLLLoss.apply(input, target, reduction=reduction, ignore_index=ignore_index)


def dropout(x, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout, seeded by the device generator (``gg.manual_seed``)."""
    if not 0.0 <= p <= 1.0:
        raise named_error(ValueError, f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return _lo.Dropout.apply(x, p=p)


# ---------------------------------------------------------------- comparisons (not differentiable)
def _cmp(name: str):
    def f(a, b) -> Tensor:
        ref = a if isinstance(a, TensorBase) else b
        xa = a.data if isinstance(a, TensorBase) else a
        xb = b.data if isinstance(b, TensorBase) else b
        if isinstance(a, TensorBase) and isinstance(b, TensorBase) and a.device != b.device:
            raise named_error(RuntimeError, f"{name}: tensors on different devices {a.device} and {b.device}")
        return _make_result(getattr(ref._backend().xp, name)(xa, xb), ref.device, None, 0)
    f.__name__ = name
    return f


eq, ne, lt, le, gt, ge = (_cmp(n) for n in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal"))
logical_and, logical_or = _cmp("logical_and"), _cmp("logical_or")
