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
SOFTMAX_MAX_BLOCK = 256  # fused.cu's softmax_xent_fwd reduces in sm_m[256] / sm_s[256] by halving: a power of two
GATHER_MAX = 128  # must match fused.cu's GG_GATHER_MAX: arrays per gather launch
MAX_BLOCK = 1024  # threads per block (every CUDA device since compute capability 2.0)
_SOURCE = "fused.cu"


def module(state, source: str = _SOURCE, code=None):
    """``source`` (default ``fused.cu``; ``code()``: its CUDA C where it is generated, not a file) as a
    ``cupy.RawModule`` (``state``: the backend's per-device state, with dicts ``modules``, ``functions``,
    ``plans`` and a ``plan(key, make)`` method)."""
    mod = state.modules.get(source)
    if mod is None:
        import cupy
        mod = state.modules[source] = cupy.RawModule(code=code() if code else cuda_source(source_path(source)),
                                                     options=("--std=c++14",))
    return mod


def function(state, name: str, dtype, source: str = _SOURCE, code=None):
    """The kernel handle ``{name}_{f16|f32|f64}`` of ``source`` (see :func:`module`), compiled and loaded on
    ``state``'s device (once)."""
    suffix = storage_suffix(dtype, f"{source} kernels ({name})")
    return entry(state, (source, name, suffix), source, code, f"{name}_{suffix}")


def entry(state, key, source, code, name: str):
    """The kernel handle ``name`` of ``source`` (see :func:`module`), kept in ``state.functions`` under
    ``key``: looked up in the module once, inside ``state``'s device (CuPy compiles and loads a RawModule
    for the current device)."""
    f = state.functions.get(key)
    if f is None:
        import cupy
        with cupy.cuda.Device(state.index):
            f = state.functions[key] = module(state, source, code).get_function(name)
    return f


def check_block(kernel: str, block, *, power_of_two_max: int | None = None) -> int:
    """``block`` as an int, or a ValueError naming ``kernel`` and what it accepts: 1 to 1024 threads, and a
    power of two up to ``power_of_two_max`` where the kernel reduces in shared memory by halving."""
    ok = isinstance(block, (int, np.integer)) and not isinstance(block, bool) and 1 <= block <= MAX_BLOCK
    if ok and power_of_two_max is not None:
        ok = block <= power_of_two_max and block & (block - 1) == 0
    if not ok:
        want = (f"a power of two from 1 to {power_of_two_max} (its shared-memory reduction halves the block "
                f"and holds {power_of_two_max} partial results)" if power_of_two_max is not None
                else f"an int from 1 to {MAX_BLOCK}")
        raise ValueError(f"fused.cu {kernel}: block={block!r} threads is not a valid launch: it takes {want}. "
                         "Fix: pass such a block, or leave block unset for the default.")
    return int(block)


def _key(params):
    """A hashable plan-cache key of an activation's parameters."""
    return tuple(params.items()) if isinstance(params, dict) else params


def bias_act(z, b, y, act: str, params=None, write_z: bool = False, *, state, block: int = 256,
             max_blocks: int | None = None) -> None:
    M, N = z.shape
    if M * N == 0:
        return
    dt = z.dtype
    has_b = b is not None

    def make():
        grid, bx = grid_2d(M, N, check_block("bias_act", block), max_blocks)
        return (function(state, "bias_act", dt), grid, (bx,), (np.int64(M), np.int64(N), np.int32(has_b),
                np.int32(bool(write_z)), np.int32(act_code(act))) + kernel_params(act, params, compute_dtype(dt)))
    f, grid, blk, tail = state.plan(("bias_act", dt, M, N, has_b, bool(write_z), act, _key(params), block,
                                     max_blocks), make)
    f(grid, blk, (z, b if has_b else z, y) + tail)


def act_backward(dy, saved, dz, act: str, params=None, order: int = 1, *, state, block: int = 256,
                 max_blocks: int | None = None) -> None:
    """``dz = dy * d^order act (saved)`` elementwise (order 1 or 2)."""
    M, N = dy.shape
    if M * N == 0:
        return
    dt = dy.dtype

    def make():
        grid, bx = grid_2d(M, N, check_block("act_bwd", block), max_blocks)
        return (function(state, "act_bwd", dt), grid, (bx,),
                (np.int64(M), np.int64(N), np.int32(act_code(act)), np.int32(order))
                + kernel_params(act, params, compute_dtype(dt)))
    f, grid, blk, tail = state.plan(("act_bwd", dt, M, N, act, _key(params), order, block, max_blocks), make)
    f(grid, blk, (dy, saved, dz) + tail)


