"""The CUDA backend: clear errors without a usable GPU (always run), and on a real GPU (``@pytest.mark.gpu``,
skipped without one) the whole op suite against CPU float64, the fused kernels of both kernel sets
against their NumPy references, TF32/float16, the RNG stream, memory figures, out-of-memory, DLPack,
streams, optimizers and the digits MLP."""
from __future__ import annotations

import importlib.abc
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.backends import DeviceUnavailableError, _instances
from gpugrad.kernels.activations import ACTIVATIONS
from gpugrad.backends import cuda as bc
from gpugrad.install_hints import INSTALL_HINTS
from gpugrad.backends.cuda import launcher as _kernels
from gpugrad.backends.cuda import memory as gmem
from tests.support import strict_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_GPU = gg.cuda.is_available()
needs_gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU (CuPy + driver + device)")]
F = gg.nn.functional


def gpu(fn):
    for m in needs_gpu:
        fn = m(fn)
    return fn


def rel_err(out, ref) -> float:
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    if out.shape != ref.shape or not np.array_equal(np.isfinite(out), np.isfinite(ref)):
        return float("inf")
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))


# ====================================================================== without a usable GPU
@pytest.fixture
def no_cuda_backend(monkeypatch):
    """Forget any probe result and any live cuda backend for the test (restored after)."""
    saved = {d: b for d, b in _instances.items() if d.type == "cuda"}
    for d in saved:
        monkeypatch.delitem(_instances, d)
    old = bc.runtime().probe
    bc.runtime().probe = None
    yield
    bc.runtime().probe = old


def _fake_cupy(count=None, error=None, driver=0):
    """A stand-in ``cupy`` module whose runtime reports ``count`` devices or raises ``error``."""
    rt = types.SimpleNamespace(runtimeGetVersion=lambda: 12040, driverGetVersion=lambda: driver)

    def get_count():
        if error is not None:
            raise error
        return count
    rt.getDeviceCount = get_count
    mod = types.ModuleType("cupy")
    mod.__version__ = "13.9.9"
    mod.cuda = types.SimpleNamespace(runtime=rt)
    return mod


class _CudaError(RuntimeError):
    def __init__(self, status, text):
        super().__init__(text)
        self.status = status


def _assert_clear(excinfo, *needles):
    msg = str(excinfo.value)
    for n in (INSTALL_HINTS["cupy"], "nvidia-smi") + needles:  # the one install hint (gpugrad/install_hints.py)
        assert n in msg, f"{n!r} missing from: {msg}"


def test_no_cupy_means_not_available_and_one_clear_error(monkeypatch, no_cuda_backend):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    assert gg.cuda.is_available() is False
    assert gg.cuda.device_count() == 0
    with pytest.raises(DeviceUnavailableError) as e:
        gg.tensor([1.0, 2.0], device="cuda")
    _assert_clear(e, "CuPy is not installed", "cuda:0")
    with pytest.raises(DeviceUnavailableError) as e:
        gg.ones(3).to("cuda")
    _assert_clear(e, "CuPy is not installed")
    with pytest.raises(DeviceUnavailableError):
        gg.zeros(2, 2, device="cuda:1")
    for call in (gg.cuda.synchronize, gg.cuda.memory_allocated, gg.cuda.max_memory_allocated,
                 gg.cuda.current_stream, gg.cuda.empty_cache):
        with pytest.raises(DeviceUnavailableError):
            call()


def test_module_to_cuda_without_gpu_is_the_same_error(monkeypatch, no_cuda_backend):
    monkeypatch.setitem(sys.modules, "cupy", None)
    model = gg.nn.Linear(3, 2)
    with pytest.raises(DeviceUnavailableError) as e:
        model.to("cuda")
    _assert_clear(e, "CuPy is not installed")


def test_cupy_that_fails_to_import_is_reported(monkeypatch, no_cuda_backend):
    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "cupy":
                raise OSError("libcudart.so.12: cannot open shared object file")
            return None
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken()] + sys.meta_path)
    ok, reason, n = bc.probe(refresh=True)
    assert not ok and n == 0 and "failed to import" in reason and "libcudart" in reason


@pytest.mark.parametrize("kw,needle", [
    (dict(error=_CudaError(35, "cudaErrorInsufficientDriver: CUDA driver version is insufficient")),
     "no NVIDIA driver was found"),
    (dict(error=_CudaError(35, "cudaErrorInsufficientDriver: old"), driver=11080),
     "the NVIDIA driver supports CUDA 11.8 only"),
    (dict(error=_CudaError(100, "cudaErrorNoDevice: no CUDA-capable device is detected")),
     "no CUDA device is visible"),
    (dict(count=0), "reports 0 CUDA devices"),
    (dict(error=_CudaError(999, "cudaErrorUnknown")), "the CUDA runtime failed"),
])
def test_what_was_found_is_named(monkeypatch, no_cuda_backend, kw, needle):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(**kw))
    assert gg.cuda.is_available() is False and gg.cuda.device_count() == 0
    with pytest.raises(DeviceUnavailableError) as e:
        gg.randn(2, device="cuda")
    _assert_clear(e, needle, "CuPy 13.9.9")


