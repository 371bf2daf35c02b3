"""A strict CuPy stand-in for CI: CuPy's rules, NumPy's arithmetic, no GPU.

A NumPy array standing in for a CuPy array hides the rules that break real GPU code (no implicit
conversion to NumPy, no NumPy function on a device array, no device/host mixing, reductions giving
0-d arrays). This module's ``ndarray`` wraps a NumPy array but is not one, and refuses what CuPy refuses:

- ``np.asarray(x)`` / ``x.__array__()``: ``TypeError: Implicit conversion to a NumPy array is not
  allowed. Please use .get() to construct a NumPy array explicitly.``
- a NumPy function applied to it dispatches (``__array_function__`` / ``__array_ufunc__``) to this
  module's function of that name, which refuses NumPy arrays: ``TypeError: Unsupported type <class
  'numpy.ndarray'>``; so does arithmetic mixing it with a NumPy array (NumPy scalars and Python
  scalars are fine, as on CuPy);
- reductions, indexing to one element and ufuncs on 0-d arrays give 0-d arrays, never scalars;
- ``.get()``, ``asnumpy``, ``.item()``, ``.tolist()``, ``float()/int()/bool()``, ``repr`` are
  device-to-host reads, ``asarray(numpy)`` / ``.set()`` host-to-device copies: both are counted.

It offers the CuPy surface gpugrad's CUDA backend uses: array creation, ufuncs and math, dtypes,
``cuda.Device``, ``cuda.runtime``, streams (with capture state), events, the memory pool and allocator
hooks (``set_allocator``, ``using_allocator``; allocations are real byte counts of the arrays made),
``RawModule``/``RawKernel`` (the CUDA source is parsed: a launch checks the entry point exists and its
argument count, pointer dtypes, contiguity and exact scalar types, then runs a registered NumPy
reference; counted), cuBLAS through ``matmul``/``dot``/``@`` (counted; TF32 compute type emulated by
rounding float32 inputs to TF32 as cuBLAS does; refused while a stream captures, as CuPy does),
``cupy._core._routines_linalg`` compute types, ``cupyx.scatter_add``, ``cupyx.scipy.special.erf``,
DLPack between stand-in arrays.

Counters (``counters``; :func:`reset_counters`, :func:`snapshot`): kernel launches (per kernel name),
GEMM calls, device-to-host reads, host-to-device copies.

Standalone: imports NumPy only (never gpugrad), so it can be loaded by file path against any checkout::

    spec = importlib.util.spec_from_file_location("strict_cupy", path); ...
    with strict_cupy.installed():      # `import cupy` now gives the stand-in
        ...

Installing makes ``import cupy`` (and ``cupy.cuda``, ``cupyx``, ``cupy_backends.cuda.libs.cublas``...)
resolve to the stand-in; the caller resets its own caches (gpugrad: ``tests.support.strict_cuda``).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import threading
import types
import weakref
from typing import Callable, Iterator

import numpy as np

__version__ = "14.2.0+strict"

IMPLICIT_MSG = ("Implicit conversion to a NumPy array is not allowed. "
                "Please use .get() to construct a NumPy array explicitly.")


def _unsupported(x) -> TypeError:
    return TypeError(f"Unsupported type {type(x)}")


# ====================================================================================== counters
class Counters:
    """What a stretch of code asked of the 'GPU'. ``kernel_launches``: RawKernel launches (``kernels``: per
    name); ``array_ops``: CuPy array calls that launch CuPy's own kernels (ufuncs, reductions, copies,
    casts, fills, indexing writes...; views and creation of uninitialised arrays are not counted);
    ``gemm_calls``: cuBLAS GEMMs; ``device_to_host`` / ``host_to_device``: transfers (a D2H read also
    synchronises the host with the GPU)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.kernel_launches = 0
        self.array_ops = 0
        self.gemm_calls = 0
        self.device_to_host = 0
        self.host_to_device = 0
        self.kernels: dict[str, int] = {}

    def snapshot(self) -> dict:
        return {"kernel_launches": self.kernel_launches, "array_ops": self.array_ops, "gemm_calls": self.gemm_calls,
                "device_to_host": self.device_to_host, "host_to_device": self.host_to_device,
                "kernels": dict(self.kernels)}


counters = Counters()


def reset_counters() -> None:
    counters.reset()


def snapshot() -> dict:
    return counters.snapshot()


def _d2h(what: str) -> None:
    s = _current_stream()
    if s is not None and s._capturing:
        raise _runtime_error(900, f"cudaErrorStreamCaptureUnsupported: operation not permitted when stream is "
                                  f"capturing ({what} reads device memory on the host)")
    counters.device_to_host += 1


# ====================================================================================== device state
_state = threading.local()
_config = {"device_count": 1, "sms": 132, "total_memory": 141 * 1024 ** 3, "cc": (9, 0)}


def _cur_dev() -> int:
    return getattr(_state, "device", 0)


class CUDARuntimeError(RuntimeError):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


def _runtime_error(status: int, msg: str) -> CUDARuntimeError:
    return CUDARuntimeError(status, msg)


# ====================================================================================== memory
class OutOfMemoryError(MemoryError):
    def __init__(self, size: int, total: int, limit: int = 0) -> None:
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes"
                         + (f", limit set to: {limit:,} bytes" if limit else "") + ").")


class _Chunk:
    """Bytes a pool handed out; given back when the last MemoryPointer to it dies."""

    def __init__(self, pool: "MemoryPool", size: int, device_id: int) -> None:
        self.pool, self.size, self.device_id = pool, size, device_id
        pool._used += size
        weakref.finalize(self, MemoryPool._give_back, pool, size)


class MemoryPointer:
    def __init__(self, chunk: "_Chunk | None", ptr: int = 0, device_id: int = 0) -> None:
        self.mem = chunk
        self.ptr = ptr
        self.device_id = chunk.device_id if chunk is not None else device_id

    @property
    def device(self) -> "Device":
        return Device(self.device_id)

    def __int__(self) -> int:
        return self.ptr


