"""gg.optim: optimizer behaviour (param groups, validation, zero_grad, closures, state_dict resume, one
backend call per bucket) and LR schedulers against closed forms and PyTorch (when installed)."""
from __future__ import annotations

import bisect
import copy
import functools
import importlib.util
import json
import math
import os

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim
from gpugrad.optim import lr_scheduler as sched

try:
    import torch
except ImportError:  # the NumPy references still run
    torch = None

_spec = importlib.util.spec_from_file_location(
    "record_torch", os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference", "record_torch.py"))
record_torch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record_torch)
_OPT_REF = record_torch.load()["optimizers"]
_A, _B = np.array(_OPT_REF["A"]), np.array(_OPT_REF["B"])
_P0 = [np.array(p0) for p0 in _OPT_REF["p0"]]


def _grad(p: np.ndarray, i: int) -> np.ndarray:
    """record_torch's parameter-dependent gradient (of a quadratic, plus a bump) for parameter ``i``."""
    return record_torch.optimizer_gradient(p, i, _A, _B)


# Agreement with PyTorch's update formulas: tests/test_torch_conformance.py (values recorded from PyTorch
# in tests/reference/, checked against live torch when it is installed) and tests/test_optim_rules.py
# (every generated implementation against the one rule in gpugrad/kernels/optim_rules.py).


def test_training_with_autograd_reduces_loss():
    gg.manual_seed(0)
    X = gg.randn(64, 4)
    Y = X @ gg.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    for cls, kw in ((optim.SGD, dict(lr=0.05, momentum=0.9)), (optim.Adam, dict(lr=0.05)),
                    (optim.AdamW, dict(lr=0.05)), (optim.RMSprop, dict(lr=0.05))):
        model = nn.Linear(4, 1)
        opt = cls(model.parameters(), **kw)
        losses = []
        for _ in range(60):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(X), Y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.1 * losses[0], (cls.__name__, losses[0], losses[-1])


# ------------------------------------------------------------------------------ Optimizer API
def test_param_groups_options_and_validation():
    a = nn.Parameter(gg.ones(3, dtype=gg.float64))
    b = nn.Parameter(gg.ones(2, dtype=gg.float64))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.0)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[1]["momentum"] == 0.0
    a.grad = gg.ones(3, dtype=gg.float64)
    b.grad = gg.ones(2, dtype=gg.float64)
    opt.step()
    np.testing.assert_allclose(a.numpy(), 0.9)
    np.testing.assert_allclose(b.numpy(), 0.5)
    c = nn.Parameter(gg.ones(1))
    opt.add_param_group({"params": c, "lr": 1.0})
    assert len(opt.param_groups) == 3
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])
    with pytest.raises(TypeError, match="single Tensor"):
        optim.Adam(a)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([a * 2], lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([a], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([a], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([a], betas=(0.9, 1.5))
    assert "Parameter Group 0" in repr(opt)


def test_zero_grad_version_and_skips_params_without_grad():
    a = nn.Parameter(gg.ones(3))
    b = nn.Parameter(gg.ones(3))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = gg.ones(3)
    v0a, v0b = a._version, b._version
    opt.step()
    assert a._version == v0a + 1 and b._version == v0b  # bumped only where updated
    assert np.all(b.numpy() == 1) and b not in opt.state
    opt.zero_grad(set_to_none=False)
    assert np.all(a.grad.numpy() == 0)
    opt.zero_grad()
    assert a.grad is None
    # the version bump makes a graph that saved the old value refuse to backward
    x = nn.Parameter(gg.ones(2))
    y = (x * x).sum()
    x.grad = gg.ones(2)
    optim.SGD([x], lr=0.1).step()
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        y.backward()


def test_step_closure_and_state_follows_module_to():
    gg.manual_seed(1)
    model = nn.Linear(3, 1)
    X, Y = gg.randn(8, 3), gg.randn(8, 1)
    opt = optim.Adam(model.parameters(), lr=0.01)

    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), Y)
        loss.backward()
        return loss
    loss = opt.step(closure)
    assert isinstance(loss, gg.Tensor) and opt.state[model.weight]["step"] == 1
    model.to(gg.float64)  # the existing Adam state follows the parameters' dtype on the next step
    X, Y = X.double(), Y.double()
    opt.step(closure)
    st = opt.state[model.weight]
    assert st["exp_avg"].dtype == gg.float64 and st["exp_avg_sq"].dtype == gg.float64 and st["step"] == 2


@pytest.mark.parametrize("n_params", [3, 30])
def test_updates_are_one_backend_call_per_bucket(monkeypatch, n_params):
    """The update is a multi-tensor backend method: one call per (group, device, dtype) whatever the
    number of parameters (O(1) Python calls in it), None grads skipped without extra calls at the end."""
    from gpugrad.backends import get_backend
    be_type = type(get_backend("cpu"))
    calls: list = []
    orig = be_type.optim_step

    def wrapped(self, rule, *a, **k):
        calls.append(rule.name)
        return orig(self, rule, *a, **k)
    monkeypatch.setattr(be_type, "optim_step", wrapped)
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), lambda ps: optim.AdamW(ps),
                 lambda ps: optim.RMSprop(ps, centered=True), lambda ps: optim.Adam(ps, capturable=True)):
        ps = [nn.Parameter(gg.ones(2 + i % 3)) for i in range(n_params)]
        opt = make(ps)
        for _ in range(2):
            for p in ps:
                p.grad = gg.ones(*p.shape)
            ps[-1].grad = None
            opt.step()
    assert calls == ["sgd"] * 2 + ["adam"] * 2 + ["rmsprop"] * 2 + ["adam"] * 2


