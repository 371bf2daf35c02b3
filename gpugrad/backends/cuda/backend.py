"""``CUDABackend``: CuPy arrays on one NVIDIA GPU, cuBLAS GEMMs (``cupy.matmul``; TF32 switch in
``gg.cuda.set_tf32``; float16 GEMMs accumulate in float32), and gpugrad's fused kernels for the hot
paths, launched on CuPy's current stream. Everything else is the generic backend code over ``xp = cupy``.

Each fused method checks that its inputs suit the kernels (floating dtype, matching shapes, contiguous
where written in place) and otherwise, or if the kernel set is ``xp``, runs the generic code."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..._device import device
from ..._errors import IndexRangeError, named_error
from ..._mode import STATE
from ...kernels import act_bias_grad as _k_abg
from ...kernels import bias_act as _k_ba
from ...kernels import cuda_c as _k_c
from ...kernels import layernorm as _k_ln
from ...kernels import optim_step as _k_opt
from ...kernels import softmax_xent as _k_sx
from ...kernels._numba import compute_dtype
from ...kernels.activations import CODES, KERNEL_ORDERS, saves
from ..base import Backend, act_params
from . import _env_flag, apply_tf32, memory
from .launcher import Launcher
from .state import runtime
from . import cublas as _cublas, get_tf32  # noqa: I001 (kept apart from the lines above: fewer merge conflicts)

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_I64 = np.iinfo(np.int64)  # the error record [min bad target, max bad target] starts at [max, min]


def check_at_op() -> bool:
    """Device-side validations report at the op (a host read per check) under
    ``gg.autograd.detect_anomaly()`` or ``GPUGRAD_SYNC_DEBUG=1``; otherwise at the next synchronisation."""
    return STATE.anomaly or _env_flag("GPUGRAD_SYNC_DEBUG")


def _numba_launch(kernel, items: int, stream, *args) -> None:
    """A one-thread-per-item Numba kernel (grid-stride) on ``stream``."""
    from ...kernels import _numba
    _numba.launch(kernel, _numba.blocks_for(items, 128), 128, stream, *args)


def _is_float(*arrays) -> bool:
    for a in arrays:  # a plain loop: this runs several times per op
        if a is None or a.dtype not in _FLOATS:
            return False
    return True


class CUDABackend(Backend):
    """CuPy on one CUDA device."""

    name = "cuda"
    _err = None  # device int64 [min, max] of out-of-range class targets and indices since the last check
    _pending: dict = {}  # the checks validated on the device since then (keys: see _validated; replaced, never mutated)

    def __init__(self, dev: device) -> None:
        super().__init__(dev)
        import cupy
        self.xp = cupy
        self._gpu = cupy.cuda.Device(dev.index or 0)
        self.state = runtime().device(self._gpu.id)  # compiled modules, kernel handles, launch plans, cuBLAS
        with self._gpu:
            cupy.empty(1, dtype=np.float32)  # create the context now: failures surface here, clearly
            memory.install()
            apply_tf32()
            self._launch = Launcher()
    # ------------------------------------------------------------------ arrays
    def asarray(self, data, dtype=None):
        with self._gpu:
            return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        if self._pending:
            self.raise_device_errors()
        return self._to_host(a)

    def _to_host(self, a) -> np.ndarray:
        return self.xp.asnumpy(a)

    def from_numpy(self, a: np.ndarray):
        with self._gpu:
            return self.xp.asarray(a)

    def from_dlpack(self, x: Any):
        """Zero-copy import of a CUDA DLPack producer (CuPy, PyTorch, a gpugrad tensor...)."""
        return self.xp.from_dlpack(x)

    def synchronize(self) -> None:
        self._gpu.synchronize()
        if self._pending:
            self.raise_device_errors()

    # ------------------------------------------------------------------ lazy device-side validation
    def _err_record(self):
        if self._err is None:
            with self._gpu:
                self._err = self.xp.empty(2, dtype=np.int64)
            self._clear_err()
        return self._err

    def _clear_err(self) -> None:
        """[max, min]: no bad target seen. Two fills (kernels), no host-to-device copy, same memory (a
        captured CUDA graph keeps writing into it)."""
        self._err[:1].fill(_I64.max)
        self._err[1:].fill(_I64.min)

    def pending_checks(self) -> dict:
        """The device-side checks noted since the last read of the error record (see :meth:`note_checks`)."""
        return self._pending

    def note_checks(self, checks: dict) -> None:
        """Note ``checks`` (from :meth:`pending_checks`) as run on the device again, so that the next
        synchronisation reads the error record: a replayed CUDA graph runs its captured checks without
        the Python code that noted them at capture."""
        if checks and not checks.keys() <= self._pending.keys():
            self._pending = {**self._pending, **checks}

    def _validated(self, key: tuple) -> None:
        """Note a device-side check folded into the error record (the callers check at the op instead
        when :func:`check_at_op`). ``key``: ``(op, classes, ignore_index)`` for class targets,
        ``(op, size, None, dim)`` for indices."""
        if key not in self._pending:
            self._pending = {**self._pending, key: True}

    def raise_device_errors(self) -> None:
        """Read the device-side error record (one small device-to-host copy, at a synchronisation
        point) and raise the error of a failed check since the last one: ``IndexError`` naming the op,
        the range of the bad target values and the number of classes (``IndexRangeError``, as on the CPU,
        where only indices were checked)."""
        pending, self._pending = self._pending, {}
        if not pending or self._err is None:
            return
        lo, hi = (int(v) for v in self._to_host(self._err))
        if lo > hi:
            return
        self._clear_err()
        indices = all(len(k) == 4 for k in pending)  # only gather/embedding/one_hot indices: as on the CPU
        noun = "index" if indices else "target"
        what = f"{noun} {lo}" if lo == hi else f"{noun}s from {lo} to {hi}"
        checks = "; ".join(f"{k[0]} with {k[1]} classes (valid: 0 to {k[1] - 1}, or ignore_index={k[2]})"
                           if len(k) == 3 else f"{k[0]} (dimension {k[3]} with size {k[1]}, valid: 0 to {k[1] - 1})"
                           for k in pending)
        ops = list(dict.fromkeys(k[0] for k in pending))  # the record cannot tell which of them saw it
        raise named_error(IndexRangeError if indices else IndexError,
            f"{' or '.join(ops)}: {what} out of range, found on the device by {checks}. Reported at the first "
            "synchronisation after the op (.item(), .numpy(), gg.cuda.synchronize(), save); set "
            "GPUGRAD_SYNC_DEBUG=1 or use gg.autograd.detect_anomaly() to raise at the op itself.")

    def check_targets(self, op: str, target, n_classes: int, ignore_index: int) -> None:
        """Validate class targets on the device without reading them: out-of-range values fold into
        the error record, reported lazily (:meth:`raise_device_errors`)."""
        if not target.size:
            return
        # int64 first: CuPy casts a Python int to the array's dtype (NEP 50) and raises OverflowError
        # where it does not fit (the int64 bounds below into int32 targets, -100 into uint8 ones)
        target = target.astype(np.int64, copy=False)
        if check_at_op():
            return super().check_targets(op, target, n_classes, ignore_index)  # names the position
        self._fold_out_of_range(target, n_classes, ignore_index)
        self._validated((op, int(n_classes), int(ignore_index)))

    def check_indices(self, op: str, index, size: int, dim: int = 0) -> None:
        """Validated on the device like class targets (no host read): an index outside ``[0, size)`` raises
        ``IndexRangeError`` at the next synchronisation (at the op under :func:`check_at_op`)."""
        if not index.size:
            return
        if check_at_op():
            return super().check_indices(op, index, size, dim)
        self._fold_out_of_range(index.reshape(-1).astype(np.int64, copy=False), size, None)
        self._validated((op, int(size), None, int(dim)))

    def _fold_out_of_range(self, values, n: int, ignore_index: int | None) -> None:
        """Fold the least and greatest of ``values`` (int64) outside ``[0, n)`` (``ignore_index`` aside)
        into the error record: a few kernels, nothing read on the host."""
        xp = self.xp
        err = self._err_record()
        bad = (values < 0) | (values >= n)
        if ignore_index is not None:
            bad &= values != ignore_index
        xp.minimum(err[:1], xp.where(bad, values, _I64.max).min(keepdims=True), out=err[:1])
        xp.maximum(err[1:], xp.where(bad, values, _I64.min).max(keepdims=True), out=err[1:])

    def count_divisor(self, valid, dtype):
        """The count as a 0-d device array: a ``mean`` loss divides by it without a host read (0: nan)."""
        return valid.sum(dtype=dtype)

    def check_unit_interval(self, op: str, p) -> None:
        """Checked at the op only under :func:`check_at_op` (a host read); otherwise a value outside [0, 1]
        gives NaN through the log, as nothing is read back during a step."""
        if check_at_op():
            super().check_unit_interval(op, p)

    def erf(self, x):
        import cupyx.scipy.special as sp
        return sp.erf(x).astype(x.dtype, copy=False)

    def index_add(self, target, index, values) -> None:
        import cupyx
        xp = self.xp

        def dev(k):
            return xp.asarray(k) if isinstance(k, np.ndarray) else k
        index = tuple(dev(k) for k in index) if isinstance(index, tuple) else dev(index)
        cupyx.scatter_add(target, index, values)

    def memory_stats(self) -> dict:
        return memory.stats(self._gpu.id)

    # ------------------------------------------------------------------ GEMM
    def _gemm(self, a):
        """gpugrad's capturable cuBLAS handle when the linear layer's GEMMs go through it (inside
        ``graphed_step``, or ``gg.cuda.set_gemm_path("cublas")``) and ``a``'s dtype suits it; else None
        (``cupy.matmul``)."""
        if not _cublas.active() or a.dtype not in _cublas.DATA_TYPES:
            return None
        return _cublas.get(self.state, self.xp)

    def linear_forward(self, x, w):
        """``x @ w.T`` through cuBLAS (TF32 for float32 when enabled; float16 accumulates in float32)."""
        g = self._gemm(x)
        if g is None or w.dtype != x.dtype:
            return self.xp.matmul(x, w.T)
        return g.matmul(x, w, False, True, stream=self.xp.cuda.get_current_stream().ptr, tf32=get_tf32())

    def linear_backward(self, dz, x, w, need_dx: bool, need_dw: bool, dw_out=None):
        """``(dz @ w, dz.T @ x)`` (None where not needed): ``cupy.matmul``, or the capturable handle;
        ``dw`` copied into ``dw_out`` when given (this backend registers no gradient slots)."""
        g = self._gemm(dz)
        if g is None or (need_dx and w.dtype != dz.dtype) or (need_dw and x.dtype != dz.dtype):
            return super().linear_backward(dz, x, w, need_dx, need_dw, dw_out)
        st, tf32 = self.xp.cuda.get_current_stream().ptr, get_tf32()
        dx = g.matmul(dz, w, False, False, stream=st, tf32=tf32) if need_dx else None
        dw = g.matmul(dz, x, True, False, stream=st, tf32=tf32) if need_dw else None
        if dw_out is not None and dw is not None:
            dw_out[...] = dw
            dw = dw_out
        return dx, dw

    # ------------------------------------------------------------------ activations
    def act_forward(self, z, act: str, params=None, out=None):
        if act == "identity" or act not in CODES or not _is_float(z) or z.size == 0 or \
                (out is not None and out is not z):
            return super().act_forward(z, act, params, out)
        xp = self.xp
        if out is z:
            if not z.flags.c_contiguous:
                return super().act_forward(z, act, params, out)
            src = y = z
        else:
            src = xp.ascontiguousarray(z)
            y = xp.empty(src.shape, src.dtype)
        s2, y2 = src.reshape(1, -1), y.reshape(1, -1)
        mb = self._launch.max_blocks
        prm = act_params(act, params)
        if self._launch.run("act_forward", z.dtype,
                            lambda st, a, o: _k_ba.bias_act(a, None, o, act, prm, stream=st, max_blocks=mb),
                            lambda a, o: _k_c.bias_act(a, None, o, act, prm, state=self.state, max_blocks=mb), s2, y2):
            return y
        return super().act_forward(z, act, params, out)

    def act_derivative(self, dy, saved, act: str, params=None, order: int = 1):
        """One kernel pass for the orders the kernels compute (``KERNEL_ORDERS``: 1 and 2); the generic
        array code for higher orders."""
        if act == "identity" or act not in CODES or order not in KERNEL_ORDERS or not _is_float(dy, saved) or \
                dy.size == 0 or dy.shape != saved.shape or dy.dtype != saved.dtype:
            return super().act_derivative(dy, saved, act, params, order)
        xp = self.xp
        d = xp.ascontiguousarray(dy)
        s = xp.ascontiguousarray(saved)
        dz = xp.empty(d.shape, d.dtype)
        mb = self._launch.max_blocks
        prm = act_params(act, params)
        if self._launch.run("act_backward", dy.dtype,
                            lambda st, a, b, o: _k_ba.act_backward(a, b, o, act, prm, order, stream=st, max_blocks=mb),
                            lambda a, b, o: _k_c.act_backward(a, b, o, act, prm, order, state=self.state,
                                                                  max_blocks=mb),
                            d.reshape(1, -1), s.reshape(1, -1), dz.reshape(1, -1)):
            return dz
        return super().act_derivative(dy, saved, act, params, order)

    # ------------------------------------------------------------------ fused linear layer
    def bias_act(self, z, b, act: str, params=None):
        """In place on ``z`` (a fresh GEMM output): one kernel pass ``y = act(z + b)``."""
        if act == "identity" and b is None:
            return z, None
        if act not in CODES or z.ndim != 2 or not _is_float(z) or not z.flags.c_contiguous or z.size == 0 or \
                (b is not None and (b.ndim != 1 or b.dtype != z.dtype or b.shape[0] != z.shape[1])):
            return super().bias_act(z, b, act, params)
        xp = self.xp
        if b is not None and not b.flags.c_contiguous:
            b = xp.ascontiguousarray(b)
        prm = act_params(act, params)
        in_place = saves(act, prm) != "z"
        y = z if in_place else xp.empty(z.shape, z.dtype)
        write_z = (not in_place) and b is not None  # GELU keeps z + b for its backward
        mb = self._launch.max_blocks
        if self._launch.run(
                "bias_act", z.dtype,
                lambda st, zz, bb, yy: _k_ba.bias_act(zz, bb, yy, act, prm, write_z, stream=st, max_blocks=mb),
                lambda zz, bb, yy: _k_c.bias_act(zz, bb, yy, act, prm, write_z, state=self.state, max_blocks=mb), z, b, y):
            if act == "identity":
                return z, None
            return (y, y) if in_place else (y, z)
        return super().bias_act(z, b, act, params)

    def act_bias_backward(self, dy, saved, act: str, with_bias: bool, params=None, order: int = 1, db_out=None):
        """One kernel pass: ``dz = dy * d^order act`` (order 1, or 2 for a double backward) and per-block
        partial sums of ``dz`` over rows, then one small deterministic reduction for ``db`` (copied into
        ``db_out`` when given)."""
        if db_out is not None:
            dz, db = self.act_bias_backward(dy, saved, act, with_bias, params, order)
            if db is not None:
                db_out[...] = db
                db = db_out
            return dz, db
        if act == "identity" and not with_bias and order == 1:
            return dy, None
        if act not in CODES or order not in KERNEL_ORDERS or dy.ndim != 2 or not _is_float(dy) or dy.size == 0 or \
                (saved is not None and (saved.shape != dy.shape or saved.dtype != dy.dtype)) or \
                (saved is None and act != "identity"):
            return super().act_bias_backward(dy, saved, act, with_bias, params, order)
        xp = self.xp
        d = dy if dy.flags.c_contiguous else xp.ascontiguousarray(dy)
        s = d if saved is None else saved if saved.flags.c_contiguous else xp.ascontiguousarray(saved)
        M, N = d.shape
        dt = d.dtype
        dz = None if (act == "identity" and order == 1) else xp.empty((M, N), dt)
        db = xp.empty((N,), dt) if with_bias else None
        tb = self._launch.target_blocks
        partial = None
        if with_bias:  # the scratch of both kernel sets' column sums, allocated here once
            row_blocks = _k_abg.plan(M, N, 32, 8, tb)[1]
            partial = xp.empty((row_blocks, N), compute_dtype(dt))
        prm = act_params(act, params)
        if self._launch.run(
                "act_bias_backward", dt,
                lambda st, a, b_, o, g, p: _k_abg.act_bias_grad(a, b_, o, g, act, prm, order, partial=p, stream=st,
                                                               TX=32, TY=8, target_blocks=tb),
                lambda a, b_, o, g, p: _k_c.act_bias_grad(a, b_, o, g, act, prm, order, state=self.state,
                                                          target_blocks=tb, partial=p),
                d, s, dz, db, partial):
            return (dy if dz is None else dz), db
        return super().act_bias_backward(dy, saved, act, with_bias, params, order)

    # ------------------------------------------------------------------ loss
    def softmax_cross_entropy(self, logits, target, ignore_index: int = -100, check_op: str | None = None):
        """One block per row: online max/sum-exp in one read, then one write of the probabilities. With
        ``check_op`` the kernel also folds out-of-range targets into the lazy error record."""
        if logits.ndim != 2 or not _is_float(logits) or target.ndim != 1 or target.dtype.kind not in "iu" or \
                logits.shape[0] == 0 or logits.shape[1] == 0 or (check_op is not None and check_at_op()):
            return super().softmax_cross_entropy(logits, target, ignore_index, check_op)
        xp = self.xp
        x = xp.ascontiguousarray(logits)
        t = xp.ascontiguousarray(target.astype(np.int64, copy=False))
        M = x.shape[0]
        loss = xp.empty((M,), x.dtype)
        probs = xp.empty(x.shape, x.dtype)
        err = self._err_record() if check_op is not None else None
        mb = self._launch.max_blocks
        if self._launch.run(
                "softmax_cross_entropy", logits.dtype,
                lambda st, a, tt, lo, p, e: _k_sx.softmax_xent_forward(a, tt, lo, p, ignore_index, e, stream=st,
                                                                      max_blocks=mb),
                lambda a, tt, lo, p, e: _k_c.softmax_xent_forward(a, tt, lo, p, ignore_index, e, state=self.state,
                                                                 max_blocks=mb),
                x, t, loss, probs, err):
            if check_op is not None:
                self._validated((check_op, x.shape[1], int(ignore_index)))
            return loss, probs
        return super().softmax_cross_entropy(logits, target, ignore_index, check_op)

    def cross_entropy_backward(self, probs, target, g, mul: float = 1.0, ignore_index: int = -100,
                               label_smoothing: float = 0.0):
        """``d logits = (probs - eps/C - (1-eps) onehot(target)) * g[row] * mul``, 0 on ignored rows, in
        one pass. ``g``: the incoming gradient, a 0-d/1-element array (``mean``/``sum``) or one per row
        (``none``); ``mul``: 1/count for ``mean``, else 1."""
        xp = self.xp
        M, C = probs.shape
        g1 = xp.ascontiguousarray(xp.asarray(g, dtype=probs.dtype).reshape(-1))
        if _is_float(probs) and M * C and target.ndim == 1 and g1.shape[0] in (1, M):
            p = xp.ascontiguousarray(probs)
            t = xp.ascontiguousarray(target.astype(np.int64, copy=False))
            d = xp.empty(p.shape, p.dtype)
            mb = self._launch.max_blocks
            if self._launch.run(
                    "cross_entropy_backward", probs.dtype,
                    lambda st, a, tt, gg, o: _k_sx.softmax_xent_backward(a, tt, gg, o, mul, ignore_index,
                                                                        label_smoothing, stream=st, max_blocks=mb),
                    lambda a, tt, gg, o: _k_c.softmax_xent_backward(a, tt, gg, o, mul, ignore_index,
                                                                   label_smoothing, state=self.state, max_blocks=mb),
                    p, t, g1, d):
                return d
        return super().cross_entropy_backward(probs, target, g1, mul, ignore_index, label_smoothing)

    # ------------------------------------------------------------------ layer normalisation (kernels/layernorm.py)
    def layer_norm_forward(self, x2, w, b, eps: float):
        """One block per row (CUDA C) or one thread per row (Numba), generated from the definition in
        ``gpugrad/kernels/layernorm.py``; float16 and odd layouts run the generic code."""
        if x2.dtype not in _FLOATS[1:] or x2.size == 0 or any(a is not None and a.dtype != x2.dtype for a in (w, b)):
            return super().layer_norm_forward(x2, w, b, eps)
        xp = self.xp
        m, n = x2.shape
        x = xp.ascontiguousarray(x2)
        wc = xp.ones(n, x.dtype) if w is None else xp.ascontiguousarray(w)
        bc = xp.zeros(n, x.dtype) if b is None else xp.ascontiguousarray(b)
        y, mean, rstd = xp.empty_like(x), xp.empty(m, x.dtype), xp.empty(m, x.dtype)
        mb = self._launch.max_blocks
        if self._launch.run(
                "layer_norm_forward", x.dtype,
                lambda st, *a: _numba_launch(_k_ln.numba_cuda_kernels(x.dtype)[0], m, st, a[0], a[1], a[2], eps,
                                             *a[3:]),
                lambda *a: _k_ln.launch_forward(a[0], a[1], a[2], eps, *a[3:], state=self.state, max_blocks=mb),
                x, wc, bc, y, mean, rstd):
            return y, mean, rstd
        return super().layer_norm_forward(x2, w, b, eps)

    def layer_norm_backward(self, dy, x2, w, mean, rstd, need_dx: bool, need_params: bool):
        if x2.dtype not in _FLOATS[1:] or x2.size == 0 or any(a is not None and a.dtype != x2.dtype
                                                             for a in (w, dy, mean, rstd)):
            return super().layer_norm_backward(dy, x2, w, mean, rstd, need_dx, need_params)
        xp = self.xp
        m, n = x2.shape
        x, d = xp.ascontiguousarray(x2), xp.ascontiguousarray(dy)
        wc = xp.ones(n, x.dtype) if w is None else xp.ascontiguousarray(w)
        dx = xp.empty_like(x) if need_dx else None
        dw, db = (xp.empty(n, x.dtype), xp.empty(n, x.dtype)) if need_params else (None, None)
        mb = self._launch.max_blocks

        def nb(st, xx, ww, gg, mm, rr, dxx, dww, dbb):
            k = _k_ln.numba_cuda_kernels(x.dtype)
            if dxx is not None:
                _numba_launch(k[1], m, st, xx, ww, gg, mm, rr, dxx)
            if dww is not None:
                _numba_launch(k[2], n, st, xx, gg, mm, rr, dww, dbb)
        if self._launch.run("layer_norm_backward", x.dtype, nb,
                            lambda *a: _k_ln.launch_backward(a[2], a[0], a[1], *a[3:], state=self.state, max_blocks=mb),
                            x, wc, d, mean, rstd, dx, dw, db):
            return dx, dw, db
        return super().layer_norm_backward(dy, x2, w, mean, rstd, need_dx, need_params)

    # ------------------------------------------------------------------ optimizers
    def gather_flat(self, arrays: list, out) -> None:
        """``arrays`` flattened into consecutive ranges of the 1-D ``out``: one kernel launch for up to
        128 arrays, its pointer table passed by value (``fused.cu: gather``), no host-to-device copy.
        Never ``cupy.concatenate``: for more than 8 arrays it copies a host table of pointers to the
        device (``cupy/_core/_routines_manipulation.pyx: _concatenate_single_kernel``), a hidden
        transfer per step that CUDA graph capture refuses. Without the kernel: one copy per array."""
        if len(arrays) > 1 and _is_float(out) and out.ndim == 1 and out.flags.c_contiguous and \
                all(a.dtype == out.dtype and a.flags.c_contiguous for a in arrays):
            if self._launch.run("gather", out.dtype, None,
                                lambda o: _k_c.gather(arrays, o, state=self.state, max_blocks=self._launch.max_blocks),
                                out):
                return
        i = 0
        for a in arrays:
            n = a.size
            out[i:i + n] = a.reshape(-1)
            i += n

    def optim_step(self, rule, arrays: dict, start: int, end: int, options: dict, derived: tuple = (), step=None,
                   found_inf=None) -> None:
        """One launch over ``[start, end)`` of the flat buffers (the kernel generated from ``rule``)."""
        p = arrays["p"]
        names = list(arrays)
        if not (_is_float(p) and end > start and all(a.ndim == 1 and a.dtype == p.dtype and a.flags.c_contiguous
                                                     for a in arrays.values())):
            return super().optim_step(rule, arrays, start, end, options, derived, step, found_inf)
        mb = self._launch.max_blocks
        extra = (step, found_inf) if step is not None else ()

        def unpack(a):
            return dict(zip(names, a[:len(names)])), (a[len(names):] or (None, None))

        def nb(st, *a):
            arr, (s, f) = unpack(a)
            _k_opt.step_numba(rule, arr, start, end, options, derived, s, f, stream=st, max_blocks=mb)

        def cc(*a):
            arr, (s, f) = unpack(a)
            _k_opt.step_cuda_c(rule, arr, start, end, options, derived, s, f, state=self.state, max_blocks=mb)
        if not self._launch.run(f"{rule.name}_step", p.dtype, nb, cc, *arrays.values(), *extra):
            super().optim_step(rule, arrays, start, end, options, derived, step, found_inf)
