"""The CPU backend: NumPy arrays, BLAS GEMMs, in-place fused passes."""
from __future__ import annotations

import numpy as np

from .._device import device
from . import cpu_blas
from ..kernels import layernorm
from ..kernels.activations import ACTIVATIONS, KERNEL_ORDERS, backward_tree, kernel_params, saves_output, trees
from ..kernels.expr import expand
from .base import Backend, act_params

_erf_ufunc = None
# Where the Numba pass beats NumPy (1024x128 float32, 2026-11-30, idle 2-core AMD EPYC, see cpu_numba):
# branchy activations gain (ReLU fwd + bias 8 us vs 79 us, bwd + db 23 us vs 40 us + 23 us); transcendental
# ones lose (sigmoid fwd 361 us in Numba's scalar exp vs 131 us in NumPy's SIMD), so those stay on NumPy.
# The rule, read off each formula of the definition: a Numba pass where it calls no transcendental function.
# It holds for the newer records and the order-2 pass (1024x128 float32, 2026-12-04, shared 2-core machine,
# Numba vs NumPy alternating): relu6 fwd + bias 45 vs 239 us, hardswish bwd + db 105 vs 183 us, sigmoid
# order 2 + db 70 vs 362 us; gelu order 2 + db 1350 vs 952 us (transcendental: NumPy).
_TRANSCENDENTAL = frozenset(("exp", "expm1", "log", "log1p", "tanh", "erf", "sin", "cos", "pow", "sqrt"))


def _ops(tree) -> set:
    """The primitives a formula's generated code calls (macros such as sigmoid expanded)."""
    seen, ops, stack = set(), set(), [expand(tree)]
    while stack:
        e = stack.pop()
        if id(e) not in seen:
            seen.add(id(e))
            ops.add(e.op)
            stack.extend(e.args)
    return ops


def _plain(tree) -> bool:
    return not (_ops(tree) & _TRANSCENDENTAL)


_NUMBA_FWD = tuple(a for a in ACTIVATIONS if _plain(trees(a)[0]))
_NUMBA_BWD = {k: tuple(a for a in ACTIVATIONS if a != "identity" and _plain(backward_tree(a, k))) for k in KERNEL_ORDERS}


def _get_erf():
    """Vectorised erf: SciPy's if installed (an optional package), else a Numba ufunc over ``math.erf``
    (compiled once)."""
    global _erf_ufunc
    if _erf_ufunc is None:
        try:
            from scipy.special import erf as _erf  # type: ignore
        except ImportError:
            import math

            import numba

            @numba.vectorize(["float32(float32)", "float64(float64)"], cache=False)
            def _erf(x):  # type: ignore
                return math.erf(x)
        _erf_ufunc = _erf
    return _erf_ufunc


_K: list = []
_MALLOC_TUNED: list = []


def _tune_malloc() -> None:
    """glibc only, once per process: keep freed activation-sized blocks in the heap instead of giving
    them back to the OS. With glibc's defaults (dynamic mmap/trim thresholds) every training step of
    ``benchmarks/mlp_cpu.py`` case (b) re-faulted ~710 pages of fresh memory (GEMM outputs, gradients:
    0.5 MB arrays freed and reallocated each step); with a 32 MB mmap threshold and a 64 MB trim
    threshold it faults none. Skipped when the user tunes malloc (``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) or sets ``GPUGRAD_MALLOC_TUNE=0``."""
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED.append(True)
    import os
    import sys
    env = os.environ
    if not sys.platform.startswith("linux") or env.get("GPUGRAD_MALLOC_TUNE", "1").strip() == "0" or \
            "MALLOC_MMAP_THRESHOLD_" in env or "MALLOC_TRIM_THRESHOLD_" in env or "GLIBC_TUNABLES" in env:
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt  # AttributeError on C libraries without it (musl)
        import platform
        if platform.libc_ver()[0] != "glibc":
            return
        mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def _kernels():
    """The Numba kernel module, imported on first use (importing Numba takes ~0.3 s)."""
    if not _K:
        from . import cpu_numba
        _K.append(cpu_numba)
    return _K[0]


