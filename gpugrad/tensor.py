"""``Tensor``: an array on a device plus the autograd bookkeeping (grad, grad_fn, version), and every
Tensor method and operator, each declared here in the class body.

Tensor sits above the ops (``gpugrad/ops/``): its methods are the ops. The layers below recognise
tensors by its base class (``autograd.function.TensorBase``) and build them through the class this
module registers right after defining it (``register_tensor_class``), not by importing this module.

Adding an op with a Tensor method (docs/ARCHITECTURE.md, "Adding an op"): its Function in its
family module under ``gpugrad/ops/``, its function in ``gpugrad/ops/__init__.py``, and here one
method in the section of its family, declared with ``@_binds(F.name)`` (signature + one-line
docstring; the op function itself is what runs) or written as a plain method when it adds logic.
"""
from __future__ import annotations

# mypy: disable-error-code="empty-body"
# (the ``@_binds`` declarations have no body: the op function they name is what runs)

import inspect
import types
import weakref
from typing import Any, Callable, Iterator, Tuple, TypeVar, Union

import numpy as np

from . import _dtype
from . import ops as F
from ._device import as_device, device
from ._errors import DtypeError, ShapeError
from .autograd import engine as _engine
from .autograd.function import GradError, TensorBase, _make_result, named_error, register_tensor_class
from .autograd.grad_mode import STATE
from .backends import get_backend
from .creation import _device_of, _to_array
from .ops import elementwise as _e
from .ops.shape import _index_arrays, split_index

_Spec = TypeVar("_Spec", bound=Callable[..., Any])
TensorOrScalar = Union["Tensor", int, float, np.ndarray, np.generic]  # an operand of the arithmetic
Dims = Union[int, Tuple[int, ...], None]  # the dimensions a reduction runs over (None: all)


def _binds(impl: Callable[..., Any]) -> Callable[[_Spec], _Spec]:
    """Declare a method that *is* ``impl`` (an op function of ``gpugrad.ops``, or a Function's
    ``apply`` for the hottest operators): the decorated def gives the method's signature and
    docstring, and its body is never run; ``impl`` itself is bound under that name, so a call costs
    one Python frame less than a method calling ``impl``. The def's parameters after ``self`` must be
    ``impl``'s after its first (checked here; a Function's ``apply`` takes ``*args, **kwargs``)."""
    def bind(spec: _Spec) -> _Spec:
        if impl.__code__.co_argcount and _params(spec) != _params(impl):  # apply: (*args, **kwargs)
            raise TypeError(f"Tensor.{spec.__name__} declares the parameters {inspect.signature(spec)}, but "
                            f"{impl.__module__}.{impl.__qualname__} takes {inspect.signature(impl)}: after "
                            "the first, make them the same (names, defaults, kinds)")
        f = types.FunctionType(impl.__code__, impl.__globals__, spec.__name__, impl.__defaults__,
                               impl.__closure__)
        f.__kwdefaults__ = impl.__kwdefaults__
        f.__qualname__, f.__doc__, f.__module__ = spec.__qualname__, spec.__doc__, spec.__module__
        f.__annotations__ = spec.__annotations__
        f.__wrapped__ = spec  # type: ignore[attr-defined]  # inspect.signature / help() show the declaration
        return f  # type: ignore[return-value]
    return bind


def _params(fn: Callable[..., Any]) -> tuple:
    """A function's parameters after its first, from its code: names (``*args``/``**kwargs`` marked),
    positional count, keyword-only count, defaults (cheap enough to check every method at import)."""
    c = fn.__code__
    names = list(c.co_varnames[:c.co_argcount + c.co_kwonlyargcount])
    if c.co_flags & inspect.CO_VARARGS:
        names.insert(c.co_argcount, "*" + c.co_varnames[len(names)])
    if c.co_flags & inspect.CO_VARKEYWORDS:
        names.append("**" + c.co_varnames[len(names)])
    return tuple(names[1:]), c.co_argcount, c.co_kwonlyargcount, fn.__defaults__, fn.__kwdefaults__


def clear_grads(tensors, set_to_none: bool = True) -> None:
    """``zero_grad`` for any tensors: drop each ``.grad`` (default) or zero it in place."""
    for t in tensors:
        if t.grad is None:
            continue
        if set_to_none:
            t.grad = None
        else:
            t.grad.data[...] = 0
            t.grad._vc[0] += 1


