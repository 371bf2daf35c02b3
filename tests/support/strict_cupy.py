"""A strict CuPy stand-in for CI: CuPy's rules, NumPy's arithmetic, no GPU.

A NumPy array standing in for a CuPy array hides the rules that break real GPU code. This module's
``ndarray`` wraps a NumPy array but is not one, and refuses what CuPy refuses. Every rule below is
CuPy v14.2.0's (the ``v14.2.0`` tag of github.com/cupy/cupy; file paths are in that tree):

Arrays and NumPy
- ``np.asarray(x)`` / ``x.__array__()``: ``TypeError: Implicit conversion to a NumPy array is not
  allowed. Please use .get() ...`` (``cupy/_core/core.pyx``: ``ndarray.__array__``).
- a NumPy function applied to it dispatches (``__array_function__`` / ``__array_ufunc__``) to this
  module's function of that name, which refuses NumPy arrays: ``TypeError: Unsupported type <class
  'numpy.ndarray'>`` (``cupy/_core/_kernel.pyx``: ``_preprocess_arg`` makes anything but a device array a
  ``CScalar``, which refuses it: ``cupy/_core/_scalar.pyx``); so does arithmetic mixing it with a NumPy
  array (NumPy and Python scalars are fine).
- reductions, indexing to one element and ufuncs on 0-d arrays give 0-d arrays, never scalars.
- ufuncs and operators give IEEE results (inf, nan) with no NumPy RuntimeWarning: a CuPy ufunc is a
  kernel launch that never reads the floating-point status (``cupy/_core/_kernel.pyx``: ``ufunc.__call__``).
- Python scalars are weak (NEP 50) in ufuncs, ``where`` and ``clip``: next to an array of the same or a
  higher kind a Python int takes the array's dtype and raises ``OverflowError`` where it does not fit
  (``-100`` against ``uint8``, ``2**63 - 1`` against ``int32``), comparisons included; NumPy's ``where``
  and ``clip`` wrap silently instead, and NumPy's comparisons special-case it (``cupy/_core/_kernel.pyx``:
  ``_check_should_use_weak_scalar``, ``ufunc.guess_routine``; ``cupy/_core/_scalar.pyx``:
  ``CScalar.apply_dtype`` packs the value with ``PyArray_Pack``; ``where`` and ``clip`` are ufuncs there:
  ``cupy/_sorting/search.py``: ``_where_ufunc``, ``cupy/_core/_routines_math.pyx``: ``_clip``).

Transfers (counted: ``device_to_host``, ``host_to_device``)
- device to host: ``.get()``, ``asnumpy``, ``.item()``, ``.tolist()``, ``float()/int()/bool()``,
  ``repr``; and the operations whose result shape depends on the data, which read a count on the host:
  boolean-mask indexing and assignment (``cupy/_core/_routines_indexing.pyx``:
  ``_prepare_mask_indexing_single``, ``int(mask_scanned[-1])``), ``nonzero`` / ``flatnonzero`` /
  ``argwhere`` / one-argument ``where`` (same file, ``_ndarray_nonzero``), ``unique``
  (``cupy/_manipulation/add_remove.py``), ``bincount`` (``cupy/_statistics/histogram.py``: ``int(max)``).
- host to device: ``array``/``asarray`` of host data and ``.set()`` (``cupy/_core/core.pyx``:
  ``_array_default``, ``copy_from_host_async``); indexing with Python lists/tuples, NumPy arrays or a
  bool (``cupy/_core/_routines_indexing.pyx``: ``_prepare_slice_list`` calls ``core.array``);
  ``concatenate`` (so ``stack``/``vstack``/``hstack``/``column_stack``, which call it) of more than 8
  arrays of the output's dtype and under 2 MiB each on average, which copies a host table of pointers
  (and of sizes and strides unless all have the same shape and are contiguous) to the device and runs one
  kernel (``cupy/_core/_routines_manipulation.pyx``: ``_concatenate``, ``_concatenate_single_kernel``);
  otherwise it runs one copy kernel per array.

Streams and CUDA graphs
- while the current stream captures: every host-to-device copy raises ``RuntimeError: the current
  stream is capturing, so H2D transfers are disallowed`` and every device read ``... D2H transfers are
  disallowed`` (``cupy/cuda/memory.pyx``: ``MemoryPointer.copy_from_host_async`` /
  ``copy_to_host_async``); ``cupy.matmul``/``dot`` through cuBLAS raise ``NotImplementedError: calling
  cuBLAS API during stream capture is currently unsupported`` (``cupy_backends/cuda/libs/cublas.pyx``:
  ``setStream``); synchronising the stream or the device is refused.
- capture records: every operation on the capturing stream is kept in the graph and runs again, in order,
  at each ``Graph.launch`` (on the same arrays, with the scalars of the capture); the Python code that
  issued it does not. Capture itself has no effect on memory that existed before it (the stand-in runs
  the work eagerly so that shapes and fresh arrays are real, then restores every older buffer), as a real
  capture runs nothing. ``record(fn)`` lets another stand-in (``fake_cublas``) put its work in the graph.
- 1-D ``dot`` (and any ``dot``/``matmul`` of two at most 2-D arrays with one output element) is a
  reduction kernel, not cuBLAS: not counted as a GEMM, allowed during capture
  (``cupy/_core/_routines_linalg.pyx``: ``tensordot_core``, the ``m == 1 and n == 1`` branch).

Kernels (``RawModule``/``RawKernel``; counted per kernel name)
- ``grid`` and ``block`` must be tuples (``cupy/cuda/function.pyx``: ``Function.__call__(tuple grid,
  tuple block, ...)``; zero entries become 1 there), ``options`` a tuple and ``code``/``path`` keyword
  arguments, exactly one of them (``cupy/_core/raw.pyx``: ``RawKernel.__init__``, ``RawModule.__init__``).
- the CUDA source is parsed: a launch checks the entry point exists, its argument count, pointer dtypes,
  contiguity and exact scalar types (CuPy passes a Python int as 64 bits and a float as a double,
  ``cupy/_core/_scalar.pyx``: ``numpy_dtype_from_pyscalar``: a silent mismatch on the GPU); a struct
  parameter takes a one-element NumPy array of the struct's size, passed by value, and any other NumPy
  array must have one element (``cupy/cuda/function.pyx``: ``_pointer``, ``CNumpyArray``); at most 1024
  threads per block. It then runs the registered NumPy reference, which checks that the launch geometry
  covers every element (``tests/support/kernel_refs.py``).

Also: ``cuda.Device``, ``cuda.runtime``, streams, events, the memory pool and allocator hooks
(``set_allocator``, ``using_allocator``; allocations are real byte counts of the arrays made), cuBLAS through
``matmul``/``dot``/``@`` (counted; TF32 compute type emulated by rounding float32 inputs to TF32 as cuBLAS
does), ``cupy._core._routines_linalg`` compute types, ``cupyx.scatter_add``, ``cupyx.scipy.special.erf``,
DLPack between stand-in arrays; :func:`array_at` finds the device array behind a raw pointer (for
references of kernels that take pointer tables).

Counters (``counters``; :func:`reset_counters`, :func:`snapshot`): kernel launches (per kernel name),
CuPy array operations, GEMM calls, device-to-host reads, host-to-device copies, graph launches.

Standalone: imports NumPy only (never gpugrad), so it can be loaded by file path against any checkout::

    spec = importlib.util.spec_from_file_location("strict_cupy", path); ...
    with strict_cupy.installed():      # `import cupy` now gives the stand-in
        ...

Installing makes ``import cupy`` (and ``cupy.cuda``, ``cupyx``, ``cupy_backends.cuda.libs.cublas``...)
resolve to the stand-in; the caller resets its own caches (gpugrad: ``tests.support.strict_cuda``).
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import sys
import threading
import time
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
        self.graph_launches = 0
        self.kernels: dict[str, int] = {}

    def snapshot(self) -> dict:
        return {"kernel_launches": self.kernel_launches, "array_ops": self.array_ops, "gemm_calls": self.gemm_calls,
                "device_to_host": self.device_to_host, "host_to_device": self.host_to_device,
                "graph_launches": self.graph_launches, "kernels": dict(self.kernels)}


counters = Counters()


def reset_counters() -> None:
    counters.reset()


def snapshot() -> dict:
    return counters.snapshot()


def _d2h(what: str) -> None:
    """A device-to-host read (``cupy/cuda/memory.pyx``: ``copy_to_host_async`` refuses during capture)."""
    if _capturing():
        raise RuntimeError(f"the current stream is capturing, so D2H transfers are disallowed ({what} reads "
                           "device memory on the host; cudaErrorStreamCaptureUnsupported)")
    counters.device_to_host += 1


def _h2d(what: str, n: int = 1) -> None:
    """A host-to-device copy (``cupy/cuda/memory.pyx``: ``copy_from_host_async`` refuses during capture)."""
    if _capturing():
        raise RuntimeError(f"the current stream is capturing, so H2D transfers are disallowed ({what} copies "
                           "host memory to the device)")
    counters.host_to_device += n


def _capturing() -> bool:
    s = _current_stream()
    return s is not None and s._capturing


def record(fn: Callable[[], None]) -> None:
    """While the current stream captures, keep ``fn`` (device work just issued) in the graph being
    captured: it runs again, in order, at each launch. A no-op otherwise."""
    s = _current_stream()
    if s is not None and s._capturing:
        s._graph._ops.append(fn)


def _as_arrays(r):
    """NumPy scalars (what NumPy returns for a reduction or a 0-d operation) as 0-d arrays, as CuPy gives."""
    if isinstance(r, np.generic):
        return np.array(r)
    if isinstance(r, tuple):
        return tuple(_as_arrays(y) for y in r)
    return r


def _record_result(result, recompute: Callable[[], object], inputs):
    """``result`` with NumPy scalars made 0-d arrays; while capturing, the operation that made it from
    ``inputs`` is kept in the graph as 'recompute into the same arrays' (views of an input are not work:
    nothing kept)."""
    result = _as_arrays(result)
    if not _capturing():
        return result
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    outs = [r for r in outs if isinstance(r, np.ndarray)]
    roots = {id(_root(x)) for x in _np_inputs(inputs)}
    if not outs or any(id(_root(r)) in roots for r in outs):
        return result

    def again() -> None:
        new = recompute()
        for r, v in zip(outs, list(new) if isinstance(new, (tuple, list)) else [new]):
            np.copyto(r, v, casting="unsafe")
    record(again)
    return result


def _np_inputs(x):
    if isinstance(x, np.ndarray):
        yield x
    elif isinstance(x, ndarray):
        yield x._a
    elif isinstance(x, (list, tuple)):
        for y in x:
            yield from _np_inputs(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _np_inputs(y)


def _check_weak_ints(name: str, args) -> None:
    """NEP 50 as CuPy applies it to Python ints (see the module docstring): next to an int or inexact
    array, a Python int takes the operation's integer dtype and must fit it."""
    ints = [a for a in args if type(a) is int]
    if not ints:
        return
    arrays = [a for a in _np_inputs(list(args))]
    if not arrays or max(_KIND_SCORE.get(a.dtype.kind, 3) for a in arrays) < 1:
        return  # only bool arrays (or none): the Python int is a strong int64
    dt = np.result_type(*arrays)
    if dt.kind not in "iu":
        return
    info = np.iinfo(dt)
    for v in ints:
        if not info.min <= v <= info.max:
            raise OverflowError(f"Python integer {v} out of bounds for {dt} (cupy.{name}: CuPy casts a Python "
                                f"int to the array's dtype, NEP 50)")


