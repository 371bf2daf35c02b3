"""The optimizer rules (gpugrad/kernels/optim_rules.py) and everything generated from them: the NumPy/xp
path, the CPU Numba pass and the CUDA C text (compiled for the host with a C++ compiler) agree with the
definition run element by element in float64; the multi-tensor step equals per-parameter steps and
PyTorch (tests/test_torch_conformance.py, values recorded by tests/reference/record_torch.py); the flat layout survives replaced
data, None grads, set_to_none, mixed dtypes and state_dict round trips; GradScaler and clip_grad_norm_
run as multi-tensor passes, and a capturable step never reads the device. (The Numba CUDA kernels are
checked the same way under the simulator: tests/kernels/test_optim_step.py; nvcc: tests/test_nvcc.py.)"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import amp, nn, optim
from gpugrad.backends.base import Backend
from gpugrad.backends.cpu import CPUBackend
from gpugrad.kernels import optim_codegen as cg
from tests.support import optim_examples as ox
from gpugrad.kernels.optim_rules import RULES

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [(r, o) for r in RULES.values() for o in ox.examples(r)]
IDS = [f"{r.name}-{i}" for i, (r, _) in enumerate(CASES)]


def _inputs(rule, options, n=37, seed=0):
    return ox.example_arrays(rule, options, n, np.random.default_rng(seed))


def _close(a, b, tol=1e-14):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    err = np.max(np.abs(a - b) / (1.0 + np.abs(b)))
    assert err <= tol, err


# ------------------------------------------------------------------------------------------------ definitions
def test_rules_are_in_the_rule_language():
    for r in RULES.values():
        cg.check(r)


def test_a_rule_outside_the_language_is_refused():
    def bad(p, g, lr):
        for _ in range(2):  # loops are not in the rule language
            p = p - lr * g
        return (p,)
    with pytest.raises(SyntaxError, match="For is outside the rule language"):
        cg.tree(bad)


@pytest.mark.parametrize("impl", ["xp", "numba_cpu"])
@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("rule,options", CASES, ids=IDS)
def test_implementations_agree_with_the_definition(rule, options, impl, capturable):
    be = CPUBackend(gg.device("cpu"))
    step = 3
    arrays = _inputs(rule, options)
    ref = cg.scalar_update(rule, arrays, options, step)
    got = {k: v.copy() for k, v in arrays.items()}
    run = Backend.optim_step if impl == "xp" else CPUBackend.optim_step
    start, end = 2, 30  # a range inside the buffers: the rest must stay untouched
    run(be, rule, got, start, end, options, **ox.step_args(rule, options, step, capturable, np))
    for k in ref:
        _close(got[k][start:end], ref[k][start:end])
        assert np.array_equal(got[k][:start], arrays[k][:start]) and np.array_equal(got[k][end:], arrays[k][end:])


@pytest.mark.parametrize("impl", [Backend.optim_step, CPUBackend.optim_step], ids=["xp", "numba_cpu"])
def test_capturable_step_skips_on_a_found_inf_flag(impl):
    rule = RULES["adam"]
    options = ox.examples(rule)[0]
    arrays = _inputs(rule, options)
    got = {k: v.copy() for k, v in arrays.items()}
    impl(CPUBackend(gg.device("cpu")), rule, got, 0, 37, options, step=np.array([1.0]),
         found_inf=np.ones(1, np.float32))
    for k in arrays:
        assert np.array_equal(got[k], arrays[k])


_HOST = r"""
#include <math.h>
#define __device__
#define __forceinline__ inline
"""


@pytest.fixture(scope="module")
def host_c_rules(tmp_path_factory):
    """The CUDA C text of every rule compiled for the host (g++), with one loop entry per rule."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    parts = [_HOST, cg.C_MATH]
    for r in RULES.values():
        parts.append(cg.c_rule(r))
        ns, nh, nd = len(r.state), len(r.hyper) + len(cg.host_scalars(r)), len(r.derived)
        vals = ", ".join([f"s{k}" for k in range(ns)] + [f"H[{k}]" for k in range(nh)] + [f"D[{k}]" for k in range(nd)]
                         + [f"F[{k}] != 0" for k in range(len(r.flags))])
        for suffix, T in (("", "double"), ("_f32", "float")):  # run_<rule>: float64; run_<rule>_f32: float32
            decl = "".join(f"{T} s{k} = S[{k}][i]; " for k in range(ns))
            back = "".join(f"S[{k}][i] = s{k}; " for k in range(ns))
            prologue = (f"{T} D[{max(nd, 1)}]; if (STEP) gg_prologue_{r.name}<{T}>(STEP[0], "
                        + ", ".join([f"H[{k}]" for k in range(len(r.hyper))] + [f"D[{k}]" for k in range(nd)])
                        + "); else " if r.prologue is not None else f"{T} D[1]; ")
            parts.append(f'extern "C" void run_{r.name}{suffix}({T}* P, const {T}* G, {T}** S, long n, const {T}* H, '
                         f"const {T}* DIN, const {T}* STEP, const int* F) {{\n"
                         f"    {prologue}{{ for (int k = 0; k < {max(nd, 1)}; ++k) D[k] = DIN ? DIN[k] : 0; }}\n"
                         f"    for (long i = 0; i < n; ++i) {{ {T} p = P[i]; {decl}\n"
                         f"        gg_rule_{r.name}<{T}>(p, G[i], {vals}); P[i] = p; {back}}}\n}}\n")
    d = tmp_path_factory.mktemp("optim_c")
    src, lib = d / "rules.cpp", d / "rules.so"
    src.write_text("\n".join(parts))
    proc = subprocess.run([cxx, "-O2", "-ffp-contract=off", "-shared", "-fPIC", str(src), "-o", str(lib)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ctypes.CDLL(str(lib))


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("rule,options", CASES, ids=IDS)
def test_cuda_c_text_agrees_with_the_definition(host_c_rules, rule, options, capturable):
    step = 4
    arrays = _inputs(rule, options)
    ref = cg.scalar_update(rule, arrays, options, step)
    n = len(arrays["p"])
    got = {k: v.copy() for k, v in arrays.items()}
    states = [got.get(s, np.zeros(n)) for s in rule.state]
    dp = ctypes.POINTER(ctypes.c_double)
    S = (dp * max(len(states), 1))(*[a.ctypes.data_as(dp) for a in states])
    H = np.array([options[h] for h in rule.hyper] + list(cg.host_values(rule, options)), np.float64)
    D = np.array(rule.derive(step, options) or (0.0,), np.float64)
    F = np.array([int(bool(options[f])) for f in rule.flags], np.int32)
    stp = np.array([step], np.float64)
    getattr(host_c_rules, f"run_{rule.name}")(
        got["p"].ctypes.data_as(dp), arrays["g"].ctypes.data_as(dp), S, ctypes.c_long(n), H.ctypes.data_as(dp),
        None if capturable else D.ctypes.data_as(dp), stp.ctypes.data_as(dp) if capturable else None,
        F.ctypes.data_as(ctypes.POINTER(ctypes.c_int)))
    for k in ref:
        _close(got[k], ref[k])


# ------------------------------------------------------------------------------------------------ float32 vs PyTorch
# Every generated implementation in float32, from zero state, against PyTorch 2.13's recorded parameters and state
# (tests/reference/record_torch.py STATE_CASES). PyTorch computes 1 - beta2, 1 - alpha, 1 - lr*weight_decay in
# double on the host; computed in float32 from float32(beta2) they are off by up to 1.3e-5 relative (Adam's
# exp_avg_sq after one step with beta2 = 0.999), which these tests catch. (Numba CUDA: tests/kernels/test_optim_step.py.)
STATES = ox.torch_states()
STATE_IDS = ox.state_ids(STATES)
assert_matches_torch_states = ox.assert_matches_torch_states
def _c_f32_step(lib):
    """An ``optim_step`` running the CUDA C text compiled for the host in float32 (scalars cast as ``pack_args``)."""
    fp = ctypes.POINTER(ctypes.c_float)

    def run(rule, arrays, start, end, options, derived=(), step=None, found_inf=None):
        states = [arrays.get(s, np.zeros(end, np.float32)) for s in rule.state]
        S = (fp * max(len(states), 1))(*[a.ctypes.data_as(fp) for a in states])
        H = np.array([options[h] for h in rule.hyper] + list(cg.host_values(rule, options)), np.float32)
        D = np.array(derived or (0.0,), np.float32)
        F = np.array([int(bool(options[f])) for f in rule.flags], np.int32)
        getattr(lib, f"run_{rule.name}_f32")(
            arrays["p"].ctypes.data_as(fp), arrays["g"].ctypes.data_as(fp), S, ctypes.c_long(end), H.ctypes.data_as(fp),
            None if step is not None else D.ctypes.data_as(fp), None if step is None else step.ctypes.data_as(fp),
            F.ctypes.data_as(ctypes.POINTER(ctypes.c_int)))
    return run


F32_IMPLS = ["xp", "numba_cpu", "cuda_c_host", "cuda_c_stand_in"]


def _f32_impl(impl: str, request) -> tuple:
    """``(optim_step, xp)`` of one implementation (``cuda_c_stand_in``: the CUDA backend's launch on the strict
    CuPy stand-in, whose kernel reference runs the rule with the arguments the launch passed)."""
    if impl == "cuda_c_stand_in":
        from tests.support import strict_cuda
        sc = strict_cuda()
        sc.__enter__()
        request.addfinalizer(lambda: sc.__exit__(None, None, None))
        be = gg.tensor([0.0], device="cuda")._backend()
        return be.optim_step, be.xp
    if impl == "cuda_c_host":
        return _c_f32_step(request.getfixturevalue("host_c_rules")), np
    be = CPUBackend(gg.device("cpu"))
    method = Backend.optim_step if impl == "xp" else CPUBackend.optim_step
    return (lambda *a, **k: method(be, *a, **k)), np


@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("impl", F32_IMPLS)
@pytest.mark.parametrize("case", STATES["cases"], ids=STATE_IDS)
def test_float32_steps_match_recorded_torch(case, impl, capturable, request):
    rule, options = ox.rule_options(case["name"], case["kwargs"])
    p0, grads = np.array(STATES["p0"], np.float32), [np.array(g, np.float32) for g in STATES["grads"]]
    run, xp = _f32_impl(impl, request)
    got = ox.steps_from_zero(run, rule, options, p0, grads, case["after"], capturable, xp)
    assert_matches_torch_states(case, got)


@pytest.mark.parametrize("impl", F32_IMPLS)
def test_lion_float32_complements_are_computed_in_double(impl, request):
    """PyTorch has no Lion: its moments after one step from zero state are ``float32(1 - beta) * g``, the
    complement rounded once (not ``1 - float32(beta)``, 9.5e-7 relative off for beta = 0.99)."""
    rule, options = ox.rule_options("Lion", dict(lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1))
    p0, grads = np.array(STATES["p0"], np.float32), [np.array(STATES["grads"][0], np.float32)]
    run, xp = _f32_impl(impl, request)
    got = ox.steps_from_zero(run, rule, options, p0, grads, ("1",), False, xp)["1"]
    assert np.array_equal(got["exp_avg"], np.float32(1 - 0.99) * grads[0])
    assert not np.array_equal(got["exp_avg"], (1 - np.float32(0.99)) * grads[0])  # the values tell them apart


def test_hyperparameter_arithmetic_is_passed_from_the_host():
    """The generated code gets arithmetic on hyperparameters alone as scalars computed in float64 once."""
    want = {"sgd": ["1 - dampening"], "adam": ["1 - lr * weight_decay", "1 - beta1", "1 - beta2"],
            "rmsprop": ["1 - alpha"], "lion": ["1 - lr * weight_decay", "1 - beta1", "1 - beta2"]}
    for r in RULES.values():
        assert [e for _, e, _ in cg._split(r)[1]] == want[r.name]
        t = cg.generated_tree(r)
        assert [a.arg for a in t.args.args] == ["p", "g", *r.state, *r.hyper, *cg.host_scalars(r), *r.derived,
                                                *r.flags]
        text = cg.py_function(t, "f", cg.E.PyStyle())
        assert "1 - beta" not in text and "1 - alpha" not in text and "1 - dampening" not in text, text
    adam = RULES["adam"]
    vals = cg.host_values(adam, dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1))
    assert vals == (1 - 1e-3 * 0.1, 1 - 0.9, 1 - 0.999)


# ------------------------------------------------------------------------------------------------ optimizers
def _model_params(dtype=gg.float64, n_extra=0):
    rng = np.random.default_rng(1)
    shapes = [(4, 3), (4,), (2, 4), (2,), ()] + [(3,)] * n_extra
    return [nn.Parameter(gg.tensor(rng.standard_normal(s), dtype=dtype)) for s in shapes]


def _grads(step, shapes, dtype=gg.float64):
    rng = np.random.default_rng(100 + step)
    return [gg.tensor(rng.standard_normal(s), dtype=dtype) for s in shapes]


MAKERS = {
    "sgd": lambda ps, **k: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, **k),
    "sgd_plain": lambda ps, **k: optim.SGD(ps, lr=0.05, **k),
    "adam_amsgrad": lambda ps, **k: optim.Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.01, **k),
    "adamw_cap": lambda ps, **k: optim.AdamW(ps, lr=0.01, capturable=True, **k),
    "rmsprop": lambda ps, **k: optim.RMSprop(ps, lr=0.01, centered=True, momentum=0.5, weight_decay=0.01, **k),
}


