"""Tensor factories: ``gg.tensor``, ``zeros``, ``ones``, ``randn``... and the random seed.

They sit below ``Tensor`` (gpugrad/tensor.py, whose constructor converts data with ``_to_array``
here) and build tensors through the class it registers (``autograd.function._make_result``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import _dtype
from ._device import CPU, as_device, device
from .autograd.function import TensorBase, _make_result, named_error
from .backends import get_backend

if TYPE_CHECKING:
    from .random import Generator
    from .tensor import Tensor


def _device_of(data: Any, device: "str | device | None") -> device:
    """The device a tensor made from ``data`` lives on: ``device``, else ``data``'s when it is a
    tensor, else the CPU."""
    return as_device(device) if device is not None else (data._device if isinstance(data, TensorBase) else CPU)


def _to_array(data: Any, dtype, dev: device):
    """Turn Python/NumPy/CuPy/Tensor data into an array of ``dtype`` on ``dev``."""
    be = get_backend(dev)
    dt = _dtype.as_dtype(dtype)
    if isinstance(data, TensorBase):
        src_be = data._backend()
        arr = data.data if data._device == dev else be.from_numpy(src_be.to_numpy(data.data))
    elif isinstance(data, np.ndarray) or np.isscalar(data) and isinstance(data, np.generic):
        _check_kind(np.asarray(data).dtype, data)
        arr = be.from_numpy(np.asarray(data))
    elif hasattr(data, "__cuda_array_interface__") or be.is_array(data):
        arr = be.asarray(data)
    else:
        if isinstance(data, (list, tuple)) and any(isinstance(x, TensorBase) for x in _flatten(data)):
            data = _nested_numpy(data)
        host = _host_array(data)
        if dt is None and host.dtype == np.float64:
            host = host.astype(_dtype.get_default_dtype())
        elif dt is None and host.dtype.kind == "i":
            host = host.astype(np.int64)
        arr = be.from_numpy(host)
    if dt is not None and arr.dtype != dt:
        arr = arr.astype(dt)
    return arr


# NumPy dtype kinds a tensor can hold: bool, signed/unsigned integers, floats.
_TENSOR_KINDS = "biuf"


def _check_kind(dt: np.dtype, data: Any) -> None:
    if dt.kind in _TENSOR_KINDS:
        return
    what = {"U": "string", "S": "bytes", "O": "Python object", "c": "complex", "M": "datetime",
            "m": "timedelta", "V": "structured"}.get(dt.kind, str(dt))
    raise TypeError(f"gg.tensor: cannot make a tensor of {what} data (NumPy dtype {dt}, from "
                    f"{type(data).__name__}); tensors hold numbers: bool, integers or floats. Convert the data "
                    f"first, e.g. labels to integer class indices")


def _ragged(x: Any, path: tuple = ()) -> str | None:
    """Where a nested list/tuple is not rectangular: a message naming the two differing shapes, or None."""
    if not isinstance(x, (list, tuple)) or not x:
        return None
    for i, y in enumerate(x):
        inner = _ragged(y, path + (i,))
        if inner:
            return inner
    shapes = [np.shape(y) for y in x]  # every element is rectangular here
    for i in range(1, len(x)):
        if shapes[i] != shapes[0]:
            where = "data" + "".join(f"[{k}]" for k in path)
            return (f"{where}[0] has shape {shapes[0]} but {where}[{i}] has shape {shapes[i]}; every element "
                    f"at one nesting level must have the same shape (pad the rows, or build the tensor "
                    f"with gg.cat / gg.stack)")
    return None


def _host_array(data: Any) -> np.ndarray:
    """``np.asarray(data)`` for Python data, refusing ragged nesting and non-numeric data clearly."""
    try:
        host = np.asarray(data)
    except ValueError as e:
        why = _ragged(data)
        if why is None:
            raise TypeError(f"gg.tensor: cannot make a tensor from {type(data).__name__} data ({e})") from None
        raise ValueError(f"gg.tensor: ragged nested sequence: {why}") from None
    if host.dtype.kind == "O":
        why = _ragged(data)
        if why is not None:
            raise ValueError(f"gg.tensor: ragged nested sequence: {why}")
    _check_kind(host.dtype, data)
    return host


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flatten(y)
    else:
        yield x


def _nested_numpy(x):
    if isinstance(x, (list, tuple)):
        return [_nested_numpy(y) for y in x]
    return x.numpy() if isinstance(x, TensorBase) else x


def tensor(data: Any, dtype=None, device: "str | device | None" = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (Python floats become float32)."""
    src = data.data if isinstance(data, TensorBase) else data
    dev = _device_of(data, device)
    t = _make_result(_to_array(data, dtype, dev), dev, None, 0)
    # Only a host (NumPy) array can share memory with NumPy data; asking NumPy about a device array
    # is an error on CuPy (np.shares_memory dispatches to cupy, which refuses the NumPy operand).
    if t.data is src or (isinstance(data, np.ndarray) and isinstance(t.data, np.ndarray)
                         and np.shares_memory(t.data, data)):
        t.data = t.data.copy()
    if requires_grad:
        t.requires_grad = True
    return t


def as_tensor(data: Any, dtype=None, device: "str | device | None" = None) -> Tensor:
    """Like ``tensor`` but shares memory with a NumPy/CuPy array when it can."""
    if isinstance(data, TensorBase) and dtype is None and device is None:
        return data
    dev = _device_of(data, device)
    return _make_result(_to_array(data, dtype, dev), dev, None, 0)