class CPUBackend(Backend):
    """NumPy on the host."""

    name = "cpu"
    xp = np
    grad_slots = True  # the optimizer's flat buckets register gradient slots: dW/db are written there
    act_chunk = 65536  # activation derivatives' NumPy code (exp, erf...) in 256 KB float32 chunks: in cache

    def __init__(self, dev: device) -> None:
        super().__init__(dev)
        _tune_malloc()

    def to_numpy(self, a) -> np.ndarray:
        return a

    def from_numpy(self, a: np.ndarray):
        return a

    def erf(self, x):
        out = _get_erf()(x)
        return out.astype(x.dtype, copy=False)

    # ------------------------------------------------------------------ GEMMs (MKL when installed)
    def linear_forward(self, x, w):
        out = cpu_blas.gemm(x, w, False, True)
        return out if out is not None else x @ w.T

    def linear_backward(self, dz, x, w, need_dx: bool, need_dw: bool, dw_out=None):
        dx = dw = None
        if need_dx:
            dx = cpu_blas.gemm(dz, w, False, False)
            if dx is None:
                dx = dz @ w
        if need_dw:
            dw = cpu_blas.gemm(dz, x, True, False, dw_out)
            if dw is None:
                dw = dz.T @ x if dw_out is None else np.matmul(dz.T, x, out=dw_out)
        return dx, dw

    # ------------------------------------------------------------------ fused passes (Numba)
    def bias_act(self, z, b, act: str, params=None):
        K = _kernels()
        if act not in _NUMBA_FWD or not K.supported(z) or (b is not None and b.dtype != z.dtype):
            return super().bias_act(z, b, act, params)
        if act == "identity":
            if b is not None:
                z += b
            return z, None
        prm = act_params(act, params)
        inplace, keep_z, _ = K.kernels(act, z.dtype)
        bb = b if b is not None else K.empty_bias(z.dtype)
        if saves_output(act, prm):
            inplace(z, bb, b is not None, kernel_params(act, prm, z.dtype))
            return z, z
        y = np.empty_like(z)
        keep_z(z, bb, b is not None, kernel_params(act, prm, z.dtype), y)
        return y, z

    def act_bias_backward(self, dy, saved, act: str, with_bias: bool, params=None, order: int = 1, db_out=None):
        K = _kernels()
        if act == "identity" and order == 1:
            return dy, (dy.sum(axis=0, out=db_out) if with_bias else None)
        if act not in _NUMBA_BWD.get(order, ()) or not K.supported(dy, saved):
            return super().act_bias_backward(dy, saved, act, with_bias, params, order, db_out)
        dz = np.empty_like(dy)
        db = (np.empty(dy.shape[1], dy.dtype) if db_out is None else db_out) if with_bias else K.empty_bias(dy.dtype)
        K.deriv_kernel(act, dy.dtype, order)(dy, saved, kernel_params(act, params, dy.dtype), dz, db, with_bias)
        return dz, (db if with_bias else None)

    def act_derivative(self, dy, s, act: str, params=None, order: int = 1):
        if act in _NUMBA_BWD.get(order, ()) and s is not None and dy.shape == s.shape:
            # the Numba pass (no bias), for the same formulas as with a bias: np.where with a data-dependent
            # mask is ~7x slower, and a plain formula's several NumPy passes lose to one (float32, 2026-12-04,
            # shared 2-core machine, best of 50: tanh order 1 / 2 at 1024x64 8 / 10 us vs NumPy 25 / 42 us,
            # at 1280x256 132 / 129 us vs 185 / 395 us; sigmoid 131 / 130 us vs 318 / 498 us)
            d, s2 = dy.reshape(1, -1), s.reshape(1, -1)
            if _kernels().supported(d, s2):
                return self.act_bias_backward(d, s2, act, False, params, order)[0].reshape(dy.shape)
        return super().act_derivative(dy, s, act, params, order)

    # ------------------------------------------------------------------ layer normalisation (Numba passes)
    def layer_norm_forward(self, x2, w, b, eps: float):
        """The Numba row pass generated from ``gpugrad/kernels/layernorm.py`` (float32/float64)."""
        if not _ln_ok(x2, w, b):
            return super().layer_norm_forward(x2, w, b, eps)
        forward = layernorm.cpu_kernels(x2.dtype)[0]
        m, n = x2.shape
        y = np.empty_like(x2)
        mean, rstd = np.empty(m, x2.dtype), np.empty(m, x2.dtype)
        forward(x2, np.ones(n, x2.dtype) if w is None else w, np.zeros(n, x2.dtype) if b is None else b, eps, y,
                mean, rstd)
        return y, mean, rstd

    def layer_norm_backward(self, dy, x2, w, mean, rstd, need_dx: bool, need_params: bool):
        if not _ln_ok(x2, w, dy):
            return super().layer_norm_backward(dy, x2, w, mean, rstd, need_dx, need_params)
        _, backward_dx, backward_params = layernorm.cpu_kernels(x2.dtype)
        dx = dw = db = None
        if need_dx:
            dx = np.empty_like(x2)
            backward_dx(x2, np.ones(x2.shape[1], x2.dtype) if w is None else w, dy, mean, rstd, dx)
        if need_params:
            dw, db = np.empty(x2.shape[1], x2.dtype), np.empty(x2.shape[1], x2.dtype)
            backward_params(x2, dy, mean, rstd, dw, db)
        return dx, dw, db

    # ------------------------------------------------------------------ loss (Numba, one pass per row)
    def softmax_cross_entropy(self, logits, target, ignore_index: int = -100, check_op: str | None = None):
        if not (_xent_ok(logits) and target.ndim == 1 and target.dtype.kind in "iu" and len(target) == len(logits)
                and logits.shape[1] > 0):
            return super().softmax_cross_entropy(logits, target, ignore_index, check_op)
        loss = np.empty(logits.shape[0], logits.dtype)
        probs = np.empty_like(logits)
        bad = _kernels().softmax_xent(logits, target, ignore_index, loss, probs)
        if bad >= 0 and check_op is not None:
            self.check_targets(check_op, target, logits.shape[1], ignore_index)  # raises, naming the op
        return loss, probs

    def cross_entropy_backward(self, probs, target, g, mul: float = 1.0, ignore_index: int = -100,
                               label_smoothing: float = 0.0):
        if not (_xent_ok(probs) and getattr(g, "ndim", 0) == 0 and target.ndim == 1 and target.dtype.kind in "iu"):
            return super().cross_entropy_backward(probs, target, g, mul, ignore_index, label_smoothing)
        d = np.empty_like(probs)
        _kernels().xent_backward(probs, target, float(g) * mul, ignore_index, float(label_smoothing), d)
        return d

    # ------------------------------------------------------------------ optimizer step (Numba, one pass)
    def optim_step(self, rule, arrays: dict, start: int, end: int, options: dict, derived: tuple = (), step=None,
                   found_inf=None) -> None:
        """The rule compiled by Numba (``cpu_optim``): one serial pass over ``[start, end)``."""
        if not _flat_ok(*arrays.values()):
            return super().optim_step(rule, arrays, start, end, options, derived, step, found_inf)
        if _OPT[0] is None:
            from . import cpu_optim
            _OPT[0] = cpu_optim
        _OPT[0].run(rule, arrays, start, end, options, derived, step, found_inf)


_OPT: list = [None]


def _ln_ok(x2, *others) -> bool:
    """Numba layer-norm path: float32/float64 arrays of one dtype."""
    return x2.dtype in (np.float32, np.float64) and all(o is None or o.dtype == x2.dtype for o in others)


def _xent_ok(a) -> bool:
    """Numba loss path: 2-D C-contiguous float32/float64 (class scores or probabilities)."""
    return a.ndim == 2 and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous


def _flat_ok(p, *others) -> bool:
    """Numba path: 1-D C-contiguous float32/float64 buffers of one dtype and length."""
    return (p.dtype in (np.float32, np.float64) and p.ndim == 1 and p.flags.c_contiguous
            and all(o.dtype == p.dtype and o.shape == p.shape and o.flags.c_contiguous for o in others))
