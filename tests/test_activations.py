"""Each activation is defined once (gpugrad/kernels/activations.py); every implementation generated from the
definition agrees with it in float64: the generic NumPy backend, the CPU Numba passes, the checked-in
CUDA C header (compiled and run in tests/test_nvcc.py) and the Numba CUDA kernels (run under the
simulator in tests/kernels/test_activations_sim.py). Derivatives of every order come from the definition:
each order is the derivative of the order below (finite differences) and every implementation computes it.
The codes of every kernel table are the one enum."""
from __future__ import annotations

import glob
import math
import os
import re

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.backends import get_backend
from gpugrad.backends.base import Backend
from gpugrad.backends.cpu_numba import deriv_kernel, kernels as numba_kernels
from gpugrad.kernels import activations as A
from gpugrad.kernels import expr as E

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# every activation with its defaults, and the parameters that reach other branches
EXTRA = [("leaky_relu", (0.3,)), ("leaky_relu", (0.0,)), ("leaky_relu", (-0.3,)), ("softplus", (2.0, 20.0)),
         ("softplus", (0.5, 3.0)), ("elu", (0.5,)), ("elu", (-0.7,)), ("hardtanh", (-0.5, 2.0))]
CASES = [(a, A.params(a)) for a in A.ACTIVATIONS] + EXTRA
IDS = [f"{a}{list(p)}" for a, p in CASES]
# branch points exactly (0, -0, +-3, 6, softplus' thresholds), small and large magnitudes, both signs
POINTS = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 0.3, -0.3, 1.0, -1.0, 2.5, -2.5, 3.0, -3.0, 6.0, 7.0,
                   -7.0, 10.0, 30.0, -30.0, 100.0, -100.0, 800.0, -800.0, -0.5, 2.0])
ORDERS = (1, 2, 3)


def _data(rng, act, prm, n=200):
    z = np.concatenate([POINTS, rng.standard_normal(n) * 3])
    dy = rng.standard_normal(z.size)
    y = A.forward_ref(z, act, prm)
    keep = A.saves(act, prm)
    return z, y, dy, {"y": y, "z": z, "none": None}[keep]


def _same(a, b, rtol=1e-13, atol=1e-14):
    """Float64 agreement up to the last bits of the math library (NumPy's SIMD tanh/exp are not libm's;
    ``1 + tanh(u)`` near -1 cancels, hence the absolute part)."""
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


def _same_k(a, b, order):
    """Higher orders cancel more (``1 - tanh(u)^2`` and its derivatives): the math library's last bits
    show at ~1e-7 relative on values near 0, hence an absolute part for orders >= 2."""
    _same(a, b, **({} if order == 1 else {"rtol": 1e-10, "atol": 1e-12}))


def _saved(act, prm, z):
    return {"y": A.forward_ref(z, act, prm), "z": z, "none": None}[A.saves(act, prm)]