_KIND_SCORE = {"b": 0, "i": 1, "u": 1, "f": 2, "c": 2}


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
    s = _current_stream()
    if s is not None and s._capturing:  # memory allocated in capture belongs to the graph (its private pool
        s._graph._keep.append(root)     # keeps it: the replayed work writes and reads it at every launch)
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
        _h2d("ndarray.set()")
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
        a = self._a
        r = a[k]
        if not isinstance(r, np.ndarray):  # one element: a 0-d view, as CuPy gives
            r = a[(k if isinstance(k, tuple) else (k,)) + (Ellipsis,)]
        r = _record_result(r, lambda: a[k], (a,))  # advanced indexing gathers (a kernel); basic gives a view
        return _new(r)

    def __setitem__(self, key, value) -> None:
        k = _index(key, setting=not isinstance(value, ndarray))
        if isinstance(value, np.ndarray):
            if value.ndim:
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            value = value.item()
        elif isinstance(value, ndarray):
            value = value._a
        elif isinstance(value, (list, tuple)):
            raise _unsupported(value)
        counters.array_ops += 1
        a = self._a
        a[k] = value
        record(lambda: a.__setitem__(k, value))

    # ---------------------------------------------------------------- methods
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True) -> "ndarray":
        a = self._a
        r = a.astype(dtype, order=order, copy=copy)
        if r is a:
            return self
        counters.array_ops += 1
        r = _record_result(r, lambda: a.astype(dtype, order=order), ())
        return _new(r)

    def copy(self, order="C") -> "ndarray":
        counters.array_ops += 1
        a = self._a
        r = a.copy(order=order)
        r = _record_result(r, lambda: a, ())
        return _new(r)

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
        a = self._a
        a.fill(value)
        record(lambda: a.fill(value))

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