@pytest.mark.parametrize("name", list(MAKERS))
def test_multi_tensor_step_equals_per_parameter_steps(name):
    """One optimizer over all parameters (one bucket) == one optimizer per parameter, bit for bit, with
    some gradients None on some steps (runs split, per-parameter step counts differ)."""
    ps = _model_params()
    singles = [nn.Parameter(gg.tensor(p.numpy().copy())) for p in ps]
    opt = MAKERS[name](ps)
    opts = [MAKERS[name]([q]) for q in singles]
    shapes = [tuple(p.shape) for p in ps]
    for step in range(5):
        gs = _grads(step, shapes)
        for i, (p, q, g) in enumerate(zip(ps, singles, gs)):
            none = (step + i) % 3 == 0 and step > 0
            p.grad = None if none else gg.tensor(g.numpy().copy())
            q.grad = None if none else gg.tensor(g.numpy().copy())
        opt.step()
        for o in opts:
            o.step()
    for p, q in zip(ps, singles):
        assert np.array_equal(p.numpy(), q.numpy())
    sd, sd1 = opt.state_dict()["state"], [o.state_dict()["state"].get(0) for o in opts]
    for i, st in sd.items():
        for k, v in st.items():
            a = v.numpy() if isinstance(v, gg.Tensor) else v
            b = sd1[i][k].numpy() if isinstance(sd1[i][k], gg.Tensor) else sd1[i][k]
            assert np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64)), (i, k)