class MemoryPool:
    """Counts bytes in use (held by live arrays) and reserved (used + cached); ``set_limit`` makes
    allocations past it raise ``OutOfMemoryError`` (after the caller may free and retry)."""

    def __init__(self, allocator=None) -> None:
        self._used = 0
        self._cached = 0
        self._limit = 0

    def _give_back(self, size: int) -> None:  # called as MemoryPool._give_back(pool, size)
        self._used -= size
        self._cached += size

    def malloc(self, size: int) -> MemoryPointer:
        size = int(size)
        rounded = -(-size // 512) * 512 if size else 0
        reuse = min(self._cached, rounded)
        cap = self._limit or _config["total_memory"]
        if self._used + rounded > cap:
            raise OutOfMemoryError(size, self._used, self._limit)
        self._cached -= reuse
        return MemoryPointer(_Chunk(self, rounded, _cur_dev()))

    def used_bytes(self) -> int:
        return self._used

    def total_bytes(self) -> int:
        return self._used + self._cached

    def free_bytes(self) -> int:
        return self._cached

    def free_all_blocks(self, stream=None) -> None:
        self._cached = 0

    def n_free_blocks(self) -> int:
        return 1 if self._cached else 0

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        if fraction is not None:
            size = int(fraction * _config["total_memory"])
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


class PinnedMemoryPool:
    def free_all_blocks(self) -> None:
        pass

    def n_free_blocks(self) -> int:
        return 0


_pools: dict[int, MemoryPool] = {}
_pinned_pool = PinnedMemoryPool()


def get_default_memory_pool() -> MemoryPool:
    # one pool object (CuPy's default pool is one object serving every device)
    p = _pools.get(0)
    if p is None:
        p = _pools[0] = MemoryPool()
    return p


def get_default_pinned_memory_pool() -> PinnedMemoryPool:
    return _pinned_pool


_allocator: list = [None]  # None: the default pool's malloc


def _thread_allocator():
    a = getattr(_state, "allocator", None)
    return a if a is not None else _allocator[0]


def set_allocator(allocator=None) -> None:
    _allocator[0] = allocator


def get_allocator():
    a = _thread_allocator()
    return a if a is not None else get_default_memory_pool().malloc


@contextlib.contextmanager
def using_allocator(allocator=None) -> Iterator[None]:
    old = getattr(_state, "allocator", None)
    _state.allocator = allocator
    try:
        yield
    finally:
        _state.allocator = old


# Root NumPy buffers of stand-in arrays -> their MemoryPointer (so views share one allocation).
_owners: dict[int, tuple] = {}


def _memptr_for(root: np.ndarray) -> MemoryPointer:
    ent = _owners.get(id(root))
    if ent is not None and ent[0]() is root:
        return ent[1]
    nbytes = int(root.nbytes)
    if nbytes:
        mp = get_allocator()(nbytes)
        mp.ptr = int(root.__array_interface__["data"][0])
    else:
        mp = MemoryPointer(None, int(root.__array_interface__["data"][0]), _cur_dev())
    _owners[id(root)] = (weakref.ref(root), mp)
    weakref.finalize(root, _owners.pop, id(root), None)
    return mp


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


# ====================================================================================== ndarray
class _Flags:
    __slots__ = ("_a",)

    def __init__(self, a: np.ndarray) -> None:
        self._a = a

    @property
    def c_contiguous(self) -> bool:
        return bool(self._a.flags.c_contiguous)

    @property
    def f_contiguous(self) -> bool:
        return bool(self._a.flags.f_contiguous)

    @property
    def owndata(self) -> bool:
        return self._a.base is None

    def __getitem__(self, k: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[k]


def _new(a: np.ndarray) -> "ndarray":
    obj = ndarray.__new__(ndarray)
    obj._a = a
    obj._mem = _memptr_for(_root(a))
    return obj


def _scalar_ok(x) -> bool:
    return isinstance(x, (bool, int, float, complex, np.generic))


def _unwrap(x, allow_host: bool = False):
    """A stand-in array -> its NumPy array; a NumPy array -> TypeError unless ``allow_host``; lists and
    tuples element-wise; anything else as is."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        if allow_host:
            return x
        raise _unsupported(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(y, allow_host) for y in x)
    return x


def _wrap(r):
    if isinstance(r, np.ndarray):
        return _new(r)
    if isinstance(r, np.generic):
        return _new(np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(y) for y in r)
    if isinstance(r, list):
        return [_wrap(y) for y in r]
    return r


def _binop(name: str, reflected: bool = False):
    def op(self, other):
        if isinstance(other, np.ndarray):
            raise _unsupported(other)
        if not (isinstance(other, ndarray) or _scalar_ok(other)):
            return NotImplemented
        f = _ufuncs[name]
        return f(other, self) if reflected else f(self, other)
    return op


def _iop(name: str):
    def op(self, other):
        if isinstance(other, np.ndarray):
            raise _unsupported(other)
        if not (isinstance(other, ndarray) or _scalar_ok(other)):
            return NotImplemented
        _ufuncs[name](self, other, out=self)
        return self
    return op


class ndarray:
    """A device array of the stand-in (wraps a NumPy array; not one)."""

    __slots__ = ("_a", "_mem", "__weakref__")
    __array_priority__ = 100
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C") -> None:
        a = np.empty(shape, dtype=dtype, order=order)
        self._a = a
        self._mem = _memptr_for(a)

    # ---------------------------------------------------------------- the rules
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_MSG)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc.__name__ == "matmul" and method == "__call__":
            return _functions["matmul"](*inputs, **kwargs)
        f = _ufuncs.get(ufunc.__name__)
        if f is None:
            return NotImplemented
        if method == "__call__":
            return f(*inputs, **kwargs)
        m = getattr(f, method, None)
        return NotImplemented if m is None else m(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        f = _functions.get(func.__name__)
        if f is None:
            return NotImplemented
        return f(*args, **kwargs)

    # ---------------------------------------------------------------- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: _new(self._a.T))
    mT = property(lambda self: _new(np.swapaxes(self._a, -1, -2)))
    real = property(lambda self: _new(self._a.real))
    imag = property(lambda self: _new(self._a.imag))

    @property
    def base(self):
        return None if self._a.base is None else _new(_root(self._a))

    @property
    def data(self) -> MemoryPointer:
        mp = MemoryPointer(self._mem.mem, int(self._a.__array_interface__["data"][0]), self._mem.device_id)
        return mp

    @property
    def device(self) -> "Device":
        return Device(self._mem.device_id)

    @property
    def __cuda_array_interface__(self) -> dict:
        ai = self._a.__array_interface__
        return {"shape": self._a.shape, "typestr": ai["typestr"], "data": (ai["data"][0], False),
                "strides": None if self._a.flags.c_contiguous else self._a.strides, "version": 3,
                "descr": ai["descr"]}

    def __dlpack_device__(self):
        return (2, self._mem.device_id)  # kDLCUDA

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        raise BufferError("strict CuPy stand-in: DLPack capsules cannot be exported (there is no GPU); "
                          "cupy.from_dlpack accepts stand-in arrays directly")

    # ---------------------------------------------------------------- device -> host (counted)
    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        _d2h("ndarray.get()")
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def item(self, *args):
        _d2h("ndarray.item()")
        return self._a.item(*args)

    def tolist(self):
        _d2h("ndarray.tolist()")
        return self._a.tolist()

    def __float__(self) -> float:
        _d2h("float(ndarray)")
        return float(self._a)

    def __int__(self) -> int:
        _d2h("int(ndarray)")
        return int(self._a)

    def __complex__(self) -> complex:
        _d2h("complex(ndarray)")
        return complex(self._a)

    def __bool__(self) -> bool:
        _d2h("bool(ndarray)")
        return bool(self._a)

    def __repr__(self) -> str:
        _d2h("repr(ndarray)")
        return repr(self._a)

    def __str__(self) -> str:
        _d2h("str(ndarray)")
        return str(self._a)

    def __format__(self, spec: str) -> str:
        _d2h("format(ndarray)")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def set(self, arr, stream=None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self._a.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self._a.shape}, new shape: {arr.shape}")
        counters.host_to_device += 1
        self._a[...] = arr

    # ---------------------------------------------------------------- containers
    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        for i in range(self._a.shape[0]):
            yield self[i]

    def __getitem__(self, key):
        k = _index(key)
        r = self._a[k]
        if not isinstance(r, np.ndarray):  # one element: a 0-d view, as CuPy gives
            r = self._a[(k if isinstance(k, tuple) else (k,)) + (Ellipsis,)]
        return _new(r)

    def __setitem__(self, key, value) -> None:
        k = _index(key)
        if isinstance(value, np.ndarray):
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        elif isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, (list, tuple)):
            raise _unsupported(value)
        counters.array_ops += 1
        self._a[k] = value

    # ---------------------------------------------------------------- methods
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True) -> "ndarray":
        r = self._a.astype(dtype, order=order, copy=copy)
        if r is self._a:
            return self
        counters.array_ops += 1
        return _new(r)

    def copy(self, order="C") -> "ndarray":
        counters.array_ops += 1
        return _new(self._a.copy(order=order))

    def view(self, dtype=None) -> "ndarray":
        return _new(self._a.view() if dtype is None else self._a.view(dtype))

    def reshape(self, *shape, order="C") -> "ndarray":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _new(self._a.reshape(shape, order=order))

    def ravel(self, order="C") -> "ndarray":
        return _new(self._a.ravel(order))

    def flatten(self, order="C") -> "ndarray":
        return _new(self._a.flatten(order))

    def transpose(self, *axes) -> "ndarray":
        return _new(self._a.transpose(*axes))

    def swapaxes(self, a1: int, a2: int) -> "ndarray":
        return _new(self._a.swapaxes(a1, a2))

    def squeeze(self, axis=None) -> "ndarray":
        return _new(self._a.squeeze(axis))

    def fill(self, value) -> None:
        if isinstance(value, np.ndarray):
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        if isinstance(value, ndarray):
            raise _unsupported(value)
        counters.array_ops += 1
        self._a.fill(value)

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __reduce__(self):
        raise TypeError("strict CuPy stand-in: device arrays are not pickled here; use .get()")

    def dot(self, b, out=None):
        return _functions["dot"](self, b, out=out)

    def __matmul__(self, other):
        if isinstance(other, np.ndarray):
            raise _unsupported(other)
        if not isinstance(other, ndarray):
            return NotImplemented
        return _functions["matmul"](self, other)

    def __rmatmul__(self, other):
        if isinstance(other, np.ndarray):
            raise _unsupported(other)
        return NotImplemented

    def __neg__(self):
        return _ufuncs["negative"](self)

    def __pos__(self):
        return _ufuncs["positive"](self)

    def __abs__(self):
        return _ufuncs["absolute"](self)

    def __invert__(self):
        return _ufuncs["invert"](self)

    __add__, __radd__, __iadd__ = _binop("add"), _binop("add", True), _iop("add")
    __sub__, __rsub__, __isub__ = _binop("subtract"), _binop("subtract", True), _iop("subtract")
    __mul__, __rmul__, __imul__ = _binop("multiply"), _binop("multiply", True), _iop("multiply")
    __truediv__, __rtruediv__, __itruediv__ = _binop("true_divide"), _binop("true_divide", True), _iop("true_divide")
    __floordiv__, __rfloordiv__, __ifloordiv__ = (_binop("floor_divide"), _binop("floor_divide", True),
                                                  _iop("floor_divide"))
    __mod__, __rmod__, __imod__ = _binop("remainder"), _binop("remainder", True), _iop("remainder")
    __pow__, __rpow__, __ipow__ = _binop("power"), _binop("power", True), _iop("power")
    __and__, __rand__, __iand__ = _binop("bitwise_and"), _binop("bitwise_and", True), _iop("bitwise_and")
    __or__, __ror__, __ior__ = _binop("bitwise_or"), _binop("bitwise_or", True), _iop("bitwise_or")
    __xor__, __rxor__, __ixor__ = _binop("bitwise_xor"), _binop("bitwise_xor", True), _iop("bitwise_xor")
    __lshift__, __rshift__ = _binop("left_shift"), _binop("right_shift")
    __ilshift__, __irshift__ = _iop("left_shift"), _iop("right_shift")
    __lt__, __le__ = _binop("less"), _binop("less_equal")
    __gt__, __ge__ = _binop("greater"), _binop("greater_equal")
    __eq__, __ne__ = _binop("equal"), _binop("not_equal")


def _reduction_method(name: str):
    def m(self, *args, **kwargs):
        return _functions[name](self, *args, **kwargs)
    m.__name__ = name
    return m


for _n in ("sum", "mean", "var", "std", "prod", "max", "min", "argmax", "argmin", "any", "all", "cumsum",
           "clip", "argsort", "sort", "nonzero", "take", "repeat", "round", "conj", "trace", "diagonal"):
    setattr(ndarray, _n, _reduction_method(_n if _n != "sort" else "_sort_inplace"))


def _index(key):
    """Index keys: stand-in arrays unwrap; NumPy arrays and lists are copied to the device first (CuPy does
    that: counted as host-to-device copies)."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, (np.ndarray, list)):
        counters.host_to_device += 1
        return np.asarray(key)
    return key


# ====================================================================================== functions and ufuncs
_ufuncs: dict[str, "ufunc"] = {}
_functions: dict[str, Callable] = {}


def _out(out):
    if out is None:
        return None
    if isinstance(out, tuple):
        return tuple(_out(o) for o in out)
    if not isinstance(out, ndarray):
        raise TypeError(f"Output arrays must be cupy.ndarray, got {type(out)}")
    return out._a


class ufunc:
    """A NumPy ufunc over stand-in arrays (NumPy arrays refused)."""

    def __init__(self, np_ufunc: np.ufunc) -> None:
        self._f = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.nin, self.nout = np_ufunc.nin, np_ufunc.nout

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}' (strict CuPy stand-in)>"

    def _args(self, args):
        out = []
        for x in args:
            if isinstance(x, ndarray):
                out.append(x._a)
            elif _scalar_ok(x):
                out.append(x)
            else:
                raise _unsupported(x)
        return out

    def __call__(self, *args, out=None, dtype=None, casting="same_kind", **kw):
        if "where" in kw:
            kw["where"] = _unwrap(kw["where"])
        o = _out(out)
        if o is not None and not isinstance(o, tuple):
            o = (o,)
        counters.array_ops += 1
        r = self._f(*self._args(args), out=o, dtype=dtype, casting=casting, **kw)
        if out is not None:
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        return _wrap(r)

    def at(self, a, indices, b=None) -> None:
        if not isinstance(a, ndarray):
            raise _unsupported(a)
        idx = _index(indices)
        if b is None:
            self._f.at(a._a, idx)
        else:
            if isinstance(b, np.ndarray):
                raise _unsupported(b)
            self._f.at(a._a, idx, b._a if isinstance(b, ndarray) else b)

    def reduce(self, a, axis=0, dtype=None, out=None, keepdims=False):
        if not isinstance(a, ndarray):
            raise _unsupported(a)
        r = self._f.reduce(a._a, axis=axis, dtype=dtype, out=_out(out), keepdims=keepdims)
        return out if out is not None else _wrap(r)

    def outer(self, a, b):
        return _wrap(self._f.outer(*self._args((a, b))))


for _n in dir(np):
    _obj = getattr(np, _n)
    if isinstance(_obj, np.ufunc) and _obj.__name__ not in _ufuncs:
        _ufuncs[_obj.__name__] = ufunc(_obj)
_ufuncs["true_divide"] = _ufuncs["divide"]


# CuPy functions whose first argument may be something other than one device array (sequences, shapes,
# dtypes, subscripts); every other function calls methods of its first argument (``a.sum()``,
# ``condition.astype('?')``...), so a Python/NumPy scalar there fails on CuPy and fails here.
_FREE_FIRST = set("""concatenate stack vstack hstack column_stack broadcast_arrays atleast_1d atleast_2d atleast_3d
meshgrid einsum result_type can_cast promote_types linspace logspace eye identity tri arange empty zeros ones
full isscalar ndim shape size""".split())


_NO_WORK = set("""broadcast_to broadcast_arrays expand_dims squeeze swapaxes moveaxis rollaxis transpose reshape
atleast_1d atleast_2d atleast_3d result_type can_cast ndim shape size empty empty_like shares_memory
may_share_memory""".split())  # views and metadata: no kernel


def _strict_fn(name: str, np_fn: Callable) -> Callable:
    """``np_fn`` over unwrapped stand-in arrays; NumPy arrays refused; results wrapped."""
    first_array = name not in _FREE_FIRST
    counts = name not in _NO_WORK
    attr = "astype" if name == "where" else name  # what CuPy calls on it first

    def f(*args, **kwargs):
        if first_array and args and not isinstance(args[0], ndarray):
            x = args[0]
            if isinstance(x, np.ndarray):
                raise _unsupported(x)
            raise AttributeError(f"cupy.{name}: '{type(x).__name__}' object has no attribute '{attr}' "
                                 f"(CuPy needs a cupy.ndarray here, got {type(x).__name__})")
        out = kwargs.pop("out", None)
        a = _unwrap(args)
        if counts:
            counters.array_ops += 1
        kw = {k: _unwrap(v) for k, v in kwargs.items()}
        if out is not None:
            kw["out"] = _out(out)
            np_fn(*a, **kw)
            return out
        return _wrap(np_fn(*a, **kw))
    f.__name__ = name
    f.__qualname__ = name
    return f


_PLAIN = """where clip broadcast_to broadcast_arrays concatenate stack vstack hstack column_stack expand_dims squeeze
swapaxes moveaxis rollaxis transpose reshape ravel split array_split take take_along_axis put_along_axis
argmax argmin argsort sort sum mean var std prod max min amax amin any all cumsum cumprod nansum tensordot
einsum outer inner unpackbits packbits tril triu diag diagonal trace flip fliplr flipud roll tile repeat pad
nonzero count_nonzero unique searchsorted allclose isclose array_equal atleast_1d atleast_2d atleast_3d
nan_to_num average median meshgrid bincount around round conj copy empty_like zeros_like ones_like
full_like linspace logspace eye identity tri argwhere flatnonzero lexsort histogram cov corrcoef diff
ediff1d interp convolve cross kron trapz ptp nanmax nanmin nanmean isin in1d delete insert append
resize shares_memory may_share_memory""".split()

for _n in _PLAIN:
    _fn = getattr(np, _n, None)
    if _fn is not None and callable(_fn):
        _functions[_n] = _strict_fn(_n, _fn)
# reductions: a 0-d array, not a scalar (CuPy never returns a NumPy scalar from a device computation)
for _n, _u in (("absolute", "absolute"), ("abs", "absolute")):
    _functions[_n] = _ufuncs[_u]


def _sort_inplace(a, axis=-1, kind=None) -> None:
    if not isinstance(a, ndarray):
        raise _unsupported(a)
    a._a.sort(axis=axis)


_functions["_sort_inplace"] = _sort_inplace


def _nocheck(name: str, fn: Callable) -> Callable:
    """Functions on dtypes/shapes (no arrays): NumPy's as they are."""
    _functions[name] = fn
    return fn


for _n in ("result_type", "promote_types", "can_cast", "dtype", "finfo", "iinfo", "isscalar",
           "min_scalar_type", "issubdtype", "ndim", "shape", "size"):
    _fn = getattr(np, _n, None)
    if _fn is not None:
        if _n in ("result_type", "can_cast", "ndim", "shape", "size"):
            _functions[_n] = _strict_fn(_n, _fn)
        else:
            _nocheck(_n, _fn)


def _sized(name: str, np_fn: Callable) -> Callable:
    """A creation function that asks the allocator before NumPy allocates (so a request larger than the
    'card' raises the pool's OutOfMemoryError instead of exhausting the host)."""
    inner = _strict_fn(name, np_fn)

    def f(*args, **kwargs):
        shape = args[0] if args else kwargs.get("shape")
        if isinstance(shape, ndarray):
            shape, dt = shape.shape, kwargs.get("dtype") or (args[1] if len(args) > 1 and name != "full_like"
                                                             else shape.dtype)
        else:
            dt = kwargs.get("dtype") or (args[2] if name == "full" and len(args) > 2 else
                                         args[1] if name != "full" and len(args) > 1 else float)
        try:
            n = math.prod((shape,) if isinstance(shape, (int, np.integer)) else tuple(shape))
            nbytes = int(n) * np.dtype(dt).itemsize
        except (TypeError, ValueError):
            nbytes = 0
        if nbytes > (1 << 30):  # only large requests are pre-checked (small ones cannot exhaust the pool)
            get_allocator()(nbytes)
        return inner(*args, **kwargs)
    f.__name__ = name
    return f


for _n in ("empty", "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like", "full_like"):
    _functions[_n] = _sized(_n, getattr(np, _n))
_functions["arange"] = _strict_fn("arange", np.arange)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, blocking=False) -> ndarray:
    """Host data (NumPy arrays, lists, scalars) -> a device array (a counted host-to-device copy); a
    stand-in array -> a copy (or itself with ``copy=False`` when nothing changes)."""
    if isinstance(obj, ndarray):
        a = obj._a
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return _new(a.astype(dtype, order=order if order != "K" else "K"))
        if not copy and (order in ("K", "A") or (order == "C" and a.flags.c_contiguous)
                         or (order == "F" and a.flags.f_contiguous)):
            return obj if not ndmin or a.ndim >= ndmin else _new(np.array(a, copy=False, ndmin=ndmin))
        return _new(np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin))
    if hasattr(obj, "__cuda_array_interface__") and not isinstance(obj, np.ndarray):
        raise TypeError(f"strict CuPy stand-in: cannot read foreign CUDA memory of {type(obj)}")
    if isinstance(obj, (list, tuple)) and any(isinstance(y, ndarray) for y in _flat(obj)):
        # CuPy builds it on the device from the parts
        host = np.array([_unwrap(y) for y in obj], dtype=dtype)
        return _new(host)
    host = np.array(obj, dtype=dtype, order=order if order != "K" else "K", ndmin=ndmin, copy=True)
    if host.dtype == object:
        raise ValueError(f"Unsupported dtype object (from {type(obj).__name__})")
    counters.host_to_device += 1
    return _new(host)