def test_device_index_beyond_the_count(monkeypatch, no_cuda_backend):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count=1))
    assert gg.cuda.is_available() and gg.cuda.device_count() == 1
    with pytest.raises(DeviceUnavailableError, match=r"cuda:3.*1 CUDA device\(s\) found.*cuda:0 to cuda:0"):
        gg.tensor([1.0], device="cuda:3")


@pytest.mark.skipif(HAS_GPU, reason="this machine has a usable GPU")
def test_real_cupy_without_a_driver_or_device(no_cuda_backend):
    pytest.importorskip("cupy")
    assert gg.cuda.is_available() is False
    with pytest.raises(DeviceUnavailableError) as e:
        gg.tensor(np.ones(3), device="cuda")
    _assert_clear(e)
    assert "CuPy" in str(e.value) and ("driver" in str(e.value) or "device" in str(e.value))


def test_tf32_switch_and_context(monkeypatch):
    monkeypatch.setattr(bc, "_tf32", [False])
    assert gg.cuda.get_tf32() is False
    with gg.cuda.allow_tf32():
        assert gg.cuda.get_tf32() is True
        with gg.cuda.allow_tf32(False):
            assert gg.cuda.get_tf32() is False
        assert gg.cuda.get_tf32() is True
    assert gg.cuda.get_tf32() is False
    gg.cuda.set_tf32(True)
    assert gg.cuda.get_tf32() is True
    gg.cuda.set_tf32(False)


def test_kernel_set_choice(monkeypatch):
    monkeypatch.setitem(_kernels._state, "impl", "numba")
    assert gg.cuda.get_kernels() == "numba"
    gg.cuda.set_kernels("cuda_c")
    assert gg.cuda.get_kernels() == "cuda_c"
    gg.cuda.set_kernels("XP")
    assert gg.cuda.get_kernels() == "xp"
    with pytest.raises(ValueError, match="expected one of"):
        gg.cuda.set_kernels("triton")


def test_kernel_modules_import_without_cupy_or_numba_cuda():
    # (that gpugrad.kernels imports nothing else of gpugrad is tests/test_layering.py's check)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import gpugrad.kernels.bias_act, gpugrad.kernels.act_bias_grad, gpugrad.kernels.softmax_xent, "
            "gpugrad.kernels.optim_step, gpugrad.kernels.cuda_c, gpugrad.kernels.activations; "
            "bad = [m for m in ('cupy', 'numba.cuda') if m in sys.modules]; "
            "assert not bad, bad")
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- memory accounting and OOM, with a stand-in pool
class _FakeOOM(Exception):
    pass


_FakeOOM.__name__ = "OutOfMemoryError"


class _FakePool:
    def __init__(self, capacity):
        self.capacity, self.used, self.total = capacity, 0, 0
        self.freed_cache = 0

    def malloc(self, size):
        if self.used + size > self.capacity:
            raise _FakeOOM(f"Out of memory allocating {size} bytes")
        self.used += size
        self.total = max(self.total, self.used)
        return types.SimpleNamespace(device_id=0, size=size)

    def used_bytes(self):
        return self.used

    def total_bytes(self):
        return self.total

    def free_all_blocks(self):
        self.freed_cache += 1


def test_counting_allocator_tracks_the_true_peak():
    pool = _FakePool(1000)
    alloc = gmem.CountingAllocator(pool)
    alloc.malloc(300)
    alloc.malloc(400)
    pool.used -= 400  # a free
    alloc.malloc(100)
    assert alloc.peak[0] == 700 and pool.used == 400


def test_out_of_memory_names_the_size_and_the_fix(monkeypatch):
    pool = _FakePool(1000)
    alloc = gmem.CountingAllocator(pool)
    monkeypatch.setattr(alloc, "_describe", lambda size: gmem.oom_message(size, pool.used, pool.total, 10, 2**34, 0))
    alloc.malloc(900)
    with pytest.raises(gg.cuda.OutOfMemoryError) as e:
        alloc.malloc(3 * 2**30)
    msg = str(e.value)
    assert pool.freed_cache == 1  # cached blocks were given back before giving up
    for needle in ("out of memory allocating a tensor of 3.00 GiB", "(3221225472 bytes)", "cuda:0",
                   "smaller batch", "gg.checkpoint.checkpoint", "900 B held by live tensors"):
        assert needle in msg, msg
    assert isinstance(e.value, MemoryError)


# ====================================================================== the op suite (cpu here; cuda on a GPU)
def _pos(a):
    return np.abs(a) + 0.5


