"""The strict CuPy stand-in (tests/support/strict_cupy.py) and what it lets CI check without a GPU:
CuPy's rules themselves, the GPU first-contact defects of issue 9 (each test here failed before its fix),
TF32 reaching cuBLAS after the backend started, per-step launch/GEMM/transfer counts, checkpointing, the
host logic of graphed steps and ``gpugrad train --device cuda``. tests/test_cuda.py runs the whole op
suite, the optimizers, memory figures and the digits MLP on the stand-in too."""
from __future__ import annotations

import gc
import os
import subprocess
import sys

import numpy as np
import pytest

import gpugrad as gg
from tests.support import strict_cuda
from tests.support import strict_cupy as S

F = gg.nn.functional
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cp():
    with S.installed() as mod:
        yield mod


@pytest.fixture
def sc():
    with strict_cuda() as mod:
        yield mod


# ====================================================================== the stand-in's rules
def test_no_implicit_conversion_and_no_mixing_with_numpy(cp):
    x = cp.asarray(np.arange(6.0).reshape(2, 3))
    h = np.ones(3)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)
    for bad in (lambda: x + h, lambda: h + x, lambda: x * h, lambda: np.add(x, h), lambda: np.shares_memory(x, h),
                lambda: np.where(x > 0, x, h), lambda: cp.maximum(x, h), lambda: cp.concatenate([x, h[None]])):
        with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
            bad()
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        x[0] = h
    assert isinstance(np.exp(x), cp.ndarray) and isinstance(x + np.float32(2), cp.ndarray)  # dispatched
    with pytest.raises(AttributeError, match="'bool' object has no attribute 'astype'"):
        cp.where(True, x, 0)  # CuPy calls condition.astype('?')


def test_scalars_are_zero_d_arrays_and_reads_are_counted(cp):
    x = cp.asarray(np.arange(6.0).reshape(2, 3))
    S.reset_counters()
    for r in (x.sum(), x[1, 2], cp.max(x), x.mean(axis=None), np.sum(x), x.sum() + 1):
        assert isinstance(r, cp.ndarray) and r.ndim == 0
    assert S.snapshot()["device_to_host"] == 0
    assert float(x[1, 2]) == 5.0 and x.sum().item() == 15.0 and bool(x[0, 1]) and int(x[1, 0]) == 3
    np.testing.assert_array_equal(cp.asnumpy(x), x.get())
    assert S.snapshot()["device_to_host"] == 6
    v = x[0, 1]  # a 0-d view, as CuPy gives
    v[...] = 7
    assert x.get()[0, 1] == 7


def test_pool_counts_live_arrays_and_allocator_hooks(cp):
    pool = cp.get_default_memory_pool()
    seen = []

    def alloc(n):
        seen.append(n)
        return pool.malloc(n)
    cp.cuda.set_allocator(alloc)
    try:
        base = pool.used_bytes()
        a = cp.zeros((1000,), cp.float32)
        b = a.reshape(10, 100)  # a view: no allocation
        assert seen == [4000] and pool.used_bytes() - base == 4096  # 512-byte rounding
        del a
        gc.collect()
        assert pool.used_bytes() - base == 4096  # the view keeps it alive
        del b
        gc.collect()
        assert pool.used_bytes() == base and pool.total_bytes() >= 4096
        pool.set_limit(size=1 << 20)
        with pytest.raises(MemoryError, match="Out of memory"):
            cp.empty((1 << 20,), cp.float32)
    finally:
        pool.set_limit(size=0)
        cp.cuda.set_allocator(None)


def test_raw_module_checks_launches_against_the_cuda_source(cp):
    src = r'''
typedef long long i64;
#define ENTRY(SUF, T) \
extern "C" __global__ void scale_##SUF(T* x, i64 n, T a) { }
ENTRY(f32, float)
ENTRY(f64, double)
'''
    mod = cp.RawModule(code=src)
    f = mod.get_function("scale_f32")
    with pytest.raises(Exception, match="named symbol not found"):
        mod.get_function("scale_f16")
    x = cp.ones((4,), cp.float32)
    S.register_kernel("scale_f32", lambda a, grid, block: a["x"].__imul__(a["a"]))
    S.reset_counters()
    f((1,), (32,), (x, np.int64(4), np.float32(3)))
    np.testing.assert_array_equal(x.get(), [3, 3, 3, 3])
    assert S.snapshot()["kernel_launches"] == 1 and S.snapshot()["kernels"] == {"scale_f32": 1}
    bad = [((x, np.int64(4)), "takes 3 arguments"),
           ((x, 4, np.float32(3)), "pass numpy.int64"),                         # Python int: 64-bit on CuPy
           ((x, np.int64(4), np.float64(3)), "pass numpy.float32"),
           ((cp.ones(4, cp.float64), np.int64(4), np.float32(3)), "the kernel reads float32"),
           ((np.ones(4, np.float32), np.int64(4), np.float32(3)), "NumPy array"),
           ((cp.ones((4, 2), cp.float32)[:, 0], np.int64(4), np.float32(3)), "not C-contiguous")]
    for args, msg in bad:
        with pytest.raises((TypeError, ValueError), match=msg):
            f((1,), (32,), args)
    with pytest.raises(Exception, match="too many threads"):
        f((1,), (2048,), (x, np.int64(4), np.float32(3)))


