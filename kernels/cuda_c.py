"""Launchers for the CUDA C kernels in ``fused.cu`` (the ``cuda_c`` kernel set), through
``cupy.RawModule`` (compiled by NVRTC on first use, cached by CuPy on disk).

Same arguments and semantics as the Numba launchers (``bias_act.bias_act``, ``act_bias_grad.act_bias_grad``,
``softmax_xent.*``; the optimizer steps are in ``optim_step.py``) but for CuPy arrays, C-contiguous, launched on CuPy's current
stream. CuPy is imported on first use only.
"""
from __future__ import annotations

import math

import numpy as np

from . import source_path
from ._numba import grid_2d, next_pow2
from .act_bias_grad import plan
from .activations import act_code

ABG_TX, ABG_TY = 32, 8  # must match fused.cu
_modules: dict[int, object] = {}
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64", np.dtype(np.float16): "f16"}


def _compute(dt):
    return np.float64 if np.dtype(dt) == np.float64 else np.float32


def module():
    """The compiled ``fused.cu`` for the current device."""
    import cupy
    dev = cupy.cuda.runtime.getDevice()
    mod = _modules.get(dev)
    if mod is None:
        with open(source_path("fused.cu"), encoding="utf-8") as f:
            src = f.read()
        mod = cupy.RawModule(code=src, options=("--std=c++14",))
        _modules[dev] = mod
    return mod


def function(name: str, dtype):
    try:
        suf = _SUFFIX[np.dtype(dtype)]
    except KeyError:
        raise TypeError(f"fused.cu kernels take float16/float32/float64 arrays, got {dtype}") from None
    return module().get_function(f"{name}_{suf}")


def _blocks(n: int, block: int, max_blocks: int | None) -> int:
    b = max(1, math.ceil(n / block))
    return b if max_blocks is None else max(1, min(b, max_blocks))


def bias_act(z, b, y, act: str, slope: float = 0.01, write_z: bool = False, *, block: int = 256,
             max_blocks: int | None = None) -> None:
    M, N = z.shape
    if M * N == 0:
        return
    c = _compute(z.dtype)
    f = function("bias_act", z.dtype)
    grid, bx = grid_2d(M, N, block, max_blocks)
    f(grid, (bx,),
      (z, b if b is not None else z, y, np.int64(M), np.int64(N), np.int32(b is not None), np.int32(bool(write_z)),
       np.int32(act_code(act)), c(slope)))


def act_backward(dy, saved, dz, act: str, slope: float = 0.01, *, block: int = 256,
                 max_blocks: int | None = None) -> None:
    M, N = dy.shape
    if M * N == 0:
        return
    c = _compute(dy.dtype)
    f = function("act_bwd", dy.dtype)
    grid, bx = grid_2d(M, N, block, max_blocks)
    f(grid, (bx,), (dy, saved, dz, np.int64(M), np.int64(N), np.int32(act_code(act)), c(slope)))


def act_bias_grad(dy, saved, dz, db, act: str, slope: float = 0.01, *, target_blocks: int = 512) -> None:
    import cupy
    M, N = dy.shape
    do_bias = db is not None
    if M * N == 0:
        if do_bias:
            db[...] = 0
        return
    c = _compute(dy.dtype)
    col_blocks, row_blocks, rpb = plan(M, N, ABG_TX, ABG_TY, target_blocks)
    partial = cupy.empty((row_blocks, N), dtype=c) if do_bias else dy
    write_dz = dz is not None
    f = function("act_bias_grad", dy.dtype)
    f((col_blocks, row_blocks), (ABG_TX, ABG_TY),
      (dy, saved, dz if write_dz else dy, partial, np.int64(M), np.int64(N), np.int64(rpb), np.int32(write_dz),
       np.int32(do_bias), np.int32(act_code(act)), c(slope)))
    if do_bias:
        f2 = function("colsum", dy.dtype)
        f2((_blocks(N, 128, None),), (128,), (partial, db, np.int64(row_blocks), np.int64(N)))


def softmax_xent_forward(logits, target, loss, probs, ignore_index: int = -100, *, block: int | None = None,
                         max_blocks: int | None = None) -> None:
    M, C = logits.shape
    if M == 0:
        return
    bs = block or next_pow2(C)
    f = function("softmax_xent_fwd", logits.dtype)
    grid = M if max_blocks is None else max(1, min(M, max_blocks))
    f((grid,), (bs,), (logits, target, loss, probs, np.int64(M), np.int64(C), np.int64(ignore_index)))


def softmax_xent_backward(probs, target, g, d, mul: float = 1.0, ignore_index: int = -100,
                          label_smoothing: float = 0.0, *, block: int = 256, max_blocks: int | None = None) -> None:
    M, C = probs.shape
    if M * C == 0:
        return
    c = _compute(probs.dtype)
    eps = float(label_smoothing)
    f = function("softmax_xent_bwd", probs.dtype)
    grid, bx = grid_2d(M, C, block, max_blocks)
    f(grid, (bx,),
      (probs, target, g, np.int64(0 if g.shape[0] == 1 else 1), c(mul), np.int64(ignore_index), c(eps / C),
       c(1.0 - eps), d, np.int64(M), np.int64(C)))
