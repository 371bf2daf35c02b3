"""``Tensor``: an array on a device plus the autograd bookkeeping (grad, grad_fn, version)."""
from __future__ import annotations

import weakref
from typing import Any, Callable, Iterator

import numpy as np

from . import _dtype
from ._device import CPU, as_device, device
from ._errors import DtypeError, ShapeError
from .autograd.function import GradError, named_error
from .autograd.grad_mode import STATE


def _make_result(arr, dev, ctx, idx: int, vc=None) -> "Tensor":
    """A Tensor around an op's output array (Function.apply inlines this for single outputs)."""
    if isinstance(arr, np.generic):  # NumPy returns scalars from 0-d arithmetic
        arr = np.asarray(arr)
    t = Tensor.__new__(Tensor)
    t.data = arr
    t.grad = None
    t._requires_grad = ctx is not None
    t._grad_fn = ctx
    t._out_idx = idx
    t._vc = vc if vc is not None else [0]
    t._device = dev if dev is not None else CPU
    t._hooks = None
    return t


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


class Tensor:
    """An n-dimensional array on ``cpu`` or ``cuda`` that records operations for ``backward()``."""

    __slots__ = ("data", "grad", "_requires_grad", "_grad_fn", "_out_idx", "_vc", "_device", "_hooks",
                 "__weakref__")
    __array_priority__ = 1000  # numpy scalars/arrays defer to Tensor operators

    def __init__(self, data: Any, dtype=None, device: "str | device | None" = None,
                 requires_grad: bool = False) -> None:
        from .creation import _to_array
        dev = as_device(device) if device is not None else (data._device if isinstance(data, Tensor) else CPU)
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
        return _make_result(arr, dev, None, 0)

    # ------------------------------------------------------------------ properties
    @property
    def requires_grad(self) -> bool:
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
        self.requires_grad = requires_grad
        return self

    @property
    def shape(self) -> tuple:
        return self.data.shape

    def size(self, dim: int | None = None):
        return self.data.shape if dim is None else self.data.shape[dim]

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def device(self) -> device:
        return self._device

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return int(self.data.size)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    @property
    def is_leaf(self) -> bool:
        return self._grad_fn is None

    @property
    def grad_fn(self):
        return self._grad_fn

    @property
    def is_cuda(self) -> bool:
        return self._device.type == "cuda"

    @property
    def _version(self) -> int:
        return self._vc[0]

    def _backend(self):
        from .backends import get_backend
        return get_backend(self._device)

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (shared on CPU, copied from a GPU)."""
        return self._backend().to_numpy(self.data)

    def item(self) -> float | int | bool:
        if self.data.size != 1:
            raise named_error(ShapeError,
                f"item: only one-element tensors can be converted to a Python scalar, got shape {tuple(self.shape)}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise named_error(RuntimeError,
                f"bool: the truth value of a tensor with {self.data.size} elements is ambiguous; use .any() or .all()")
        return bool(self.item())

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self) -> Iterator["Tensor"]:
        for i in range(len(self)):
            yield self[i]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.numpy()
        return a.astype(dtype) if dtype is not None else a

    def __hash__(self) -> int:
        return id(self)

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
        from .ops import to_copy
        dev = as_device(dev) if dev is not None else self._device
        dt = _dtype.as_dtype(dt) if dt is not None else self.data.dtype
        if dev == self._device and dt == self.data.dtype:
            return self
        return to_copy(self, dev, dt)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self, index: int = 0) -> "Tensor":
        return self.to(device("cuda", index))

    def float(self) -> "Tensor":
        return self.to(_dtype.float32)

    def double(self) -> "Tensor":
        return self.to(_dtype.float64)

    def half(self) -> "Tensor":
        return self.to(_dtype.float16)

    def long(self) -> "Tensor":
        return self.to(_dtype.int64)

    def int(self) -> "Tensor":
        return self.to(_dtype.int32)

    def bool(self) -> "Tensor":
        return self.to(_dtype.bool_)

    def type_as(self, other: "Tensor") -> "Tensor":
        return self.to(other.dtype)

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (shares memory and version counter)."""
        return _make_result(self.data, self._device, None, 0, self._vc)

    def detach_(self) -> "Tensor":
        self._grad_fn = None
        self._requires_grad = False
        return self

    def clone(self) -> "Tensor":
        from .ops import clone
        return clone(self)

    def contiguous(self) -> "Tensor":
        return self

    # ------------------------------------------------------------------ autograd
    def backward(self, grad: "Tensor | None" = None, retain_graph: bool = False,
                 inputs: "list[Tensor] | None" = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (reverse mode, one pass)."""
        from .autograd.engine import backward
        backward(self, grad, retain_graph=retain_graph, inputs=inputs)

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
        from .autograd.engine import register_post_accumulate_grad_hook
        return register_post_accumulate_grad_hook(self, hook)

    # ------------------------------------------------------------------ in-place (data edits)
    def _check_inplace(self, op: str) -> None:
        if self._requires_grad and STATE.grad_enabled:
            kind = "a leaf tensor that requires grad" if self._grad_fn is None else "a tensor that is part of the graph"
            raise named_error(GradError,
                f"{op}: in-place operation on {kind} (shape {tuple(self.shape)}) would corrupt gradients. "
                "Wrap it in `with gg.no_grad():` (e.g. for parameter updates) or use the out-of-place op.")

    def _bump(self) -> "Tensor":
        self._vc[0] += 1
        return self

    def _other_array(self, other: Any):
        if isinstance(other, Tensor):
            if other._device != self._device:
                raise named_error(RuntimeError,
                    f"in-place op: tensors on different devices, {self._device} and {other._device}")
            return other.data
        return other

    def add_(self, other: Any, alpha: float = 1.0) -> "Tensor":
        self._check_inplace("add_")
        o = self._other_array(other)
        self.data += o if alpha == 1.0 else o * alpha
        return self._bump()

    def sub_(self, other: Any, alpha: float = 1.0) -> "Tensor":
        self._check_inplace("sub_")
        o = self._other_array(other)
        self.data -= o if alpha == 1.0 else o * alpha
        return self._bump()

    def mul_(self, other: Any) -> "Tensor":
        self._check_inplace("mul_")
        self.data *= self._other_array(other)
        return self._bump()

    def div_(self, other: Any) -> "Tensor":
        self._check_inplace("div_")
        self.data /= self._other_array(other)
        return self._bump()

    def zero_(self) -> "Tensor":
        self._check_inplace("zero_")
        self.data[...] = 0
        return self._bump()

    def fill_(self, value: float) -> "Tensor":
        self._check_inplace("fill_")
        self.data[...] = value
        return self._bump()

    def copy_(self, src: Any) -> "Tensor":
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
        self._check_inplace("clamp_")
        self._backend().xp.clip(self.data, min, max, out=self.data)
        return self._bump()

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> "Tensor":
        self._check_inplace("normal_")
        be = self._backend()
        self.data[...] = be.randn(self.data.shape, self.data.dtype) * std + mean
        return self._bump()

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> "Tensor":
        self._check_inplace("uniform_")
        be = self._backend()
        self.data[...] = be.rand(self.data.shape, self.data.dtype) * (b - a) + a
        return self._bump()

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check_inplace("__setitem__")
        from .ops.shape import _index_arrays, split_index
        first, rest = split_index(_index_arrays(key))  # PyTorch's placement of advanced-index dims
        (self.data if first is None else self.data[first])[rest] = self._other_array(value)
        self._bump()

    # ------------------------------------------------------------------ printing
    def __repr__(self) -> str:
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
        return self.data.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()
