"""Every differentiable op against float64 centred finite differences, on shapes that broadcast; each check
runs on the CPU and on device "cuda" over the strict CuPy stand-in (tests/support/strict_cupy.py)."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn.functional as F
from gpugrad.autograd import gradcheck, gradcheck_directional
from gpugrad.kernels.activations import ACTIVATIONS

rng = np.random.default_rng(0)
_DEV = ["cpu"]


@pytest.fixture(autouse=True)
def device(cpu_or_strict_cuda):
    """The device every tensor of the test lives on: cpu, or cuda on the strict CuPy stand-in."""
    _DEV[0] = cpu_or_strict_cuda
    try:
        yield cpu_or_strict_cuda
    finally:
        _DEV[0] = "cpu"


def T(*shape, low=-2.0, high=2.0, grad=True):
    return gg.tensor(rng.uniform(low, high, size=shape), dtype=gg.float64, device=_DEV[0], requires_grad=grad)


def I(data):  # noqa: E743  integer/boolean data on the test's device
    return gg.tensor(data, device=_DEV[0])


def away_from(x: gg.Tensor, points=(0.0,), gap=0.1) -> gg.Tensor:
    """Move elements away from kinks so finite differences are valid."""
    d = x.data
    for p in points:
        near = np.abs(d - p) < gap
        d[near] = p + np.where(d[near] >= p, gap, -gap) * 2
    return x


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "maximum": gg.maximum,
    "minimum": gg.minimum,
}

BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 3))]


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("sa,sb", BROADCAST_SHAPES)
def test_binary_broadcast(name, sa, sb):
    a, b = T(*sa), T(*sb)
    if name == "div":
        b = away_from(b, gap=0.3)
    assert gradcheck(BINARY[name], (a, b))


@pytest.mark.parametrize("scalar_first", [False, True])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow"])
def test_scalar_operands(op, scalar_first):
    x = T(3, 2, low=0.5, high=2.0)
    f = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "div": lambda a, b: a / b, "pow": lambda a, b: a ** b}[op]
    assert gradcheck((lambda x: f(1.7, x)) if scalar_first else (lambda x: f(x, 1.7)), (x,))


def test_pow_tensor_exponent():
    a, b = T(3, 4, low=0.5, high=2.0), T(4)
    assert gradcheck(lambda a, b: a ** b, (a, b))


UNARY = {
    "neg": (lambda x: -x, None),
    "exp": (gg.exp, None),
    "log": (gg.log, (0.2, 3.0)),
    "sqrt": (gg.sqrt, (0.2, 3.0)),
    "abs": (gg.abs, "kink"),
    "sin": (gg.sin, None),
    "cos": (gg.cos, None),
    "tanh": (gg.tanh, None),
    "sigmoid": (gg.sigmoid, None),
    "relu": (F.relu, "kink"),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), "kink"),
    "leaky_relu_negslope": (lambda x: F.leaky_relu(x, -0.3), "kink"),
    "gelu": (F.gelu, None),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), None),
    "silu": (F.silu, None),
    "softplus": (F.softplus, None),
    "softplus_beta_threshold": (lambda x: F.softplus(x, beta=2.0, threshold=1.0), (0.5,)),
    "elu": (lambda x: F.elu(x, alpha=0.7), "kink"),
    "selu": (F.selu, "kink"),
    "mish": (F.mish, None),
    "hardswish": (lambda x: F.hardswish(x * 2.0), (-1.5, 1.5)),
    "hardsigmoid": (lambda x: F.hardsigmoid(x * 2.0), (-1.5, 1.5)),
    "relu6": (lambda x: F.relu6(x * 4.0), (0.0, 1.5)),
    "hardtanh": (lambda x: F.hardtanh(x, -0.5, 1.0), (-0.5, 1.0)),
    "logsigmoid": (F.logsigmoid, None),
    "clamp": (lambda x: gg.clamp(x, -0.5, 0.7), "clamp"),
    "clamp_min": (lambda x: x.clamp(min=0.2), "clamp"),
    "softmax": (lambda x: F.softmax(x, dim=1), None),
    "log_softmax": (lambda x: F.log_softmax(x, dim=-1), None),
    "softmax_dim0": (lambda x: F.softmax(x, dim=0), None),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name):
    fn, domain = UNARY[name]
    if name in ("log", "sqrt"):
        x = T(3, 5, low=domain[0], high=domain[1])
    elif isinstance(domain, tuple):  # the points of the input where the function has kinks
        x = away_from(T(3, 5), points=domain)
    else:
        x = T(3, 5)
        if domain == "kink":
            away_from(x)
        elif domain == "clamp":
            away_from(x, points=(-0.5, 0.7, 0.2))
    assert gradcheck(fn, (x,))


REDUCTIONS = {
    "sum_all": lambda x: x.sum(),
    "sum_dim": lambda x: x.sum(dim=1),
    "sum_dims_keep": lambda x: x.sum(dim=(0, 2), keepdim=True),
    "mean_all": lambda x: x.mean(),
    "mean_neg_dim": lambda x: x.mean(dim=-1),
    "mean_keep": lambda x: x.mean(dim=0, keepdim=True),
    "max_all": lambda x: x.max(),
    "min_all": lambda x: x.min(),
    "max_dim": lambda x: x.max(dim=1).values,
    "min_dim_keep": lambda x: x.min(dim=2, keepdim=True).values,
    "amax_dims": lambda x: x.amax(dim=(1, 2)),
    "var_all": lambda x: x.var(),
    "var_dim": lambda x: x.var(dim=1, keepdim=True),
    "var_biased": lambda x: x.var(dim=0, correction=0),
    "std": lambda x: x.std(dim=2),
    "logsumexp_all": lambda x: x.logsumexp(),
    "logsumexp_dim": lambda x: x.logsumexp(dim=1),
    "logsumexp_keep": lambda x: x.logsumexp(dim=-1, keepdim=True),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions(name):
    assert gradcheck(REDUCTIONS[name], (T(2, 3, 4),))


SHAPES = {
    "reshape": lambda x: x.reshape(4, 6),
    "view_infer": lambda x: x.view(-1, 3),
    "transpose": lambda x: x.transpose(0, 2),
    "permute": lambda x: x.permute(2, 0, 1),
    "T": lambda x: x.reshape(6, 4).T,
    "flatten": lambda x: x.flatten(1),
    "unsqueeze": lambda x: x.unsqueeze(1),
    "squeeze": lambda x: x[:, :1].squeeze(1),
    "expand": lambda x: x[:, :1, :].expand(2, 5, 4),
    "getitem_basic": lambda x: x[1, ::2, 1:],
    "getitem_neg": lambda x: x[..., -1],
    "getitem_int_array": lambda x: x[I([0, 1, 1, 0])],
    "getitem_repeat_idx": lambda x: x[:, I([2, 2, 0])],
    "getitem_bool": lambda x: x[x.data > 0],
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_shape_ops(name):
    assert gradcheck(SHAPES[name], (T(2, 3, 4),))


def test_cat_stack_where():
    a, b, c = T(2, 3), T(4, 3), T(2, 3)
    assert gradcheck(lambda a, b: gg.cat([a, b], dim=0), (a, b))
    assert gradcheck(lambda a, c: gg.cat([a, c], dim=1), (a, c))
    assert gradcheck(lambda a, c: gg.stack([a, c], dim=1), (a, c))
    cond = I(rng.uniform(size=(2, 3)) > 0.5)
    assert gradcheck(lambda a, r: gg.where(cond, a, r), (a, T(3)))


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 2)), ((4,), (4, 3)), ((3, 4), (4,)),
                                   ((4,), (4,)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul(sa, sb):
    assert gradcheck(lambda a, b: a @ b, (T(*sa), T(*sb)))


# each activation of the definition, with the pre-activation points where it has kinks
KINKS = {"relu": (0.0,), "leaky_relu": (0.0,), "leaky_relu_neg": (0.0,), "elu": (0.0,), "selu": (0.0,),
         "hardswish": (-3.0, 3.0), "hardsigmoid": (-3.0, 3.0), "relu6": (0.0, 6.0), "hardtanh": (-1.0, 1.0)}


@pytest.mark.parametrize("act", list(ACTIVATIONS) + ["leaky_relu_neg"])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear(act, bias):
    xs, ws, bs = (rng.uniform(-2.0, 2.0, size=s) for s in ((5, 3), (4, 3), (4,)))
    gg.manual_seed(0)

    slope = -0.3 if act == "leaky_relu_neg" else 0.01
    op = "leaky_relu" if act == "leaky_relu_neg" else act

    def f(x, w, *rest):
        return F.fused_linear(x, w, rest[0] if rest else None, op, negative_slope=slope)

    for _ in range(20):  # keep pre-activations away from the kinks
        z = xs @ ws.T + (bs if bias else 0)
        near = np.zeros(z.shape[0], bool)
        for k in KINKS.get(act, ()):
            near |= np.abs(z - k).min(axis=1) < 0.05
        if not near.any():
            break
        xs[near] += 0.13
    x, w, b = (gg.tensor(a, dtype=gg.float64, device=_DEV[0], requires_grad=True) for a in (xs, ws, bs))
    assert gradcheck(f, (x, w, b) if bias else (x, w))


def test_fused_linear_batched_input():
    assert gradcheck(lambda x, w, b: F.fused_linear(x, w, b, "tanh"), (T(2, 3, 4), T(5, 4), T(5)))


def test_linear_matches_matmul():
    x, w, b = T(5, 3), T(4, 3), T(4)
    assert np.allclose(F.linear(x, w, b).data, x.data @ w.data.T + b.data)
    assert gradcheck(F.linear, (x, w, b))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses(reduction):
    logits = T(6, 4)
    target = I([0, 3, 1, 1, 2, 0])
    assert gradcheck(lambda z: F.cross_entropy(z, target, reduction=reduction), (logits,))
    assert gradcheck(lambda z: F.nll_loss(F.log_softmax(z, dim=1), target, reduction=reduction), (logits,))
    assert gradcheck(lambda a, b: F.mse_loss(a, b, reduction=reduction), (T(3, 2), T(3, 2)))


def test_cross_entropy_options():
    logits = T(5, 3)
    target = I([0, -100, 2, 1, -100])
    assert gradcheck(lambda z: F.cross_entropy(z, target), (logits,))
    assert gradcheck(lambda z: F.cross_entropy(z, I([0, 1, 2, 1, 0]), label_smoothing=0.1), (logits,))


def test_dropout_gradcheck_fixed_mask():
    x = T(4, 6)

    def f(x):
        gg.manual_seed(7)  # same mask on every evaluation
        return F.dropout(x, 0.4, training=True)
    assert gradcheck(f, (x,))


def test_to_dtype_gradcheck():
    x = T(3, 3)
    assert gradcheck(lambda x: (x.to(gg.float32) * 2).to(gg.float64), (x,), atol=1e-4, rtol=1e-3, eps=1e-3)


def test_clone_and_fanout():
    x = T(3, 3)
    assert gradcheck(lambda x: x.clone() * x + x.exp() * x, (x,))


def test_directional_check_large_mlp():
    x = T(64, 32)
    w1, b1, w2, b2 = T(128, 32, low=-0.2, high=0.2), T(128), T(10, 128, low=-0.2, high=0.2), T(10)
    t = I(rng.integers(0, 10, size=64))

    def f(w1, b1, w2, b2):
        return F.cross_entropy(F.fused_linear(F.fused_linear(x, w1, b1, "tanh"), w2, b2), t)
    assert gradcheck_directional(f, (w1, b1, w2, b2), n_directions=3)


def test_gradcheck_catches_a_wrong_backward():
    class BadSquare(gg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x  # wrong: should be 2 * x * g

    x = T(2, 3)
    with pytest.raises(gg.autograd.gradcheck.__globals__["GradcheckError"], match=r"index \("):
        gradcheck(BadSquare.apply, (x,))
    with pytest.raises(AssertionError):
        gradcheck_directional(BadSquare.apply, (x,))


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda x: x * 2, (gg.randn(3, requires_grad=True),))


# ------------------------------------------------------------------------------------------ issue 17's ops
def P(*shape):
    """Probabilities away from 0 and 1 (binary cross-entropy's input)."""
    return T(*shape, low=0.1, high=0.9)


NEW_UNARY = {
    "rsqrt": (gg.rsqrt, (0.3, 3.0)),
    "erf": (gg.erf, None),
    "log2": (gg.log2, (0.3, 3.0)),
    "log10": (lambda x: x.log10(), (0.3, 3.0)),
    "exp2": (gg.exp2, None),
    "sign_is_flat": (lambda x: x.sign() * x, "kink"),
    "prod_all": (lambda x: x.prod(), None),
    "prod_dim": (lambda x: x.prod(dim=1), None),
    "prod_dim_keep": (lambda x: x.prod(dim=0, keepdim=True), None),
    "flip": (lambda x: x.flip((0, -1)), None),
    "tril": (lambda x: x.tril(), None),
    "triu_k": (lambda x: x.triu(1), None),
    "pad": (lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), None),
    "pad_crop": (lambda x: F.pad(x, (-1, 1, 1, -1)), None),
    "unflatten": (lambda x: x.unflatten(1, (5, 1)), None),
    "split": (lambda x: x.split([2, 3], dim=1)[1] * 2 + x.split(2, dim=1)[0].sum(), None),
    "chunk": (lambda x: x.chunk(2, 0)[1], None),
    "masked_fill": (lambda x: x.masked_fill(x > 0.3, 2.0), None),
    "layer_norm": (lambda x: F.layer_norm(x, (5,)), None),
    "squeeze_dims": (lambda x: x.unsqueeze(0).unsqueeze(-1).squeeze((0, -1)), None),
    "var_dof0_dim": (lambda x: x.var(dim=1, correction=0), None),
}


