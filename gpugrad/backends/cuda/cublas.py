"""Capturable cuBLAS GEMMs for the linear layer, through a binding that allows stream capture.

Why: CuPy's cuBLAS wrappers (``cupy.matmul`` and the low-level ``cupy_backends.cuda.libs.cublas``
alike) call ``setStream`` before every cuBLAS call, and CuPy's ``setStream`` raises
``NotImplementedError("calling cuBLAS API during stream capture is currently unsupported")`` when the
stream is being captured. cuBLAS itself captures GEMMs fine (CUDA >= 11.5; cuBLAS docs, "CUDA
Graphs Support") provided the handle's stream is set and it has a fixed user workspace, so nothing
is allocated during capture. So gpugrad keeps its own cuBLAS handles (per thread and device, as CuPy
keeps its own, each with a fixed workspace; in the backend's per-device state) and calls
``cublasGemmEx`` through one of two bindings:

- ``nvmath``: nvmath-python's low-level ``nvmath.bindings.cublas`` (Cython, about as cheap per call as
  CuPy's own wrapper; needs ``pip install nvmath-python``, whose only runtime dependencies -
  cuda-bindings, cuda-core, cuda-pathfinder - CuPy 14 images already have). Preferred.
- ``ctypes``: ``cublasGemmEx`` from the libcublas CuPy already loaded, through ``ctypes`` (no extra
  package; a few microseconds more host time per GEMM for the 19-argument conversion). Only the
  ``libcublas.so.<major>`` of CuPy's CUDA major is ever loaded, never another major's.

Host cost per GEMM call, measured on the CPU build machine against stand-in libraries whose
functions return at once (so cuBLAS's own work is not included): ``nvmath`` ``gemm_ex`` 0.49 us,
``ctypes`` ``cublasGemmEx`` 4.3 us, gpugrad's mapping/checks around either 2.5 us
(``benchmarks/gemm_binding_host.py``; the nvmath figure by the same stub loaded through
``cuda.pathfinder`` with a stub ``libcuda.so.1``). Inside a replayed graph neither costs anything.

Rejected: CuPy's low-level wrapper (refuses capture, as above); cuBLASLt through
``nvmath.linalg.advanced.Matmul`` (a plan object per shape, tens of microseconds of Python per
``execute``, and it manages its own workspace: heavier and no faster for plain GEMMs; gpugrad uses it
only for the opt-in epilogues in ``epilogue.py``).

When: ``set_gemm_path("auto")`` (default) routes the linear layer's GEMMs here only inside
``gg.cuda.graphed_step`` (its warm-up steps and its capture, so the replayed graph runs the very
calls the warm-up checked); eager code keeps ``cupy.matmul``. ``set_gemm_path("cublas")`` (or
``GPUGRAD_GEMM_PATH=cublas``) uses this path always, once a GPU has shown it is no slower
(``benchmarks/mlp_gpu_fast.py --cases gemm``). ``GPUGRAD_CUBLAS_BINDING=nvmath|ctypes`` picks a
binding (default: the first of nvmath, ctypes that works: each is probed - library loaded, a real
symbol called, a handle created, cuBLAS major equal to CuPy's - before it is chosen).

Row-major onto column-major: a C-contiguous (r, c) array is, to cuBLAS, the column-major (c, r)
matrix: its transpose. So the row-major product ``out = op(a) @ op(b)`` (M x N) is computed as the
column-major ``out^T = op(b)^T @ op(a)^T``: cuBLAS's A is ``b`` and its B is ``a``, ``m = N``,
``n = M``, and every leading dimension is the stored row length. :func:`plan` does this mapping;
``tests/test_cublas.py`` checks it for every GEMM of the linear layer against a fake binding that
performs the BLAS call with NumPy from the raw arguments."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .state import runtime

__all__ = ["GemmArgs", "plan", "compute_type", "CublasGemm", "set_gemm_path", "get_gemm_path", "active",
           "forced", "get", "binding", "NvmathBinding", "CtypesBinding", "CublasError", "OP_N", "OP_T"]

# cublasOperation_t, cudaDataType_t, cublasComputeType_t, cublasGemmAlgo_t, cublasPointerMode_t
OP_N, OP_T = 0, 1
R_32F, R_64F, R_16F = 0, 1, 2
COMPUTE_32F, COMPUTE_64F, COMPUTE_32F_FAST_TF32 = 68, 70, 77
GEMM_DEFAULT = -1
POINTER_MODE_HOST = 0
WORKSPACE_BYTES = 32 * 1024 * 1024  # NVIDIA's recommendation for Hopper (cuBLAS docs, cublasSetWorkspace)

DATA_TYPES = {np.dtype(np.float16): R_16F, np.dtype(np.float32): R_32F, np.dtype(np.float64): R_64F}


class CublasError(RuntimeError):
    """A cuBLAS call returned an error status."""


# ---------------------------------------------------------------------------------------- mapping
@dataclass(frozen=True)
class GemmArgs:
    """The column-major ``cublasGemmEx`` arguments for one row-major product: cuBLAS's ``A`` is the
    row-major right operand, its ``B`` the left one."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int


