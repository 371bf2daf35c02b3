"""Gradient checkpointing: gradients identical (bitwise, CPU float64) to the plain run, in every
calling pattern; memory reduction proven by the saved-bytes counter (the traced peak: test_memory.py)
and by what is freed during the recompute; the planner's schedules."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import checkpoint as C
from gpugrad.autograd import GradError
from gpugrad.checkpoint import checkpoint, checkpoint_sequential
from gpugrad.nn import functional as F

f64 = gg.float64


def _grads(tensors):
    return [None if t.grad is None else t.grad.numpy().copy() for t in tensors]


def _zero(tensors):
    for t in tensors:
        t.grad = None


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.array_equal(x, y), f"max abs diff {np.abs(x - y).max()}"


class Chain:
    """A chain of fused-linear blocks with optional dropout, as plain callables over shared params."""

    def __init__(self, n=8, width=16, p=0.0, act="tanh", dtype=f64):
        self.ws = [gg.randn(width, width, dtype=dtype, requires_grad=True) for _ in range(n)]
        with gg.no_grad():
            for w in self.ws:
                w.mul_(1.0 / width ** 0.5)
        self.bs = [gg.randn(width, dtype=dtype, requires_grad=True) for _ in range(n)]
        self.p, self.act = p, act
        self.blocks = [self._block(i) for i in range(n)]

    def _block(self, i):
        def f(x):
            y = F.fused_linear(x, self.ws[i], self.bs[i], self.act)
            return F.dropout(y, self.p, True) if self.p else y
        return f

    @property
    def params(self):
        return self.ws + self.bs


def _run_chain(chain, x, segments, seed=7):
    """Loss gradients (params and x) and the peak saved bytes of one forward+backward."""
    _zero(chain.params + [x])
    gg.manual_seed(seed)
    base = gg.autograd.saved_bytes()
    gg.autograd.reset_peak_saved_bytes()
    if segments is None:
        h = x
        for f in chain.blocks:
            h = f(h)
    else:
        h = checkpoint_sequential(chain.blocks, segments, x)
    loss = (h * h).sum()
    loss.backward()
    peak = gg.autograd.peak_saved_bytes() - base
    return _grads(chain.params + [x]), peak, loss.item(), gg.random.get_rng_state()


# ---------------------------------------------------------------------------- bitwise equality
@pytest.mark.parametrize("segments", [1, 2, 3, 4, "sqrt", 8])
@pytest.mark.parametrize("x_requires_grad", [True, False])
def test_sequential_bitwise_equal(segments, x_requires_grad):
    chain = Chain(n=8, width=16)
    x = gg.randn(5, 16, dtype=f64, requires_grad=x_requires_grad)
    g0, _, l0, _ = _run_chain(chain, x, None)
    g1, _, l1, _ = _run_chain(chain, x, segments)
    assert l0 == l1
    _same(g0, g1)
    if not x_requires_grad:
        assert g1[-1] is None


@pytest.mark.parametrize("segments", [2, 4, "sqrt"])
def test_dropout_masks_replayed_bitwise(segments):
    """Dropout inside checkpointed segments draws the same masks on recompute, and the global random
    stream ends where the plain run leaves it."""
    chain = Chain(n=8, width=16, p=0.3)
    x = gg.randn(6, 16, dtype=f64, requires_grad=True)
    g0, _, l0, r0 = _run_chain(chain, x, None)
    g1, _, l1, r1 = _run_chain(chain, x, segments)
    assert l0 == l1 and r0 == r1
    _same(g0, g1)


def test_without_preserve_rng_state_dropout_masks_differ():
    """The control for the test above: without restoring the random state the recompute draws new
    masks, so gradients differ (proves the dropout test can fail)."""
    chain = Chain(n=4, width=16, p=0.5)
    x = gg.randn(6, 16, dtype=f64, requires_grad=True)
    g0, _, _, _ = _run_chain(chain, x, None)
    _zero(chain.params + [x])
    gg.manual_seed(7)
    h = checkpoint_sequential(chain.blocks, 2, x, preserve_rng_state=False)
    (h * h).sum().backward()
    g1 = _grads(chain.params + [x])
    assert any(not np.array_equal(a, b) for a, b in zip(g0, g1))


def test_mlp_module_bitwise_equal_with_dropout():
    gg.manual_seed(3)
    plain = gg.nn.MLP([12, 16, 16, 16, 16, 16, 4], dropout=0.2, dtype=f64)
    ck = gg.nn.MLP([12, 16, 16, 16, 16, 16, 4], dropout=0.2, dtype=f64, checkpoint="sqrt")
    ck.load_state_dict(plain.state_dict())
    x = gg.randn(7, 12, dtype=f64)
    t = gg.tensor(np.arange(7) % 4)
    res = []
    for m in (plain, ck):
        m.zero_grad()
        gg.manual_seed(11)
        F.cross_entropy(m(x), t).backward()
        res.append([p.grad.numpy().copy() for p in m.parameters()])
    _same(res[0], res[1])


def test_single_checkpoint_params_only_require_grad():
    """The input needs no gradient; only the weights inside fn do: the node must still be recorded."""
    w = gg.randn(4, 3, dtype=f64, requires_grad=True)
    b = gg.randn(4, dtype=f64, requires_grad=True)
    x = gg.randn(5, 3, dtype=f64)

    def fn(x):
        return F.fused_linear(x, w, b, "sigmoid") * 3.0

    ref = fn(x).sum()
    ref.backward()
    g0 = _grads([w, b])
    _zero([w, b])
    y = checkpoint(fn, x)
    assert y.requires_grad and y.grad_fn is not None
    assert y.grad_fn.op_name == "checkpoint"
    y.sum().backward()
    _same(g0, _grads([w, b]))


def test_nothing_requires_grad_gives_plain_result():
    x = gg.randn(3, 3, dtype=f64)
    y = checkpoint(lambda t: t * 2.0, x)
    assert not y.requires_grad and y.grad_fn is None
    np.testing.assert_array_equal(y.numpy(), x.numpy() * 2.0)


def test_multiple_inputs_outputs_and_non_tensor_args():
    a = gg.randn(4, 5, dtype=f64, requires_grad=True)
    b = gg.randn(4, 5, dtype=f64, requires_grad=True)
    c = gg.randn(4, 5, dtype=f64)  # no grad
    w = gg.randn(5, 5, dtype=f64, requires_grad=True)

    def fn(a, b, c, scale, mode="x", extra=None):
        assert mode == "tanh" and extra == {"k": 1}
        h = (a * b + c) @ w
        i = gg.argmax(h, dim=1)  # an integer output: passed through, not differentiated
        return (h.tanh() * scale, i, "label", (a - b).exp())

    def loss(outs):
        return (outs[0] * outs[0]).sum() + outs[3].sum() * 0.5

    outs = fn(a, b, c, 1.5, mode="tanh", extra={"k": 1})
    loss(outs).backward()
    g0 = _grads([a, b, w])
    _zero([a, b, w])
    outs_c = checkpoint(fn, a, b, c, 1.5, mode="tanh", extra={"k": 1})
    assert isinstance(outs_c, tuple) and len(outs_c) == 4 and outs_c[2] == "label"
    assert not outs_c[1].requires_grad and outs_c[1].dtype == np.int64
    np.testing.assert_array_equal(outs_c[1].numpy(), outs[1].numpy())
    loss(outs_c).backward()
    _same(g0, _grads([a, b, w]))
    assert c.grad is None


def test_only_one_output_used():
    x = gg.randn(3, 4, dtype=f64, requires_grad=True)

    def fn(x):
        return x.exp(), x.sin()

    y0, _ = fn(x)
    y0.sum().backward()
    g0 = _grads([x])
    _zero([x])
    y1, _ = checkpoint(fn, x)
    y1.sum().backward()
    _same(g0, _grads([x]))


def test_tensor_keyword_argument_is_an_input():
    x = gg.randn(3, 4, dtype=f64, requires_grad=True)
    s = gg.randn(3, 4, dtype=f64, requires_grad=True)
    h = s * 2.0  # a non-leaf: allowed because it is passed as an argument
    y = checkpoint(lambda x, shift=None: (x * shift).tanh(), x, shift=h)
    y.sum().backward()
    gx, gs = _grads([x, s])
    _zero([x, s])
    (x * (s * 2.0)).tanh().sum().backward()
    _same([gx, gs], _grads([x, s]))


def test_nested_checkpoints_bitwise_equal():
    chain = Chain(n=6, width=8, p=0.25)
    x = gg.randn(4, 8, dtype=f64, requires_grad=True)

    def inner(h, i, j):
        for f in chain.blocks[i:j]:
            h = f(h)
        return h

    def outer(h):
        h = checkpoint(inner, h, 0, 2)
        h = checkpoint(inner, h, 2, 4)
        return inner(h, 4, 5)

    _zero(chain.params + [x])
    gg.manual_seed(5)
    h = chain.blocks[5](outer(x))
    (h * h).sum().backward()
    g0, r0 = _grads(chain.params + [x]), gg.random.get_rng_state()
    _zero(chain.params + [x])
    gg.manual_seed(5)
    h = chain.blocks[5](checkpoint(outer, x))
    (h * h).sum().backward()
    _same(g0, _grads(chain.params + [x]))
    assert gg.random.get_rng_state() == r0


@pytest.mark.parametrize("budget_frac", [0.15, 0.1])
def test_nested_plan_bitwise_equal(budget_frac):
    chain = Chain(n=12, width=8, p=0.2)
    x = gg.randn(4, 8, dtype=f64, requires_grad=True)
    pl = C.plan_for(chain.blocks, x, 10 ** 12)
    pl = C.plan_for(chain.blocks, x, int(budget_frac * pl.plain_peak_bytes))
    assert pl.depth >= 2  # a nested (multi-level) schedule
    g0, p0, l0, _ = _run_chain(chain, x, None)
    g1, p1, l1, _ = _run_chain(chain, x, pl)
    assert l0 == l1
    _same(g0, g1)
    assert p1 < p0 / 3
    assert pl.measure(chain.blocks, x) == pl.predicted_peak_bytes  # loss = out.sum() saves nothing


def test_under_no_grad_is_a_plain_call():
    w = gg.randn(3, 3, dtype=f64, requires_grad=True)
    calls = []

    def fn(x):
        calls.append(gg.is_grad_enabled())
        return x @ w

    with gg.no_grad():
        y = checkpoint(fn, gg.randn(2, 3, dtype=f64, requires_grad=True))
        z = checkpoint_sequential([fn, lambda t: t.tanh()], 2, gg.randn(2, 3, dtype=f64))
    assert calls == [False, False]
    assert not y.requires_grad and not z.requires_grad


def test_gradcheck_through_checkpoint():
    w = gg.randn(4, 3, dtype=f64, requires_grad=True)
    x = gg.randn(5, 3, dtype=f64, requires_grad=True)

    def fn(x, w):
        return checkpoint(lambda a, b: F.fused_linear(a, b, None, "gelu").tanh(), x, w)

    assert gg.autograd.gradcheck(fn, [x, w])


def test_retain_graph_twice_and_accumulation():
    chain = Chain(n=4, width=6)
    x = gg.randn(3, 6, dtype=f64, requires_grad=True)
    h = checkpoint_sequential(chain.blocks, 2, x)
    loss = (h * h).sum()
    loss.backward(retain_graph=True)
    g1 = _grads(chain.params + [x])
    loss.backward()
    g2 = _grads(chain.params + [x])
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(b, 2 * a, rtol=1e-12)


def test_autograd_grad_and_backward_inputs_reach_params_inside():
    """gg.autograd.grad and backward(inputs=...) must return/accumulate parameter gradients found
    by the recompute, and not touch other parameters' .grad."""
    chain = Chain(n=4, width=6)
    x = gg.randn(3, 6, dtype=f64)
    ref = checkpoint_sequential(chain.blocks, 1, x)  # 1 segment = plain
    g_ref = gg.autograd.grad((ref * ref).sum(), [chain.ws[0], chain.bs[2]])
    h = checkpoint_sequential(chain.blocks, 2, x)
    g = gg.autograd.grad((h * h).sum(), [chain.ws[0], chain.bs[2]])
    _same([t.numpy() for t in g_ref], [t.numpy() for t in g])
    assert all(p.grad is None for p in chain.params)
    h = checkpoint_sequential(chain.blocks, 2, x)
    (h * h).sum().backward(inputs=[chain.ws[1]])
    assert chain.ws[1].grad is not None
    assert all(p.grad is None for p in chain.params if p is not chain.ws[1])