@pytest.mark.parametrize("name", sorted(NEW_UNARY))
def test_new_unary(name):
    fn, domain = NEW_UNARY[name]
    x = T(3, 5, low=domain[0], high=domain[1]) if isinstance(domain, tuple) else T(3, 5)
    if domain == "kink":
        away_from(x)
    assert gradcheck(fn, (x,))


def test_pow_with_zero_exponent_and_base():
    x = T(3, 4, low=0.5, high=2.0)
    assert gradcheck(lambda x, y: x ** y, (x, T(4)))
    assert gradcheck(lambda y: 0.5 ** y, (T(4),))


def test_lerp_gather_embedding():
    assert gradcheck(lambda a, b, w: gg.lerp(a, b, w), (T(3, 4), T(4), T(3, 1)))
    assert gradcheck(lambda a, b: a.lerp(b, 0.3), (T(3, 4), T(3, 4)))
    idx = I(rng.integers(0, 4, size=(2, 3)))
    assert gradcheck(lambda x: x.gather(1, idx), (T(2, 4),))
    assert gradcheck(lambda x: x.gather(0, I([[0, 1, 1, 0], [1, 1, 1, 1]])), (T(2, 4),))
    assert gradcheck(lambda w: F.embedding(I([[0, 3], [3, 1]]), w), (T(4, 3),))  # padding_idx: no gradient on purpose
    v = gg.tensor(1.5, dtype=gg.float64, device=_DEV[0], requires_grad=True)
    mask = I(rng.uniform(size=(3, 4)) > 0.5)
    assert gradcheck(lambda x, v: x.masked_fill(mask, v), (T(3, 4), v))