@functools.lru_cache(maxsize=1024)
def plan(a_shape: tuple, b_shape: tuple, trans_a: bool, trans_b: bool) -> tuple[GemmArgs, tuple[int, int]]:
    """``(args, out_shape)`` for ``out = op(a) @ op(b)`` with ``a``/``b`` C-contiguous 2-D arrays of
    these shapes (``op(a) = a.T`` if ``trans_a``). Cached: a training step repeats its shapes."""
    (ra, ca), (rb, cb) = a_shape, b_shape
    M, K = (ca, ra) if trans_a else (ra, ca)
    K2, N = (cb, rb) if trans_b else (rb, cb)
    if K != K2:
        raise ValueError(f"cublas.gemm: inner dimensions differ: op(a) is ({M}, {K}) (a {tuple(a_shape)}, "
            f"{'transposed' if trans_a else 'as stored'}) and op(b) is ({K2}, {N}) (b {tuple(b_shape)}, "
            f"{'transposed' if trans_b else 'as stored'}). Fix: pass operands whose inner dimensions match.")
    args = GemmArgs(transa=OP_T if trans_b else OP_N, transb=OP_T if trans_a else OP_N, m=N, n=M, k=K,
                    lda=max(1, cb), ldb=max(1, ca), ldc=max(1, N))
    return args, (M, N)


@functools.lru_cache(maxsize=64)
def compute_type(dtype: Any, tf32: bool) -> tuple[int, np.dtype]:
    """``(cublasComputeType_t, dtype of alpha/beta)``: float64 -> 64F; float32 -> 32F (FAST_TF32 when
    ``tf32``); float16 -> 32F (float32 accumulation, as PyTorch and ``cupy.matmul`` do)."""
    dt = np.dtype(dtype)
    if dt == np.float64:
        return COMPUTE_64F, np.dtype(np.float64)
    if dt == np.float32:
        return (COMPUTE_32F_FAST_TF32 if tf32 else COMPUTE_32F), np.dtype(np.float32)
    if dt == np.float16:
        return COMPUTE_32F, np.dtype(np.float32)
    raise TypeError(f"cublas.gemm: dtype {dt} is not supported (float16, float32, float64). "
                      "Fix: cast the operands to a floating dtype.")


def _ptr(a) -> int:
    """Device pointer of a CuPy array; host address of a NumPy array (the CPU tests' fake binding)."""
    try:
        return a.data.ptr
    except AttributeError:
        return a.__array_interface__["data"][0]


# ---------------------------------------------------------------------------------------- bindings
MAJOR_VERSION = 0  # libraryPropertyType_t: cublasGetProperty(MAJOR_VERSION, &v)