@pytest.mark.parametrize("make", [lambda ps: optim.Adam(ps, lr=1e-3), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.AdamW(ps, capturable=True)], ids=["adam", "sgd", "adamw_cap"])
def test_python_calls_per_step_do_not_grow_with_the_parameter_count(make):
    """cProfile's call count of one step (fresh gradients, as after backward) is the same for 10 and for
    80 parameters: no per-parameter Python call."""
    import cProfile
    import pstats
    counts = []
    for layers in (5, 40):
        gg.manual_seed(0)
        ps = list(nn.MLP([6] * layers + [3]).parameters())
        opt = make(ps)
        for k in range(3):
            for p in ps:
                p.grad = gg.ones(*p.shape)
            if k < 2:
                opt.step()
        prof = cProfile.Profile()
        prof.enable()
        opt.step()
        prof.disable()
        counts.append(pstats.Stats(prof).total_calls)
    assert counts[0] == counts[1] and counts[0] < 150, counts


def test_graph_safe_optimizers():
    ps = _model_params()
    assert optim.SGD(ps, lr=0.1, momentum=0.9).graph_safe and optim.RMSprop(ps).graph_safe
    assert not optim.Adam(ps).graph_safe and optim.Adam(ps, capturable=True).graph_safe
    assert not optim.AdamW([{"params": ps[:2], "capturable": True}, {"params": ps[2:]}]).graph_safe