@pytest.mark.parametrize("kw", [dict(lr=0.01), dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.3),
                                dict(lr=0.01, betas=(0.3, 0.99), maximize=True)])
@pytest.mark.parametrize("dtype", [gg.float64, gg.float32])
def test_lion_follows_its_formula(kw, dtype):
    """Lion (Chen et al. 2023, Algorithm 2) written out in NumPy: decoupled decay, the sign of an
    interpolation of the momentum and the gradient, then the momentum update."""
    lr, (b1, b2), wd = kw["lr"], kw.get("betas", (0.9, 0.99)), kw.get("weight_decay", 0.0)
    ps = [nn.Parameter(gg.tensor(p0, dtype=dtype)) for p0 in _P0]
    opt = optim.Lion(ps, **kw)
    want = [p0.astype(np.float64) for p0 in _P0]
    m = [np.zeros_like(w) for w in want]
    for _ in range(5):
        for i, p in enumerate(ps):
            g = _grad(p.numpy().astype(np.float64), i)
            p.grad = gg.tensor(g, dtype=dtype)
            g = np.asarray(p.grad.numpy(), np.float64) * (-1 if kw.get("maximize") else 1)
            want[i] = want[i] * (1 - lr * wd) - lr * np.sign(m[i] * b1 + g * (1 - b1))
            m[i] = m[i] * b2 + g * (1 - b2)
        opt.step()
    tol = 1e-12 if dtype == gg.float64 else 1e-5
    for p, w in zip(ps, want):
        np.testing.assert_allclose(p.numpy(), w, rtol=tol, atol=tol)
    assert set(opt.state[ps[0]]) == {"exp_avg", "step"}


def _plain(x):
    """True if a state dict holds only arrays/Tensors and JSON-like values (no pickle needed)."""
    if isinstance(x, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain(v) for v in x)
    return isinstance(x, (gg.Tensor, np.ndarray, int, float, bool, str, type(None)))


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05, momentum=0.9)), ("Adam", dict(lr=0.01, amsgrad=True)),
                                     ("AdamW", dict(lr=0.01)), ("RMSprop", dict(momentum=0.5, centered=True)),
                                     ("Lion", dict(lr=0.01, weight_decay=0.1))])
def test_state_dict_resume_is_identical(name, kw):
    def fresh():
        return [nn.Parameter(gg.tensor(p0)) for p0 in _P0]

    def steps(ps, opt, n):
        for _ in range(n):
            for i, p in enumerate(ps):
                p.grad = gg.tensor(_grad(p.numpy(), i))
            opt.step()

    ps = fresh()
    opt = getattr(optim, name)(ps, **kw)
    steps(ps, opt, 3)
    sd = opt.state_dict()
    assert _plain(sd)
    assert sorted(sd["state"]) == [0, 1] and sd["param_groups"][0]["params"] == [0, 1]
    ps2 = [nn.Parameter(gg.tensor(p.numpy().copy())) for p in ps]
    opt2 = getattr(optim, name)(ps2, lr=123.0)
    opt2.load_state_dict(copy.deepcopy(sd))
    assert opt2.param_groups[0]["lr"] == kw.get("lr", opt.defaults["lr"])
    # the loaded state is a copy: stepping the original does not change it
    steps(ps, opt, 2)
    steps(ps2, opt2, 2)
    for a, b in zip(ps, ps2):
        assert np.array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="param groups"):
        opt2.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt2.load_state_dict({"nope": 1})


def test_load_state_dict_casts_to_param_dtype_and_string_keys():
    p = nn.Parameter(gg.ones(3, dtype=gg.float32))
    p.grad = gg.ones(3, dtype=gg.float32)
    opt = optim.Adam([p])
    opt.step()
    sd = opt.state_dict()
    sd64 = {"state": {"0": {k: (v.to(gg.float64) if isinstance(v, gg.Tensor) else v) for k, v in sd["state"][0].items()}},
            "param_groups": json.loads(json.dumps(sd["param_groups"]))}
    opt2 = optim.Adam([p])
    opt2.load_state_dict(sd64)
    st = opt2.state[p]
    assert st["exp_avg"].dtype == gg.float32 and st["step"] == 1
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)