def from_numpy(a: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with ``a``."""
    return _make_result(a, as_device("cpu"), None, 0)


def from_dlpack(x: Any) -> Tensor:
    """Zero-copy import of any DLPack producer (NumPy, CuPy, PyTorch, another gpugrad tensor)."""
    dev_type, dev_id = x.__dlpack_device__()
    if int(dev_type) == 1:  # kDLCPU
        arr = np.from_dlpack(x)
        return _make_result(arr, as_device("cpu"), None, 0)
    if int(dev_type) in (2, 3):  # kDLCUDA, kDLCUDAHost
        dev = device("cuda", int(dev_id))
        be = get_backend(dev)
        return _make_result(be.from_dlpack(x), dev, None, 0)
    raise ValueError(f"from_dlpack: unsupported DLPack device type {dev_type}; gpugrad has cpu and cuda")


def _shape(size: Sequence) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    return tuple(int(s) for s in size)


def _new(size: Sequence, dtype, device, requires_grad: bool, fill) -> Tensor:
    dev = as_device(device)
    dt = _dtype.as_dtype(dtype) or _dtype.get_default_dtype()
    be = get_backend(dev)
    arr = fill(be, _shape(size), dt)
    t = _make_result(arr, dev, None, 0)
    if requires_grad:
        t.requires_grad = True
    return t


def zeros(*size: Any, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _new(size, dtype, device, requires_grad, lambda be, s, dt: be.xp.zeros(s, dt))


def ones(*size: Any, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _new(size, dtype, device, requires_grad, lambda be, s, dt: be.xp.ones(s, dt))


def empty(*size: Any, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _new(size, dtype, device, requires_grad, lambda be, s, dt: be.xp.empty(s, dt))


def full(size: Sequence, fill_value: float, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    if dtype is None and isinstance(fill_value, (bool, int)) and not isinstance(fill_value, float):
        dtype = _dtype.bool_ if isinstance(fill_value, bool) else _dtype.int64
    return _new((tuple(size),), dtype, device, requires_grad, lambda be, s, dt: be.xp.full(s, fill_value, dt))


def randn(*size: Any, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the device's seeded generator."""
    return _new(size, dtype, device, requires_grad, lambda be, s, dt: be.randn(s, dt))


def rand(*size: Any, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) samples from the device's seeded generator."""
    return _new(size, dtype, device, requires_grad, lambda be, s, dt: be.rand(s, dt))


def randint(low: int, high: int, size: Sequence, device=None) -> Tensor:
    dev = as_device(device)
    be = get_backend(dev)
    u = be.rand(tuple(size), np.float64)
    arr = (low + be.xp.floor(u * (high - low))).astype(np.int64)
    return _make_result(arr, dev, None, 0)


def randperm(n: int, device=None, generator: "Generator | None" = None) -> Tensor:
    """A random permutation of ``range(n)`` (int64), from the device's generator or ``generator`` (on
    ``device``, which is then the generator's unless given)."""
    if generator is None:
        dev = as_device(device)
        return _make_result(_permutation(get_backend(dev), n), dev, None, 0)
    dev = generator.device
    if device is not None and as_device(device) != dev:
        raise named_error(RuntimeError, f"randperm: device={as_device(device)} but the generator is on {dev}; give "
                          f"a generator of that device (gg.Generator(device={str(as_device(device))!r})) or leave "
                          "device out")
    return _make_result(generator.draw(lambda be: _permutation(be, n)), dev, None, 0)


def _permutation(be: Any, n: int):
    return be.xp.argsort(be.rand((n,), np.float64)).astype(np.int64)


def arange(start: float, end: float | None = None, step: float = 1, dtype=None, device=None,
           requires_grad: bool = False) -> Tensor:
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = _dtype.int64 if all(float(v).is_integer() and not isinstance(v, float) for v in (start, end, step)) \
            else _dtype.get_default_dtype()
    return _new(((),), dtype, device, requires_grad, lambda be, s, dt: be.xp.arange(start, end, step, dtype=dt))


def linspace(start: float, end: float, steps: int, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _new(((),), dtype, device, requires_grad, lambda be, s, dt: be.xp.linspace(start, end, steps).astype(dt))


def eye(n: int, m: int | None = None, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _new(((),), dtype, device, requires_grad, lambda be, s, dt: be.xp.eye(n, m, dtype=dt))


def _like(fn, t: Tensor, dtype, device, requires_grad):
    return fn(*t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def zeros_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(ones, t, dtype, device, requires_grad)


def randn_like(t: Tensor, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return _like(randn, t, dtype, device, requires_grad)


def full_like(t: Tensor, fill_value: float, dtype=None, device=None, requires_grad: bool = False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def seed_value(seed: Any, op: str = "manual_seed") -> int:
    """``seed`` as an int (an integer, or a float with an integral value); anything else is a clear
    ``TypeError`` rather than ``int('a')``'s."""
    ok = isinstance(seed, (int, np.integer)) or (isinstance(seed, (float, np.floating)) and float(seed).is_integer())
    if isinstance(seed, bool) or not ok:
        raise TypeError(f"{op}: seed must be an integer, got {type(seed).__name__} {seed!r}")
    return int(seed)


def manual_seed(seed: int) -> None:
    """Seed every device's generator (counter-based: the same stream on CPU and CUDA)."""
    from .backends import _instances, _seed
    seed = seed_value(seed)
    _seed[0] = seed
    for be in list(_instances.values()):
        be.manual_seed(seed)
