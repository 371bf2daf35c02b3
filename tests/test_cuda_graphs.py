"""Whole-step CUDA graphs (gpugrad/cuda_graphs.py; its runtimes in gpugrad/backends/cuda/graphs.py).
Without a GPU the step logic (static buffers,
warm-up / capture / replay order, one training step per call, the shape, RNG, optimizer and
hyper-parameter checks) runs against the CPU emulation of the runtime; the GPU tests capture and
replay real CUDA graphs and compare with eager training."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn.functional as F
from gpugrad import nn, optim
from gpugrad import cuda_graphs as graphs
from gpugrad.training import training_step


def _batches(n: int, device: str = "cpu", batch: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(gg.tensor(rng.standard_normal((batch, 6)), dtype=gg.float32, device=device),
             gg.tensor(rng.standard_normal((batch, 2)), dtype=gg.float32, device=device)) for _ in range(n)]


def _setup(device: str = "cpu", dropout: float = 0.0):
    gg.manual_seed(0)
    model = nn.MLP([6, 32, 32, 2], dropout=dropout).to(device)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    return model, opt, training_step(model, opt, F.mse_loss)


def _graphed(step, opt, **kw):
    return graphs.GraphedStep(step, optimizers=[opt], _runtime="emulate", **kw)


def _assert_graphed_equals_eager(setup, data, warmup: int = 1, make=None, *, loss_rtol: float = 1e-6,
                                 rtol: float = 1e-5, atol: float = 1e-7, captured_from: int | None = None):
    """Two models from ``setup()``: one trained eagerly, one through ``make(step, optimizer)`` (default:
    the emulated graphed step with ``warmup``); equal losses (``loss_rtol``) and parameters (``rtol``,
    ``atol``) after the same steps. ``captured_from``: after call i, ``captured == (i >= captured_from)``.
    Returns the graphed step."""
    m_eager, _, s_eager = setup()
    eager = [s_eager(x, y).item() for x, y in data]
    m_graph, opt, s = setup()
    g = make(s, opt) if make is not None else _graphed(s, opt, warmup=warmup)
    losses = []
    for i, (x, y) in enumerate(data):
        losses.append(g(x, y).item())
        if captured_from is not None:
            assert g.captured == (i >= captured_from)
    np.testing.assert_allclose(losses, eager, rtol=loss_rtol)
    for p, q in zip(m_graph.parameters(), m_eager.parameters()):
        np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=rtol, atol=atol)
    return g


def test_graphed_training_equals_eager_step_for_step():
    _assert_graphed_equals_eager(_setup, _batches(7), warmup=2, rtol=1e-6, captured_from=2)


def test_static_loss_and_static_inputs():
    data = _batches(5)
    _, opt, s = _setup()
    seen = []

    def step(x, y):
        seen.append((x, y))
        return s(x, y)
    g = _graphed(step, opt, warmup=1)
    out = [g(x, y) for x, y in data[:2]]
    xs, ys = g.static_inputs
    assert all(a is xs and b is ys for a, b in seen)  # fn always sees the static buffers
    np.testing.assert_array_equal(xs.numpy(), data[1][0].numpy())
    l3 = g(*data[2])
    assert l3 is out[1]  # after capture: the same static loss tensor every call
    v3 = l3.item()
    l4 = g(*data[3])
    assert l4 is l3 and l4.item() != v3  # overwritten by the next replay


def test_shape_change_is_a_clear_error():
    _, opt, s = _setup()
    g = _graphed(s, opt)
    x, y = _batches(1)[0]
    g(x, y)
    with pytest.raises(ValueError, match=r"captured for x of shape \(16, 6\).*drop_last"):
        g(x[:10], y[:10])
    with pytest.raises(ValueError, match="fixed shapes"):
        g(x.double(), y)


def test_cpu_tensors_are_refused_without_emulation():
    _, opt, s = _setup()
    g = graphs.graphed_step(s, optimizers=[opt])
    x, y = _batches(1)[0]
    with pytest.raises(RuntimeError, match="CUDA graphs capture GPU work.*cpu"):
        g(x, y)
    with pytest.raises(TypeError, match="must be a Tensor"):
        g(np.zeros((16, 6)), y)


def test_dropout_is_refused():
    _, opt, s = _setup(dropout=0.5)
    g = _graphed(s, opt)
    x, y = _batches(1)[0]
    with pytest.raises(RuntimeError, match="random numbers.*same dropout mask"):
        g(x, y)


def test_dropout_drawn_only_in_the_captured_step_is_refused_too():
    _, opt, s = _setup()
    calls = [0]

    def step(x, y):
        calls[0] += 1
        if calls[0] == 2:  # the capture call
            x = F.dropout(x, 0.5, True)
        return s(x, y)
    g = _graphed(step, opt, warmup=1)
    data = _batches(2)
    g(*data[0])
    with pytest.raises(RuntimeError, match="the captured step"):
        g(*data[1])


def test_graph_unsafe_optimizer_and_hyperparameter_change():
    model = nn.MLP([6, 8, 2])
    with pytest.raises(ValueError, match="Adam is not graph-safe.*bias correction"):
        graphs.graphed_step(lambda x, y: x.sum(), optimizers=[optim.Adam(model.parameters())])
    _, opt, s = _setup()
    g = _graphed(s, opt, warmup=1)
    data = _batches(4)
    g(*data[0])
    g(*data[1])  # captured
    opt.param_groups[0]["lr"] = 0.01
    with pytest.raises(RuntimeError, match="hyper-parameters changed after capture"):
        g(*data[2])


def _ce_setup(device: str = "cpu", opt_name: str = "SGD", sizes=(6, 32, 32, 5), **opt_kw):
    gg.manual_seed(0)
    model = nn.MLP(list(sizes)).to(device)
    if opt_name == "SGD":
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = optim.Adam(model.parameters(), lr=1e-2, **opt_kw)
    return model, opt, training_step(model, opt, lambda out, y: F.cross_entropy(out, y, ignore_index=-1))


def _ce_batches(n: int, device: str = "cpu", batch: int = 16, features: int = 6, classes: int = 5):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        t = rng.integers(0, classes, batch)
        t[: i % 4] = -1  # a different number of ignored rows per batch: the mean's count changes
        out.append((gg.tensor(rng.standard_normal((batch, features)), dtype=gg.float32, device=device),
                    gg.tensor(t, dtype=gg.int64, device=device)))
    return out


def test_cross_entropy_step_graphed_equals_eager_with_varying_ignored_rows():
    """Cross-entropy + SGD graphed equals eager, with a different number of ignored rows per batch
    (on a GPU the mean's row count must stay on the device to survive replay)."""
    _assert_graphed_equals_eager(_ce_setup, _ce_batches(8), warmup=1)


def test_gemm_forcing_and_target_check_in_warmup():
    """Warm-up steps are eager (a bad target raises); the emulated runtime keeps the backend's own
    GEMMs (the real one forces the capturable handle: see the stand-in test below)."""
    from gpugrad.backends.cuda import cublas
    seen = []
    _, opt, s = _ce_setup()

    def step(x, y):
        seen.append(cublas.active())
        return s(x, y)
    g = _graphed(step, opt, warmup=1)
    x, y = _ce_batches(1)[0]
    bad = gg.tensor(np.full(16, 7), dtype=gg.int64)
    with pytest.raises(IndexError, match="cross_entropy: target 7 .* out of range for 5 classes"):
        g(x, bad)
    seen.clear()
    for _ in range(3):  # warm-up, capture (emulated: runs once), replay
        g(x, y)
    assert seen == [False, False, False] and g.captured and not cublas.active()


def test_capturable_optimizer_is_accepted_and_equals_eager():
    _, plain, s0 = _ce_setup(opt_name="Adam")
    with pytest.raises(ValueError, match="Adam is not graph-safe"):
        _graphed(s0, plain)
    _assert_graphed_equals_eager(lambda: _ce_setup(opt_name="Adam", capturable=True), _ce_batches(6), warmup=2)


def test_bad_step_function_and_warmup():
    with pytest.raises(ValueError, match="warmup must be >= 1"):
        graphs.graphed_step(lambda x, y: x.sum(), warmup=0)
    g = graphs.GraphedStep(lambda x, y: x * 2, _runtime="emulate")
    x, y = _batches(1)[0]
    with pytest.raises(TypeError, match="one-element Tensor"):
        g(x, y)


def test_capture_failure_names_the_usual_causes():
    calls = [0]

    def step(x, y):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("operation not permitted when stream is capturing")
        return (x * 0).sum()
    g = graphs.GraphedStep(step, warmup=1, _runtime="emulate")
    x, y = _batches(1)[0]
    g(x, y)
    with pytest.raises(RuntimeError, match=r"capturing the step failed.*\.item\(\)"):
        g(x, y)


# ---------------------------------------------------------------- the real runtime on the strict CuPy stand-in
@pytest.fixture
def real_runtime(monkeypatch):
    """The CuPy graph runtime (side stream, private pool, capture, launch) over the strict CuPy stand-in,
    which refuses cupy.matmul, host-to-device copies and device reads while a stream captures, as CuPy
    and CUDA do, records the captured work and replays it at each launch without the Python that issued
    it; the linear layers' GEMMs go through the fake cuBLAS binding (recorded in the graph too). Yields
    ``run(kernels)``: a context giving the stand-in module."""
    import contextlib
    from gpugrad.backends.cuda import state
    from tests.support import strict_cuda
    from tests.support.fake_cublas import FakeCublasBinding

    @contextlib.contextmanager
    def run(kernels: str = "xp"):
        fake = FakeCublasBinding(check_extents=False)  # the stand-in's device buffers are NumPy arrays
        with strict_cuda(kernels=kernels) as cp:
            state.runtime().binding = fake
            cp.fake_cublas = fake
            yield cp
    return run


def _graphed_vs_eager(run, kernels, sizes, loss_fn, opt_make, data, n_groups: int = 1):
    """Losses and parameters of eager steps and of graphed steps (real runtime, warm-up 2), on the stand-in."""
    out = {}
    with run(kernels) as cp:
        for mode in ("eager", "graphed"):
            gg.manual_seed(0)
            model = nn.MLP(list(sizes)).to("cuda")
            ps = list(model.parameters())
            groups = [{"params": ps[i::n_groups]} for i in range(n_groups)] if n_groups > 1 else ps
            opt = opt_make(groups)
            step = training_step(model, opt, loss_fn)
            if mode == "graphed":
                step = graphs.graphed_step(step, optimizers=[opt], warmup=2)
            losses = []
            for x, y in data():
                losses.append(step(x, y).item())
            out[mode] = (losses, [p.numpy() for p in model.parameters()])
        if cp is not None:
            assert step.captured and cp.counters.graph_launches == len(losses) - 2
    return out


_CE = lambda out, y: F.cross_entropy(out, y, ignore_index=-1)  # noqa: E731


@pytest.mark.parametrize("kernels", ["xp", "cuda_c"])
@pytest.mark.parametrize("loss_name,opt_name,sizes", [
    ("mse", "SGD", (12, 16, 16, 5)), ("mse", "Adam", (12, 16, 16, 5)), ("cross_entropy", "SGD", (12, 16, 16, 5)),
    ("cross_entropy", "SGD", (12,) + (16,) * 8 + (5,)), ("cross_entropy", "Adam", (12,) + (16,) * 8 + (5,))])
def test_real_runtime_graphed_step_equals_eager_on_the_strict_stand_in(real_runtime, kernels, loss_name, opt_name,
                                                                       sizes):
    """Warm-up, capture and replay of a whole training step through the real runtime equal eager steps,
    step for step; the 8-hidden-layer MLP has 18 parameters in one optimizer bucket (its gradient gather
    once copied a host table of pointers to the device: refused during capture)."""
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((32, 12)) for _ in range(5)]
    ys = [rng.integers(0, 5, 32) if loss_name == "cross_entropy" else rng.standard_normal((32, 5)) for _ in range(5)]
    for y in ys[1::2]:
        if loss_name == "cross_entropy":
            y[:3] = -1  # ignored rows change the mean's count from step to step

    def data():
        for x, y in zip(xs, ys):
            yield (gg.tensor(x, dtype=gg.float32, device="cuda"),
                   gg.tensor(y, dtype=gg.int64 if loss_name == "cross_entropy" else gg.float32, device="cuda"))
    opt_make = ((lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)) if opt_name == "SGD"
                else (lambda ps: optim.Adam(ps, lr=1e-2, capturable=True)))
    res = _graphed_vs_eager(real_runtime, kernels, sizes, _CE if loss_name == "cross_entropy" else F.mse_loss,
                            opt_make, data)
    (le, pe), (lg, pg) = res["eager"], res["graphed"]
    np.testing.assert_allclose(lg, le, rtol=1e-5)
    assert len(set(lg)) == len(lg)  # every call a new step (not the capture's loss again)
    for a, b in zip(pg, pe):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_real_runtime_captured_step_reads_nothing_and_gemms_go_through_the_handle(real_runtime):
    """During capture: no cupy.matmul, no host read, no host-to-device copy (18 parameters, two param groups);
    every GEMM of a step through the capturable handle (3 forward, 2 input-gradient, 3 weight-gradient)."""
    with real_runtime("cuda_c") as cp:
        gg.manual_seed(0)
        model = nn.MLP([12] + [16] * 8 + [5]).to("cuda")
        ps = list(model.parameters())
        opt = optim.SGD([{"params": ps[:9]}, {"params": ps[9:], "lr": 0.05}], lr=0.1, momentum=0.9)
        g = graphs.graphed_step(training_step(model, opt, F.cross_entropy), optimizers=[opt], warmup=2)
        rng = np.random.default_rng(0)
        x = gg.tensor(rng.standard_normal((32, 12)), dtype=gg.float32, device="cuda")
        y = gg.tensor(rng.integers(0, 5, 32), dtype=gg.int64, device="cuda")
        g(x, y)
        g(x, y)
        per_step = 3 * 9 - 1
        assert len(cp.fake_cublas.calls) == 2 * per_step
        cp.reset_counters()
        g(x, y)  # capture, then the first launch
        assert g.captured and len(cp.fake_cublas.calls) == 3 * per_step  # captured once, replayed by the graph
        counts = cp.snapshot()
        assert counts["gemm_calls"] == 0 and counts["device_to_host"] == 0 and counts["host_to_device"] == 0
        assert counts["graph_launches"] == 1


