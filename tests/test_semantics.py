"""PyTorch semantics where a user meets them (issue 17), beyond the recorded op and misuse cases of
tests/test_op_cases.py: the exception classes and their messages, warnings, gradients cast back to the
inputs' dtypes after promotion, in-place indexing, the one input rule of gpugrad's layers, seeds, and the
lazy device-side index checks."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpugrad as gg
from gpugrad._dtype import promote_types, result_type
from gpugrad._errors import IndexRangeError

F = gg.nn.functional


def test_promotion_table_matches_pytorch_categories():
    i32, i64, f16, f32, f64, b, u8 = (np.dtype(n) for n in ("int32", "int64", "float16", "float32", "float64",
                                                               "bool", "uint8"))
    assert promote_types(i64, f16) == f16 and promote_types(f32, i64) == f32  # NumPy: float64
    assert promote_types(b, i32) == i32 and promote_types(u8, np.dtype("int8")) == np.dtype("int16")
    assert result_type(np.ones(2, f32), np.ones((), f64)) == f32  # a 0-d tensor of the same category
    assert result_type(np.ones(2, i32), np.ones((), f64)) == f64  # ... of a higher category counts
    assert result_type(np.ones(2, i32), 0.5) == gg.get_default_dtype()
    assert result_type(np.ones(2, b), 1) == i64 and result_type(np.ones(2, i32), 7) == i32
    gg.set_default_dtype(gg.float64)
    try:
        assert (gg.tensor([1, 2]) / gg.tensor([2, 2])).dtype == gg.float64
    finally:
        gg.set_default_dtype(gg.float32)


def test_gradients_come_back_in_each_inputs_dtype():
    a = gg.tensor([1.0, 2.0], dtype=gg.float16, requires_grad=True)
    b = gg.tensor([3.0, 4.0], requires_grad=True)
    seen = []
    h = a * 2  # a float16 non-leaf
    h.register_hook(lambda g: seen.append(g.dtype))
    out = h * b + gg.tensor(1.0, dtype=gg.float64)  # float32 result
    assert out.dtype == gg.float32
    out.sum().backward()
    assert seen == [gg.float16] and a.grad.dtype == gg.float16 and b.grad.dtype == gg.float32
    np.testing.assert_allclose(a.grad.numpy(), [6.0, 8.0])


def test_shape_errors_are_runtime_errors_and_still_value_errors():
    """PyTorch raises RuntimeError; gpugrad's ShapeError is both, so `except ValueError` keeps working."""
    for bad in (lambda: gg.ones(2, 3) @ gg.ones(4, 5), lambda: gg.ones(2, 3).reshape(5),
                lambda: gg.ones(2, 3) + gg.ones(4), lambda: gg.cat([gg.ones(2, 3), gg.ones(3, 4)])):
        with pytest.raises(ValueError) as e:
            bad()
        assert isinstance(e.value, RuntimeError) and isinstance(e.value, gg._errors.ShapeError)
    with pytest.raises(TypeError) as e:
        gg.ones(2, 3) @ gg.ones(3, 2, dtype=gg.float64)
    assert isinstance(e.value, RuntimeError)


@pytest.mark.parametrize("call, message", [
    (lambda: gg.ones(1, 2, 3, 4).squeeze(50), r"squeeze: Dimension out of range \(expected to be in range of \[-4, 3\], "
                                              r"but got 50\)"),
    (lambda: gg.stack([gg.ones(2, 3)] * 2, dim=77), r"stack: .*\[-3, 2\], but got 77"),
    (lambda: gg.cat([gg.ones(2, 3)] * 2, dim=5), r"cat: .*\[-2, 1\], but got 5"),
    (lambda: gg.ones(1, 2, 3, 4).unsqueeze(5), r"unsqueeze: .*\[-5, 4\], but got 5"),
    (lambda: gg.ones(2, 3, 4).transpose(0, 7), r"transpose: .*\[-3, 2\], but got 7"),
    (lambda: gg.ones(2, 3, 4, 5).flatten(0, 9), r"flatten: .*\[-4, 3\], but got 9"),
    (lambda: gg.ones(()).sum(1), r"sum: .*\[-1, 0\], but got 1"),
])
def test_out_of_range_dims_raise_index_error_with_pytorchs_message(call, message):
    with pytest.raises(IndexError, match=message):
        call()


def test_var_without_degrees_of_freedom_warns_and_gives_nan():
    x = gg.tensor([2.0], requires_grad=True)
    with pytest.warns(UserWarning, match=r"var\(\): degrees of freedom is <= 0"):
        v = x.var()
    assert np.isnan(v.item())
    v.backward()
    assert np.isnan(x.grad.item())
    with pytest.warns(UserWarning, match=r"std\(\): degrees of freedom"):
        assert np.isnan(gg.ones(3, 1).std(1).numpy()).all()


def test_cross_entropy_edges():
    x = gg.randn(0, 3, requires_grad=True)
    loss = F.cross_entropy(x, gg.tensor(np.zeros(0, np.int64)))
    assert np.isnan(loss.item())
    loss.backward()
    assert x.grad.shape == (0, 3)
    assert np.isfinite(F.cross_entropy(gg.randn(4, 3), gg.tensor([0, 1, 2, 0]), label_smoothing=1.0).item())
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        F.cross_entropy(gg.randn(4, 3), gg.tensor([0, 1, 2, 0]), label_smoothing=1.5)