def test_replaced_data_mixed_dtypes_and_state_round_trip():
    ps = _model_params()
    half = [nn.Parameter(gg.tensor(np.ones(3), dtype=gg.float32))]
    opt = optim.Adam([{"params": ps}, {"params": half, "lr": 0.1}], lr=0.01)
    shapes = [tuple(p.shape) for p in ps]

    def run(steps, start):
        for s in range(start, start + steps):
            for p, g in zip(ps, _grads(s, shapes)):
                p.grad = g
            half[0].grad = gg.ones(3, dtype=gg.float32)
            opt.step()
    run(2, 0)
    # two buckets (two groups); params are views of their bucket's buffer
    assert ps[0].data.base is not None and ps[0].data.base is ps[1].data.base
    saved = {k: {n: (v.numpy().copy() if isinstance(v, gg.Tensor) else v) for n, v in st.items()}
             for k, st in opt.state_dict()["state"].items()}
    # replacing .data (as model.to() or a user does) rebuilds the bucket; the state follows
    ps[1].data = ps[1].data.copy()
    run(2, 2)
    after = [p.numpy().copy() for p in ps]
    # a fresh optimizer loaded from the step-2 state dict, on parameters reset to step 2, gives the same
    ps2 = _model_params()
    opt_a = optim.Adam([{"params": ps2}, {"params": [nn.Parameter(gg.tensor(np.ones(3), dtype=gg.float32))],
                                          "lr": 0.1}], lr=0.01)
    ref_ps = _model_params()
    ref_opt = optim.Adam(ref_ps, lr=0.01)
    for s in range(2):
        for p, g in zip(ref_ps, _grads(s, shapes)):
            p.grad = g
        ref_opt.step()
    for p, q in zip(ps2, ref_ps):
        p.data[...] = q.data
    sd = {"state": {k: {n: (gg.tensor(v) if isinstance(v, np.ndarray) else v) for n, v in st.items()}
                    for k, st in saved.items()}, "param_groups": opt.state_dict()["param_groups"]}
    opt_a.load_state_dict(sd)
    for s in range(2, 4):
        for p, g in zip(ps2, _grads(s, shapes)):
            p.grad = g
        opt_a.param_groups[1]["params"][0].grad = gg.ones(3, dtype=gg.float32)
        opt_a.step()
    for a, p in zip(after, ps2):
        assert np.array_equal(a, p.numpy())
    assert opt.state[half[0]]["exp_avg"].dtype == gg.float32