# name, function of Tensors, input shapes, input transform, also in float16
OPS = [
    ("add_broadcast", lambda a, b: a + b, [(4, 5), (5,)], None, True),
    ("sub", lambda a, b: a - b, [(4, 5), (4, 5)], None, True),
    ("mul", lambda a, b: a * b, [(4, 5), (4, 1)], None, True),
    ("div", lambda a, b: a / b, [(4, 5), (4, 5)], [None, _pos], False),
    ("pow", lambda a: a ** 1.7, [(3, 4)], [_pos], False),
    ("rpow", lambda a: 2.0 ** a, [(3, 4)], None, False),
    ("neg_abs", lambda a: (-a).abs(), [(3, 4)], None, True),
    ("exp", lambda a: a.exp(), [(3, 4)], None, True),
    ("log", lambda a: a.log(), [(3, 4)], [_pos], False),
    ("sqrt", lambda a: a.sqrt(), [(3, 4)], [_pos], False),
    ("sin_cos", lambda a: a.sin() * a.cos(), [(3, 4)], None, False),
    ("tanh", lambda a: a.tanh(), [(3, 4)], None, True),
    ("sigmoid", lambda a: a.sigmoid(), [(3, 4)], None, True),
    ("relu", lambda a: a.relu(), [(3, 4)], None, True),
    ("leaky_relu", lambda a: F.leaky_relu(a, 0.1), [(3, 4)], None, True),
    ("gelu", lambda a: F.gelu(a), [(3, 4)], None, True),
    ("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"), [(3, 4)], None, False),
    ("sum_dim", lambda a: a.sum(dim=1), [(3, 4, 2)], None, True),
    ("mean_keepdim", lambda a: a.mean(dim=0, keepdim=True), [(3, 4)], None, True),
    ("max_dim", lambda a: a.max(dim=1)[0] if isinstance(a.max(dim=1), tuple) else a.max(dim=1), [(3, 4)], None,
     False),
    ("amax", lambda a: gg.amax(a, dim=0), [(3, 4)], None, False),
    ("var", lambda a: a.var(dim=1), [(3, 5)], None, False),
    ("logsumexp", lambda a: gg.logsumexp(a, dim=1), [(3, 5)], None, False),
    ("softmax", lambda a: F.softmax(a, dim=1), [(3, 5)], None, True),
    ("log_softmax", lambda a: F.log_softmax(a, dim=1), [(3, 5)], None, False),
    ("matmul", lambda a, b: a @ b, [(3, 4), (4, 5)], None, True),
    ("matmul_batched", lambda a, b: a @ b, [(2, 3, 4), (4, 2)], None, False),
    ("linear", lambda x, w, b: F.linear(x, w, b), [(6, 4), (3, 4), (3,)], None, True),
    ("linear_3d", lambda x, w, b: F.linear(x, w, b), [(2, 3, 4), (5, 4), (5,)], None, False),
    ("reshape_T", lambda a: a.reshape(4, 3).T * 2, [(3, 4)], None, False),
    ("permute_flatten", lambda a: a.permute(2, 0, 1).flatten(), [(2, 3, 4)], None, False),
    ("getitem_slice", lambda a: a[1:, ::2], [(3, 4)], None, False),
    ("getitem_index", lambda a: a[gg.tensor([0, 2, 0], device=a.device)], [(3, 4)], None, False),
    ("cat_stack", lambda a, b: gg.cat([a, b], dim=0).sum(0) + gg.stack([a, b]).mean(0).sum(0),
     [(2, 3), (2, 3)], None, False),
    ("where_maximum_clamp", lambda a, b: gg.where(a > b, a, b * 2) + gg.maximum(a, b) + a.clamp(-0.5, 0.5),
     [(3, 4), (3, 4)], None, False),
    ("unsqueeze_expand", lambda a: a.unsqueeze(0).expand(2, 3, 4).sum(0), [(3, 4)], None, False),
    ("mse_loss", lambda a, b: F.mse_loss(a, b), [(4, 3), (4, 3)], None, True),
]
for _act in ("silu", "softplus", "elu", "selu", "mish", "hardswish", "hardsigmoid", "relu6", "hardtanh", "logsigmoid"):
    OPS.append((_act, (lambda act: lambda a: getattr(F, act)(a * 2.5))(_act), [(3, 4)], None, False))
for _act in ACTIVATIONS:
    OPS.append((f"fused_linear_{_act}", (lambda act: lambda x, w, b: F.fused_linear(x, w, b, activation=act))(_act),
                [(7, 5), (6, 5), (6,)], None, _act in ("relu", "tanh")))

LOSSES = [("mean", 0.0), ("sum", 0.0), ("none", 0.0), ("mean", 0.1)]


def _run_case(fn, arrays, dev, dtype):
    ts = [gg.tensor(a, dtype=dtype, device=dev, requires_grad=True) for a in arrays]
    out = fn(*ts)
    w = np.random.default_rng(7).standard_normal(out.shape)
    (out * gg.tensor(w, dtype=dtype, device=dev)).sum().backward()
    return out.numpy().astype(np.float64), [t.grad.numpy().astype(np.float64) for t in ts]


