"""Host cost of one capturable GEMM call (gpugrad/backends/cuda/cublas.py), measurable without a GPU:

    python benchmarks/gemm_binding_host.py [--calls 200000]

A stand-in ``libcublas`` whose ``cublasGemmEx`` etc. return 0 at once is compiled with the C compiler
(cc/gcc) and loaded through the real ctypes binding, so the figures are the Python + ctypes cost of
the call, not cuBLAS's own (a few microseconds more on a GPU; ``mlp_gpu_fast.py --cases gemm`` times
the whole thing there). Rows: the bare ctypes ``cublasGemmEx`` call (19 arguments); the whole
``CublasGemm.matmul`` (mapping, checks, output allocation, call) with the ctypes binding; the same with
a pure-Python no-op binding (gpugrad's layer alone). For comparison, ``numpy.matmul`` of 1x1 arrays
(the cost of one minimal Python-level array call on this machine). Nothing is written."""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpugrad import benchmarking as bm  # noqa: E402
from gpugrad.backends.cuda import cublas as C  # noqa: E402

STUB = r"""
#include <stddef.h>
int cublasCreate_v2(void** h) { *h = (void*)0x1; return 0; }
int cublasSetStream_v2(void* h, void* s) { return 0; }
int cublasSetWorkspace_v2(void* h, void* w, size_t n) { return 0; }
int cublasSetPointerMode_v2(void* h, int m) { return 0; }
int cublasGemmEx(void* h, int ta, int tb, int m, int n, int k, const void* al, const void* a, int at, int lda,
                 const void* b, int bt, int ldb, const void* be, void* c, int ct, int ldc, int ct2, int algo) {
  return 0;
}
"""


class _DevArray:
    """What ``CublasGemm.matmul`` reads of a CuPy array (shape, dtype, flags, ``data.ptr``), so the
    figures carry CuPy's cheap pointer access rather than NumPy's slower ``__array_interface__``."""

    def __init__(self, a: np.ndarray) -> None:
        self.shape, self.dtype, self.ndim, self.size, self.flags = a.shape, a.dtype, a.ndim, a.size, a.flags
        self.data = type("Mem", (), {"ptr": a.ctypes.data})()
        self.T = None


class _NoOp:
    name = "noop"

    def create(self):
        return 1

    def set_stream(self, *a):
        pass

    def set_workspace(self, *a):
        pass

    def set_pointer_mode(self, *a):
        pass

    def gemm_ex(self, *a):
        pass


def _per_call_us(fn, calls: int) -> float:
    """Best of 3 timed loops of ``calls`` calls (after one untimed loop), in microseconds per call."""
    def loop():
        for _ in range(calls):
            fn()
    return bm.min_time(loop, 3, sync=lambda: None) / calls * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200000)
    args = ap.parse_args(argv)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        print("gemm_binding_host: no C compiler (cc/gcc) to build the stand-in libcublas; nothing measured")
        return 0
    with tempfile.TemporaryDirectory() as d:
        src, lib = os.path.join(d, "stub.c"), os.path.join(d, "libstubcublas.so")
        with open(src, "w") as f:
            f.write(STUB)
        subprocess.run([cc, "-O2", "-shared", "-fPIC", src, "-o", lib], check=True)
        bind = C.CtypesBinding(ctypes.CDLL(lib))
        x, w = np.ones((256, 512), np.float32), np.ones((512, 512), np.float32)
        one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
        px, pw, p1, p0 = x.ctypes.data, w.ctypes.data, one.ctypes.data, zero.ctypes.data
        g_ct = C.CublasGemm(bind, np, workspace_bytes=64)
        g_no = C.CublasGemm(_NoOp(), np, workspace_bytes=64)
        out = np.empty((256, 512), np.float32)
        dx, dw, dout = _DevArray(x), _DevArray(w), _DevArray(out)
        a1 = np.ones((1, 1))
        rows = [
            ("ctypes cublasGemmEx call alone", lambda: bind.gemm_ex(1, 1, 0, 512, 256, 512, p1, pw, 0, 512, px, 0, 512,
                                                                  p0, px, 0, 512, 68, -1)),
            ("CublasGemm.matmul, ctypes binding", lambda: g_ct.matmul(dx, dw, False, True, out=dout, stream=5)),
            ("CublasGemm.matmul, no-op binding", lambda: g_no.matmul(dx, dw, False, True, out=dout, stream=5)),
            ("numpy.matmul of 1x1 arrays (reference)", lambda: np.matmul(a1, a1)),
        ]
        print(f"host microseconds per call (best of 3 x {args.calls} calls), Python {sys.version.split()[0]}:")
        for name, fn in rows:
            print(f"  {name:<42} {_per_call_us(fn, args.calls):7.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