def test_layer_norm_affine():
    assert gradcheck(lambda x, w, b: F.layer_norm(x, (3, 4), w, b, eps=1e-3), (T(2, 3, 4), T(3, 4), T(3, 4)))
    assert gradcheck(lambda x, w: F.layer_norm(x, 4, w), (T(5, 4), T(4)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_new_losses(reduction):
    r = reduction
    assert gradcheck(lambda p, t: F.binary_cross_entropy(p, t, reduction=r), (P(4, 3), P(4, 3)))
    w = T(3, low=0.2, high=2.0, grad=False)
    t = P(4, 3).detach()
    assert gradcheck(lambda p: F.binary_cross_entropy(p, t, weight=w, reduction=r), (P(4, 3),))
    pw = T(3, low=0.5, high=3.0, grad=False)
    assert gradcheck(lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction=r),
                     (T(4, 3), P(4, 3)))
    assert gradcheck(lambda x, t: F.binary_cross_entropy_with_logits(x, t, weight=w, reduction=r), (T(4, 3), P(4, 3)))
    b = T(4, 3, grad=False)
    a = away_from(T(4, 3) - b, points=(-1.0, 0.0, 1.0)).detach() + b  # l1/smooth l1 kinks at a - b = 0, +-beta
    a.requires_grad_()
    assert gradcheck(lambda a: F.l1_loss(a, b, reduction=r), (a,))
    assert gradcheck(lambda a: F.smooth_l1_loss(a, b, reduction=r, beta=1.0), (a,))
    assert gradcheck(lambda a, b: F.huber_loss(a, b, reduction=r, delta=0.6), (T(4, 3), T(4, 3)))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_weights_and_probabilities(reduction):
    r = reduction
    w = T(4, low=0.2, high=2.0, grad=False)
    target = I([0, 3, 1, -100, 2])
    assert gradcheck(lambda z: F.cross_entropy(z, target, weight=w, reduction=r), (T(5, 4),))
    assert gradcheck(lambda z: F.cross_entropy(z, target, weight=w, reduction=r, label_smoothing=0.3), (T(5, 4),))
    assert gradcheck(lambda z: F.nll_loss(F.log_softmax(z, 1), target, weight=w, reduction=r), (T(5, 4),))
    q = P(5, 4)
    assert gradcheck(lambda z, q: F.cross_entropy(z, q, reduction=r, label_smoothing=0.2), (T(5, 4), q))
    assert gradcheck(lambda z, q: F.cross_entropy(z, q, weight=w, reduction=r), (T(5, 4), P(5, 4)))
    t3 = I(rng.integers(0, 3, size=(2, 4)))
    assert gradcheck(lambda z: F.cross_entropy(z, t3, reduction=r), (T(2, 3, 4),))
