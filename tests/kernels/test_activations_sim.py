"""The Numba CUDA device functions generated from gpugrad/kernels/activations.py agree with the definition
(its float64 interpreter) for every activation, leaky_relu with both slope signs, in float64 and float32:
through the bias+activation kernel, the elementwise backward and the fused backward + bias gradient."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad.kernels import act_bias_grad as ABG
from gpugrad.kernels import activations as A
from gpugrad.kernels import bias_act as BA

CASES = [(a, 0.01) for a in A.ACTIVATIONS] + [("leaky_relu", 0.3), ("leaky_relu", -0.3)]
V = np.array([0.0, -0.0, 1e-30, -1e-30, 0.3, -0.3, 1.0, -1.0, 2.5, -2.5, 7.0, -7.0, 30.0, -30.0, 100.0, -100.0])


@pytest.mark.parametrize("dt,rtol,atol", [(np.float64, 1e-15, 1e-300), (np.float32, 1e-6, 1e-6)])
@pytest.mark.parametrize("act,slope", CASES, ids=[f"{a}[{k}]" for a, k in CASES])
def test_numba_cuda_device_functions_match_the_definition(act, slope, dt, rtol, atol):
    z = V.astype(dt)[None, :]
    dy = np.resize(np.array([1.0, -0.5, 2.0, 0.25]), V.size).astype(dt)[None, :]
    y = np.full(z.shape, np.nan, dt)
    BA.bias_act(z.copy(), None, y, act, slope, block=8)
    np.testing.assert_allclose(y, A.forward_ref(z, act, slope), rtol=rtol, atol=atol)
    keep = A.saves(act, slope)
    saved = {"y": y, "z": z, "none": dy}[keep]
    want = A.backward_ref(dy, saved, act, slope)
    dz = np.full(z.shape, np.nan, dt)
    BA.act_backward(dy, saved, dz, act, slope, block=8)
    np.testing.assert_allclose(dz, want, rtol=rtol, atol=atol)
    dz2, db = np.full(z.shape, np.nan, dt), np.full(z.shape[1], np.nan, dt)
    ABG.act_bias_grad(dy, saved, dz2, db, act, slope, TX=8, TY=2)
    np.testing.assert_allclose(dz2, want, rtol=rtol, atol=atol)
    np.testing.assert_allclose(db, want[0], rtol=rtol, atol=atol)