# ---------------------------------------------------------------------------------------- the definition
def test_the_definition_matches_the_textbook_formulas():
    def f(act, x, p=None):
        return float(A.forward_ref(np.array([x]), act, p)[0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    for x in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert f("identity", x) == x
        assert f("relu", x) == max(x, 0.0)
        assert f("leaky_relu", x, -0.2) == (x if x > 0 else -0.2 * x)
        assert f("sigmoid", x) == pytest.approx(sig(x), rel=1e-15)
        assert f("tanh", x) == pytest.approx(math.tanh(x), rel=1e-15)
        assert f("gelu", x) == pytest.approx(x * 0.5 * math.erfc(-x / math.sqrt(2)), rel=1e-14, abs=1e-300)
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
        assert f("gelu_tanh", x) == pytest.approx(0.5 * x * (1 + math.tanh(u)), rel=1e-14, abs=1e-300)
        assert f("silu", x) == pytest.approx(x * sig(x), rel=1e-15)
        assert f("softplus", x) == pytest.approx(math.log(1 + math.exp(x)), rel=1e-15)
        assert f("softplus", x, (2.0, 3.0)) == pytest.approx(x if 2 * x > 3 else math.log(1 + math.exp(2 * x)) / 2,
                                                              rel=1e-15)
        assert f("elu", x, 0.5) == pytest.approx(x if x > 0 else 0.5 * (math.exp(x) - 1), rel=1e-15)
        assert f("selu", x) == pytest.approx(1.0507009873554805 * (x if x > 0 else 1.6732632423543772 *
                                                                    (math.exp(x) - 1)), rel=1e-15)
        assert f("mish", x) == pytest.approx(x * math.tanh(math.log1p(math.exp(x))), rel=1e-15)
        assert f("hardswish", x) == pytest.approx(x * min(max(x + 3, 0), 6) / 6, rel=1e-15)
        assert f("hardsigmoid", x) == pytest.approx(min(max(x + 3, 0), 6) / 6, rel=1e-15)
        assert f("relu6", x) == min(max(x, 0.0), 6.0)
        assert f("hardtanh", x, (-0.5, 2.0)) == min(max(x, -0.5), 2.0)
        assert f("logsigmoid", x) == pytest.approx(math.log(sig(x)), rel=1e-14)
        assert f("sin", x) == math.sin(x)
    assert f("gelu", 1.0) == pytest.approx(0.8413447460685429, rel=1e-15)  # torch.nn.functional.gelu(1.)
    assert f("gelu_tanh", 1.0) == pytest.approx(0.8411919906082768, rel=1e-15)
    assert f("logsigmoid", -800.0) == -800.0 and f("logsigmoid", 800.0) == 0.0  # the stable form
    assert f("softplus", 800.0) == 800.0 and f("mish", 800.0) == 800.0


@pytest.mark.parametrize("act,prm", CASES, ids=IDS)
def test_derivative_is_the_derivative_of_forward(act, prm):
    """Central differences of the forward, with backward fed what ``saves`` says it saves."""
    z = np.array([-3.1, -1.2, -0.4, 0.25, 0.9, 2.7])
    h = 1e-6
    fd = (A.forward_ref(z + h, act, prm) - A.forward_ref(z - h, act, prm)) / (2 * h)
    np.testing.assert_allclose(A.backward_ref(np.ones_like(z), _saved(act, prm, z), act, prm), fd, rtol=1e-8,
                               atol=1e-9)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("act,prm", CASES, ids=IDS)
def test_each_order_is_the_derivative_of_the_order_below(act, prm, order):
    """``derivative(act, k)`` evaluated from the saved array (y or z of the points) equals the central
    difference over ``z`` of ``derivative(act, k - 1)`` (order 0: the forward) away from kinks."""
    z = np.array([-3.3, -2.1, -1.2, -0.4, 0.25, 0.9, 1.7, 2.7, 4.4])
    h = 1e-5
    below = A.derivative(act, order - 1, A.saves(act, prm))
    this = A.derivative(act, order, A.saves(act, prm))
    env = {f"p{i}": v for i, v in enumerate(A.kernel_params(act, prm))}

    def at(tree, zz):
        s = _saved(act, prm, np.array([zz]))
        env_ = dict(env, z=zz, s=zz if s is None else float(s[0]))
        return E.evaluate(tree, env_)
    for zz in z:
        fd = (at(below, zz + h) - at(below, zz - h)) / (2 * h)
        assert at(this, zz) == pytest.approx(fd, rel=1e-6, abs=1e-7), (act, order, zz)


def test_second_derivatives_follow_pytorch_at_kinks():
    """relu'' = 0 everywhere; PyTorch's double-backward formulas at the kinks (derivatives.yaml):
    hardswish'' is 1/3 on the open interval (-3, 3) only, elu'' and selu'' are 0 at 0 (``self < 0``),
    softplus'' is 0 from the threshold on (``x * beta < threshold``)."""
    def d2(act, s, p=None):
        env = {f"p{i}": v for i, v in enumerate(A.kernel_params(act, p))}
        return E.evaluate(A.derivative(act, 2), dict(env, s=s))
    for act in ("relu", "leaky_relu", "relu6", "hardtanh", "hardsigmoid", "identity"):
        assert A.derivative(act, 2) is E.ZERO and A.derivative(act, 3) is E.ZERO, act
    assert [d2("hardswish", s) for s in (-3.0, -2.9, 2.9, 3.0)] == [0.0, 1 / 3, 1 / 3, 0.0]
    assert d2("elu", 0.0) == 0.0 and d2("elu", -1e-9) == pytest.approx(1.0) and d2("selu", 0.0) == 0.0
    assert d2("softplus", 20.0) == 0.0 and d2("softplus", 19.99) > 0
    # first derivatives at the same points, as PyTorch 2.13
    assert [A.backward_ref([1.0], [s], "hardswish")[0] for s in (-3.0, 3.0)] == [0.0, 1.0]
    assert A.backward_ref([1.0], [0.0], "elu")[0] == 1.0 and A.backward_ref([1.0], [20.0], "softplus")[0] != 1.0


_REF = None


def _torch_ref() -> dict:
    global _REF
    if _REF is None:
        from tests.reference import record_torch
        _REF = record_torch.load()["activation_derivatives"]
    return _REF


@pytest.mark.parametrize("i", range(len(__import__("tests.reference.record_torch", fromlist=["x"]).ACTIVATION_DERIVATIVES)))
def test_first_and_second_derivatives_match_recorded_pytorch(i):
    """PyTorch 2.13's first and second derivatives (autograd's double backward, recorded by
    tests/reference/record_torch.py) at kinks and smooth points, from the saved array as gpugrad saves it."""
    ref = _torch_ref()
    case = ref["cases"][i]
    name, kw = case["name"], case["kwargs"]
    act = "gelu_tanh" if name == "gelu" and kw.get("approximate") == "tanh" else name
    prm = A.params(act, {k: v for k, v in kw.items() if k != "approximate"})
    z = np.array(ref["points"])
    saved = _saved(act, prm, z)
    for order, key in ((1, "first"), (2, "second")):
        if case[key] is None:  # PyTorch has no double backward for it (hardsigmoid): ours is 0 there
            continue
        got = A.backward_ref(np.ones_like(z), saved, act, prm, order)
        # hardsigmoid's float64 gradient: PyTorch multiplies by float(1/6) (a float literal), we by 1/6
        rtol = 1e-7 if act == "hardsigmoid" else 1e-12 if order == 1 else 1e-9
        np.testing.assert_allclose(got, case[key], rtol=rtol, atol=1e-15 if order == 1 else 1e-12,
                                   err_msg=f"{act}{prm} order {order}")


def test_primitive_references_follow_c_at_the_edges():
    """The float64 references (the definition tests compare to) give what C's pow/sin/cos give: a
    negative base to a fractional power is NaN, not a complex number; a zero base to a negative odd power
    keeps the zero's sign; an infinite angle is NaN, not a ValueError."""
    pw = E.PRIMS["pow"].ref
    for a, b in [(-2.5, 0.5), (-1.0, -2.5), (-800.0, 0.5)]:
        assert math.isnan(pw(a, b)), (a, b)
    assert math.isnan(E.evaluate(E.var("x") ** 0.5, {"x": -4.0}))
    assert (pw(-0.0, -1.0), pw(0.0, -1.0), pw(-0.0, -2.0)) == (-math.inf, math.inf, math.inf)
    assert (pw(-10.0, 401.0), pw(10.0, 401.0), pw(-10.0, 400.0)) == (-math.inf, math.inf, math.inf)
    assert (pw(2.0, 0.5), pw(-2.0, 3.0)) == (math.sqrt(2.0), -8.0)
    for name in ("sin", "cos"):
        assert all(math.isnan(E.PRIMS[name].ref(v)) for v in (math.inf, -math.inf, math.nan)), name
    assert E.PRIMS["sin"].ref(0.5) == math.sin(0.5)


def test_derivatives_stay_small():
    """Interning shares common subexpressions and zeros drop: no order blows up."""
    for act in A.ACTIVATIONS:
        sizes = [E.size(A.derivative(act, k)) for k in (1, 2, 3)]
        assert max(sizes) <= 70, (act, sizes)


def test_what_backward_saves():
    """Nothing where the derivative is constant; the output only where the derivative is a function of
    it; the pre-activation otherwise; leaky_relu switches to z for a negative slope."""
    for a in A.ALL:
        d1 = A.derivative(a.name, 1)
        assert (a.saves == "none") == ("s" not in E.variables(d1)), a.name
    assert A.saves("relu") == "y" and A.saves("gelu") == "z" and A.saves("identity") == "none"
    assert A.saves("leaky_relu", 0.0) == "y" and A.saves("leaky_relu", -0.01) == "z"
    assert A.saves_output("leaky_relu", 0.2) and not A.saves_output("leaky_relu", -0.2)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        A.saves("swish")


def test_parameter_switched_saves_keep_the_kernels_derivatives():
    """The kernels compute higher orders for the record's default ``saves``: where parameters switch it
    (leaky_relu), every higher order is the same expression either way."""
    for a in A.ALL:
        if a.saves_z_when is not None:
            for k in (2, 3, 4):
                assert A.derivative(a.name, k, "y") is A.derivative(a.name, k, "z"), (a.name, k)


def test_parameters_by_position_name_or_default():
    assert A.params("softplus") == (1.0, 20.0)
    assert A.params("softplus", {"threshold": 5}) == (1.0, 5.0)
    assert A.params("softplus", (2.0,)) == (2.0, 20.0)
    assert A.params("leaky_relu", 0.2) == (0.2,)
    assert A.kernel_params("relu") == (0.0,) * A.NPARAMS
    with pytest.raises(TypeError, match="unknown parameter"):
        A.params("elu", {"beta": 1.0})
    assert A.NPARAMS == max(len(a.params) for a in A.ALL)


# ---------------------------------------------------------------------------------------- generic backend
@pytest.mark.parametrize("act,prm", CASES, ids=IDS)
def test_generic_numpy_backend_matches_the_definition(act, prm):
    rng = np.random.default_rng(1)
    be = get_backend("cpu")
    z, y, dy, saved = _data(rng, act, prm)
    z0, dy0 = z.copy(), dy.copy()
    with np.errstate(all="ignore"):
        _same(Backend.act_forward(be, z, act, prm), y)
        zz = z.copy()
        out = Backend.act_forward(be, zz, act, prm, out=zz)  # in place
        assert out is zz
        _same(zz, y)
        for k in ORDERS:
            want = A.backward_ref(dy, saved, act, prm, k)
            _same_k(Backend.act_derivative(be, dy, saved, act, prm, k), want, k)
            if saved is not None:  # the variant that may not overwrite temporaries (mixed dtypes)
                bwd = A.xp_functions(act, reuse=False, order=k, saved=A.saves(act, prm))[1]
                _same_k(bwd(np, be.erf, dy, saved, prm), want, k)
        _same(Backend.act_backward(be, dy, saved, act, prm), A.backward_ref(dy, saved, act, prm))
    assert np.array_equal(z, z0) and np.array_equal(dy, dy0)  # inputs untouched


def test_generic_backend_keeps_the_dtype_and_fresh_output():
    be = get_backend("cpu")
    for dt in (np.float16, np.float32, np.float64):
        z = np.linspace(-3, 3, 11).astype(dt)
        for act in A.ACTIVATIONS:
            y = Backend.act_forward(be, z, act)
            assert y.dtype == dt and y is not z, act
            for k in ORDERS:
                assert Backend.act_derivative(be, z, y, act, None, k).dtype == dt, act


# ---------------------------------------------------------------------------------------- CPU Numba passes
@pytest.mark.parametrize("act,prm", CASES, ids=IDS)
def test_cpu_numba_passes_match_the_definition(act, prm):
    rng = np.random.default_rng(2)
    z, y, dy, saved = _data(rng, act, prm)
    b = rng.standard_normal(z.size)
    inplace, keep_z, _ = numba_kernels(act, np.float64)
    P = A.kernel_params(act, prm, np.float64)
    with np.errstate(all="ignore"):
        y_ref = A.forward_ref((z + b)[None, :], act, prm)
    t = z[None, :].copy()
    inplace(t, b, True, P)
    _same(t, y_ref)
    t, yy = (z + 0.0)[None, :], np.empty((1, z.size))
    keep_z(t, b, False, P, yy)
    _same(yy, y[None, :])
    s = (dy if saved is None else saved)[None, :]
    for k in A.KERNEL_ORDERS:
        dz, db = np.empty((1, z.size)), np.empty(z.size)
        deriv_kernel(act, np.float64, k)(dy[None, :], s, P, dz, db, True)
        ref = A.backward_ref(dy, saved, act, prm, k)[None, :]
        _same_k(dz, ref, k)
        _same_k(db, ref[0], k)


@pytest.mark.parametrize("act", A.ACTIVATIONS)
def test_cpu_numba_float32_computes_in_float32_close_to_the_definition(act):
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((4, 33)) * 3).astype(np.float32)
    dy = rng.standard_normal((4, 33)).astype(np.float32)
    inplace, _, _ = numba_kernels(act, np.float32)
    P = A.kernel_params(act, None, np.float32)
    t = z.copy()
    inplace(t, np.zeros(1, np.float32), False, P)
    np.testing.assert_allclose(t, A.forward_ref(z, act), rtol=2e-6, atol=2e-7)
    s = {"y": t, "z": z, "none": dy}[A.saves(act)]
    for k in A.KERNEL_ORDERS:
        dz, db = np.empty_like(dy), np.empty(1, np.float32)
        deriv_kernel(act, np.float32, k)(dy, s, P, dz, db, False)
        np.testing.assert_allclose(dz, A.backward_ref(dy, s, act, None, k), rtol=4e-5, atol=4e-6)


def test_cpu_backend_derivatives_take_the_numba_pass_and_agree():
    be = get_backend("cpu")
    rng = np.random.default_rng(6)
    y = np.array([[0.0, 1.0, -0.0, 2.0]], np.float32)
    dy = np.array([[5.0, 6.0, 7.0, np.inf]], np.float32)
    np.testing.assert_array_equal(be.act_backward(dy, y, "relu"), [[0.0, 6.0, 0.0, np.inf]])
    np.testing.assert_array_equal(be.act_backward(dy, y, "leaky_relu", 0.5), [[2.5, 6.0, 3.5, np.inf]])
    for act in A.ACTIVATIONS:
        z = rng.standard_normal((5, 7)) * 3
        s = _saved(act, None, z)
        g = rng.standard_normal((5, 7))
        for k in ORDERS:
            want = A.backward_ref(g, s, act, None, k)
            _same_k(be.act_derivative(g, s, act, None, k), want, k)
            dz, db = be.act_bias_backward(g, s if s is not None else g, act, True, None, k) if k in A.KERNEL_ORDERS \
                else Backend.act_bias_backward(be, g, s, act, True, None, k)
            _same_k(dz, want, k)
            _same_k(db, want.sum(axis=0), k)


# ---------------------------------------------------------------------------------------- one enum
def test_the_generated_cuda_header_is_up_to_date():
    with open(A.header_path(), encoding="utf-8") as f:
        assert f.read() == A.cuda_header(), "gpugrad/kernels/activations.cuh is stale: run `python -m gpugrad.kernels.activations`"


def test_every_kernel_table_uses_the_one_enum():
    from gpugrad.experimental import epilogue_kernels as E_
    from gpugrad.experimental import fused_mlp_kernels as FM
    enum = re.search(r"enum Code \{([^}]*)\}", A.cuda_header()).group(1)
    assert {k.strip().lower(): int(v) for k, v in (e.split("=") for e in enum.split(","))} == A.CODES
    assert sorted(A.CODES.values()) == list(range(len(A.ALL)))
    # the fused MLP: every activation whose backward needs at most the output and no parameter
    assert FM.ACTIVATIONS == {a.name: a.code for a in A.ALL if A.saves(a.name) in ("y", "none") and not a.params}
    assert {"identity", "relu", "sigmoid", "tanh"} <= set(FM.ACTIVATIONS) and "gelu" not in FM.ACTIVATIONS
    assert set(E_.FORWARD) == set(E_.BACKWARD) == {a.name for a in A.ALL if a.cublaslt}
    for path in (os.path.join(ROOT, "gpugrad", "kernels", "fused.cu"),
                 os.path.join(ROOT, "gpugrad", "experimental", "fused_mlp.cu")):
        with open(path, encoding="utf-8") as f:
            src = f.read()
        assert '#include "activations.cuh"' in src
        spliced = A.cuda_source(path)
        assert A.cuda_header() in spliced and "GG_ACT_PARAMS(" not in spliced.replace(A.cuda_header(), "")


def test_no_other_copy_of_the_activation_formulas_or_codes():
    """No module outside gpugrad/kernels/activations.py writes an activation code table or its constants."""
    files = [p for p in glob.glob(os.path.join(ROOT, "gpugrad", "**", "*.py"), recursive=True)
             + glob.glob(os.path.join(ROOT, "gpugrad", "kernels", "*.*"))
             if os.path.basename(p) not in ("activations.py", "activations.cuh")]
    pat = re.compile(r"0\.044715|0\.7978845|sqrt\(2\.0 / math\.pi\)|[\"']sigmoid[\"']\s*:\s*\d|ACT_SIGMOID|"
                     r"case 3:|SAVES_OUTPUT|1\.673263|1\.050700")
    hits = []
    for p in files:
        with open(p, encoding="utf-8", errors="replace") as f:
            hits += [f"{os.path.relpath(p, ROOT)}: {m.group(0)}" for m in pat.finditer(f.read())]
    assert not hits, hits


def test_epilogue_emulation_uses_the_definition():
    from gpugrad.experimental import epilogue_kernels as E_
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((6, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    for act in ("relu", "gelu_tanh"):
        y, aux = E_.linear_act_forward(x, w, b, act)
        z = x @ w.T + b
        _same(y, A.forward_ref(z, act), rtol=1e-13)
        dy = rng.standard_normal(y.shape)
        dz, db = E_.act_bias_backward(dy, aux, act, True)
        saved = A.forward_ref(z, act) if A.saves(act) == "y" else z
        _same(dz, A.backward_ref(dy, saved, act), rtol=1e-13)


@pytest.mark.parametrize("act,prm", CASES, ids=IDS)
def test_fused_linear_passes_save_what_the_definition_says(act, prm):
    """The bias+activation pass of both CPU code paths returns as ``saved`` exactly y, z + b or None."""
    be = get_backend("cpu")
    rng = np.random.default_rng(5)
    z, b = rng.standard_normal((3, 8)), rng.standard_normal(8)
    for run in (be.bias_act, lambda *a: Backend.bias_act(be, *a)):
        y, saved = run(z.copy(), b, act, prm)
        want = {"y": y, "z": z + b, "none": None}[A.saves(act, prm)]
        if want is None:
            assert saved is None
        else:
            np.testing.assert_array_equal(saved, want)


@pytest.mark.parametrize("act,prm", CASES, ids=IDS)
def test_ops_save_what_the_definition_says(act, prm):
    """The op keeps y, x or nothing as the definition says, and its gradient is right either way."""
    x = gg.tensor([-2.0, -0.5, 0.5, 2.0], dtype=gg.float64, requires_grad=True)
    y = gg.ops.activation(x, act, prm) if act not in ("gelu", "gelu_tanh", "identity") else \
        gg.ops.activation(x, act)
    if act == "identity":
        assert y is x
        return
    saved = y.grad_fn.saved_tensors[0]
    want = {"y": y.detach().numpy(), "z": x.detach().numpy(), "none": None}[A.saves(act, prm)]
    if want is None:
        assert saved is None
    else:
        np.testing.assert_array_equal(np.array(saved), want)
    y.sum().backward()
    _same(x.grad.numpy(), A.backward_ref(np.ones(4), want, act, prm))
