"""A stand-in for gpugrad's cuBLAS binding (``gpugrad/backends/cuda/cublas.py``) that runs on the CPU.

:class:`FakeCublasBinding` receives exactly the raw ``cublasGemmEx`` arguments (pointers, m, n, k,
lda/ldb/ldc, transa/transb, data and compute types, host alpha/beta pointers), rebuilds the
column-major operands from the memory behind the pointers the way BLAS reads them, checks what cuBLAS
would refuse and writes ``C = alpha op(A) op(B) + beta C`` with NumPy. Used by tests/test_cublas.py
(the row-major/column-major mapping of every GEMM) and tests/test_cuda_graphs.py (a captured step on
the strict CuPy stand-in: a GEMM issued while its stream captures is recorded in the graph, as cuBLAS's
are, and runs again at each launch)."""
from __future__ import annotations

import ctypes

import numpy as np

from gpugrad.backends.cuda import cublas as C

from . import strict_cupy

__all__ = ["FakeCublasBinding"]

_NP_OF = {C.R_16F: np.float16, C.R_32F: np.float32, C.R_64F: np.float64}
_VALID_COMPUTE = {np.float16: (C.COMPUTE_32F,), np.float32: (C.COMPUTE_32F, C.COMPUTE_32F_FAST_TF32),
                  np.float64: (C.COMPUTE_64F,)}


class FakeCublasBinding:
    """cuBLAS's GemmEx contract, executed with NumPy on the memory behind the pointers.

    ``check_extents`` (default): every pointer must lie inside a buffer given to :meth:`register`, with
    the dtype it is passed as. Off, pointers are read as raw host addresses: the strict CuPy
    stand-in's device buffers are NumPy arrays, so a step on it can run its GEMMs here unregistered.
    Either way the call order (pointer mode first, the workspace set after the stream), the types and
    the leading dimensions are checked, and every call is kept in ``calls``."""

    name = "fake"

    def __init__(self, check_extents: bool = True) -> None:
        self.check_extents = check_extents
        self.arrays: list = []
        self.calls: list = []
        self.log: list = []
        self.handles = 0

    def register(self, *arrays) -> None:
        self.arrays.extend(arrays)

    def _find(self, ptr: int, nbytes: int, dtype) -> np.ndarray:
        """The registered buffer holding [ptr, ptr + nbytes), as a flat array of ``dtype`` from ptr
        (without ``check_extents``: the memory at ``ptr``, unchecked)."""
        if not self.check_extents:
            return np.frombuffer((ctypes.c_char * nbytes).from_address(ptr), dtype=dtype)
        for a in self.arrays:
            base = a.ctypes.data
            if base <= ptr and ptr + nbytes <= base + a.nbytes:
                assert a.dtype == dtype, f"pointer into a {a.dtype} buffer passed as {np.dtype(dtype)}"
                flat = a.reshape(-1) if a.flags.c_contiguous else None
                assert flat is not None
                off = (ptr - base) // a.itemsize
                return flat[off:off + nbytes // a.itemsize]
        raise AssertionError(f"pointer {ptr:#x} (+{nbytes} bytes) is outside every known buffer")

    def create(self) -> int:
        self.handles += 1
        return 1000 + self.handles

    def set_pointer_mode(self, handle: int, mode: int) -> None:
        self.log.append(("pointer_mode", handle, mode))

    def set_stream(self, handle: int, stream: int) -> None:
        self.log.append(("stream", handle, stream))

    def set_workspace(self, handle: int, ptr: int, nbytes: int) -> None:
        self._find(ptr, nbytes, np.uint8)
        self.log.append(("workspace", handle, ptr, nbytes))

    @staticmethod
    def _scalar(ptr: int, dtype) -> float:
        dt = np.dtype(dtype)
        return float(np.frombuffer((ctypes.c_char * dt.itemsize).from_address(ptr), dtype=dt)[0])

    def _matrix(self, ptr, dtype, rows, cols, ld):
        """Column-major rows x cols with leading dimension ld, as BLAS reads it."""
        assert ld >= max(1, rows), f"leading dimension {ld} < rows {rows} (CUBLAS_STATUS_INVALID_VALUE)"
        n = ld * (cols - 1) + rows
        flat = self._find(ptr, n * np.dtype(dtype).itemsize, dtype)
        return np.lib.stride_tricks.as_strided(flat, (rows, cols), (flat.itemsize, ld * flat.itemsize))

    def gemm_ex(self, handle, transa, transb, m, n, k, alpha, a, atype, lda, b, btype, ldb, beta, c, ctype, ldc,
                compute, algo) -> None:
        assert self.log and self.log[-1][0] == "workspace", "the workspace must be set after the stream"
        assert self.log[0][:1] == ("pointer_mode",) and self.log[0][2] == C.POINTER_MODE_HOST
        assert transa in (C.OP_N, C.OP_T) and transb in (C.OP_N, C.OP_T) and algo == C.GEMM_DEFAULT
        assert atype == btype == ctype, "gpugrad's GEMMs keep one data type"
        dt = _NP_OF[atype]
        assert compute in _VALID_COMPUTE[dt], f"compute type {compute} invalid for {np.dtype(dt)}"
        sdt = np.float64 if compute == C.COMPUTE_64F else np.float32
        al, be = self._scalar(alpha, sdt), self._scalar(beta, sdt)  # host pointer mode: read at the call
        A = self._matrix(a, dt, *((m, k) if transa == C.OP_N else (k, m)), lda)
        B = self._matrix(b, dt, *((k, n) if transb == C.OP_N else (n, k)), ldb)
        Cm = self._matrix(c, dt, m, n, ldc)
        opA = A if transa == C.OP_N else A.T
        opB = B if transb == C.OP_N else B.T
        acc = np.float64 if dt == np.float64 else np.float32

        def run() -> None:
            res = al * (opA.astype(acc) @ opB.astype(acc))
            if be != 0:
                res = res + be * Cm.astype(acc)
            Cm[...] = res.astype(dt)  # as_strided view: writes into the buffer
        run()
        strict_cupy.record(run)  # on the strict CuPy stand-in's capturing stream: part of the graph
        self.calls.append(dict(transa=transa, transb=transb, m=m, n=n, k=k, lda=lda, ldb=ldb, ldc=ldc,
                               compute=compute))