def test_leaf_hook_called_once_with_full_gradient():
    w = gg.randn(3, 3, dtype=f64, requires_grad=True)
    seen = []
    w.register_hook(lambda g: seen.append(g.numpy().copy()))
    x = gg.randn(2, 3, dtype=f64)
    y = checkpoint(lambda t: (t @ w) * (t @ w), x)
    y.sum().backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], w.grad.numpy())


# ---------------------------------------------------------------------------- misuse
def test_error_fn_returns_no_tensor():
    x = gg.randn(2, 2, requires_grad=True)
    with pytest.raises(TypeError, match="checkpoint: .* returned no Tensor"):
        checkpoint(lambda t: (1, "a"), x)
    with pytest.raises(TypeError, match="checkpoint: .* returned float"):
        checkpoint(lambda t: 3.0, x)
    with pytest.raises(TypeError, match="checkpoint: fn must be callable"):
        checkpoint(x, x)


def test_error_backward_twice_names_checkpoint():
    x = gg.randn(2, 3, dtype=f64, requires_grad=True)
    y = checkpoint(lambda t: t.exp(), x)
    g = gg.ones(2, 3, dtype=f64)
    y.backward(g)
    with pytest.raises(GradError, match="checkpoint: trying to backward through the graph a second time"):
        y.backward(g)


