"""The differentiable functions, as plain functions on Tensors (the layer ``Tensor`` methods,
``gg.*`` and ``gg.nn.functional`` call). Each op's forward and backward live in one class in its
family module; nothing here branches on the device."""
from __future__ import annotations

import builtins
from collections import namedtuple
from typing import TYPE_CHECKING, Any, Sequence

from .._device import device as _device_t
from .._dtype import promote, scalar_dtype
from .._errors import DtypeError, ShapeError
from ..autograd.function import TensorBase, _make_result, named_error
from . import elementwise as _e, linalg as _l, loss as _lo, normalization as _n, reduction as _r, shape as _s
from ._common import check_broadcast as _check_broadcast, norm_dim, wrap_dim

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


def rsqrt(x) -> Tensor:
    return _e.Rsqrt.apply(x)


def erf(x) -> Tensor:
    return _e.Erf.apply(x)


def log2(x) -> Tensor:
    return _e.Log2.apply(x)


def log10(x) -> Tensor:
    return _e.Log10.apply(x)


def exp2(x) -> Tensor:
    return _e.Exp2.apply(x)


def sign(x) -> Tensor:
    """-1, 0 or 1 in ``x``'s dtype; gradient 0."""
    return _e.Sign.apply(x)


def lerp(start, end, weight) -> Tensor:
    """``start + weight * (end - start)`` (``weight`` a number or a tensor)."""
    return _e.Lerp.apply(start, end, weight)


def masked_fill(x, mask, value) -> Tensor:
    """``x`` with ``value`` where the boolean ``mask`` is True, in ``x``'s dtype (``value``: a number or a
    0-d tensor, which then gets the gradient of the filled positions): ``where(mask, value, x)``."""
    if not isinstance(mask, TensorBase) or mask.dtype.kind != "b":
        raise named_error(DtypeError, "masked_fill: mask must be a bool tensor, got "
                          f"{getattr(mask, 'dtype', type(mask).__name__)}; build it with a comparison (x > 0)")
    if isinstance(value, TensorBase):
        if value.ndim != 0:
            raise named_error(ShapeError, f"masked_fill: value must be a number or a 0-d tensor, got shape "
                              f"{tuple(value.shape)}")
        value = value.to(x.dtype)
    else:
        value = _make_result(x._backend().asarray(value, dtype=x.dtype), x.device, None, 0)
    _check_broadcast("masked_fill", x.data, mask.data)
    return _e.Where.apply(mask, value, x)


def _float_test(name: str):
    def f(x) -> Tensor:
        data = x.data
        if data.dtype.kind != "f":  # integers and bools are finite
            full = x._backend().xp.full(data.shape, name == "isfinite")
            return _nondiff(x, full)
        return _nondiff(x, getattr(x._backend().xp, name)(data))
    f.__name__ = name
    f.__doc__ = f"``{name}`` elementwise (a bool tensor, not differentiable)."
    return f


isnan, isinf, isfinite = _float_test("isnan"), _float_test("isinf"), _float_test("isfinite")


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
        a = _make_result(cond._backend().asarray(a, dtype=scalar_dtype(a)), cond.device, None, 0)
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


def std(x, dim=None, keepdim: bool = False, correction: int = 1, unbiased: bool | None = None) -> Tensor:
    if unbiased is not None:
        correction = 1 if unbiased else 0
    return sqrt(_r.Var.apply(x, dim=dim, keepdim=keepdim, correction=correction, op="std"))


