"""The bench harness shared by ``gpugrad bench`` and benchmarks/ (timings themselves belong in
benchmarks/, not in tests: nothing here asserts a duration)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from gpugrad import benchmarking as bm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mlp_flops_counts_forward_and_backward_gemms():
    # layer 1 (3x4): forward + dW only; layer 2 (4x2): forward + dW + dX
    assert bm.mlp_flops([3, 4, 2], 5) == 2 * 5 * 3 * 4 * 2 + 2 * 5 * 4 * 2 * 3


def test_rel_error_is_the_relative_frobenius_distance():
    assert bm.rel_error([3.0, 4.5], [3.0, 4.0]) == pytest.approx(0.1)
    assert bm.rel_error(np.ones((2, 2), np.float32), np.ones((2, 2))) == 0.0
    assert bm.rel_error([1.0], [0.0]) > 1e100  # a zero reference does not divide by zero


def test_median_time_runs_setup_untimed_before_every_call_and_syncs():
    calls = []
    t = bm.median_time(lambda: calls.append("fn"), repeats=3, warmup=2, setup=lambda: calls.append("setup"),
                       sync=lambda: calls.append("sync"))
    assert t >= 0
    assert calls[:4] == ["setup", "fn", "setup", "fn"] and calls[4] == "sync"
    assert calls[5:] == ["setup", "sync", "fn", "sync"] * 3


def test_the_step_trains_and_rejects_unknown_optimizers():
    import gpugrad as gg
    sizes = [8, 16, 4]
    x, y = bm.random_batch(np.random.default_rng(0), 32, 8, 4)
    assert x.dtype == np.float32 and y.min() >= 0 and y.max() < 4
    for opt, lr in (("sgd", 0.5), ("adam", 0.02)):
        _, step = bm.gpugrad_mlp_step(sizes, optimizer=opt, lr=lr)
        losses = [step(gg.tensor(x), gg.tensor(y)).item() for _ in range(30)]
        assert losses[-1] < 0.7 * losses[0], (opt, losses[0], losses[-1])
    with pytest.raises(ValueError, match="benchmark optimizer must be one of"):
        bm.gpugrad_mlp_step(sizes, optimizer="lbfgs")


@pytest.mark.parametrize("optimizer", bm.OPTIMIZERS)
def test_gpugrad_and_torch_steps_are_the_same_computation(optimizer):
    torch = pytest.importorskip("torch")
    import gpugrad as gg
    sizes = [8, 16, 16, 4]
    x, y = bm.random_batch(np.random.default_rng(1), 32, 8, 4)
    model, step = bm.gpugrad_mlp_step(sizes, optimizer=optimizer, lr=1e-2)
    _, tstep = bm.torch_mlp_step(torch, sizes, optimizer=optimizer, lr=1e-2, like=model)
    for _ in range(3):
        a = step(gg.tensor(x), gg.tensor(y)).item()
        b = tstep(torch.from_numpy(x), torch.from_numpy(y)).item()
        assert a == pytest.approx(b, rel=1e-5)


def test_benchmark_scripts_use_the_package_harness():
    # gpu_report.py runs the others as subprocesses and must record a step whose gpugrad import fails,
    # so it imports nothing of gpugrad itself
    for name in sorted(os.listdir(os.path.join(ROOT, "benchmarks"))):
        if name.endswith(".py") and name != "gpu_report.py":
            text = open(os.path.join(ROOT, "benchmarks", name), encoding="utf-8").read()
            assert "gpugrad.benchmarking" in text or "benchmarking as bm" in text, name
    assert not os.path.exists(os.path.join(ROOT, "benchmarks", "_common.py"))


def test_phase_timer_times_each_phase_and_unwraps():
    """PhaseTimer: every phase of a CPU SGD step gets time, the phases add up to the step, and the
    wrapped methods are the original ones again after the block."""
    import gpugrad as gg
    from gpugrad.backends.cpu import CPUBackend
    from gpugrad.ops.loss import CrossEntropy
    from gpugrad.optim.flat import Bucket
    model, step = bm.gpugrad_mlp_step([8, 16, 4], "cpu", optimizer="sgd", lr=0.1)
    rng = np.random.default_rng(0)
    x, y = bm.random_batch(rng, 5, 8, 4)
    x, y = gg.tensor(x), gg.tensor(y)
    before = (CPUBackend.linear_forward, CrossEntropy.__dict__["forward"], Bucket.gather_grads)
    step(x, y)
    with bm.PhaseTimer() as pt:
        assert CPUBackend.linear_forward is not before[0]
        for _ in range(3):
            with pt.step():
                step(x, y)
    assert (CPUBackend.linear_forward, CrossEntropy.__dict__["forward"], Bucket.gather_grads) == before
    assert len(pt.steps) == 3
    for rec in pt.steps:
        for phase in ("forward GEMMs", "bias + activation (forward)", "loss (forward + backward)", "backward GEMMs",
                      "bias/activation gradients", "optimizer update", "zero_grad"):
            assert rec[phase] > 0, phase
        assert abs(sum(rec[p] for p in bm.STEP_PHASES) - rec["step"]) < 1e-9
    med = pt.per_step()
    assert set(bm.STEP_PHASES) <= set(med) and med["step"] > 0
