"""The Numba CUDA optimizer kernels generated from gpugrad/kernels/optim_rules.py (gpugrad/kernels/optim_step.py) against
the rule's definition run element by element in float64: every rule, every branch (optim_codegen.examples),
ordinary and capturable launches, float64/float32/float16 storage, a sub-range of the flat buffers."""
from __future__ import annotations

import numpy as np
import pytest

from gpugrad.kernels import optim_codegen as cg

from tests.support import optim_examples as ox
from gpugrad.kernels import optim_step as K
from gpugrad.kernels.optim_rules import RULES

CASES = [(r, o) for r in RULES.values() for o in ox.examples(r)]


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("rule,options", CASES, ids=[f"{r.name}-{i}" for i, (r, _) in enumerate(CASES)])
def test_kernel_agrees_with_the_definition_float64(rule, options, capturable, rng):
    n, start, end, step = 19, 2, 17, 3
    arrays = ox.example_arrays(rule, options, n, rng, np.float64)
    ref = cg.scalar_update(rule, arrays, options, step)
    got = {k: v.copy() for k, v in arrays.items()}
    K.step_numba(rule, got, start, end, options, **ox.step_args(rule, options, step, capturable, np), block=4,
                 max_blocks=2)
    for k in ref:
        np.testing.assert_allclose(got[k][start:end], ref[k][start:end], rtol=1e-14, atol=1e-15)
        assert np.array_equal(got[k][:start], arrays[k][:start]) and np.array_equal(got[k][end:], arrays[k][end:])


@pytest.mark.parametrize("dt", [np.float32, np.float16])
@pytest.mark.parametrize("name", list(RULES))
def test_kernel_low_precision_storage(name, dt, rng, rel_err, tol):
    rule = RULES[name]
    options = ox.examples(rule)[-3]  # every flag on
    n = 13
    arrays = ox.example_arrays(rule, options, n, rng, dt)
    ref = cg.scalar_update(rule, {k: v.astype(np.float64) for k, v in arrays.items()}, options, 2)
    K.step_numba(rule, arrays, 0, n, options, rule.derive(2, options), block=8, max_blocks=1)
    for k in ref:
        assert rel_err(arrays[k], ref[k]) < 8 * tol(dt), k


def test_capturable_kernel_skips_on_found_inf(rng):
    rule = RULES["adam"]
    options = ox.examples(rule)[0]
    arrays = ox.example_arrays(rule, options, 9, rng, np.float32)
    got = {k: v.copy() for k, v in arrays.items()}
    K.step_numba(rule, got, 0, 9, options, step=np.ones(1, np.float32), found_inf=np.ones(1, np.float32), block=4)
    for k in arrays:
        assert np.array_equal(got[k], arrays[k])


STATES = ox.torch_states()


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("case", STATES["cases"], ids=ox.state_ids(STATES))
def test_kernel_float32_matches_recorded_torch(case, capturable):
    """float32 from zero state against PyTorch 2.13's recorded values (tests/test_optim_rules.py runs the
    other implementations): complements such as 1 - beta2 are computed in double on the host, as PyTorch does."""
    rule, options = ox.rule_options(case["name"], case["kwargs"])
    p0, grads = np.array(STATES["p0"], np.float32), [np.array(g, np.float32) for g in STATES["grads"]]

    def run(*a, **k):
        K.step_numba(*a, **k, block=4, max_blocks=2)
    ox.assert_matches_torch_states(case, ox.steps_from_zero(run, rule, options, p0, grads, case["after"], capturable, np))