def test_real_runtime_replayed_steps_still_report_bad_targets(real_runtime):
    """Out-of-range targets in a replayed step (no Python runs for it) still raise at the next
    synchronisation, naming the op and the values; good batches after that train on."""
    with real_runtime("cuda_c"):
        gg.manual_seed(0)
        model = nn.MLP([6, 16, 5]).to("cuda")
        opt = optim.SGD(model.parameters(), lr=0.1)
        g = graphs.graphed_step(training_step(model, opt, F.cross_entropy), optimizers=[opt], warmup=1)
        rng = np.random.default_rng(0)
        x = gg.tensor(rng.standard_normal((8, 6)), dtype=gg.float32, device="cuda")
        good = gg.tensor(rng.integers(0, 5, 8), dtype=gg.int64, device="cuda")
        bad = gg.tensor(np.array([0, 1, 7, 2, 3, 4, 9, 1]), dtype=gg.int64, device="cuda")
        g(x, good).item()
        g(x, good).item()  # captured and launched
        g(x, good).item()  # replayed
        loss = g(x, bad)   # replayed: the kernel folds 7 and 9 into the error record; no Python checks them
        with pytest.raises(IndexError, match=r"cross_entropy: targets from 7 to 9 out of range.*5 classes"):
            loss.item()
        assert np.isfinite(g(x, good).item())  # the record was cleared; the next replay is clean
        g(x, bad)
        with pytest.raises(IndexError, match="target"):
            gg.cuda.synchronize()



