"""Layer normalisation, defined once in gpugrad/kernels/layernorm.py: every implementation generated from
the definition (array code, Numba CPU passes, Numba CUDA kernels, CUDA C) agrees with it in float64, the
CUDA glue runs the CUDA C kernels under the strict CuPy stand-in, a change to the definition changes
every implementation, and the generated CUDA C compiles for sm_90 (when nvcc is on PATH). PyTorch's
values are checked by tests/test_op_cases.py (layer_norm cases)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.kernels import _numba, layernorm as L

F = gg.nn.functional
SHAPES = [(1, 1), (3, 7), (5, 33), (2, 300)]


def _data(m: int, n: int, dtype=np.float64, seed: int = 0):
    rng = np.random.default_rng(seed + 31 * m + n)
    x = (rng.standard_normal((m, n)) * 3 + 1).astype(dtype)
    return x, rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype), \
        rng.standard_normal((m, n)).astype(dtype)


def _reference(x, w, b, dy, eps=1e-5):
    """The textbook formulas in float64, written out here (not from the definition)."""
    x, w, b, dy = (np.asarray(a, np.float64) for a in (x, w, b, dy))
    mean = x.mean(1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    g = dy * w
    dx = rstd * (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True))
    return xhat * w + b, mean[:, 0], rstd[:, 0], dx, (dy * xhat).sum(0), dy.sum(0)


@pytest.mark.parametrize("shape", SHAPES)
def test_array_code_is_the_textbook_formula(shape):
    x, w, b, dy = _data(*shape)
    y, mean, rstd, dx, dw, db = _reference(x, w, b, dy)
    got = L.xp_forward(np, x, w, b, 1e-5)
    for a, e in zip(got, (y, mean, rstd)):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
    for a, e in zip(L.xp_backward(np, dy, x, w, got[1], got[2]), (dx, dw, db)):
        np.testing.assert_allclose(a, e, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_numba_passes_match_the_definition(shape, dtype, tol):
    x, w, b, dy = _data(*shape, dtype=dtype)
    fwd, bdx, bparams = L.cpu_kernels(dtype)
    m, n = shape
    y, mean, rstd = np.empty_like(x), np.empty(m, dtype), np.empty(m, dtype)
    fwd(x, w, b, 1e-5, y, mean, rstd)
    ry, rmean, rrstd = L.xp_forward(np, x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1e-5)
    for a, e in ((y, ry), (mean, rmean), (rstd, rrstd)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * 10)
    dx, dw, db = np.empty_like(x), np.empty(n, dtype), np.empty(n, dtype)
    bdx(x, w, dy, mean, rstd, dx)
    bparams(x, dy, mean, rstd, dw, db)
    rdx, rdw, rdb = L.xp_backward(np, dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64),
                                  rmean, rrstd)
    for a, e in ((dx, rdx), (dw, rdw), (db, rdb)):
        np.testing.assert_allclose(a, e, rtol=tol * 10, atol=tol * 10)


def test_the_op_uses_the_numba_passes_on_cpu(monkeypatch):
    calls = []
    real = L.cpu_kernels

    def spy(dtype):
        calls.append(np.dtype(dtype))
        return real(dtype)
    monkeypatch.setattr(L, "cpu_kernels", spy)
    x = gg.randn(4, 5, requires_grad=True)
    ln = gg.nn.LayerNorm(5)
    ln(x).sum().backward()
    assert calls == [np.dtype(np.float32)] * 2 and x.grad is not None and ln.weight.grad is not None


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_cuda_glue_under_the_strict_stand_in(on_cuda, dtype):
    """CUDABackend.layer_norm_forward/backward launch the generated CUDA C (float32/float64; float16 runs the
    array code in float32) and agree with the CPU."""
    x, w, b, dy = _data(6, 10, dtype=np.float64)
    dt = getattr(gg, dtype)
    outs = {}
    for dev in ("cpu", "cuda"):
        xt, wt, bt = (gg.tensor(a, dtype=dt, device=dev, requires_grad=True) for a in (x, w, b))
        y = F.layer_norm(xt, (10,), wt, bt)
        y.backward(gg.tensor(dy, dtype=dt, device=dev))
        outs[dev] = [t.numpy().astype(np.float64) for t in (y, xt.grad, wt.grad, bt.grad)]
    tol = {"float64": 1e-12, "float32": 1e-4, "float16": 2e-2}[dtype]
    for a, e in zip(outs["cuda"], outs["cpu"]):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
    if on_cuda is not None:
        launched = on_cuda.counters.kernels
        names = [k for k in launched if k.startswith("layer_norm")]
        if dtype == "float16":
            assert not names
        else:
            suf = "f32" if dtype == "float32" else "f64"
            assert sorted(names) == sorted(f"layer_norm_{k}_{suf}" for k in ("fwd", "bwd_dx", "bwd_params"))
            # compiled into the backend's per-device runtime state (reset with it), not a module-level cache
            from gpugrad.backends.cuda.state import runtime
            state = runtime().device(0)
            assert "layernorm" in state.modules
            assert {("layernorm", f"layer_norm_{k}", suf) for k in ("fwd", "bwd_dx", "bwd_params")} <= \
                state.functions.keys()


def test_a_change_to_the_definition_reaches_every_implementation(monkeypatch):
    """Generated, not copied: shift the output formula by 1 and every implementation shifts with it."""
    monkeypatch.setattr(L, "FORWARD", L.FORWARD[:-1] + (L.Step("y", "elem", L.xhat * L.w + L.b + 1.0),))
    monkeypatch.setattr(_numba, "_cache", {})
    x, w, b, _ = _data(3, 4)
    base = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(L.xp_forward(np, x, w, b, 1e-5)[0], base + 1, rtol=1e-12)
    y, mean, rstd = np.empty_like(x), np.empty(3), np.empty(3)
    L.cpu_kernels(np.float64)[0](x, w, b, 1e-5, y, mean, rstd)
    np.testing.assert_allclose(y, base + 1, rtol=1e-12)
    assert "+ C(1.0))" in L.cuda_source() and "+ F(1.0))" in L.python_source()


def test_generated_sources_are_complete():
    src = L.cuda_source()
    for kind in ("fwd", "bwd_dx", "bwd_params"):
        for suffix in ("f32", "f64"):
            assert f'extern "C" __global__ void layer_norm_{kind}_{suffix}(' in src
    assert "gg_sqrt" in src  # the expression language's functions (expr.c_prelude)
    py = L.python_source()
    assert py.count("def ") == 4 and "sum(" not in py


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_generated_cuda_c_compiles_for_sm90(tmp_path):
    src = tmp_path / "layernorm.cu"
    src.write_text(L.cuda_source())
    keep = tmp_path / "k"
    keep.mkdir()
    proc = subprocess.run(["nvcc", "-arch=sm_90", "-c", str(src), "-o", str(keep / "x.o"), "--keep", "--keep-dir",
                           str(keep), "-Xptxas", "-warn-spills"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "spill" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    ptx = "".join(f.read_text() for f in keep.glob("*.ptx"))
    for chunk in re.split(r"\.(?=entry\s)", ptx)[1:]:
        name = chunk[len("entry"):].split("(")[0].strip()
        if name.endswith("_f32"):
            assert not re.search(r"\w\.f64\b", chunk), f"float64 arithmetic in {name}"
    assert os.path.getsize(keep / "x.o") > 0


def test_layer_norm_errors():
    with pytest.raises(RuntimeError, match=r"layer_norm: normalized_shape \(4,\) must .* shape \(2, 3\)"):
        F.layer_norm(gg.ones(2, 3), (4,))
    with pytest.raises(ValueError, match=r"weight of shape \(2,\)"):
        F.layer_norm(gg.ones(2, 3), 3, gg.ones(2))
