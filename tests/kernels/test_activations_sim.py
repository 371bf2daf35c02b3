"""The Numba CUDA device functions generated from gpugrad/kernels/activations.py agree with the definition
(its float64 interpreter) for every activation, with parameters that reach each branch, in float64 and
float32: through the bias+activation kernel, the elementwise derivative kernel and the fused derivative
+ bias gradient, for every order the kernels compute (1: backward, 2: its double backward)."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad.kernels import act_bias_grad as ABG
from gpugrad.kernels import activations as A
from gpugrad.kernels import bias_act as BA

CASES = [(a, A.params(a)) for a in A.ACTIVATIONS] + [("leaky_relu", (0.3,)), ("leaky_relu", (-0.3,)),
                                                     ("softplus", (2.0, 3.0)), ("hardtanh", (-0.5, 2.0))]
V = np.array([0.0, -0.0, 1e-30, -1e-30, 0.3, -0.3, 1.0, -1.0, 2.5, -2.5, 3.0, -3.0, 7.0, -7.0, 30.0, -30.0, 100.0,
              -100.0])


@pytest.mark.parametrize("dt,rtol,atol", [(np.float64, 1e-15, 1e-300), (np.float32, 1e-6, 1e-6)])
@pytest.mark.parametrize("act,prm", CASES, ids=[f"{a}{list(p)}" for a, p in CASES])
def test_numba_cuda_device_functions_match_the_definition(act, prm, dt, rtol, atol):
    z = V.astype(dt)[None, :]
    dy = np.resize(np.array([1.0, -0.5, 2.0, 0.25]), V.size).astype(dt)[None, :]
    y = np.full(z.shape, np.nan, dt)
    BA.bias_act(z.copy(), None, y, act, prm, block=8)
    np.testing.assert_allclose(y, A.forward_ref(z, act, prm), rtol=rtol, atol=atol)
    keep = A.saves(act, prm)
    saved = {"y": y, "z": z, "none": dy}[keep]
    for order in A.KERNEL_ORDERS:
        want = A.backward_ref(dy, saved, act, prm, order)
        tol = dict(rtol=rtol, atol=atol) if order == 1 or dt == np.float32 else dict(rtol=1e-13, atol=1e-15)
        dz = np.full(z.shape, np.nan, dt)
        BA.act_backward(dy, saved, dz, act, prm, order, block=8)
        np.testing.assert_allclose(dz, want, **tol)
        dz2, db = np.full(z.shape, np.nan, dt), np.full(z.shape[1], np.nan, dt)
        ABG.act_bias_grad(dy, saved, dz2, db, act, prm, order, TX=8, TY=2)
        np.testing.assert_allclose(dz2, want, **tol)
        np.testing.assert_allclose(db, want[0], **tol)