def _index(key, setting: bool = False, top: bool = True):
    """Index keys as CuPy takes them (``cupy/_core/_routines_indexing.pyx``): stand-in arrays unwrap; NumPy
    arrays, lists (tuples inside a tuple key) and bools are copied to the device first (host-to-device
    copies); a boolean mask reads its count on the host (a device-to-host read), and assigning a scalar
    through it copies the scalar to the device."""
    if isinstance(key, tuple) and top:
        return tuple(_index(k, setting, False) for k in key)
    if isinstance(key, ndarray):
        k = key._a
    elif isinstance(key, (np.ndarray, list, tuple, bool, np.bool_)):
        _h2d("an index of host data")
        k = np.asarray(key)
        if k.dtype.kind not in "biu" and k.size:
            raise IndexError(f"arrays used as indices must be of integer or boolean type (actual: {k.dtype.type})")
        if k.size == 0:
            k = k.astype(np.int32)
    else:
        return key
    if k.dtype == np.bool_ and k.ndim:
        _d2h("boolean mask indexing (the number of True elements)")
        if setting:
            _h2d("the scalar assigned through a boolean mask")
    return k


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


def _quiet(fn: Callable) -> Callable:
    """``fn`` without NumPy's floating-point warnings (divide by zero, overflow, invalid): a CuPy kernel
    computes IEEE results on the GPU and warns about none of them."""
    def q(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    return q


class ufunc:
    """A NumPy ufunc over stand-in arrays (NumPy arrays refused); no floating-point warnings, as CuPy."""

    def __init__(self, np_ufunc: np.ufunc) -> None:
        self._f = np_ufunc
        self._call = _quiet(np_ufunc)
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
        a = self._args(args)
        if dtype is None:
            _check_weak_ints(self.__name__, a)
        counters.array_ops += 1
        f = self._call
        r = f(*a, out=o, dtype=dtype, casting=casting, **kw)
        if out is not None:
            record(lambda: f(*a, out=o, dtype=dtype, casting=casting, **kw))
            return out[0] if isinstance(out, tuple) and len(out) == 1 else out
        r = _record_result(r, lambda: f(*a, dtype=dtype, casting=casting, **kw), a)
        return _wrap(r)

    def at(self, a, indices, b=None) -> None:
        if not isinstance(a, ndarray):
            raise _unsupported(a)
        idx = _index(indices)
        if isinstance(b, np.ndarray):
            raise _unsupported(b)
        args = (a._a, idx) if b is None else (a._a, idx, b._a if isinstance(b, ndarray) else b)
        counters.array_ops += 1
        self._f.at(*args)
        record(lambda: self._f.at(*args))

    def reduce(self, a, axis=0, dtype=None, out=None, keepdims=False):
        if not isinstance(a, ndarray):
            raise _unsupported(a)
        x, o = a._a, _out(out)
        counters.array_ops += 1
        r = self._f.reduce(x, axis=axis, dtype=dtype, out=o, keepdims=keepdims)
        if out is not None:
            record(lambda: self._f.reduce(x, axis=axis, dtype=dtype, out=o, keepdims=keepdims))
            return out
        r = _record_result(r, lambda: self._f.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims), (x,))
        return _wrap(r)

    def outer(self, a, b):
        args = self._args((a, b))
        counters.array_ops += 1
        r = self._f.outer(*args)
        r = _record_result(r, lambda: self._f.outer(*args), args)
        return _wrap(r)


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