def _flat(x):
    for y in x:
        if isinstance(y, (list, tuple)):
            yield from _flat(y)
        else:
            yield y


def asarray(a, dtype=None, order=None, blocking=False) -> ndarray:
    return array(a, dtype=dtype, copy=False, order=order or "K")


def ascontiguousarray(a, dtype=None) -> ndarray:
    if isinstance(a, ndarray) and a._a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return array(a, dtype=dtype, copy=not isinstance(a, ndarray), order="C") if not isinstance(a, ndarray) \
        else _new(np.ascontiguousarray(a._a, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    if out is not None:
        out[...] = a
        return out
    return np.asarray(a, order=order)


def get_array_module(*args):
    return _module if any(isinstance(a, ndarray) for a in args) else np


def copyto(dst, src, casting="same_kind", where=None) -> None:
    if not isinstance(dst, ndarray):
        raise TypeError(f"dst must be cupy.ndarray, got {type(dst)}")
    if isinstance(src, np.ndarray):
        if src.ndim:
            raise _unsupported(src)
        src = src.item()
    np.copyto(dst._a, _unwrap(src), casting=casting, where=True if where is None else _unwrap(where))


def from_dlpack(x) -> ndarray:
    if isinstance(x, ndarray):
        return _new(x._a.view())
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        t, _ = dev()
        if int(t) in (2, 3):
            inner = getattr(x, "data", None)  # e.g. a gpugrad tensor on the stand-in device
            if isinstance(inner, ndarray):
                return _new(inner._a.view())
        raise TypeError(f"strict CuPy stand-in: from_dlpack needs a CUDA producer; {type(x).__name__} is on "
                        f"DLPack device type {int(t)}")
    raise TypeError(f"Unsupported type {type(x)}")


# ---------------------------------------------------------------- cuBLAS (matmul, dot)
class _Linalg(types.ModuleType):
    """``cupy._core._routines_linalg``: compute types of cuBLAS GEMMs, read at each GEMM."""

    COMPUTE_TYPE_TBD, COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_PEDANTIC = 0, 1, 2
    COMPUTE_TYPE_FP16, COMPUTE_TYPE_FP32, COMPUTE_TYPE_FP64, COMPUTE_TYPE_BF16, COMPUTE_TYPE_TF32 = 3, 4, 5, 6, 7

    def __init__(self) -> None:
        super().__init__("cupy._core._routines_linalg")
        self.compute_types = [0] * 6

    @staticmethod
    def to_compute_type_index(dtype) -> int:
        c = np.dtype(dtype).char
        idx = {"e": 1, "f": 2, "F": 2, "d": 3, "D": 3, "b": 4, "i": 5}.get(c)
        if idx is None:
            raise TypeError(f"dtype is not supported: {np.dtype(dtype)}")
        return idx

    def set_compute_type(self, dtype, compute_type: int) -> None:
        if compute_type not in range(8):
            raise ValueError(f"Unknown compute type: {compute_type}")
        self.compute_types[self.to_compute_type_index(dtype)] = compute_type

    def get_compute_type(self, dtype) -> int:
        i = self.to_compute_type_index(dtype)
        if self.compute_types[i] == 0:
            ct = 1
            if np.dtype(dtype).char in "fF" and int(os.getenv("CUPY_TF32", "0")) > 0:
                ct = 7
            self.compute_types[i] = ct
        return self.compute_types[i]


_linalg = _Linalg()


def _tf32(x: np.ndarray) -> np.ndarray:
    """float32 -> TF32 (10 explicit mantissa bits, round to nearest even), kept in float32."""
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (b >> 13) & 1
    b = ((b + 0xFFF + lsb) >> 13) << 13
    return (b & 0xFFFFFFFF).astype(np.uint32).view(np.float32).reshape(x.shape)


def _gemm(name: str, a, b, out=None):
    for x in (a, b):
        if isinstance(x, np.ndarray):
            raise _unsupported(x)
        if not isinstance(x, ndarray):
            raise TypeError(f"Unsupported type {type(x)}")
    s = _current_stream()
    if s is not None and s._capturing:
        raise RuntimeError("calling cuBLAS API during stream capture is currently unsupported")
    A, B = a._a, b._a
    if A.ndim == 0 or B.ndim == 0:
        raise ValueError("Scalar operands are not allowed, use '*' instead")
    dt = np.result_type(A.dtype, B.dtype)
    counters.gemm_calls += 1
    if dt.kind == "f":
        batched = max(A.ndim, B.ndim) > 2
        if dt == np.float32 and not batched and _linalg.get_compute_type(dt) == _linalg.COMPUTE_TYPE_TF32:
            A, B = _tf32(A), _tf32(B)  # 2-D float32 GEMMs follow the compute type (CuPy's dot path)
        if dt == np.float16:  # cuBLAS accumulates half GEMMs in float32
            r = np.matmul(A.astype(np.float32), B.astype(np.float32)).astype(np.float16)
        else:
            r = np.matmul(A.astype(dt, copy=False), B.astype(dt, copy=False))
    else:
        r = np.matmul(A, B)
    if out is not None:
        o = _out(out)
        o[...] = r
        return out
    return _wrap(r)


def matmul(a, b, out=None, **kw):
    return _gemm("matmul", a, b, out)


def dot(a, b, out=None):
    if isinstance(a, ndarray) and isinstance(b, ndarray) and (a.ndim == 0 or b.ndim == 0):
        return _ufuncs["multiply"](a, b, out=out)
    return _gemm("dot", a, b, out)


_functions.update(matmul=matmul, dot=dot, array=array, asarray=asarray, ascontiguousarray=ascontiguousarray,
                  copyto=copyto)


# ====================================================================================== cuda: devices, streams, events
class Device:
    def __init__(self, device=None) -> None:
        if device is None:
            device = _cur_dev()
        device = int(device)
        if not 0 <= device < _config["device_count"]:
            raise _runtime_error(101, "cudaErrorInvalidDevice: invalid device ordinal")
        self.id = device
        self._prev: list = []

    def __enter__(self) -> "Device":
        self._prev.append(_cur_dev())
        _state.device = self.id
        return self

    def __exit__(self, *exc) -> None:
        _state.device = self._prev.pop()

    def use(self) -> None:
        _state.device = self.id

    def synchronize(self) -> None:
        pass

    @property
    def attributes(self) -> dict:
        return {"MultiProcessorCount": _config["sms"], "MaxThreadsPerBlock": 1024, "WarpSize": 32,
                "MaxSharedMemoryPerBlockOptin": 232448}

    @property
    def compute_capability(self) -> str:
        return "%d%d" % _config["cc"]

    @property
    def mem_info(self) -> tuple[int, int]:
        return _runtime.memGetInfo()

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


_stream_ptrs = [0x1000]


class Stream:
    null: "Stream"

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False) -> None:
        if null:
            self.ptr = 0
        else:
            _stream_ptrs[0] += 16
            self.ptr = _stream_ptrs[0]
        self._capturing = False
        self._prev: list = []
        self.device_id = _cur_dev()

    def __enter__(self) -> "Stream":
        self._prev.append(getattr(_state, "stream", None))
        _state.stream = self
        return self

    def __exit__(self, *exc) -> None:
        _state.stream = self._prev.pop()

    def use(self) -> "Stream":
        _state.stream = self
        return self

    def synchronize(self) -> None:
        if self._capturing:
            raise _runtime_error(900, "cudaErrorStreamCaptureUnsupported: synchronizing a capturing stream")

    def record(self, event=None) -> "Event":
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event) -> None:
        pass

    def is_capturing(self) -> bool:
        return self._capturing

    def begin_capture(self, mode=None) -> None:
        if self.ptr == 0:
            raise _runtime_error(900, "cudaErrorStreamCaptureUnsupported: the legacy null stream cannot be captured")
        if self._capturing:
            raise _runtime_error(900, "cudaErrorIllegalState: stream is already capturing")
        self._capturing = True

    def end_capture(self) -> "Graph":
        if not self._capturing:
            raise _runtime_error(900, "cudaErrorIllegalState: stream is not capturing")
        self._capturing = False
        return Graph()

    @property
    def done(self) -> bool:
        return True

    def __eq__(self, other) -> bool:
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self) -> int:
        return hash(self.ptr)


