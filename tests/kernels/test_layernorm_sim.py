"""The Numba CUDA layer-norm kernels generated from gpugrad/kernels/layernorm.py (one thread per row or
column) against the definition's array code, under the simulator (tiny shapes) or on a GPU."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad.kernels import _numba, layernorm as L


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-4)])
@pytest.mark.parametrize("m, n", [(1, 1), (3, 5), (4, 17)])
def test_numba_cuda_layer_norm_matches_the_definition(rng, m, n, dtype, tol):
    x = (rng.standard_normal((m, n)) * 2 + 1).astype(dtype)
    w, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    dy = rng.standard_normal((m, n)).astype(dtype)
    fwd, bdx, bparams = L.numba_cuda_kernels(dtype)
    y, mean, rstd = np.empty_like(x), np.empty(m, dtype), np.empty(m, dtype)
    _numba.launch(fwd, 1, 4, None, x, w, b, 1e-5, y, mean, rstd)
    x64 = x.astype(np.float64)
    ry, rmean, rrstd = L.xp_forward(np, x64, w.astype(np.float64), b.astype(np.float64), 1e-5)
    for a, e in ((y, ry), (mean, rmean), (rstd, rrstd)):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
    dx, dw, db = np.empty_like(x), np.empty(n, dtype), np.empty(n, dtype)
    _numba.launch(bdx, 1, 4, None, x, w, dy, mean, rstd, dx)
    _numba.launch(bparams, 1, 8, None, x, dy, mean, rstd, dw, db)
    rdx, rdw, rdb = L.xp_backward(np, dy.astype(np.float64), x64, w.astype(np.float64), rmean, rrstd)
    for a, e in ((dx, rdx), (dw, rdw), (db, rdb)):
        np.testing.assert_allclose(a, e, rtol=tol * 10, atol=tol * 10)


from tests.kernels.test_cuda_backend_glue import _generic_call, be  # noqa: E402,F401  (the simulated CUDA backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_backend_launches_the_numba_layer_norm(be, rng, dtype):  # noqa: F811
    """CUDABackend.layer_norm_forward/backward with the Numba kernel set (the simulator) match the generic
    array code; without weight the kernels get ones."""
    x = rng.standard_normal((5, 9)).astype(dtype)
    w, b, dy = rng.standard_normal(9).astype(dtype), rng.standard_normal(9).astype(dtype), \
        rng.standard_normal((5, 9)).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    for ww, bb in ((w, b), (None, None)):
        be._launch.launches.clear()
        y, mean, rstd = be.layer_norm_forward(x, ww, bb, 1e-5)
        ry, rmean, rrstd = _generic_call("layer_norm_forward", x, ww, bb, 1e-5)
        got = be.layer_norm_backward(dy, x, ww, mean, rstd, True, True)
        ref = _generic_call("layer_norm_backward", dy, x, ww, rmean, rrstd, True, True)
        for a, e in zip((y, mean, rstd) + tuple(got), (ry, rmean, rrstd) + tuple(ref)):
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
        assert be._launch.launches == ["layer_norm_forward", "layer_norm_backward"]
