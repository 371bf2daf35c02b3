"""The capturable cuBLAS GEMM layer (gpugrad/backends/cuda/cublas.py).

On CPU a fake binding (tests/support/fake_cublas.py) stands in for cuBLAS: it receives exactly the
raw ``cublasGemmEx`` arguments, rebuilds the column-major operands from the memory behind the pointers
the way BLAS reads them, checks what cuBLAS would refuse (leading dimensions, buffer extents, types,
stream/workspace order) and writes ``C = alpha op(A) op(B) + beta C`` with NumPy. So the
row-major/column-major mapping is checked
for every GEMM the linear layer issues, through the backend methods themselves. GPU tests run the
real bindings against ``cupy.matmul``."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gpugrad.backends.cuda import cublas as C
from tests.support.fake_cublas import FakeCublasBinding as FakeBinding


class _FakeXP:
    """The array namespace ``CublasGemm`` allocates with, registering every buffer with the fake."""

    def __init__(self, fake: FakeBinding) -> None:
        self.fake = fake

    def empty(self, shape, dtype):
        a = np.empty(shape, dtype)
        self.fake.register(a)
        return a

    def ascontiguousarray(self, a):
        c = np.ascontiguousarray(a)
        self.fake.register(c)
        return c


def _gemm():
    fake = FakeBinding()
    return C.CublasGemm(fake, _FakeXP(fake), workspace_bytes=1024), fake


def _arr(fake, rng, shape, dtype=np.float64):
    a = rng.standard_normal(shape).astype(dtype)
    fake.register(a)
    return a


# ---------------------------------------------------------------- the mapping, op by op
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("M,N,K", [(5, 3, 4), (1, 7, 2), (6, 1, 9), (3, 4, 1), (64, 48, 32)])
def test_every_transposition_matches_numpy(trans_a, trans_b, M, N, K):
    rng = np.random.default_rng(M * 100 + N * 10 + K)
    g, fake = _gemm()
    a = _arr(fake, rng, (K, M) if trans_a else (M, K))
    b = _arr(fake, rng, (N, K) if trans_b else (K, N))
    out = g.matmul(a, b, trans_a, trans_b, stream=7)
    ref = (a.T if trans_a else a) @ (b.T if trans_b else b)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    call = fake.calls[-1]
    assert (call["m"], call["n"], call["k"]) == (N, M, K)  # out^T = op(b)^T op(a)^T


def test_the_linear_layer_gemms_exact_arguments():
    """x (M, K) @ w.T (w: (N, K)); dx = dz (M, N) @ w; dw = dz.T @ x: the column-major calls."""
    rng = np.random.default_rng(0)
    g, fake = _gemm()
    M, K, N = 6, 5, 3
    x, w, dz = _arr(fake, rng, (M, K)), _arr(fake, rng, (N, K)), _arr(fake, rng, (M, N))
    np.testing.assert_allclose(g.matmul(x, w, False, True), x @ w.T, rtol=1e-12)
    np.testing.assert_allclose(g.matmul(dz, w), dz @ w, rtol=1e-12)
    np.testing.assert_allclose(g.matmul(dz, x, True, False), dz.T @ x, rtol=1e-12)
    T, Nn = C.OP_T, C.OP_N
    assert [tuple(c[k] for k in ("transa", "transb", "m", "n", "k", "lda", "ldb", "ldc")) for c in fake.calls] == [
        (T, Nn, N, M, K, K, K, N),    # forward: A = w (op T), B = x
        (Nn, Nn, K, M, N, K, N, K),   # dx: A = w, B = dz
        (Nn, T, K, N, M, K, N, K),    # dw: A = x, B = dz (op T)
    ]


def test_non_contiguous_operands_fortran_views_and_copies():
    rng = np.random.default_rng(1)
    g, fake = _gemm()
    base = _arr(fake, rng, (8, 6))
    f_view = base.T            # F-contiguous: used in place with the flag flipped
    strided = base[::2, ::2]   # neither: copied
    w = _arr(fake, rng, (4, 8))
    np.testing.assert_allclose(g.matmul(f_view, w, False, True), f_view @ w.T, rtol=1e-12)
    v = _arr(fake, rng, (3, 5))
    np.testing.assert_allclose(g.matmul(strided, v), strided @ v, rtol=1e-12)
    vt = v.T.copy()
    fake.register(vt)
    np.testing.assert_allclose(g.matmul(strided, vt, False, True), strided @ v, rtol=1e-12)


@pytest.mark.parametrize("dtype,tf32,compute", [(np.float16, False, C.COMPUTE_32F), (np.float32, False, C.COMPUTE_32F),
                                                 (np.float32, True, C.COMPUTE_32F_FAST_TF32),
                                                 (np.float64, False, C.COMPUTE_64F)])
def test_dtypes_and_compute_types(dtype, tf32, compute):
    rng = np.random.default_rng(2)
    g, fake = _gemm()
    a, b = _arr(fake, rng, (9, 16), dtype), _arr(fake, rng, (7, 16), dtype)
    out = g.matmul(a, b, False, True, tf32=tf32)
    assert out.dtype == dtype and fake.calls[-1]["compute"] == compute
    ref = a.astype(np.float64) @ b.astype(np.float64).T
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=2e-2 if dtype == np.float16 else 1e-5, atol=2e-2)


def test_stream_and_workspace_set_once_per_stream():
    rng = np.random.default_rng(3)
    g, fake = _gemm()
    a, b = _arr(fake, rng, (4, 4)), _arr(fake, rng, (4, 4))
    for s in (11, 11, 12, 12, 11):
        g.matmul(a, b, stream=s)
    kinds = [e[0] for e in fake.log]
    assert kinds == ["pointer_mode"] + ["stream", "workspace"] * 3
    assert [e[2] for e in fake.log if e[0] == "stream"] == [11, 12, 11]
    assert all(e[2] == g.workspace.ctypes.data and e[3] == 1024 for e in fake.log if e[0] == "workspace")


def test_empty_and_zero_inner_dimension_and_out():
    rng = np.random.default_rng(4)
    g, fake = _gemm()
    z = g.matmul(_arr(fake, rng, (3, 0)), _arr(fake, rng, (0, 4)))
    assert z.shape == (3, 4) and not z.any() and not fake.calls
    assert g.matmul(_arr(fake, rng, (0, 5)), _arr(fake, rng, (5, 2))).shape == (0, 2)
    out = np.full((3, 2), np.nan)
    fake.register(out)
    a, b = _arr(fake, rng, (3, 5)), _arr(fake, rng, (2, 5))
    assert g.matmul(a, b, False, True, out=out) is out
    np.testing.assert_allclose(out, a @ b.T, rtol=1e-12)


def test_errors_name_the_op_and_shapes():
    rng = np.random.default_rng(5)
    g, fake = _gemm()
    with pytest.raises(ValueError, match=r"cublas.gemm: inner dimensions differ.*\(3, 4\)"):
        g.matmul(_arr(fake, rng, (3, 4)), _arr(fake, rng, (5, 2)))
    with pytest.raises(TypeError, match="one dtype among"):
        g.matmul(_arr(fake, rng, (3, 4)), _arr(fake, rng, (4, 2), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        g.matmul(_arr(fake, rng, (3, 4)), _arr(fake, rng, (4, 2)), out=np.empty((2, 3)))
    with pytest.raises(ValueError, match="path must be one of"):
        C.set_gemm_path("always")


def _naive_plan(a_shape, b_shape, trans_a, trans_b):
    """The classic mistake: row-major arguments passed straight through (cuBLAS A = a, B = b,
    m = M, n = N, leading dimensions = row lengths)."""
    (ra, ca), (rb, cb) = a_shape, b_shape
    M, K = (ca, ra) if trans_a else (ra, ca)
    N = rb if trans_b else cb
    return C.GemmArgs(C.OP_T if trans_a else C.OP_N, C.OP_T if trans_b else C.OP_N, M, N, K, ca, cb, N), (M, N)


@pytest.mark.parametrize("trans_b", [False, True])
def test_the_fake_catches_a_wrong_mapping(monkeypatch, trans_b):
    """Mutation check: with the row-major arguments passed through unmapped, the fake either refuses the
    call (a leading dimension smaller than the rows) or computes a result that differs from NumPy."""
    rng = np.random.default_rng(6)
    g, fake = _gemm()
    a = _arr(fake, rng, (3, 5))
    b = _arr(fake, rng, (2, 5) if trans_b else (5, 2))
    ref = a @ (b.T if trans_b else b)
    monkeypatch.setattr(C, "plan", _naive_plan)
    try:
        out = g.matmul(a, b, False, trans_b)
    except AssertionError as e:
        assert "leading dimension" in str(e) or "outside every known buffer" in str(e)
        return
    assert not np.allclose(out, ref)


# ---------------------------------------------------------------- through the CUDA backend's methods
def _fake_backend(monkeypatch):
    from gpugrad.backends.cuda.backend import CUDABackend
    g, fake = _gemm()
    be = object.__new__(CUDABackend)
    stream = SimpleNamespace(ptr=5)
    be.xp = SimpleNamespace(matmul=np.matmul, cuda=SimpleNamespace(get_current_stream=lambda: stream))
    be._gpu = SimpleNamespace(id=0)
    be.state = SimpleNamespace(index=0)
    monkeypatch.setattr(C, "get", lambda state, xp: g)
    return be, fake


@pytest.mark.parametrize("need_dx,need_dw", [(True, True), (True, False), (False, True)])
def test_backend_linear_gemms_go_through_the_binding_when_forced(monkeypatch, need_dx, need_dw):
    be, fake = _fake_backend(monkeypatch)
    rng = np.random.default_rng(7)
    x, w, dz = _arr(fake, rng, (10, 6)), _arr(fake, rng, (4, 6)), _arr(fake, rng, (10, 4))
    assert be.linear_forward(x, w) is not None and not fake.calls  # path "auto", not forced: cupy.matmul
    with C.forced():
        z = be.linear_forward(x, w)
        dx, dw = be.linear_backward(dz, x, w, need_dx, need_dw)
    np.testing.assert_allclose(z, x @ w.T, rtol=1e-12)
    assert (dx is None) != need_dx and (dw is None) != need_dw
    if need_dx:
        np.testing.assert_allclose(dx, dz @ w, rtol=1e-12)
    if need_dw:
        np.testing.assert_allclose(dw, dz.T @ x, rtol=1e-12)
    assert len(fake.calls) == 1 + need_dx + need_dw
    assert not C.active()


def test_public_switch():
    import gpugrad as gg
    assert gg.cuda.get_gemm_path() == "auto"
    gg.cuda.set_gemm_path("cublas")
    try:
        assert C.active() and gg.cuda.get_gemm_path() == "cublas"
    finally:
        gg.cuda.set_gemm_path("auto")
    assert not C.active()
    with pytest.raises(ValueError, match="set_gemm_path"):
        gg.cuda.set_gemm_path("nvmath")


def test_gemm_path_switch(monkeypatch):
    be, fake = _fake_backend(monkeypatch)
    rng = np.random.default_rng(8)
    x, w = _arr(fake, rng, (3, 2)), _arr(fake, rng, (5, 2))
    monkeypatch.setattr(C, "_path", ["cublas"])
    np.testing.assert_allclose(be.linear_forward(x, w), x @ w.T, rtol=1e-12)
    assert len(fake.calls) == 1 and C.get_gemm_path() == "cublas"
    xi = np.arange(6).reshape(3, 2)  # integer: not a cuBLAS GEMM dtype, falls back to matmul
    be.linear_forward(xi, xi)
    assert len(fake.calls) == 1


# ---------------------------------------------------------------- choosing the binding (stand-in libraries)
class _Fn:
    """A ctypes function of a stand-in library (argtypes/restype settable, like ctypes')."""

    def __init__(self, fn) -> None:
        self.fn, self.argtypes, self.restype = fn, None, None

    def __call__(self, *a):
        return self.fn(*a)


class _FakeLibcublas:
    """What ``ctypes.CDLL`` gives for a libcublas reporting cuBLAS ``major`` (status 0 everywhere)."""

    def __init__(self, major: int) -> None:
        def out(value):
            def f(*a):
                a[-1]._obj.value = value  # the pointer argument (ctypes.byref): write the result
                return 0
            return _Fn(f)
        self.cublasCreate_v2 = out(0x1234)
        self.cublasGetProperty = out(major)
        for name in ("cublasSetStream_v2", "cublasSetWorkspace_v2", "cublasSetPointerMode_v2", "cublasGemmEx",
                     "cublasDestroy_v2"):
            setattr(self, name, _Fn(lambda *a: 0))


def _loader(libs: dict, tried: list):
    """``ctypes.CDLL`` over ``{soname: major}``: records every name asked for, loads only those listed."""
    def load(name, mode=0):
        tried.append(name)
        if name not in libs:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return _FakeLibcublas(libs[name])
    return load


@pytest.fixture
def fresh_runtime(monkeypatch):
    """A fresh CUDA runtime state (no binding chosen yet), CuPy's CUDA major 13, no nvmath."""
    import sys
    from gpugrad.backends.cuda import state
    outer = state.install(state.Runtime())
    monkeypatch.setattr(C, "cuda_major", lambda: 13)
    monkeypatch.setitem(sys.modules, "nvmath", None)  # import fails unless a test plants one
    monkeypatch.delenv("GPUGRAD_CUBLAS_BINDING", raising=False)
    yield state.runtime()
    state.install(outer)


def _plant_nvmath(monkeypatch, major=None, error=None):
    """A stand-in ``nvmath.bindings.cublas`` that imports fine and resolves cuBLAS only when called (as
    nvmath does): ``error`` raised by the first call, else cuBLAS ``major`` reported."""
    import sys
    import types
    nb = types.ModuleType("nvmath.bindings.cublas")

    def get_property(kind):
        if error is not None:
            raise error
        return major
    nb.get_property, nb.create, nb.destroy = get_property, lambda: 7, lambda h: None
    nb.set_stream = nb.set_workspace = nb.set_pointer_mode = nb.gemm_ex = lambda *a: None
    pkg, sub = types.ModuleType("nvmath"), types.ModuleType("nvmath.bindings")
    pkg.bindings, sub.cublas = sub, nb
    for name, mod in (("nvmath", pkg), ("nvmath.bindings", sub), ("nvmath.bindings.cublas", nb)):
        monkeypatch.setitem(sys.modules, name, mod)


def _ctypes_from(monkeypatch, libs: dict) -> list:
    tried: list = []
    monkeypatch.setitem(C.BINDINGS, "ctypes",
                        lambda major: C.CtypesBinding(major=major, loader=_loader(libs, tried)))
    return tried


def test_auto_probes_nvmath_before_choosing_it(monkeypatch, fresh_runtime):
    """nvmath imports but its cuBLAS does not load (a cu12 build under CUDA 13): "auto" must not choose
    it (the first GEMM would fail with no fallback) but the ctypes binding over CuPy's libcublas."""
    _plant_nvmath(monkeypatch, error=RuntimeError("Failed to dlopen libcublas.so.12"))
    tried = _ctypes_from(monkeypatch, {"libcublas.so.13": 13})
    b = C.binding()
    assert b.name == "ctypes" and tried == ["libcublas.so.13"] and fresh_runtime.binding is b
    assert C.binding() is b  # chosen once per runtime state


def test_nvmath_with_another_cuda_major_is_refused(monkeypatch, fresh_runtime):
    _plant_nvmath(monkeypatch, major=12)
    monkeypatch.setenv("GPUGRAD_CUBLAS_BINDING", "nvmath")
    with pytest.raises(RuntimeError, match=r"nvmath: RuntimeError: cublas: nvmath-python's cuBLAS is cuBLAS 12\.x, "
                                           r"but CuPy runs CUDA 13\.x"):
        C.binding()
    _plant_nvmath(monkeypatch, major=13)
    assert C.binding().name == "nvmath"


def test_ctypes_loads_only_cupys_cuda_major(monkeypatch, fresh_runtime):
    """Only ``libcublas.so.<CuPy's major>`` is ever asked for: never another major's library, never the
    unversioned name; a library that reports another major is refused."""
    monkeypatch.setenv("GPUGRAD_CUBLAS_BINDING", "ctypes")
    tried = _ctypes_from(monkeypatch, {"libcublas.so.12": 12, "libcublas.so": 12})
    with pytest.raises(RuntimeError, match=r"could not load cuBLAS 13"):
        C.binding()
    assert tried and set(tried) == {"libcublas.so.13"}
    _ctypes_from(monkeypatch, {"libcublas.so.13": 12})
    with pytest.raises(RuntimeError, match=r"the loaded libcublas is cuBLAS 12\.x, but CuPy runs CUDA 13\.x"):
        C.binding()


def test_cublas_handles_are_per_thread_and_device():
    """As CuPy keeps its own: one thread setting a handle's stream must not race another thread's GEMM."""
    import threading
    from gpugrad.backends.cuda import state
    from tests.support import strict_cuda
    from tests.support.fake_cublas import FakeCublasBinding
    with strict_cuda(device_count=2) as cp:
        rt = state.runtime()
        rt.binding = FakeCublasBinding(check_extents=False)
        d0, d1 = rt.device(0), rt.device(1)
        mine = C.get(d0, cp.cupy)
        assert C.get(d0, cp.cupy) is mine and C.get(d1, cp.cupy) is not mine
        other = []
        t = threading.Thread(target=lambda: other.append(C.get(d0, cp.cupy)))
        t.start()
        t.join()
        assert other[0] is not mine and other[0].handle != mine.handle
        assert len(d0.cublas) == 2 and len(d1.cublas) == 1


# ---------------------------------------------------------------- on a GPU: the real bindings
@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["nvmath", "ctypes"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_gpu_binding_matches_cupy_matmul_and_captures(kind, dtype):
    import cupy
    try:
        bind = C.NvmathBinding() if kind == "nvmath" else C.CtypesBinding()
    except Exception as e:
        pytest.skip(f"{kind} binding unavailable: {e}")
    g = C.CublasGemm(bind, cupy)
    rng = np.random.default_rng(9)
    x = cupy.asarray(rng.standard_normal((33, 17)).astype(dtype))
    w = cupy.asarray(rng.standard_normal((9, 17)).astype(dtype))
    dz = cupy.asarray(rng.standard_normal((33, 9)).astype(dtype))
    s = cupy.cuda.Stream(non_blocking=True)
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == np.float16 else dict(rtol=1e-5, atol=1e-5)
    with s:
        for args, ref in (((x, w, False, True), x @ w.T), ((dz, w), dz @ w), ((dz, x, True, False), dz.T @ x)):
            got = g.matmul(*args, stream=s.ptr)
            cupy.testing.assert_allclose(got, ref, **tol)
        out = cupy.empty((33, 9), dtype)
        g.matmul(x, w, False, True, out=out, stream=s.ptr)  # warm: nothing left to allocate in capture
        s.begin_capture()
        g.matmul(x, w, False, True, out=out, stream=s.ptr)
        graph = s.end_capture()
        out.fill(0)
        graph.launch(s)
        s.synchronize()
    cupy.testing.assert_allclose(out, x @ w.T, **tol)


@pytest.mark.gpu
def test_gpu_enum_values_match_nvmath():
    nb = pytest.importorskip("nvmath.bindings.cublas")
    assert int(nb.Operation.N) == C.OP_N and int(nb.Operation.T) == C.OP_T
    assert int(nb.ComputeType.COMPUTE_32F) == C.COMPUTE_32F
    assert int(nb.ComputeType.COMPUTE_64F) == C.COMPUTE_64F
    assert int(nb.ComputeType.COMPUTE_32F_FAST_TF32) == C.COMPUTE_32F_FAST_TF32
    assert int(nb.PointerMode.HOST) == C.POINTER_MODE_HOST
    assert int(nb.GemmAlgo.DEFAULT) == C.GEMM_DEFAULT


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_gpu_mlp_training_step_through_the_handle_equals_cupy_matmul(dtype):
    """nn.MLP forward + backward with gg.cuda.set_gemm_path("cublas") equals the default path."""
    import gpugrad as gg
    rng = np.random.default_rng(10)
    xn, yn = rng.standard_normal((64, 24)), rng.standard_normal((64, 7))
    res = []
    for path in ("auto", "cublas"):
        gg.cuda.set_gemm_path(path)
        try:
            gg.manual_seed(0)
            m = gg.nn.MLP([24, 32, 32, 7]).to("cuda").to(getattr(gg, dtype))
            x = gg.tensor(xn, dtype=getattr(gg, dtype), device="cuda", requires_grad=True)
            out = m(x)
            gg.nn.functional.mse_loss(out.float(), gg.tensor(yn, dtype=gg.float32, device="cuda")).backward()
            res.append([out.numpy()] + [p.grad.numpy() for p in m.parameters()] + [x.grad.numpy()])
        finally:
            gg.cuda.set_gemm_path("auto")
    tol = 2e-2 if dtype == "float16" else 1e-5
    for a, b in zip(*res):
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=tol, atol=tol)
