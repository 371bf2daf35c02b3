"""Launchers for the CUDA C kernels in ``fused.cu`` (the ``cuda_c`` kernel set), through
``cupy.RawModule`` (compiled by NVRTC on first use, cached by CuPy on disk).

Same arguments and semantics as the Numba launchers (``bias_act.bias_act``, ``act_bias_grad.act_bias_grad``,
``softmax_xent.*``; the optimizer steps are in ``optim_step.py``) but for CuPy arrays, C-contiguous, launched on CuPy's current
stream. CuPy is imported on first use only.
"""
from __future__ import annotations

import numpy as np

from . import source_path
from ._numba import blocks_for, compute_dtype, grid_2d, next_pow2, storage_suffix
from .act_bias_grad import plan
from .activations import act_code, cuda_source, kernel_params

ABG_TX, ABG_TY = 32, 8  # must match fused.cu
_modules: dict[int, object] = {}


def module():
    """The compiled ``fused.cu`` for the current device."""
    import cupy
    dev = cupy.cuda.runtime.getDevice()
    mod = _modules.get(dev)
    if mod is None:
        mod = cupy.RawModule(code=cuda_source(source_path("fused.cu")), options=("--std=c++14",))
        _modules[dev] = mod
    return mod


_runtime: list = []  # [cupy.cuda.runtime.getDevice], bound on first use


def function(name: str, dtype):
    """The kernel ``{name}_{f16|f32|f64}`` of the current device (not cached here: the launch plans
    that call this keep the handle)."""
    return module().get_function(f"{name}_{storage_suffix(dtype, f'fused.cu kernels ({name})')}")


# Launch plans: (op, device, dtype, shape and parameters) -> (kernel handle, grid, block, trailing scalar
# arguments), computed once per key instead of per launch (grid sizes, NumPy scalars, activation codes).
_plans: dict[tuple, tuple] = {}
_MAX_PLANS = 4096  # many distinct shapes (variable batch sizes): start over rather than grow without bound


def _plan(key: tuple, make) -> tuple:
    ent = _plans.get(key)
    if ent is None:
        if len(_plans) >= _MAX_PLANS:
            _plans.clear()
        ent = _plans[key] = make()
    return ent


def _device() -> int:
    if not _runtime:
        import cupy
        _runtime.append(cupy.cuda.runtime.getDevice)
    return _runtime[0]()


def _prm(act: str, params, dt) -> tuple:
    """The kernels' trailing parameter arguments (``GG_ACT_PARAMS``) in the compute type of ``dt``."""
    c = compute_dtype(dt).type
    return tuple(c(p) for p in kernel_params(act, params))


def bias_act(z, b, y, act: str, params=None, write_z: bool = False, *, block: int = 256,
             max_blocks: int | None = None) -> None:
    M, N = z.shape
    if M * N == 0:
        return
    dt = z.dtype
    has_b = b is not None

    def make():
        grid, bx = grid_2d(M, N, block, max_blocks)
        return (function("bias_act", dt), grid, (bx,), (np.int64(M), np.int64(N), np.int32(has_b),
                np.int32(bool(write_z)), np.int32(act_code(act))) + _prm(act, params, dt))
    f, grid, blk, tail = _plan(("bias_act", _device(), dt, M, N, has_b, bool(write_z), act, _key(params), block,
                                max_blocks), make)
    f(grid, blk, (z, b if has_b else z, y) + tail)


def act_backward(dy, saved, dz, act: str, params=None, order: int = 1, *, block: int = 256,
                 max_blocks: int | None = None) -> None:
    """``dz = dy * d^order act (saved)`` elementwise (order 1 or 2)."""
    M, N = dy.shape
    if M * N == 0:
        return
    dt = dy.dtype

    def make():
        grid, bx = grid_2d(M, N, block, max_blocks)
        return (function("act_bwd", dt), grid, (bx,),
                (np.int64(M), np.int64(N), np.int32(act_code(act)), np.int32(order)) + _prm(act, params, dt))
    f, grid, blk, tail = _plan(("act_bwd", _device(), dt, M, N, act, _key(params), order, block, max_blocks), make)
    f(grid, blk, (dy, saved, dz) + tail)