def cuda_major() -> int:  # pragma: no cover - needs CuPy
    """The CUDA major version CuPy runs (its runtime): the only cuBLAS major gpugrad may load next to it."""
    import cupy
    return int(cupy.cuda.runtime.runtimeGetVersion()) // 1000


def _same_major(what: str, got: int, major: int) -> None:
    if int(got) != int(major):
        raise RuntimeError(f"cublas: {what} is cuBLAS {got}.x, but CuPy runs CUDA {major}.x; two CUDA majors' "
                           f"libraries in one process are not supported. Fix: install the CUDA {major} build of it.")


class NvmathBinding:
    """``nvmath.bindings.cublas``: raises ``nvmath``'s cuBLASError on a bad status. nvmath resolves its
    cuBLAS symbols lazily, at the first call, so an importable nvmath may still be unusable (a cu12 build
    under CUDA 13): the constructor calls into it (``cublasGetProperty``, which loads the library, and a
    handle created and destroyed) and checks the major version before the binding is chosen."""

    name = "nvmath"

    def __init__(self, major: int | None = None) -> None:
        from nvmath.bindings import cublas as nb
        major = cuda_major() if major is None else major
        _same_major("nvmath-python's cuBLAS", nb.get_property(MAJOR_VERSION), major)
        nb.destroy(nb.create())
        self.create = nb.create
        self.set_stream = nb.set_stream
        self.set_workspace = nb.set_workspace
        self.set_pointer_mode = nb.set_pointer_mode
        self.gemm_ex = nb.gemm_ex


def _load_libcublas(major: int, loader: Any = ctypes.CDLL) -> Any:
    """The libcublas of CUDA ``major`` (CuPy's): the copy CuPy already loaded (found by its versioned name
    without loading anything, ``RTLD_NOLOAD``), else ``libcublas.so.<major>`` from the system search.
    Never another major's library, and never the unversioned ``libcublas.so``. ``loader(name, mode=...)``
    is ``ctypes.CDLL`` (tests pass a stand-in)."""
    name = f"libcublas.so.{int(major)}"
    tried = []
    for mode, how in ((getattr(os, "RTLD_NOLOAD", 4) | ctypes.RTLD_LOCAL, "already loaded (CuPy's)"),
                      (ctypes.RTLD_LOCAL, "system search")):
        try:
            return loader(name, mode=mode)
        except OSError as e:
            tried.append(f"{name} {how}: {e}")
    raise RuntimeError("cublas: could not load cuBLAS " + str(major) + " (" + "; ".join(tried) + "). Fix: install "
                       f"the CUDA {major} libraries CuPy uses (e.g. `pip install \"cupy-cuda{major}x[ctk]\"`) or "
                       "nvmath-python.")


class CtypesBinding:
    """``cublasGemmEx`` and friends from libcublas through ``ctypes``. ``lib``: a loaded library (the
    host-cost benchmark's stand-in) instead of CuPy's cuBLAS (see :func:`_load_libcublas`); with
    ``major`` the library's own ``cublasGetProperty`` must report it."""

    name = "ctypes"

    def __init__(self, lib: Any = None, major: int | None = None, loader: Any = ctypes.CDLL) -> None:
        if lib is None:
            major = cuda_major() if major is None else major
            lib = _load_libcublas(major, loader)
        vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t

        def fn(name, *argtypes):
            f = getattr(lib, name)
            f.argtypes, f.restype = list(argtypes), ctypes.c_int
            return f
        self._create = fn("cublasCreate_v2", ctypes.POINTER(vp))
        self._stream = fn("cublasSetStream_v2", vp, vp)
        self._ws = fn("cublasSetWorkspace_v2", vp, vp, sz)
        self._pm = fn("cublasSetPointerMode_v2", vp, i)
        self._gemm = fn("cublasGemmEx", vp, i, i, i, i, i, vp, vp, i, i, vp, i, i, vp, vp, i, i, i, i)
        if major is not None:
            v = ctypes.c_int(-1)
            self._check(fn("cublasGetProperty", i, ctypes.POINTER(i))(MAJOR_VERSION, ctypes.byref(v)),
                        "cublasGetProperty")
            _same_major("the loaded libcublas", v.value, major)
            destroy = fn("cublasDestroy_v2", vp)
            self._check(destroy(self.create()), "cublasDestroy")

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise CublasError(f"cublas: {what} returned status {status} (cublasStatus_t)")

    def create(self) -> int:
        h = ctypes.c_void_p()
        self._check(self._create(ctypes.byref(h)), "cublasCreate")
        return int(h.value or 0)

    def set_stream(self, handle: int, stream: int) -> None:
        self._check(self._stream(handle, stream), "cublasSetStream")

    def set_workspace(self, handle: int, ptr: int, nbytes: int) -> None:
        self._check(self._ws(handle, ptr, nbytes), "cublasSetWorkspace")

    def set_pointer_mode(self, handle: int, mode: int) -> None:
        self._check(self._pm(handle, mode), "cublasSetPointerMode")

    def gemm_ex(self, handle, transa, transb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c, ctype, ldc,
                compute, algo) -> None:
        self._check(self._gemm(handle, transa, transb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c,
                               ctype, ldc, compute, algo), "cublasGemmEx")


