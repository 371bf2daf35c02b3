"""Lazy Numba CUDA plumbing shared by the kernel modules, and what the CUDA C launchers share with it:
the table of float storage dtypes (:func:`compute_dtype`, :func:`storage_suffix`) and launch geometry
(:func:`blocks_for`, :func:`grid_2d`).

Nothing here touches ``numba.cuda`` (or a GPU) at import time: kernels are built by factories on
first use and cached per (kernel, compute dtype, compile-time constants). Under
``NUMBA_ENABLE_CUDASIM=1`` the same factories give simulator kernels that run on NumPy arrays.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable

import numpy as np

_cache: dict[tuple, Any] = {}


def nb_cuda(module_globals: dict | None = None):
    """``numba.cuda`` (imported on first use). With ``module_globals``, also bind it there as ``cuda``:
    kernels must reach ``cuda`` as a module global (the simulator swaps globals, not closure cells)."""
    from numba import cuda
    if module_globals is not None:
        module_globals["cuda"] = cuda
    return cuda


def simulating() -> bool:
    """True when kernels run in Numba's CUDA simulator."""
    try:
        from numba import config
        return bool(config.ENABLE_CUDASIM)
    except Exception:  # pragma: no cover
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


# Storage dtype -> (compute dtype, kernel name suffix): the one table of the kernels' float types.
# float16 storage computes in float32; ``fused.cu`` and the generated optimizer entry points are named
# ``<kernel>_f16``, ``_f32``, ``_f64``.
_FLOAT_DTYPES = {np.dtype(np.float64): (np.dtype(np.float64), "f64"),
                 np.dtype(np.float32): (np.dtype(np.float32), "f32"),
                 np.dtype(np.float16): (np.dtype(np.float32), "f16")}


def _float_dtype(dt, what: str) -> tuple:
    e = _FLOAT_DTYPES.get(dt)  # dtype objects hit here; ``np.float32`` (the type) or names go on
    if e is None:
        e = _FLOAT_DTYPES.get(np.dtype(dt))
        if e is None:
            raise TypeError(f"{what} support float16, float32 and float64 arrays, got {np.dtype(dt)}")
    return e


def compute_dtype(dt) -> np.dtype:
    """The dtype kernels compute and accumulate in: float32 for float16/float32, float64 for float64."""
    return _float_dtype(dt, "kernels")[0]


def storage_suffix(dt, what: str = "kernels") -> str:
    """The name suffix of a CUDA C kernel for storage dtype ``dt``: ``"f16"``, ``"f32"`` or ``"f64"``
    (``what``: the kernels, for the error on any other dtype)."""
    return _float_dtype(dt, what)[1]


def nb_type(dt):
    """The Numba scalar type of a NumPy dtype (``numba.float32``...)."""
    import numba
    return numba.from_dtype(np.dtype(dt))


def cached(key: tuple, build: Callable[[], Any]) -> Any:
    """Build once per key (kernels compile lazily on their first launch)."""
    k = _cache.get(key)
    if k is None:
        k = build()
        _cache[key] = k
    return k


def blocks_for(n: int, block: int, max_blocks: int | None = None) -> int:
    """Blocks for ``n`` items at ``block`` threads each (grid-stride loops cover the rest)."""
    b = max(1, math.ceil(n / block)) if n > 0 else 1
    if max_blocks is not None:
        b = max(1, min(b, int(max_blocks)))
    return b


@functools.lru_cache(maxsize=4096)  # launch configurations: computed once per shape, not per launch
def grid_2d(n_rows: int, n_cols: int, block: int = 256, max_blocks: int | None = None):
    """Launch shape for the column-tile x row-stride layout of the elementwise kernels: threads of a
    block take consecutive columns (coalesced), blocks in y stride over rows (a per-column value such
    as the bias stays in a register). Returns ``((grid_x, grid_y), block_x)``."""
    bx = int(block)
    while bx > 32 and bx // 2 >= n_cols:
        bx //= 2
    gx = max(1, math.ceil(n_cols / bx))
    cap = 65535 if max_blocks is None else max(1, min(65535, int(max_blocks) // gx))
    gy = max(1, min(n_rows, cap))
    return (gx, gy), bx


def launch(kernel, grid, block, stream, *args) -> None:
    """``kernel[grid, block, stream](*args)``; ``stream=None`` launches on Numba's default stream."""
    if stream is None or simulating():
        kernel[grid, block](*args)
    else:
        kernel[grid, block, stream](*args)


def stand_in(a, ndim: int):
    """An argument for an array parameter the kernel will not touch, typed like ``a`` with ``ndim``
    dimensions. Device arrays may alias freely (``a`` itself, or a view); a NumPy array is copied to the
    device and back per argument, so a host alias of a written array would be overwritten by its stale
    copy: a fresh tiny array is used instead."""
    if isinstance(a, np.ndarray):
        return np.zeros((1,) * ndim, a.dtype)
    while a.ndim > ndim:
        a = a[0]
    return a


def is_host(a) -> bool:
    """NumPy arrays are copied in and out per kernel argument (simulator, or Numba's auto-transfer)."""
    return isinstance(a, np.ndarray)


def same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Two NumPy arrays that view exactly the same elements."""
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.shape == b.shape
            and a.strides == b.strides)


def next_pow2(n: int, lo: int = 32, hi: int = 256) -> int:
    """Smallest power of two >= n, clamped to [lo, hi]."""
    p = lo
    while p < n and p < hi:
        p *= 2
    return p
