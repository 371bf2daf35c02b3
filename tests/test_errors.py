"""Bad input gets a clear error naming the op, the shapes/dtypes/devices and the fix."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad as gg
import gpugrad.nn.functional as F
from gpugrad.autograd import GradError


def test_matmul_shape_mismatch():
    a, b = gg.ones(2, 3), gg.ones(4, 5)
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) cannot be multiplied.*3.*4.*Fix"):
        a @ b


def test_matmul_dtype_mismatch():
    with pytest.raises(TypeError, match=r"matmul: operands have different dtypes float32 and float64"):
        gg.ones(2, 3) @ gg.ones(3, 2, dtype=gg.float64)


def test_linear_shape_mismatch_names_layout():
    with pytest.raises(ValueError, match=r"linear: input of shape \(8, 5\) does not match weight of shape \(3, 4\).*in_features=4"):
        F.linear(gg.ones(8, 5), gg.ones(3, 4))
    with pytest.raises(ValueError, match=r"fused_linear\[relu\]: bias of shape \(2,\)"):
        F.fused_linear(gg.ones(8, 4), gg.ones(3, 4), gg.ones(2), "relu")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        F.fused_linear(gg.ones(8, 4), gg.ones(3, 4), None, "swish")


def test_non_broadcastable_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) are not broadcastable: dimension -1 is 3 vs 4"):
        gg.ones(2, 3) + gg.ones(4)
    with pytest.raises(ValueError, match=r"mul: shapes"):
        gg.ones(2, 3) * gg.ones(3, 2)


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match=r"only floating-point tensors can require gradients.*int64.*x.float\(\)"):
        gg.tensor([1, 2, 3], requires_grad=True)
    t = gg.arange(3)
    with pytest.raises(TypeError, match="floating-point"):
        t.requires_grad_()


def test_backward_on_non_scalar_needs_grad():
    x = gg.ones(2, 3, requires_grad=True)
    with pytest.raises(GradError, match=r"only for scalar outputs.*shape \(2, 3\).*y.sum\(\)"):
        (x * 2).backward()
    with pytest.raises(GradError, match=r"grad has shape \(3,\) but the output has shape \(2, 3\)"):
        (x * 2).backward(gg.ones(3))


def test_backward_without_grad_requirement():
    with pytest.raises(GradError, match="does not require grad"):
        (gg.ones(2) * 2).sum().backward()


def test_cross_entropy_target_errors():
    logits = gg.randn(4, 3, requires_grad=True)
    with pytest.raises(IndexError, match=r"cross_entropy: target 3 at position 2 is out of range for 3 classes"):
        F.cross_entropy(logits, gg.tensor([0, 1, 3, 2]))
    with pytest.raises(IndexError, match=r"target -1 at position 0"):
        F.cross_entropy(logits, gg.tensor([-1, 1, 0, 2]))
    with pytest.raises(TypeError, match=r"integer class indices.*float32"):
        F.cross_entropy(logits, gg.tensor([0.0, 1.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"target of shape \(3,\) does not match input of shape \(4, 3\)"):
        F.cross_entropy(logits, gg.tensor([0, 1, 2]))


def test_mse_shape_mismatch():
    with pytest.raises(ValueError, match=r"mse_loss: input shape \(4, 1\) and target shape \(4,\) differ.*reshape"):
        F.mse_loss(gg.ones(4, 1), gg.ones(4))


def test_reshape_and_dim_errors():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into \(4, 2\)"):
        gg.ones(2, 3).reshape(4, 2)
    with pytest.raises(IndexError, match=r"sum: Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        gg.ones(2, 3).sum(dim=2)
    with pytest.raises(ValueError, match=r"cat: tensor 1 has shape \(2, 4\) but tensor 0 has \(2, 3\)"):
        gg.cat([gg.ones(2, 3), gg.ones(2, 4)], dim=0)


def test_unknown_device_and_dtype():
    with pytest.raises(ValueError, match="unknown device type 'tpu'"):
        gg.ones(2, device="tpu")
    with pytest.raises(TypeError, match="unknown dtype"):
        gg.ones(2, dtype="float33")


def test_foreign_exceptions_are_wrapped_with_op_and_inputs():
    class Boom(gg.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            raise ValueError("inner problem")

    with pytest.raises(ValueError, match=r"Boom: inner problem \(inputs: Tensor\(shape=\(2,\), dtype=float32, device=cpu\)\)"):
        Boom.apply(gg.ones(2))


@pytest.mark.parametrize("data, shapes", [([[1, 2], [3]], ("data[0] has shape (2,)", "data[1] has shape (1,)")),
                                          ([[[1, 2], [3, 4]], [[1, 2], [3]]], ("data[1][0] has shape (2,)",
                                                                               "data[1][1] has shape (1,)")),
                                          ([[1, 2], 3], ("data[0] has shape (2,)", "data[1] has shape ()"))])
def test_ragged_nested_sequence_names_the_shapes(data, shapes):
    with pytest.raises(ValueError) as e:
        gg.tensor(data)
    msg = str(e.value)
    assert msg.startswith("gg.tensor: ragged nested sequence") and all(s in msg for s in shapes)


def test_ragged_check_visits_each_element_once(monkeypatch):
    from gpugrad import creation

    def full(depth):  # a full binary tree of lists, 2**depth leaves
        return 1.0 if depth == 0 else [full(depth - 1), full(depth - 1)]
    data = full(5)
    data[1][1][1][1][1] = [1.0]  # ragged at the last, deepest place: the whole tree is walked
    calls = []
    inner = creation._ragged
    monkeypatch.setattr(creation, "_ragged", lambda *a: calls.append(1) or inner(*a))
    with pytest.raises(ValueError, match=r"data\[1\]\[1\]\[1\]\[1\]\[0\] has shape \(\) but "
                                         r"data\[1\]\[1\]\[1\]\[1\]\[1\] has shape \(1,\)"):
        gg.tensor(data)
    assert len(calls) <= 2 ** 6  # one call per list or number in the tree (64 here), not 2**depth per level


@pytest.mark.parametrize("data", [["a", "b"], np.array(["x", "y"]), [1, "a"], [b"a"], [1 + 2j], [object()]])
def test_non_numeric_data_is_refused(data):
    with pytest.raises(TypeError, match=r"gg.tensor: cannot make a tensor of .* data"):
        gg.tensor(data)
    with pytest.raises(TypeError, match=r"gg.tensor: cannot make a tensor of"):
        gg.as_tensor(data)


def test_float64_numpy_data_keeps_its_dtype_as_in_pytorch():
    assert gg.tensor(np.zeros(3)).dtype == gg.float64          # torch.tensor(np.zeros(3)).dtype == float64
    assert gg.tensor([0.5, 1.0]).dtype == gg.float32          # Python floats: the default dtype
    assert gg.tensor(np.zeros(3), dtype=gg.float32).dtype == gg.float32


@pytest.mark.parametrize("how", ["binary", "three inputs"])
def test_mixing_devices_names_the_op_and_both_devices(on_cuda, how):
    """Both ways Function.apply scans its inputs (the two-input fast path, the general loop)."""
    a = gg.ones(2, 3, requires_grad=True)
    b = gg.ones(2, 3, device="cuda")
    if how == "binary":
        with pytest.raises(RuntimeError, match=r"mul: expected all tensors on the same device, found cpu and "
                                                 r"cuda(:0)?.*Move them first"):
            a * b
    else:
        w, bias = gg.ones(3, 3, device="cuda"), gg.ones(3)
        with pytest.raises(RuntimeError, match=r"linear: expected all tensors on the same device, found cpu and "
                                                 r"cuda(:0)?.*Move them first"):
            F.linear(a, w, bias)