def _inputs(shapes, transforms, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    if transforms:
        arrays = [t(a) if t else a for a, t in zip(arrays, transforms)]
    return arrays


def _devices():
    """CPU, device "cuda" on the strict CuPy stand-in (CI), and a real GPU (marked ``gpu``)."""
    return ["cpu", "strict", pytest.param("cuda", marks=needs_gpu)]


def _on(dev: str):
    """``(context, device name)``: "strict" runs on device "cuda" with the stand-in installed."""
    return (strict_cuda(), "cuda") if dev == "strict" else (_nullcontext(), dev)


@pytest.mark.parametrize("dev", _devices())
@pytest.mark.parametrize("dtype,tf32,tol", [(np.float32, False, 1e-5), (np.float32, True, 1e-3),
                                            (np.float16, False, 1e-2), (np.float64, False, 1e-10)],
                         ids=["float32", "tf32", "float16", "float64"])
@pytest.mark.parametrize("case", OPS, ids=[c[0] for c in OPS])
def test_op_matches_cpu_float64(case, dtype, tf32, tol, dev, monkeypatch):
    name, fn, shapes, transforms, half_ok = case
    if dev == "cpu" and (dtype == np.float16 or tf32):
        pytest.skip("float16 and TF32 are GPU modes")
    if dtype == np.float16 and not half_ok:
        pytest.skip("float16 is checked for well-conditioned ops only")
    monkeypatch.setenv("GPUGRAD_STRICT_KERNELS", "1")
    arrays = _inputs(shapes, transforms, sum(map(ord, name)))
    ref_out, ref_grads = _run_case(fn, arrays, "cpu", np.float64)
    ctx, dev = _on(dev)
    with ctx, gg.cuda.allow_tf32(tf32) if dev == "cuda" else _nullcontext():
        out, grads = _run_case(fn, arrays, dev, dtype)
    assert rel_err(out, ref_out) < tol, name
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert rel_err(g, r) < tol, f"{name}: gradient of input {i}"


@pytest.mark.parametrize("dev", _devices())
@pytest.mark.parametrize("reduction,smoothing", LOSSES)
def test_cross_entropy_and_nll_match_cpu_float64(reduction, smoothing, dev, monkeypatch):
    monkeypatch.setenv("GPUGRAD_STRICT_KERNELS", "1")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((9, 6)) * 3
    t = rng.integers(0, 6, 9)
    t[3] = -100
    res = {}
    ctx, dev = _on(dev)
    with ctx:
        _ce_cases(x, t, dev, reduction, smoothing, res)
    (a, b) = res.values()
    for u, v in zip(b, a):
        assert rel_err(u, v) < 1e-5


def _ce_cases(x, t, dev, reduction, smoothing, res):
    for d, dt in (("cpu", np.float64), (dev, np.float32)):
        xt = gg.tensor(x, dtype=dt, device=d, requires_grad=True)
        tt = gg.tensor(t, device=d)
        loss = F.cross_entropy(xt, tt, reduction=reduction, label_smoothing=smoothing)
        nll = F.nll_loss(F.log_softmax(xt, dim=1), tt, reduction=reduction)
        ((loss * 1.0).sum() + nll.sum()).backward()
        res[(d, dt)] = (loss.numpy(), nll.numpy(), xt.grad.numpy())


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


# ====================================================================== on the strict stand-in and a real GPU
@pytest.fixture
def strict(monkeypatch):
    monkeypatch.setenv("GPUGRAD_STRICT_KERNELS", "1")



def test_tensor_round_trip_and_device_mixing(on_cuda):
    x = gg.tensor([[1.0, -2.0], [3.0, 4.0]], device="cuda", requires_grad=True)
    assert x.device == gg.device("cuda:0") and x.is_cuda and "device='cuda:0'" in repr(x)
    y = (x.relu() * 3).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[3, 0], [3, 3]])
    assert x.to("cpu").device == gg.device("cpu")
    with pytest.raises(RuntimeError, match=r"add.*cuda:0.*cpu|add.*cpu.*cuda:0"):
        _ = x + gg.ones(2, 2)


def test_tf32_switch_changes_float32_gemms(on_cuda):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((512, 512)).astype(np.float32) for _ in range(2))
    ref = a.astype(np.float64) @ b.astype(np.float64)
    gg.ones(1, device="cuda")  # the backend has started: the switch must still reach cuBLAS
    with gg.cuda.allow_tf32(False):
        exact = (gg.tensor(a, device="cuda") @ gg.tensor(b, device="cuda")).numpy()
    with gg.cuda.allow_tf32(True):
        fast = (gg.tensor(a, device="cuda") @ gg.tensor(b, device="cuda")).numpy()
    with gg.cuda.allow_tf32(False):
        again = (gg.tensor(a, device="cuda") @ gg.tensor(b, device="cuda")).numpy()
    np.testing.assert_array_equal(again, exact)
    assert rel_err(exact, ref) < 1e-5
    assert rel_err(fast, ref) < 1e-3
    assert rel_err(fast, ref) > 1e-6, "TF32 switch had no effect"


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_float16_fused_linear_against_float64(act, on_cuda):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((64, 32)), rng.standard_normal((48, 32)) / 6, rng.standard_normal(48)
    ref_out, ref_grads = _run_case(lambda *t: F.fused_linear(*t, activation=act), [x, w, b], "cpu", np.float64)
    out, grads = _run_case(lambda *t: F.fused_linear(*t, activation=act), [x, w, b], "cuda", np.float16)
    assert rel_err(out, ref_out) < 1e-2
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) < 1e-2


