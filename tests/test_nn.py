"""gg.nn: Module bookkeeping, layers (PyTorch layout and init), fused Sequential, MLP, init, clipping."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.kernels import activations as A
from gpugrad.kernels.activations import ACTIVATIONS
from gpugrad import nn
from gpugrad.autograd import gradcheck

F = nn.functional


def _graph_nodes(t: gg.Tensor) -> int:
    """Number of distinct graph nodes reachable from ``t``."""
    seen = set()
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for e in node._edges:
            if e is not None and e[1] >= 0:
                stack.append(e[0])
    return len(seen)


# ----------------------------------------------------------------------------------- Linear
def test_linear_layout_and_forward_matches_numpy():
    gg.manual_seed(0)
    lin = nn.Linear(5, 3)
    assert lin.weight.shape == (3, 5) and lin.bias.shape == (3,)
    assert isinstance(lin.weight, nn.Parameter) and lin.weight.requires_grad and lin.weight.is_leaf
    assert lin.weight.dtype == gg.float32
    x = gg.randn(4, 5)
    ref = x.numpy() @ lin.weight.numpy().T + lin.bias.numpy()
    np.testing.assert_allclose(lin(x).numpy(), ref, rtol=1e-6, atol=1e-6)
    # leading batch dims
    x3 = gg.randn(2, 4, 5)
    np.testing.assert_allclose(lin(x3).numpy(), x3.numpy() @ lin.weight.numpy().T + lin.bias.numpy(),
                               rtol=1e-6, atol=1e-6)
    nb = nn.Linear(5, 3, bias=False)
    assert nb.bias is None and [n for n, _ in nb.named_parameters()] == ["weight"]
    with pytest.raises(ValueError, match="in_features=5"):
        lin(gg.randn(4, 6))


def test_linear_default_init_statistics():
    """kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(in), 1/sqrt(in)) for weight, same bound for bias."""
    gg.manual_seed(123)
    fan_in, out = 400, 300
    lin = nn.Linear(fan_in, out, dtype=gg.float64)
    bound = 1 / math.sqrt(fan_in)
    w = lin.weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    n = w.size
    assert abs(w.mean()) < 4 * (bound / math.sqrt(3)) / math.sqrt(n)
    np.testing.assert_allclose(w.var(), bound ** 2 / 3, rtol=0.02)  # uniform variance b^2/3
    b = lin.bias.numpy()
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
    # same seed -> same init; different seed -> different init
    gg.manual_seed(123)
    assert np.array_equal(nn.Linear(fan_in, out, dtype=gg.float64).weight.numpy(), w)
    gg.manual_seed(124)
    assert not np.array_equal(nn.Linear(fan_in, out, dtype=gg.float64).weight.numpy(), w)


def test_linear_matches_torch():
    torch = pytest.importorskip("torch")
    gg.manual_seed(1)
    lin = nn.Linear(6, 4, activation="tanh", dtype=gg.float64)
    tl = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(lin.weight.numpy()))
        tl.bias.copy_(torch.from_numpy(lin.bias.numpy()))
    x = np.random.default_rng(0).standard_normal((3, 6))
    y = lin(gg.tensor(x))
    ty = torch.tanh(tl(torch.from_numpy(x)))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), tl.weight.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lin.bias.grad.numpy(), tl.bias.grad.numpy(), rtol=1e-12, atol=1e-14)
    # PyTorch's own state dict loads into ours (same names and layout)
    lin2 = nn.Linear(6, 4, activation="tanh", dtype=gg.float64)
    lin2.load_state_dict({k: v.detach().numpy() for k, v in tl.state_dict().items()})
    np.testing.assert_array_equal(lin2.weight.numpy(), tl.weight.detach().numpy())


@pytest.mark.parametrize("act", list(ACTIVATIONS[1:]) + [None])
def test_linear_activation_is_one_fused_op_and_gradchecks(act):
    gg.manual_seed(2)
    lin = nn.Linear(4, 3, activation=act, dtype=gg.float64)
    x = gg.randn(5, 4, dtype=gg.float64, requires_grad=True)
    y = lin(x)
    assert _graph_nodes(y) == 1  # one fused_linear node: GEMM + bias + activation
    z = x.numpy() @ lin.weight.numpy().T + lin.bias.numpy()
    ref = {None: z, "relu": np.maximum(z, 0), "leaky_relu": np.where(z > 0, z, 0.01 * z),
           "sigmoid": 1 / (1 + np.exp(-z)), "tanh": np.tanh(z),
           "gelu": 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2))),
           "gelu_tanh": 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))}.get(act)
    if ref is None:  # the newer activations: the definition (checked against textbook formulas in test_activations)
        ref = A.forward_ref(z, act)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda x, w, b: F.fused_linear(x, w, b, lin.activation), [x, lin.weight, lin.bias])
    assert gradcheck(lambda x: lin(x), [x])


def test_linear_rejects_bad_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nn.Linear(2, 2, activation="swish")


# ----------------------------------------------------------------------------------- Module bookkeeping
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
        self.scale = nn.Parameter(gg.ones(2))
        self.register_buffer("running", gg.zeros(2))
        self.register_buffer("tmp", gg.zeros(1), persistent=False)
        self.not_registered = [nn.Linear(2, 2)]  # a plain list is not a submodule (as PyTorch)

    def forward(self, x):
        return self.layers(x) * self.scale + self.running


def test_parameter_naming_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
                     "layers.4.weight", "layers.4.bias"]
    assert len(list(net.parameters())) == 7
    assert net.num_parameters() == 2 + (3 * 4 + 4) + (4 * 4 + 4) + (4 * 2 + 2)
    assert [n for n, _ in net.named_modules()] == ["", "layers", "layers.0", "layers.1", "layers.2", "layers.3",
                                                   "layers.4"]
    assert [type(m).__name__ for m in net.children()] == ["Sequential"]
    assert [n for n, _ in net.named_buffers()] == ["running", "tmp"]
    assert list(net.state_dict()) == ["scale", "running", "layers.0.weight", "layers.0.bias", "layers.2.weight",
                                      "layers.2.bias", "layers.4.weight", "layers.4.bias"]
    assert net.get_submodule("layers.2") is net.layers[2]
    assert net.get_parameter("layers.4.bias") is net.layers[4].bias
    # shared parameters are listed once
    shared = nn.Linear(3, 3)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(seq.parameters())) == 2
    assert seq.num_parameters() == 12


def test_registration_rules_and_errors():
    m = nn.Module()
    m.w = nn.Parameter(gg.zeros(2, 2))
    m.sub = nn.Linear(2, 2)
    assert "w" in m._parameters and "sub" in m._modules
    with pytest.raises(TypeError, match="Parameter or None"):
        m.w = gg.zeros(2, 2)  # a plain Tensor cannot replace a registered Parameter
    m.w = None
    assert m.w is None and list(dict(m.named_parameters())) == ["sub.weight", "sub.bias"]
    del m.sub
    assert not hasattr(m, "sub")

    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gg.zeros(1))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        nn.Linear(1, 1).nope
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(1)
    # Parameter shares the data of the tensor it wraps and requires grad
    t = gg.randn(3)
    p = nn.Parameter(t)
    assert p.data is t.data and p.requires_grad
    assert not nn.Parameter(t, requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:")
    # operations on a Parameter give plain Tensors
    assert type(p * 2) is gg.Tensor


def test_repr_like_pytorch():
    seq = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Dropout(0.25), nn.Linear(4, 1, bias=False))
    assert repr(seq) == ("Sequential(\n"
                         "  (0): Linear(in_features=2, out_features=4, bias=True)\n"
                         "  (1): ReLU()\n"
                         "  (2): Dropout(p=0.25)\n"
                         "  (3): Linear(in_features=4, out_features=1, bias=False)\n"
                         ")")
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)"
    assert "activation='gelu'" in repr(nn.Linear(2, 2, activation="gelu"))
    assert "(blocks): ModuleList(" in repr(nn.MLP([4, 8, 2]))


def test_train_eval_and_dropout():
    gg.manual_seed(3)
    net = nn.Sequential(nn.Linear(10, 10), nn.Dropout(0.5))
    assert net.training and net[1].training
    x = gg.ones(200, 10)
    h = net[0](x).numpy()
    y = net(x).numpy()
    zeros = (y == 0)
    assert 0.4 < zeros.mean() < 0.6  # about half dropped
    np.testing.assert_allclose(y[~zeros], 2 * h[~zeros], rtol=1e-6)  # survivors scaled by 1/(1-p)
    assert net.eval() is net
    assert not net.training and not net[1].training
    np.testing.assert_array_equal(net(x).numpy(), h)  # identity in eval
    net.train()
    assert net[1].training
    # dropout is seeded
    gg.manual_seed(7)
    a = net(x).numpy()
    gg.manual_seed(7)
    assert np.array_equal(a, net(x).numpy())
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)


def test_zero_grad_apply_and_requires_grad():
    lin = nn.Linear(3, 2)
    lin(gg.randn(4, 3)).sum().backward()
    assert lin.weight.grad is not None
    lin.zero_grad(set_to_none=False)
    assert np.all(lin.weight.grad.numpy() == 0)
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None
    visited = []
    seq = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)))
    assert seq.apply(lambda m: visited.append(type(m).__name__)) is seq
    assert visited == ["Linear", "Linear", "Sequential", "Sequential"]  # children first
    seq.apply(lambda m: nn.init.zeros_(m.weight) if isinstance(m, nn.Linear) else None)
    assert all(np.all(m.weight.numpy() == 0) for m in seq.modules() if isinstance(m, nn.Linear))
    seq.requires_grad_(False)
    assert not any(p.requires_grad for p in seq.parameters())
    assert seq.num_parameters(trainable_only=True) == 0


def test_state_dict_round_trip_and_shares_memory():
    gg.manual_seed(4)
    a, b = Net(), Net()
    a.running.data[...] = 3.0
    x = gg.randn(5, 3)
    assert not np.allclose(a(x).numpy(), b(x).numpy())
    sd = a.state_dict()
    assert all(isinstance(v, gg.Tensor) and not v.requires_grad for v in sd.values())
    assert sd["layers.0.weight"].data is a.layers[0].weight.data  # shares memory, like PyTorch
    ids = [id(p) for p in b.parameters()]
    res = b.load_state_dict(sd)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert [id(p) for p in b.parameters()] == ids  # same Parameter objects, copied in place
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())
    assert b.layers[0].weight.data is not a.layers[0].weight.data
    # NumPy arrays are accepted as values too
    b.load_state_dict({k: v.numpy() * 0 for k, v in sd.items()})
    assert np.all(b.layers[0].weight.numpy() == 0)


def test_load_state_dict_strict_errors_list_names():
    net = Net()
    sd = dict(net.state_dict())
    del sd["layers.0.bias"]
    sd["extra.weight"] = gg.zeros(1)
    sd["layers.2.weight"] = gg.zeros(5, 5)
    sd["scale"] = gg.ones(2, dtype=gg.float64)
    with pytest.raises(RuntimeError) as ei:
        net.load_state_dict(sd)
    msg = str(ei.value)
    assert "missing keys: 'layers.0.bias'" in msg
    assert "unexpected keys: 'extra.weight'" in msg
    assert "layers.2.weight: shape (5, 5) in the state dict, (4, 4) in the model" in msg
    assert "scale: dtype float64 in the state dict, float32 in the model" in msg
    # non-strict: shapes must still match
    with pytest.raises(RuntimeError, match="layers.2.weight: shape"):
        net.load_state_dict(sd, strict=False)
    sd["layers.2.weight"] = gg.ones(4, 4)
    res = net.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["layers.0.bias"] and res.unexpected_keys == ["extra.weight"]
    assert net.scale.dtype == gg.float32 and np.all(net.layers[2].weight.numpy() == 1)


def test_module_to_dtype_keeps_parameter_objects():
    gg.manual_seed(5)
    net = Net()
    net(gg.randn(2, 3)).sum().backward()
    params = list(net.parameters())
    opt = gg.optim.SGD(net.parameters(), lr=0.1)
    w_before = net.layers[0].weight.numpy().astype(np.float64)
    assert net.to(gg.float64) is net
    assert all(p.dtype == gg.float64 for p in net.parameters())
    assert all(a is b for a, b in zip(params, net.parameters()))
    assert net.running.dtype == gg.float64
    assert net.layers[0].weight.grad.dtype == gg.float64
    np.testing.assert_array_equal(net.layers[0].weight.numpy(), w_before)
    x = gg.randn(2, 3, dtype=gg.float64)
    net.zero_grad()
    net(x).sum().backward()
    g = net.layers[0].weight.grad.numpy().copy()
    opt.step()  # the optimizer built before .to() still updates the same parameters
    np.testing.assert_allclose(net.layers[0].weight.numpy(), w_before - 0.1 * g)
    net.float()
    assert net.layers[0].weight.dtype == gg.float32
    net.to("cpu")
    with pytest.raises(TypeError, match="floating point"):
        net.to(gg.int64)


def test_deepcopy_module():
    gg.manual_seed(6)
    net = Net()
    clone = copy.deepcopy(net)
    x = gg.randn(3, 3)
    np.testing.assert_array_equal(net(x).numpy(), clone(x).numpy())
    assert clone.layers[0].weight is not net.layers[0].weight
    assert isinstance(clone.layers[0].weight, nn.Parameter)
    clone.layers[0].weight.data[...] = 0
    assert not np.all(net.layers[0].weight.numpy() == 0)


def test_linear_negative_slope_is_the_slope_forward_uses():
    """Linear(activation='leaky_relu').negative_slope reads and sets the slope its forward uses (one
    value: activation_params); it was a second copy, read only at construction."""
    x = gg.tensor([[-1.0, 2.0]])
    lin = nn.Linear(2, 2, activation="leaky_relu", activation_params={"negative_slope": 0.3})
    assert lin.negative_slope == 0.3
    with gg.no_grad():
        lin.weight.copy_(gg.eye(2))
        lin.bias.zero_()
    np.testing.assert_allclose(lin(x).numpy(), [[-0.3, 2.0]], rtol=1e-6)
    lin.negative_slope = 0.5
    np.testing.assert_allclose(lin(x).numpy(), [[-0.5, 2.0]], rtol=1e-6)
    assert lin.activation_params == (0.5,) and "negative_slope=0.5" in repr(lin)
    assert nn.Linear(2, 2, negative_slope=0.2).negative_slope == 0.2  # kept for another activation


def test_deepcopy_keeps_the_device_backend():
    """A deep copy of a tensor or model runs on the same backend (the device is an immutable name, copied
    as itself): not on a duplicate that gg.manual_seed does not reach."""
    from gpugrad.backends import get_backend
    net = nn.Linear(3, 3, device="cpu")
    x = gg.ones(2, 3, device="cpu")
    net(x)  # ops have cached the backend on the devices
    clone, y = copy.deepcopy((net, x))
    assert clone.weight.device == net.weight.device and y.device == x.device
    assert clone.weight._backend() is get_backend("cpu") and y._backend() is get_backend("cpu")
    gg.manual_seed(7)
    a = gg.nn.functional.dropout(y, 0.5, True).numpy()
    gg.manual_seed(7)
    np.testing.assert_array_equal(gg.nn.functional.dropout(x, 0.5, True).numpy(), a)


def test_sequential_container_ops():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert len(seq) == 2 and isinstance(seq[0], nn.Linear) and isinstance(seq[-1], nn.ReLU)
    seq.append(nn.Linear(3, 1))
    assert len(seq) == 3 and [n for n, _ in seq.named_parameters()][-1] == "2.bias"
    assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear"]
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is seq[0]
    with pytest.raises(IndexError):
        seq[5]
    del seq[1]
    assert [n for n, _ in seq.named_modules()][1:] == ["0", "1"]
    from collections import OrderedDict
    named = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.Tanh()))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(nn.Linear(2, 2), "relu")
    ml = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 1)])
    assert len(ml) == 2 and [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_activation_modules_match_functional():
    x = gg.randn(4, 5, dtype=gg.float64)
    xn = x.numpy()
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), np.maximum(xn, 0))
    np.testing.assert_allclose(nn.LeakyReLU(0.2)(x).numpy(), np.where(xn > 0, xn, 0.2 * xn))
    np.testing.assert_allclose(nn.Sigmoid()(x).numpy(), 1 / (1 + np.exp(-xn)))
    np.testing.assert_allclose(nn.Tanh()(x).numpy(), np.tanh(xn))
    np.testing.assert_array_equal(nn.GELU()(x).numpy(), F.gelu(x).numpy())
    np.testing.assert_array_equal(nn.GELU("tanh")(x).numpy(), F.gelu(x, approximate="tanh").numpy())
    assert nn.Identity()(x) is x
    assert nn.Flatten()(gg.randn(2, 3, 4)).shape == (2, 12)
    y = gg.tensor([1, 0, 3, 2])
    np.testing.assert_allclose(nn.CrossEntropyLoss()(x, y).numpy(), F.cross_entropy(x, y).numpy())
    sm = np.exp(xn) / np.exp(xn).sum(1, keepdims=True)
    np.testing.assert_allclose(nn.Softmax(dim=1)(x).numpy(), sm, rtol=1e-12)
    np.testing.assert_allclose(nn.LogSoftmax(dim=1)(x).numpy(), np.log(sm), rtol=1e-12)
    np.testing.assert_allclose(nn.NLLLoss()(nn.LogSoftmax(dim=1)(x), y).numpy(),
                               -np.log(sm[np.arange(4), y.numpy()]).mean(), rtol=1e-12)
    np.testing.assert_allclose(nn.MSELoss()(x, x * 0).numpy(), (xn ** 2).mean())


# ----------------------------------------------------------------------------------- automatic fusion
_ACTS = [(nn.ReLU, ()), (nn.LeakyReLU, (0.1,)), (nn.Sigmoid, ()), (nn.Tanh, ()), (nn.GELU, ()), (nn.GELU, ("tanh",)),
         (nn.SiLU, ()), (nn.Softplus, (2.0, 1.0)), (nn.ELU, (0.7,)), (nn.SELU, ()), (nn.Mish, ()), (nn.Hardswish, ()),
         (nn.Hardsigmoid, ()), (nn.ReLU6, ()), (nn.Hardtanh, (-0.5, 0.8)), (nn.LogSigmoid, ()), (nn.Sine, ())]


@pytest.mark.parametrize("act,args", _ACTS, ids=[f"{a.__name__}{list(p)}" for a, p in _ACTS])
def test_sequential_fusion_is_bit_identical(act, args):
    gg.manual_seed(8)
    seq = nn.Sequential(nn.Linear(6, 8), act(*args), nn.Linear(8, 8), act(*args), nn.Linear(8, 3)).double()
    x = gg.randn(16, 6, dtype=gg.float64, requires_grad=True)
    results = {}
    for fuse in (True, False):
        seq.fuse = fuse
        seq.zero_grad()
        x.grad = None
        gg.autograd.reset_peak_saved_bytes()
        base = gg.autograd.saved_bytes()
        y = seq(x)
        nodes = _graph_nodes(y)
        peak = gg.autograd.peak_saved_bytes() - base
        (y * y).sum().backward()
        results[fuse] = (y.numpy().copy(), x.grad.numpy().copy(),
                         [p.grad.numpy().copy() for p in seq.parameters()], nodes, peak)
    yf, gxf, gpf, nf, pf = results[True]
    yu, gxu, gpu, nu, pu = results[False]
    assert np.array_equal(yf, yu)  # bit for bit
    assert np.array_equal(gxf, gxu)
    assert all(np.array_equal(a, b) for a, b in zip(gpf, gpu))
    assert nf == 3 and nu == 5  # Linear+act pairs became single fused nodes
    assert pf <= pu  # never saves more


def test_sequential_fusion_switches_and_saved_bytes():
    gg.manual_seed(9)
    seq = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x = gg.randn(128, 32)
    assert _graph_nodes(seq(x)) == 3
    try:
        nn.Sequential.fuse = False  # global switch
        assert _graph_nodes(seq(x)) == 5
        assert _graph_nodes(nn.Sequential(*list(seq), fuse=True)(x)) == 3  # per-instance override wins
    finally:
        nn.Sequential.fuse = True
    assert _graph_nodes(nn.Sequential(*list(seq), fuse=False)(x)) == 5
    assert "fuse=False" in repr(nn.Sequential(nn.ReLU(), fuse=False))
    # not fused: Linear that already has an activation, a Linear subclass
    assert _graph_nodes(nn.Sequential(nn.Linear(32, 8, activation="tanh"), nn.ReLU())(x)) == 2
    # a negative LeakyReLU slope fuses too (the fused layer then saves z, since y's sign is ambiguous)
    neg = nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(-0.3)).double()
    assert _graph_nodes(neg(gg.randn(2, 4, dtype=gg.float64))) == 1
    xin = gg.randn(3, 4, dtype=gg.float64, requires_grad=True)
    assert gradcheck(lambda x: neg(x), [xin])
    unfused = nn.Sequential(*list(neg), fuse=False)
    assert np.array_equal(unfused(xin).numpy(), neg(xin).numpy())

    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    assert _graph_nodes(nn.Sequential(MyLinear(32, 4), nn.ReLU())(x)) == 3
    # saved bytes: the fused net never keeps more for backward than the unfused one
    xr = gg.randn(128, 32, requires_grad=True)
    peaks = {}
    for fuse in (True, False):
        seq.fuse = fuse
        gg.autograd.reset_peak_saved_bytes()
        base = gg.autograd.saved_bytes()
        y = seq(xr)
        peaks[fuse] = gg.autograd.peak_saved_bytes() - base
        del y
    assert 0 < peaks[True] <= peaks[False]


# ----------------------------------------------------------------------------------- MLP
def test_mlp_structure_residual_and_dropout():
    gg.manual_seed(10)
    mlp = nn.MLP([8, 16, 16, 16, 4], activation="gelu", residual=True, dropout=0.0, dtype=gg.float64)
    assert len(mlp.blocks) == 3
    assert [b.residual for b in mlp.blocks] == [False, True, True]  # only where in == out
    assert all(b.linear.activation == "gelu" for b in mlp.blocks) and mlp.head.activation == "identity"
    assert [n for n, _ in mlp.named_parameters()][:2] == ["blocks.0.linear.weight", "blocks.0.linear.bias"]
    assert mlp.checkpoint is None
    x = gg.randn(5, 8, dtype=gg.float64, requires_grad=True)
    h = mlp.blocks[0].linear(x)
    for b in list(mlp.blocks)[1:]:
        h = h + b.linear(h)
    np.testing.assert_allclose(mlp(x).numpy(), mlp.head(h).numpy(), rtol=1e-13)
    assert gradcheck(lambda x: mlp(x), [x])
    # dropout after hidden activations, only in training
    drop = nn.MLP([4, 64, 2], dropout=0.5)
    xin = gg.randn(32, 4)
    drop.eval()
    a = drop(xin).numpy()
    np.testing.assert_array_equal(a, drop(xin).numpy())
    drop.train()
    assert not np.allclose(drop(xin).numpy(), a)
    with pytest.raises(ValueError, match="sizes"):
        nn.MLP([4])
    with pytest.raises(ValueError, match="checkpoint"):
        nn.MLP([4, 4, 4], checkpoint="often")


def test_mlp_checkpoint_matches_plain():
    ck = pytest.importorskip("gpugrad.checkpoint")
    assert hasattr(ck, "checkpoint_sequential")
    gg.manual_seed(11)
    mlp = nn.MLP([6, 12, 12, 12, 12, 3], residual=True, dtype=gg.float64)
    x = gg.randn(7, 6, dtype=gg.float64)
    grads = {}
    for mode in (None, "sqrt", 2):
        mlp.checkpoint = mode
        mlp.zero_grad()
        y = mlp(x)
        (y * y).sum().backward()
        grads[mode] = (y.numpy(), [p.grad.numpy().copy() for p in mlp.parameters()])
    for mode in ("sqrt", 2):
        np.testing.assert_allclose(grads[mode][0], grads[None][0], rtol=1e-14)
        for a, b in zip(grads[mode][1], grads[None][1]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------- XOR
def test_xor_with_sigmoid_mlp_and_sgd():
    """A 2-4-1 sigmoid network trained with MSE and plain SGD learns XOR from a fixed seed."""
    gg.manual_seed(0)
    X = gg.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=gg.float32)
    Y = gg.tensor([[0], [1], [1], [0]], dtype=gg.float32)
    model = nn.Sequential(nn.Linear(2, 4), nn.Sigmoid(), nn.Linear(4, 1), nn.Sigmoid())
    opt = gg.optim.SGD(model.parameters(), lr=2.0)
    loss_fn = nn.MSELoss()
    first = None
    for _ in range(2000):
        opt.zero_grad()
        loss = loss_fn(model(X), Y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    out = model(X).numpy().ravel()
    assert loss.item() < first / 10
    assert out[0] < 0.5 and out[1] > 0.5 and out[2] > 0.5 and out[3] < 0.5, out


# ----------------------------------------------------------------------------------- init
def test_init_functions_statistics_and_seeding():
    gg.manual_seed(12)
    w = gg.empty(256, 512, dtype=gg.float64)
    fan_in, fan_out = 512, 256
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    assert np.abs(w.numpy()).max() <= bound
    np.testing.assert_allclose(w.numpy().var(), bound ** 2 / 3, rtol=0.03)
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    np.testing.assert_allclose(w.numpy().std(), math.sqrt(2 / fan_out), rtol=0.03)
    nn.init.xavier_uniform_(w)
    a = math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w.numpy()).max() <= a and np.abs(w.numpy()).max() > 0.99 * a
    nn.init.xavier_normal_(w, gain=2.0)
    np.testing.assert_allclose(w.numpy().std(), 2 * math.sqrt(2 / (fan_in + fan_out)), rtol=0.03)
    nn.init.normal_(w, 1.0, 0.5)
    np.testing.assert_allclose([w.numpy().mean(), w.numpy().std()], [1.0, 0.5], rtol=0.03)
    nn.init.uniform_(w, -2, 3)
    assert w.numpy().min() >= -2 and w.numpy().max() < 3
    nn.init.trunc_normal_(w, mean=0.5, std=1.0, a=-1.0, b=1.5)
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: (1 + math.erf(z / math.sqrt(2))) / 2  # noqa: E731
    trunc_mean = 0.5 + (pdf(-1.5) - pdf(1.0)) / (cdf(1.0) - cdf(-1.5))  # truncated-normal mean
    assert w.numpy().min() >= -1.0 and w.numpy().max() <= 1.5
    assert abs(w.numpy().mean() - trunc_mean) < 0.01
    nn.init.zeros_(w)
    assert np.all(w.numpy() == 0)
    nn.init.ones_(w)
    assert np.all(w.numpy() == 1)
    # in place on parameters that require grad (under no_grad), seeded
    p = nn.Parameter(gg.empty(4, 4))
    gg.manual_seed(3)
    nn.init.kaiming_normal_(p)
    first = p.numpy().copy()
    gg.manual_seed(3)
    nn.init.kaiming_normal_(p)
    assert np.array_equal(first, p.numpy()) and p.requires_grad
    assert nn.init.calculate_gain("tanh") == 5 / 3
    assert nn.init.calculate_gain("leaky_relu", math.sqrt(5)) == math.sqrt(1 / 3)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(gg.empty(3))


# ----------------------------------------------------------------------------------- clipping
def _params_with_grads(grads):
    ps = []
    for g in grads:
        p = nn.Parameter(gg.zeros(*g.shape, dtype=gg.float64))
        p.grad = gg.tensor(g.copy())
        ps.append(p)
    return ps


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_formula(norm_type, max_norm):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5), rng.standard_normal((2, 2, 2))]
    ps = _params_with_grads(grads)
    flat = np.concatenate([g.ravel() for g in grads])
    total = np.abs(flat).max() if norm_type == math.inf else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    coef = min(max_norm / (total + 1e-6), 1.0)
    out = nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    assert isinstance(out, gg.Tensor) and out.shape == ()
    np.testing.assert_allclose(out.item(), total, rtol=1e-12)
    for p, g in zip(ps, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-12)
    if max_norm < total:
        new = nn.utils.get_total_norm([p.grad for p in ps], norm_type)
        np.testing.assert_allclose(new.item(), max_norm, rtol=1e-5)


def test_clip_grad_norm_vs_torch_and_edge_cases():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    ps = _params_with_grads(grads)
    total = nn.utils.clip_grad_norm_(ps, 0.3)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for tp, g in zip(tps, grads):
            tp.grad = torch.from_numpy(g.copy())
        ttotal = torch.nn.utils.clip_grad_norm_(tps, 0.3)
        np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-12)
        for p, tp in zip(ps, tps):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-12)
    # a single tensor, params without grads, no grads at all
    p = nn.Parameter(gg.ones(4, dtype=gg.float64))
    p.grad = gg.full((4,), 3.0, dtype=gg.float64)
    assert nn.utils.clip_grad_norm_(p, 1.0).item() == pytest.approx(6.0)
    np.testing.assert_allclose(p.grad.numpy(), 3.0 / (6.0 + 1e-6))
    assert nn.utils.clip_grad_norm_([nn.Parameter(gg.ones(2))], 1.0).item() == 0.0
    # non-finite
    p.grad = gg.tensor([1.0, float("nan")], dtype=gg.float64)
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)


def test_clip_grad_value():
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal((5, 5)) * 3]
    ps = _params_with_grads(grads)
    assert nn.utils.clip_grad_value_(ps, 1.5) is None
    np.testing.assert_array_equal(ps[0].grad.numpy(), np.clip(grads[0], -1.5, 1.5))
    with pytest.raises(ValueError):
        nn.utils.clip_grad_value_(ps, -1)


def test_parameters_to_vector_round_trip():
    lin = nn.Linear(3, 2)
    v = nn.utils.parameters_to_vector(lin.parameters())
    assert v.shape == (8,)
    nn.utils.vector_to_parameters(v * 0 + 1, lin.parameters())
    assert np.all(lin.weight.numpy() == 1) and np.all(lin.bias.numpy() == 1)


# ------------------------------------------------------------------------------------------ issue 17's modules
def test_layer_norm_and_embedding_modules_like_pytorch():
    ln = nn.LayerNorm((3, 4), eps=1e-3)
    assert {k: tuple(v.shape) for k, v in ln.state_dict().items()} == {"weight": (3, 4), "bias": (3, 4)}
    np.testing.assert_array_equal(ln.weight.numpy(), 1.0)
    np.testing.assert_array_equal(ln.bias.numpy(), 0.0)
    assert "LayerNorm((3, 4), eps=0.001, elementwise_affine=True)" in repr(ln)
    x = gg.randn(2, 3, 4)
    np.testing.assert_allclose(ln(x).numpy(), F.layer_norm(x, (3, 4), eps=1e-3).numpy(), rtol=1e-6)
    assert list(nn.LayerNorm(4, elementwise_affine=False).parameters()) == []
    assert [n for n, _ in nn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]
    emb = nn.Embedding(6, 3, padding_idx=-1)
    assert emb.padding_idx == 5 and tuple(emb.weight.shape) == (6, 3)
    np.testing.assert_array_equal(emb.weight.numpy()[5], 0.0)
    out = emb(gg.tensor([[5, 1], [1, 2]]))
    assert out.shape == (2, 2, 3)
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[[0, 3, 4, 5]], 0.0)  # unused rows and padding_idx
    np.testing.assert_array_equal(emb.weight.grad.numpy()[1], 2.0)  # used twice: accumulated


def test_loss_modules_hold_weight_as_a_buffer():
    w = gg.tensor([0.5, 2.0, 1.0])
    ce = nn.CrossEntropyLoss(w, label_smoothing=0.1)
    assert [n for n, _ in ce.named_buffers()] == ["weight"] and list(ce.parameters()) == []
    x, t = gg.randn(4, 3), gg.tensor([0, 1, 2, 1])
    np.testing.assert_allclose(ce(x, t).numpy(), F.cross_entropy(x, t, weight=w, label_smoothing=0.1).numpy())
    assert ce.to(gg.float64).weight.dtype == gg.float64
    p, y = gg.rand(4, 3) * 0.8 + 0.1, gg.rand(4, 3)
    for module, fn in ((nn.BCELoss(), lambda: F.binary_cross_entropy(p, y)),
                       (nn.BCEWithLogitsLoss(pos_weight=w), lambda: F.binary_cross_entropy_with_logits(p, y, pos_weight=w)),
                       (nn.L1Loss(reduction="sum"), lambda: F.l1_loss(p, y, reduction="sum")),
                       (nn.SmoothL1Loss(beta=0.5), lambda: F.smooth_l1_loss(p, y, beta=0.5)),
                       (nn.HuberLoss(delta=0.3), lambda: F.huber_loss(p, y, delta=0.3)),
                       (nn.NLLLoss(w), None)):
        if fn is None:
            np.testing.assert_allclose(module(x.log_softmax(1), t).numpy(),
                                       F.nll_loss(x.log_softmax(1), t, weight=w).numpy())
        else:
            np.testing.assert_allclose(module(p, y).numpy(), fn().numpy())
    assert nn.Unflatten(1, (2, 2))(gg.ones(3, 4)).shape == (3, 2, 2)


def test_normal_quantile_without_scipy():
    """trunc_normal_'s inverse normal CDF (NumPy only) against bisection on math.erf, tails and ends included."""
    from gpugrad.nn.init import _normal_quantile
    p = np.array([1e-300, 1e-20, 1e-9, 0.001, 0.02425, 0.1, 0.3, 0.5, 0.7, 0.97575, 0.999, 1 - 2.0 ** -40])

    def ref(q):  # bisection on the lower tail (full precision there), mirrored for q > 1/2
        tail, lo, hi = min(q, 1.0 - q), -40.0, 0.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < tail else (lo, mid)
        return 0.5 * (lo + hi) if q <= 0.5 else -0.5 * (lo + hi)
    want = np.array([ref(q) for q in p])
    got = _normal_quantile(p)
    np.testing.assert_allclose(got, want, rtol=2e-9, atol=1e-12)
    assert list(_normal_quantile(np.array([0.0, 1.0]))) == [-np.inf, np.inf]