# results whose shape depends on the data: CuPy reads a count on the host (see the module docstring)
_READS = {"nonzero": "nonzero", "flatnonzero": "flatnonzero (nonzero)", "argwhere": "argwhere (nonzero)",
          "unique": "unique (a boolean mask)", "bincount": "bincount (int(x.max()))"}
_WEAK = {"where", "clip"}  # CuPy ufuncs there: Python scalars are weak (NEP 50)
_CONCATENATING = {"concatenate", "stack", "vstack", "hstack", "column_stack"}


def _concatenate_rule(name: str, arrays, out, dtype, axis) -> None:
    """``cupy/_core/_routines_manipulation.pyx: _concatenate`` (``stack``/``vstack``/``hstack`` call it):
    more than 8 arrays, all of the output dtype and under 2 MiB each on average -> one kernel over a
    device table of pointers (+ sizes and strides unless all have the same shape and are C-contiguous),
    copied from the host; else one copy kernel per array."""
    arrays = [x for x in arrays if isinstance(x, np.ndarray)]
    n = len(arrays)
    if not n:
        return
    dt = np.dtype(out.dtype if out is not None else dtype if dtype is not None else np.result_type(*arrays))
    if n > 8 and all(x.dtype == dt for x in arrays) and sum(x.nbytes for x in arrays) < 2 * 1024 * 1024 * n:
        same = all(x.flags.c_contiguous and x.shape == arrays[0].shape for x in arrays)
        _h2d(f"cupy.{name} of {n} arrays (its table of {'pointers' if same else 'pointers, sizes and strides'})",
             1 if same else 3)
        counters.array_ops += 1
    else:
        counters.array_ops += n


