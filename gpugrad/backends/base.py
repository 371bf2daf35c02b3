"""The backend interface. Generic methods are written once over ``self.xp`` (NumPy or CuPy);
backends override the fused hot paths with their own kernels."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._device import device
from ..kernels import optim_codegen


class DeviceUnavailableError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


# Activation codes shared by every backend and kernel.
ACTIVATIONS = ("identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh")

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# splitmix64 constants (counter-based RNG: the same stream on every device)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def saves_output(act: str, slope: float = 0.01) -> bool:
    """True if the activation's derivative is computed from its output ``y`` (so only ``y`` is saved);
    False if it needs the pre-activation ``z`` (GELU; LeakyReLU with a negative slope, whose output
    sign no longer tells the branch) or nothing (identity)."""
    return act in ("relu", "sigmoid", "tanh") or (act == "leaky_relu" and slope >= 0)


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

    def owns(self, a) -> bool:
        """True if ``a`` owns its memory (not a view of another array)."""
        return a.base is None

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
    def act_forward(self, z, act: str, slope: float = 0.01, out=None):
        """``y = act(z)``; ``out`` may be ``z`` itself (in place)."""
        xp = self.xp
        if act == "identity":
            if out is None:
                return z.copy()
            if out is not z:
                out[...] = z
            return out
        if act == "relu":
            return xp.maximum(z, 0, out=out)
        if act == "leaky_relu":
            y = xp.where(z > 0, z, z * z.dtype.type(slope))
            return y if out is None else _assign(out, y)
        if act == "sigmoid":
            # 1 / (1 + exp(-z)) without overflow warnings: exp of a clipped argument
            t = xp.negative(z, out=out)
            xp.minimum(t, _exp_limit(z.dtype), out=t)
            xp.exp(t, out=t)
            t += 1
            return xp.reciprocal(t, out=t)
        if act == "tanh":
            return xp.tanh(z, out=out)
        if act == "gelu":
            y = 0.5 * z * (1.0 + self.erf(z * _INV_SQRT_2))
            return y.astype(z.dtype, copy=False) if out is None else _assign(out, y)
        if act == "gelu_tanh":
            inner = _SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
            y = 0.5 * z * (1.0 + xp.tanh(inner))
            return y.astype(z.dtype, copy=False) if out is None else _assign(out, y)
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")

    def act_backward(self, dy, saved, act: str, slope: float = 0.01):
        """``dz = dy * act'(.)`` where ``saved`` is ``y`` for output-derived activations, ``z`` for GELU."""
        xp = self.xp
        if act == "identity":
            return dy
        if act == "relu":
            return xp.where(saved > 0, dy, dy.dtype.type(0))
        if act == "leaky_relu":
            return xp.where(saved > 0, dy, dy * dy.dtype.type(slope))
        if act == "sigmoid":
            return dy * saved * (1 - saved)
        if act == "tanh":
            return dy * (1 - saved * saved)
        if act == "gelu":
            z = saved
            cdf = 0.5 * (1.0 + self.erf(z * _INV_SQRT_2))
            pdf = xp.exp(-0.5 * z * z) * _INV_SQRT_2PI
            return (dy * (cdf + z * pdf)).astype(dy.dtype, copy=False)
        if act == "gelu_tanh":
            z = saved
            inner = _SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)
            th = xp.tanh(inner)
            d = 0.5 * (1.0 + th) + 0.5 * z * (1.0 - th * th) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * z * z)
            return (dy * d).astype(dy.dtype, copy=False)
        raise ValueError(f"unknown activation {act!r}; expected one of {ACTIVATIONS}")

    # ------------------------------------------------------------------ fused hot paths
    def linear_forward(self, x, w):
        """``x @ w.T`` through the device's GEMM (a fresh array the caller may overwrite)."""
        return x @ w.T

    def linear_backward(self, dz, x, w, need_dx: bool, need_dw: bool):
        """The two GEMMs of a linear layer's backward: ``(dz @ w, dz.T @ x)`` (None where not needed)."""
        return (dz @ w if need_dx else None), (dz.T @ x if need_dw else None)

    def bias_act(self, z, b, act: str, slope: float = 0.01):
        """In place on ``z``: ``z = act(z + b)``. Returns ``(y, saved)`` where ``saved`` is what
        :meth:`act_backward` needs (``y`` itself, the pre-activation for GELU, ``None`` for identity)."""
        if b is not None:
            z += b
        if act == "identity":
            return z, None
        if saves_output(act, slope):
            y = self.act_forward(z, act, slope, out=z)
            return y, y
        return self.act_forward(z, act, slope), z

    def act_bias_backward(self, dy, saved, act: str, with_bias: bool, slope: float = 0.01):
        """Fused ``dz = dy * act'`` and ``db = dz.sum(0)`` (``db`` is ``None`` without bias)."""
        dz = self.act_backward(dy, saved, act, slope)
        db = dz.reshape(-1, dz.shape[-1]).sum(axis=0) if with_bias else None
        return dz, db

    def softmax_cross_entropy(self, logits, target, ignore_index: int = -100):
        """Per-row loss and softmax probabilities, stable (max-subtracted). ``target``: int class ids."""
        xp = self.xp
        m = logits.max(axis=1, keepdims=True)
        shifted = logits - m
        e = xp.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        logp_t = xp.take_along_axis(shifted, xp.clip(target, 0, None)[:, None], axis=1)[:, 0] - xp.log(s[:, 0])
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
        d[xp.arange(n), xp.where(valid, target, 0)] -= probs.dtype.type(1 - label_smoothing)
        w = xp.broadcast_to(xp.asarray(g, dtype=probs.dtype).reshape(-1), (n,)) * probs.dtype.type(mul)
        d *= xp.where(valid, w, probs.dtype.type(0))[:, None]
        return d

    # ------------------------------------------------------------------ optimizers (multi-tensor)
    def optim_step(self, rule, arrays: dict, start: int, end: int, options: dict, derived: tuple = (), step=None,
                   found_inf=None) -> None:
        """One optimizer update (``rule`` from ``kernels/optim_rules.py``) of elements ``[start, end)`` of the
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


def _exp_limit(dt) -> float:
    """Largest argument whose ``exp`` is finite in ``dt`` (less a margin)."""
    return float(np.log(np.finfo(dt).max)) - 1.0


def _assign(out, value):
    out[...] = value
    return out