def test_set_to_none_false_keeps_gradients_in_the_flat_buffer():
    ps = _model_params()
    opt = optim.SGD(ps, lr=0.1, momentum=0.9)
    shapes = [tuple(p.shape) for p in ps]
    for p, g in zip(ps, _grads(0, shapes)):
        p.grad = g
    opt.step()
    views = [p.grad.data for p in ps]
    opt.zero_grad(set_to_none=False)
    assert all(np.all(v == 0) for v in views)
    loss = sum((p * p).sum() for p in ps)
    loss.backward()  # accumulates into the views
    assert all(p.grad.data is v for p, v in zip(ps, views))
    before = [p.numpy().copy() for p in ps]
    opt.step()
    for b, p in zip(before, ps):
        assert not np.array_equal(b, p.numpy())


def test_clip_grad_norm_over_the_flat_buffer_matches_per_tensor():
    ps = _model_params()
    opt = optim.SGD(ps, lr=0.1)
    shapes = [tuple(p.shape) for p in ps]
    for p, g in zip(ps, _grads(0, shapes)):
        p.grad = g
    opt.step()  # the bucket exists now
    for p, g in zip(ps, _grads(1, shapes)):
        p.grad = gg.tensor(g.numpy() * 10)
    loose = [gg.tensor(p.grad.numpy().copy()) for p in ps]
    from gpugrad.optim.flat import grad_segments
    assert grad_segments(ps, "test") is not None and len(grad_segments(ps, "test")) == 1
    total = nn.utils.clip_grad_norm_(ps, 1.0)
    free = [nn.Parameter(gg.tensor(p.numpy())) for p in ps]
    for q, g in zip(free, loose):
        q.grad = g
    total_ref = nn.utils.clip_grad_norm_(free, 1.0)  # per-tensor path: not in any optimizer
    assert abs(total.item() - total_ref.item()) < 1e-12 * total_ref.item()
    for p, q in zip(ps, free):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-13)


