"""Kernel tests run only under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, in their own process:
tests/test_kernels_sim.py starts it) or on a machine with a real CUDA GPU; otherwise this directory is
skipped (not collected). Shapes stay tiny: the simulator runs each GPU thread as a Python thread."""
from __future__ import annotations

import os

import numpy as np
import pytest


def _mode() -> str | None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return "simulator"
    try:
        from numba import cuda
        if cuda.is_available():
            return "gpu"
    except Exception:
        pass
    return None


MODE = _mode()


# Not collected at all otherwise (one skipped line per test would only be noise): in the normal test run
# tests/test_kernels_sim.py runs this directory under the simulator in a subprocess and fails if it fails.
collect_ignore_glob = [] if MODE is not None else ["test_*.py"]


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


def _rel_err(out, ref) -> float:
    """||out - ref|| / ||ref|| in float64 (NaN never passes)."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if not np.all(np.isfinite(out) == np.isfinite(ref)):
        return float("inf")
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))


_TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-6, np.dtype(np.float16): 2e-3}


@pytest.fixture
def rel_err():
    return _rel_err


@pytest.fixture
def tol():
    return lambda dt: _TOL[np.dtype(dt)]
