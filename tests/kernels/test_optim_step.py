"""Fused SGD (momentum, Nesterov, weight decay, maximize) and Adam/AdamW/AMSGrad steps."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad.kernels import optim_step as K

SIZES = [1, 13, 37]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("momentum,dampening,nesterov,wd,maximize", [
    (0.0, 0.0, False, 0.0, False), (0.9, 0.0, False, 0.0, False), (0.9, 0.1, True, 0.01, False),
    (0.5, 0.0, False, 0.1, True)])
def test_sgd_two_steps(n, momentum, dampening, nesterov, wd, maximize, rng, rel_err, tol):
    p = rng.standard_normal(n).astype(np.float32)
    buf = np.full(n, np.nan, np.float32) if momentum else None
    p_ref, buf_ref = p.astype(np.float64), None
    for step in range(2):
        g = rng.standard_normal(n).astype(np.float32)
        K.sgd_step(p, g, buf, 0.1, momentum, dampening, nesterov, wd, maximize, first=step == 0, block=8,
                   max_blocks=2)
        p_ref, buf_ref = K.sgd_ref(p_ref, g, buf_ref, 0.1, momentum, dampening, nesterov, wd, maximize)
    assert rel_err(p, p_ref) < 4 * tol(np.float32)
    if momentum:
        assert rel_err(buf, buf_ref) < 4 * tol(np.float32)


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("wd,decoupled,amsgrad,maximize", [
    (0.0, False, False, False), (0.1, False, False, False), (0.1, True, True, False), (0.0, False, True, True)])
def test_adam_three_steps(dt, wd, decoupled, amsgrad, maximize, rng, rel_err, tol):
    n = 13
    p = rng.standard_normal(n).astype(dt)
    m, v = np.zeros(n, dt), np.zeros(n, dt)
    vmax = np.zeros(n, dt) if amsgrad else None
    r = (p.astype(np.float64), np.zeros(n), np.zeros(n), np.zeros(n) if amsgrad else None)
    for step in (1, 2, 3):
        g = rng.standard_normal(n).astype(dt)
        K.adam_step(p, g, m, v, step, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled, vmax, maximize, block=8, max_blocks=1)
        r = K.adam_ref(r[0], g, r[1], r[2], step, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled, r[3], maximize)
    # float16 state is rounded every step; the reference keeps float64 state
    f = 1.0 if dt != np.float16 else 3.0
    assert rel_err(p, r[0]) < 8 * f * tol(dt)
    assert rel_err(m, r[1]) < 8 * f * tol(dt)
    assert rel_err(v, r[2]) < 8 * f * tol(dt)
    if amsgrad:
        assert rel_err(vmax, r[3]) < 8 * f * tol(dt)


def test_sgd_float64_matches_exactly_enough(rng):
    p = rng.standard_normal(9)
    g = rng.standard_normal(9)
    ref = K.sgd_ref(p, g, None, 0.05, weight_decay=0.1)[0]
    K.sgd_step(p, g, None, 0.05, weight_decay=0.1, block=4)
    np.testing.assert_allclose(p, ref, rtol=1e-15, atol=1e-15)