Stream.null = Stream(null=True)


class Graph:
    """A captured graph. The stand-in runs work eagerly (capture included), so it has nothing to
    replay: ``launch`` refuses clearly rather than pretend."""

    def launch(self, stream=None) -> None:
        raise RuntimeError("strict CuPy stand-in: CUDA graph replay is not emulated (capture ran the work "
                           "eagerly); test graph host logic with an emulated runtime")

    def upload(self, stream=None) -> None:
        pass


def _current_stream() -> "Stream | None":
    return getattr(_state, "stream", None)


def get_current_stream(device_id=None) -> Stream:
    s = _current_stream()
    return s if s is not None else Stream.null


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        self.disable_timing = disable_timing
        self.ptr = id(self)
        self._recorded = False

    def record(self, stream=None) -> None:
        self._recorded = True

    def synchronize(self) -> None:
        pass

    @property
    def done(self) -> bool:
        return True


def get_elapsed_time(start: Event, end: Event) -> float:
    if start.disable_timing or end.disable_timing:
        raise _runtime_error(6, "cudaErrorInvalidResourceHandle: event created with disable_timing")
    return 0.0


class _Runtime(types.ModuleType):
    CUDA_R_16F, CUDA_R_32F, CUDA_R_64F, CUDA_R_16BF = 2, 0, 1, 14
    CUDA_C_32F, CUDA_C_64F = 4, 5
    CUDARuntimeError = CUDARuntimeError
    is_hip = False

    def __init__(self) -> None:
        super().__init__("cupy.cuda.runtime")

    def getDeviceCount(self) -> int:
        n = _config["device_count"]
        if n == 0:
            raise _runtime_error(100, "cudaErrorNoDevice: no CUDA-capable device is detected")
        return n

    def getDevice(self) -> int:
        return _cur_dev()

    def setDevice(self, i: int) -> None:
        Device(i).use()

    def runtimeGetVersion(self) -> int:
        return 13000

    def driverGetVersion(self) -> int:
        return 13000

    def deviceSynchronize(self) -> None:
        pass

    def memGetInfo(self) -> tuple[int, int]:
        total = _config["total_memory"]
        return total - get_default_memory_pool().total_bytes(), total

    def getDeviceProperties(self, i: int) -> dict:
        Device(i)
        return {"name": b"Strict CuPy stand-in (no GPU)", "totalGlobalMem": _config["total_memory"],
                "multiProcessorCount": _config["sms"], "major": _config["cc"][0], "minor": _config["cc"][1],
                "maxThreadsPerBlock": 1024, "warpSize": 32}


