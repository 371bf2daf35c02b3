"""Host work of a CUDA training step, counted without a GPU (benchmarks/host_overhead.py's worker: the
real CUDA backend on the strict CuPy stand-in, kernels and GEMMs no-ops). Counts only, no timings, on
an MLP of 8 hidden layers (18 parameters, more than the 8 arrays past which ``cupy.concatenate`` copies
a host table to the device) with one and with two param groups: no device-to-host read and no
host-to-device copy anywhere in a step, at most 3 kernel launches per Linear layer plus a constant
(forward, cross-entropy, backward), 3 GEMMs per layer (2 for the first: no input gradient), and per
param group one gradient gather and one optimizer launch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "host_overhead.py")


def _count(depth: int, opt: str, groups: int = 1) -> dict:
    r = subprocess.run([sys.executable, SCRIPT, "--worker", ROOT, "8", str(depth), "8", opt, "--repeats", "1",
                        "--groups", str(groups)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("opt,groups", [("sgd", 1), ("adam", 2)])
def test_training_step_counts_on_the_strict_stand_in(opt, groups):
    a, b = _count(8, opt, groups), _count(9, opt, groups)
    assert (a["params"], b["params"]) == (18, 20) and a["groups"] == groups
    for r in (a, b):
        assert r["d2h"] == 0 and r["d2h_by_phase"] == {"fwd": 0, "bwd": 0, "opt": 0}, r
        assert r["h2d"] == 0 and r["h2d_by_phase"] == {"fwd": 0, "bwd": 0, "opt": 0}, r
        assert r["kernel_handle_lookups"] == 0, r  # cached after the first step, not looked up per launch
        step = "sgd_1_f32" if opt == "sgd" else "adam_110_f32"  # generated: rule, state mask, dtype
        assert r["kernels"].get("gather_f32") == groups and r["kernels"].get(step) == groups, r["kernels"]
        assert r["launches_optimizer"] == 2 * groups, r  # per group: the gradient gather and the update
    per_layer = b["launches_excl_optimizer"] - a["launches_excl_optimizer"]
    constant = a["launches_excl_optimizer"] - per_layer * a["layers"]
    assert per_layer <= 3, (per_layer, a["kernels"], b["kernels"])
    assert constant <= 12, (constant, a["kernels"])
    assert b["gemms"] - a["gemms"] == 3 and a["gemms"] == 3 * a["layers"] - 1
    assert a["kernels"].get("softmax_xent_fwd_f32") == 1  # the fused loss ran (and validated the targets)


_EVERY_PATH = r"""
import os, sys
sys.path[:0] = [os.path.join(ROOT, "benchmarks"), ROOT]
import host_overhead as ho
sc = ho.load_stand_in(); ho.register_noop_kernels(sc, ROOT)
import numpy as np, gpugrad as gg
F = gg.nn.functional
out = {}
for name in ("sgd", "adam", "adamw", "rmsprop"):
    gg.manual_seed(0)
    model = gg.nn.MLP([8, 8, 8, 4], activation="relu").to("cuda")
    ps = model.parameters()
    opt = {"sgd": lambda: gg.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
           "adam": lambda: gg.optim.Adam(ps, amsgrad=True), "adamw": lambda: gg.optim.AdamW(ps),
           "rmsprop": lambda: gg.optim.RMSprop(ps, momentum=0.9, centered=True)}[name]()
    x = gg.tensor(np.random.rand(8, 8).astype(np.float32)).to("cuda")
    y = gg.tensor(np.array([0, 1, 2, 3, 3, -100, 1, 0])).to("cuda")
    c0 = sc.counters.device_to_host
    for i in range(2):
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=(i == 0))
        loss.backward()
        F.nll_loss(F.log_softmax(model(x), dim=1), y, reduction="sum").backward()
        F.mse_loss(model(x), gg.zeros(8, 4, device="cuda")).backward()
        gg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        gg.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        opt.step()
    out[name] = sc.counters.device_to_host - c0
print(out)
"""


@pytest.mark.parametrize("kernels", ["cuda_c", "xp"])
def test_no_device_to_host_read_on_any_training_path(kernels):
    """Losses (label smoothing, ignore_index, NLL, MSE), clipping, zero_grad and every optimizer,
    with the fused kernels and with plain CuPy ops."""
    env = dict(os.environ, GPUGRAD_CUDA_KERNELS=kernels)
    r = subprocess.run([sys.executable, "-c", f"ROOT = {ROOT!r}\n" + _EVERY_PATH], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "{'sgd': 0, 'adam': 0, 'adamw': 0, 'rmsprop': 0}", r.stdout
