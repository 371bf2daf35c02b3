"""Fused activation backward + bias gradient (partial sums per row tile, then a fixed-order reduction)."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad.kernels import act_bias_grad as K
from gpugrad.kernels.activations import saves
from gpugrad.kernels.bias_act import bias_act_ref

ACTS = ["identity", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh"]


def _case(rng, shape, act, dt, slope=0.1):
    z = rng.standard_normal(shape).astype(dt)
    dy = rng.standard_normal(shape).astype(dt)
    y = bias_act_ref(z, None, act, slope)[0].astype(dt)
    saved = {"y": y, "z": z, "none": dy}[saves(act, slope)]
    return dy, saved


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("act", ACTS)
def test_dz_and_db_match_reference(act, dt, rng, rel_err, tol):
    dy, saved = _case(rng, (11, 7), act, dt)
    dz_ref, db_ref = K.act_bias_grad_ref(dy, saved, act, True, 0.1)
    dz = None if act == "identity" else np.full(dy.shape, np.nan, dt)
    db = np.full(7, np.nan, dt)
    # TX=4, TY=2: 2 column tiles (7 is not a multiple of 4), several row tiles (11 rows, odd)
    K.act_bias_grad(dy, saved, dz, db, act, 0.1, TX=4, TY=2, target_blocks=6)
    if dz is not None:
        assert rel_err(dz, dz_ref) < tol(dt)
    assert rel_err(db, db_ref) < 4 * tol(dt)


@pytest.mark.parametrize("shape", [(33, 3), (1, 5), (5, 1), (2, 9)])
def test_shapes_not_multiples_of_the_block(shape, rng, rel_err, tol):
    dy, saved = _case(rng, shape, "tanh", np.float32)
    dz_ref, db_ref = K.act_bias_grad_ref(dy, saved, "tanh")
    dz, db = np.full(shape, np.nan, np.float32), np.full(shape[1], np.nan, np.float32)
    K.act_bias_grad(dy, saved, dz, db, "tanh", TX=4, TY=4, target_blocks=5)
    assert rel_err(dz, dz_ref) < tol(np.float32)
    assert rel_err(db, db_ref) < 4 * tol(np.float32)


def test_without_bias_writes_only_dz(rng, rel_err, tol):
    dy, saved = _case(rng, (6, 5), "sigmoid", np.float64)
    dz = np.full(dy.shape, np.nan)
    K.act_bias_grad(dy, saved, dz, None, "sigmoid", TX=4, TY=2)
    assert rel_err(dz, K.act_bias_grad_ref(dy, saved, "sigmoid", False)[0]) < tol(np.float64)


def test_partial_rows_are_block_sums_and_deterministic(rng):
    dy, saved = _case(rng, (13, 6), "relu", np.float32)
    _, row_blocks, rpb = K.plan(13, 6, 4, 2, 8)
    assert row_blocks > 1
    partial = np.full((row_blocks, 6), np.nan, np.float32)
    db1, db2 = np.empty(6, np.float32), np.empty(6, np.float32)
    K.act_bias_grad(dy, saved, np.empty_like(dy), db1, "relu", partial=partial, TX=4, TY=2, target_blocks=8)
    dz = K.act_bias_grad_ref(dy, saved, "relu", False)[0]
    for j in range(row_blocks):
        np.testing.assert_allclose(partial[j], dz[j * rpb:(j + 1) * rpb].sum(0), rtol=1e-5, atol=1e-6)
    K.act_bias_grad(dy, saved, np.empty_like(dy), db2, "relu", TX=4, TY=2, target_blocks=8)
    np.testing.assert_array_equal(db1, db2)  # no atomics: same bits every run


def test_partial_of_the_wrong_shape_is_refused(rng):
    dy, saved = _case(rng, (4, 4), "relu", np.float32)
    with pytest.raises(ValueError, match="partial must have shape"):
        K.act_bias_grad(dy, saved, None, np.empty(4, np.float32), "relu", partial=np.empty((9, 4), np.float32),
                        TX=4, TY=2)


def test_plan_covers_every_row_once():
    for n_rows in (1, 7, 8, 33, 1000):
        for n_cols in (1, 5, 64):
            cb, rb, rpb = K.plan(n_rows, n_cols, 32, 8, 40)
            assert cb * 32 >= n_cols and rb * rpb >= n_rows and (rb - 1) * rpb < n_rows and rpb % 8 == 0