BINDINGS = {"nvmath": NvmathBinding, "ctypes": CtypesBinding}


def binding():
    """The process's binding (``GPUGRAD_CUBLAS_BINDING``: ``nvmath``, ``ctypes`` or ``auto``), chosen once
    per runtime state. ``auto`` takes the first that works: each is probed (library loaded, a real
    symbol called, a handle created, its cuBLAS major equal to CuPy's CUDA major) before it is chosen."""
    rt = runtime()
    if rt.binding is not None:
        return rt.binding
    want = os.environ.get("GPUGRAD_CUBLAS_BINDING", "auto").strip().lower()
    if want not in ("auto", "nvmath", "ctypes"):
        raise ValueError(f"cublas: GPUGRAD_CUBLAS_BINDING must be auto, nvmath or ctypes, got {want!r}")
    errors = []
    major = cuda_major()
    try:  # CuPy loads its cuBLAS with its first handle: the ctypes binding then finds that very library
        import cupy
        cupy.cuda.device.get_cublas_handle()
    except Exception:  # pragma: no cover - the bindings' own errors say more
        pass
    for kind in (("nvmath", "ctypes") if want == "auto" else (want,)):
        try:
            rt.binding = BINDINGS[kind](major=major)
            return rt.binding
        except Exception as e:
            errors.append(f"{kind}: {type(e).__name__}: {e}")
    raise RuntimeError("cublas: no capturable cuBLAS binding (" + "; ".join(errors) + "). Fix: `pip "
                      "install nvmath-python` (its build for CuPy's CUDA major) next to CuPy, or make CuPy's "
                      "libcublas loadable for the ctypes binding.")