def test_gemm_counted_tf32_emulated_and_refused_during_capture(cp):
    rng = np.random.default_rng(0)
    a, b = (cp.asarray(rng.standard_normal((64, 64)).astype(np.float32)) for _ in range(2))
    S.reset_counters()
    exact = (a @ b).get()
    L = cp._core._routines_linalg
    L.set_compute_type(np.float32, L.COMPUTE_TYPE_TF32)
    fast = cp.matmul(a, b).get()
    L.set_compute_type(np.float32, L.COMPUTE_TYPE_DEFAULT)
    assert S.snapshot()["gemm_calls"] == 2
    assert 1e-6 < np.abs(fast - exact).max() / np.abs(exact).max() < 1e-2
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        with pytest.raises(RuntimeError, match="cuBLAS API during stream capture"):
            a @ b
        with pytest.raises(RuntimeError, match="StreamCapture"):
            float(a[0, 0])
        s.end_capture()


def test_stand_in_is_standalone():
    """Loadable by file path with NumPy only: it never imports gpugrad (the host engineer loads it
    against older checkouts)."""
    code = ("import importlib.util, sys; p = sys.argv[1]; "
            "spec = importlib.util.spec_from_file_location('strict_cupy', p); m = importlib.util.module_from_spec(spec); "
            "spec.loader.exec_module(m); bad = [k for k in sys.modules if k.startswith('gpugrad')]; assert not bad, bad; "
            "import numpy as np\n"
            "with m.installed():\n"
            "    import cupy; x = cupy.asarray(np.ones(3)); assert float(x.sum()) == 3.0")
    path = os.path.join(ROOT, "tests", "support", "strict_cupy.py")
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ====================================================================== defects of issue 9, on the stand-in
def test_tensor_from_numpy_on_cuda(sc):
    """Defect 1: ``gg.tensor(numpy, device="cuda")`` raised ``TypeError: Unsupported type <class
    'numpy.ndarray'>`` (creation.py asked np.shares_memory about a CuPy array)."""
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = gg.tensor(a, device="cuda", requires_grad=True)
    assert t.device == gg.device("cuda:0") and isinstance(t.data, sc.cupy.ndarray)
    a[0, 0] = 100  # a copy, not a view of the host array
    np.testing.assert_array_equal(t.numpy(), np.arange(12, dtype=np.float32).reshape(3, 4))
    u = gg.tensor(t)  # from a cuda tensor: a copy on the device
    assert u.data is not t.data and u.device == t.device