def act_bias_grad(dy, saved, dz, db, act: str, params=None, order: int = 1, *, state, target_blocks: int = 512,
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
        return (function(state, "act_bias_grad", dt), (col_blocks, row_blocks), row_blocks,
                (np.int64(M), np.int64(N), np.int64(rpb), np.int32(write_dz), np.int32(do_bias),
                 np.int32(act_code(act)), np.int32(order)) + kernel_params(act, params, compute_dtype(dt)),
                function(state, "colsum", dt), (blocks_for(N, 128),), (np.int64(row_blocks), np.int64(N)))
    f, grid, row_blocks, tail, f2, grid2, tail2 = state.plan(
        ("act_bias_grad", dt, M, N, write_dz, do_bias, act, _key(params), order, target_blocks), make)
    if do_bias and partial is None:
        import cupy
        partial = cupy.empty((row_blocks, N), dtype=compute_dtype(dt))
    f(grid, (ABG_TX, ABG_TY), (dy, saved, dz if write_dz else dy, partial if do_bias else dy) + tail)
    if do_bias:
        f2(grid2, (128,), (partial, db) + tail2)


def softmax_xent_forward(logits, target, loss, probs, ignore_index: int = -100, err=None, *, state,
                         block: int | None = None, max_blocks: int | None = None) -> None:
    """One block per row; ``block``: a power of two up to 256 (default: the smallest >= the class count,
    from 32)."""
    M, C = logits.shape
    if M == 0:
        return
    dt = logits.dtype
    has_err = err is not None

    def make():
        grid = M if max_blocks is None else max(1, min(M, max_blocks))
        bx = next_pow2(C, hi=SOFTMAX_MAX_BLOCK) if block is None else \
            check_block("softmax_xent_fwd", block, power_of_two_max=SOFTMAX_MAX_BLOCK)
        return (function(state, "softmax_xent_fwd", dt), (grid,), (bx,),
                (np.int64(M), np.int64(C), np.int64(ignore_index)), (np.int32(has_err),))
    f, grid, blk, mid, tail = state.plan(("softmax_xent_fwd", dt, M, C, ignore_index, has_err, block, max_blocks),
                                         make)
    f(grid, blk, (logits, target, loss, probs) + mid + (err if has_err else target,) + tail)


def softmax_xent_backward(probs, target, g, d, mul: float = 1.0, ignore_index: int = -100,
                          label_smoothing: float = 0.0, *, state, block: int = 256,
                          max_blocks: int | None = None) -> None:
    M, C = probs.shape
    if M * C == 0:
        return
    dt = probs.dtype
    per_row = g.shape[0] != 1

    def make():
        c = compute_dtype(dt).type
        eps = float(label_smoothing)
        grid, bx = grid_2d(M, C, check_block("softmax_xent_bwd", block), max_blocks)
        return (function(state, "softmax_xent_bwd", dt), grid, (bx,),
                (np.int64(1 if per_row else 0), c(mul), np.int64(ignore_index), c(eps / C), c(1.0 - eps)),
                (np.int64(M), np.int64(C)))
    f, grid, blk, mid, tail = state.plan(("softmax_xent_bwd", dt, M, C, per_row, mul, ignore_index,
                                          label_smoothing, block, max_blocks), make)
    f(grid, blk, (probs, target, g) + mid + (d,) + tail)


# The gather's table, passed BY VALUE as one kernel argument (CuPy passes a one-element NumPy array as the
# bytes of a struct parameter: cupy/cuda/function.pyx, CNumpyArray): source pointers and the start of each
# source's range in ``out``. Layout of fused.cu's ``struct GatherTable``.
GATHER_TABLE = np.dtype([("src", np.uint64, (GATHER_MAX,)), ("start", np.int64, (GATHER_MAX + 1,))])


def gather(arrays, out, *, state, block: int = 256, max_blocks: int | None = None) -> None:
    """Copy each of ``arrays`` (C-contiguous, ``out``'s dtype), flattened, into consecutive ranges of the
    1-D C-contiguous ``out``: one launch per ``GATHER_MAX`` arrays. The pointer table travels as a
    kernel argument, so nothing is copied from the host to the device (``cupy.concatenate`` of more than 8
    arrays copies a host table of pointers: a host-to-device copy per call, refused while a CUDA graph
    is captured) and a captured graph keeps the pointers of its capture."""
    n = len(arrays)
    dt = out.dtype
    sizes = tuple(a.size for a in arrays)
    offset = 0
    for c0 in range(0, n, GATHER_MAX):
        chunk = arrays[c0:c0 + GATHER_MAX]
        k = len(chunk)
        csizes = sizes[c0:c0 + GATHER_MAX]

        def make():
            table = np.zeros(1, GATHER_TABLE)
            table["start"][0, 1:k + 1] = np.cumsum(csizes)
            table["start"][0, k + 1:] = table["start"][0, k]
            gx = blocks_for(max(csizes), check_block("gather", block), max_blocks)
            return function(state, "gather", dt), (gx, k), (int(block),), table, int(table["start"][0, k])
        f, grid, blk, template, total = state.plan(("gather", dt, csizes, block, max_blocks), make)
        table = template.copy()  # the pointers change every call (fresh gradients); the layout does not
        table["src"][0, :k] = [a.data.ptr for a in chunk]
        f(grid, blk, (table, out if k == n else out[offset:offset + total]))
        offset += total
