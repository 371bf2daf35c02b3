"""gg.optim: optimizers and LR schedulers against hand-written NumPy references of PyTorch's
formulas (always) and against PyTorch itself (when installed)."""
from __future__ import annotations

import bisect
import copy
import json
import math

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import nn, optim
from gpugrad.optim import lr_scheduler as sched

try:
    import torch
except ImportError:  # the NumPy references still run
    torch = None

N_STEPS = 6
_RNG = np.random.default_rng(0)
_A = _RNG.standard_normal((5, 5))
_B = _RNG.standard_normal(5)
_P0 = [_RNG.standard_normal(5), _RNG.standard_normal((2, 3))]


def _grad(p: np.ndarray, i: int) -> np.ndarray:
    """A parameter-dependent gradient (of a quadratic, plus a bump) for parameter ``i``."""
    if i == 0:
        return _A.T @ (_A @ p - _B)
    return np.sin(3 * p) + p


# ------------------------------------------------------------------------------ NumPy references
def sgd_ref(p, i, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    buf = None
    for _ in range(N_STEPS):
        g = _grad(p, i)
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def adam_ref(p, i, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
             decoupled=False):
    b1, b2 = betas
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for t in range(1, N_STEPS + 1):
        g = _grad(p, i)
        g = -g if maximize else g
        if weight_decay:
            if decoupled:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            v_hat = vmax / (1 - b2 ** t)
        else:
            v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def rmsprop_ref(p, i, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                maximize=False):
    sq = np.zeros_like(p)
    ga = np.zeros_like(p)
    buf = np.zeros_like(p)
    for _ in range(N_STEPS):
        g = _grad(p, i)
        g = -g if maximize else g
        if weight_decay:
            g = g + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        if centered:
            ga = alpha * ga + (1 - alpha) * g
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


CASES = [
    ("SGD", dict(lr=0.05), sgd_ref, {}),
    ("SGD", dict(lr=0.05, momentum=0.9), sgd_ref, {}),
    ("SGD", dict(lr=0.03, momentum=0.9, nesterov=True, weight_decay=0.01), sgd_ref, {}),
    ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1, maximize=True), sgd_ref, {}),
    ("Adam", dict(lr=0.01), adam_ref, {}),
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True), adam_ref, {}),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, maximize=True), adam_ref, {}),
    ("AdamW", dict(lr=0.01), adam_ref, dict(decoupled=True, weight_decay=1e-2)),
    ("AdamW", dict(lr=0.01, weight_decay=0.5, amsgrad=True), adam_ref, dict(decoupled=True)),
    ("RMSprop", dict(lr=0.01), rmsprop_ref, {}),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1), rmsprop_ref, {}),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True, maximize=True), rmsprop_ref, {}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw, _, _ in CASES]


def _run_gg(name, kw, dtype=gg.float64):
    ps = [nn.Parameter(gg.tensor(p0, dtype=dtype)) for p0 in _P0]
    opt = getattr(optim, name)(ps, **kw)
    for _ in range(N_STEPS):
        for i, p in enumerate(ps):
            p.grad = gg.tensor(_grad(p.numpy().astype(np.float64), i), dtype=dtype)
        opt.step()
    return [p.numpy() for p in ps], opt


@pytest.mark.parametrize("name,kw,ref,extra", CASES, ids=IDS)
def test_optimizer_matches_numpy_formula(name, kw, ref, extra):
    got, _ = _run_gg(name, kw)
    for i, p0 in enumerate(_P0):
        expected = ref(p0.copy(), i, **{**kw, **extra})
        np.testing.assert_allclose(got[i], expected, rtol=1e-10, atol=1e-12)
        assert not np.allclose(got[i], p0)  # it moved


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("name,kw,ref,extra", CASES, ids=IDS)
def test_optimizer_matches_torch(name, kw, ref, extra):
    for dtype, tdtype, rtol, atol in ((gg.float64, torch.float64, 1e-13, 1e-15),
                                      (gg.float32, torch.float32, 2e-5, 1e-6)):
        got, _ = _run_gg(name, kw, dtype)
        tps = [torch.tensor(p0, dtype=tdtype, requires_grad=True) for p0 in _P0]
        topt = getattr(torch.optim, name)(tps, **kw)
        for _ in range(N_STEPS):
            for i, tp in enumerate(tps):
                tp.grad = torch.tensor(_grad(tp.detach().numpy().astype(np.float64), i), dtype=tdtype)
            topt.step()
        for g_arr, tp in zip(got, tps):
            np.testing.assert_allclose(g_arr, tp.detach().numpy(), rtol=rtol, atol=atol)


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


def _plain(x):
    """True if a state dict holds only arrays/Tensors and JSON-like values (no pickle needed)."""
    if isinstance(x, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain(v) for v in x)
    return isinstance(x, (gg.Tensor, np.ndarray, int, float, bool, str, type(None)))


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.05, momentum=0.9)), ("Adam", dict(lr=0.01, amsgrad=True)),
                                     ("AdamW", dict(lr=0.01)), ("RMSprop", dict(momentum=0.5, centered=True))])
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


SCHEDS = [
    ("StepLR", lambda o, m: m.StepLR(o, step_size=4, gamma=0.5),
     lambda b, e: b * 0.5 ** (e // 4)),
    ("MultiStepLR", lambda o, m: m.MultiStepLR(o, milestones=[3, 7, 7, 12], gamma=0.3),
     lambda b, e: b * 0.3 ** bisect.bisect_right([3, 7, 7, 12], e)),
    ("ExponentialLR", lambda o, m: m.ExponentialLR(o, gamma=0.9),
     lambda b, e: b * 0.9 ** e),
    ("CosineAnnealingLR", lambda o, m: m.CosineAnnealingLR(o, T_max=10, eta_min=0.001),
     lambda b, e: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * e / 10)) / 2),
    ("LinearLR", lambda o, m: m.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=8),
     lambda b, e: b * (0.25 + 0.75 * min(e, 8) / 8)),
    ("LambdaLR", lambda o, m: m.LambdaLR(o, lambda e: 1.0 / (1 + e)),
     lambda b, e: b / (1 + e)),
]


@pytest.mark.parametrize("name,make,closed", SCHEDS, ids=[s[0] for s in SCHEDS])
def test_scheduler_matches_closed_form(name, make, closed):
    got = _lrs(lambda o: make(o, sched), groups=2)
    exp = np.array([[closed(0.1, e), closed(0.2, e)] for e in range(got.shape[0])])
    np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("name,make,closed", SCHEDS, ids=[s[0] for s in SCHEDS])
def test_scheduler_matches_torch(name, make, closed):
    import warnings
    got = _lrs(lambda o: make(o, sched), groups=2)
    tps = [torch.zeros(1, requires_grad=True) for _ in range(2)]
    topt = torch.optim.SGD([{"params": [p], "lr": 0.1 * (i + 1)} for i, p in enumerate(tps)], lr=0.1)
    ts = make(topt, torch.optim.lr_scheduler)
    ref = [ts.get_last_lr()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(got.shape[0] - 1):
            topt.step()
            ts.step()
            ref.append(ts.get_last_lr())
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-14, atol=0)


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
