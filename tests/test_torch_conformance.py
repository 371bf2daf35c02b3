"""gpugrad against PyTorch without PyTorch: the values PyTorch 2.13 computed, recorded by
tests/reference/record_torch.py into tests/reference/torch_reference.json, checked in the default test
run. With PyTorch installed, the file is also checked against a live recording (and the live
comparisons in test_nn.py / test_optim.py run too)."""
from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim
from gpugrad.optim import lr_scheduler

_spec = importlib.util.spec_from_file_location(
    "record_torch", os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", "record_torch.py"))
record_torch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record_torch)
REF = record_torch.load()
F = gg.nn.functional


def _kwargs(kw: dict) -> dict:
    return {k: (tuple(v) if k == "betas" else v) for k, v in kw.items()}


def _case_id(case: dict) -> str:
    return case["name"] + "-" + "-".join(f"{k}={v}" for k, v in case["kwargs"].items())


# ------------------------------------------------------------------------------------------------ optimizers
OPT = REF["optimizers"]


@pytest.mark.parametrize("case", OPT["cases"], ids=_case_id)
@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 1e-13, 1e-15), ("float32", 2e-5, 1e-6)])
def test_optimizer_trajectory_matches_recorded_torch(case, dtype, rtol, atol):
    A, B = np.array(OPT["A"]), np.array(OPT["B"])
    dt = getattr(gg, dtype)
    ps = [nn.Parameter(gg.tensor(np.array(p0), dtype=dt)) for p0 in OPT["p0"]]
    opt = getattr(optim, case["name"])(ps, **_kwargs(case["kwargs"]))
    for _ in range(OPT["n_steps"]):
        for i, p in enumerate(ps):
            p.grad = gg.tensor(record_torch.optimizer_gradient(p.numpy().astype(np.float64), i, A, B), dtype=dt)
        opt.step()
    for p, expected, p0 in zip(ps, case[dtype], OPT["p0"]):
        assert p.dtype == dt
        np.testing.assert_allclose(p.numpy(), np.array(expected), rtol=rtol, atol=atol)
        assert not np.allclose(expected, p0)  # the reference moved: the check is not vacuous


# ------------------------------------------------------------------------------------------------ schedulers
SCH = REF["schedulers"]


@pytest.mark.parametrize("case", SCH["cases"], ids=_case_id)
def test_scheduler_lrs_match_recorded_torch(case):
    ps = [nn.Parameter(gg.ones(1)) for _ in SCH["base_lrs"]]
    opt = optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, SCH["base_lrs"])], lr=SCH["base_lrs"][0])
    s = record_torch.make_scheduler(lr_scheduler, opt, case["name"], case["kwargs"])
    got, moms = [s.get_last_lr()], [record_torch.momenta(opt)]
    for epoch in range(len(case["lrs"]) - 1):
        opt.step()
        record_torch.step_scheduler(s, case["name"], epoch)
        got.append(s.get_last_lr())
        moms.append(record_torch.momenta(opt))
    np.testing.assert_allclose(np.array(got), np.array(case["lrs"]), rtol=1e-14, atol=0)
    np.testing.assert_allclose(np.array(moms), np.array(case["momentum"]), rtol=1e-14, atol=0)
    assert len({tuple(r) for r in case["lrs"]}) > 2  # the schedule moves: the check is not vacuous