def _strict_fn(name: str, np_fn: Callable) -> Callable:
    """``np_fn`` over unwrapped stand-in arrays; NumPy arrays refused; results wrapped; CuPy's transfers
    counted (and refused during capture); kept in a graph being captured."""
    first_array = name not in _FREE_FIRST
    counts = name not in _NO_WORK and name not in _CONCATENATING
    attr = "astype" if name == "where" else name  # what CuPy calls on it first
    reads = _READS.get(name)

    def f(*args, **kwargs):
        if first_array and args and not isinstance(args[0], ndarray):
            x = args[0]
            if isinstance(x, np.ndarray):
                raise _unsupported(x)
            raise AttributeError(f"cupy.{name}: '{type(x).__name__}' object has no attribute '{attr}' "
                                 f"(CuPy needs a cupy.ndarray here, got {type(x).__name__})")
        out = kwargs.pop("out", None)
        a = _unwrap(args)
        kw = {k: _unwrap(v) for k, v in kwargs.items()}
        if name in _WEAK:
            if name == "where" and len(a) == 1:
                _d2h("cupy.where(condition) (nonzero)")
            _check_weak_ints(name, a)
        if reads is not None:
            _d2h(f"cupy.{reads}")
        if name in _CONCATENATING:
            seq = a[0] if a else kw.get("arrays", kw.get("tup", ()))
            _concatenate_rule(name, list(seq), _out(out), kw.get("dtype"), kw.get("axis"))
        if counts:
            counters.array_ops += 1
        if out is not None:
            kw["out"] = _out(out)
            np_fn(*a, **kw)
            if counts or name in _CONCATENATING:
                record(lambda: np_fn(*a, **kw))
            return out
        r = np_fn(*a, **kw)
        if r is None:  # in place (put_along_axis)
            record(lambda: np_fn(*a, **kw))
        elif counts or name in _CONCATENATING:
            r = _record_result(r, lambda: np_fn(*a, **kw), (a, kw))
        return _wrap(r)
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
    x = a._a
    counters.array_ops += 1
    x.sort(axis=axis)
    record(lambda: x.sort(axis=axis))


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
    """Host data (NumPy arrays, lists, scalars) -> a device array (a host-to-device copy, refused during
    capture); a stand-in array -> a copy (or itself with ``copy=False`` when nothing changes); a list of
    stand-in arrays -> built on the device by ``concatenate`` (its rule applies)."""
    if isinstance(obj, ndarray):
        a = obj._a
        if dtype is not None and np.dtype(dtype) != a.dtype:
            r = a.astype(dtype, order=order if order != "K" else "K")
        elif not copy and (order in ("K", "A") or (order == "C" and a.flags.c_contiguous)
                           or (order == "F" and a.flags.f_contiguous)):
            if not ndmin or a.ndim >= ndmin:
                return obj
            return _new(np.array(a, copy=False, ndmin=ndmin))
        else:
            r = np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin)
        counters.array_ops += 1
        r = _record_result(r, lambda: a, ())
        return _new(r)
    if hasattr(obj, "__cuda_array_interface__") and not isinstance(obj, np.ndarray):
        raise TypeError(f"strict CuPy stand-in: cannot read foreign CUDA memory of {type(obj)}")
    if isinstance(obj, (list, tuple)) and any(isinstance(y, ndarray) for y in _flat(obj)):
        parts = [_unwrap(y) for y in obj]  # CuPy concatenates the parts on the device
        _concatenate_rule("array", [p for p in parts if isinstance(p, np.ndarray)], None, dtype, 0)
        host = np.array(parts, dtype=dtype)
        host = _record_result(host, lambda: np.array(parts, dtype=dtype), parts)
        return _new(host)
    host = np.array(obj, dtype=dtype, order=order if order != "K" else "K", ndmin=ndmin, copy=True)
    if host.dtype == object:
        raise ValueError(f"Unsupported dtype object (from {type(obj).__name__})")
    _h2d("cupy.array of host data")
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
    if not isinstance(a, ndarray):
        return array(a, dtype=dtype, copy=True, order="C")
    x = a._a
    r = np.ascontiguousarray(x, dtype=dtype)
    counters.array_ops += 1
    r = _record_result(r, lambda: x, ())
    return _new(r)


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
    d, v, w = dst._a, _unwrap(src), True if where is None else _unwrap(where)
    counters.array_ops += 1
    np.copyto(d, v, casting=casting, where=w)
    record(lambda: np.copyto(d, v, casting=casting, where=w))


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
    A, B = a._a, b._a
    if A.ndim == 0 or B.ndim == 0:
        raise ValueError("Scalar operands are not allowed, use '*' instead")
    dt = np.result_type(A.dtype, B.dtype)
    o = _out(out)
    if max(A.ndim, B.ndim) <= 2 and A.shape[-1] == B.shape[0 if B.ndim == 1 else -2] and \
            (A.size // max(A.shape[-1], 1)) * (B.size // max(B.shape[0 if B.ndim == 1 else -2], 1)) <= 1:
        # one output element (1-D dot, (1, k) @ (k, 1)): a multiply-and-sum reduction kernel, not cuBLAS
        # (cupy/_core/_routines_linalg.pyx: tensordot_core, m == 1 and n == 1)
        counters.array_ops += 1
        r = np.matmul(A, B)
        if o is not None:
            o[...] = r
            record(lambda: o.__setitem__(Ellipsis, np.matmul(A, B)))
            return out
        r = _record_result(r, lambda: np.matmul(A, B), (A, B))
        return _wrap(r)
    if _capturing():
        raise NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")
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
        if _capturing():
            raise _runtime_error(900, "cudaErrorStreamCaptureUnsupported: synchronizing the device while a stream "
                                      "captures")

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
        self._graph: "Graph | None" = None
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
        self._graph = Graph(_snapshot())
        self._capturing = True

    def end_capture(self) -> "Graph":
        """The captured graph; every buffer that existed before the capture gets its contents back (a real
        capture runs nothing; the stand-in ran the work to get shapes and fresh arrays)."""
        if not self._capturing:
            raise _runtime_error(900, "cudaErrorIllegalState: stream is not capturing")
        self._capturing = False
        g, self._graph = self._graph, None
        g._restore()
        return g

    @property
    def done(self) -> bool:
        return True

    def __eq__(self, other) -> bool:
        return isinstance(other, Stream) and other.ptr == self.ptr

    def __hash__(self) -> int:
        return hash(self.ptr)


Stream.null = Stream(null=True)


def _snapshot() -> list:
    """Every live device buffer and a copy of its contents (taken when a capture begins)."""
    out = []
    for ref, _mp in list(_owners.values()):
        root = ref()
        if root is not None and root.size and root.flags.writeable:
            out.append((ref, root.copy()))
    return out


class Graph:
    """A captured graph: the device work issued on the stream during capture, in order. ``launch`` runs
    it again on the same arrays (with the capture's scalars); no Python code of the captured step runs."""

    def __init__(self, snapshot: list | None = None) -> None:
        self._ops: list = []
        self._keep: list = []  # the buffers allocated during capture
        self._snap = snapshot or []

    def _restore(self) -> None:
        for ref, saved in self._snap:
            root = ref()
            if root is not None:
                root[...] = saved
        self._snap = []

    def launch(self, stream=None) -> None:
        if _capturing():
            raise _runtime_error(900, "cudaErrorStreamCaptureUnsupported: launching a graph into a capture is "
                                      "not emulated")
        counters.graph_launches += 1
        with np.errstate(all="ignore"):
            for op in self._ops:
                op()

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
        self._t = time.perf_counter()  # the stand-in's 'device' runs on the host: host time

    def synchronize(self) -> None:
        pass

    @property
    def done(self) -> bool:
        return True


def get_elapsed_time(start: Event, end: Event) -> float:
    if start.disable_timing or end.disable_timing:
        raise _runtime_error(6, "cudaErrorInvalidResourceHandle: event created with disable_timing")
    if not (start._recorded and end._recorded):
        raise _runtime_error(600, "cudaErrorNotReady: an event was not recorded")
    return (end._t - start._t) * 1e3


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
        Device().synchronize()

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
            p2 = re.sub(r"\b(const|__restrict__|restrict|volatile|struct)\b", " ", p).replace("*", " ")
            words = p2.replace("[]", " ").split()
            pname, ctype = words[-1], " ".join(words[:-1])
            for _ in range(4):
                ctype = typedefs.get(ctype, ctype)
            params.append((pname, ctype, ptr))
        out[m.group(1)] = params
    return out


def parse_structs(src: str) -> dict[str, int]:
    """``{struct name: size in bytes}`` for the plain structs of ``src`` (fields of the C scalar types and
    pointers, fixed-size arrays whose lengths may use integer ``#define`` constants), with C's alignment:
    what a struct kernel parameter passed by value occupies."""
    text = _strip_comments(src).replace("\\\n", " ")
    consts = {m.group(1): m.group(2) for m in re.finditer(r"^[ \t]*#define[ \t]+(\w+)[ \t]+([^\n]+)$", text, re.M)
              if "(" not in m.group(1)}
    typedefs = {m.group(2): " ".join(m.group(1).split())
                for m in re.finditer(r"typedef\s+([\w\s]+?)\s+(\w+)\s*;", text)}

    def value(expr: str) -> int:
        for _ in range(8):
            expr = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: f"({consts[m.group(0)]})" if m.group(0) in consts
                          else m.group(0), expr)
        if not re.fullmatch(r"[\d\s+\-*/()]+", expr):
            raise ValueError(f"strict CuPy stand-in: cannot size the array length {expr!r}")
        return int(eval(expr, {"__builtins__": {}}))  # digits and + - * / ( ) only

    out: dict[str, int] = {}
    for m in re.finditer(r"\bstruct\s+(\w+)\s*\{([^{}]*)\}\s*;", text):
        try:
            out[m.group(1)] = _struct_size(m.group(2), value, typedefs, out)
        except (KeyError, TypeError, ValueError):  # a field this parser cannot size: not checked
            pass
    return out


