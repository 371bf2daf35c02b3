"""Host work of a CUDA training step, counted without a GPU (benchmarks/host_overhead.py's worker: the
real CUDA backend on the strict CuPy stand-in, kernels and GEMMs no-ops). Counts only, no timings:
no device-to-host read anywhere in a step, at most 3 kernel launches per Linear layer plus a constant
(forward, cross-entropy, backward), 3 GEMMs per layer (2 for the first: no input gradient)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "host_overhead.py")


def _count(depth: int, opt: str) -> dict:
    r = subprocess.run([sys.executable, SCRIPT, "--worker", ROOT, "8", str(depth), "8", opt, "--repeats", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_training_step_counts_on_the_strict_stand_in(opt):
    a, b = _count(2, opt), _count(3, opt)
    for r in (a, b):
        assert r["d2h"] == 0 and r["d2h_by_phase"] == {"fwd": 0, "bwd": 0, "opt": 0}, r
    per_layer = b["launches_excl_optimizer"] - a["launches_excl_optimizer"]
    constant = a["launches_excl_optimizer"] - per_layer * a["layers"]
    assert per_layer <= 3, (per_layer, a["kernels"], b["kernels"])
    assert constant <= 12, (constant, a["kernels"])
    assert b["gemms"] - a["gemms"] == 3 and a["gemms"] == 3 * a["layers"] - 1
    assert a["kernels"].get("softmax_xent_fwd_f32") == 1  # the fused loss ran (and validated the targets)
