"""Fused softmax + cross-entropy, forward and backward.

Forward: one block per row (grid-stride over rows). Each thread keeps an online (max, sum of exp)
pair over its columns (one read of the row), the block merges the pairs in shared memory (a fixed
tree: deterministic), then one write pass stores the probabilities; thread 0 writes the row's loss
``log(sum) - (x[t] - max)`` (0 for ``ignore_index`` rows). Stable for any finite logits. A target out of
``[0, C)`` (and not ``ignore_index``) gets loss 0 and, when an ``err`` record is given, is folded into it
(``err[0] = min``, ``err[1] = max`` of the bad values, atomically): the host reads the record lazily, at
its next synchronisation, instead of reading the targets every step.

Backward: ``d = (p - eps/C - (1 - eps) * onehot(t)) * w[row]``, one elementwise pass, where ``w`` is
the incoming gradient (per row for ``reduction='none'``, one scalar read on the device otherwise,
times ``mul`` = 1/count for ``'mean'``) and 0 on ignored rows.
"""
from __future__ import annotations

import math

import numpy as np

from . import _numba

cuda = None  # numba.cuda, bound when the first kernel is built (keeps imports free of CUDA)


def softmax_xent_ref(logits, target, ignore_index: int = -100):
    """Float64 reference: ``(loss per row, probs)``; ignored rows get loss 0."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target)
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    p = e / s
    valid = t != ignore_index
    tt = np.where(valid, t, 0)
    loss = np.log(s[:, 0]) - (np.take_along_axis(x, tt[:, None], axis=1)[:, 0] - m[:, 0])
    return np.where(valid, loss, 0.0), p


def softmax_xent_backward_ref(probs, target, g, mul: float = 1.0, ignore_index: int = -100,
                              label_smoothing: float = 0.0):
    """Float64 reference of the backward: ``g`` is a scalar or a per-row array."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(target)
    n, c = p.shape
    d = p - label_smoothing / c
    valid = t != ignore_index
    tt = np.where(valid, t, 0)
    d[np.arange(n), tt] -= 1.0 - label_smoothing
    w = np.broadcast_to(np.asarray(g, dtype=np.float64).reshape(-1), (n,)) * mul
    return d * np.where(valid, w, 0.0)[:, None]


def _fwd_kernel(cdt, BS: int):
    def build():
        _numba.nb_cuda(globals())
        F = _numba.nb_type(cdt)
        c = np.dtype(cdt).type
        ZERO, ONE, NEG_INF = c(0.0), c(1.0), c(-np.inf)

        @cuda.jit
        def softmax_xent_fwd(x, t, loss, probs, ignore, err, check):
            sm_m = cuda.shared.array(BS, dtype=F)
            sm_s = cuda.shared.array(BS, dtype=F)
            tid = cuda.threadIdx.x
            n_rows = x.shape[0]
            n_cols = x.shape[1]
            for r in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
                m = NEG_INF
                s = ZERO
                for j in range(tid, n_cols, BS):
                    v = F(x[r, j])
                    if v > m:
                        s = s * math.exp(m - v) + ONE
                        m = v
                    elif m > NEG_INF or v != v:
                        s += math.exp(v - m)
                sm_m[tid] = m
                sm_s[tid] = s
                cuda.syncthreads()
                step = BS // 2
                while step > 0:
                    if tid < step:
                        m1 = sm_m[tid]
                        m2 = sm_m[tid + step]
                        mm = m1 if m1 > m2 else m2
                        if mm > NEG_INF:
                            sm_s[tid] = sm_s[tid] * math.exp(m1 - mm) + sm_s[tid + step] * math.exp(m2 - mm)
                        else:
                            sm_s[tid] = sm_s[tid] + sm_s[tid + step]
                        sm_m[tid] = mm
                    cuda.syncthreads()
                    step //= 2
                mx = sm_m[0]
                tot = sm_s[0]
                inv = ONE / tot
                for j in range(tid, n_cols, BS):
                    probs[r, j] = math.exp(F(x[r, j]) - mx) * inv
                if tid == 0:
                    tt = t[r]
                    if tt == ignore or tt < 0 or tt >= n_cols:
                        loss[r] = ZERO
                        if check and tt != ignore:
                            cuda.atomic.min(err, 0, tt)
                            cuda.atomic.max(err, 1, tt)
                    else:
                        loss[r] = math.log(tot) - (F(x[r, tt]) - mx)
                cuda.syncthreads()  # shared memory is reused by the next row
        return softmax_xent_fwd
    return _numba.cached(("softmax_xent_fwd", np.dtype(cdt).str, BS), build)