_runtime = _Runtime()


# ====================================================================================== RawModule / RawKernel
_C_TYPES = {"float": "float32", "double": "float64", "int": "int32", "unsigned int": "uint32",
            "long long": "int64", "unsigned long long": "uint64", "long": "int64", "unsigned long": "uint64",
            "short": "int16", "unsigned short": "uint16", "char": "int8", "signed char": "int8",
            "unsigned char": "uint8", "bool": "bool", "__half": "float16", "half": "float16",
            "size_t": "uint64", "ptrdiff_t": "int64", "int64_t": "int64", "int32_t": "int32",
            "uint32_t": "uint32", "uint64_t": "uint64", "float2": None, "__nv_bfloat16": None}
_HALF_STORAGE = ("uint16", "float16")  # half data stored as unsigned short is read from float16 arrays


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


def _expand_macros(src: str) -> str:
    """Expand function-like macros (the ``GG_ENTRY_POINTS(f32, float, float)`` pattern) textually, enough
    to see the ``extern "C"`` entry points they define."""
    src = src.replace("\\\n", " ").replace('extern "C"', "__EXTERN_C__")  # no parameter inside the literal
    macros = {}
    for m in re.finditer(r"^[ \t]*#define[ \t]+(\w+)\(([^)]*)\)[ \t]*(.*)$", src, flags=re.M):
        macros[m.group(1)] = ([p.strip() for p in m.group(2).split(",") if p.strip()], m.group(3))
    body = re.sub(r"^[ \t]*#define[^\n]*$", "", src, flags=re.M)
    for name, (params, text) in macros.items():
        if "__EXTERN_C__" not in text:
            continue

        def sub(m, params=params, text=text):
            args = [a.strip() for a in m.group(1).split(",")]
            if len(args) != len(params):
                return m.group(0)
            out = text
            for p, a in zip(params, args):
                out = re.sub(r"\s*##\s*" + p + r"\b", a, out)
                out = re.sub(r"\b" + p + r"\s*##\s*", a, out)
                out = re.sub(r"\b" + p + r"\b", a, out)
            return out
        body = re.sub(r"\b" + name + r"\(([^()]*)\)\s*;?", sub, body)
    return body.replace("__EXTERN_C__", 'extern "C"')