def _struct_size(body: str, value, typedefs: dict, known: dict) -> int:
    """Bytes of a struct with these fields (C layout: each field at a multiple of its size)."""
    size = align = 0
    for field in [f.strip() for f in body.split(";") if f.strip()]:
        n = 1
        for length in re.findall(r"\[([^\]]+)\]", field):
            n *= value(length)
        decl = re.sub(r"\[[^\]]*\]", "", field)
        decl = re.sub(r"\b(const|volatile|__restrict__)\b", " ", decl)
        if "*" in decl:
            item = 8
        else:
            ctype = " ".join(decl.split()[:-1])
            for _ in range(4):
                ctype = typedefs.get(ctype, ctype)
            item = known.get(ctype) or np.dtype(_C_TYPES[ctype]).itemsize
        size = -(-size // item) * item + item * n
        align = max(align, item)
    return -(-size // max(align, 1)) * max(align, 1)


# name -> reference(args: dict[param name -> flat NumPy array | NumPy scalar], grid, block) -> None
_kernel_refs: dict[str, Callable] = {}


def register_kernel(name: str, reference: Callable) -> None:
    """What launching kernel ``name`` computes, in NumPy: ``reference(args, grid, block)`` where ``args``
    maps the C parameter names to flat NumPy views of the device arrays (write results into them), to the
    NumPy scalars passed, or (struct parameters) to a copy of the one-element structured array passed."""
    _kernel_refs[name] = reference


def _options(options) -> tuple:
    if not isinstance(options, tuple):  # Cython's ``tuple options`` (cupy/_core/raw.pyx)
        raise TypeError(f"Argument 'options' has incorrect type (expected tuple, got {type(options).__name__})")
    return options


class RawKernel:
    def __init__(self, code: str, name: str, options=(), backend="nvrtc", *, translate_cucomplex=False,
                 enable_cooperative_groups=False, jitify=None, _params=None, _structs=None) -> None:
        self.code, self.name, self.options = code, name, _options(options)
        if _params is None:
            eps = parse_entry_points(code)
            if name not in eps:
                raise _driver_error_not_found(name)
            _params = eps[name]
        self._params = _params
        self._structs = parse_structs(code) if _structs is None else _structs

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
        args = tuple(args)  # CuPy iterates any sequence (cupy/cuda/function.pyx: _launch)
        if len(args) != len(self._params):
            raise TypeError(f"kernel {self.name} takes {len(self._params)} arguments "
                            f"({', '.join(p[0] for p in self._params)}), {len(args)} given")
        bound = {}
        for (pname, ctype, ptr), a in zip(self._params, args):
            bound[pname] = _kernel_arg(self.name, pname, ctype, ptr, a, self._structs)
        counters.kernel_launches += 1
        counters.kernels[self.name] = counters.kernels.get(self.name, 0) + 1
        ref = _kernel_refs.get(self.name)
        if ref is None:
            raise NotImplementedError(
                f"strict CuPy stand-in: no NumPy reference registered for kernel '{self.name}' "
                "(strict_cupy.register_kernel(name, reference))")
        ref(bound, grid, block)
        record(lambda: ref(bound, grid, block))


def _dims(d, what: str) -> tuple[int, int, int]:
    """``cupy/cuda/function.pyx: Function.__call__(tuple grid, tuple block, ...)``: tuples only, padded
    with 1s; CuPy launches ``max(1, x)`` per entry."""
    if not isinstance(d, tuple):
        raise TypeError(f"Argument '{what}' has incorrect type (expected tuple, got {type(d).__name__})")
    if not 1 <= len(d) <= 3:
        raise TypeError(f"{what} must be a tuple of 1 to 3 ints, got {d!r}")
    for x in d:
        if not isinstance(x, (int, np.integer)) or isinstance(x, bool):
            raise TypeError(f"{what} entries must be ints, got {d!r}")
    return tuple(max(1, int(x)) for x in d) + (1,) * (3 - len(d))  # type: ignore[return-value]


class CUDADriverError(RuntimeError):
    pass


def _driver_error(code: int, msg: str, what) -> CUDADriverError:
    return CUDADriverError(f"{msg} ({what})")


def _driver_error_not_found(name: str) -> CUDADriverError:
    return CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ('{name}' is not an extern \"C\" "
                           "__global__ function of this module)")


_NUMPY_ARG_MSG = ("You are trying to pass a numpy.ndarray of shape {} as a kernel parameter. Only numpy.ndarrays "
                  "of size one can be passed by value. If you meant to pass a pointer to __global__ memory, you "
                  "need to pass a cupy.ndarray instead.")  # cupy/cuda/function.pyx: _pointer


def _kernel_arg(kname: str, pname: str, ctype: str, ptr: bool, a, structs: dict | None = None):
    where = f"kernel {kname}, argument '{pname}' ({ctype}{' *' if ptr else ''})"
    want = _C_TYPES.get(ctype)
    if ptr:
        if isinstance(a, np.ndarray):
            raise TypeError(f"{where}: a NumPy array was passed; kernels take device arrays "
                            f"(Unsupported type {type(a)}; CuPy would pass its bytes as the pointer)")
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
    if isinstance(a, ndarray):
        raise TypeError(f"{where}: a device array was passed for a by-value parameter")
    if isinstance(a, np.ndarray) and a.size != 1:
        raise TypeError(f"{where}: " + _NUMPY_ARG_MSG.format(a.shape))
    if structs and ctype in structs:  # a struct by value: the bytes of a one-element NumPy array
        size = structs[ctype]
        if not isinstance(a, (np.ndarray, np.void)) or a.dtype.fields is None or a.dtype.itemsize != size:
            raise TypeError(f"{where}: pass the struct as a one-element structured NumPy array of {size} bytes "
                            f"(the struct's size), got {type(a).__name__} "
                            f"{getattr(a, 'dtype', '')} ({getattr(getattr(a, 'dtype', None), 'itemsize', '?')} bytes)")
        return np.array(a).reshape(()).copy()  # by value: the launch keeps the bytes of this moment
    if isinstance(a, np.ndarray):  # one element, passed by value: its dtype must be the parameter's
        a = a.reshape(-1)[0]
    if want is None:
        return a
    if not isinstance(a, np.generic) or a.dtype != np.dtype(want):
        got = type(a).__name__ if not isinstance(a, np.generic) else str(a.dtype)
        raise TypeError(f"{where}: got {got} {a!r}; pass numpy.{want}(...) (CuPy passes a Python int as 64 bits, "
                        "a float as double: a silent mismatch on the GPU)")
    return a


class RawModule:
    def __init__(self, *, code: str | None = None, path: str | None = None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False, name_expressions=None,
                 jitify=None) -> None:
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        if path is not None:
            with open(path, encoding="utf-8") as f:
                code = f.read()
            options, backend = (), "nvcc"
        if backend not in ("nvrtc", "nvcc"):
            raise ValueError(f"Unsupported backend {backend}")
        self.code, self.options, self.backend = code, _options(options), backend
        self._eps = parse_entry_points(code)
        self._structs = parse_structs(code)
        self.compiled = True

    def get_function(self, name: str) -> RawKernel:
        if name not in self._eps:
            raise _driver_error_not_found(name)
        return RawKernel(self.code, name, self.options, _params=self._eps[name], _structs=self._structs)


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
    args = (a._a, _index(idx), value._a if isinstance(value, ndarray) else value)
    counters.array_ops += 1
    np.add.at(*args)
    record(lambda: np.add.at(*args))


def _erf(x, out=None):
    if not isinstance(x, ndarray):
        raise _unsupported(x)
    a = x._a

    def compute():
        try:
            from scipy.special import erf as _sp_erf
            v = _sp_erf(a.astype(np.float64))
        except ImportError:  # pragma: no cover
            v = np.vectorize(math.erf, otypes=[np.float64])(a.astype(np.float64))
        return v.astype(a.dtype if a.dtype.kind == "f" else np.float64)
    counters.array_ops += 1
    r = compute()
    if out is not None:
        o = out._a
        o[...] = r
        record(lambda: o.__setitem__(Ellipsis, compute()))
        return out
    r = _record_result(r, compute, (a,))
    return _new(r)


def array_at(ptr: int, nbytes: int, dtype) -> np.ndarray:
    """The live device buffer holding ``[ptr, ptr + nbytes)``, as a flat ``dtype`` view from ``ptr`` (for
    the NumPy references of kernels that take raw pointers, e.g. in a table passed by value); a
    ValueError when no live array holds those bytes (the kernel would read freed or foreign memory)."""
    ptr, nbytes = int(ptr), int(nbytes)
    for ref, _mp in list(_owners.values()):
        root = ref()
        if root is None:
            continue
        base = int(root.__array_interface__["data"][0])
        if base <= ptr and ptr + nbytes <= base + root.nbytes:
            dt = np.dtype(dtype)
            if (ptr - base) % dt.itemsize or root.dtype.itemsize != dt.itemsize:
                raise ValueError(f"strict CuPy stand-in: pointer {ptr:#x} into a {root.dtype} buffer read as {dt}")
            return np.frombuffer((ctypes.c_char * nbytes).from_address(ptr), dtype=dt)
    raise ValueError(f"strict CuPy stand-in: pointer {ptr:#x} (+{nbytes} bytes) is not inside any live device array")


# ====================================================================================== cupy.random
class RandomState:
    """``cupy.random.RandomState``: numbers drawn on the 'device' (NumPy's generator; no transfer)."""

    def __init__(self, seed=None) -> None:
        self._rng = np.random.RandomState(seed)

    def _made(self, a) -> ndarray:
        counters.array_ops += 1
        return _new(np.asarray(a))

    def standard_normal(self, size=None, dtype=float) -> ndarray:
        return self._made(self._rng.standard_normal(size).astype(dtype))

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=float) -> ndarray:
        return self._made(self._rng.normal(loc, scale, size).astype(dtype))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float) -> ndarray:
        return self._made(self._rng.uniform(low, high, size).astype(dtype))

    def random_sample(self, size=None, dtype=float) -> ndarray:
        return self._made(self._rng.random_sample(size).astype(dtype))

    def randint(self, low, high=None, size=None, dtype=int) -> ndarray:
        return self._made(self._rng.randint(low, high, size).astype(dtype))

    rand = property(lambda self: lambda *shape: self.random_sample(shape or None))
    randn = property(lambda self: lambda *shape: self.standard_normal(shape or None))


def _random_module() -> types.ModuleType:
    m = types.ModuleType("cupy.random")
    state = [RandomState()]
    m.RandomState = RandomState
    m.seed = lambda seed=None: state.__setitem__(0, RandomState(seed))
    for name in ("standard_normal", "normal", "uniform", "random_sample", "randint", "rand", "randn"):
        setattr(m, name, (lambda name: lambda *a, **k: getattr(state[0], name)(*a, **k))(name))
    m.random = m.random_sample
    return m


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
    cp.random = _random_module()
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
    return {"cupy": cp, "cupy.random": cp.random, "cupy.cuda": cuda, "cupy.cuda.runtime": _runtime,
            "cupy.cuda.memory": memory,
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