def _bwd_kernel(cdt):
    def build():
        _numba.nb_cuda(globals())
        F = _numba.nb_type(cdt)
        c = np.dtype(cdt).type
        ZERO = c(0.0)

        @cuda.jit
        def softmax_xent_bwd(probs, t, g, g_stride, mul, ignore, eps_over_c, one_minus_eps, d):
            j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
            if j < probs.shape[1]:
                for r in range(cuda.blockIdx.y, probs.shape[0], cuda.gridDim.y):
                    tt = t[r]
                    if tt == ignore:
                        d[r, j] = ZERO
                    else:
                        v = F(probs[r, j]) - eps_over_c
                        if j == tt:
                            v -= one_minus_eps
                        d[r, j] = v * (F(g[r * g_stride]) * mul)
        return softmax_xent_bwd
    return _numba.cached(("softmax_xent_bwd", np.dtype(cdt).str), build)


def softmax_xent_forward(logits, target, loss, probs, ignore_index: int = -100, err=None, *, stream=None,
                         block: int | None = None, max_blocks: int | None = None) -> None:
    """Fill ``loss`` (M,) and ``probs`` (M, C) from ``logits`` (M, C) and int ``target`` (M,).
    ``err``: optional int64 record ``[min bad target, max bad target]`` (start it at
    ``[INT64_MAX, INT64_MIN]``) that out-of-range targets are folded into.
    ``block``: threads per row, a power of two (default: fit to C, 32..256)."""
    M, C = logits.shape
    if M == 0:
        return
    BS = block or _numba.next_pow2(C)
    if BS & (BS - 1):
        raise ValueError(f"softmax_xent_forward: block must be a power of two, got {BS}")
    cdt = _numba.compute_dtype(logits.dtype)
    k = _fwd_kernel(cdt, BS)
    grid = M if max_blocks is None else max(1, min(M, int(max_blocks)))
    check = err is not None
    _numba.launch(k, grid, BS, stream, logits, target, loss, probs, int(ignore_index),
                  err if check else _numba.stand_in(target, 1), int(check))


def softmax_xent_backward(probs, target, g, d, mul: float = 1.0, ignore_index: int = -100,
                          label_smoothing: float = 0.0, *, stream=None, block: int = 256,
                          max_blocks: int | None = None) -> None:
    """``d = (probs - eps/C - (1-eps)*onehot(target)) * g[row] * mul`` (0 on ignored rows).
    ``g``: a 1-D array of length 1 (one scale for all rows) or M (per row)."""
    M, C = probs.shape
    if M * C == 0:
        return
    cdt = _numba.compute_dtype(probs.dtype)
    g_stride = 0 if g.shape[0] == 1 else 1
    if g_stride and g.shape[0] != M:
        raise ValueError(f"softmax_xent_backward: g must have 1 or {M} entries, got {g.shape[0]}")
    k = _bwd_kernel(cdt)
    grid, bx = _numba.grid_2d(M, C, block, max_blocks)
    eps = float(label_smoothing)
    _numba.launch(k, grid, bx, stream, probs, target, g, g_stride, cdt.type(mul), int(ignore_index),
                  cdt.type(eps / C), cdt.type(1.0 - eps), d)