def parse_entry_points(src: str) -> dict[str, list[tuple[str, str, bool]]]:
    """``{kernel name: [(param name, C base type, is pointer)]}`` for every ``extern "C" __global__``
    function in ``src`` (macro-generated ones included)."""
    text = _expand_macros(_strip_comments(src))
    typedefs = {m.group(2): " ".join(m.group(1).split())
                for m in re.finditer(r"typedef\s+([\w\s]+?)\s+(\w+)\s*;", text)}
    out = {}
    pat = r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)'
    for m in re.finditer(pat, text):
        params = []
        for p in [p.strip() for p in m.group(2).split(",") if p.strip()]:
            ptr = "*" in p or "[]" in p
            p2 = re.sub(r"\b(const|__restrict__|restrict|volatile)\b", " ", p).replace("*", " ").replace("[]", " ")
            words = p2.split()
            pname, ctype = words[-1], " ".join(words[:-1])
            for _ in range(4):
                ctype = typedefs.get(ctype, ctype)
            params.append((pname, ctype, ptr))
        out[m.group(1)] = params
    return out


# name -> reference(args: dict[param name -> flat NumPy array | NumPy scalar], grid, block) -> None
_kernel_refs: dict[str, Callable] = {}


def register_kernel(name: str, reference: Callable) -> None:
    """What launching kernel ``name`` computes, in NumPy: ``reference(args, grid, block)`` where ``args``
    maps the C parameter names to flat NumPy views of the device arrays (write results into them) or to
    the NumPy scalars passed."""
    _kernel_refs[name] = reference


