"""Each activation is defined once (gpugrad/kernels/activations.py); every implementation generated from the
definition agrees with it in float64: the generic NumPy backend, the CPU Numba passes, the checked-in
CUDA C header (compiled and run in tests/test_nvcc.py) and the Numba CUDA kernels (run under the
simulator in tests/kernels/test_activations_sim.py). The codes of every kernel table are the one enum."""
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
from gpugrad.backends.cpu_numba import kernels as numba_kernels
from gpugrad.kernels import activations as A

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# every activation, leaky_relu with a positive, zero and negative slope
CASES = [(a, 0.01) for a in A.ACTIVATIONS] + [("leaky_relu", 0.3), ("leaky_relu", 0.0), ("leaky_relu", -0.3)]
IDS = [f"{a}[{k}]" for a, k in CASES]
# branch points exactly (0, -0), small and large magnitudes, both signs
POINTS = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-8, -1e-8, 0.3, -0.3, 1.0, -1.0, 2.5, -2.5, 7.0, -7.0, 30.0,
                   -30.0, 100.0, -100.0, 800.0, -800.0])


def _data(rng, act, slope, n=200):
    z = np.concatenate([POINTS, rng.standard_normal(n) * 3])
    dy = rng.standard_normal(z.size)
    y = A.forward_ref(z, act, slope)
    keep = A.saves(act, slope)
    return z, y, dy, {"y": y, "z": z, "none": None}[keep]


def _same(a, b, rtol=1e-13, atol=1e-14):
    """Float64 agreement up to the last bits of the math library (NumPy's SIMD tanh/exp are not libm's;
    ``1 + tanh(u)`` near -1 cancels, hence the absolute part)."""
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------- the definition
def test_the_definition_matches_the_textbook_formulas():
    f = lambda act, x, k=0.01: float(A.forward_ref(np.array([x]), act, k)[0])  # noqa: E731
    for x in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert f("identity", x) == x
        assert f("relu", x) == max(x, 0.0)
        assert f("leaky_relu", x, -0.2) == (x if x > 0 else -0.2 * x)
        assert f("sigmoid", x) == pytest.approx(1 / (1 + math.exp(-x)), rel=1e-15)
        assert f("tanh", x) == pytest.approx(math.tanh(x), rel=1e-15)
        assert f("gelu", x) == pytest.approx(x * 0.5 * math.erfc(-x / math.sqrt(2)), rel=1e-14, abs=1e-300)
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
        assert f("gelu_tanh", x) == pytest.approx(0.5 * x * (1 + math.tanh(u)), rel=1e-14, abs=1e-300)
    assert f("gelu", 1.0) == pytest.approx(0.8413447460685429, rel=1e-15)  # torch.nn.functional.gelu(1.)
    assert f("gelu_tanh", 1.0) == pytest.approx(0.8411919906082768, rel=1e-15)


@pytest.mark.parametrize("act,slope", CASES, ids=IDS)
def test_derivative_is_the_derivative_of_forward(act, slope):
    """Central differences of the forward, with backward fed what ``saves`` says it saves."""
    z = np.array([-3.1, -1.2, -0.4, 0.25, 0.9, 2.7])
    h = 1e-6
    fd = (A.forward_ref(z + h, act, slope) - A.forward_ref(z - h, act, slope)) / (2 * h)
    keep = A.saves(act, slope)
    saved = {"y": A.forward_ref(z, act, slope), "z": z, "none": None}[keep]
    np.testing.assert_allclose(A.backward_ref(np.ones_like(z), saved, act, slope), fd, rtol=1e-8, atol=1e-9)


def test_what_backward_saves():
    assert [A.saves(a) for a in A.ACTIVATIONS] == ["none", "y", "y", "y", "y", "z", "z"]
    assert A.saves("leaky_relu", 0.0) == "y" and A.saves("leaky_relu", -0.01) == "z"
    assert A.saves_output("leaky_relu", 0.2) and not A.saves_output("leaky_relu", -0.2)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        A.saves("swish")


