"""The autograd contract: iterative backward, fan-out, broadcasting, no_grad, detach, retain_graph,
leaf accumulation, version counters, saved-bytes accounting, custom Functions, autograd.grad."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn.functional as F
from gpugrad.autograd import GradError


def test_deep_chain_is_iterative():
    x = gg.tensor(1.0, dtype=gg.float64, requires_grad=True)
    y = x
    n = 5000
    assert n > sys.getrecursionlimit() // 2
    for _ in range(n):
        y = y * 1.0001
    y.backward()
    assert np.isclose(x.grad.item(), 1.0001 ** n)


def test_fan_out_accumulates():
    x = gg.tensor([1.0, 2.0, 3.0], dtype=gg.float64, requires_grad=True)
    y = x * x + x * 3 + x.exp()
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 3 + np.exp(x.numpy()))


def test_same_tensor_twice_in_one_op():
    x = gg.tensor([2.0, -1.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, -2.0])


def test_broadcast_gradient_sums_back():
    a = gg.ones(3, 1, requires_grad=True)
    b = gg.ones(4, requires_grad=True)
    (a + b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_array_equal(a.grad.numpy(), np.full((3, 1), 4.0))
    np.testing.assert_array_equal(b.grad.numpy(), np.full(4, 3.0))


def test_leaf_gradients_accumulate_and_zero():
    w = gg.tensor([1.0, 2.0], requires_grad=True)
    (w * 2).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [5.0, 5.0])
    w.grad = None
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0])


def test_leaf_grads_do_not_alias():
    a = gg.tensor([1.0, 2.0], requires_grad=True)
    b = gg.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad.data *= 10  # e.g. clipping a.grad in place must not change b.grad
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])
    g = gg.tensor([5.0, 6.0])
    c = gg.tensor([1.0, 1.0], requires_grad=True)
    (c + 0).backward(g)
    c.grad.data += 1
    np.testing.assert_array_equal(g.numpy(), [5.0, 6.0])


def test_no_grad_and_enable_grad():
    x = gg.ones(2, requires_grad=True)
    with gg.no_grad():
        y = x * 2
        with gg.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @gg.no_grad()
    def f(t):
        return t * 3
    assert not f(x).requires_grad
    assert gg.is_grad_enabled()


def test_detach_cuts_graph_and_shares_data():
    x = gg.ones(3, requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None
    assert np.shares_memory(d.data, y.data)
    (d * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0, 2.0])


def test_retain_graph_allows_second_backward():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    g1 = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * g1)


def test_second_backward_through_freed_graph_is_a_clear_error():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(GradError, match="second time.*retain_graph=True"):
        y.backward()


def test_backward_frees_every_nodes_saved_arrays_and_versions():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    w = gg.tensor([3.0, 4.0], requires_grad=True)
    y = x * w                    # saves the two leaves: nothing counted, but referenced
    h = y.exp()                  # saves its output: counted
    node_y, node_h = y.grad_fn, h.grad_fn
    assert len(node_y._versions) == 2 and len(node_h._versions) == 1
    h.sum().backward()
    for node in (node_y, node_h):
        assert node._released
        assert node._to_save == () and node._versions == () and node._tracked == ()


def test_inplace_change_of_saved_tensor_is_detected():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()          # saves its output y
    z = (y * 2).sum()
    with gg.no_grad():
        y.mul_(3)
    with pytest.raises(GradError, match=r"modified by an in-place operation.*version 1; expected version 0"):
        z.backward()


def test_inplace_on_saved_input_through_a_view():
    a = gg.tensor([[1.0, 2.0], [3.0, 4.0]])          # data, no grad
    w = gg.tensor([[1.0], [1.0]], requires_grad=True)
    out = (a @ w).sum()                              # matmul saves a
    a.detach().add_(1)                               # detach shares the version counter
    with pytest.raises(GradError, match="in-place"):
        out.backward()


def test_inplace_on_leaf_requiring_grad_refused():
    w = gg.ones(2, requires_grad=True)
    with pytest.raises(GradError, match="no_grad"):
        w.add_(1)
    with gg.no_grad():
        w.add_(1)
    assert w._version == 1


def test_version_counter_bumps():
    t = gg.zeros(3)
    assert t._version == 0
    t.add_(1)
    t[0] = 5.0
    t.zero_()
    assert t._version == 3


def test_saved_bytes_accounting_current_peak_reset():
    gg.autograd.reset_peak_saved_bytes()
    base = gg.autograd.saved_bytes()
    x = gg.randn(100, 10)                      # leaf input: never counted
    w = gg.randn(20, 10, requires_grad=True)   # parameter: never counted
    h = F.fused_linear(x, w, None, "relu")     # saves y (100x20 float32 = 8000 bytes)
    assert gg.autograd.saved_bytes() - base == 100 * 20 * 4
    h2 = h.sigmoid()                           # saves its output: +8000
    loss = (h2 * h).sum()                      # mul saves h (already counted: shared) and h2 (counted)
    assert gg.autograd.saved_bytes() - base == 2 * 8000
    assert gg.autograd.peak_saved_bytes() >= 2 * 8000
    loss.backward()
    assert gg.autograd.saved_bytes() == base
    gg.autograd.reset_peak_saved_bytes()
    assert gg.autograd.peak_saved_bytes() == base


def test_graph_dropped_without_backward_releases_bytes():
    base = gg.autograd.saved_bytes()
    x = gg.randn(50, 50, requires_grad=True)
    y = (x.exp() * 2).sum()
    assert gg.autograd.saved_bytes() > base
    del y
    assert gg.autograd.saved_bytes() == base


def test_fused_linear_saves_only_what_backward_needs():
    x = gg.randn(64, 32)
    w = gg.randn(16, 32, requires_grad=True)
    b = gg.randn(16, requires_grad=True)
    y_bytes = 64 * 16 * 4
    for act, expected in [("relu", y_bytes), ("sigmoid", y_bytes), ("tanh", y_bytes), ("gelu", y_bytes),
                          ("identity", 0)]:
        base = gg.autograd.saved_bytes()
        out = F.fused_linear(x, w, b, act)
        assert gg.autograd.saved_bytes() - base == expected, act
        del out


def test_custom_function_and_autograd_grad():
    class Cube(gg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x * x * g

    x = gg.tensor([1.0, 2.0], dtype=gg.float64, requires_grad=True)
    y = Cube.apply(x).sum()
    (gx,) = gg.autograd.grad(y, [x])
    np.testing.assert_allclose(gx.numpy(), [3.0, 12.0])
    assert x.grad is None  # grad() does not touch .grad
    assert gg.autograd.gradcheck(Cube.apply, (x,))


def test_autograd_grad_wrt_intermediate_and_unused():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    y = (h * h).sum()
    gh, gx = gg.autograd.grad(y, [h, x], retain_graph=True)
    np.testing.assert_allclose(gh.numpy(), 2 * h.numpy())
    np.testing.assert_allclose(gx.numpy(), 18 * x.numpy())
    z = gg.ones(1, requires_grad=True)
    with pytest.raises(GradError, match="allow_unused"):
        gg.autograd.grad(y, [z], retain_graph=True)
    (gz,) = gg.autograd.grad(y, [z], allow_unused=True)
    assert gz is None


def test_custom_function_wrong_grad_shape_is_named():
    class Bad(gg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.sum(axis=0)

        @staticmethod
        def backward(ctx, g):
            return g  # should broadcast back to x's shape

    x = gg.ones(3, 2, requires_grad=True)
    with pytest.raises(GradError, match=r"Bad: backward returned a gradient of shape \(2,\) for an input of shape \(3, 2\)"):
        Bad.apply(x).sum().backward()


def test_retain_grad_and_hooks():
    x = gg.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    h.retain_grad()
    seen = []
    h.register_hook(lambda g: seen.append(g.numpy().copy()))
    x.register_hook(lambda g: g * 10)
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())
    np.testing.assert_allclose(seen[0], 2 * h.numpy())
    np.testing.assert_allclose(x.grad.numpy(), 10 * 8 * x.numpy())


def test_hooks_get_gradients_on_the_graph_device(cpu_or_strict_cuda):
    """A hook on a non-leaf tensor and one on a leaf see their gradient on the tensors' device, and
    can combine it with tensors there (as retain_grad's .grad is)."""
    dev = cpu_or_strict_cuda
    x = gg.tensor([1.0, 2.0], requires_grad=True, device=dev)
    h = x * 2
    h.retain_grad()
    seen = []
    h.register_hook(lambda g: seen.append(g.device) or g + gg.ones(2, device=dev))
    x.register_hook(lambda g: seen.append(g.device))
    (h * h).sum().backward()
    assert seen == [x.device, x.device]
    assert h.grad.device == x.device
    np.testing.assert_allclose(x.grad.numpy(), 2 * (2 * h.numpy() + 1))


def test_multi_output_function_missing_grad_is_zero():
    x = gg.tensor([[1.0, 5.0], [7.0, 2.0]], requires_grad=True)
    vals, idx = x.max(dim=1)
    vals.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(idx.numpy(), [1, 0])
    assert not idx.requires_grad


def test_detect_anomaly_names_first_bad_op():
    x = gg.tensor([1.0, 0.0], requires_grad=True)
    with gg.autograd.detect_anomaly():
        with pytest.raises(FloatingPointError, match=r"detect_anomaly: log produced non-finite values in its forward output"):
            with np.errstate(divide="ignore"):
                y = x.log()
    # backward NaN: sqrt at 0 has an infinite derivative
    with gg.autograd.detect_anomaly():
        y = (x * 1.0).sqrt().sum()
        with pytest.raises(FloatingPointError, match="sqrt produced non-finite values in its backward gradient"):
            with np.errstate(divide="ignore"):
                y.backward()


def test_dtype_promotion_and_grad_dtype():
    a = gg.ones(2, dtype=gg.float32, requires_grad=True)
    b = gg.ones(2, dtype=gg.float64, requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.dtype == gg.float32 and b.grad.dtype == gg.float64
    assert (a * 2.0).dtype == gg.float32  # Python scalars do not promote


def test_dropout_is_seeded_and_inverted():
    x = gg.ones(1000, 100)
    gg.manual_seed(1)
    y1 = F.dropout(x, 0.3).numpy()
    gg.manual_seed(1)
    y2 = F.dropout(x, 0.3).numpy()
    np.testing.assert_array_equal(y1, y2)
    assert set(np.unique(y1)) == {0.0, np.float32(1 / 0.7)}
    assert abs((y1 == 0).mean() - 0.3) < 0.01
    assert F.dropout(x, 0.3, training=False) is x


def test_random_streams_are_reproducible():
    gg.manual_seed(5)
    a = gg.randn(1000).numpy()
    state = gg.random.get_rng_state()
    b = gg.rand(10).numpy()
    gg.random.set_rng_state(state)
    np.testing.assert_array_equal(gg.rand(10).numpy(), b)
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.1


def test_function_apply_per_subclass_and_custom_apply_kept():
    """Each Function subclass gets its own flat ``apply`` (bound directly as Tensor operators); a
    subclass that writes its own ``apply`` keeps it, and so do the classes derived from it."""
    from gpugrad.autograd import Function

    class Sq(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    class Cube(Sq):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x * x * g

    class Tripled(Sq):
        @classmethod
        def apply(cls, x):
            return Sq.apply(x) * 3

    class FromTripled(Tripled):
        pass

    x = gg.tensor([1.0, 2.0], requires_grad=True)
    assert Sq.apply(x).numpy().tolist() == [1.0, 4.0]
    assert Cube.apply(x).numpy().tolist() == [1.0, 8.0]
    assert Tripled.apply(x).numpy().tolist() == [3.0, 12.0]
    assert FromTripled.apply(x).numpy().tolist() == [3.0, 12.0]
    Cube.apply(x).sum().backward()
    assert x.grad.numpy().tolist() == [3.0, 12.0]
    assert (x * x).grad_fn.op_name == "Mul" or (x * x).grad_fn.op_name == "mul"


# ---------------------------------------------------------------- gg.autograd.graph: hand-built nodes
from gpugrad.autograd.function import Function  # noqa: E402
from gpugrad.autograd.graph import current_backward, make_node, nested_backward, watch_grad_inputs  # noqa: E402


class _Recompute(Function):
    """The example of gpugrad/autograd/graph.py: a node that recomputes ``f`` in backward."""

    @staticmethod
    def backward(ctx, g):
        assert current_backward() is not None
        x = ctx.x.detach().requires_grad_()
        with gg.enable_grad():
            y = ctx.f(x)
        return tuple(nested_backward([y], [g], [x]))


def _recomputed(f, x):
    with gg.no_grad():
        y = f(x)
    ctx, (y,) = make_node(_Recompute, [x], [y])
    ctx.f, ctx.x = f, x
    return y


def test_graph_api_recompute_node_matches_the_plain_graph():
    """A custom node built with make_node whose backward runs nested_backward: the input's gradient
    flows back through the node, the parameter used inside reaches .grad through the outer run, and
    gg.autograd.grad / inputs= see both, exactly as without the node."""
    rng = np.random.default_rng(0)
    w = gg.tensor(rng.standard_normal((3, 3)), dtype=gg.float64, requires_grad=True)
    x0 = gg.tensor(rng.standard_normal((2, 3)), dtype=gg.float64, requires_grad=True)
    f = lambda x: (x @ w).tanh()  # noqa: E731

    def loss(node: bool):
        x = x0 * 2.0
        y = _recomputed(f, x) if node else f(x)
        return (y * y).sum()

    loss(False).backward()
    want = (x0.grad.numpy().copy(), w.grad.numpy().copy())
    x0.grad = w.grad = None
    out = loss(True)
    assert out.grad_fn is not None and current_backward() is None
    out.backward()
    np.testing.assert_array_equal(x0.grad.numpy(), want[0])
    np.testing.assert_array_equal(w.grad.numpy(), want[1])
    gx, gw = gg.autograd.grad(loss(True), [x0, w])
    np.testing.assert_array_equal(gx.numpy(), want[0])
    np.testing.assert_array_equal(gw.numpy(), want[1])


def test_make_node_links_inputs_and_wraps_outputs():
    a = gg.tensor([1.0, 2.0], requires_grad=True)
    b = gg.tensor([3.0, 4.0])
    with gg.no_grad():
        y, idx = a * b, (a * b).argmax()
    base = gg.autograd.saved_bytes()
    extra = np.zeros(5, np.float32)
    ctx, (y2, idx2) = make_node(_Recompute, [a, b], [y, idx], save=[b.data, extra])
    assert ctx.needs_input_grad == (True, False)
    assert y2.grad_fn is ctx and y2.requires_grad and y2.data is y.data and y2._version == y._version
    assert idx2.grad_fn is None and not idx2.requires_grad  # integer outputs get no gradient
    assert y2.grad_fn.op_name == "_Recompute"
    assert gg.autograd.saved_bytes() - base == extra.nbytes  # counted as apply counts (a leaf's data: not)
    assert ctx.saved_tensors[0] is b.data and ctx.saved_tensors[1] is extra
    b.add_(1.0)  # saved arrays are version-checked as an apply's are
    with pytest.raises(GradError, match="modified by an in-place operation"):
        ctx.saved_tensors
    with pytest.raises(ValueError, match="make_node: _Recompute has no outputs"):
        make_node(_Recompute, [a], [])


def test_nested_backward_outside_backward_is_an_error():
    x = gg.tensor(1.0, requires_grad=True)
    with pytest.raises(GradError, match="mine: backward called outside of a backward pass"):
        nested_backward([x * 2], [np.ones((), np.float32)], [x], op="mine")


def test_watch_grad_inputs_collects_what_ops_saw_under_no_grad():
    p = gg.tensor([1.0], requires_grad=True)
    q = gg.tensor([2.0], requires_grad=True)
    c = gg.tensor([3.0])
    with watch_grad_inputs() as outer:
        with gg.no_grad():
            p * c
        with watch_grad_inputs() as inner, gg.no_grad():
            q * c  # the innermost watch collects
        q * c  # recorded (grad mode on): not collected
    assert list(outer.values()) == [p] and list(inner.values()) == [q]