def test_grad_scaler_with_a_capturable_optimizer_never_reads_the_flag_in_step(monkeypatch):
    ps = _model_params()
    ref_ps = _model_params()
    opt = optim.Adam(ps, lr=0.01, capturable=True)
    ref = optim.Adam(ref_ps, lr=0.01)
    scaler = amp.GradScaler(init_scale=4.0)
    shapes = [tuple(p.shape) for p in ps]
    reads = []
    real = amp._any_found
    monkeypatch.setattr(amp, "_any_found", lambda f: reads.append(1) or real(f))
    for s in range(4):
        gs = _grads(s, shapes)
        bad = s == 2
        for p, g in zip(ps, gs):
            p.grad = gg.tensor(g.numpy() * scaler.get_scale())
        if bad:
            ps[0].grad.data[0, 0] = np.inf
        scaler.step(opt)
        assert not reads  # step() handed the flag to the kernels
        scaler.update()
        assert len(reads) == 1  # update() reads it once (the scale is a host float)
        reads.clear()
        if not bad:
            for p, g in zip(ref_ps, gs):
                p.grad = g
            ref.step()
    for p, q in zip(ps, ref_ps):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-12, atol=1e-14)
    assert float(opt.state[ps[0]]["step"].item()) == 3.0 and ref.state[ref_ps[0]]["step"] == 3
    assert scaler.get_scale() == 2.0


@pytest.mark.parametrize("n_extra", [0, 30])
def test_grad_scaler_unscale_is_one_backend_pass_per_bucket(monkeypatch, n_extra):
    """``unscale_`` goes through the backend, once per flat gradient buffer (not per parameter), and
    finds an inf in any parameter."""
    calls = []
    orig = CPUBackend.unscale_check_
    monkeypatch.setattr(CPUBackend, "unscale_check_", lambda self, *a: calls.append(1) or orig(self, *a))
    ps = _model_params(n_extra=n_extra)
    opt = optim.SGD(ps, lr=0.1)
    scaler = amp.GradScaler(init_scale=8.0)
    shapes = [tuple(p.shape) for p in ps]
    for s in range(2):
        for p, g in zip(ps, _grads(s, shapes)):
            p.grad = gg.tensor(g.numpy() * 8.0)
        if s == 1:
            ps[-1].grad.data[...] = np.nan
        expected = [p.grad.numpy() / 8.0 for p in ps]
        scaler.unscale_(opt)
        for p, e in zip(ps, expected):
            np.testing.assert_array_equal(p.grad.numpy(), e)
        assert amp._any_found(scaler._states[id(opt)]["found_inf"]) == (s == 1)
        scaler.step(opt)
        scaler.update()
    assert len(calls) == 2
