"""The CPU backend's fast paths (Numba passes, optional MKL GEMMs) agree with the generic NumPy code."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.backends import cpu_blas, get_backend
from gpugrad.backends.base import Backend
from gpugrad.install_hints import hint
from gpugrad.kernels.activations import ACTIVATIONS

rng = np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_fused_passes_match_generic(act, dtype):
    be = get_backend("cpu")
    z = rng.standard_normal((37, 19)).astype(dtype)
    b = rng.standard_normal(19).astype(dtype)
    dy = rng.standard_normal((37, 19)).astype(dtype)
    for slope in (0.01, -0.3) if act == "leaky_relu" else (0.01,):
        y_fast, s_fast = be.bias_act(z.copy(), b, act, slope)
        y_ref, s_ref = Backend.bias_act(be, z.copy(), b, act, slope)
        tol = 1e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(y_fast, y_ref, rtol=tol, atol=tol)
        if s_ref is None:
            assert s_fast is None
            continue
        np.testing.assert_allclose(s_fast, s_ref, rtol=tol, atol=tol)
        dz_fast, db_fast = be.act_bias_backward(dy, s_fast, act, True, slope)
        dz_ref, db_ref = Backend.act_bias_backward(be, dy, s_ref, act, True, slope)
        np.testing.assert_allclose(dz_fast, dz_ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(db_fast, db_ref, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_pass_matches_generic(dtype, smoothing):
    """The Numba softmax-cross-entropy pass (forward and backward) against the NumPy code in base.py,
    with an ignored row, extreme scores and a 0-d incoming gradient times ``mul``."""
    be = get_backend("cpu")
    x = (rng.standard_normal((37, 11)) * 5).astype(dtype)
    x[0, 3] = 80.0
    t = rng.integers(0, 11, 37)
    t[4] = -100
    loss, probs = be.softmax_cross_entropy(x, t, -100, check_op="cross_entropy")
    loss_ref, probs_ref = Backend.softmax_cross_entropy(be, x, t, -100, check_op="cross_entropy")
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss, loss_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(probs, probs_ref, rtol=tol, atol=tol)
    g = np.asarray(0.37, dtype)
    d = be.cross_entropy_backward(probs_ref, t, g, 0.5, -100, smoothing)
    d_ref = Backend.cross_entropy_backward(be, probs_ref, t, g, 0.5, -100, smoothing)
    np.testing.assert_allclose(d, d_ref, rtol=tol, atol=tol)
    assert d.dtype == d_ref.dtype and loss.dtype == loss_ref.dtype


def test_cross_entropy_pass_reports_bad_targets_as_the_generic_code():
    be = get_backend("cpu")
    x = rng.standard_normal((5, 4)).astype(np.float32)
    for bad in (4, -1):
        t = np.array([0, 1, bad, 3, 2])
        with pytest.raises(IndexError, match=rf"cross_entropy: target {bad} at position 2 is out of range for 4"):
            be.softmax_cross_entropy(x, t, -100, check_op="cross_entropy")
    be.softmax_cross_entropy(x, np.array([0, 1, 7, 3, 2]), 7, check_op="cross_entropy")  # ignored: fine


def test_optimizer_pass_matches_generic_on_float32():
    """The Numba pass and the NumPy path of every rule agree on a large float32 buffer (float64: see
    tests/test_optim_rules.py)."""
    from tests.support import optim_examples as ox
    from gpugrad.kernels.optim_rules import RULES
    be = get_backend("cpu")
    n = 70 * 33
    for rule in RULES.values():
        opts = ox.examples(rule)[-3]
        a = ox.example_arrays(rule, opts, n, rng, np.float32)
        b = {k: v.copy() for k, v in a.items()}
        for k in range(1, 4):
            be.optim_step(rule, a, 0, n, opts, rule.derive(k, opts))
            Backend.optim_step(be, rule, b, 0, n, opts, rule.derive(k, opts))
        for k in a:
            assert np.all(np.isfinite(a[k]))
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-6)


def test_mkl_gemm_matches_numpy():
    if cpu_blas.load() is None:
        pytest.skip(f"MKL not installed ({hint('mkl')}) or GPUGRAD_BLAS=numpy")
    a = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_allclose(cpu_blas.gemm(a, b, False, False), a @ b, rtol=1e-5)
    np.testing.assert_allclose(cpu_blas.gemm(a, b.T.copy(), False, True), a @ b, rtol=1e-5)
    np.testing.assert_allclose(cpu_blas.gemm(a.T.copy(), b, True, False), a @ b, rtol=1e-5)
    assert cpu_blas.gemm(a[:, ::2], b[::2], False, False) is None  # not contiguous: caller uses NumPy
    assert cpu_blas.gemm(a, b.astype(np.float64), False, False) is None
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_allclose(cpu_blas.gemm(a64, b64, False, False), a64 @ b64, rtol=1e-12)


def test_blas_provider_is_reported():
    assert cpu_blas.provider().split()[0] in ("mkl", "numpy")


def test_fused_linear_on_sliced_input_uses_fallback():
    x = gg.tensor(rng.standard_normal((8, 10)), dtype=gg.float64)[:, ::2]  # not contiguous
    w = gg.tensor(rng.standard_normal((3, 5)), dtype=gg.float64, requires_grad=True)
    y = gg.nn.functional.linear(x, w)
    np.testing.assert_allclose(y.numpy(), x.numpy() @ w.numpy().T, rtol=1e-12)
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), np.ones((8, 3)).T @ x.numpy(), rtol=1e-12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_cpu_backend_keeps_freed_activation_blocks():
    """Fresh 0.5 MB arrays allocated and freed in a loop (a training step's GEMM outputs) fault no new
    pages once the CPU backend is up (glibc's default trim threshold gave them back to the OS each time);
    GPUGRAD_MALLOC_TUNE=0 keeps glibc's defaults."""
    import platform
    import subprocess
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    code = ("import resource, numpy as np, gpugrad as gg\n"
            "gg.zeros(1) + 1\n"
            "x = np.ones((1024, 128), np.float32); w = np.ones((128, 128), np.float32)\n"
            "for _ in range(5): a = [x @ w for _ in range(8)]; del a\n"
            "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(20): a = [x @ w for _ in range(8)]; del a\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root
    faults = int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.split()[-1])
    env["GPUGRAD_MALLOC_TUNE"] = "0"
    default = int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()[-1])
    assert faults < 50 and default > 10 * max(faults, 1), (faults, default)


@pytest.mark.parametrize("act", ["softplus", "silu", "gelu", "elu"])
def test_activation_derivatives_in_chunks_match_whole_arrays(act, monkeypatch):
    """The CPU backend runs the NumPy code of activation derivatives in chunks (``act_chunk``) over large
    arrays: every order gives exactly the whole-array values, the last (shorter) chunk included."""
    from gpugrad.backends import base

    be = get_backend("cpu")
    assert be.act_chunk > 0
    calls = []
    real = base._in_chunks
    monkeypatch.setattr(base, "_in_chunks", lambda n, *a: calls.append(n) or real(n, *a))
    monkeypatch.setattr(be, "act_chunk", 1000)  # 2.6 chunks of 1000 in an array of 2,627 elements
    z = (rng.standard_normal((71, 37)) * 4).astype(np.float32)
    dy = rng.standard_normal((71, 37)).astype(np.float32)
    for order in (1, 2, 3):
        got = be.act_derivative(dy, z, act, None, order)
        monkeypatch.setattr(be, "act_chunk", 0)
        want = be.act_derivative(dy, z, act, None, order)
        monkeypatch.setattr(be, "act_chunk", 1000)
        assert got.dtype == np.float32 and got.shape == z.shape
        np.testing.assert_array_equal(got, want)
    assert calls == [1000, 1000, 1000]