def act_bias_grad(dy, saved, dz, db, act: str, params=None, order: int = 1, *, target_blocks: int = 512,
                  partial=None) -> None:
    """``dz = dy * d^order act (saved)`` (order 1 or 2) and ``db = dz.sum(0)``. ``partial``: the (row_blocks, N) scratch of :func:`act_bias_grad.plan` in the compute dtype
    (allocated here when not given)."""
    M, N = dy.shape
    do_bias = db is not None
    if M * N == 0:
        if do_bias:
            db[...] = 0
        return
    dt = dy.dtype
    write_dz = dz is not None

    def make():
        col_blocks, row_blocks, rpb = plan(M, N, ABG_TX, ABG_TY, target_blocks)
        return (function("act_bias_grad", dt), (col_blocks, row_blocks), row_blocks,
                (np.int64(M), np.int64(N), np.int64(rpb), np.int32(write_dz), np.int32(do_bias),
                 np.int32(act_code(act)), np.int32(order)) + _prm(act, params, dt),
                function("colsum", dt), (blocks_for(N, 128),), (np.int64(row_blocks), np.int64(N)))
    f, grid, row_blocks, tail, f2, grid2, tail2 = _plan(
        ("act_bias_grad", _device(), dt, M, N, write_dz, do_bias, act, _key(params), order, target_blocks), make)
    if do_bias and partial is None:
        import cupy
        partial = cupy.empty((row_blocks, N), dtype=compute_dtype(dt))
    f(grid, (ABG_TX, ABG_TY), (dy, saved, dz if write_dz else dy, partial if do_bias else dy) + tail)
    if do_bias:
        f2(grid2, (128,), (partial, db) + tail2)


def _key(params):
    """A hashable plan-cache key of an activation's parameters."""
    return tuple(params.items()) if isinstance(params, dict) else params


def softmax_xent_forward(logits, target, loss, probs, ignore_index: int = -100, err=None, *,
                         block: int | None = None, max_blocks: int | None = None) -> None:
    M, C = logits.shape
    if M == 0:
        return
    dt = logits.dtype
    has_err = err is not None

    def make():
        grid = M if max_blocks is None else max(1, min(M, max_blocks))
        return (function("softmax_xent_fwd", dt), (grid,), (block or next_pow2(C),),
                (np.int64(M), np.int64(C), np.int64(ignore_index)), (np.int32(has_err),))
    f, grid, blk, mid, tail = _plan(("softmax_xent_fwd", _device(), dt, M, C, ignore_index, has_err, block,
                                     max_blocks), make)
    f(grid, blk, (logits, target, loss, probs) + mid + (err if has_err else target,) + tail)


def softmax_xent_backward(probs, target, g, d, mul: float = 1.0, ignore_index: int = -100,
                          label_smoothing: float = 0.0, *, block: int = 256, max_blocks: int | None = None) -> None:
    M, C = probs.shape
    if M * C == 0:
        return
    dt = probs.dtype
    per_row = g.shape[0] != 1

    def make():
        c = compute_dtype(dt).type
        eps = float(label_smoothing)
        grid, bx = grid_2d(M, C, block, max_blocks)
        return (function("softmax_xent_bwd", dt), grid, (bx,),
                (np.int64(1 if per_row else 0), c(mul), np.int64(ignore_index), c(eps / C), c(1.0 - eps)),
                (np.int64(M), np.int64(C)))
    f, grid, blk, mid, tail = _plan(("softmax_xent_bwd", _device(), dt, M, C, per_row, mul, ignore_index,
                                     label_smoothing, block, max_blocks), make)
    f(grid, blk, (probs, target, g) + mid + (d,) + tail)