@pytest.mark.parametrize("impl", ["numba", "cuda_c"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_fused_kernels_against_numpy_references(impl, dtype, on_cuda, monkeypatch):
    """On the stand-in (cuda_c only): the launchers' argument packing against fused.cu's signatures and the
    stand-in's fused.cu references against the kernels' own NumPy references."""
    if on_cuda is not None and impl == "numba":
        pytest.skip("Numba kernels need a GPU (the simulator tests cover their logic)")
    import cupy as cp
    from gpugrad.kernels import act_bias_grad as kabg, bias_act as kba, softmax_xent as ksx
    monkeypatch.setitem(_kernels._state, "impl", impl)
    be = gg.tensor([0.0], device="cuda")._backend()
    tol = {np.float64: 1e-12, np.float32: 2e-6, np.float16: 2e-3}[dtype]
    rng = np.random.default_rng(5)
    for (M, N) in ((3, 5), (1000, 37), (257, 1024)):
        for act in ACTIVATIONS:  # 0.25: every first parameter, exact in float16 (hardtanh's bound)
            z = rng.standard_normal((M, N)).astype(dtype)
            b = rng.standard_normal(N).astype(dtype)
            y_ref, zb_ref = kba.bias_act_ref(z, b, act, 0.25)
            y, saved = be.bias_act(cp.asarray(z), cp.asarray(b), act, 0.25)
            assert rel_err(y.get(), y_ref) < tol, (act, M, N)
            dy = rng.standard_normal((M, N)).astype(dtype)
            s_host = None if saved is None else saved.get()
            dz, db = be.act_bias_backward(cp.asarray(dy), saved, act, True, 0.25)
            dz_ref, db_ref = kabg.act_bias_grad_ref(dy, dy if s_host is None else s_host, act, True, 0.25)
            assert rel_err(dz.get(), dz_ref) < tol and rel_err(db.get(), db_ref) < 10 * tol, (act, M, N)
            _, db2 = be.act_bias_backward(cp.asarray(dy), saved, act, True, 0.25)
            np.testing.assert_array_equal(db.get(), db2.get())  # deterministic
        x = (rng.standard_normal((M, N)) * 3).astype(dtype)
        t = rng.integers(0, N, M)
        loss, probs = be.softmax_cross_entropy(cp.asarray(x), cp.asarray(t), -100)
        l_ref, p_ref = ksx.softmax_xent_ref(x, t)
        assert rel_err(probs.get(), p_ref) < 2 * tol and rel_err(loss.get(), l_ref) < 10 * tol
        g = cp.asarray(rng.standard_normal(M).astype(dtype))
        d = be.cross_entropy_backward(probs, cp.asarray(t), g, 1.0, -100, 0.1)
        assert rel_err(d.get(), ksx.softmax_xent_backward_ref(probs.get(), t, g.get(), 1.0, -100, 0.1)) < 2 * tol
    n = 100_003
    p = rng.standard_normal(n).astype(dtype)
    gr = rng.standard_normal(n).astype(dtype)
    from gpugrad.backends.base import Backend
    from tests.support import optim_examples as ox
    from gpugrad.kernels.optim_rules import RULES
    cpu = gg.tensor([0.0])._backend()
    for rule in RULES.values():  # the generated optimizer kernels against the rule run on NumPy in float64
        for opts in (ox.examples(rule)[0], ox.examples(rule)[-3]):
            host = ox.example_arrays(rule, opts, n, rng, dtype, base={"p": p, "g": gr})
            ref = {k: v.astype(np.float64) for k, v in host.items()}
            dev = {k: cp.asarray(v) for k, v in host.items()}
            for cap in (False, True):
                be.optim_step(rule, dev, 5, n - 5, opts, **ox.step_args(rule, opts, 3, cap, cp, dtype))
                Backend.optim_step(cpu, rule, ref, 5, n - 5, opts, rule.derive(3, opts))
            for k in ref:
                assert np.all(np.isfinite(ref[k])) and rel_err(dev[k].get(), ref[k]) < 8 * tol, (rule.name, k)
    assert not [k for k in gg.cuda.kernel_fallbacks() if k[2] == impl]


def test_kernels_run_on_cupys_current_stream(on_cuda):
    import cupy as cp
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2048, 256)), rng.standard_normal((512, 256)), rng.standard_normal(512)
    ref = np.tanh(x @ w.T + b)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        assert gg.cuda.current_stream().ptr == s.ptr
        xs = [gg.tensor(a, dtype=gg.float64, device="cuda") for a in (x, w, b)]
        y = F.fused_linear(*xs, activation="tanh")
        host = cp.asnumpy(y.data, stream=s)
    s.synchronize()
    assert rel_err(host, ref) < 1e-12