def test_setitem_places_advanced_dims_as_getitem_does():
    x = gg.zeros(2, 3, 4)
    d = gg.tensor([[0, 2], [1, 3]])
    v = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)  # x[1, :, d] has PyTorch's shape (3, 2, 2)
    assert x[1, :, d].shape == (3, 2, 2)
    x[1, :, d] = gg.tensor(v)
    np.testing.assert_array_equal(x[1, :, d].numpy(), v)


def test_gpugrads_layers_take_tensors_only():
    x = np.ones((2, 4), np.float32)
    for module in (gg.nn.MLP([4, 5, 3]), gg.nn.Linear(4, 3), gg.nn.Sequential(gg.nn.Linear(4, 3), gg.nn.ReLU()),
                   gg.nn.ReLU(), gg.nn.LayerNorm(4), gg.nn.Dropout(0.1)):
        for bad in (x, x.tolist()):
            with pytest.raises(TypeError, match=rf"{type(module).__name__}: expected a gpugrad Tensor as input, got "
                                                r"(ndarray of shape \(2, 4\) and dtype float32|list).*gg.tensor"):
                module(bad)
    with pytest.raises(TypeError, match="CrossEntropyLoss: expected a gpugrad Tensor"):
        gg.nn.CrossEntropyLoss()(gg.randn(2, 3), np.array([0, 1]))
    assert gg.nn.MLP([4, 5, 3])(gg.tensor(x)).shape == (2, 3)

    class Mine(gg.nn.Module):  # a user's module keeps its own rules
        def forward(self, xs):
            return sum(xs)
    assert Mine()([1, 2]) == 3


def test_manual_seed_takes_integers_only():
    with pytest.raises(TypeError, match=r"manual_seed: seed must be an integer, got str 'a'"):
        gg.manual_seed("a")
    with pytest.raises(TypeError, match="got float 2.5"):
        gg.manual_seed(2.5)
    gg.manual_seed(np.int64(3))
    a = gg.rand(3).numpy()
    gg.manual_seed(3.0)
    np.testing.assert_array_equal(gg.rand(3).numpy(), a)


def test_reductions_and_promotion_of_integer_tensors():
    assert gg.tensor([1, 2], dtype=gg.int32).sum().dtype == gg.int64
    with pytest.raises(TypeError, match=r"mean: input dtype must be floating point.*x.float\(\).mean\(\)"):
        gg.tensor([1, 2]).mean()
    assert gg.tensor([1, 2]).float().mean().item() == 1.5


def test_device_side_index_checks_report_at_the_next_synchronisation(on_cuda, monkeypatch):
    """gather/embedding/one_hot indices on CUDA are checked without a host read, like class targets."""
    if on_cuda is None:
        pytest.skip("the stand-in counts host reads")
    x = gg.ones(2, 3, device="cuda")
    reads = on_cuda.counters.device_to_host
    out = x.gather(1, gg.tensor([[0, 5], [1, 1]], device="cuda"))
    assert on_cuda.counters.device_to_host == reads  # nothing read yet
    # the same class and words as the CPU's check (not a class target's: no classes, no ignore_index)
    with pytest.raises(IndexRangeError, match=r"gather: index 5 out of range, found on the device by gather "
                       r"\(dimension 1 with size 3, valid: 0 to 2\)\. Reported"):
        out.numpy()
    lowest = np.iinfo(np.int64).min  # no value is exempt from an index check (class targets' ignore_index is)
    out = F.embedding(gg.tensor(np.array([0, lowest]), device="cuda"), gg.ones(5, 3, device="cuda"))
    with pytest.raises(IndexRangeError, match=f"embedding: index {lowest} out of range"):
        out.numpy()
    F.cross_entropy(gg.ones(2, 3, device="cuda"), gg.tensor([0, 7], device="cuda"))
    out = x.gather(1, gg.tensor([[0, 1], [1, 1]], device="cuda"))
    with pytest.raises(IndexError, match=r"cross_entropy or gather: target 7 out of range") as e:
        out.numpy()  # a class target among the checks: IndexError, naming every op the record covers
    assert not isinstance(e.value, IndexRangeError)
    monkeypatch.setenv("GPUGRAD_SYNC_DEBUG", "1")  # at the op itself, with the position
    with pytest.raises(IndexError, match=r"embedding: index 7 is out of bounds for dimension 0 with size 5"):
        F.embedding(gg.tensor([0, 7], device="cuda"), gg.ones(5, 3, device="cuda"))
    with pytest.raises(RuntimeError, match="binary_cross_entropy: all elements of input should be between 0 and 1"):
        F.binary_cross_entropy(gg.tensor([0.5, 1.5], device="cuda"), gg.tensor([0.0, 1.0], device="cuda"))


def test_pow_edge_gradients_without_warnings():
    x = gg.tensor([0.0, 1.0, -2.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 0.0, 0.0])
