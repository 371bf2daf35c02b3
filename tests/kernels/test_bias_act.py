"""Fused bias + activation forward and the elementwise activation backward, against float64 NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad.kernels import bias_act as K
from gpugrad.kernels.activations import saves

ACTS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh"]
DTYPES = [np.float32, np.float64, np.float16]


def _poison(shape, dt):
    return np.full(shape, np.nan, dtype=dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_bias_act_out_of_place_with_z(act, dt, rng, rel_err, tol):
    z = (rng.standard_normal((5, 7)) * 2).astype(dt)
    b = rng.standard_normal(7).astype(dt)
    y_ref, zb_ref = K.bias_act_ref(z, b, act, 0.2)
    zz, y = z.copy(), _poison(z.shape, dt)
    K.bias_act(zz, b, y, act, 0.2, write_z=True, block=8, max_blocks=3)  # 24 threads: grid-stride loop
    assert rel_err(y, y_ref) < tol(dt)
    assert rel_err(zz, zb_ref) < tol(dt)


@pytest.mark.parametrize("shape", [(33, 3), (1, 1), (3, 17)])
@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_bias_act_in_place_shapes(shape, act, rng, rel_err, tol):
    z = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    y_ref, _ = K.bias_act_ref(z, b, act)
    K.bias_act(z, b, z, act, block=16)  # y is z: one read and one write per element
    assert rel_err(z, y_ref) < tol(np.float32)


def test_bias_act_without_bias_keeps_z(rng, rel_err, tol):
    z = rng.standard_normal((4, 9)).astype(np.float32)
    z0 = z.copy()
    y = _poison(z.shape, np.float32)
    K.bias_act(z, None, y, "gelu", block=8)
    assert rel_err(y, K.bias_act_ref(z0, None, "gelu")[0]) < tol(np.float32)
    np.testing.assert_array_equal(z, z0)


def test_bias_act_extremes_are_finite_and_stable():
    z = np.array([[-1e4, -88.0, -20.0, 0.0, 20.0, 88.0, 1e4]], dtype=np.float32)
    for act in ("sigmoid", "tanh", "gelu", "gelu_tanh"):
        y = _poison(z.shape, np.float32)
        K.bias_act(z.copy(), None, y, act, block=8)
        ref = K.bias_act_ref(z, None, act)[0]
        assert np.all(np.isfinite(y)), act
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6, err_msg=act)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("act", ACTS[1:])
def test_act_backward_elementwise(act, dt, rng, rel_err, tol):
    z = rng.standard_normal((6, 5)).astype(dt)
    dy = rng.standard_normal((6, 5)).astype(dt)
    y = K.bias_act_ref(z, None, act, 0.3)[0].astype(dt)
    saved = y if saves(act, 0.3) == "y" else z
    ref = K.act_backward_elementwise_ref(dy, saved, act, 0.3)
    dz = _poison(dy.shape, dt)
    K.act_backward(dy, saved, dz, act, 0.3, block=8, max_blocks=2)
    assert rel_err(dz, ref) < tol(dt)


def test_relu_backward_uses_saved_output_sign():
    y = np.array([[0.0, 1.0, 0.0, 2.0]], dtype=np.float32)
    dy = np.array([[5.0, 6.0, 7.0, 8.0]], dtype=np.float32)
    dz = _poison(y.shape, np.float32)
    K.act_backward(dy, y, dz, "relu", block=4)
    np.testing.assert_array_equal(dz, [[0.0, 6.0, 0.0, 8.0]])


def test_empty_is_a_no_op():
    z = np.empty((0, 4), np.float32)
    K.bias_act(z, np.zeros(4, np.float32), z, "relu")
    K.act_backward(z, z, z, "relu")


def test_unknown_activation_is_a_clear_error():
    z = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        K.bias_act(z, None, z, "swish")