class Tensor(TensorBase):
    """An n-dimensional array on ``cpu`` or ``cuda`` that records operations for ``backward()``.

    Every method and operator is declared below. The ops (arithmetic, math, reductions, shapes,
    comparisons) are ``@_binds(F.name)`` declarations: the op function of ``gpugrad.ops`` (or, for the
    hottest operators, the Function's ``apply``) is bound itself, one Python frame less per call."""

    __slots__ = ("data", "grad", "_requires_grad", "_grad_fn", "_out_idx", "_vc", "_device", "_hooks",
                 "__weakref__")
    __array_priority__ = 1000  # numpy scalars/arrays defer to Tensor operators

    def __init__(self, data: Any, dtype=None, device: "str | device | None" = None,
                 requires_grad: bool = False) -> None:
        """A tensor holding ``data`` (numbers, nested lists, NumPy/CuPy arrays, a Tensor) on ``device``."""
        dev = _device_of(data, device)
        self.data = _to_array(data, dtype, dev)
        self.grad = None
        self._requires_grad = False
        self._grad_fn = None
        self._out_idx = 0
        self._vc = [0]
        self._device = dev
        self._hooks = None
        if requires_grad:
            self.requires_grad = True

    @staticmethod
    def _wrap(arr, dev) -> "Tensor":
        """A plain tensor around the array ``arr`` on ``dev`` (no copy, no graph)."""
        return _make_result(arr, dev, None, 0)

    # ------------------------------------------------------------------ properties
    @property
    def requires_grad(self) -> bool:
        """Whether operations on this tensor are recorded for ``backward()``."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        value = bool(value)
        if value and self.data.dtype.kind not in "fc":
            raise named_error(DtypeError,
                f"requires_grad: only floating-point tensors can require gradients, this one is "
                f"{self.data.dtype} with shape {tuple(self.data.shape)}. Convert it first: x.float().")
        if not value and self._grad_fn is not None:
            raise named_error(GradError,
                "requires_grad: cannot turn off requires_grad on a non-leaf tensor; use .detach()")
        self._requires_grad = value

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Set ``requires_grad`` in place and return ``self``."""
        self.requires_grad = requires_grad
        return self

    @property
    def shape(self) -> tuple:
        """The size of each dimension."""
        return self.data.shape

    def size(self, dim: int | None = None):
        """The shape, or the size of dimension ``dim``."""
        return self.data.shape if dim is None else self.data.shape[dim]

    @property
    def dtype(self) -> np.dtype:
        """The element type (a NumPy dtype)."""
        return self.data.dtype

    @property
    def device(self) -> device:
        """The device the data lives on."""
        return self._device

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self.data.ndim

    def dim(self) -> int:
        """The number of dimensions."""
        return self.data.ndim

    def numel(self) -> int:
        """The number of elements."""
        return int(self.data.size)

    @property
    def nbytes(self) -> int:
        """The bytes of the data."""
        return int(self.data.nbytes)

    @property
    def is_leaf(self) -> bool:
        """Whether no recorded op made this tensor (``.grad`` is filled on leaves)."""
        return self._grad_fn is None

    @property
    def grad_fn(self):
        """The graph node that made this tensor (None for a leaf)."""
        return self._grad_fn

    @property
    def is_cuda(self) -> bool:
        """Whether the data lives on a CUDA device."""
        return self._device.type == "cuda"

    @property
    def _version(self) -> int:
        """How many in-place edits the data has had (shared with ``detach()``ed tensors)."""
        return self._vc[0]

    def _backend(self):
        """The backend of this tensor's device."""
        return get_backend(self._device)

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (shared on CPU, copied from a GPU)."""
        return self._backend().to_numpy(self.data)

    def item(self) -> float | int | bool:
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise named_error(ShapeError,
                f"item: only one-element tensors can be converted to a Python scalar, got shape {tuple(self.shape)}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        """The data as (nested) Python lists."""
        return self.numpy().tolist()

    def __float__(self) -> float:
        """``float(self)`` of a one-element tensor."""
        return float(self.item())

    def __int__(self) -> int:
        """``int(self)`` of a one-element tensor."""
        return int(self.item())

    def __bool__(self) -> bool:
        """``bool(self)`` of a one-element tensor (ambiguous for more: use ``any()`` / ``all()``)."""
        if self.data.size != 1:
            raise named_error(RuntimeError,
                f"bool: the truth value of a tensor with {self.data.size} elements is ambiguous; use .any() or .all()")
        return bool(self.item())

    def __len__(self) -> int:
        """The size of the first dimension."""
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self) -> Iterator["Tensor"]:
        """The sub-tensors along the first dimension."""
        for i in range(len(self)):
            yield self[i]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """The data as a NumPy array (``np.asarray(t)``)."""
        if STATE.recording is not None:  # NumPy would cut the recorded graph here
            raise named_error(GradError,
                f"{STATE.recording} backward: a NumPy function received a Tensor while the backward formula "
                "records a graph (create_graph=True), which would cut the graph silently. Write the formula "
                "with Tensor operators and ctx.backend / ctx.backend.xp, which work on arrays and Tensors alike.")
        a = self.numpy()
        return a.astype(dtype) if dtype is not None else a

    def to(self, *args: Any, **kwargs: Any) -> "Tensor":
        """``t.to("cuda")``, ``t.to(gg.float64)``, ``t.to("cpu", gg.float32)``: differentiable copy."""
        dev, dt = None, kwargs.pop("dtype", None)
        dev = kwargs.pop("device", None)
        if kwargs:
            raise TypeError(f"to: unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, (str, device)):
                dev = a
            elif isinstance(a, Tensor):
                dev, dt = a.device, a.dtype
            else:
                dt = a
        dev = as_device(dev) if dev is not None else self._device
        dt = _dtype.as_dtype(dt) if dt is not None else self.data.dtype
        if dev == self._device and dt == self.data.dtype:
            return self
        return F.to_copy(self, dev, dt)

    def cpu(self) -> "Tensor":
        """A copy on the CPU (``self`` when already there)."""
        return self.to("cpu")

    def cuda(self, index: int = 0) -> "Tensor":
        """A copy on CUDA device ``index`` (``self`` when already there)."""
        return self.to(device("cuda", index))

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (shares memory and version counter)."""
        return _make_result(self.data, self._device, None, 0, self._vc)

    def detach_(self) -> "Tensor":
        """Cut this tensor from the graph in place (it becomes a leaf that does not require grad)."""
        self._grad_fn = None
        self._requires_grad = False
        return self

    @_binds(F.clone)
    def clone(self) -> Tensor:
        """A copy with its own memory (differentiable)."""

    def contiguous(self) -> "Tensor":
        """``self`` (the data is always usable as it is)."""
        return self

    # ------------------------------------------------------------------ autograd
    def backward(self, grad: "Tensor | None" = None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs: "list[Tensor] | None" = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (reverse mode, one pass). With
        ``create_graph`` the gradients carry their own graph, to be differentiated again
        (``retain_graph`` defaults to ``create_graph``), as in PyTorch."""
        _engine.backward(self, grad, retain_graph=retain_graph, create_graph=create_graph, inputs=inputs)

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        if self._grad_fn is None:
            return
        node = self._grad_fn
        if node._retained is None:
            node._retained = {}
        node._retained[self._out_idx] = weakref.ref(self)

    def register_hook(self, hook: Callable[["Tensor"], "Tensor | None"]) -> Callable[[], None]:
        """Call ``hook(grad)`` when this tensor's gradient is computed; it may return a replacement."""
        if not self._requires_grad:
            raise named_error(GradError, "register_hook: tensor does not require grad")
        if self._grad_fn is None:
            if self._hooks is None:
                self._hooks = []
            self._hooks.append(hook)
            return lambda: self._hooks.remove(hook)
        node = self._grad_fn
        if node._hooks is None:
            node._hooks = {}
        node._hooks.setdefault(self._out_idx, []).append(hook)
        return lambda: node._hooks[self._out_idx].remove(hook)

    def register_post_accumulate_grad_hook(self, hook: Callable[["Tensor"], None]) -> Callable[[], None]:
        """Call ``hook(self)`` right after backward accumulated this leaf's gradient into ``.grad``
        (as soon as its last contribution arrived, while the rest of backward still runs). Returns
        a function that removes the hook. Leaves only, as in PyTorch."""
        if not self._requires_grad or self._grad_fn is not None:
            raise named_error(GradError,
                "register_post_accumulate_grad_hook: only leaf tensors that require grad (parameters) "
                f"accumulate into .grad; this one (shape {tuple(self.shape)}) "
                + ("is not a leaf" if self._grad_fn is not None else "does not require grad"))
        return _engine.register_post_accumulate_grad_hook(self, hook)

    # ------------------------------------------------------------------ operators (ops/elementwise.py, linalg.py)
    # The hottest bind their Function's apply directly (Add.apply & co.: no gpugrad.ops wrapper frame).
    @_binds(_e.Add.apply)
    def __add__(self, other: TensorOrScalar) -> Tensor:
        """``self + other``, broadcasting."""

    @_binds(_e.Add.apply)
    def __radd__(self, other: TensorOrScalar) -> Tensor:
        """``other + self``."""

    @_binds(_e.Sub.apply)
    def __sub__(self, other: TensorOrScalar) -> Tensor:
        """``self - other``, broadcasting."""

    def __rsub__(self, other: TensorOrScalar) -> Tensor:
        """``other - self``."""
        return _e.Sub.apply(other, self)

    @_binds(_e.Mul.apply)
    def __mul__(self, other: TensorOrScalar) -> Tensor:
        """``self * other``, broadcasting."""

    @_binds(_e.Mul.apply)
    def __rmul__(self, other: TensorOrScalar) -> Tensor:
        """``other * self``."""

    @_binds(_e.Div.apply)
    def __truediv__(self, other: TensorOrScalar) -> Tensor:
        """``self / other``, broadcasting."""

    def __rtruediv__(self, other: TensorOrScalar) -> Tensor:
        """``other / self``."""
        return _e.Div.apply(other, self)

    @_binds(F.pow)
    def __pow__(self, b: TensorOrScalar) -> Tensor:
        """``self ** b``, broadcasting."""

    def __rpow__(self, other: TensorOrScalar) -> Tensor:
        """``other ** self``."""
        return _e.Pow.apply(other, self)

    @_binds(F.matmul)
    def __matmul__(self, b: Tensor) -> Tensor:
        """``self @ b``: matrix product (batched, broadcasting, 1-d operands as in NumPy)."""

    def __rmatmul__(self, other: Tensor) -> Tensor:
        """``other @ self``."""
        return F.matmul(other, self)

    @_binds(_e.Neg.apply)
    def __neg__(self) -> Tensor:
        """``-self``."""

    @_binds(F.abs)
    def __abs__(self) -> Tensor:
        """``abs(self)``."""

    @_binds(F.getitem)
    def __getitem__(self, key: Any) -> Tensor:
        """``self[key]``: basic and advanced (integer/boolean tensor) indexing, differentiable."""

    def __iadd__(self, other: TensorOrScalar) -> Tensor:
        """``self += other``: in place, or a new tensor while recording a graph (no in-place ops in graphs)."""
        return _e.Add.apply(self, other) if self._requires_grad and STATE.grad_enabled else self.add_(other)

    def __isub__(self, other: TensorOrScalar) -> Tensor:
        """``self -= other``: in place, or a new tensor while recording a graph."""
        return _e.Sub.apply(self, other) if self._requires_grad and STATE.grad_enabled else self.sub_(other)

    def __imul__(self, other: TensorOrScalar) -> Tensor:
        """``self *= other``: in place, or a new tensor while recording a graph."""
        return _e.Mul.apply(self, other) if self._requires_grad and STATE.grad_enabled else self.mul_(other)

    def __itruediv__(self, other: TensorOrScalar) -> Tensor:
        """``self /= other``: in place, or a new tensor while recording a graph."""
        return _e.Div.apply(self, other) if self._requires_grad and STATE.grad_enabled else self.div_(other)

    # ------------------------------------------------------------------ comparisons (not differentiable)
    @_binds(F.eq)
    def __eq__(self, b: TensorOrScalar) -> Tensor:  # type: ignore[override]
        """``self == b`` elementwise (a bool tensor)."""

    @_binds(F.ne)
    def __ne__(self, b: TensorOrScalar) -> Tensor:  # type: ignore[override]
        """``self != b`` elementwise."""

    @_binds(F.lt)
    def __lt__(self, b: TensorOrScalar) -> Tensor:
        """``self < b`` elementwise."""

    @_binds(F.le)
    def __le__(self, b: TensorOrScalar) -> Tensor:
        """``self <= b`` elementwise."""

    @_binds(F.gt)
    def __gt__(self, b: TensorOrScalar) -> Tensor:
        """``self > b`` elementwise."""

    @_binds(F.ge)
    def __ge__(self, b: TensorOrScalar) -> Tensor:
        """``self >= b`` elementwise."""

    @_binds(F.eq)
    def eq(self, b: TensorOrScalar) -> Tensor:
        """``self == b`` elementwise."""

    @_binds(F.ne)
    def ne(self, b: TensorOrScalar) -> Tensor:
        """``self != b`` elementwise."""

    @_binds(F.lt)
    def lt(self, b: TensorOrScalar) -> Tensor:
        """``self < b`` elementwise."""

    @_binds(F.le)
    def le(self, b: TensorOrScalar) -> Tensor:
        """``self <= b`` elementwise."""

    @_binds(F.gt)
    def gt(self, b: TensorOrScalar) -> Tensor:
        """``self > b`` elementwise."""

    @_binds(F.ge)
    def ge(self, b: TensorOrScalar) -> Tensor:
        """``self >= b`` elementwise."""

    def __hash__(self) -> int:
        """Identity hash: tensors are dict keys by identity (``==`` compares elementwise)."""
        return id(self)

    # ------------------------------------------------------------------ arithmetic and math (ops/elementwise.py)
    @_binds(_e.Add.apply)
    def add(self, other: TensorOrScalar) -> Tensor:
        """``self + other``."""

    @_binds(_e.Sub.apply)
    def sub(self, other: TensorOrScalar) -> Tensor:
        """``self - other``."""

    @_binds(_e.Mul.apply)
    def mul(self, other: TensorOrScalar) -> Tensor:
        """``self * other``."""

    @_binds(_e.Div.apply)
    def div(self, other: TensorOrScalar) -> Tensor:
        """``self / other``."""

    @_binds(F.pow)
    def pow(self, b: TensorOrScalar) -> Tensor:
        """``self ** b``."""

    @_binds(F.matmul)
    def matmul(self, b: Tensor) -> Tensor:
        """``self @ b``."""

    @_binds(F.neg)
    def neg(self) -> Tensor:
        """``-self``."""

    @_binds(F.abs)
    def abs(self) -> Tensor:
        """Elementwise absolute value."""

    @_binds(F.exp)
    def exp(self) -> Tensor:
        """Elementwise ``e ** self``."""

    @_binds(F.log)
    def log(self) -> Tensor:
        """Elementwise natural logarithm."""

    @_binds(F.sqrt)
    def sqrt(self) -> Tensor:
        """Elementwise square root."""

    @_binds(F.sin)
    def sin(self) -> Tensor:
        """Elementwise sine."""

    @_binds(F.cos)
    def cos(self) -> Tensor:
        """Elementwise cosine."""

    @_binds(F.tanh)
    def tanh(self) -> Tensor:
        """Elementwise hyperbolic tangent."""

    @_binds(F.sigmoid)
    def sigmoid(self) -> Tensor:
        """Elementwise logistic sigmoid ``1 / (1 + exp(-self))``."""

    @_binds(F.relu)
    def relu(self) -> Tensor:
        """Elementwise ``max(self, 0)``."""

    @_binds(F.clamp)
    def clamp(self, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
        """Elementwise clip into ``[min, max]`` (either bound may be None)."""

    @_binds(F.clamp)
    def clip(self, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
        """Alias of :meth:`clamp`."""

    @_binds(F.maximum)
    def maximum(self, b: TensorOrScalar) -> Tensor:
        """Elementwise maximum of ``self`` and ``b``."""

    @_binds(F.minimum)
    def minimum(self, b: TensorOrScalar) -> Tensor:
        """Elementwise minimum of ``self`` and ``b``."""

    @_binds(F.rsqrt)
    def rsqrt(self) -> Tensor:
        """Elementwise ``1 / sqrt(self)``."""

    @_binds(F.erf)
    def erf(self) -> Tensor:
        """Elementwise error function."""

    @_binds(F.sign)
    def sign(self) -> Tensor:
        """-1, 0 or 1 in ``self``'s dtype; gradient 0."""

    @_binds(F.log2)
    def log2(self) -> Tensor:
        """Elementwise base-2 logarithm."""

    @_binds(F.log10)
    def log10(self) -> Tensor:
        """Elementwise base-10 logarithm."""

    @_binds(F.exp2)
    def exp2(self) -> Tensor:
        """Elementwise ``2 ** self``."""

    @_binds(F.isnan)
    def isnan(self) -> Tensor:
        """Where ``self`` is NaN (bool, no gradient)."""

    @_binds(F.isinf)
    def isinf(self) -> Tensor:
        """Where ``self`` is +-inf (bool, no gradient)."""

    @_binds(F.isfinite)
    def isfinite(self) -> Tensor:
        """Where ``self`` is finite (bool, no gradient)."""

    @_binds(F.lerp)
    def lerp(self, end: Tensor, weight: TensorOrScalar) -> Tensor:
        """``self + weight * (end - self)``."""

    @_binds(F.masked_fill)
    def masked_fill(self, mask: Tensor, value: TensorOrScalar) -> Tensor:
        """``self`` with ``value`` where the bool ``mask`` is True."""

    # ------------------------------------------------------------------ reductions (ops/reduction.py)
    @_binds(F.sum)
    def sum(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """Sum over ``dim`` (an int, a tuple, or None for all elements)."""

    @_binds(F.mean)
    def mean(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """Mean over ``dim`` (None: all elements)."""

    @_binds(F.max)
    def max(self, dim: int | None = None, keepdim: bool = False):
        """Maximum of all elements, ``(values, indices)`` along ``dim``, or ``maximum`` with a tensor."""

    @_binds(F.min)
    def min(self, dim: int | None = None, keepdim: bool = False):
        """Minimum of all elements, ``(values, indices)`` along ``dim``, or ``minimum`` with a tensor."""

    @_binds(F.amax)
    def amax(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """Maximum over ``dim`` (gradient split evenly between ties)."""

    @_binds(F.amin)
    def amin(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """Minimum over ``dim`` (gradient split evenly between ties)."""

    @_binds(F.var)
    def var(self, dim: Dims = None, keepdim: bool = False, correction: int = 1,
            unbiased: bool | None = None) -> Tensor:
        """Variance over ``dim`` with ``correction`` (1: unbiased, Bessel's)."""

    @_binds(F.std)
    def std(self, dim: Dims = None, keepdim: bool = False, correction: int = 1,
            unbiased: bool | None = None) -> Tensor:
        """Standard deviation over ``dim``: ``sqrt(var)``."""

    @_binds(F.prod)
    def prod(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Product of all elements or along ``dim`` (integers in int64)."""

    @_binds(F.logsumexp)
    def logsumexp(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """``log(sum(exp(self)))`` over ``dim``, computed stably."""

    @_binds(F.softmax)
    def softmax(self, dim: int = -1) -> Tensor:
        """Softmax along ``dim``."""

    @_binds(F.log_softmax)
    def log_softmax(self, dim: int = -1) -> Tensor:
        """Log of the softmax along ``dim``, computed stably."""

    @_binds(F.argmax)
    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the maximum (of the flattened tensor when ``dim`` is None); int64, no gradient."""

    @_binds(F.argmin)
    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        """Index of the minimum (of the flattened tensor when ``dim`` is None); int64, no gradient."""

    @_binds(F.any)
    def any(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """Whether any element (over ``dim``) is nonzero: a bool tensor."""

    @_binds(F.all)
    def all(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        """Whether every element (over ``dim``) is nonzero: a bool tensor."""

    # ------------------------------------------------------------------ shapes (ops/shape.py)
    @_binds(F.reshape)
    def reshape(self, *shape: int | tuple[int, ...]) -> Tensor:
        """The same elements in ``shape`` (one entry may be -1); ``x`` itself when the shape is unchanged."""

    @_binds(F.reshape)
    def view(self, *shape: int | tuple[int, ...]) -> Tensor:
        """Alias of :meth:`reshape`."""

    def view_as(self, other: Tensor) -> Tensor:
        """:meth:`reshape` to ``other``'s shape."""
        return F.reshape(self, other.shape)

    def reshape_as(self, other: Tensor) -> Tensor:
        """:meth:`reshape` to ``other``'s shape."""
        return F.reshape(self, other.shape)

    @_binds(F.permute)
    def permute(self, *dims: int | tuple[int, ...]) -> Tensor:
        """The dimensions in the order ``dims``."""

    @_binds(F.transpose)
    def transpose(self, dim0: int = 0, dim1: int = 1) -> Tensor:
        """Swap dimensions ``dim0`` and ``dim1`` (``self`` when it has fewer than two)."""

    @property
    def T(self) -> Tensor:
        """All dimensions reversed (``self`` when it has fewer than two)."""
        return F.permute(self, tuple(range(self.ndim - 1, -1, -1))) if self.ndim >= 2 else self

    @property
    def mT(self) -> Tensor:
        """The last two dimensions swapped (a batch of transposed matrices)."""
        return F.transpose(self, -2, -1)

    @_binds(F.flatten)
    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        """Dimensions ``start_dim`` to ``end_dim`` merged into one."""

    @_binds(F.unsqueeze)
    def unsqueeze(self, dim: int) -> Tensor:
        """A new size-1 dimension at ``dim``."""

    @_binds(F.squeeze)
    def squeeze(self, dim: Dims = None) -> Tensor:
        """Size-1 dimensions among ``dim`` (an int or a tuple) removed (all size-1 dimensions when None)."""

    @_binds(F.unflatten)
    def unflatten(self, dim: int, sizes: tuple[int, ...]) -> Tensor:
        """Dimension ``dim`` split into ``sizes`` (one may be -1)."""

    @_binds(F.split)
    def split(self, split_size_or_sections: int | list[int], dim: int = 0) -> tuple:
        """Pieces of ``dim``: of one size each (the last may be smaller), or of the listed sizes."""

    @_binds(F.chunk)
    def chunk(self, chunks: int, dim: int = 0) -> tuple:
        """``chunks`` pieces of ``dim`` (fewer when that covers it), as ``torch.chunk``."""

    @_binds(F.flip)
    def flip(self, dims: int | tuple[int, ...]) -> Tensor:
        """The elements in reverse order along ``dims``."""

    @_binds(F.tril)
    def tril(self, diagonal: int = 0) -> Tensor:
        """The lower triangle of the last two dimensions (the rest zero)."""

    @_binds(F.triu)
    def triu(self, diagonal: int = 0) -> Tensor:
        """The upper triangle of the last two dimensions (the rest zero)."""

    @_binds(F.gather)
    def gather(self, dim: int, index: Tensor) -> Tensor:
        """Values along ``dim`` at ``index`` (``torch.gather``)."""

    @_binds(F.expand)
    def expand(self, *shape: int | tuple[int, ...]) -> Tensor:
        """Size-1 dimensions broadcast to ``shape`` (a view; backward sums them back)."""

    def expand_as(self, other: Tensor) -> Tensor:
        """:meth:`expand` to ``other``'s shape."""
        return F.expand(self, other.shape)

    # ------------------------------------------------------------------ in-place (data edits)
    def _check_inplace(self, op: str) -> None:
        """Refuse an in-place edit that would corrupt a recorded graph."""
        if self._requires_grad and STATE.grad_enabled:
            kind = "a leaf tensor that requires grad" if self._grad_fn is None else "a tensor that is part of the graph"
            raise named_error(GradError,
                f"{op}: in-place operation on {kind} (shape {tuple(self.shape)}) would corrupt gradients. "
                "Wrap it in `with gg.no_grad():` (e.g. for parameter updates) or use the out-of-place op.")

    def _bump(self) -> "Tensor":
        """Count one in-place edit (the version counter) and return ``self``."""
        self._vc[0] += 1
        return self

    def _other_array(self, other: Any):
        """The array of an in-place operand (a tensor on the same device, or a number/array)."""
        if isinstance(other, Tensor):
            if other._device != self._device:
                raise named_error(RuntimeError,
                    f"in-place op: tensors on different devices, {self._device} and {other._device}")
            return other.data
        return other

    def add_(self, other: Any, alpha: float = 1.0) -> "Tensor":
        """``self += alpha * other`` in place."""
        self._check_inplace("add_")
        o = self._other_array(other)
        self.data += o if alpha == 1.0 else o * alpha
        return self._bump()

    def sub_(self, other: Any, alpha: float = 1.0) -> "Tensor":
        """``self -= alpha * other`` in place."""
        self._check_inplace("sub_")
        o = self._other_array(other)
        self.data -= o if alpha == 1.0 else o * alpha
        return self._bump()

    def mul_(self, other: Any) -> "Tensor":
        """``self *= other`` in place."""
        self._check_inplace("mul_")
        self.data *= self._other_array(other)
        return self._bump()

    def div_(self, other: Any) -> "Tensor":
        """``self /= other`` in place."""
        self._check_inplace("div_")
        self.data /= self._other_array(other)
        return self._bump()

    def zero_(self) -> "Tensor":
        """Fill with zeros in place."""
        self._check_inplace("zero_")
        self.data[...] = 0
        return self._bump()

    def fill_(self, value: float) -> "Tensor":
        """Fill with ``value`` in place."""
        self._check_inplace("fill_")
        self.data[...] = value
        return self._bump()

    def copy_(self, src: Any) -> "Tensor":
        """Copy ``src`` (broadcast, moved to this device) into the data in place."""
        self._check_inplace("copy_")
        if isinstance(src, Tensor) and src._device != self._device:
            src = src.to(self._device)
        arr = self._other_array(src)
        if tuple(getattr(arr, "shape", ())) not in ((), tuple(self.shape)):
            try:
                self._backend().xp.broadcast_to(arr, self.shape)
            except ValueError:
                raise named_error(ShapeError,
                    f"copy_: source shape {tuple(arr.shape)} does not broadcast to {tuple(self.shape)}") from None
        self.data[...] = arr
        return self._bump()

    def clamp_(self, min: float | None = None, max: float | None = None) -> "Tensor":  # noqa: A002
        """Clip into ``[min, max]`` in place."""
        self._check_inplace("clamp_")
        self._backend().xp.clip(self.data, min, max, out=self.data)
        return self._bump()

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> "Tensor":
        """Fill in place with normal samples from the device's generator."""
        self._check_inplace("normal_")
        be = self._backend()
        self.data[...] = be.randn(self.data.shape, self.data.dtype) * std + mean
        return self._bump()

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> "Tensor":
        """Fill in place with uniform samples in ``[a, b)`` from the device's generator."""
        self._check_inplace("uniform_")
        be = self._backend()
        self.data[...] = be.rand(self.data.shape, self.data.dtype) * (b - a) + a
        return self._bump()

    def __setitem__(self, key: Any, value: Any) -> None:
        """``self[key] = value`` in place (not recorded: refused on tensors in a graph)."""
        self._check_inplace("__setitem__")
        first, rest = split_index(_index_arrays(key))  # PyTorch's placement of advanced-index dims
        (self.data if first is None else self.data[first])[rest] = self._other_array(value)
        self._bump()

    # ------------------------------------------------------------------ printing
    def __repr__(self) -> str:
        """``tensor([...], device=..., dtype=..., grad_fn=...)`` as PyTorch prints it."""
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(", precision=4,
                               threshold=200, edgeitems=3)
        extras = []
        if self._device.type != "cpu":
            extras.append(f"device='{self._device}'")
        if self.data.dtype not in (_dtype.float32, _dtype.int64, _dtype.bool_):
            extras.append(f"dtype={self.data.dtype}")
        if self._grad_fn is not None:
            extras.append(f"grad_fn=<{self._grad_fn.op_name}Backward>")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # ------------------------------------------------------------------ dlpack
    def __dlpack__(self, *args: Any, **kwargs: Any):
        """The data as a DLPack capsule (zero-copy export)."""
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        """The DLPack device of the data."""
        return self.data.__dlpack_device__()

    # ------------------------------------------------------------------ dtype conversions
    # Last in the class body: type checkers read ``float``, ``int`` and ``bool`` in the annotations
    # above as these methods if they came first.
    def float(self) -> "Tensor":
        """``self.to(gg.float32)``."""
        return self.to(_dtype.float32)

    def double(self) -> "Tensor":
        """``self.to(gg.float64)``."""
        return self.to(_dtype.float64)

    def half(self) -> "Tensor":
        """``self.to(gg.float16)``."""
        return self.to(_dtype.float16)

    def long(self) -> "Tensor":
        """``self.to(gg.int64)``."""
        return self.to(_dtype.int64)

    def int(self) -> "Tensor":
        """``self.to(gg.int32)``."""
        return self.to(_dtype.int32)

    def bool(self) -> "Tensor":
        """``self.to(gg.bool_)``."""
        return self.to(_dtype.bool_)

    def type_as(self, other: "Tensor") -> "Tensor":
        """``self.to(other.dtype)``."""
        return self.to(other.dtype)


register_tensor_class(Tensor)
