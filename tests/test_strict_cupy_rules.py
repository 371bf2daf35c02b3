"""The strict CuPy stand-in's rules that come from reading CuPy 14.2's source (the module docstring of
tests/support/strict_cupy.py names the file of each): host-to-device copies and device reads, counted
and refused while a stream captures; NEP 50 for Python scalars; RawKernel/RawModule argument rules;
launch geometry checked by the kernel references; 1-D ``dot`` as a reduction; capture that records the
device work and replays it at each launch without the Python that issued it."""
from __future__ import annotations

import numpy as np
import pytest

from tests.support import strict_cuda
from tests.support import strict_cupy as S


@pytest.fixture
def cp():
    with S.installed() as mod:
        yield mod


def _capturing(cp):
    """A non-blocking stream, made current and capturing (``with`` it; ends the capture on exit)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        s = cp.cuda.Stream(non_blocking=True)
        with s:
            s.begin_capture()
            try:
                yield s
            finally:
                if s.is_capturing():
                    s.end_capture()
    return ctx()


# ====================================================================== transfers
def test_host_to_device_copies_are_counted_and_refused_during_capture(cp):
    x = cp.arange(12, dtype=cp.float32)
    parts = [cp.ones(3, cp.float32) for _ in range(9)]
    S.reset_counters()
    copies = [lambda: cp.asarray(np.ones(3)), lambda: cp.array([1.0, 2.0]), lambda: x.set(np.zeros(12, np.float32)),
              lambda: x[[0, 1]], lambda: x[np.array([2, 3])], lambda: cp.concatenate(parts),
              lambda: cp.stack(parts), lambda: cp.concatenate(parts + [cp.ones(4, cp.float32)])]
    for f in copies:
        f()
    # one each, but concatenate of 10 arrays of unequal shapes copies 3 tables (pointers, sizes, strides)
    assert S.snapshot()["host_to_device"] == len(copies) - 1 + 3
    other = cp.ones(3, cp.float64)
    S.reset_counters()
    cp.concatenate(parts[:8])  # 8 arrays: one copy kernel each, no table
    cp.concatenate(parts + [other])  # mixed dtypes: one copy each
    assert S.snapshot()["host_to_device"] == 0 and S.snapshot()["array_ops"] == 8 + 10
    for f in copies:
        with _capturing(cp):
            with pytest.raises(RuntimeError, match="the current stream is capturing, so H2D transfers are disallowed"):
                f()
    with _capturing(cp):
        cp.concatenate(parts[:8])  # no transfer: fine


def test_data_dependent_shapes_read_the_device(cp):
    x = cp.asarray(np.array([0.0, 2.0, 0.0, 3.0]))
    ix = cp.asarray(np.array([1, 3, 3]))
    mask = x > 1
    S.reset_counters()
    reads = [lambda: x[mask], lambda: cp.nonzero(x), lambda: x.nonzero(), lambda: cp.flatnonzero(x),
             lambda: cp.argwhere(x), lambda: cp.unique(x), lambda: cp.where(mask), lambda: cp.bincount(ix)]
    for f in reads:
        f()
    assert S.snapshot()["device_to_host"] == len(reads)
    S.reset_counters()
    x[mask] = 0.0  # the count is read, then the scalar copied to the device
    assert S.snapshot()["device_to_host"] == 1 and S.snapshot()["host_to_device"] == 1
    np.testing.assert_array_equal(x.get(), [0, 0, 0, 0])
    for f in reads + [lambda: x.__setitem__(mask, 1.0)]:
        with _capturing(cp):
            with pytest.raises(RuntimeError, match="D2H transfers are disallowed"):
                f()
    with _capturing(cp):
        x[ix] = 1.0  # integer-array indices on the device: no read, no copy


# ====================================================================== NEP 50
def test_python_scalars_are_weak_and_must_fit_the_array_dtype(cp):
    t32 = cp.asarray(np.array([1, -5, 7], np.int32))
    u8 = cp.asarray(np.array([1, 200], np.uint8))
    big = 2 ** 63 - 1
    # NumPy wraps these silently (the bug the stand-in once hid); CuPy raises
    assert np.where(np.array([True, False]), np.array([1, 2], np.int32), big).tolist() == [1, -1]
    for f, dt in ((lambda: cp.where(t32 < 0, t32, big), "int32"), (lambda: u8 != -100, "uint8"),
                  (lambda: cp.clip(cp.asarray(np.array([1], np.int8)), 0, 200), "int8"),
                  (lambda: cp.maximum(t32, big), "int32"), (lambda: t32 == 2 ** 40, "int32")):
        with pytest.raises(OverflowError, match=f"out of bounds for {dt}"):
            f()
    t64 = t32.astype(np.int64)
    assert cp.where(t64 < 0, t64, big).get().tolist() == [big, -5, big]
    assert (t64 != -100).get().all()
    assert cp.where(t32 < 0, 1, 0).dtype == np.int64  # only a bool array beside them: the ints are int64
    assert (t32 * 2.5).dtype == np.float64  # a float scalar of a higher kind than the array: not weak
    assert (cp.asarray(np.ones(2, np.float32)) * 3).dtype == np.float32



def test_ufuncs_and_operators_give_ieee_results_without_warnings(cp):
    """CuPy's elementwise kernels never read the floating-point status: inf and nan, no RuntimeWarning
    (NumPy warns for each of these), also when a captured graph replays them."""
    import warnings
    z, one = cp.zeros(2, dtype=np.float32), cp.ones(2, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isneginf(cp.log(z).get()).all() and np.isinf((one / z).get()).all()
        assert np.isnan((z / z).get()).all() and np.isinf(cp.exp(one * 1000).get()).all()
        assert np.isnan(cp.power(-one, 0.5).get()).all()
        out = cp.empty(2, dtype=np.float32)
        s = cp.cuda.Stream(non_blocking=True)
        with s:
            s.begin_capture()
            cp.log(z, out=out)
            g = s.end_capture()
        g.launch(s)
        assert np.isneginf(out.get()).all()

# ====================================================================== kernels
_SRC = r'''
typedef long long i64;
#define TABLE_N 4
struct Table { const float* src[TABLE_N]; i64 n[TABLE_N + 1]; };
extern "C" __global__ void scale(float* x, i64 n, float a) { }
extern "C" __global__ void take(Table t, float* out) { }
'''


def test_kernel_arguments_follow_cupy(cp):
    with pytest.raises(TypeError, match="Exactly one of `code` and `path`"):
        cp.RawModule()
    with pytest.raises(TypeError):
        cp.RawModule(_SRC)  # keyword-only
    with pytest.raises(TypeError, match="options"):
        cp.RawModule(code=_SRC, options=["--std=c++14"])
    with pytest.raises(TypeError, match="options"):
        cp.RawKernel(_SRC, "scale", options=["-O3"])
    mod = cp.RawModule(code=_SRC, options=("--std=c++14",))
    f, g = mod.get_function("scale"), mod.get_function("take")
    seen = []
    S.register_kernel("scale", lambda a, grid, block: seen.append((grid, block, a["n"], a["a"])))
    S.register_kernel("take", lambda a, grid, block: seen.append(a["t"]["n"].tolist()))
    x = cp.ones(4, cp.float32)
    for grid, block in ((1, (32,)), ((1,), 32), ((1,), [32])):
        with pytest.raises(TypeError, match="incorrect type .expected tuple"):
            f(grid, block, (x, np.int64(4), np.float32(2)))
    f((0,), (32,), [x, np.array([4], np.int64), np.float32(2)])  # a list of args; a one-element array by value
    assert seen[-1][:2] == ((1, 1, 1), (32, 1, 1)) and seen[-1][2] == 4  # CuPy launches max(1, grid)
    with pytest.raises(TypeError, match="Only numpy.ndarrays of size one can be passed by value"):
        f((1,), (32,), (x, np.array([4, 5], np.int64), np.float32(2)))
    table = np.zeros(1, np.dtype([("src", np.uint64, (4,)), ("n", np.int64, (5,))]))
    table["n"][0] = [0, 1, 2, 3, 4]
    g((1,), (32,), (table, x))
    assert seen[-1] == [0, 1, 2, 3, 4]
    short = np.zeros(1, np.dtype([("src", np.uint64, (4,)), ("n", np.int64, (4,))]))
    for bad in (short, np.zeros(9, np.int64), np.int64(3)):
        with pytest.raises(TypeError, match="struct|size one"):
            g((1,), (32,), (bad, x))


def test_kernel_references_check_launch_geometry():
    import gpugrad as gg
    from gpugrad.kernels import cuda_c
    from gpugrad.kernels.activations import kernel_params
    from tests.support.kernel_refs import LaunchGeometryError
    rng = np.random.default_rng(0)
    with strict_cuda() as sc:
        be = gg.backends.get_backend("cuda")
        cp = be.xp
        z = cp.asarray(rng.standard_normal((4, 300)).astype(np.float32))
        y = cp.empty_like(z)
        f = cuda_c.function(be.state, "bias_act", np.float32)
        prm = tuple(np.float32(v) for v in kernel_params("relu"))  # GG_ACT_PARAMS: the activation's parameters
        args = (z, z, y, np.int64(4), np.int64(300), np.int32(0), np.int32(0), np.int32(1)) + prm
        with pytest.raises(LaunchGeometryError, match="covers 256 columns, the data has 300"):
            f((1, 4), (256,), args)
        f((2, 1), (256,), args)  # rows: grid-stride, any grid.y
        np.testing.assert_allclose(y.get(), np.maximum(z.get(), 0))
        logits = cp.asarray(rng.standard_normal((3, 400)).astype(np.float32))
        t = cp.asarray(np.array([1, 2, 3]))
        loss, probs = cp.empty(3, cp.float32), cp.empty((3, 400), cp.float32)
        sm = cuda_c.function(be.state, "softmax_xent_fwd", np.float32)
        sm_args = (logits, t, loss, probs, np.int64(3), np.int64(400), np.int64(-100), t, np.int32(0))
        for block in ((384,), (512,), (16, 2)):  # not a power of two, past sm_m[256], 2-D
            with pytest.raises(LaunchGeometryError, match="power of two of at most 256"):
                sm((3,), block, sm_args)
        sm((1,), (256,), sm_args)  # one block strides over the rows
        np.testing.assert_allclose(probs.get().sum(axis=1), 1.0, rtol=1e-5)
        assert sc.snapshot()["kernels"]["softmax_xent_fwd_f32"] >= 1


# ====================================================================== cuBLAS
def test_one_element_dot_is_a_reduction_not_cublas(cp):
    a = cp.asarray(np.arange(4.0))
    m = cp.asarray(np.arange(8.0).reshape(2, 4))
    S.reset_counters()
    assert float(cp.dot(a, a)) == 14.0 and float((a[None, :] @ a[:, None])[0, 0]) == 14.0
    assert S.snapshot()["gemm_calls"] == 0
    with _capturing(cp):
        cp.dot(a, a)  # a reduction kernel: captures
        with pytest.raises(NotImplementedError, match="cuBLAS API during stream capture"):
            m @ a
    m @ a
    assert S.snapshot()["gemm_calls"] == 1


# ====================================================================== capture records, launch replays
def test_capture_records_the_device_work_and_each_launch_replays_it(cp):
    x = cp.asarray(np.arange(4, dtype=np.float32))
    src = cp.asarray(np.ones(4, np.float32))
    calls = []
    S.register_kernel("scale", lambda a, grid, block: a["x"].__imul__(a["a"]))
    k = cp.RawModule(code=_SRC).get_function("scale")
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        s.begin_capture()
        calls.append("python")
        x += src             # in place on memory from before the capture
        y = x * 2            # a fresh array
        k((1,), (32,), (x, np.int64(4), np.float32(10)))
        total = y.sum()      # a 0-d array
        g = s.end_capture()
    np.testing.assert_array_equal(x.get(), [0, 1, 2, 3])  # a capture runs nothing on older memory
    assert g is not None and calls == ["python"]
    g.launch(s)
    np.testing.assert_array_equal(x.get(), [10, 20, 30, 40])
    assert y.get().tolist() == [2, 4, 6, 8] and float(total) == 20.0
    src.fill(2.0)  # the graph reads the arrays as they are at launch
    g.launch(s)
    np.testing.assert_array_equal(x.get(), [120, 220, 320, 420])
    assert float(total) == 2 * (12 + 22 + 32 + 42) and calls == ["python"]
    assert S.snapshot()["graph_launches"] == 2