@pytest.mark.parametrize("slope", [0.2, -0.2])
def test_ops_save_what_the_definition_says(slope):
    """nn.functional's leaky_relu keeps y for a positive slope and x for a negative one (where y's sign
    no longer tells the branch): the gradient is right either way."""
    x = gg.tensor([-2.0, -0.5, 0.5, 2.0], dtype=gg.float64, requires_grad=True)
    y = gg.nn.functional.leaky_relu(x, slope)
    saved = np.array(y.grad_fn.saved_tensors[0])
    np.testing.assert_array_equal(saved, (y if slope >= 0 else x).detach().numpy())
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [slope, slope, 1.0, 1.0])
    g = gg.nn.functional.gelu(x)
    np.testing.assert_array_equal(np.array(g.grad_fn.saved_tensors[0]), x.detach().numpy())  # GELU keeps x
    r = gg.relu(x)
    np.testing.assert_array_equal(np.array(r.grad_fn.saved_tensors[0]), r.detach().numpy())  # ReLU keeps y


# ---------------------------------------------------------------------------------------- generic backend
@pytest.mark.parametrize("act,slope", CASES, ids=IDS)
def test_generic_numpy_backend_matches_the_definition(act, slope):
    rng = np.random.default_rng(1)
    be = get_backend("cpu")
    z, y, dy, saved = _data(rng, act, slope)
    z0, dy0 = z.copy(), dy.copy()
    with np.errstate(all="ignore"):
        _same(Backend.act_forward(be, z, act, slope), y)
        zz = z.copy()
        out = Backend.act_forward(be, zz, act, slope, out=zz)  # in place
        assert out is zz
        _same(zz, y)
        _same(Backend.act_backward(be, dy, saved, act, slope), A.backward_ref(dy, saved, act, slope))
        if saved is not None:  # the variant that may not overwrite temporaries (mixed dtypes)
            bwd = A.xp_functions(act, reuse=False)[1]
            _same(bwd(np, be.erf, dy, saved, slope), A.backward_ref(dy, saved, act, slope))
    assert np.array_equal(z, z0) and np.array_equal(dy, dy0)  # inputs untouched


def test_generic_backend_keeps_the_dtype_and_fresh_output():
    be = get_backend("cpu")
    for dt in (np.float16, np.float32, np.float64):
        z = np.linspace(-3, 3, 11).astype(dt)
        for act in A.ACTIVATIONS:
            y = Backend.act_forward(be, z, act)
            assert y.dtype == dt and y is not z, act
            assert Backend.act_backward(be, z, y, act).dtype == dt, act


# ---------------------------------------------------------------------------------------- CPU Numba passes
@pytest.mark.parametrize("act,slope", CASES, ids=IDS)
def test_cpu_numba_passes_match_the_definition(act, slope):
    rng = np.random.default_rng(2)
    z, y, dy, saved = _data(rng, act, slope)
    b = rng.standard_normal(z.size)
    inplace, keep_z, bwd_bias = numba_kernels(act, np.float64)
    y_ref = A.forward_ref((z + b)[None, :], act, slope)
    t = z[None, :].copy()
    inplace(t, b, True, slope)
    _same(t, y_ref)
    t, yy = (z + 0.0)[None, :], np.empty((1, z.size))
    keep_z(t, b, False, slope, yy)
    _same(yy, y[None, :])
    s = (dy if saved is None else saved)[None, :]
    dz, db = np.empty((1, z.size)), np.empty(z.size)
    bwd_bias(dy[None, :], s, slope, dz, db, True)
    ref = A.backward_ref(dy, saved, act, slope)[None, :]
    _same(dz, ref)
    _same(db, ref[0])


@pytest.mark.parametrize("act", A.ACTIVATIONS)
def test_cpu_numba_float32_computes_in_float32_close_to_the_definition(act):
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((4, 33)) * 3).astype(np.float32)
    dy = rng.standard_normal((4, 33)).astype(np.float32)
    inplace, _, bwd_bias = numba_kernels(act, np.float32)
    t = z.copy()
    inplace(t, np.zeros(1, np.float32), False, 0.01)
    np.testing.assert_allclose(t, A.forward_ref(z, act), rtol=2e-6, atol=2e-7)
    s = {"y": t, "z": z, "none": dy}[A.saves(act)]
    dz, db = np.empty_like(dy), np.empty(1, np.float32)
    bwd_bias(dy, s, 0.01, dz, db, False)
    np.testing.assert_allclose(dz, A.backward_ref(dy, s, act), rtol=2e-5, atol=2e-6)