def prod(x, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return _r.Prod.apply(x, dim=dim, keepdim=keepdim)


def _logical_reduce(name: str):
    def f(x, dim=None, keepdim: bool = False) -> Tensor:
        axes = norm_dim(name, dim, x.ndim)
        out = getattr(x._backend().xp, name)(x.data, axis=axes, keepdims=keepdim)
        return _nondiff(x, out)
    f.__name__ = name
    f.__doc__ = f"``{name}`` over all elements or ``dim`` (an int or a tuple): a bool tensor."
    return f


any, all = _logical_reduce("any"), _logical_reduce("all")  # noqa: A001


def logsumexp(x, dim=None, keepdim: bool = False) -> Tensor:
    return _r.LogSumExp.apply(x, dim=dim, keepdim=keepdim)


def softmax(x, dim: int = -1) -> Tensor:
    return _r.Softmax.apply(x, dim=dim)


def log_softmax(x, dim: int = -1) -> Tensor:
    return _r.LogSoftmax.apply(x, dim=dim)


def _nondiff(x: Tensor, arr) -> Tensor:
    return _make_result(arr, x.device, None, 0)


def _arg_extreme(name: str, x: Tensor, dim, keepdim: bool) -> Tensor:
    xp = x._backend().xp
    fn = getattr(xp, name)
    if dim is None:
        out = xp.asarray(fn(x.data)).astype("int64")
        return _nondiff(x, out.reshape((1,) * x.ndim) if keepdim else out)
    d = wrap_dim(name, dim, x.ndim)
    if x.ndim == 0:
        return _nondiff(x, xp.zeros((), "int64"))
    out = fn(x.data, axis=d)
    return _nondiff(x, (xp.expand_dims(out, d) if keepdim else out).astype("int64"))


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return _arg_extreme("argmax", x, dim, keepdim)


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return _arg_extreme("argmin", x, dim, keepdim)


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
    a, b = wrap_dim("transpose", dim0, nd), wrap_dim("transpose", dim1, nd)
    if nd < 2 or a == b:
        return x
    dims = list(range(nd))
    dims[a], dims[b] = dims[b], dims[a]
    return _s.Permute.apply(x, dims=tuple(dims))


def flatten(x, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    nd = x.ndim
    s, e = wrap_dim("flatten", start_dim, nd), wrap_dim("flatten", end_dim, nd)
    if s > e:
        raise named_error(ShapeError, f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                          f"for a tensor of shape {tuple(x.shape)}")
    if nd == 0:
        return reshape(x, 1)
    shape = x.shape[:s] + (-1,) + x.shape[e + 1:]
    return reshape(x, shape)


def unflatten(x, dim: int, sizes: Sequence[int]) -> Tensor:
    """Split dimension ``dim`` into ``sizes`` (one entry may be -1), as ``torch.unflatten``."""
    if x.ndim == 0:
        raise named_error(IndexError, "unflatten: a 0-d tensor has no dimension to unflatten")
    d = wrap_dim("unflatten", dim, x.ndim)
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        raise named_error(RuntimeError, "unflatten: sizes must be non-empty")
    known = 1
    for s in sizes:
        known *= s if s != -1 else 1
    n = x.shape[d]
    if sizes.count(-1) > 1 or (-1 not in sizes and known != n) or (-1 in sizes and (known == 0 or n % known)):
        raise named_error(ShapeError, f"unflatten: sizes {sizes} do not multiply to the size {n} of dimension "
                          f"{dim} of a tensor of shape {tuple(x.shape)}")
    return reshape(x, x.shape[:d] + sizes + x.shape[d + 1:])


def unsqueeze(x, dim: int) -> Tensor:
    d = wrap_dim("unsqueeze", dim, x.ndim, extra=1)
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def squeeze(x, dim: "int | Sequence[int] | None" = None) -> Tensor:
    """Drop size-1 dimensions: all of them, or those among ``dim`` (an int or a tuple, as in PyTorch
    2.0+; a named dimension whose size is not 1 stays)."""
    if dim is None:
        return reshape(x, tuple(s for s in x.shape if s != 1))
    dims = norm_dim("squeeze", dim, x.ndim)
    drop = [d for d in dims if x.shape[d] == 1]
    if not drop:
        return x
    return reshape(x, tuple(s for i, s in enumerate(x.shape) if i not in drop))


def split(x, split_size_or_sections, dim: int = 0) -> tuple:
    """Pieces of ``dim``: of ``split_size_or_sections`` each (the last may be smaller), or of the listed
    sizes (which must add up to the dimension's size), as ``torch.split``."""
    if x.ndim == 0:
        raise named_error(RuntimeError, "split: a 0-d tensor cannot be split")
    d = wrap_dim("split", dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, (list, tuple)):
        sizes = tuple(int(s) for s in split_size_or_sections)
        if builtins.any(s < 0 for s in sizes) or builtins.sum(sizes) != n:
            raise named_error(ShapeError, f"split: sizes {sizes} must be non-negative and add up to the size {n} "
                              f"of dimension {dim} (tensor of shape {tuple(x.shape)})")
    else:
        size = int(split_size_or_sections)
        if size <= 0 and not (size == 0 and n == 0):
            raise named_error(RuntimeError, f"split: split_size must be positive, got {size}")
        sizes = tuple(builtins.min(size, n - i) for i in range(0, n, size)) if n else (0,)
    return _s.Split.apply(x, sizes=sizes, dim=d)


def chunk(x, chunks: int, dim: int = 0) -> tuple:
    """``chunks`` pieces of ``dim`` of ``ceil(size / chunks)`` each (fewer when that covers it), as
    ``torch.chunk``."""
    if int(chunks) <= 0:
        raise named_error(RuntimeError, f"chunk: chunks must be greater than 0, got {chunks}")
    if x.ndim == 0:
        raise named_error(RuntimeError, "chunk: a 0-d tensor cannot be chunked")
    n = x.shape[wrap_dim("chunk", dim, x.ndim)]
    return split(x, builtins.max(-(-n // int(chunks)), 1), dim)


def flip(x, dims) -> Tensor:
    dims = (dims,) if not isinstance(dims, (tuple, list)) else dims
    return _s.Flip.apply(x, dims=norm_dim("flip", dims, x.ndim))


def tril(x, diagonal: int = 0) -> Tensor:
    return _s.Triangle.apply(x, diagonal=diagonal, upper=False)


def triu(x, diagonal: int = 0) -> Tensor:
    return _s.Triangle.apply(x, diagonal=diagonal, upper=True)


def gather(x, dim: int, index) -> Tensor:
    """``torch.gather``: values of ``x`` at ``index`` along ``dim``."""
    return _s.Gather.apply(x, dim, index)


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


def l1_loss(input, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    return _lo.PointwiseLoss.apply(input, target, kind="l1", reduction=reduction)


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0) -> Tensor:  # noqa: A002
    return _lo.PointwiseLoss.apply(input, target, kind="smooth_l1", reduction=reduction, param=beta)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0) -> Tensor:  # noqa: A002
    return _lo.PointwiseLoss.apply(input, target, kind="huber", reduction=reduction, param=delta)


def _class_dim_last(op: str, input, target, probs: bool):
    """PyTorch's layouts for class-dimension losses: ``(C,)`` unbatched, ``(N, C)``, or ``(N, C, d1, ...)``
    with targets ``()``, ``(N,)``, ``(N, d1, ...)`` (class indices) or the input's shape (probabilities).
    Returns the 2-D ``(rows, C)`` view, the 1-D (or 2-D) target and how to shape a per-row result back."""
    if not isinstance(input, TensorBase) or input.ndim == 2:
        return input, target, None
    if input.ndim == 1:
        if probs:
            return input.unsqueeze(0), target.unsqueeze(0), ()
        if not isinstance(target, TensorBase) or target.ndim != 0:
            raise named_error(ValueError, f"{op}: an unbatched input of shape {tuple(input.shape)} needs a 0-d class "
                              f"target, got shape {tuple(getattr(target, 'shape', ()))}")
        return input.unsqueeze(0), target.reshape(1), ()
    if input.ndim == 0:
        raise named_error(ShapeError, f"{op}: input must have a class dimension, got a 0-d tensor")
    n, c, rest = input.shape[0], input.shape[1], tuple(input.shape[2:])
    perm = (0,) + tuple(range(2, input.ndim)) + (1,)
    x2 = input.permute(*perm).reshape(-1, c)
    if probs:
        return x2, target.permute(*perm).reshape(-1, c), (n,) + rest
    if not isinstance(target, TensorBase) or tuple(target.shape) != (n,) + rest:
        raise named_error(ValueError, f"{op}: input of shape {tuple(input.shape)} needs a class target of shape "
                          f"{(n,) + rest}, got {tuple(getattr(target, 'shape', ()))}")
    return x2, target.reshape(-1), (n,) + rest


def cross_entropy(input, target, weight=None, reduction: str = "mean", ignore_index: int = -100,  # noqa: A002
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits ``(N, C)`` (also ``(C,)`` and ``(N, C, d1, ...)``) against class indices or
    class probabilities (a floating target of the input's shape), via a stable log-softmax; ``weight``:
    one per class."""
    probs = isinstance(target, TensorBase) and target.dtype.kind == "f" and target.shape == getattr(input, "shape", None)
    x2, t2, back = _class_dim_last("cross_entropy", input, target, probs)
    out = _lo.CrossEntropy.apply(x2, t2, weight, reduction=reduction, ignore_index=ignore_index,
                                 label_smoothing=label_smoothing)
    return out.reshape(back) if back is not None and reduction == "none" else out


def nll_loss(input, target, weight=None, reduction: str = "mean", ignore_index: int = -100) -> Tensor:  # noqa: A002
    x2, t2, back = _class_dim_last("nll_loss", input, target, False)
    out = _lo.NLLLoss.apply(x2, t2, weight, reduction=reduction, ignore_index=ignore_index)
    return out.reshape(back) if back is not None and reduction == "none" else out


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean") -> Tensor:  # noqa: A002
    """``-w (t log p + (1 - t) log(1 - p))`` of probabilities ``p`` in [0, 1]."""
    return _lo.BinaryCrossEntropy.apply(input, target, weight, reduction=reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean",  # noqa: A002
                                     pos_weight=None) -> Tensor:
    """Sigmoid + binary cross-entropy in one stable formula; ``pos_weight`` weighs the positive term
    (one value per class, broadcast over the last dimension)."""
    return _lo.BCEWithLogits.apply(input, target, weight, pos_weight, reduction=reduction)


def one_hot(tensor, num_classes: int = -1) -> Tensor:
    """Integer class indices to int64 one-hot rows (a new last dimension of ``num_classes``; -1: the
    largest index + 1, a host read)."""
    if not isinstance(tensor, TensorBase) or tensor.dtype.kind not in "iu":
        raise named_error(DtypeError, "one_hot: expected an integer (int64) tensor of class indices, got "
                          + (str(tensor.dtype) if isinstance(tensor, TensorBase) else type(tensor).__name__))
    be = tensor._backend()
    xp = be.xp
    idx = tensor.data
    if num_classes == -1:
        if idx.size == 0:
            raise named_error(RuntimeError, "one_hot: cannot infer num_classes from an empty tensor; pass it")
        num_classes = int(idx.max()) + 1
    if int(num_classes) < 0 or (idx.size and num_classes == 0):
        raise named_error(RuntimeError, f"one_hot: num_classes must be positive, got {num_classes}")
    be.check_indices("one_hot", idx, int(num_classes), idx.ndim)
    out = (idx[..., None] == xp.arange(int(num_classes))).astype("int64")
    return _nondiff(tensor, out)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:  # noqa: A002
    """Normalise over the trailing ``normalized_shape`` dimensions (one fused pass on CPU and CUDA)."""
    shape = (int(normalized_shape),) if not isinstance(normalized_shape, (tuple, list)) else \
        tuple(int(s) for s in normalized_shape)
    return _n.LayerNorm.apply(input, weight, bias, normalized_shape=shape, eps=eps)


def embedding(input, weight, padding_idx: int | None = None) -> Tensor:  # noqa: A002
    """Rows of ``weight`` ``(num, dim)`` at the integer indices ``input`` (any shape)."""
    if padding_idx is not None:
        n = weight.shape[0]
        if not -n <= padding_idx < n:
            raise named_error(ValueError, f"embedding: padding_idx {padding_idx} must be within [{-n}, {n - 1}]")
        padding_idx %= n
    return _s.Embedding.apply(input, weight, padding_idx=padding_idx)


def pad(input, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:  # noqa: A002
    """Constant padding, ``pad`` = (left, right) of the last dimension, then of the one before, ...;
    negative amounts crop. Only ``mode='constant'``."""
    if mode != "constant":
        raise named_error(NotImplementedError, f"pad: only mode='constant' is implemented, got {mode!r}")
    return _s.Pad.apply(input, pad=tuple(int(p) for p in pad), value=0.0 if value is None else value)


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
        xa, xb, _ = promote(xa, xb)  # compared in PyTorch's result dtype
        return _make_result(getattr(ref._backend().xp, name)(xa, xb), ref.device, None, 0)
    f.__name__ = name
    return f


eq, ne, lt, le, gt, ge = (_cmp(n) for n in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal"))
logical_and, logical_or = _cmp("logical_and"), _cmp("logical_or")


# What autograd (below this layer) needs of it for create_graph and gg.autograd.functional
from . import graph_backend as _graph_backend  # noqa: E402
from ..autograd import higher_order as _higher_order  # noqa: E402

_higher_order.register(graph_backend=_graph_backend.graph_backend, stack=stack)
