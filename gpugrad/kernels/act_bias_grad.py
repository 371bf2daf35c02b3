"""Fused activation backward + bias gradient: one pass reads ``dy`` and the saved activation, writes
``dz = dy * act'(.)`` and reduces ``db = dz.sum(0)``.

Layout: a 2-D grid of (column tiles of ``TX``) x (row tiles of ``rows_per_block``); a block of
``TX x TY`` threads walks its row tile (warps read 32 consecutive columns: coalesced), each thread
keeps a running sum for its column, the block combines its ``TY`` sums in shared memory and writes one
partial row ``partial[row_tile, col]``. A second small kernel sums the partial rows in a fixed order.
No atomics: the result is deterministic run to run.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import _numba

cuda = None  # numba.cuda, bound when the first kernel is built (keeps imports free of CUDA)
from .activations import act_backward_ref, act_code, device_functions, kernel_params


def act_bias_grad_ref(dy, saved, act: str, with_bias: bool = True, params=None, order: int = 1):
    """Float64 reference: ``(dz, db)`` (``db`` None without bias)."""
    dz = act_backward_ref(dy, saved, act, params, order)
    return dz, (dz.sum(axis=0) if with_bias else None)


def _grad_kernel(cdt, TX: int, TY: int):
    def build():
        _numba.nb_cuda(globals())
        F = _numba.nb_type(cdt)
        _, act_deriv = device_functions(cdt)
        zero = np.dtype(cdt).type(0.0)

        @cuda.jit
        def act_bias_grad_kernel(dy, s, dz, partial, rows_per_block, write_dz, do_bias, code, order, prm):
            sm = cuda.shared.array((TY, TX), dtype=F)
            tx = cuda.threadIdx.x
            ty = cuda.threadIdx.y
            col = cuda.blockIdx.x * TX + tx
            n_rows = dy.shape[0]
            n_cols = dy.shape[1]
            r0 = cuda.blockIdx.y * rows_per_block
            r1 = r0 + rows_per_block
            if r1 > n_rows:  # (no min(): the built-in has typing trouble in some Numba CUDA versions)
                r1 = n_rows
            acc = zero
            if col < n_cols:
                for r in range(r0 + ty, r1, TY):
                    g = act_deriv(F(dy[r, col]), F(s[r, col]), code, order, prm)
                    if write_dz:
                        dz[r, col] = g
                    acc += g
            if do_bias:
                sm[ty, tx] = acc
                cuda.syncthreads()
                if ty == 0 and col < n_cols:
                    tot = zero
                    for j in range(TY):
                        tot += sm[j, tx]
                    partial[cuda.blockIdx.y, col] = tot
        return act_bias_grad_kernel
    return _numba.cached(("act_bias_grad", np.dtype(cdt).str, TX, TY), build)


def _colsum_kernel(cdt):
    def build():
        _numba.nb_cuda(globals())
        zero = np.dtype(cdt).type(0.0)

        @cuda.jit
        def colsum_kernel(partial, out):
            c = cuda.grid(1)
            if c < out.shape[0]:
                t = zero
                for j in range(partial.shape[0]):
                    t += partial[j, c]
                out[c] = t
        return colsum_kernel
    return _numba.cached(("colsum", np.dtype(cdt).str), build)


@functools.lru_cache(maxsize=4096)  # launch configuration, once per shape
def plan(n_rows: int, n_cols: int, TX: int = 32, TY: int = 8, target_blocks: int = 512) -> tuple[int, int, int]:
    """``(col_blocks, row_blocks, rows_per_block)``: enough blocks to fill the device, each block
    walking a tile of rows (a multiple of ``TY``)."""
    col_blocks = max(1, math.ceil(n_cols / TX))
    max_row_blocks = max(1, math.ceil(n_rows / TY))
    row_blocks = min(max_row_blocks, max(1, math.ceil(target_blocks / col_blocks)))
    rows_per_block = math.ceil(n_rows / row_blocks)
    rows_per_block = max(TY, math.ceil(rows_per_block / TY) * TY)
    row_blocks = max(1, math.ceil(n_rows / rows_per_block))
    return col_blocks, row_blocks, rows_per_block


def act_bias_grad(dy, saved, dz, db, act: str, params=None, order: int = 1, *, partial=None, stream=None,
                  TX: int = 32, TY: int = 8, target_blocks: int = 512, alloc=None) -> None:
    """Fused backward of ``y = act(z + b)``: ``dz = dy * d^order act`` (order 1, or 2 for a double
    backward) and ``db = dz.sum(0)``.

    ``dy``, ``saved`` (``y`` or ``z``; pass ``dy`` for identity), ``dz``: (M, N); ``dz`` may be None to
    only reduce ``db`` (identity). ``db``: (N,) or None. ``partial``: (row_blocks, N) scratch in the
    compute dtype (allocated with ``alloc(shape, dtype)`` or NumPy when not given; see :func:`plan`).
    """
    M, N = dy.shape
    cdt = _numba.compute_dtype(dy.dtype)
    do_bias = db is not None
    if M * N == 0:
        if do_bias:
            db[...] = 0
        return
    col_blocks, row_blocks, rpb = plan(M, N, TX, TY, target_blocks)
    if do_bias:
        if partial is None:
            partial = (alloc or np.empty)((row_blocks, N), cdt)
        elif tuple(partial.shape) != (row_blocks, N):
            raise ValueError(f"act_bias_grad: partial must have shape {(row_blocks, N)}, got {tuple(partial.shape)}")
    else:
        partial = _numba.stand_in(dy, 2)  # never written
    write_dz = dz is not None
    k = _grad_kernel(cdt, TX, TY)
    _numba.launch(k, (col_blocks, row_blocks), (TX, TY), stream, dy, saved,
                  dz if write_dz else _numba.stand_in(dy, 2), partial,
                  rpb, write_dz, do_bias, act_code(act), int(order), kernel_params(act, params, cdt))
    if do_bias:
        k2 = _colsum_kernel(cdt)
        _numba.launch(k2, _numba.blocks_for(N, 128), 128, stream, partial, db)