def test_rng_stream_is_the_cpu_stream(on_cuda):
    for dev in ("cpu", "cuda"):
        gg.manual_seed(1234)
    u = {d: gg.rand(10_001, dtype=gg.float64, device=d).numpy() for d in ("cpu", "cuda")}
    np.testing.assert_array_equal(u["cpu"], u["cuda"])
    gg.manual_seed(99)
    n = {d: gg.randn(4097, dtype=gg.float64, device=d).numpy() for d in ("cpu", "cuda")}
    np.testing.assert_allclose(n["cuda"], n["cpu"], rtol=1e-13, atol=1e-13)  # libm vs CUDA math: ulps at most
    gg.manual_seed(5)
    masks = {}
    for d in ("cpu", "cuda"):
        x = gg.ones(64, 33, device=d)
        masks[d] = (F.dropout(x, 0.3, training=True).numpy() != 0)
    np.testing.assert_array_equal(masks["cpu"], masks["cuda"])


def test_memory_figures_and_true_peak(on_cuda):
    gg.cuda.synchronize()
    gg.cuda.reset_peak_memory_stats()
    base = gg.cuda.memory_allocated()
    a = gg.empty(16 * 2**20, device="cuda")  # 64 MiB
    b = gg.empty(16 * 2**20, device="cuda")
    mid = gg.cuda.memory_allocated()
    assert mid - base >= 2 * 64 * 2**20
    del a, b
    assert gg.cuda.memory_allocated() <= base + 2**20
    assert gg.cuda.max_memory_allocated() >= mid
    assert gg.cuda.memory_reserved() >= mid - base
    gg.cuda.reset_peak_memory_stats()
    assert gg.cuda.max_memory_allocated() == gg.cuda.memory_allocated()
    stats = gg.cuda.memory_stats()
    assert set(stats) == {"allocated_bytes", "reserved_bytes", "peak_allocated_bytes"}


def test_out_of_memory_is_clear(on_cuda):
    with pytest.raises(gg.cuda.OutOfMemoryError) as e:
        gg.zeros(2**46, device="cuda")  # 256 TiB of float32
    msg = str(e.value)
    assert "out of memory allocating a tensor of 256.00 TiB" in msg and "checkpoint" in msg and "batch" in msg
    x = gg.ones(4, device="cuda")  # the pool still works
    assert float(x.sum().item()) == 4.0


def test_dlpack_zero_copy_with_cupy_and_torch(on_cuda):
    import cupy as cp
    a = cp.arange(6, dtype=cp.float32).reshape(2, 3)
    t = gg.from_dlpack(a)
    assert t.device == gg.device("cuda:0") and t.data.data.ptr == a.data.ptr
    with gg.no_grad():
        t.add_(1.0)
    assert float(a[0, 0]) == 1.0
    back = cp.from_dlpack(t)
    assert back.data.ptr == a.data.ptr
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this PyTorch has no CUDA")
    tt = torch.arange(4, dtype=torch.float32, device="cuda")
    g = gg.from_dlpack(tt)
    assert g.data.data.ptr == tt.data_ptr()
    tt.mul_(2)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(g.numpy(), [0, 2, 4, 6])
    back_t = torch.from_dlpack(g)
    assert back_t.data_ptr() == tt.data_ptr()


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw", "rmsprop"])
def test_module_to_cuda_and_optimizers_match_cpu(opt, on_cuda):
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((32, 10)), rng.integers(0, 3, 32)
    final = {}
    for dev in ("cpu", "cuda"):
        gg.manual_seed(0)
        model = gg.nn.MLP([10, 16, 16, 3], activation="gelu").to(gg.float64).to(dev)
        assert all(p.device == gg.device(dev) for p in model.parameters())
        o = {"sgd": lambda ps: gg.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
             "adam": lambda ps: gg.optim.Adam(ps, lr=1e-2, amsgrad=True),
             "adamw": lambda ps: gg.optim.AdamW(ps, lr=1e-2),
             "rmsprop": lambda ps: gg.optim.RMSprop(ps, lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-3)
             }[opt](model.parameters())
        xt, tt = gg.tensor(x, dtype=gg.float64, device=dev), gg.tensor(t, device=dev)
        for _ in range(5):
            o.zero_grad()
            F.cross_entropy(model(xt), tt).backward()
            o.step()
        final[dev] = [p.numpy() for p in model.parameters()]
    for a, c in zip(final["cuda"], final["cpu"]):
        assert rel_err(a, c) < 1e-10


