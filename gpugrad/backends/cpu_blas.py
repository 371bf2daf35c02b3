"""Optional MKL GEMMs for the CPU backend (the ``mkl`` package: ``install_hints.hint("mkl")``).

NumPy's wheels ship OpenBLAS. On the MLP GEMMs of ``benchmarks/mlp_cpu.py`` case (a), timed alone
on 2 cores, OpenBLAS took 32.6 ms where MKL through this module took 25.8 ms. In whole training
steps the gain was within that VM's noise, and many small GEMMs (case (b)) were slower, so this is
opt-in: when Intel's ``mkl`` wheel is installed, the fused linear layer calls MKL's ``cblas_?gemm``
through ctypes on the NumPy arrays (no copies: transposes become GEMM flags). ``GPUGRAD_BLAS=numpy``
forces NumPy's BLAS."""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys

import numpy as np

from ..install_hints import hint

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_state: dict = {}


def _find_mkl() -> str | None:
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable)))):
        hits = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if hits:
            return hits[0]
    return ctypes.util.find_library("mkl_rt")


def load():
    """The MKL GEMM functions ``{dtype: cblas_?gemm}``, or None (not installed or disabled)."""
    if "fns" in _state:
        return _state["fns"]
    fns = None
    choice = os.environ.get("GPUGRAD_BLAS", "auto").lower()
    if choice not in ("auto", "mkl", "numpy"):
        raise ValueError(f"GPUGRAD_BLAS must be 'auto', 'mkl' or 'numpy', got {choice!r}")
    path = _find_mkl() if choice != "numpy" else None
    if path:
        # Intel OpenMP's workers spin 200 ms after each GEMM by default and then fight the main thread's
        # fused passes for the cores; measured 38-51 ms vs 28-39 ms per step with KMP_BLOCKTIME=0 (case (a)
        # of benchmarks/mlp_cpu.py, 2 cores). Set before the runtime starts; a user's own setting wins.
        os.environ.setdefault("KMP_BLOCKTIME", "0")
        try:
            lib = ctypes.CDLL(path)
            fns = {}
            for dt, name, scalar in ((np.dtype(np.float32), "cblas_sgemm", ctypes.c_float),
                                     (np.dtype(np.float64), "cblas_dgemm", ctypes.c_double)):
                f = getattr(lib, name)
                f.restype = None
                i, p = ctypes.c_int, ctypes.c_void_p
                f.argtypes = [i, i, i, i, i, i, scalar, p, i, p, i, scalar, p, i]
                fns[dt] = f
            _state["path"] = path
        except (OSError, AttributeError) as e:
            fns = None
            _state["error"] = str(e)
    if choice == "mkl" and fns is None:
        raise RuntimeError("GPUGRAD_BLAS=mkl but libmkl_rt could not be loaded "
                           f"({_state.get('error', 'not found')}); {hint('mkl')}, or unset GPUGRAD_BLAS")
    _state["fns"] = fns
    return fns


def provider() -> str:
    """Which BLAS the CPU backend's fused linear layer uses: 'mkl (<path>)' or 'numpy (<name>)'."""
    if load():
        return f"mkl ({_state['path']})"
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"numpy ({cfg.get('name', '?')} {cfg.get('version', '')})".strip()
    except Exception:
        return "numpy"


def gemm(a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool, out: np.ndarray | None = None) -> np.ndarray | None:
    """``op(a) @ op(b)`` with MKL for C-contiguous 2-D float32/float64 ``a``, ``b`` of one dtype (into
    ``out``, C-contiguous, when given); ``None`` when MKL is absent or the arrays do not qualify (the
    caller then uses NumPy)."""
    fns = load()
    if fns is None or a.dtype != b.dtype or a.ndim != 2 or b.ndim != 2:
        return None
    f = fns.get(a.dtype)
    if f is None or not (a.flags.c_contiguous and b.flags.c_contiguous):
        return None
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb or m == 0 or n == 0 or k == 0:
        return None
    c = np.empty((m, n), a.dtype) if out is None else out
    if c.shape != (m, n) or c.dtype != a.dtype or not c.flags.c_contiguous:
        return None
    f(_ROW_MAJOR, _TRANS if trans_a else _NO_TRANS, _TRANS if trans_b else _NO_TRANS, m, n, k, 1.0,
      a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], 0.0, c.ctypes.data, n)
    return c