def test_error_input_modified_in_place_before_backward():
    x0 = gg.randn(2, 3, dtype=f64, requires_grad=True)
    x = x0 * 1.0
    y = checkpoint(lambda t: t.exp(), x)
    with gg.no_grad():
        x.mul_(2.0)
    with pytest.raises(GradError, match="checkpoint: .*modified by an in-place operation"):
        y.sum().backward()


def test_error_closed_over_non_leaf_tensor():
    a = gg.randn(2, 3, dtype=f64, requires_grad=True)
    h = a * 2.0  # requires grad, has a grad_fn, not passed as an argument
    with pytest.raises(GradError, match="pass it to checkpoint as an argument"):
        checkpoint(lambda t: t * h, gg.randn(2, 3, dtype=f64))


def test_error_nondeterministic_function():
    x = gg.randn(2, 3, dtype=f64, requires_grad=True)
    calls = [0]

    def fn(t):
        calls[0] += 1
        return t if calls[0] == 1 else t.sum()

    y = checkpoint(lambda t: fn(t) * 1.0, x)
    with pytest.raises(GradError, match="must compute the same thing"):
        y.sum().backward()


def test_checkpoint_sequential_argument_errors():
    x = gg.randn(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match="segments must be >= 1"):
        checkpoint_sequential([lambda t: t], 0, x)
    with pytest.raises(ValueError, match="'sqrt'"):
        checkpoint_sequential([lambda t: t], "log", x)
    with pytest.raises(TypeError, match="functions\\[1\\]"):
        checkpoint_sequential([lambda t: t, 3], 1, x)
    pl = C.plan(5, 100, 10 ** 9)
    with pytest.raises(ValueError, match="plan is for 5 layers but the chain has 2"):
        checkpoint_sequential([lambda t: t, lambda t: t], pl, x)


