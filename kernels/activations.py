"""Activation codes, NumPy references, and the Numba CUDA device functions every fused kernel uses.

Codes are shared with the CUDA C sources (``fused.cu``): keep both in step.
"""
from __future__ import annotations

import math

import numpy as np

from . import _numba

CODES = {"identity": 0, "relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4, "gelu": 5, "gelu_tanh": 6}
SAVES_OUTPUT = ("relu", "leaky_relu", "sigmoid", "tanh")  # derivative from y; GELU needs z

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def act_code(name: str) -> int:
    try:
        return CODES[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {tuple(CODES)}") from None


# ---------------------------------------------------------------------------------------- references
def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x.astype(np.float64)


def act_forward_ref(z, act: str, slope: float = 0.01) -> np.ndarray:
    """``act(z)`` in float64 (the reference the kernels are tested against)."""
    z = np.asarray(z, dtype=np.float64)
    if act == "identity":
        return z.copy()
    if act == "relu":
        return np.where(z < 0, 0.0, z)
    if act == "leaky_relu":
        return np.where(z > 0, z, z * slope)
    if act == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    if act == "tanh":
        return np.tanh(z)
    if act == "gelu":
        return 0.5 * z * (1.0 + _erf(z * _INV_SQRT_2))
    if act == "gelu_tanh":
        return 0.5 * z * (1.0 + np.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z ** 3)))
    raise ValueError(f"unknown activation {act!r}")


def act_backward_ref(dy, saved, act: str, slope: float = 0.01) -> np.ndarray:
    """``dz = dy * act'`` in float64; ``saved`` is ``y`` (ReLU, LeakyReLU, sigmoid, tanh) or ``z`` (GELU)."""
    dy = np.asarray(dy, dtype=np.float64)
    if act == "identity":
        return dy.copy()
    s = np.asarray(saved, dtype=np.float64)
    if act == "relu":
        return np.where(s > 0, dy, 0.0)
    if act == "leaky_relu":
        return np.where(s > 0, dy, dy * slope)
    if act == "sigmoid":
        return dy * s * (1.0 - s)
    if act == "tanh":
        return dy * (1.0 - s * s)
    if act == "gelu":
        cdf = 0.5 * (1.0 + _erf(s * _INV_SQRT_2))
        pdf = np.exp(-0.5 * s * s) * _INV_SQRT_2PI
        return dy * (cdf + s * pdf)
    if act == "gelu_tanh":
        th = np.tanh(_SQRT_2_OVER_PI * (s + 0.044715 * s ** 3))
        d = 0.5 * (1.0 + th) + 0.5 * s * (1.0 - th * th) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * s * s)
        return dy * d
    raise ValueError(f"unknown activation {act!r}")


# ---------------------------------------------------------------------------------------- device code
def device_functions(cdt):
    """``(act_fwd(v, code, slope), act_bwd(dy, s, code, slope))`` as Numba CUDA device functions that
    compute in ``cdt`` (float32 or float64); built once per dtype."""
    cdt = np.dtype(cdt)
    return _numba.cached(("act_device", cdt.str), lambda: _build_device_functions(cdt))


def _build_device_functions(cdt: np.dtype):
    cuda = _numba.nb_cuda()
    c = cdt.type
    ZERO, ONE, HALF = c(0.0), c(1.0), c(0.5)
    K_INV_SQRT_2, K_INV_SQRT_2PI, K_SQRT_2_OVER_PI = c(_INV_SQRT_2), c(_INV_SQRT_2PI), c(_SQRT_2_OVER_PI)
    K_GELU_A, K_GELU_3A = c(0.044715), c(3 * 0.044715)

    @cuda.jit(device=True, inline=True)
    def act_fwd(v, code, slope):
        if code == 1:
            return ZERO if v < ZERO else v
        if code == 2:
            return v if v > ZERO else v * slope
        if code == 3:
            if v >= ZERO:
                return ONE / (ONE + math.exp(-v))
            e = math.exp(v)
            return e / (ONE + e)
        if code == 4:
            return math.tanh(v)
        if code == 5:
            return HALF * v * (ONE + math.erf(v * K_INV_SQRT_2))
        if code == 6:
            return HALF * v * (ONE + math.tanh(K_SQRT_2_OVER_PI * (v + K_GELU_A * v * v * v)))
        return v

    @cuda.jit(device=True, inline=True)
    def act_bwd(dy, s, code, slope):
        if code == 1:
            return dy if s > ZERO else ZERO
        if code == 2:
            return dy if s > ZERO else dy * slope
        if code == 3:
            return dy * s * (ONE - s)
        if code == 4:
            return dy * (ONE - s * s)
        if code == 5:
            cdf = HALF * (ONE + math.erf(s * K_INV_SQRT_2))
            pdf = math.exp(-HALF * s * s) * K_INV_SQRT_2PI
            return dy * (cdf + s * pdf)
        if code == 6:
            th = math.tanh(K_SQRT_2_OVER_PI * (s + K_GELU_A * s * s * s))
            d = HALF * (ONE + th) + HALF * s * (ONE - th * th) * K_SQRT_2_OVER_PI * (ONE + K_GELU_3A * s * s)
            return dy * d
        return dy

    return act_fwd, act_bwd
