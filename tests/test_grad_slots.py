"""Gradient slots: on the CPU backend, backward writes a Linear layer's dW and db straight into the
optimizer's flat gradient buffer (autograd/function.py: _slots, optim/flat.py), so the step gathers
nothing. The values must be those of a plain backward in every case the engine meets (fan-out,
accumulation without zero_grad, hooks, autograd.grad), and a gradient someone still holds is never
written over, neither by the next backward nor by the next step's gather."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn.functional as F

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 5)).astype(np.float32)
Y = np.array([0, 1, 2, 1, 0, 2])


def _pair():
    """Two MLPs with the same weights: one stepped by gg.optim.SGD (slots), one by hand (no buckets)."""
    gg.manual_seed(0)
    a = gg.nn.MLP([5, 7, 3])
    gg.manual_seed(0)
    b = gg.nn.MLP([5, 7, 3])
    return a, b


def _bucket(opt):
    return opt._buckets[0][1][0]


def _sgd(model):
    """``(opt, backward)``: SGD on ``model`` and a function that runs zero_grad + the loss's backward."""
    opt = gg.optim.SGD(model.parameters(), lr=0.1)
    x, y = gg.tensor(X), gg.tensor(Y)

    def backward(scale: float = 1.0) -> None:
        opt.zero_grad()
        F.cross_entropy(model(x) * scale, y).backward()
    return opt, backward


def test_backward_writes_into_the_flat_gradient_buffer():
    model, _ = _pair()
    opt, backward = _sgd(model)
    for step in range(3):
        backward()
        if step:  # the buckets exist from the first step on
            b = _bucket(opt)
            assert all(p.grad.data is v for p, v in zip(b.params, b.grad_views))
        opt.step()


def test_slot_values_match_a_plain_backward_over_steps():
    model, ref = _pair()
    opt = gg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt_state = {}
    x, y = gg.tensor(X), gg.tensor(Y)
    for _ in range(4):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for p in ref.parameters():
            p.grad = None
        F.cross_entropy(ref(x), y).backward()
        for p, q in zip(model.parameters(), ref.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6, atol=1e-7)
        opt.step()
        with gg.no_grad():
            for i, q in enumerate(ref.parameters()):
                buf = ref_opt_state.get(i)
                buf = q.grad.numpy().copy() if buf is None else 0.9 * buf + q.grad.numpy()
                ref_opt_state[i] = buf
                q.data -= np.float32(0.1) * buf.astype(np.float32)
        for p, q in zip(model.parameters(), ref.parameters()):
            np.testing.assert_allclose(p.numpy(), q.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["fan_out", "accumulate", "hook", "retain"])
def test_slot_cases_match_a_plain_backward(case):
    gg.manual_seed(1)
    lin = gg.nn.Linear(5, 5)
    gg.manual_seed(1)
    ref = gg.nn.Linear(5, 5)
    opt = gg.optim.SGD(lin.parameters(), lr=0.0)  # lr 0: the weights stay, only the gradients matter
    x = gg.tensor(X)

    def loss(m):
        return (m(m(x)) if case == "fan_out" else m(x)).sum()

    for m in (lin, ref):
        if case == "hook":
            m.weight.register_hook(lambda g: g * 2)
    for _ in range(2):  # the second round runs with the buckets built
        opt.zero_grad()
        for p in ref.parameters():
            p.grad = None
        for m in (lin, ref):
            if case == "retain":
                out = loss(m)
                out.backward(retain_graph=True)
                out.backward()
            else:
                loss(m).backward()
                if case == "accumulate":
                    loss(m).backward()
        for p, q in zip(lin.parameters(), ref.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6, atol=1e-6)
        opt.step()


