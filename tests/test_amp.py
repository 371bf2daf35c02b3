"""Mixed precision: GradScaler (dynamic loss scaling, PyTorch's API) and float32 master weights for
a float16 model. Runs on CPU (NumPy float16)."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn.functional as F
from gpugrad import amp, nn, optim


def _blobs(n: int = 192, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 0.0, 0.0, 0.0], [-1.0, 1.7, 0.0, 0.0], [-1.0, -1.7, 0.0, 0.0]])
    y = rng.integers(0, 3, n)
    x = centers[y] + 0.6 * rng.standard_normal((n, 4))
    return x.astype(np.float32), y.astype(np.int64)


def _param_with_grad(values, grad_values):
    p = gg.tensor(np.asarray(values, np.float32), requires_grad=True)
    p.grad = gg.tensor(np.asarray(grad_values, np.float32))
    return p


# ---------------------------------------------------------------- GradScaler unit behaviour
def test_scale_multiplies_and_casts_half_loss_to_float32():
    s = amp.GradScaler(init_scale=1024.0)
    loss = gg.tensor(1.5)
    assert s.scale(loss).item() == pytest.approx(1536.0)
    out = s.scale(gg.tensor(2.0, dtype=gg.float16))
    assert out.dtype == gg.float32 and out.item() == pytest.approx(2048.0)
    a, b = s.scale([gg.tensor(1.0), gg.tensor(3.0)])
    assert (a.item(), b.item()) == (1024.0, 3072.0)


def test_unscale_divides_grads_and_step_runs():
    p = _param_with_grad([1.0, 2.0], [512.0, -1024.0])
    opt = optim.SGD([p], lr=1.0)
    s = amp.GradScaler(init_scale=512.0)
    s.unscale_(opt)
    np.testing.assert_allclose(p.grad.numpy(), [1.0, -2.0])
    s.step(opt)  # does not unscale again
    np.testing.assert_allclose(p.numpy(), [0.0, 4.0])
    s.update()
    assert s.get_scale() == 512.0  # one good step, growth_interval not reached


def test_overflow_skips_step_and_backs_off():
    p = _param_with_grad([1.0, 2.0], [np.inf, 1.0])
    opt = optim.SGD([p], lr=1.0)
    s = amp.GradScaler(init_scale=2.0 ** 16)
    assert s.step(opt) is None
    np.testing.assert_array_equal(p.numpy(), [1.0, 2.0])  # parameters untouched
    s.update()
    assert s.get_scale() == 2.0 ** 15
    # NaN is treated the same way
    p.grad = gg.tensor(np.array([np.nan, 0.0], np.float32))
    s.step(opt)
    s.update()
    np.testing.assert_array_equal(p.numpy(), [1.0, 2.0])
    assert s.get_scale() == 2.0 ** 14


def test_growth_after_interval_and_tracker_resets_on_overflow():
    p = _param_with_grad([0.0], [0.0])
    opt = optim.SGD([p], lr=0.0)
    s = amp.GradScaler(init_scale=8.0, growth_interval=3)
    for _ in range(2):
        p.grad = gg.tensor(np.array([1.0], np.float32))
        s.step(opt)
        s.update()
    assert s.get_scale() == 8.0
    p.grad = gg.tensor(np.array([np.inf], np.float32))
    s.step(opt)
    s.update()
    assert s.get_scale() == 4.0 and s.state_dict()["_growth_tracker"] == 0
    for _ in range(3):
        p.grad = gg.tensor(np.array([1.0], np.float32))
        s.step(opt)
        s.update()
    assert s.get_scale() == 8.0


def test_misuse_errors():
    p = _param_with_grad([1.0], [1.0])
    opt = optim.SGD([p], lr=0.1)
    s = amp.GradScaler()
    s.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        s.unscale_(opt)
    s.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        s.step(opt)
    s.update()
    with pytest.raises(RuntimeError, match="no inf checks"):
        s.update()
    q = gg.tensor(np.ones(2, np.float32), requires_grad=True)
    with pytest.raises(RuntimeError, match="no parameter has a gradient"):
        s.step(optim.SGD([q], lr=0.1))
    h = gg.tensor(np.ones(2, np.float16), requires_grad=True)
    h.grad = gg.tensor(np.ones(2, np.float16))
    with pytest.raises(ValueError, match="MasterWeights"):
        amp.GradScaler().unscale_(optim.SGD([h], lr=0.1))


def test_state_dict_roundtrip_and_disabled():
    s = amp.GradScaler(init_scale=123.0, growth_interval=7)
    s._growth_tracker = 3
    t = amp.GradScaler()
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == {"scale": 123.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 7,
                              "_growth_tracker": 3}
    with pytest.raises(RuntimeError, match="empty"):
        t.load_state_dict({})
    off = amp.GradScaler(enabled=False)
    loss = gg.tensor(2.0)
    assert off.scale(loss) is loss and off.get_scale() == 1.0 and off.state_dict() == {}
    p = _param_with_grad([1.0], [1.0])
    off.step(optim.SGD([p], lr=1.0))
    np.testing.assert_allclose(p.numpy(), [0.0])


# ---------------------------------------------------------------- master weights
def test_master_weights_keep_updates_that_float16_rounds_away():
    # 1 + 1e-4 == 1 in float16 (spacing 2**-10 ~ 1e-3): a pure float16 update is lost every step,
    # the float32 master accumulates it.
    w16 = gg.tensor(np.ones(4, np.float16), requires_grad=True)
    master = amp.MasterWeights([w16])
    opt = optim.SGD(master.parameters(), lr=1e-4)
    plain = gg.tensor(np.ones(4, np.float16), requires_grad=True)
    opt_plain = optim.SGD([plain], lr=1e-4)
    for _ in range(20):
        for t in (w16, plain):
            t.grad = gg.tensor(-np.ones(4, np.float16))
        master.step(opt)
        opt_plain.step()
    np.testing.assert_array_equal(plain.numpy(), np.ones(4, np.float16))  # stuck
    np.testing.assert_allclose(master.master_params[0].numpy(), 1.002, rtol=1e-6)
    assert w16.dtype == gg.float16 and float(w16.numpy()[0]) == pytest.approx(1.002, abs=1e-3)


def test_loss_scaling_rescues_gradients_that_underflow_in_float16():
    x = gg.tensor(np.full(8, 0.5, np.float16))
    w = gg.tensor(np.ones(8, np.float16), requires_grad=True)

    def loss_fn():
        return (w * x).sum().float() * 1e-8  # d/dw = 5e-9: below float16's smallest subnormal (6e-8)

    loss_fn().backward()
    assert not np.any(w.grad.numpy())  # flushed to zero without scaling
    w.grad = None
    master = amp.MasterWeights([w])
    opt = optim.SGD(master.parameters(), lr=1.0)
    s = amp.GradScaler(init_scale=2.0 ** 16)
    s.scale(loss_fn()).backward()
    master.grads_to_master()
    s.unscale_(opt)
    np.testing.assert_allclose(master.master_params[0].grad.numpy(), 5e-9, rtol=1e-3)


def test_master_weights_errors_and_state_dict():
    with pytest.raises(ValueError, match="empty"):
        amp.MasterWeights([])
    m16 = nn.Linear(3, 2).half()
    mw = amp.MasterWeights(m16.parameters())
    assert all(p.dtype == gg.float32 for p in mw.parameters())
    sd = mw.state_dict()
    sd["master.0"] = gg.tensor(np.full((2, 3), 0.25, np.float32))
    mw.load_state_dict(sd)
    np.testing.assert_array_equal(m16.weight.numpy(), np.full((2, 3), 0.25, np.float16))
    with pytest.raises(ValueError, match="shape"):
        mw.load_state_dict({"master.0": np.zeros((3, 3)), "master.1": np.zeros(2)})


# ---------------------------------------------------------------- end to end: float16 training
def _train(dtype, steps: int = 60, init_scale: float = 2.0 ** 16, seed: int = 0):
    x_np, y_np = _blobs()
    gg.manual_seed(seed)
    ref = nn.MLP([4, 32, 32, 3])
    model = ref if dtype == gg.float32 else nn.MLP([4, 32, 32, 3])
    if model is not ref:
        model.load_state_dict(ref.state_dict())
        model.half()
    y = gg.tensor(y_np)
    losses, scales = [], []
    if dtype == gg.float32:
        x = gg.tensor(x_np)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return model, losses, scales, None
    x = gg.tensor(x_np).half()
    master = amp.MasterWeights(model.parameters())
    opt = optim.SGD(master.parameters(), lr=0.1, momentum=0.9)
    scaler = amp.GradScaler(init_scale=init_scale)
    for _ in range(steps):
        loss = F.cross_entropy(model(x).float(), y)
        model.zero_grad()
        scaler.scale(loss).backward()
        master.step(opt, scaler)
        scaler.update()
        losses.append(loss.item())
        scales.append(scaler.get_scale())
    return model, losses, scales, master


def test_float16_mlp_trains_with_scaler():
    model, losses, scales, master = _train(gg.float16, steps=60)
    assert all(p.dtype == gg.float16 for p in model.parameters())
    assert losses[-1] < 0.25 * losses[0] and losses[-1] < 0.3
    x_np, y_np = _blobs()
    with gg.no_grad():
        acc = (model(gg.tensor(x_np).half()).numpy().argmax(1) == y_np).mean()
    assert acc > 0.9


def test_float16_overflow_is_skipped_then_training_recovers():
    # A huge initial scale overflows float16 in backward: those steps are skipped (weights unchanged)
    # and the scale halves until the gradients fit.
    with np.errstate(over="ignore", invalid="ignore"):  # the overflow is the point of this test
        model, losses, scales, master = _train(gg.float16, steps=40, init_scale=2.0 ** 40)
    assert scales[0] == 2.0 ** 39 and min(scales) < 2.0 ** 24
    skipped = sum(1 for a, b in zip([2.0 ** 40] + scales[:-1], scales) if b < a)
    assert skipped >= 16
    assert losses[-1] < 0.5 * losses[0]


def test_float16_matches_float32_run():
    _, l32, _, _ = _train(gg.float32, steps=40)
    m16, l16, scales, master = _train(gg.float16, steps=40, init_scale=2.0 ** 10)
    assert min(scales) >= 2.0 ** 10  # no skipped step: the trajectories are comparable
    np.testing.assert_allclose(l16, l32, rtol=0.01, atol=2e-3)
    m32, _, _, _ = _train(gg.float32, steps=40)
    for p32, pm in zip(m32.parameters(), master.parameters()):
        np.testing.assert_allclose(pm.numpy(), p32.numpy(), rtol=0.05, atol=0.02)


def test_gpu_float16_mlp_trains_with_scaler_and_master_weights(on_cuda):
    x_np, y_np = _blobs()
    gg.manual_seed(0)
    model = nn.MLP([4, 32, 32, 3]).to("cuda").half()
    master = amp.MasterWeights(model.parameters())
    assert all(p.device.type == "cuda" and p.dtype == gg.float32 for p in master.parameters())
    opt = optim.SGD(master.parameters(), lr=0.1, momentum=0.9)
    scaler = amp.GradScaler()
    x, y = gg.tensor(x_np, device="cuda").half(), gg.tensor(y_np, device="cuda")
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x).float(), y)
        model.zero_grad()
        scaler.scale(loss).backward()
        master.step(opt, scaler)
        scaler.update()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]
    # an inf gradient on the GPU is caught and the step skipped
    p = master.parameters()[0]
    before = p.numpy().copy()
    model.zero_grad()
    scaler.scale(F.cross_entropy(model(x).float(), y)).backward()
    next(model.parameters()).grad.data[0, 0] = float("inf")
    scale = scaler.get_scale()
    master.step(opt, scaler)
    scaler.update()
    np.testing.assert_array_equal(p.numpy(), before)
    assert scaler.get_scale() == scale / 2
