"""Fused softmax + cross-entropy forward (online max/sum, one block per row) and backward."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad.kernels import softmax_xent as K


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("n_classes,block", [(1, 4), (5, 4), (37, 8), (10, None)])
def test_forward_matches_reference(n_classes, block, dt, rng, rel_err, tol):
    x = (rng.standard_normal((6, n_classes)) * 3).astype(dt)
    t = rng.integers(0, n_classes, 6)
    t[2] = -100  # ignored row
    loss, probs = np.full(6, np.nan, dt), np.full(x.shape, np.nan, dt)
    K.softmax_xent_forward(x, t, loss, probs, -100, block=block, max_blocks=4)  # 4 blocks, 6 rows
    l_ref, p_ref = K.softmax_xent_ref(x, t, -100)
    assert rel_err(probs, p_ref) < 2 * tol(dt)
    assert rel_err(loss, l_ref) < 4 * tol(dt) + (1e-6 if dt == np.float32 else 0)
    assert loss[2] == 0


def test_forward_is_stable_for_huge_and_infinite_logits():
    x = np.array([[1e4, 0.0, -1e4, 1e4 - 1.0],
                  [-np.inf, 2.0, -np.inf, 1.0],
                  [-1e30, -1e30, -1e30, -1e30]], dtype=np.float32)
    t = np.array([3, 1, 0])
    loss, probs = np.empty(3, np.float32), np.empty_like(x)
    K.softmax_xent_forward(x, t, loss, probs, block=4)
    l_ref, p_ref = K.softmax_xent_ref(x.astype(np.float64), t)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, p_ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss, l_ref, rtol=1e-5, atol=1e-6)


def test_nan_logits_propagate():
    x = np.array([[0.0, np.nan, 1.0, 2.0, 3.0]], dtype=np.float32)
    loss, probs = np.empty(1, np.float32), np.empty_like(x)
    K.softmax_xent_forward(x, np.array([0]), loss, probs, block=4)
    assert np.isnan(loss[0]) and np.isnan(probs).all()


def test_block_must_be_a_power_of_two():
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError, match="power of two"):
        K.softmax_xent_forward(x, np.array([0]), np.empty(1, np.float32), np.empty_like(x), block=6)


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("per_row,smoothing", [(False, 0.0), (True, 0.0), (False, 0.1)])
def test_backward_matches_reference(per_row, smoothing, dt, rng, rel_err, tol):
    x = rng.standard_normal((7, 5))
    t = rng.integers(0, 5, 7)
    t[4] = -1  # ignore_index=-1 here
    _, p = K.softmax_xent_ref(x, t, -1)
    p = p.astype(dt)
    g = rng.standard_normal(7 if per_row else 1).astype(dt)
    mul = 1.0 if per_row else 1.0 / 6
    d = np.full(p.shape, np.nan, dt)
    K.softmax_xent_backward(p, t, g, d, mul, -1, smoothing, block=8, max_blocks=3)
    ref = K.softmax_xent_backward_ref(p, t, g, mul, -1, smoothing)
    assert rel_err(d, ref) < 2 * tol(dt)
    assert np.all(d[4] == 0)


def test_backward_rejects_a_bad_gradient_length():
    p = np.full((3, 2), 0.5, np.float32)
    with pytest.raises(ValueError, match="g must have 1 or 3 entries"):
        K.softmax_xent_backward(p, np.array([0, 1, 0]), np.ones(2, np.float32), np.empty_like(p))