def test_real_runtime_replayed_steps_report_bad_indices_as_the_cpu(real_runtime):
    """An embedding index out of range in a replayed step raises IndexRangeError at the next
    synchronisation, worded as the CPU's index check (not as a class target)."""
    from gpugrad._errors import IndexRangeError
    with real_runtime("cuda_c"):
        gg.manual_seed(0)
        emb, head = nn.Embedding(10, 4).to("cuda"), nn.Linear(4, 3).to("cuda")
        opt = optim.SGD([*emb.parameters(), *head.parameters()], lr=0.1)

        def step(i, y):
            opt.zero_grad()
            loss = F.mse_loss(head(emb(i)).sum(dim=1), y)
            loss.backward()
            opt.step()
            return loss
        g = graphs.graphed_step(step, optimizers=[opt], warmup=1)
        y = gg.zeros(4, device="cuda")
        good = gg.tensor(np.array([0, 3, 9, 1]), device="cuda")
        for _ in range(3):  # warm-up, capture + launch, replay
            g(good, y).item()
        g(gg.tensor(np.array([0, 12, 9, 1]), device="cuda"), y)  # replayed: no Python checks the indices
        with pytest.raises(IndexRangeError, match=r"embedding: index 12 out of range, found on the device by "
                           r"embedding \(dimension 0 with size 10"):
            gg.cuda.synchronize()
        assert np.isfinite(g(good, y).item())  # the record was cleared