def test_autograd_grad_leaves_grad_and_slots_alone():
    model, ref = _pair()
    opt = gg.optim.SGD(model.parameters(), lr=0.1)
    x, y = gg.tensor(X), gg.tensor(Y)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()  # buckets built
    opt.zero_grad()
    b = _bucket(opt)
    before = b.grad.copy()
    grads = gg.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_array_equal(b.grad, before)
    ref.load_state_dict(model.state_dict())
    F.cross_entropy(ref(x), y).backward()
    for g, q in zip(grads, ref.parameters()):
        np.testing.assert_allclose(g.numpy(), q.grad.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("held", ["tensor", "array"])
def test_a_held_gradient_is_not_written_over(held):
    model, _ = _pair()
    opt, backward = _sgd(model)
    for _ in range(2):
        backward()
        opt.step()
    backward()
    kept = model.head.weight.grad if held == "tensor" else model.head.weight.grad.numpy()
    value = np.array(kept.numpy() if held == "tensor" else kept, copy=True)
    backward(3.0)  # other gradients: the slot must not be reused
    assert not np.array_equal(model.head.weight.grad.numpy(), value)
    opt.step()  # nor may the step's gather copy into the held buffer
    now = kept.numpy() if held == "tensor" else kept
    np.testing.assert_array_equal(now, value)
    backward()
    np.testing.assert_array_equal(kept.numpy() if held == "tensor" else kept, value)


def test_free_slots_are_reused_step_after_step():
    """No new gradient buffer per step: the same flat buffer serves every step of a plain loop."""
    model, _ = _pair()
    opt, backward = _sgd(model)
    bufs = set()
    for step in range(4):
        backward()
        opt.step()
        if step:
            bufs.add(id(_bucket(opt).grad))
    assert len(bufs) == 1


def test_gather_of_fresh_gradients_reuses_the_buffer_nobody_holds():
    """Gradients set by hand (no slot) are copied in; while no earlier gradient is held, every step
    copies into the same flat buffer."""
    model, _ = _pair()
    opt = gg.optim.SGD(model.parameters(), lr=0.1)
    bufs = []
    for _ in range(4):
        for p in model.parameters():
            p.grad = gg.ones(*p.shape)
        opt.step()
        bufs.append(id(_bucket(opt).grad))
        opt.zero_grad()
    assert len(set(bufs)) == 1


@pytest.mark.parametrize("create_graph", [False, True])
def test_a_dropped_model_and_optimizer_are_freed(cpu_or_strict_cuda, create_graph):
    """The optimizer's buckets are not kept alive by a module-level registry: after ``del net, opt``
    the parameters, their ``.grad`` (with its graph under create_graph) and its saved activations go."""
    from gpugrad.autograd import saved
    dev = cpu_or_strict_cuda
    gc.collect()
    base = saved.saved_bytes()
    gg.manual_seed(0)
    net = gg.nn.MLP([5, 7, 3], activation="tanh", device=dev)
    opt = gg.optim.SGD(net.parameters(), lr=0.1)
    x, y = gg.tensor(X, device=dev), gg.tensor(Y, device=dev)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    opt.zero_grad()
    (net(x) ** 2).sum().backward(create_graph=create_graph)
    if create_graph:
        assert saved.saved_bytes() > base  # the .grad graphs hold activations
    refs = [weakref.ref(p) for p in net.parameters()]
    del net, opt
    gc.collect()
    assert all(r() is None for r in refs)
    assert saved.saved_bytes() == base


def test_a_held_gradient_is_not_written_over_after_its_optimizer_is_dropped():
    """Once its optimizer is gone, a parameter's gradient slot is gone too: a gradient the user holds
    (from a backward that wrote into the slot) is not overwritten by the next backward."""
    model, _ = _pair()
    opt, backward = _sgd(model)
    for _ in range(2):
        backward()
        opt.step()
    del opt, backward
    gc.collect()
    x, y = gg.tensor(X), gg.tensor(Y)
    w = model.head.weight
    w.grad = None
    F.cross_entropy(model(x), y).backward()
    kept = w.grad
    value = kept.numpy().copy()
    w.grad = None
    F.cross_entropy(model(x) * 3.0, y).backward()
    assert not np.array_equal(w.grad.numpy(), value)
    np.testing.assert_array_equal(kept.numpy(), value)