def _train_digits(dev: str) -> float:
    X, y = gg.data.load_digits_raw()
    X = (X / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(X))
    X, y = X[perm], y[perm]
    Xtr, ytr, Xte, yte = X[:1500], y[:1500], X[1500:], y[1500:]
    gg.manual_seed(0)
    model = gg.nn.MLP([64, 128, 128, 10], activation="relu").to(dev)
    opt = gg.optim.Adam(model.parameters(), lr=2e-3)
    xtr, ttr = gg.tensor(Xtr, device=dev), gg.tensor(ytr, device=dev)
    for epoch in range(15):
        order = np.random.default_rng(epoch).permutation(1500)
        for i in range(0, 1500, 100):
            idx = gg.tensor(order[i:i + 100], device=dev)
            opt.zero_grad()
            F.cross_entropy(model(xtr[idx]), ttr[idx]).backward()
            opt.step()
    with gg.no_grad():
        pred = model(gg.tensor(Xte, device=dev)).numpy().argmax(1)
    return float((pred == yte).mean())


def test_digits_mlp_trains_on_gpu_to_the_cpu_accuracy(on_cuda):
    acc_cpu = _train_digits("cpu")
    acc_gpu = _train_digits("cuda")
    assert acc_cpu > 0.93 and acc_gpu > 0.93
    assert abs(acc_gpu - acc_cpu) <= 0.02, (acc_cpu, acc_gpu)