# ------------------------------------------------------------------------------ schedulers
def _lrs(make, n=25, base=0.1, groups=1):
    ps = [nn.Parameter(gg.ones(1)) for _ in range(groups)]
    opt = optim.SGD([{"params": [p], "lr": base * (i + 1)} for i, p in enumerate(ps)], lr=base)
    s = make(opt)
    out = [s.get_last_lr()]
    for _ in range(n):
        opt.step()
        s.step()
        out.append(s.get_last_lr())
        assert [g["lr"] for g in opt.param_groups] == out[-1]
    return np.array(out)


# The closed form (base lr b, epoch e) of each schedule of record_torch.SCHEDULERS, with its arguments.
_CLOSED = {
    "StepLR": lambda b, e: b * 0.5 ** (e // 4),
    "MultiStepLR": lambda b, e: b * 0.3 ** bisect.bisect_right([3, 7, 7, 12], e),
    "ExponentialLR": lambda b, e: b * 0.9 ** e,
    "CosineAnnealingLR": lambda b, e: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * e / 10)) / 2,
    "LinearLR": lambda b, e: b * (0.25 + 0.75 * min(e, 8) / 8),
    "LambdaLR": lambda b, e: b / (1 + e),
}


def _maker(name: str, kw: dict):
    """``make(optimizer, lr_scheduler_module)``: scheduler ``name`` with record_torch's arguments ``kw``."""
    args = {k: (record_torch.LR_LAMBDAS[v] if k == "lr_lambda" else v) for k, v in kw.items()}
    return lambda o, m: getattr(m, name)(o, **args)


# the schedules with a closed form here (SequentialLR, OneCycleLR and ReduceLROnPlateau are checked against
# their recorded PyTorch runs in test_torch_conformance)
SCHEDS = [(name, _maker(name, kw), _CLOSED[name]) for name, kw in record_torch.SCHEDULERS if name in _CLOSED]


@pytest.mark.parametrize("name,make,closed", SCHEDS, ids=[s[0] for s in SCHEDS])
def test_scheduler_matches_closed_form(name, make, closed):
    got = _lrs(lambda o: make(o, sched), groups=2)
    exp = np.array([[closed(0.1, e), closed(0.2, e)] for e in range(got.shape[0])])
    np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("name,make,closed", SCHEDS, ids=[s[0] for s in SCHEDS])
def test_scheduler_matches_torch(name, make, closed):
    """Against the installed PyTorch directly (any version; test_torch_conformance checks the recorded
    file, from torch 2.13, against live torch at rel 1e-12)."""
    got = _lrs(lambda o: make(o, sched), groups=2)
    live = _live_torch_schedulers()
    assert live["base_lrs"] == [0.1, 0.2]
    ref = next(c["lrs"] for c in live["cases"] if c["name"] == name)
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-14, atol=0)


@functools.lru_cache(maxsize=None)
def _live_torch_schedulers() -> dict:
    """record_torch's scheduler section recorded now from the installed PyTorch (base lrs 0.1 and 0.2)."""
    return record_torch._schedulers(torch)


@pytest.mark.parametrize("name,make,closed", SCHEDS[:5], ids=[s[0] for s in SCHEDS[:5]])
def test_scheduler_state_dict_resume(name, make, closed):
    p = nn.Parameter(gg.ones(1))
    opt = optim.SGD([p], lr=0.1)
    s = make(opt, sched)
    for _ in range(5):
        opt.step()
        s.step()
    sd = s.state_dict()
    sd_json = json.loads(json.dumps(sd))  # plain data: JSON-serialisable
    opt_sd = opt.state_dict()
    p2 = nn.Parameter(gg.ones(1))
    opt2 = optim.SGD([p2], lr=0.1)
    s2 = make(opt2, sched)  # PyTorch's order: build, then load the optimizer, then the scheduler
    opt2.load_state_dict(opt_sd)
    s2.load_state_dict(sd_json)
    assert s2.get_last_lr() == s.get_last_lr()
    for _ in range(8):
        opt.step()
        s.step()
        opt2.step()
        s2.step()
        assert s2.get_last_lr() == pytest.approx(s.get_last_lr(), rel=1e-15)


def test_scheduler_validation():
    opt = optim.SGD([nn.Parameter(gg.ones(1))], lr=0.1)
    with pytest.raises(TypeError, match="not an Optimizer"):
        sched.StepLR(object(), 2)
    with pytest.raises(ValueError, match="step_size"):
        sched.StepLR(opt, 0)
    with pytest.raises(ValueError, match="start_factor"):
        sched.LinearLR(opt, start_factor=0)
    fresh = optim.SGD([nn.Parameter(gg.ones(1))], lr=0.1)
    with pytest.raises(KeyError, match="initial_lr"):
        sched.StepLR(fresh, 2, last_epoch=3)