@pytest.mark.parametrize("name", ["SequentialLR", "OneCycleLR", "ReduceLROnPlateau", "MultiStepLR"])
def test_scheduler_state_dict_resumes_the_schedule(name, tmp_path):
    """Stop after 7 epochs, save the scheduler and optimizer state with gg.save, rebuild both, load, and
    continue: the learning rates equal those of the uninterrupted run (PyTorch's state_dict contract)."""
    case = next(c for c in SCH["cases"] if c["name"] == name)

    def build():
        ps = [nn.Parameter(gg.ones(1)) for _ in SCH["base_lrs"]]
        opt = optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, SCH["base_lrs"])], lr=SCH["base_lrs"][0])
        return opt, record_torch.make_scheduler(lr_scheduler, opt, name, case["kwargs"])
    opt, s = build()
    for epoch in range(7):
        opt.step()
        record_torch.step_scheduler(s, name, epoch)
    gg.save({"sched": s.state_dict(), "opt": opt.state_dict()}, str(tmp_path / "ck.npz"))
    opt2, s2 = build()
    ck = gg.load(str(tmp_path / "ck.npz"))
    opt2.load_state_dict(ck["opt"])
    s2.load_state_dict(ck["sched"])
    got = [s2.get_last_lr()]
    for epoch in range(7, len(case["lrs"]) - 1):
        opt2.step()
        record_torch.step_scheduler(s2, name, epoch)
        got.append(s2.get_last_lr())
    np.testing.assert_allclose(np.array(got), np.array(case["lrs"][7:]), rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------------------ nn
def test_linear_tanh_matches_recorded_torch():
    ref = REF["linear"]
    lin = nn.Linear(6, 4, activation=ref["activation"], dtype=gg.float64)
    assert {k: list(v.shape) for k, v in lin.state_dict().items()} == ref["state_dict"]  # same names, layout
    lin.load_state_dict({"weight": np.array(ref["weight"]), "bias": np.array(ref["bias"])})
    y = lin(gg.tensor(np.array(ref["x"])))
    np.testing.assert_allclose(y.numpy(), np.array(ref["y"]), rtol=1e-12, atol=1e-14)
    y.sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.array(ref["weight_grad"]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lin.bias.grad.numpy(), np.array(ref["bias_grad"]), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", REF["clip_grad_norm"]["cases"],
                         ids=lambda c: f"max_norm={c['max_norm']}-norm_type={c['norm_type']}")
def test_clip_grad_norm_matches_recorded_torch(case):
    ps = []
    for g in REF["clip_grad_norm"]["grads"]:
        p = nn.Parameter(gg.zeros(*np.shape(g), dtype=gg.float64))
        p.grad = gg.tensor(np.array(g))
        ps.append(p)
    norm_type = math.inf if case["norm_type"] == "inf" else case["norm_type"]
    total = nn.utils.clip_grad_norm_(ps, case["max_norm"], norm_type=norm_type)
    np.testing.assert_allclose(total.item(), case["total"], rtol=1e-12)
    for p, c in zip(ps, case["clipped"]):
        np.testing.assert_allclose(p.grad.numpy(), np.array(c), rtol=1e-12)


@pytest.mark.parametrize("case", REF["functional"], ids=_case_id)
def test_functional_matches_recorded_torch(case):
    x = gg.tensor(np.array(case["input"]), dtype=gg.float64, requires_grad=True)
    args = [x]
    if case["target"] is not None:
        t = np.array(case["target"])
        args.append(gg.tensor(t) if t.dtype.kind == "i" else gg.tensor(t, dtype=gg.float64))
    out = getattr(F, case["name"])(*args, **case["kwargs"])
    np.testing.assert_allclose(out.numpy(), np.array(case["output"]), rtol=1e-12, atol=1e-14)
    (out * gg.tensor(np.array(case["output_weight"]), dtype=gg.float64)).sum().backward()
    # hardsigmoid's float64 gradient: PyTorch multiplies by float(1/6) (a float literal in its kernel), we by 1/6
    rtol = 1e-7 if case["name"] == "hardsigmoid" else 1e-11
    np.testing.assert_allclose(x.grad.numpy(), np.array(case["input_grad"]), rtol=rtol, atol=1e-14)


# ------------------------------------------------------------------------------------------------ the file
def test_reference_file_is_complete():
    assert REF["torch_version"] == "2.13.0"
    assert [(c["name"], c["kwargs"]) for c in OPT["cases"]] == [(n, kw) for n, kw in record_torch.OPTIMIZERS]
    assert [(c["name"], c["kwargs"]) for c in SCH["cases"]] == [(n, kw) for n, kw in record_torch.SCHEDULERS]


def test_reference_file_matches_live_torch():
    torch = pytest.importorskip("torch")
    if torch.__version__.split("+")[0] != REF["torch_version"]:
        pytest.skip(f"recorded with torch {REF['torch_version']}, installed {torch.__version__}")
    live = record_torch.record()
    # float32 trajectories may differ in the last bits between CPUs (PyTorch picks its vector kernels by
    # the CPU's instruction set): compare them to float32's precision, everything else to 1e-12
    f32_rel = 8 * float(np.finfo(np.float32).eps)
    record_torch.assert_same(REF, live, rel=lambda path: f32_rel if ".float32" in path else 1e-12)
