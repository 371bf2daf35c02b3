"""The CPU backend: NumPy arrays, BLAS GEMMs, in-place fused passes."""
from __future__ import annotations

import numpy as np

from .._device import device
from .base import Backend

_erf_ufunc = None


def _get_erf():
    """Vectorised erf: SciPy's if present, else a Numba ufunc over ``math.erf`` (compiled once)."""
    global _erf_ufunc
    if _erf_ufunc is None:
        try:
            from scipy.special import erf as _erf  # type: ignore
        except ImportError:  # pragma: no cover - scipy is usually present
            import math

            import numba

            @numba.vectorize(["float32(float32)", "float64(float64)"], cache=False)
            def _erf(x):  # type: ignore
                return math.erf(x)
        _erf_ufunc = _erf
    return _erf_ufunc


class CPUBackend(Backend):
    """NumPy on the host."""

    name = "cpu"
    xp = np

    def __init__(self, dev: device) -> None:
        super().__init__(dev)

    def to_numpy(self, a) -> np.ndarray:
        return a

    def from_numpy(self, a: np.ndarray):
        return a

    def erf(self, x):
        out = _get_erf()(x)
        return out.astype(x.dtype, copy=False)
