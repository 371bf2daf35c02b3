"""Numba ``njit`` kernels for the CPU backend's fused passes (one pass over memory each).

Measured against the NumPy formulations on 2 cores (1024x128 float32): ReLU backward + bias
gradient 44 us fused vs 140 us as ``dy * (y > 0)`` then ``dz.sum(0)``; ``np.where`` with a random mask
was 700 us. Compiled lazily, once per activation and dtype per process."""
from __future__ import annotations

import math

import numba
import numpy as np

ACT_CODES = {"identity": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4, "gelu": 5, "gelu_tanh": 6}
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@numba.njit(cache=True, inline="always")
def _act(z, code, slope):
    if code == 1:
        return z if z > 0 else z * 0
    if code == 2:
        return z if z > 0 else z * slope
    if code == 3:
        if z >= 0:
            return 1 / (1 + math.exp(-z))
        e = math.exp(z)
        return e / (1 + e)
    if code == 4:
        return math.tanh(z)
    if code == 5:
        return 0.5 * z * (1 + math.erf(z * _INV_SQRT_2))
    if code == 6:
        return 0.5 * z * (1 + math.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)))
    return z


@numba.njit(cache=True, inline="always")
def _dact(g, s, code, slope):
    """dz from dy ``g`` and the saved value ``s`` (y for codes 1-4, z for GELU)."""
    if code == 1:
        return g if s > 0 else g * 0
    if code == 2:
        return g if s > 0 else g * slope
    if code == 3:
        return g * s * (1 - s)
    if code == 4:
        return g * (1 - s * s)
    if code == 5:
        cdf = 0.5 * (1 + math.erf(s * _INV_SQRT_2))
        return g * (cdf + s * math.exp(-0.5 * s * s) * _INV_SQRT_2PI)
    if code == 6:
        inner = _SQRT_2_OVER_PI * (s + 0.044715 * s * s * s)
        th = math.tanh(inner)
        d = 0.5 * (1 + th) + 0.5 * s * (1 - th * th) * _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * s * s)
        return g * d
    return g


_cache: dict = {}


def kernels(act: str):
    """``(bias_act_inplace, bias_act_keep_z, act_bwd_bias)`` specialised for one activation: the code
    is a compile-time constant, so the per-element branches fold away and the loops vectorise."""
    k = _cache.get(act)
    if k is not None:
        return k
    code = ACT_CODES[act]

    @numba.njit(fastmath=False)
    def bias_act_inplace(z, b, has_bias, slope):
        """``z = act(z + b)`` in place (z is 2-D C-contiguous)."""
        n, m = z.shape
        sl = z.dtype.type(slope)
        if has_bias:
            for i in range(n):
                for j in range(m):
                    z[i, j] = _act(z[i, j] + b[j], code, sl)
        else:
            for i in range(n):
                for j in range(m):
                    z[i, j] = _act(z[i, j], code, sl)

    @numba.njit(fastmath=False)
    def bias_act_keep_z(z, b, has_bias, slope, y):
        """``z += b`` in place and ``y = act(z)`` (for GELU, whose backward needs z)."""
        n, m = z.shape
        sl = z.dtype.type(slope)
        for i in range(n):
            for j in range(m):
                v = z[i, j] + b[j] if has_bias else z[i, j]
                z[i, j] = v
                y[i, j] = _act(v, code, sl)

    @numba.njit(fastmath=False)
    def act_bwd_bias(g, s, slope, dz, db, has_bias):
        """``dz = g * act'(s)`` and ``db = dz.sum(0)`` in one pass."""
        n, m = g.shape
        sl = g.dtype.type(slope)
        if has_bias:
            for j in range(m):
                db[j] = 0
            for i in range(n):
                for j in range(m):
                    v = _dact(g[i, j], s[i, j], code, sl)
                    dz[i, j] = v
                    db[j] += v
        else:
            for i in range(n):
                for j in range(m):
                    dz[i, j] = _dact(g[i, j], s[i, j], code, sl)

    k = (bias_act_inplace, bias_act_keep_z, act_bwd_bias)
    _cache[act] = k
    return k


def supported(*arrays) -> bool:
    """The kernels handle 2-D C-contiguous float32/float64 arrays of one dtype."""
    dt = arrays[0].dtype
    return dt in (np.float32, np.float64) and all(
        a.ndim == 2 and a.flags.c_contiguous and a.dtype == dt for a in arrays)


_EMPTY = {np.dtype(np.float32): np.zeros(1, np.float32), np.dtype(np.float64): np.zeros(1, np.float64)}


def empty_bias(dt) -> np.ndarray:
    return _EMPTY[np.dtype(dt)]