# ---------------------------------------------------------------- on a GPU: real graphs
@pytest.mark.gpu
def test_gpu_graphed_step_equals_eager():
    g = _assert_graphed_equals_eager(lambda: _setup("cuda"), _batches(8, device="cuda", batch=256),
                                     make=lambda s, opt: graphs.graphed_step(s, optimizers=[opt]),
                                     loss_rtol=1e-5, rtol=1e-5, atol=1e-6)
    assert g.captured


@pytest.mark.gpu
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
@pytest.mark.parametrize("tf32", [False, True])
def test_gpu_graphed_cross_entropy_step_equals_eager(opt_name, tf32):
    """Batch 256 x 8 x 512 (the benchmark's shape): forward, cross-entropy, backward and the optimizer
    step captured into one graph; 8 steps equal eager steps."""
    kw = {"capturable": True} if opt_name == "Adam" else {}
    sizes = (512,) + (512,) * 8 + (10,)
    data = _ce_batches(8, device="cuda", batch=256, features=512, classes=10)
    tol = 5e-3 if tf32 else 1e-5
    with gg.cuda.allow_tf32(tf32):
        g = _assert_graphed_equals_eager(lambda: _ce_setup("cuda", opt_name, sizes, **kw), data,
                                         make=lambda s, opt: graphs.graphed_step(s, optimizers=[opt]),
                                         loss_rtol=tol, rtol=tol, atol=tol)
    assert g.captured


@pytest.mark.gpu
def test_gpu_graphed_step_refuses_dropout_and_shape_change():
    _, opt, s = _setup("cuda", dropout=0.1)
    x, y = _batches(1, device="cuda")[0]
    with pytest.raises(RuntimeError, match="random numbers"):
        graphs.graphed_step(s, optimizers=[opt])(x, y)
    _, opt, s = _setup("cuda")
    g = graphs.graphed_step(s, optimizers=[opt], warmup=1)
    g(x, y)
    g(x, y)
    with pytest.raises(ValueError, match="fixed shapes"):
        g(x[:8], y[:8])
