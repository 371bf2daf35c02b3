"""The CUDA backend's own logic, run without a GPU: ``CUDABackend`` with NumPy standing in for CuPy and
the simulator running its kernels. Checks what the GPU path does around the kernels (which method
launches what, argument order, in-place contracts, what is saved, fallbacks to the generic code) against
the CPU backend, and runs real ops (fused linear, cross-entropy, optimizers) on a device named "cuda".

Only the CuPy calls themselves (allocation, CAI hand-over to Numba, streams, cuBLAS) are not exercised
here; tests/test_cuda.py covers them on a real GPU."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad._device import device
from gpugrad.backends import _instances
from gpugrad.backends.base import Backend
from gpugrad.backends.cpu import CPUBackend
from gpugrad.backends.cuda import launcher as _kernels
from gpugrad.backends.cuda import state as _state
from gpugrad.backends.cuda.backend import CUDABackend
from gpugrad.kernels.activations import ACTIVATIONS, saves

ACTS = list(ACTIVATIONS)
OUTPUT_SAVED = tuple(a for a in ACTS if saves(a, 0.2) == "y")  # with 0.2 as every activation's first parameter


class SimLauncher(_kernels.Launcher):
    """Numba launches on NumPy arrays (the simulator), small grids."""

    def __init__(self) -> None:
        self.rt = _state.Runtime()  # its own fallbacks
        self._streams = {}
        self.sms, self.max_blocks, self.target_blocks = 2, 3, 5
        self.launches: list[str] = []

    def _current_device(self) -> int:
        return 0

    def _nb_stream(self):
        return None

    def _nb(self, a):
        return a

    def run(self, op, dtype, numba_call, cuda_c_call, *arrays):
        ok = super().run(op, dtype, numba_call, cuda_c_call, *arrays)
        if ok:
            self.launches.append(op)
        return ok


class _NoDevice:
    """``with backend._gpu:`` without CuPy (NumPy arrays have no device)."""

    id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def synchronize(self) -> None:
        pass


class SimCUDABackend(CUDABackend):
    name = "cuda"

    def __init__(self, dev) -> None:
        Backend.__init__(self, dev)
        self.xp = np
        self._launch = SimLauncher()
        self.state = self._launch.rt.device(0)
        self._gpu = _NoDevice()
        self._cpu = CPUBackend(device("cpu"))

    def asarray(self, data, dtype=None):
        return np.asarray(data, dtype=dtype)

    def _to_host(self, a):
        return a

    def from_numpy(self, a):
        return a

    def erf(self, x):
        return self._cpu.erf(x)

    def index_add(self, target, index, values):
        np.add.at(target, index, values)

    def synchronize(self):
        if self._pending:
            self.raise_device_errors()

    def memory_stats(self):
        return {}

    def gather_flat(self, arrays, out):  # a CUDA C kernel only (the strict stand-in's tests run it)
        Backend.gather_flat(self, arrays, out)


@pytest.fixture
def be(monkeypatch):
    monkeypatch.setenv("GPUGRAD_STRICT_KERNELS", "1")
    monkeypatch.setitem(_kernels._state, "impl", "numba")
    dev = device("cuda")
    backend = SimCUDABackend(dev)
    old = _instances.get(dev)
    _instances[dev] = backend
    yield backend
    if old is None:
        _instances.pop(dev, None)
    else:
        _instances[dev] = old


def _generic():
    return CPUBackend(device("cpu"))


def _close(a, b, dt):
    tol = 1e-5 if np.dtype(dt) == np.float32 else 1e-12
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


def _generic_call(name, *args, **kw):
    """The base-class (generic xp) implementation of a backend method, on NumPy."""
    cpu = _generic()
    return getattr(Backend, name)(cpu, *args, **kw)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTS)
def test_bias_act_contract(be, act, dt, rng):
    z = rng.standard_normal((5, 6)).astype(dt)
    b = rng.standard_normal(6).astype(dt)
    y_ref, s_ref = _generic_call("bias_act", z.copy(), b, act, 0.2)
    z_in = z.copy()
    y, saved = be.bias_act(z_in, b, act, 0.2)
    _close(y, y_ref, dt)
    if act == "identity":
        assert saved is None and y is z_in
    elif act in OUTPUT_SAVED:
        assert y is z_in and saved is y  # in place, y saved
    else:
        assert saved is z_in and y is not z_in  # GELU saves z + b
        _close(saved, s_ref, dt)
    assert be._launch.launches == ["bias_act"]


def test_bias_act_identity_without_bias_launches_nothing(be, rng):
    z = rng.standard_normal((3, 4)).astype(np.float32)
    y, saved = be.bias_act(z, None, "identity")
    assert y is z and saved is None and be._launch.launches == []


def test_bias_act_unsuitable_inputs_take_the_generic_path(be, rng):
    z = np.asfortranarray(rng.standard_normal((4, 3)).astype(np.float32))
    y, _ = be.bias_act(z, None, "relu")
    _close(y, np.maximum(z, 0), np.float32)
    assert be._launch.launches == []


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_act_bias_backward_matches_generic(be, act, dt, with_bias, rng):
    z = rng.standard_normal((7, 5)).astype(dt)
    y, saved = _generic_call("bias_act", z.copy(), None, act, 0.2)
    dy = rng.standard_normal((7, 5)).astype(dt)
    dz_ref, db_ref = _generic_call("act_bias_backward", dy, saved, act, with_bias, 0.2)
    dz, db = be.act_bias_backward(dy, saved, act, with_bias, 0.2)
    _close(dz, dz_ref, dt)
    if with_bias:
        _close(db, db_ref, dt)
    else:
        assert db is None
    launched = act != "identity" or with_bias
    assert be._launch.launches == (["act_bias_backward"] if launched else [])


def test_act_bias_backward_accepts_broadcast_gradients(be):
    dy = np.broadcast_to(np.float32(0.5), (4, 3))  # what mean()'s backward hands down: zero strides
    y = np.array([[0, 1, 2]] * 4, np.float32)
    dz, db = be.act_bias_backward(dy, y, "relu", True)
    np.testing.assert_array_equal(dz, [[0, 0.5, 0.5]] * 4)
    np.testing.assert_array_equal(db, [0, 2, 2])


@pytest.mark.parametrize("act", [a for a in ACTS if a != "identity"])
def test_act_forward_backward_any_shape(be, act, rng):
    x = rng.standard_normal((2, 3, 4)).transpose(2, 0, 1)  # non-contiguous 3-D
    y = be.act_forward(x, act, 0.1)
    _close(y, _generic_call("act_forward", x, act, 0.1), np.float64)
    g = rng.standard_normal(y.shape)
    saved = y if act in OUTPUT_SAVED else x
    _close(be.act_backward(g, saved, act, 0.1), _generic_call("act_backward", g, saved, act, 0.1), np.float64)
    xc = np.ascontiguousarray(x)
    out = be.act_forward(xc, act, 0.1, out=xc)
    assert out is xc
    _close(xc, y, np.float64)
    assert be._launch.launches == ["act_forward", "act_backward", "act_forward"]


def test_softmax_cross_entropy_matches_generic(be, rng):
    x = (rng.standard_normal((6, 5)) * 4).astype(np.float32)
    t = rng.integers(0, 5, 6)
    loss, probs = be.softmax_cross_entropy(x, t)
    l_ref, p_ref = _generic_call("softmax_cross_entropy", x, t)
    _close(loss, l_ref, np.float32)
    _close(probs, p_ref, np.float32)


@pytest.mark.parametrize("g_rows,mul,smoothing", [(1, 1 / 5, 0.0), (6, 1.0, 0.0), (1, 1.0, 0.2)])
def test_cross_entropy_backward_kernel_and_generic_agree(be, g_rows, mul, smoothing, rng):
    _, p = _generic_call("softmax_cross_entropy", rng.standard_normal((6, 4)), rng.integers(0, 4, 6))
    t = rng.integers(0, 4, 6)
    t[1] = -100
    g = rng.standard_normal(g_rows) if g_rows > 1 else np.asarray(rng.standard_normal())
    d = be.cross_entropy_backward(p, t, g, mul, -100, smoothing)
    assert be._launch.launches == ["cross_entropy_backward"]
    _kernels._state["impl"] = "xp"  # restored by the fixture
    d_generic = be.cross_entropy_backward(p, t, g, mul, -100, smoothing)
    assert be._launch.launches == ["cross_entropy_backward"]
    _close(d, d_generic, np.float64)
    assert np.all(d[1] == 0)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("capturable", [False, True])
def test_optim_step_matches_generic(be, name, capturable, rng):
    from tests.support import optim_examples as ox
    from gpugrad.kernels.optim_rules import RULES
    rule = RULES[name]
    options = ox.examples(rule)[-3]
    n = 11
    arrays = ox.example_arrays(rule, options, n, rng, np.float32)
    ref = {k: v.copy() for k, v in arrays.items()}
    kw = ox.step_args(rule, options, 2, capturable, np, np.float32)
    be.optim_step(rule, arrays, 1, 10, options, **kw)
    _generic_call("optim_step", rule, ref, 1, 10, options, **kw)
    for k in arrays:
        assert np.all(np.isfinite(arrays[k]))
        _close(arrays[k], ref[k], np.float32)
    assert be._launch.launches == [f"{name}_step"]


def test_a_failing_kernel_falls_back_once_with_warnings(be, monkeypatch, rng):
    monkeypatch.delenv("GPUGRAD_STRICT_KERNELS")
    fallbacks = be._launch.rt.fallbacks

    def broken(*a, **k):
        raise RuntimeError("planted failure")

    z = rng.standard_normal((3, 4)).astype(np.float32)
    calls = []
    with pytest.warns(RuntimeWarning, match="planted failure.*trying the cuda_c kernel"):
        ok = be._launch.run("bias_act", z.dtype, broken, lambda a: calls.append(a), z)
    assert ok and calls and ("bias_act", "float32", "numba") in fallbacks  # numba failed, CUDA C ran
    with pytest.warns(RuntimeWarning) as rec:
        ok = be._launch.run("act_forward", z.dtype, broken, broken, z)
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 2 and "trying the cuda_c kernel" in msgs[0] and "plain CuPy ops" in msgs[1]
    assert not ok and {("act_forward", "float32", "numba"), ("act_forward", "float32", "cuda_c")} <= \
        set(fallbacks)
    assert not be._launch.run("act_forward", z.dtype, broken, broken, z)  # no second try, no second warning
    monkeypatch.setenv("GPUGRAD_STRICT_KERNELS", "1")
    fallbacks.clear()
    with pytest.raises(RuntimeError, match="planted failure"):
        be._launch.run("bias_act", z.dtype, broken, broken, z)


# ------------------------------------------------------------------ real ops on the "cuda" device
@pytest.mark.parametrize("act", ACTS)
def test_fused_linear_on_cuda_matches_cpu(be, act, rng):
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    grads = {}
    for dev in ("cpu", "cuda"):
        ts = [gg.tensor(a, dtype=gg.float64, device=dev, requires_grad=True) for a in (x, w, b)]
        y = gg.nn.functional.fused_linear(*ts, activation=act)
        assert y.device == device(dev)
        (y * y).sum().backward()
        grads[dev] = [y.numpy()] + [t.grad.numpy() for t in ts]
    for a, c in zip(grads["cuda"], grads["cpu"]):
        _close(a, c, np.float64)
    assert "bias_act" in be._launch.launches and "act_bias_backward" in be._launch.launches or act == "identity"


def test_fused_linear_negative_leaky_slope_on_cuda(be, rng):
    """With a negative slope the output's sign no longer tells the branch: z must be saved."""
    x, w, b = rng.standard_normal((6, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    grads = {}
    for dev in ("cpu", "cuda"):
        ts = [gg.tensor(a, dtype=gg.float64, device=dev, requires_grad=True) for a in (x, w, b)]
        y = gg.nn.functional.fused_linear(*ts, activation="leaky_relu", negative_slope=-0.3)
        (y * y).sum().backward()
        grads[dev] = [y.numpy()] + [t.grad.numpy() for t in ts]
    for a, c in zip(grads["cuda"], grads["cpu"]):
        _close(a, c, np.float64)
    ts = [gg.tensor(a, dtype=gg.float64, device="cuda", requires_grad=True) for a in (x, w, b)]
    assert gg.autograd.gradcheck(
        lambda x, w, b: gg.nn.functional.fused_linear(x, w, b, activation="leaky_relu", negative_slope=-0.3), ts)


def test_fused_linear_gelu_gradcheck_on_cuda(be, rng):
    ts = [gg.tensor(rng.standard_normal(s), dtype=gg.float64, device="cuda", requires_grad=True)
          for s in ((2, 3), (2, 3), (2,))]
    assert gg.autograd.gradcheck(lambda x, w, b: gg.nn.functional.fused_linear(x, w, b, activation="gelu"), ts)


def test_cross_entropy_on_cuda_matches_cpu(be, rng):
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, 5)
    out = {}
    for dev in ("cpu", "cuda"):
        xt = gg.tensor(x, dtype=gg.float64, device=dev, requires_grad=True)
        loss = gg.nn.functional.cross_entropy(xt, gg.tensor(t, device=dev), label_smoothing=0.1)
        loss.backward()
        out[dev] = (loss.item(), xt.grad.numpy())
    assert abs(out["cuda"][0] - out["cpu"][0]) < 1e-12
    _close(out["cuda"][1], out["cpu"][1], np.float64)
    assert "softmax_cross_entropy" in be._launch.launches


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_training_steps_on_cuda_match_cpu(be, opt, rng):
    nn = pytest.importorskip("gpugrad.nn")
    optim = pytest.importorskip("gpugrad.optim")
    x = rng.standard_normal((6, 4))
    t = rng.integers(0, 3, 6)
    final = {}
    for dev in ("cpu", "cuda"):
        gg.manual_seed(3)
        model = nn.MLP([4, 5, 3], activation="tanh").to(gg.float64)
        model.to(dev)
        o = optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if opt == "sgd" else \
            optim.Adam(model.parameters(), lr=0.01)
        xt, tt = gg.tensor(x, dtype=gg.float64, device=dev), gg.tensor(t, device=dev)
        for _ in range(3):
            o.zero_grad()
            gg.nn.functional.cross_entropy(model(xt), tt).backward()
            o.step()
        final[dev] = [p.numpy().copy() for p in model.parameters()]
    for a, c in zip(final["cuda"], final["cpu"]):
        _close(a, c, np.float64)
    assert be._launch.launches.count(opt + "_step") == 3  # one launch per step for all four parameters


def test_one_optimizer_over_two_devices_steps_each_bucket_once(be, rng):
    """Parameters on cpu and on "cuda" in one param group: one bucket (one launch) per device, same
    result as two optimizers."""
    optim = pytest.importorskip("gpugrad.optim")
    a0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(5)
    ga, gb = rng.standard_normal((3, 4)), rng.standard_normal(5)
    a = gg.tensor(a0, device="cpu", requires_grad=True)
    b = gg.tensor(b0, device="cuda", requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    ra, rb = gg.tensor(a0, requires_grad=True), gg.tensor(b0, requires_grad=True)
    ref = optim.Adam([ra, rb], lr=0.1)
    for _ in range(2):
        a.grad, b.grad = gg.tensor(ga), gg.tensor(gb, device="cuda")
        ra.grad, rb.grad = gg.tensor(ga), gg.tensor(gb)
        opt.step()
        ref.step()
    assert be._launch.launches == ["adam_step"] * 2  # the cuda bucket; the cpu bucket ran on the CPU backend
    _close(a.numpy(), ra.numpy(), np.float64)
    _close(b.numpy(), rb.numpy(), np.float64)
    assert opt.state[b]["exp_avg"].device == gg.device("cuda")


# ---------------------------------------------------------------- lazy device-side target validation
def _ce_step(dev, t, ignore_index=-100, loss_fn="cross_entropy"):
    x = gg.tensor(np.linspace(-1, 1, len(t) * 4).reshape(len(t), 4), dtype=gg.float64, device=dev,
                  requires_grad=True)
    tt = gg.tensor(np.asarray(t, dtype=np.int64), device=dev)
    if loss_fn == "nll_loss":
        loss = gg.nn.functional.nll_loss(gg.nn.functional.log_softmax(x, dim=1), tt, ignore_index=ignore_index)
    else:
        loss = gg.nn.functional.cross_entropy(x, tt, ignore_index=ignore_index)
    loss.backward()  # a whole training step: nothing reads the device
    return loss, x


@pytest.mark.parametrize("impl", ["numba", "xp"])
@pytest.mark.parametrize("loss_fn", ["cross_entropy", "nll_loss"])
def test_bad_targets_on_cuda_are_reported_at_the_next_sync_not_in_the_step(be, impl, loss_fn, monkeypatch):
    monkeypatch.setitem(_kernels._state, "impl", impl)
    monkeypatch.delenv("GPUGRAD_SYNC_DEBUG", raising=False)
    loss, _ = _ce_step("cuda", [0, 5, 2, -100, 7, -3], loss_fn=loss_fn)  # no error inside the step
    with pytest.raises(IndexError, match=rf"{loss_fn}: targets from -3 to 7 out of range.*4 classes "
                                         r"\(valid: 0 to 3, or ignore_index=-100\).*GPUGRAD_SYNC_DEBUG"):
        loss.item()
    assert loss.item() == loss.item()  # reported once; the record is reset
    loss, _ = _ce_step("cuda", [0, 1, 2, 3])
    gg.cuda.synchronize() if gg.cuda.is_available() else be.synchronize()
    _ce_step("cuda", [1, 4])
    with pytest.raises(IndexError, match=r"target 4 out of range"):
        be.synchronize()


def test_ignored_targets_are_not_errors_on_cuda(be):
    loss, x = _ce_step("cuda", [-1, 2, 3], ignore_index=-1)
    loss_cpu, x_cpu = _ce_step("cpu", [-1, 2, 3], ignore_index=-1)
    assert abs(loss.item() - loss_cpu.item()) < 1e-12
    _close(x.grad.numpy(), x_cpu.grad.numpy(), np.float64)


@pytest.mark.parametrize("mode", ["env", "anomaly"])
def test_sync_debug_mode_raises_at_the_op_on_cuda(be, mode, monkeypatch):
    if mode == "env":
        monkeypatch.setenv("GPUGRAD_SYNC_DEBUG", "1")
        with pytest.raises(IndexError, match=r"cross_entropy: target 5 at position 1 is out of range for 4"):
            _ce_step("cuda", [0, 5])
    else:
        with gg.autograd.detect_anomaly():
            with pytest.raises(IndexError, match=r"cross_entropy: target 5 at position 1 is out of range for 4"):
                _ce_step("cuda", [0, 5])
    assert be._pending == {}


def test_bad_targets_on_cpu_still_raise_at_the_op():
    with pytest.raises(IndexError, match=r"cross_entropy: target 5 at position 1 is out of range for 4"):
        _ce_step("cpu", [0, 5])


# ------------------------------------------------------------------ strict_cuda's runtime state
def test_strict_cuda_runs_on_a_fresh_runtime_state_and_restores_the_outer_one(rng):
    """Every cache that holds CuPy objects (probe, compiled modules, kernel handles, launch plans,
    fallbacks, allocator, cuBLAS binding and handles, the experimental paths') lives in one runtime state
    object: strict_cuda swaps in a fresh one and puts the outer one back untouched, so no stand-in handle
    survives it and no real one reaches the stand-in."""
    from tests.support import strict_cuda
    outer = _state.runtime()
    marker = object()
    dev0 = outer.device(0)
    saved = (outer.probe, dict(outer.fallbacks), dict(dev0.modules), dict(dev0.plans))
    outer.fallbacks[("outer", "float32", "cuda_c")] = "marker"
    dev0.modules["outer"] = dev0.plans["outer"] = marker
    try:
        before = (outer.probe, dict(outer.fallbacks), dict(dev0.modules), dict(dev0.plans), dict(outer.devices))
        with strict_cuda():
            inner = _state.runtime()
            assert inner is not outer and inner.probe is None and not inner.devices and not inner.fallbacks
            w = gg.tensor(rng.standard_normal((4, 3)), dtype=gg.float32, device="cuda", requires_grad=True)
            x = gg.tensor(rng.standard_normal((5, 3)), dtype=gg.float32, device="cuda")
            opt = gg.optim.Adam([w], lr=0.01)
            gg.nn.functional.fused_linear(x, w, None, activation="relu").sum().backward()
            opt.step()
            d = inner.device(0)
            assert gg.backends.get_backend("cuda").state is d
            assert inner.probe[0] and d.modules and d.functions and d.plans, (inner.probe, d.modules, d.plans)
            assert inner.allocator_installed
        assert _state.runtime() is outer
        assert (outer.probe, dict(outer.fallbacks), dict(dev0.modules), dict(dev0.plans), dict(outer.devices)) \
            == before
    finally:
        outer.probe = saved[0]
        outer.fallbacks.clear()
        outer.fallbacks.update(saved[1])
        for have, old in ((dev0.modules, saved[2]), (dev0.plans, saved[3])):
            have.clear()
            have.update(old)