class RawKernel:
    def __init__(self, code: str, name: str, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, jitify=False, *, _params=None) -> None:
        self.code, self.name, self.options = code, name, tuple(options)
        if _params is None:
            eps = parse_entry_points(code)
            if name not in eps:
                raise _driver_error_not_found(name)
            _params = eps[name]
        self._params = _params

    @property
    def attributes(self) -> dict:
        return {"max_threads_per_block": 1024, "shared_size_bytes": 0, "num_regs": 32}

    max_threads_per_block = property(lambda self: 1024)

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None) -> None:
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if math.prod(block) > 1024 or block[2] > 64:
            raise _driver_error(1, "CUDA_ERROR_INVALID_VALUE: too many threads per block", block)
        if grid[0] >= 2 ** 31 or grid[1] > 65535 or grid[2] > 65535:
            raise _driver_error(1, "CUDA_ERROR_INVALID_VALUE: grid too large", grid)
        if not isinstance(args, tuple):
            raise TypeError(f"kernel {self.name}: args must be a tuple, got {type(args).__name__}")
        if len(args) != len(self._params):
            raise TypeError(f"kernel {self.name} takes {len(self._params)} arguments "
                            f"({', '.join(p[0] for p in self._params)}), {len(args)} given")
        bound = {}
        for (pname, ctype, ptr), a in zip(self._params, args):
            bound[pname] = _kernel_arg(self.name, pname, ctype, ptr, a)
        s = _current_stream() if stream is None else stream
        counters.kernel_launches += 1
        counters.kernels[self.name] = counters.kernels.get(self.name, 0) + 1
        ref = _kernel_refs.get(self.name)
        if ref is None:
            raise NotImplementedError(
                f"strict CuPy stand-in: no NumPy reference registered for kernel '{self.name}' "
                "(strict_cupy.register_kernel(name, reference))")
        ref(bound, grid, block)
        del s


def _dims(d, what: str) -> tuple[int, int, int]:
    if isinstance(d, (int, np.integer)):
        d = (d,)
    if not isinstance(d, tuple) or not 1 <= len(d) <= 3:
        raise TypeError(f"{what} must be an int or a tuple of 1-3 ints, got {d!r}")
    for x in d:
        if not isinstance(x, (int, np.integer)) or isinstance(x, bool) or x < 1:
            raise ValueError(f"{what} dimensions must be positive ints, got {d!r}")
    return tuple(int(x) for x in d) + (1,) * (3 - len(d))  # type: ignore[return-value]


class CUDADriverError(RuntimeError):
    pass


def _driver_error(code: int, msg: str, what) -> CUDADriverError:
    return CUDADriverError(f"{msg} ({what})")


def _driver_error_not_found(name: str) -> CUDADriverError:
    return CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ('{name}' is not an extern \"C\" "
                           "__global__ function of this module)")


def _kernel_arg(kname: str, pname: str, ctype: str, ptr: bool, a):
    where = f"kernel {kname}, argument '{pname}' ({ctype}{' *' if ptr else ''})"
    want = _C_TYPES.get(ctype)
    if ptr:
        if isinstance(a, np.ndarray):
            raise TypeError(f"{where}: a NumPy array was passed; kernels take device arrays "
                            f"(Unsupported type {type(a)})")
        if not isinstance(a, ndarray):
            raise TypeError(f"{where}: expected a device array, got {type(a).__name__}")
        if want is not None:
            ok = a.dtype == np.dtype(want) or (want in _HALF_STORAGE and a.dtype.name in _HALF_STORAGE)
            if not ok:
                raise TypeError(f"{where}: got a {a.dtype} array; the kernel reads {want}")
        if not a._a.flags.c_contiguous:
            raise ValueError(f"{where}: array of shape {a.shape} strides {a.strides} is not C-contiguous; "
                             "the kernel reads it as a flat buffer")
        return a._a.reshape(-1)
    if isinstance(a, ndarray) or isinstance(a, np.ndarray):
        raise TypeError(f"{where}: an array was passed for a scalar parameter")
    if want is None:
        return a
    if not isinstance(a, np.generic) or a.dtype != np.dtype(want):
        got = type(a).__name__ if not isinstance(a, np.generic) else str(a.dtype)
        raise TypeError(f"{where}: got {got} {a!r}; pass numpy.{want}(...) (CuPy passes a Python int as 64 bits, "
                        "a float as double: a silent mismatch on the GPU)")
    return a


class RawModule:
    def __init__(self, code: str | None = None, path: str | None = None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False, name_expressions=None,
                 jitify=False) -> None:
        if code is None:
            if path is None:
                raise TypeError("RawModule needs code or path")
            with open(path, encoding="utf-8") as f:
                code = f.read()
        if backend not in ("nvrtc", "nvcc"):
            raise ValueError(f"Unsupported backend {backend}")
        self.code, self.options, self.backend = code, tuple(options), backend
        self._eps = parse_entry_points(code)
        self.compiled = True

    def get_function(self, name: str) -> RawKernel:
        if name not in self._eps:
            raise _driver_error_not_found(name)
        return RawKernel(self.code, name, self.options, _params=self._eps[name])


class ElementwiseKernel:
    def __init__(self, *args, **kwargs) -> None:
        raise NotImplementedError("strict CuPy stand-in: ElementwiseKernel is not emulated (gpugrad does not use it)")


ReductionKernel = ElementwiseKernel


# ====================================================================================== cupyx
def scatter_add(a, slices, value) -> None:
    if not isinstance(a, ndarray):
        raise _unsupported(a)
    if isinstance(value, np.ndarray):
        raise _unsupported(value)
    idx = slices
    if isinstance(idx, tuple):
        for k in idx:
            if isinstance(k, np.ndarray):
                raise _unsupported(k)
    elif isinstance(idx, np.ndarray):
        raise _unsupported(idx)
    np.add.at(a._a, _index(idx), value._a if isinstance(value, ndarray) else value)