# ---------------------------------------------------------------------------------------- GEMMs
class CublasGemm:
    """One cuBLAS handle with a fixed workspace (``xp`` array, kept alive here), host pointer mode and
    cached alpha/beta scalars. ``matmul`` computes row-major ``op(a) @ op(b)`` on ``stream``."""

    def __init__(self, bind: Any, xp: Any, workspace_bytes: int = WORKSPACE_BYTES) -> None:
        self.binding = bind
        self.xp = xp
        self.handle = bind.create()
        bind.set_pointer_mode(self.handle, POINTER_MODE_HOST)
        self.workspace = xp.empty((workspace_bytes,), dtype=np.uint8)
        self.stream: int | None = None
        self._keep = [(np.ones(1, t), np.zeros(1, t)) for t in (np.float32, np.float64)]  # host alpha/beta
        self._scalars = {np.dtype(o.dtype): (o.ctypes.data, z.ctypes.data) for o, z in self._keep}

    def set_stream(self, stream: int) -> None:
        """Point the handle at ``stream``. cublasSetStream resets the workspace to cuBLAS's own pool,
        so the fixed workspace is set again after it (nothing may be allocated during capture)."""
        if stream != self.stream:
            self.binding.set_stream(self.handle, stream)
            self.binding.set_workspace(self.handle, _ptr(self.workspace), int(self.workspace.nbytes))
            self.stream = stream

    def matmul(self, a, b, trans_a: bool = False, trans_b: bool = False, out=None, *, stream: int = 0,
               tf32: bool = False):
        """``out = op(a) @ op(b)`` (2-D, one floating dtype); ``out`` C-contiguous if given."""
        if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or a.dtype not in DATA_TYPES:
            raise TypeError(f"cublas.gemm: need two 2-D arrays of one dtype among float16/32/64, got "
                              f"{a.dtype}{tuple(a.shape)} and {b.dtype}{tuple(b.shape)}")
        a, trans_a = self._c_order(a, trans_a)
        b, trans_b = self._c_order(b, trans_b)
        args, shape = plan(a.shape, b.shape, trans_a, trans_b)
        if out is None:
            out = self.xp.empty(shape, dtype=a.dtype)
        elif tuple(out.shape) != shape or out.dtype != a.dtype or not out.flags.c_contiguous:
            raise ValueError(f"cublas.gemm: out must be a C-contiguous {a.dtype} array of shape {shape}, "
                              f"got {out.dtype}{tuple(out.shape)}")
        if out.size == 0:
            return out
        if args.k == 0:
            out.fill(0)
            return out
        comp, sdt = compute_type(a.dtype, tf32)
        one, zero = self._scalars[sdt]
        dt = DATA_TYPES[a.dtype]
        self.set_stream(stream)
        self.binding.gemm_ex(self.handle, args.transa, args.transb, args.m, args.n, args.k, one,
                             _ptr(b), dt, args.lda, _ptr(a), dt, args.ldb, zero,
                             _ptr(out), dt, args.ldc, comp, GEMM_DEFAULT)
        return out

    def _c_order(self, a, trans: bool):
        """A C-contiguous array and flag for ``op(a)``: an F-contiguous array is its C-contiguous
        transpose with the flag flipped (no copy); anything else is copied."""
        if a.flags.c_contiguous:
            return a, trans
        if a.flags.f_contiguous:
            return a.T, not trans
        return self.xp.ascontiguousarray(a), trans


# ---------------------------------------------------------------------------------------- switch
_PATHS = ("auto", "cublas")
_path = [os.environ.get("GPUGRAD_GEMM_PATH", "auto").strip().lower()]
_forced = [0]


def set_gemm_path(path: str) -> None:
    """``"auto"``: ``cupy.matmul`` eagerly, the capturable binding inside ``graphed_step``;
    ``"cublas"``: the capturable binding for every linear-layer GEMM."""
    if path not in _PATHS:
        raise ValueError(f"set_gemm_path: path must be one of {_PATHS}, got {path!r}")
    _path[0] = path


def get_gemm_path() -> str:
    return _path[0] if _path[0] in _PATHS else "auto"


def active() -> bool:
    """Whether the linear layer's GEMMs go through this module now."""
    return bool(_forced[0]) or _path[0] == "cublas"


@contextlib.contextmanager
def forced() -> Iterator[None]:
    """Inside: every linear-layer GEMM goes through this module (``graphed_step`` wraps its warm-up
    and capture in it)."""
    _forced[0] += 1
    try:
        yield
    finally:
        _forced[0] -= 1


def get(state: Any, xp: Any) -> CublasGemm:  # pragma: no cover - needs a GPU
    """This thread's handle on ``state``'s device (a backend's per-device state), created on first use
    inside that device, with its workspace from the current memory pool. Handles are per thread and
    device, as CuPy keeps its own: one thread setting a handle's stream must not race another's GEMM."""
    def make() -> CublasGemm:
        import cupy
        with cupy.cuda.Device(state.index):
            return CublasGemm(binding(), xp)
    return state.cublas_handle(make)
