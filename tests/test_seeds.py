"""The worked examples of the articles in ../shared/seeds/, to the digits they print."""
from __future__ import annotations

import numpy as np

import gpugrad as gg
import gpugrad.nn.functional as F


def test_single_sigmoid_neuron():
    """Seed 000: W=[2, -3], b=-3, x=[-1, -2], y=1, C = 1/2 (y - a)^2, one SGD step with alpha=1."""
    w = gg.tensor([[2.0, -3.0]], dtype=gg.float64, requires_grad=True)
    b = gg.tensor([-3.0], dtype=gg.float64, requires_grad=True)
    x = gg.tensor([[-1.0, -2.0]], dtype=gg.float64)
    a = gg.sigmoid(x @ w.T + b)
    assert round(a.item(), 2) == 0.73
    cost = 0.5 * ((1.0 - a) ** 2).sum()
    cost.backward()
    # The article rounds a to 0.73 first: -0.27 * 0.1971 * -1 = 0.053217. With the exact a it is 0.0529;
    # both agree to the article's two significant digits.
    assert round(w.grad.data[0, 0], 3) == 0.053
    assert abs(-0.27 * (0.73 * (1 - 0.73)) * -1 - 0.053217) < 1e-12
    with gg.no_grad():
        w -= 1.0 * w.grad
        b -= 1.0 * b.grad
    # the article prints w1 = 1.94 (truncated; 1.947), w2 = -3.106, b = -2.947
    assert int(w.data[0, 0] * 100) / 100 == 1.94
    assert round(w.data[0, 1], 3) == -3.106
    assert round(b.data[0], 3) == -2.947
    a2 = gg.sigmoid(x @ w.T + b)
    assert round(a2.item(), 2) == 0.79


def test_two_two_one_sigmoid_network():
    """Seed 002: x = [0.05, 0.10], y = 0.01, W1 = [[.15, .20], [.25, .30]], b1 = .35, W2 = [.40, .45], b2 = .5."""
    x = gg.tensor([[0.05, 0.10]], dtype=gg.float64)
    W1 = gg.tensor([[0.15, 0.20], [0.25, 0.30]], dtype=gg.float64, requires_grad=True)
    b1 = gg.tensor([0.35, 0.35], dtype=gg.float64, requires_grad=True)
    W2 = gg.tensor([[0.40, 0.45]], dtype=gg.float64, requires_grad=True)
    b2 = gg.tensor([0.50], dtype=gg.float64, requires_grad=True)
    z1 = F.linear(x, W1, b1)
    z1.retain_grad()
    a1 = gg.sigmoid(z1)
    z2 = F.linear(a1, W2, b2)
    z2.retain_grad()
    a2 = gg.sigmoid(z2)
    C = 0.5 * ((0.01 - a2) ** 2).sum()
    C.backward()
    np.testing.assert_array_equal(np.round(z1.data, 4), [[0.3775, 0.3925]])
    # the article prints a1 = [0.5930, 0.5968]; sigmoid(0.3775) is 0.59327, so its first entry carries a
    # rounding slip in the 4th digit: check to the article's 3 reliable digits
    np.testing.assert_allclose(a1.data, [[0.5930, 0.5968]], atol=5e-4)
    assert round(a2.item(), 4) == 0.7322
    # the article prints C = 0.2600, but 0.5 * (0.01 - 0.7322)^2 = 0.26078: its 3rd digit is a slip.
    # Check the digits that are right, and the exact value.
    assert round(C.item(), 2) == 0.26
    assert abs(C.item() - 0.5 * (0.01 - a2.item()) ** 2) < 1e-15
    # delta2: the article multiplies rounded factors, (0.7322 - 0.01) * 0.1960, and prints 0.1418; the exact
    # value is 0.14161. The printed backward numbers that derive from it agree to 3 significant digits.
    assert round(z2.grad.item(), 3) == round(0.1418, 3)
    np.testing.assert_array_equal(np.round(W2.grad.data, 3), np.round([[0.0841, 0.0846]], 3))
    assert round(b2.grad.item(), 3) == round(0.1418, 3)
    np.testing.assert_array_equal(np.round(z1.grad.data, 4), [[0.0137, 0.0153]])  # delta1
    np.testing.assert_array_equal(np.round(W1.grad.data, 4), [[0.0007, 0.0014], [0.0008, 0.0015]])
    np.testing.assert_array_equal(np.round(b1.grad.data, 4), [0.0137, 0.0153])
    with gg.no_grad():
        for p in (W1, b1, W2, b2):
            p -= 0.01 * p.grad
    np.testing.assert_array_equal(np.round(W2.data, 4), [[0.3992, 0.4492]])
    assert round(b2.item(), 4) == 0.4986


def test_sum_times_weight_squared():
    """Seed 003: x=2, y=3, w=4; s = x + y, z = s w, L = z^2 = 400; dL/dw = 200, dL/dx = dL/dy = 160."""
    x, y, w = (gg.tensor(v, dtype=gg.float64, requires_grad=True) for v in (2.0, 3.0, 4.0))
    L = ((x + y) * w) ** 2
    L.backward()
    assert L.item() == 400.0
    assert w.grad.item() == 200.0
    assert x.grad.item() == 160.0 and y.grad.item() == 160.0


def test_computational_graph_e():
    """Seed 004: e = (a + b)(b + 1) at a=2, b=1: de/da = 2, de/db = 5 (b fans out to two paths)."""
    a = gg.tensor(2.0, dtype=gg.float64, requires_grad=True)
    b = gg.tensor(1.0, dtype=gg.float64, requires_grad=True)
    e = (a + b) * (b + 1)
    e.backward()
    assert e.item() == 6.0
    assert a.grad.item() == 2.0
    assert b.grad.item() == 5.0


def test_matmul_gradient_identities():
    """Seed 001: for C = A B and upstream dC: dA = dC B^T, dB = A^T dC."""
    rng = np.random.default_rng(3)
    A = gg.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    B = gg.tensor(rng.standard_normal((4, 2)), requires_grad=True)
    dC = rng.standard_normal((3, 2))
    C = A @ B
    C.backward(gg.tensor(dC))
    np.testing.assert_allclose(A.grad.numpy(), dC @ B.numpy().T, rtol=1e-12)
    np.testing.assert_allclose(B.grad.numpy(), A.numpy().T @ dC, rtol=1e-12)


def test_xor_with_2_4_1_sigmoid_mlp():
    """Seed 002: XOR learned by a 2-4-1 sigmoid network trained by backprop on the squared error."""
    gg.manual_seed(42)
    X = gg.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=gg.float64)
    Y = gg.tensor([[0], [1], [1], [0]], dtype=gg.float64)
    W1 = (gg.rand(4, 2, dtype=gg.float64) * 2 - 1).requires_grad_()
    b1 = gg.zeros(4, dtype=gg.float64, requires_grad=True)
    W2 = (gg.rand(1, 4, dtype=gg.float64) * 2 - 1).requires_grad_()
    b2 = gg.zeros(1, dtype=gg.float64, requires_grad=True)
    params = [W1, b1, W2, b2]
    for _ in range(5000):
        out = F.fused_linear(F.fused_linear(X, W1, b1, "sigmoid"), W2, b2, "sigmoid")
        loss = ((out - Y) ** 2).mean()
        for p in params:
            p.grad = None
        loss.backward()
        with gg.no_grad():
            for p in params:
                p -= 2.0 * p.grad
    pred = out.numpy().ravel()
    assert loss.item() < 0.01
    assert list(pred > 0.5) == [False, True, True, False]