@pytest.mark.parametrize("impl", ["numba", "cuda_c", "xp"])
def test_capturable_adam_step_replays_in_a_cuda_graph(on_cuda, impl, monkeypatch):
    """Adam(capturable=True): the step (device step count, bias corrections, found-inf skip) captured once
    in a CUDA graph and replayed gives the same parameters and step counts as eager steps (on the strict
    stand-in, the graph replays the recorded kernels without the Python that issued them)."""
    if on_cuda is not None and impl == "numba":
        pytest.skip("the Numba kernels need a GPU (or the simulator, tests/kernels)")
    import cupy as cp
    monkeypatch.setitem(_kernels._state, "impl", impl)
    rng = np.random.default_rng(3)
    shapes = [(64, 32), (64,), (10, 64), (10,)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    g0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    def make():
        ps = [gg.tensor(p, device="cuda", requires_grad=True) for p in p0]
        for p, g in zip(ps, g0):
            p.grad = gg.tensor(g, device="cuda")
        return ps, gg.optim.Adam(ps, lr=1e-2, amsgrad=True, capturable=True)
    ps, opt = make()
    opt.step()  # eager first step: buckets, state and the found-inf flag are allocated here
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        opt.step()
        graph = stream.end_capture()
        for _ in range(4):
            graph.launch(stream)
    stream.synchronize()
    ref, ref_opt = make()
    for _ in range(5):
        ref_opt.step()
    for a, b in zip(ps, ref):
        assert rel_err(a.numpy(), b.numpy()) < 1e-6
    assert float(opt.state[ps[0]]["step"].item()) == 5.0


@gpu
@pytest.mark.parametrize("impl", ["numba", "cuda_c", "xp"])
def test_bad_targets_reported_lazily_on_the_gpu(impl, strict, monkeypatch):
    """The device-side target check: no error inside the step, the usual IndexError at the next sync."""
    monkeypatch.setitem(_kernels._state, "impl", impl)
    monkeypatch.delenv("GPUGRAD_SYNC_DEBUG", raising=False)
    x = gg.tensor(np.linspace(-1, 1, 24).reshape(6, 4), device="cuda", requires_grad=True)
    t = gg.tensor(np.array([0, 5, 2, -100, 7, -3]), device="cuda")
    loss = gg.nn.functional.cross_entropy(x, t)
    loss.backward()
    with pytest.raises(IndexError, match=r"cross_entropy: targets from -3 to 7 out of range.*4 classes"):
        loss.item()
    ok = gg.nn.functional.cross_entropy(x, gg.tensor(np.array([0, 1, 2, 3, 3, -100]), device="cuda"))
    gg.cuda.synchronize()
    assert np.isfinite(ok.item())


@pytest.mark.parametrize("kernels", ["cuda_c", "xp"])
def test_bad_targets_reported_lazily_on_the_strict_stand_in(kernels, monkeypatch):
    """The same on the strict CuPy stand-in (real CUDA backend; fused.cu's NumPy references), where a
    device read inside the step would be counted."""
    from tests.support import strict_cuda
    monkeypatch.delenv("GPUGRAD_SYNC_DEBUG", raising=False)
    with strict_cuda(kernels=kernels) as cp:
        x = gg.tensor(np.linspace(-1, 1, 24).reshape(6, 4)).to("cuda").requires_grad_()
        t = gg.tensor(np.array([0, 5, 2, -100, 7, -3])).to("cuda")
        cp.reset_counters()
        loss = gg.nn.functional.cross_entropy(x, t)
        loss.backward()
        assert cp.snapshot()["device_to_host"] == 0
        with pytest.raises(IndexError, match=r"cross_entropy: targets from -3 to 7 out of range.*4 classes"):
            loss.item()
        ok = gg.nn.functional.cross_entropy(x, gg.tensor(np.array([0, 1, 2, 3, 3, -100])).to("cuda"))
        gg.cuda.synchronize()
        assert np.isfinite(ok.item())


@pytest.mark.parametrize("tdtype", [np.int32, np.int16, np.uint8, np.int8])
@pytest.mark.parametrize("loss_fn", ["nll_loss", "cross_entropy"])
def test_narrow_integer_targets_on_cuda(on_cuda, loss_fn, tdtype, monkeypatch):
    """Class targets of any integer dtype: the same loss and gradient as on the CPU, bad targets found on the
    device (CuPy casts a Python int into the target's dtype and raises OverflowError where it does not fit:
    the int64 bounds of the error record into int32, ignore_index -100 into uint8)."""
    monkeypatch.delenv("GPUGRAD_SYNC_DEBUG", raising=False)
    fn = getattr(F, loss_fn)
    x = np.linspace(-1, 1, 24).reshape(6, 4)
    t = np.array([0, 3, 2, 1, 3, 0], dtype=tdtype)
    res = {}
    for d in ("cpu", "cuda"):
        xt = gg.tensor(x, device=d, requires_grad=True)
        inp = F.log_softmax(xt, dim=1) if loss_fn == "nll_loss" else xt
        loss = fn(inp, gg.tensor(t, device=d))
        loss.backward()
        res[d] = (loss.numpy(), xt.grad.numpy())
    for a, b in zip(res["cpu"], res["cuda"]):
        assert rel_err(b, a) < 1e-12
    bad = np.array([0, 9, 2, 1, 3, 0], dtype=tdtype)
    xc = gg.tensor(x, device="cuda")
    loss = fn(F.log_softmax(xc, dim=1) if loss_fn == "nll_loss" else xc, gg.tensor(bad, device="cuda"))
    with pytest.raises(IndexError, match=rf"{loss_fn}: target 9 .*out of range.*4 classes"):
        loss.item()


def test_cuda_c_launchers_take_only_blocks_their_kernels_can_run():
    """fused.cu's softmax_xent_fwd reduces in sm_m[256] by halving the block: a power of two up to 256
    threads; the elementwise kernels take any block up to 1024. Anything else: a clear error, before launch."""
    from gpugrad.kernels import cuda_c
    from tests.support import strict_cuda
    rng = np.random.default_rng(0)
    with strict_cuda():
        be = gg.backends.get_backend("cuda")
        cp = be.xp
        logits = cp.asarray(rng.standard_normal((3, 1000)).astype(np.float32))
        t = cp.asarray(np.array([1, 2, 999]))
        loss, probs = cp.empty(3, cp.float32), cp.empty((3, 1000), cp.float32)
        for block in (384, 512, 0, 2.0):
            with pytest.raises(ValueError, match=r"softmax_xent_fwd: block=.* a power of two from 1 to 256"):
                cuda_c.softmax_xent_forward(logits, t, loss, probs, state=be.state, block=block)
        for block in (None, 64, 256):  # None: the default for 1000 classes (clamped to 256)
            cuda_c.softmax_xent_forward(logits, t, loss, probs, state=be.state, block=block)
            np.testing.assert_allclose(probs.get().sum(axis=1), 1, rtol=1e-5)
        z = cp.asarray(rng.standard_normal((4, 5)).astype(np.float32))
        with pytest.raises(ValueError, match=r"bias_act: block=2048 .* an int from 1 to 1024"):
            cuda_c.bias_act(z, None, z, "relu", state=be.state, block=2048)
        cuda_c.bias_act(z, None, z, "relu", state=be.state, block=96)
        assert (z.get() >= 0).all()


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_derivatives_on_cuda_match_cpu(act, on_cuda):
    """``act_derivative`` (orders 1-2: one kernel pass; 3: array code) and the fused linear layer's
    order-2 pass ``act_bias_backward(..., order=2)`` on device "cuda" agree with the CPU backend."""
    from gpugrad.kernels import activations as A
    rng = np.random.default_rng(11)
    z = rng.standard_normal((6, 9)) * 3
    prm = A.params(act)
    s = {"y": A.forward_ref(z, act, prm), "z": z, "none": None}[A.saves(act, prm)]
    g = rng.standard_normal((6, 9))
    cpu = gg.tensor([0.0])._backend()
    be = gg.tensor([0.0], device="cuda")._backend()
    xp = be.xp
    s_dev = None if s is None else xp.asarray(s)
    for order in (1, 2, 3):
        want = cpu.act_derivative(g, s, act, prm, order)
        got = be.act_derivative(xp.asarray(g), s_dev, act, prm, order)
        np.testing.assert_allclose(be.to_numpy(got), want, rtol=1e-12, atol=1e-12)
    for order in (1, 2):
        dz, db = be.act_bias_backward(xp.asarray(g), s_dev, act, True, prm, order)
        want_dz, want_db = cpu.act_bias_backward(g, s if s is not None else g, act, True, prm, order)
        np.testing.assert_allclose(be.to_numpy(dz), want_dz, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(be.to_numpy(db), want_db, rtol=1e-12, atol=1e-11)