# ---------------------------------------------------------------------------- memory (saved bytes)
def test_saved_bytes_reduction_depth16_four_segments():
    """Depth 16, 4 segments, ReLU: 3 held boundaries + one segment of 4 = 7 of the plain run's 16
    saved activations (the last segment runs normally, as in PyTorch)."""
    chain = Chain(n=16, width=32, act="relu", dtype=gg.float32)
    x = gg.randn(64, 32)
    act = 64 * 32 * 4
    _, p_plain, _, _ = _run_chain(chain, x, None)
    _, p_ck, _, _ = _run_chain(chain, x, 4)
    assert p_plain == 16 * act
    assert p_ck == 7 * act
    assert p_ck <= 0.44 * p_plain


def test_saved_bytes_sqrt_depth64_at_most_quarter():
    chain = Chain(n=64, width=8, act="relu", dtype=gg.float32)
    x = gg.randn(16, 8)
    _, p_plain, _, _ = _run_chain(chain, x, None)
    _, p_ck, _, _ = _run_chain(chain, x, "sqrt")
    assert p_ck <= p_plain / 4
    assert gg.autograd.saved_bytes() == 0


def test_saved_bytes_growth_is_sqrt():
    """Peak saved bytes with segments='sqrt' follow (s - 1) + ceil(n / s) ~ 2 sqrt(n) activations."""
    act = 4 * 8 * 4
    for n in (4, 16, 36, 64):
        chain = Chain(n=n, width=8, act="relu", dtype=gg.float32)
        _, p, _, _ = _run_chain(chain, gg.randn(4, 8), "sqrt")
        s = C.sqrt_segments(n)
        assert p == C.predict_peak(C.even_segments(n, s), act, n) <= ((s - 1) + -(-n // s)) * act
        assert p <= 2 * np.sqrt(n) * act


# ---------------------------------------------------------------------------- planner
def test_sqrt_segments_and_even_split():
    # 16 layers: 3 segments [6, 5, 5] peak at 7 activations like 4 x [4] but recompute one layer less
    assert C.sqrt_segments(16) == 3 and C.sqrt_segments(64) == 6 and C.sqrt_segments(1) == 1
    assert C.predict_peak(C.even_segments(64, 6), 1, 64) == C.predict_peak(C.even_segments(64, 8), 1, 64) == 15
    segs = C.even_segments(10, 3)
    assert [(s.start, s.end, s.checkpoint) for s in segs] == [(0, 4, True), (4, 7, True), (7, 10, False)]
    assert C.recompute_count(segs) == 7


@pytest.mark.parametrize("strategy", ["optimal", "uniform"])
@pytest.mark.parametrize("n", [8, 24, 64])
def test_plan_respects_budget(n, strategy):
    unit = 1000
    plain = C.plan(n, unit, 10 ** 9)
    assert plain.segments == (C.Segment(0, n),) and plain.recompute_layers == 0
    assert plain.predicted_peak_bytes == n * unit
    last_cost = -1
    floor = 2 * unit if strategy == "optimal" else min(
        C.predict_peak(C.even_segments(n, s), unit, n) for s in range(1, n + 1))
    for budget in sorted({n * unit - 1, n * unit // 2, n * unit // 4, int(2.5 * np.sqrt(n) * unit), floor}, reverse=True):
        if budget < floor:
            continue
        p = C.plan(n, unit, budget, strategy=strategy)
        assert p.predicted_peak_bytes <= budget
        assert p.predicted_peak_bytes == C.predict_peak(p.segments, unit, n)
        assert p.recompute_layers >= last_cost  # tighter budget, no less recompute
        last_cost = p.recompute_layers
    with pytest.raises(ValueError, match="smallest predicted peak"):
        C.plan(n, unit, floor - 1, strategy=strategy)


def test_optimal_plan_never_costs_more_than_uniform():
    for budget in (40, 24, 16, 12):
        u = C.plan(64, 1, budget, strategy="uniform") if budget >= 15 else None
        o = C.plan(64, 1, budget)
        assert o.predicted_peak_bytes <= budget
        if u is not None:
            assert o.recompute_layers <= u.recompute_layers
    assert C.plan(64, 1, 8).depth >= 2  # below the one-level minimum (15) only nesting fits


def test_plan_predicted_equals_measured_on_mlp():
    """plan_for measures each block, plans for the budget; the measured peak equals the prediction
    and fits the budget, for a ReLU MLP and one with dropout (blocks that keep no own output)."""
    for dropout in (0.0, 0.25):
        gg.manual_seed(0)
        m = gg.nn.MLP([16] + [32] * 12 + [4], dropout=dropout)
        x = gg.randn(8, 16)
        full = C.plan_for(m, x, 10 ** 12)
        for frac in (0.6, 0.35, 0.2):
            budget = int(frac * full.plain_peak_bytes)
            pl = C.plan_for(m, x, budget)
            measured = pl.measure(m.blocks, x)
            assert measured == pl.predicted_peak_bytes <= budget
            assert "measured peak saved" in str(pl)


def test_mlp_accepts_plan():
    gg.manual_seed(0)
    sizes = [16] + [32] * 10 + [4]
    plain = gg.nn.MLP(sizes, dtype=f64)
    x = gg.randn(8, 16, dtype=f64)
    pl = C.plan_for(plain, x, int(0.3 * C.plan_for(plain, x, 10 ** 12).plain_peak_bytes))
    assert pl.n_layers == len(plain.blocks) and pl.recompute_layers > 0
    ck = gg.nn.MLP(sizes, dtype=f64, checkpoint=pl)
    ck.load_state_dict(plain.state_dict())
    res = []
    for m in (plain, ck):
        m.zero_grad()
        m(x).sum().backward()
        res.append([p.grad.numpy().copy() for p in m.parameters()])
    _same(res[0], res[1])


def test_plan_argument_errors():
    with pytest.raises(ValueError, match="n_layers"):
        C.plan(0, 10, 100)
    with pytest.raises(ValueError, match="3 entries for 4 layers"):
        C.plan(4, [1, 2, 3], 100)
    with pytest.raises(ValueError, match="strategy"):
        C.plan(4, 1, 1, strategy="magic")


# ---------------------------------------------------------------------------- memory freed early
def test_recompute_lets_go_of_incoming_gradient_and_recomputed_output():
    """While the nested backward of a segment runs, neither the gradient that arrived at the
    checkpoint nor the recomputed output of the segment may be held by the checkpoint or the engine:
    each is an activation's worth of memory, alive through the whole segment otherwise (issue 9)."""
    import weakref

    from gpugrad.autograd import Function

    seen: dict = {}

    class After(Function):  # after the checkpoint: its backward makes the checkpoint's incoming gradient
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            out = g * 1.0
            seen["grad"] = weakref.ref(out)
            return out

    class Last(Function):  # the segment's last op: remembers its output when recomputed (saves nothing)
        @staticmethod
        def forward(ctx, x):
            y = x * 1.0
            if ctx.needs_input_grad[0]:
                seen["out"] = weakref.ref(y)
            return y

        @staticmethod
        def backward(ctx, g):
            return g * 1.0

    class First(Function):  # the segment's first op: looks whether both are gone by then
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            seen["alive"] = (seen["grad"]() is not None, seen["out"]() is not None)
            return g * 1.0

    x = gg.randn(64, 8, dtype=f64, requires_grad=True)
    y = checkpoint(lambda t: Last.apply(First.apply(t).tanh()), x)
    After.apply(y).sum().backward()
    assert seen["alive"] == (False, False)
    assert np.allclose(x.grad.numpy(), 1.0 - np.tanh(x.numpy()) ** 2)