def _erf(x, out=None):
    if not isinstance(x, ndarray):
        raise _unsupported(x)
    try:
        from scipy.special import erf as _sp_erf
        v = _sp_erf(x._a.astype(np.float64))
    except ImportError:  # pragma: no cover
        v = np.vectorize(math.erf, otypes=[np.float64])(x._a.astype(np.float64))
    r = v.astype(x.dtype if x.dtype.kind == "f" else np.float64)
    if out is not None:
        out._a[...] = r
        return out
    return _new(r)


# ====================================================================================== modules and install
def _make_modules() -> dict[str, types.ModuleType]:
    cp = types.ModuleType("cupy", "strict CuPy stand-in (tests.support.strict_cupy)")
    for name, u in _ufuncs.items():
        setattr(cp, name, u)
    for name, f in _functions.items():  # after the ufuncs: matmul is cuBLAS, not an elementwise kernel
        setattr(cp, name, f)
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                 "uint32", "uint64", "bool_", "complex64", "complex128", "intp", "uintp", "integer",
                 "floating", "number", "generic", "signedinteger", "unsignedinteger", "complexfloating",
                 "inexact", "byte", "ubyte", "short", "ushort", "intc", "uintc", "half", "single", "double",
                 "longlong", "ulonglong", "inf", "nan", "pi", "e", "newaxis"):
        if hasattr(np, name):
            setattr(cp, name, getattr(np, name))
    cp.uint = np.uint64
    cp.int_ = np.int64
    cp.float_ = np.float64
    cp.bool = np.bool_
    cp.abs = _ufuncs["absolute"]
    cp.ndarray = ndarray
    cp.ufunc = ufunc
    cp.asnumpy = asnumpy
    cp.get_array_module = get_array_module
    cp.from_dlpack = from_dlpack
    cp.fromDlpack = from_dlpack
    cp.RawModule, cp.RawKernel = RawModule, RawKernel
    cp.ElementwiseKernel, cp.ReductionKernel = ElementwiseKernel, ReductionKernel
    cp.get_default_memory_pool = get_default_memory_pool
    cp.get_default_pinned_memory_pool = get_default_pinned_memory_pool
    cp.__version__ = __version__
    cp.is_available = lambda: _config["device_count"] > 0
    cp._strict_stand_in = True

    cuda = types.ModuleType("cupy.cuda")
    cuda.Device, cuda.Stream, cuda.Event, cuda.Graph = Device, Stream, Event, Graph
    cuda.get_current_stream = get_current_stream
    cuda.get_elapsed_time = get_elapsed_time
    cuda.MemoryPool, cuda.PinnedMemoryPool, cuda.MemoryPointer = MemoryPool, PinnedMemoryPool, MemoryPointer
    cuda.set_allocator, cuda.get_allocator, cuda.using_allocator = set_allocator, get_allocator, using_allocator
    cuda.runtime = _runtime
    cuda.is_available = cp.is_available
    cuda.get_cuda_path = lambda: None
    cuda.CUDADriverError = CUDADriverError
    memory = types.ModuleType("cupy.cuda.memory")
    memory.OutOfMemoryError, memory.MemoryPool, memory.MemoryPointer = OutOfMemoryError, MemoryPool, MemoryPointer
    memory.set_allocator, memory.get_allocator = set_allocator, get_allocator
    cuda.memory = memory
    device = types.ModuleType("cupy.cuda.device")
    device.Device = Device
    device.get_cublas_handle = lambda: 0xB1A5 + _cur_dev()
    device.get_compute_capability = lambda: "%d%d" % _config["cc"]
    device.get_device_id = _cur_dev
    cuda.device = device
    stream = types.ModuleType("cupy.cuda.stream")
    stream.Stream, stream.Event, stream.get_current_stream = Stream, Event, get_current_stream
    cuda.stream = stream
    cp.cuda = cuda
    core = types.ModuleType("cupy._core")
    core._routines_linalg = _linalg
    core.ndarray = ndarray
    cp._core = core

    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = scatter_add
    scipy = types.ModuleType("cupyx.scipy")
    special = types.ModuleType("cupyx.scipy.special")
    special.erf = _erf
    scipy.special = special
    cupyx.scipy = scipy

    cb = types.ModuleType("cupy_backends")
    cbc = types.ModuleType("cupy_backends.cuda")
    libs = types.ModuleType("cupy_backends.cuda.libs")
    cublas = types.ModuleType("cupy_backends.cuda.libs.cublas")
    cublas.setStream = lambda handle, stream_ptr: None
    cublas.getStream = lambda handle: get_current_stream().ptr
    cublas.setWorkspace = lambda handle, ptr, size: None
    cublas.CUBLASError = type("CUBLASError", (RuntimeError,), {})

    def _no_raw_cublas(*a, **k):
        raise NotImplementedError("strict CuPy stand-in: raw cuBLAS calls are not emulated; use cupy.matmul")
    for fn in ("gemmEx", "sgemm", "dgemm", "gemmStridedBatchedEx", "setMathMode"):
        setattr(cublas, fn, _no_raw_cublas)
    libs.cublas = cublas
    cbc.libs = libs
    cb.cuda = cbc
    return {"cupy": cp, "cupy.cuda": cuda, "cupy.cuda.runtime": _runtime, "cupy.cuda.memory": memory,
            "cupy.cuda.device": device, "cupy.cuda.stream": stream, "cupy._core": core,
            "cupy._core._routines_linalg": _linalg, "cupyx": cupyx, "cupyx.scipy": scipy,
            "cupyx.scipy.special": special, "cupy_backends": cb, "cupy_backends.cuda": cbc,
            "cupy_backends.cuda.libs": libs, "cupy_backends.cuda.libs.cublas": cublas}


_modules = _make_modules()
_module = _modules["cupy"]
cupy = _module  # the module object ``import cupy`` gives while installed


def install(device_count: int = 1) -> dict:
    """Make ``import cupy`` (and its submodules, ``cupyx``, ``cupy_backends``) give the stand-in. Returns
    what was in ``sys.modules`` before, for :func:`uninstall`. Resets counters, pool, compute types,
    current device and stream."""
    saved = {k: sys.modules.get(k) for k in _modules}
    sys.modules.update(_modules)
    _config["device_count"] = int(device_count)
    counters.reset()
    _linalg.compute_types[:] = [0] * 6
    _allocator[0] = None
    _pools.clear()
    _state.device = 0
    _state.stream = None
    _state.allocator = None
    return saved


def uninstall(saved: dict) -> None:
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


@contextlib.contextmanager
def installed(device_count: int = 1) -> Iterator[types.ModuleType]:
    """``with installed():`` the stand-in is ``cupy`` inside the block."""
    saved = install(device_count)
    try:
        yield _module
    finally:
        uninstall(saved)


__all__ = ["ndarray", "Counters", "counters", "reset_counters", "snapshot", "install", "uninstall", "installed",
           "register_kernel", "parse_entry_points", "RawModule", "RawKernel", "MemoryPool", "OutOfMemoryError",
           "IMPLICIT_MSG", "cupy"]