@pytest.mark.parametrize("kernels", ["cuda_c", "xp"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_rpow_backward_on_cuda(kernels, dtype):
    """Defect 3a: ``2.0 ** t`` backward called ``cupy.where`` on a Python bool (``'bool' object has no
    attribute 'astype'``)."""
    x = np.linspace(-1, 1, 6)
    with strict_cuda(kernels=kernels):
        t = gg.tensor(x, dtype=dtype, device="cuda", requires_grad=True)
        (2.0 ** t).sum().backward()
        g = t.grad.numpy()
    tol = 1e-2 if dtype == np.float16 else 1e-6
    np.testing.assert_allclose(g, np.log(2.0) * 2.0 ** x, rtol=tol)


def test_tf32_switch_after_the_backend_started_reaches_cublas(sc, monkeypatch):
    """Defect 3b: the switch must act on GEMMs of a running backend, both ways, float32 only."""
    from gpugrad.backends import cuda as bc
    monkeypatch.setattr(bc, "_tf32", [False])
    L = sc.cupy._core._routines_linalg
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((128, 128)).astype(np.float32), rng.standard_normal((128, 128)).astype(np.float32)
    x, w = gg.tensor(a, device="cuda"), gg.tensor(b, device="cuda")  # the backend starts here
    exact = (x @ w).numpy()
    lin_exact = F.linear(x, w).numpy()
    gg.cuda.set_tf32(True)
    assert L.get_compute_type(np.float32) == L.COMPUTE_TYPE_TF32
    fast = (x @ w).numpy()
    lin_fast = F.linear(x, w).numpy()
    assert np.abs(fast - exact).max() > 1e-6 * np.abs(exact).max()
    assert np.abs(lin_fast - lin_exact).max() > 1e-6 * np.abs(exact).max()
    d = gg.tensor(a.astype(np.float64), device="cuda")
    np.testing.assert_array_equal((d @ d).numpy(), a.astype(np.float64) @ a.astype(np.float64))  # never TF32
    gg.cuda.set_tf32(False)
    assert L.get_compute_type(np.float32) == L.COMPUTE_TYPE_DEFAULT
    np.testing.assert_array_equal((x @ w).numpy(), exact)


# ====================================================================== per-step counts (the next issue's baseline)
def test_training_step_counts(sc):
    """One MLP training step (3 linear layers, cross-entropy, Adam) on device "cuda": 3 forward GEMMs and
    5 backward GEMMs (no input gradient for the first layer), one fused kernel per bias+activation,
    per backward layer, for the loss, one gather of the six fresh gradients into the flat buffer and one
multi-tensor Adam launch for all six parameters. No read
    of the device inside the step (cross_entropy's target check reports lazily, at the next sync)."""
    gg.manual_seed(0)
    model = gg.nn.MLP([64, 128, 128, 10], activation="relu").to("cuda")
    opt = gg.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = gg.tensor(rng.standard_normal((32, 64)).astype(np.float32), device="cuda")
    t = gg.tensor(rng.integers(0, 10, 32), device="cuda")
    counts = []
    for _ in range(3):
        sc.reset_counters()
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()
        counts.append(sc.snapshot())
    c = counts[-1]
    assert counts[1] == counts[2]  # steady state
    assert c["gemm_calls"] == 8
    assert c["kernels"] == {"bias_act_f32": 3, "softmax_xent_fwd_f32": 1, "softmax_xent_bwd_f32": 1,
                            "act_bias_grad_f32": 3, "colsum_f32": 3, "gather_f32": 1, "adam_110_f32": 1}
    assert c["host_to_device"] == 0
    assert c["device_to_host"] == 0


def test_fused_layer_backward_allocates_each_buffer_once(sc, monkeypatch):
    """The backward pass of a fused Linear+ReLU layer allocates dz, db and one column-sum scratch (the
    CUDA C path once allocated the scratch twice), and gives the reference values."""
    from gpugrad.kernels import act_bias_grad as kabg
    be = gg.backends.get_backend("cuda")
    cp = be.xp
    rng = np.random.default_rng(0)
    dy_h = rng.standard_normal((40, 24)).astype(np.float32)
    y_h = np.maximum(rng.standard_normal((40, 24)).astype(np.float32), 0)
    dy, y = cp.asarray(dy_h), cp.asarray(y_h)
    be.act_bias_backward(dy, y, "relu", True)  # kernel handles and launch plans built
    shapes = []
    real = cp.empty

    def empty(shape, *a, **k):
        shapes.append(tuple(shape) if isinstance(shape, tuple) else (shape,))
        return real(shape, *a, **k)
    monkeypatch.setattr(cp, "empty", empty)
    dz, db = be.act_bias_backward(dy, y, "relu", True)
    assert len(shapes) == 3 and (40, 24) in shapes and (24,) in shapes, shapes
    dz_ref, db_ref = kabg.act_bias_grad_ref(dy_h, y_h, "relu", True)
    np.testing.assert_allclose(cp.asnumpy(dz), dz_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cp.asnumpy(db), db_ref, rtol=1e-5, atol=1e-5)


# ====================================================================== checkpointing, graphed steps, the CLI
def test_checkpointed_mlp_gradients_equal_plain_on_cuda(sc):
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((16, 8)).astype(np.float32)
    grads = {}
    for mode in ("plain", "sqrt"):
        gg.manual_seed(0)
        layers = [gg.nn.Linear(8, 8, activation="tanh") for _ in range(6)]
        seq = gg.nn.Sequential(*layers).to("cuda")
        x = gg.tensor(xs, device="cuda", requires_grad=True)
        y = seq(x) if mode == "plain" else gg.checkpoint.checkpoint_sequential(seq, "sqrt", x)
        (y * y).sum().backward()
        grads[mode] = [x.grad.numpy()] + [p.grad.numpy() for p in seq.parameters()]
    for a, b in zip(grads["sqrt"], grads["plain"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_graphed_step_host_logic_on_cuda_arrays(sc):
    """The graphed-step machinery (static buffers, warm-up/capture/replay order) over CuPy arrays, with
    the emulated runtime (the stand-in does not replay graphs): equal to eager training."""
    from gpugrad import cuda_graphs as graphs
    from gpugrad.training import training_step
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((16, 6)).astype(np.float32), rng.standard_normal((16, 2)).astype(np.float32))
            for _ in range(5)]

    def setup():
        gg.manual_seed(0)
        model = gg.nn.MLP([6, 32, 2]).to("cuda")
        opt = gg.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, opt, training_step(model, opt, F.mse_loss)
    m1, _, s1 = setup()
    eager = [s1(gg.tensor(x, device="cuda"), gg.tensor(y, device="cuda")).item() for x, y in data]
    m2, opt, s2 = setup()
    g = graphs.GraphedStep(s2, optimizers=[opt], _runtime="emulate", warmup=2)
    got = [g(gg.tensor(x, device="cuda"), gg.tensor(y, device="cuda")).item() for x, y in data]
    assert g.captured
    np.testing.assert_allclose(got, eager, rtol=1e-6)
    for p, q in zip(m2.parameters(), m1.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-6, atol=1e-7)


def test_cli_train_on_cuda(sc, tmp_path, capsys):
    from gpugrad import cli
    run = tmp_path / "run"
    rc = cli.main(["train", "--device", "cuda", "--dataset", "synthetic", "--n-samples", "240", "--n-features", "6",
                   "--n-outputs", "3", "--width", "16", "--depth", "2", "--batch-size", "32", "--epochs", "2",
                   "--quiet", "--no-plots", "--run-dir", str(run)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "final: epoch 2/2" in out
    assert (run / cli.CHECKPOINT_FILE).exists()
    state = gg.load(str(run / cli.CHECKPOINT_FILE))
    assert state["progress"]["epoch"] == 2


# ====================================================================== Numba kernels unusable: detected, said, not silent
@pytest.fixture
def numba_broken(monkeypatch):
    """numba-cuda 0.30.4 under NumPy 2.5: importing its CUDA target's array support fails."""
    import importlib
    from gpugrad.backends.cuda import launcher
    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "numba.cuda.np.arrayobj":
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return real(name, *a, **k)
    monkeypatch.setattr(importlib, "import_module", fake)
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    rt = launcher.runtime()
    monkeypatch.setattr(rt, "numba", None)
    monkeypatch.setattr(rt, "numba_warned", False)
    yield launcher


def test_numba_import_failure_is_detected_and_named(numba_broken):
    ok, why = numba_broken.numba_status(refresh=True)
    assert not ok and "row_stack" in why and "numba.cuda.np.arrayobj" in why and "NumPy" in why
    assert gg.cuda.numba_kernels_status() == (ok, why)  # probed once, cached


def test_unusable_numba_runs_cuda_c_with_one_warning_or_raises_when_strict(numba_broken):
    x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    with strict_cuda(kernels="numba", strict_kernels=False) as sc:
        xt, wt = gg.tensor(x, device="cuda"), gg.tensor(w, device="cuda")
        with pytest.warns(RuntimeWarning, match="Numba CUDA kernels: unusable: .*row_stack.*; using CUDA C kernels"):
            y = F.fused_linear(xt, wt, None, activation="relu")
        assert sc.snapshot()["kernels"].get("bias_act_f32") == 1  # the CUDA C kernel ran
        np.testing.assert_allclose(y.numpy(), np.maximum(x @ w.T, 0), rtol=1e-5, atol=1e-6)
    with strict_cuda(kernels="numba", strict_kernels=True):
        xt, wt = gg.tensor(x, device="cuda"), gg.tensor(w, device="cuda")
        with pytest.raises(RuntimeError, match="unusable.*GPUGRAD_STRICT_KERNELS=1 forbids it"):
            F.fused_linear(xt, wt, None, activation="relu")


def test_info_says_plainly_that_numba_kernels_are_unusable(numba_broken):
    from gpugrad.cli import info
    text = info.info_text()
    line = next(ln for ln in text.splitlines() if "Numba CUDA kernels" in ln)
    assert "unusable: " in line and "row_stack" in line and "using CUDA C kernels" in line


def test_default_kernel_set_is_cuda_c():
    env = {k: v for k, v in os.environ.items() if k != "GPUGRAD_CUDA_KERNELS"}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run([sys.executable, "-c", "import gpugrad as gg; print(gg.cuda.get_kernels())"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cuda_c"