def test_cpu_unfused_relu_backward_uses_the_numba_pass():
    be = get_backend("cpu")
    y = np.array([[0.0, 1.0, -0.0, 2.0]], np.float32)
    dy = np.array([[5.0, 6.0, 7.0, np.inf]], np.float32)
    np.testing.assert_array_equal(be.act_backward(dy, y, "relu"), [[0.0, 6.0, 0.0, np.inf]])
    np.testing.assert_array_equal(be.act_backward(dy, y, "leaky_relu", 0.5), [[2.5, 6.0, 3.5, np.inf]])


# ---------------------------------------------------------------------------------------- one enum
def test_the_generated_cuda_header_is_up_to_date():
    with open(A.header_path(), encoding="utf-8") as f:
        assert f.read() == A.cuda_header(), "gpugrad/kernels/activations.cuh is stale: run `python -m gpugrad.kernels.activations`"


def test_every_kernel_table_uses_the_one_enum():
    from gpugrad.experimental import epilogue_kernels as E
    from gpugrad.experimental import fused_mlp_kernels as FM
    enum = re.search(r"enum Code \{([^}]*)\}", A.cuda_header()).group(1)
    assert {k.strip().lower(): int(v) for k, v in (e.split("=") for e in enum.split(","))} == A.CODES
    assert sorted(A.CODES.values()) == list(range(len(A.ALL)))
    assert FM.ACTIVATIONS == {n: A.CODES[n] for n in ("identity", "relu", "sigmoid", "tanh")}
    assert set(E.FORWARD) == set(E.BACKWARD) == {"relu", "gelu_tanh"}
    for path in (os.path.join(ROOT, "gpugrad", "kernels", "fused.cu"),
                 os.path.join(ROOT, "gpugrad", "experimental", "fused_mlp.cu")):
        with open(path, encoding="utf-8") as f:
            src = f.read()
        assert '#include "activations.cuh"' in src
        assert A.cuda_header() in A.cuda_source(path)


def test_no_other_copy_of_the_activation_formulas_or_codes():
    """No module outside gpugrad/kernels/activations.py writes an activation code table or GELU's constants."""
    files = [p for p in glob.glob(os.path.join(ROOT, "gpugrad", "**", "*.py"), recursive=True)
             + glob.glob(os.path.join(ROOT, "gpugrad", "kernels", "*.*"))
             if os.path.basename(p) not in ("activations.py", "activations.cuh")]
    pat = re.compile(r"0\.044715|0\.7978845|sqrt\(2\.0 / math\.pi\)|[\"']sigmoid[\"']\s*:\s*\d|ACT_SIGMOID|"
                     r"case 3:|SAVES_OUTPUT")
    hits = []
    for p in files:
        with open(p, encoding="utf-8", errors="replace") as f:
            hits += [f"{os.path.relpath(p, ROOT)}: {m.group(0)}" for m in pat.finditer(f.read())]
    assert not hits, hits


def test_epilogue_emulation_uses_the_definition():
    from gpugrad.experimental import epilogue_kernels as E
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((6, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    for act in ("relu", "gelu_tanh"):
        y, aux = E.linear_act_forward(x, w, b, act)
        z = x @ w.T + b
        _same(y, A.forward_ref(z, act), rtol=1e-13)
        dy = rng.standard_normal(y.shape)
        dz, db = E.act_bias_backward(dy, aux, act, True)
        saved = A.forward_ref(z, act) if A.saves(act) == "y" else z
        _same(dz, A.backward_ref(dy, saved, act), rtol=1e-13)


@pytest.mark.parametrize("act,slope", CASES, ids=IDS)
def test_fused_linear_passes_save_what_the_definition_says(act, slope):
    """The bias+activation pass of both CPU code paths returns as ``saved`` exactly y, z + b or None."""
    be = get_backend("cpu")
    rng = np.random.default_rng(5)
    z, b = rng.standard_normal((3, 8)), rng.standard_normal(8)
    for run in (be.bias_act, lambda *a: Backend.bias_act(be, *a)):
        y, saved = run(z.copy(), b, act, slope)
        want = {"y": y, "z": z + b, "none": None}[A.saves(act, slope)]
        if want is None:
            assert saved is None
        else:
            np.testing.assert_array_equal(saved, want)
