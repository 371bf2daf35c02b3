"""The backend interface. Generic methods are written once over ``self.xp`` (NumPy or CuPy);
backends override the fused hot paths with their own kernels."""
from __future__ import annotations

import contextlib
import math
from operator import methodcaller
from typing import Any

import numpy as np

from .._device import device
from .._errors import IndexRangeError, named_error
from ..kernels import layernorm, optim_codegen
from ..kernels.activations import ALL as _ACT_ALL
from ..kernels.activations import params as _act_params
from ..kernels.activations import saves, xp_functions

_flatten = methodcaller("reshape", -1)


class DeviceUnavailableError(RuntimeError):
    """A device was asked for that this machine cannot provide."""



# splitmix64 constants (counter-based RNG: the same stream on every device)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


class Backend:
    """Operations on raw arrays of one device. Subclasses set ``xp`` and may override hot paths."""

    name = "abstract"
    xp: Any = None

    def __init__(self, dev: device) -> None:
        self.device = dev
        self.seed = 67280421310721  # PyTorch's default initial seed
        self.offset = 0

    # ------------------------------------------------------------------ arrays
    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        raise NotImplementedError

    def from_numpy(self, a: np.ndarray):
        raise NotImplementedError

    def is_array(self, a) -> bool:
        return isinstance(a, self.xp.ndarray)

    def synchronize(self) -> None:
        pass

    def sum_to_shape(self, g, shape: tuple):
        """Sum a broadcast gradient back to ``shape`` (the inverse of broadcasting)."""
        if g.shape == shape:
            return g
        nd = g.ndim - len(shape)
        if nd < 0:
            return g.reshape(shape)
        if nd:
            g = g.sum(axis=tuple(range(nd)))
        axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
        if axes:
            g = g.sum(axis=axes, keepdims=True)
        return g

    def index_add(self, target, index, values) -> None:
        """``target[index] += values`` with repeated indices accumulated."""
        self.xp.add.at(target, index, values)

    # Methods a backward formula calls where array and Tensor spellings differ; the graph backend
    # (gpugrad/ops/graph_backend.py) gives each a differentiable form, so one formula serves both modes.
    def detach(self, a):
        """The values of ``a`` without any graph: ``a`` itself for an array (the graph backend gives a
        Tensor's data). For piecewise-constant factors (masks, signs, tie counts)."""
        return a

    def getitem_backward(self, g, key, shape: tuple, advanced: bool, first=None):
        """Zeros of ``shape`` with ``g`` added at ``key`` (repeated indices accumulate when
        ``advanced``), within ``out[first]`` when given: the gradient of ``x[key]`` (``x[first][key]``)."""
        out = self.xp.zeros(shape, dtype=g.dtype)
        view = out if first is None else out[first]
        if advanced:
            self.index_add(view, key, g)
        else:
            view[key] = g
        return out

    def astype(self, a, dtype):
        """``a`` in ``dtype`` (a gradient cast back to its input's dtype)."""
        return a.astype(dtype)

    def take_along_axis(self, x, idx, axis: int):
        """``x`` gathered at ``idx`` along ``axis`` (``xp.take_along_axis``)."""
        return self.xp.take_along_axis(x, idx, axis=axis)

    def put_along_axis_backward(self, g, idx, axis: int, shape: tuple):
        """Zeros of ``shape`` with ``g`` added at ``idx`` along ``axis`` (repeated indices accumulate):
        the gradient of ``take_along_axis``."""
        xp = self.xp
        out = xp.zeros(shape, dtype=g.dtype)
        if idx.shape[axis] == 1:  # one index per slice (max/min along a dim, a class per row): no repeats
            xp.put_along_axis(out, idx, g, axis=axis)
            return out
        full = [xp.arange(n).reshape((1,) * k + (n,) + (1,) * (idx.ndim - k - 1)) for k, n in enumerate(idx.shape)]
        full[axis] = idx
        self.index_add(out, tuple(xp.broadcast_to(i, idx.shape) for i in full), g)
        return out

    def transfer(self, x, src, dtype):
        """``x``, an array of backend ``src``'s device, as an array of this device in ``dtype``."""
        if src is not self:
            x = src.to_numpy(x)
            x = self.from_numpy(x if x.dtype == dtype else x.astype(dtype))
        return x if x.dtype == dtype else x.astype(dtype)

    def erf(self, x):
        raise NotImplementedError

    # ------------------------------------------------------------------ random (counter-based)
    def manual_seed(self, seed: int) -> None:
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.offset = 0

    def get_rng_state(self) -> tuple[int, int]:
        return (self.seed, self.offset)

    def set_rng_state(self, state) -> None:
        self.seed, self.offset = int(state[0]), int(state[1])

    def _random_bits(self, n: int):
        """``n`` 64-bit words: splitmix64 of (seed, counter). Deterministic across devices."""
        xp = self.xp
        start = self.offset
        self.offset += n
        seed_mix = (self.seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        with np.errstate(over="ignore"):
            z = xp.arange(start + 1, start + n + 1, dtype=xp.uint64)
            z *= _GOLDEN
            z += xp.uint64(seed_mix)
            z ^= z >> xp.uint64(30)
            z *= _M1
            z ^= z >> xp.uint64(27)
            z *= _M2
            z ^= z >> xp.uint64(31)
        return z

    def rand(self, shape: tuple, dtype) -> Any:
        """Uniform [0, 1) samples."""
        n = int(np.prod(shape, dtype=np.int64))
        bits = self._random_bits(n)
        u = (bits >> self.xp.uint64(11)).astype(self.xp.float64) * (1.0 / 9007199254740992.0)
        return u.reshape(shape).astype(dtype, copy=False)

    def randn(self, shape: tuple, dtype) -> Any:
        """Standard normal samples (Box-Muller over the counter stream)."""
        xp = self.xp
        n = int(np.prod(shape, dtype=np.int64))
        m = (n + 1) // 2
        bits = self._random_bits(2 * m)
        u = (bits >> xp.uint64(11)).astype(xp.float64) * (1.0 / 9007199254740992.0)
        u1, u2 = u[:m], u[m:]
        r = xp.sqrt(-2.0 * xp.log1p(-u1))  # 1 - u1 in (0, 1]
        t = 2.0 * math.pi * u2
        out = xp.concatenate([r * xp.cos(t), r * xp.sin(t)])[:n]
        return out.reshape(shape).astype(dtype, copy=False)

    def dropout_mask(self, shape: tuple, p: float):
        """Boolean keep-mask with P(keep) = 1 - p."""
        n = int(np.prod(shape, dtype=np.int64))
        bits = self._random_bits(n)
        threshold = self.xp.uint64(min(int(p * 2.0**64), 2**64 - 1))
        return (bits >= threshold).reshape(shape)

    # ------------------------------------------------------------------ activations (generic)
    # Elements per chunk in which the generated array code of an activation's derivatives runs over large
    # contiguous arrays (0: whole arrays at once). On a CPU a formula's several passes then reuse a few
    # cache-sized temporaries instead of streaming whole arrays through memory once per pass. (Forward
    # formulas are short: there the chunks' overhead outweighed it.)
    act_chunk = 0

    # ``params``: the activation's parameters (``gpugrad/kernels/activations.py: params``): a tuple in the
    # record's order, one number (the first: leaky_relu's slope), a dict by name, or None (the defaults)
    def act_forward(self, z, act: str, params=None, out=None):
        """``y = act(z)`` (the array code generated from ``gpugrad/kernels/activations.py``); ``out`` may be
        ``z`` itself (in place)."""
        if z.ndim == 0:  # the generated code writes into temporaries: NumPy's 0-d ufunc results are scalars
            return self.act_forward(z.reshape(1), act, params, None if out is None else out.reshape(1)).reshape(())
        fwd = xp_functions(act)[0]
        with _errstate(self.xp):
            y = fwd(self.xp, self.erf, z, act_params(act, params), out)
        return y.copy() if y is z and out is None else y

    def act_backward(self, dy, saved, act: str, params=None):
        """``dz = dy * act'`` from ``saved``: what ``saves(act, params)`` names (``y``, ``z`` or nothing)."""
        return self.act_derivative(dy, saved, act, params, 1)

    def act_derivative(self, dy, s, act: str, params=None, order: int = 1):
        """``dy * d^order act / dz^order`` evaluated from the saved array ``s`` (what ``saves(act, params)``
        names; ignored when it saves nothing), ``order >= 1``: the expressions of
        ``gpugrad/kernels/activations.py: derivative``. Order 1 is the activation's backward."""
        if dy.ndim == 0:  # as act_forward: the generated code needs arrays, not NumPy's 0-d scalars
            return self.act_derivative(dy.reshape(1), None if s is None else s.reshape(1), act, params,
                                       order).reshape(())
        prm = act_params(act, params)
        same = s is not None and dy.shape == s.shape and dy.dtype == s.dtype
        bwd = xp_functions(act, reuse=same, order=order, saved=saves(act, prm))[1]
        with _errstate(self.xp):
            n = self.act_chunk
            if n and same and dy.size >= 2 * n and dy.flags.c_contiguous and s.flags.c_contiguous:
                xp, erf = self.xp, self.erf
                return _in_chunks(n, lambda dc, sc, oc: bwd(xp, erf, dc, sc, prm, oc), xp.empty_like(dy), dy, s)
            return bwd(self.xp, self.erf, dy, dy if s is None else s, prm)

    # ------------------------------------------------------------------ fused hot paths
    def linear_forward(self, x, w):
        """``x @ w.T`` through the device's GEMM (a fresh array the caller may overwrite)."""
        return x @ w.T

    def linear_backward(self, dz, x, w, need_dx: bool, need_dw: bool, dw_out=None):
        """The two GEMMs of a linear layer's backward: ``(dz @ w, dz.T @ x)`` (None where not needed);
        ``dw_out`` (optional, C-contiguous, ``w``'s shape and dtype): write ``dw`` there and return it."""
        dw = None
        if need_dw:
            dw = dz.T @ x if dw_out is None else self.xp.matmul(dz.T, x, out=dw_out)
        return (dz @ w if need_dx else None), dw

    def bias_act(self, z, b, act: str, params=None):
        """In place on ``z``: ``z = act(z + b)``. Returns ``(y, saved)`` where ``saved`` is what
        :meth:`act_backward` needs (``y`` itself, the pre-activation for GELU, ``None`` for identity)."""
        if b is not None:
            z += b
        prm = act_params(act, params)
        keep = saves(act, prm)
        if keep == "none":
            return z, None
        if keep == "y":
            y = self.act_forward(z, act, prm, out=z)
            return y, y
        return self.act_forward(z, act, prm), z

    def act_bias_backward(self, dy, saved, act: str, with_bias: bool, params=None, order: int = 1, db_out=None):
        """Fused ``dz = dy * d^order act`` and ``db = dz.sum(0)`` (``db`` is ``None`` without bias).
        Order 1 is a linear layer's backward; order 2 the same pass for its double backward. ``db_out``
        (optional, the bias's shape and dtype): write ``db`` there and return it."""
        dz = self.act_derivative(dy, saved, act, params, order)
        db = dz.reshape(-1, dz.shape[-1]).sum(axis=0, out=db_out) if with_bias else None
        return dz, db

    def check_targets(self, op: str, target, n_classes: int, ignore_index: int) -> None:
        """Raise ``IndexError`` naming ``op`` if a class target (other than ``ignore_index``) is outside
        ``[0, n_classes)``. Immediate here (host arrays: reading them costs nothing); a device backend
        validates on the device and reports at its next synchronisation (see the CUDA backend)."""
        if not target.size:
            return
        xp = self.xp
        bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
        if bool(bad.any()):
            i = int(xp.argmax(bad))
            raise named_error(IndexError,
                f"{op}: target {int(target[i])} at position {i} is out of range for {n_classes} classes "
                f"(valid: 0 to {n_classes - 1}, or ignore_index={ignore_index})")

    def check_indices(self, op: str, index, size: int, dim: int = 0) -> None:
        """Raise ``IndexRangeError`` naming ``op`` if an index (``gather``, ``embedding``, ``one_hot``) is
        outside ``[0, size)``: immediate here; a device backend validates on the device and reports at
        its next synchronisation (as class targets)."""
        if not index.size:
            return
        bad = (index < 0) | (index >= size)
        if bool(bad.any()):
            flat = bad.reshape(-1)
            i = int(self.xp.argmax(flat))
            raise named_error(IndexRangeError, f"{op}: index {int(index.reshape(-1)[i])} is out of bounds for "
                              f"dimension {dim} with size {size} (valid: 0 to {size - 1})")

    def count_divisor(self, valid, dtype):
        """The number of True in ``valid`` as a divisor of ``dtype`` (the count of a ``mean`` loss; 0 gives
        nan, as in PyTorch): a host scalar here; a device backend returns a 0-d device array (no host read)."""
        return np.dtype(dtype).type(int(valid.sum()))

    def check_unit_interval(self, op: str, p) -> None:
        """Raise ``RuntimeError`` naming ``op`` if ``p`` (probabilities) has a value outside [0, 1] (or NaN):
        immediate here; a device backend may leave it unchecked (the log then gives NaN, no host read)."""
        if p.size and not bool(((p >= 0) & (p <= 1)).all()):
            xp = self.xp
            bad = xp.logical_not((p >= 0) & (p <= 1)).reshape(-1)
            i = int(xp.argmax(bad))
            raise named_error(RuntimeError, f"{op}: all elements of input should be between 0 and 1 (probabilities); "
                              f"element {i} is {float(p.reshape(-1)[i])}. For logits, use "
                              "binary_cross_entropy_with_logits")

    def softmax_cross_entropy(self, logits, target, ignore_index: int = -100, check_op: str | None = None):
        """Per-row loss and softmax probabilities, stable (max-subtracted). ``target``: int class ids.
        With ``check_op``, the targets are validated too (:meth:`check_targets`, errors named so)."""
        if check_op is not None:
            self.check_targets(check_op, target, logits.shape[1], ignore_index)
        xp = self.xp
        m = logits.max(axis=1, keepdims=True)
        shifted = logits - m
        e = xp.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        logp_t = xp.take_along_axis(shifted, xp.clip(target, 0, logits.shape[1] - 1)[:, None], axis=1)[:, 0] - xp.log(s[:, 0])
        e /= s
        return -logp_t, e

    def cross_entropy_backward(self, probs, target, g, mul: float = 1.0, ignore_index: int = -100,
                               label_smoothing: float = 0.0):
        """``d logits = (probs - eps/C - (1-eps) onehot(target)) * g[row] * mul``; 0 on ignored rows.
        ``g`` is the incoming gradient: 0-d (mean/sum) or one value per row (reduction='none')."""
        xp = self.xp
        n, c = probs.shape
        d = probs.copy()
        if label_smoothing:
            d -= probs.dtype.type(label_smoothing / c)
        valid = target != ignore_index
        d[xp.arange(n), xp.clip(target, 0, c - 1)] -= probs.dtype.type(1 - label_smoothing)
        w = xp.broadcast_to(xp.asarray(g, dtype=probs.dtype).reshape(-1), (n,)) * probs.dtype.type(mul)
        d *= xp.where(valid, w, probs.dtype.type(0))[:, None]
        return d

    # ------------------------------------------------------------------ layer normalisation
    def layer_norm_forward(self, x2, w, b, eps: float):
        """``(y, mean, rstd)`` of the rows of ``x2`` ``(M, N)``; ``w``/``b`` ``(N,)`` or None. The array
        code generated from ``gpugrad/kernels/layernorm.py`` (float16 computes in float32)."""
        xp = self.xp
        c = x2.astype(np.float32) if x2.dtype == np.float16 else x2
        wc = xp.ones(c.shape[1], c.dtype) if w is None else w.astype(c.dtype, copy=False)
        bc = xp.zeros(c.shape[1], c.dtype) if b is None else b.astype(c.dtype, copy=False)
        y, mean, rstd = layernorm.xp_forward(xp, c, wc, bc, eps)
        return y.astype(x2.dtype, copy=False), mean, rstd

    def layer_norm_backward(self, dy, x2, w, mean, rstd, need_dx: bool, need_params: bool):
        """``(dx, dw, db)`` (None where not needed), in ``x2``'s dtype; ``mean``/``rstd`` as the forward
        returned them."""
        xp = self.xp
        dt = x2.dtype
        c = x2.astype(np.float32) if dt == np.float16 else x2
        wc = xp.ones(c.shape[1], c.dtype) if w is None else w.astype(c.dtype, copy=False)
        dx, dw, db = layernorm.xp_backward(xp, dy.astype(c.dtype, copy=False), c, wc, mean, rstd)
        return (dx.astype(dt, copy=False) if need_dx else None, dw.astype(dt, copy=False) if need_params else None,
                db.astype(dt, copy=False) if need_params else None)

    # ------------------------------------------------------------------ optimizers (multi-tensor)
    def gather_flat(self, arrays: list, out) -> None:
        """Copy ``arrays``, flattened, into consecutive ranges of the 1-D ``out`` (the optimizers' gradient
        gather into their flat buffers). No Python call per array (``map`` in C)."""
        self.xp.concatenate(list(map(_flatten, arrays)), out=out)

    def optim_step(self, rule, arrays: dict, start: int, end: int, options: dict, derived: tuple = (), step=None,
                   found_inf=None) -> None:
        """One optimizer update (``rule`` from ``gpugrad/kernels/optim_rules.py``) of elements ``[start, end)`` of the
        flat buffers in ``arrays`` (``'p'``, ``'g'`` and each state the options use), in place. ``derived``:
        the rule's per-step scalars. Capturable form: ``step`` (one-element array, the count for this
        update) and ``found_inf`` (one float32 element; nonzero: change nothing) stay on the device.
        Generic code: the rule run on whole arrays of ``self.xp``."""
        optim_codegen.xp_update(rule, self.xp, arrays, start, end, options, derived, step, found_inf)

    def unscale_check_(self, g, start: int, end: int, inv_scale: float, found_inf) -> None:
        """``g[start:end] *= inv_scale``; ``found_inf[0]`` becomes 1 if any of it is inf/NaN (stays on the
        device: no host read)."""
        xp = self.xp
        seg = g[start:end]
        seg *= seg.dtype.type(inv_scale)
        bad = xp.logical_not(xp.isfinite(seg).all())
        xp.maximum(found_inf, bad.astype(found_inf.dtype), out=found_inf)

    # ------------------------------------------------------------------ memory
    def memory_stats(self) -> dict:
        return {}




def act_params(act: str, params) -> tuple:
    """The parameters as a tuple in the record's order (a complete tuple passes through: ops normalise once)."""
    if type(params) is tuple and len(params) == _N_PARAMS.get(act, -1):
        return params
    return _act_params(act, params)


_N_PARAMS = {a.name: len(a.params) for a in _ACT_ALL}


def _in_chunks(n: int, fn, out, *arrays):
    """``fn(*chunks, out_chunk)`` over consecutive chunks of ``n`` elements of C-contiguous ``arrays`` and
    ``out`` (all of one shape; element-wise code, so chunks give the same values): returns ``out``."""
    flat = [a.reshape(-1) for a in arrays]
    o = out.reshape(-1)
    for i in range(0, o.size, n):
        j = i + n
        fn(*[a[i:j] for a in flat], o[i:j])
    return out


def _errstate(xp):
    """NumPy's overflow warnings off (``exp`` of a large argument is meant to give inf); CuPy has none."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore") if xp is np else contextlib.nullcontext()
