"""The op cases of tests/test_op_cases.py: a table in the style of tinygrad's test/backend/test_ops.py (its
cases for these ops, at tinygrad a9069c177a9d, with shapes scaled down to keep the recorded file small),
plus the PyTorch semantics of issue 17 (type promotion, edge-case gradients, 0-d tensors, dims, advanced
indexing, degrees of freedom, losses). Nothing here imports gpugrad or torch: each case's function takes
the library as ``m`` (``torch`` or ``gpugrad``) and its functional module as ``F``, so one lambda runs on
both; ``torch_fn`` is given where the spellings differ.

``tests/reference/record_torch.py`` runs every case with PyTorch 2.13 and stores inputs, outputs (dtype,
shape, values) and input gradients (under a fixed random weighting of the outputs) in
``tests/reference/torch_ops.json``; ``ERROR_CASES`` records the exception class PyTorch raises.

An input spec is ``(kind, shape_or_values, ...)``:
``("f", shape)``: float64 uniform in [-2, 2), requires grad; ``("f", shape, low, high)``: another range;
``("fv", values)``: float64 values, requires grad; ``("fc", values)``: float64 constant (no grad);
``("i", shape, low, high)``: int64 in [low, high); ``("iv", values, dtype)``: integer values of a dtype;
``("b", shape)``: bool; ``("dv", values, dtype)``: values of any dtype, no grad."""
from __future__ import annotations

import math
import zlib
from typing import Any, Callable, NamedTuple

import numpy as np


class Case(NamedTuple):
    name: str
    inputs: tuple
    fn: Callable
    torch_fn: Callable | None = None
    rtol: float = 1e-10
    atol: float = 1e-12


def make_inputs(case: Case) -> list[dict]:
    """The inputs of a case as data: ``{"dtype", "shape", "values", "grad"}`` (same on every machine:
    NumPy's PCG64, seeded by the case name)."""
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    out = []
    for spec in case.inputs:
        kind = spec[0]
        if kind == "f":
            lo, hi = (spec[2], spec[3]) if len(spec) > 2 else (-2.0, 2.0)
            a, grad = rng.uniform(lo, hi, size=spec[1]), True
        elif kind in ("fv", "fc"):
            a, grad = np.array(spec[1], dtype=np.float64), kind == "fv"
        elif kind == "i":
            a, grad = rng.integers(spec[2], spec[3], size=spec[1]).astype(np.int64), False
        elif kind == "iv":
            a, grad = np.array(spec[1], dtype=spec[2] if len(spec) > 2 else "int64"), False
        elif kind == "b":
            a, grad = rng.uniform(size=spec[1]) > 0.5, False
        elif kind == "dv":
            a, grad = np.array(spec[1], dtype=spec[2]), False
        else:  # pragma: no cover - a typo in the table
            raise ValueError(f"{case.name}: unknown input kind {kind!r}")
        out.append({"dtype": str(a.dtype), "shape": list(a.shape), "values": a.reshape(-1).tolist(), "grad": grad})
    return out


def as_array(d: dict) -> np.ndarray:
    return np.array(d["values"], dtype=d["dtype"]).reshape(d["shape"])


# ------------------------------------------------------------------------------------------------ the cases
D = np.array([[0, 1], [3, 2], [1, 1]])  # an advanced index used by the indexing cases
C = []


def case(name: str, inputs: list, fn: Callable, torch_fn: Callable | None = None, **tol: Any) -> None:
    C.append(Case(name, tuple(inputs), fn, torch_fn, **tol))


F32 = dict(rtol=1e-6, atol=1e-6)  # float32 results (type promotion cases)

# --- issue 17, item 1: type promotion (results compared with their dtype)
case("promote_int_add_float", [("iv", [1, 2, 3])], lambda m, F, x: x + 0.5, **F32)
case("promote_int_div_int", [("iv", [1, 2, 3]), ("iv", [2, 4, 3])], lambda m, F, x, y: x / y, **F32)
case("promote_int_pow_half", [("iv", [1, 4, 9])], lambda m, F, x: x ** 0.5, **F32)
case("promote_int_pow_int", [("iv", [1, 2, 3])], lambda m, F, x: x ** 2)
case("promote_int_rpow", [("iv", [1, 2, 3])], lambda m, F, x: 2 ** x)
case("promote_float_rpow_int", [("iv", [1, 2, 3])], lambda m, F, x: 2.5 ** x, **F32)
case("promote_cos_int", [("iv", [0, 1, 2])], lambda m, F, x: m.cos(x), **F32)
case("promote_exp_int", [("iv", [0, 1, 2])], lambda m, F, x: m.exp(x), **F32)
case("promote_sigmoid_int", [("iv", [-1, 0, 2])], lambda m, F, x: m.sigmoid(x), **F32)
case("promote_f32_add_i32", [("dv", [0.5, 1.5], "float32"), ("iv", [1, 2], "int32")], lambda m, F, x, y: x + y, **F32)
case("promote_f32_mul_i64", [("dv", [0.5, 1.5], "float32"), ("iv", [1, 2])], lambda m, F, x, y: x * y, **F32)
case("promote_f16_add_i64", [("dv", [0.5, 1.5], "float16"), ("iv", [1, 2])], lambda m, F, x, y: x + y, rtol=1e-3)
case("promote_maximum_i32_0d_float", [("iv", [-1, 0, 2], "int32")], lambda m, F, x: m.maximum(x, m.tensor(0.5, device=x.device)),
     **F32)
case("promote_minimum_i32_0d_float", [("iv", [-1, 0, 2], "int32")], lambda m, F, x: m.minimum(x, m.tensor(0.5, device=x.device)),
     **F32)
case("promote_f32_add_0d_f64", [("dv", [0.5, 1.5], "float32")],
     lambda m, F, x: x + m.tensor(0.1, dtype=m.float64, device=x.device), **F32)
case("promote_i32_add_0d_f64", [("iv", [1, 2], "int32")],
     lambda m, F, x: x + m.tensor(0.1, dtype=m.float64, device=x.device))
case("promote_i32_add_0d_i64", [("iv", [1, 2], "int32")], lambda m, F, x: x + m.tensor(3, device=x.device))
case("promote_bool_add_int", [("dv", [True, False], "bool")], lambda m, F, x: x + 1)
case("promote_bool_add_float", [("dv", [True, False], "bool")], lambda m, F, x: x + 1.5, **F32)
case("promote_uint8_add_i32", [("iv", [1, 2], "uint8"), ("iv", [3, 4], "int32")], lambda m, F, x, y: x + y)
case("promote_sum_i32", [("iv", [1, 2, 3], "int32")], lambda m, F, x: x.sum())
case("promote_sum_bool", [("dv", [True, False, True], "bool")], lambda m, F, x: x.sum())
case("promote_sum_uint8", [("iv", [200, 100], "uint8")], lambda m, F, x: x.sum())
case("promote_where_int_float", [("b", (4,)), ("iv", [1, 2, 3, 4], "int32")], lambda m, F, c, x: m.where(c, x, 0.5),
     **F32)
case("promote_clamp_int_float", [("iv", [0, 1, 2, 3])], lambda m, F, x: m.clamp(x, min=1.5), **F32)
case("promote_cat_f32_f64", [("dv", [0.5], "float32"), ("fv", [1.5, 2.5])], lambda m, F, x, y: m.cat([x, y]))
case("promote_cat_f32_i64", [("dv", [0.5], "float32"), ("iv", [1, 2])], lambda m, F, x, y: m.cat([x, y]), **F32)
case("promote_compare_int_float", [("iv", [0, 1, 2])], lambda m, F, x: x < 1.5)
case("promote_mixed_grad_f32_f64", [("fv", [0.5, -1.0, 2.0])],
     lambda m, F, x: (x * m.tensor([1.0, 2.0, 3.0], device=x.device) + m.tensor(2.0, device=x.device)).sum())

# --- item 2: pow at the edges (gradients)
case("pow_zero_exponent_at_zero", [("fv", [0.0, 1.0, -2.0])], lambda m, F, x: x ** 0)
case("pow_tensor_zero_exponent", [("fv", [0.0, 1.5, -2.0]), ("fv", [0.0, 0.0, 2.0])], lambda m, F, x, y: x ** y)
case("pow_zero_base", [("fc", [0.0, 0.0, 0.0]), ("fv", [-1.0, 0.5, 2.0])], lambda m, F, x, y: x ** y)
case("pow_scalar_zero_base", [("fv", [-1.5, 0.0, 2.0])], lambda m, F, y: 0.0 ** y)
case("pow_negative_base", [("fv", [1.0, 2.0, -1.0])], lambda m, F, y: (-2.0) ** y)
case("pow_negative_tensor_base", [("fc", [-2.0, -3.0]), ("fv", [2.0, 3.0])], lambda m, F, x, y: x ** y)
case("pow_broadcast", [("f", (3, 4), 0.5, 2.0), ("f", (4,))], lambda m, F, x, y: x ** y)
case("pow_half", [("fv", [0.0, 0.25, 4.0])], lambda m, F, x: x ** 0.5)

# --- item 3: 0-d tensors
case("sigmoid_0d", [("f", ())], lambda m, F, x: m.sigmoid(x))
case("tanh_0d", [("f", ())], lambda m, F, x: m.tanh(x))
case("sum_0d_dim0", [("f", ())], lambda m, F, x: x.sum(0))
case("sum_0d_dim_neg1_keepdim", [("f", ())], lambda m, F, x: x.sum(-1, keepdim=True))
case("mean_0d_dim0", [("f", ())], lambda m, F, x: x.mean(0))
case("logsumexp_0d", [("f", ())], lambda m, F, x: m.logsumexp(x, 0))
case("logsumexp_0d_neg1", [("f", ())], lambda m, F, x: m.logsumexp(x, -1))
case("softmax_0d", [("f", ())], lambda m, F, x: m.softmax(x, 0))
case("max_0d_dim", [("f", ())], lambda m, F, x: x.max(0))
case("amax_0d", [("f", ())], lambda m, F, x: x.amax(0))
case("prod_0d", [("f", ())], lambda m, F, x: x.prod())
case("prod_0d_dim", [("f", ())], lambda m, F, x: x.prod(-1))

# --- item 4: dims in range (negative dims, the edges of the valid range)
case("squeeze_dims", [("f", (1, 3, 1, 2))], lambda m, F, x: x.squeeze((0, 2)))
case("squeeze_keeps_non_one", [("f", (1, 3, 1))], lambda m, F, x: x.squeeze((1, -1)))
case("unsqueeze_last", [("f", (2, 3))], lambda m, F, x: x.unsqueeze(2))
case("unsqueeze_neg", [("f", (2, 3))], lambda m, F, x: x.unsqueeze(-3))
case("stack_last", [("f", (2, 3)), ("f", (2, 3))], lambda m, F, x, y: m.stack([x, y], dim=2))
case("stack_neg", [("f", (2, 3)), ("f", (2, 3))], lambda m, F, x, y: m.stack([x, y], dim=-1))
case("cat_neg", [("f", (2, 3)), ("f", (2, 2))], lambda m, F, x, y: m.cat([x, y], dim=-1))
case("transpose_neg", [("f", (2, 3, 4))], lambda m, F, x: x.transpose(0, -1))
case("flatten_range", [("f", (2, 3, 4, 2))], lambda m, F, x: x.flatten(1, -2))

# --- item 5: advanced indexing mixing ints, slices and tensors (PyTorch's placement of the array dims)
case("index_issue17", [("f", (2, 3, 7, 4, 3)), ("iv", D.tolist())],
     lambda m, F, x, d: x[1, :, 1:6:2, d, 0:2])
case("index_int_then_array", [("f", (3, 4, 5)), ("iv", [[0, 2], [1, 1]])], lambda m, F, x, d: x[1, :, d])
case("index_array_int_array", [("f", (3, 4, 5)), ("iv", [0, 2, 1])], lambda m, F, x, d: x[d, 1, d])
case("index_0d_tensor_as_int", [("f", (3, 4, 5)), ("iv", 2), ("iv", [[0, 1], [3, 3]])],
     lambda m, F, x, k, d: x[:, k, d])
case("index_two_arrays_apart", [("f", (3, 4, 5)), ("iv", [0, 2]), ("iv", [1, 4])],
     lambda m, F, x, a, b: x[a, :, b])
case("index_bool_mask", [("f", (3, 4)), ("dv", [True, False, True], "bool")], lambda m, F, x, b: x[b, 1:])
case("index_ellipsis_array_int", [("f", (3, 4, 5)), ("iv", [0, 3])], lambda m, F, x, d: x[..., d, 1])
case("index_repeated", [("f", (4, 3)), ("iv", [1, 1, 3])], lambda m, F, x, d: x[d, -1])

# --- item 6: degrees of freedom, cross_entropy edges
case("var_one_element", [("f", (1,))], lambda m, F, x: x.var())
case("var_correction_above_n", [("fv", [1.0, 3.0])], lambda m, F, x: x.var(correction=3))
case("std_one_element", [("f", (1,))], lambda m, F, x: x.std())
case("std_dim_size_one", [("f", (3, 1))], lambda m, F, x: x.std(1))
case("var_dim_correction_above_n", [("f", (3, 2))], lambda m, F, x: x.var(1, correction=3))
case("cross_entropy_label_smoothing_one", [("f", (4, 3)), ("iv", [0, 2, 1, 1])],
     lambda m, F, x, t: F.cross_entropy(x, t, label_smoothing=1.0))
case("cross_entropy_empty_batch", [("f", (0, 3)), ("iv", np.zeros(0, np.int64).tolist())],
     lambda m, F, x, t: F.cross_entropy(x, t))
case("cross_entropy_all_ignored", [("f", (2, 3)), ("iv", [-100, -100])], lambda m, F, x, t: F.cross_entropy(x, t))

# --- new ops (tinygrad's cases for them, scaled down)
case("rsqrt", [("f", (4, 5), 0.1, 3.0)], lambda m, F, x: x.rsqrt())
case("rsqrt_0d", [("f", (), 0.1, 3.0)], lambda m, F, x: m.rsqrt(x))
case("rsqrt_zero", [("fc", [0.0])], lambda m, F, x: x.rsqrt())
case("erf", [("f", (4, 5))], lambda m, F, x: m.erf(x))
case("erf_far", [("f", (3,), 3.0, 6.0)], lambda m, F, x: x.erf())
case("sign", [("f", (4, 5))], lambda m, F, x: x.sign())
case("sign_values", [("fv", [-1.0, 0.0, 1.0])], lambda m, F, x: m.sign(x))
case("sign_int", [("iv", [-3, 0, 2])], lambda m, F, x: m.sign(x))
case("log2", [("f", (4, 5), 0.1, 3.0)], lambda m, F, x: m.log2(x))
case("log10", [("f", (4, 5), 0.1, 3.0)], lambda m, F, x: m.log10(x))
case("log2_special", [("fc", [math.inf, -math.inf, math.nan, 0.0])], lambda m, F, x: x.log2())
case("exp2", [("f", (4, 5))], lambda m, F, x: m.exp2(x))
case("exp2_special", [("fc", [math.inf, -math.inf, math.nan])], lambda m, F, x: x.exp2())
case("isnan", [("fc", [-math.inf, 0.0, math.inf, math.nan, 1.1])], lambda m, F, x: m.isnan(x))
case("isinf", [("fc", [-math.inf, 0.0, math.inf, math.nan, 1.1])], lambda m, F, x: x.isinf())
case("isfinite", [("fc", [-math.inf, 0.0, math.inf, math.nan, 1.1])], lambda m, F, x: x.isfinite())
case("isfinite_int", [("iv", [1, 2])], lambda m, F, x: m.isfinite(x))
case("lerp", [("f", (4, 5)), ("f", (4, 5)), ("f", (4, 5))], lambda m, F, x, y, z: x.lerp(y, z))
case("lerp_scalar_weight", [("fv", [1.0, 2.0, 3.0]), ("fv", [4.0, 5.0, 6.0])], lambda m, F, x, y: x.lerp(y, 0.5))
case("lerp_broadcast", [("f", (3, 4)), ("f", (4,)), ("f", (3, 1))], lambda m, F, x, y, z: m.lerp(x, y, z))
case("prod", [("fv", [1.0, 2.0, 3.0])], lambda m, F, x: x.prod())
case("prod_one_zero", [("fv", [0.0, 2.0, 3.0])], lambda m, F, x: x.prod())
case("prod_two_zeros", [("fv", [0.0, 0.0, 3.0])], lambda m, F, x: x.prod())
case("prod_dim", [("f", (3, 4, 5))], lambda m, F, x: x.prod(dim=2))
case("prod_dim_keepdim", [("f", (3, 4, 5))], lambda m, F, x: x.prod(dim=1, keepdim=True))
case("prod_int", [("iv", [2, 3, 4], "int32")], lambda m, F, x: x.prod())
case("any", [("b", (3, 4, 5))], lambda m, F, x: x.any())
case("any_dims", [("b", (3, 4, 5))], lambda m, F, x: x.any(dim=(1, 2)))
case("any_zero_size_dims", [("b", (1, 0, 3, 0, 2))], lambda m, F, x: x.any(dim=(1, 3)))
case("all", [("b", (3, 4, 5))], lambda m, F, x: x.all())
case("all_dims_keepdim", [("b", (3, 4, 5))], lambda m, F, x: x.all(dim=(0, 2), keepdim=True))
case("all_zero_size_dims", [("b", (1, 0, 3, 0, 2))], lambda m, F, x: x.all(dim=(1, 3)))
case("any_float", [("fc", [0.0, 0.5])], lambda m, F, x: m.any(x))
case("gather_dim0", [("f", (4, 5, 6)), ("i", (3, 4, 5), 0, 3)], lambda m, F, x, i: x.gather(0, i))
case("gather_dim1", [("f", (4, 5, 6)), ("i", (3, 4, 5), 0, 3)], lambda m, F, x, i: x.gather(1, i))
case("gather_dim_neg1", [("f", (4, 5, 6)), ("i", (3, 4, 5), 0, 3)], lambda m, F, x, i: m.gather(x, -1, i))
case("gather_repeated", [("f", (2, 3)), ("iv", [[0, 0, 2], [1, 1, 1]])], lambda m, F, x, i: x.gather(1, i))
case("one_hot", [("iv", [1, 2, 4])], lambda m, F, t: F.one_hot(t, 6))
case("one_hot_3d", [("iv", [[[1, 2, 3], [0, 3, 5]], [[1, 2, 3], [0, 3, 5]]])], lambda m, F, t: F.one_hot(t, 8))
case("one_hot_infer", [("iv", [0, 3, 1])], lambda m, F, t: F.one_hot(t))
case("masked_fill", [("f", (6, 5))], lambda m, F, x: x.masked_fill((x > 0.1).detach(), -math.inf))
case("masked_fill_lt", [("f", (6, 5))], lambda m, F, x: x.masked_fill((x < 0.1).detach(), 2.5))
case("masked_fill_broadcast_mask", [("f", (3, 4)), ("b", (4,))], lambda m, F, x, b: m.masked_fill(x, b, 0.0))
case("masked_fill_tensor_value", [("f", (3, 4)), ("b", (3, 4)), ("fv", 1.5)],
     lambda m, F, x, b, v: x.masked_fill(b, v))
case("split_int", [("f", (10,))], lambda m, F, x: x.split(3))
case("split_sizes", [("f", (10,))], lambda m, F, x: x.split([1, 4, 5]))
case("split_dim1", [("f", (3, 4))], lambda m, F, x: x.split(1, dim=1))
case("split_sizes_dim1", [("f", (4, 4))], lambda m, F, x: m.split(x, [2, 2], dim=1))
case("chunk", [("f", (8, 13))], lambda m, F, x: x.chunk(6, 1))
case("chunk_dim0", [("f", (8, 13))], lambda m, F, x: x.chunk(6, 0))
case("chunk_neg", [("f", (8, 13))], lambda m, F, x: m.chunk(x, 3, -1))
case("unflatten", [("f", (4, 3, 6))], lambda m, F, x: x.unflatten(0, (2, 2)))
case("unflatten_last", [("f", (4, 3, 6))], lambda m, F, x: x.unflatten(-1, (3, 2, 1)))
case("unflatten_infer", [("f", (4, 6))], lambda m, F, x: m.unflatten(x, 1, (-1, 2)))
case("pad", [("f", (2, 3, 3))], lambda m, F, x: F.pad(x, (1, 2, 3, 4)))
case("pad_crop", [("f", (2, 3, 3))], lambda m, F, x: F.pad(x, (-1, 2, -2, 1)))
case("pad_value", [("f", (3, 3))], lambda m, F, x: F.pad(x, (1, 2, 3, 4), value=5.0))
case("pad_inf", [("f", (3, 3))], lambda m, F, x: F.pad(x, (-1, 2, -1, 1), value=-math.inf))
case("pad_one_dim", [("f", (3, 3))], lambda m, F, x: F.pad(x, (0, 0, 3, 4), value=1.0))
case("flip", [("f", (4, 3, 5))], lambda m, F, x: x.flip((0,)))
case("flip_dims", [("f", (4, 3, 5))], lambda m, F, x: x.flip((0, 1, 2)))
case("flip_neg", [("f", (4, 3, 5))], lambda m, F, x: m.flip(x, (-1,)))
case("flip_none", [("f", (4, 3))], lambda m, F, x: x.flip(()))
case("flip_0d", [("f", ())], lambda m, F, x: x.flip(()))
case("tril", [("f", (3, 3))], lambda m, F, x: x.tril())
case("tril_k1", [("f", (3, 3))], lambda m, F, x: x.tril(1))
case("tril_neg", [("f", (4, 5))], lambda m, F, x: x.tril(-2))
case("tril_wide", [("f", (4, 5))], lambda m, F, x: m.tril(x, 6))
case("tril_batched", [("f", (5, 3, 3))], lambda m, F, x: x.tril())
case("tril_empty", [("f", (5, 0, 3))], lambda m, F, x: x.tril())
case("triu", [("f", (3, 3))], lambda m, F, x: x.triu())
case("triu_k2", [("f", (4, 5))], lambda m, F, x: x.triu(2))
case("triu_neg", [("f", (4, 5))], lambda m, F, x: m.triu(x, -4))
case("triu_batched", [("f", (5, 3, 3))], lambda m, F, x: x.triu(1))

# --- losses
case("binary_cross_entropy", [("f", (6, 4)), ("f", (6, 4), 0.0, 1.0)],
     lambda m, F, x, y: F.binary_cross_entropy(x.sigmoid(), y))
case("binary_cross_entropy_sum", [("f", (6, 4)), ("f", (6, 4), 0.0, 1.0)],
     lambda m, F, x, y: F.binary_cross_entropy(x.sigmoid(), y, reduction="sum"))
case("binary_cross_entropy_none_weight", [("f", (6, 4)), ("f", (6, 4), 0.0, 1.0), ("fc", [0.5, 1.0, 2.0, 0.0])],
     lambda m, F, x, y, w: F.binary_cross_entropy(x.sigmoid(), y, weight=w, reduction="none"))
case("binary_cross_entropy_saturated", [("fv", [0.0, 1.0, 0.5, 1.0]), ("fc", [1.0, 0.0, 0.5, 1.0])],
     lambda m, F, p, y: F.binary_cross_entropy(p, y), rtol=1e-8)
case("bce_with_logits", [("f", (6, 4)), ("f", (6, 4), 0.0, 1.0)],
     lambda m, F, x, y: F.binary_cross_entropy_with_logits(x, y))
case("bce_with_logits_pos_weight", [("f", (6, 4)), ("f", (6, 4), 0.0, 1.0), ("fc", [0.5, 1.0, 2.0, 3.0])],
     lambda m, F, x, y, pw: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw))
case("bce_with_logits_weight_none", [("f", (6, 4)), ("f", (6, 4), 0.0, 1.0), ("fc", [[0.5], [1.0], [2.0], [3.0],
                                                                                         [0.0], [1.0]])],
     lambda m, F, x, y, w: F.binary_cross_entropy_with_logits(x, y, weight=w, reduction="none"))
case("bce_with_logits_large", [("fv", [-50.0, 50.0, 0.0]), ("fc", [1.0, 0.0, 1.0])],
     lambda m, F, x, y: F.binary_cross_entropy_with_logits(x, y, reduction="sum"))
case("l1_loss", [("f", (5, 3)), ("f", (5, 3))], lambda m, F, x, y: F.l1_loss(x, y))
case("l1_loss_none", [("f", (5, 3)), ("f", (5, 3))], lambda m, F, x, y: F.l1_loss(x, y, reduction="none"))
case("smooth_l1_loss", [("f", (5, 3)), ("f", (5, 3))], lambda m, F, x, y: F.smooth_l1_loss(x, y))
case("smooth_l1_loss_beta", [("f", (5, 3)), ("f", (5, 3))],
     lambda m, F, x, y: F.smooth_l1_loss(x, y, reduction="sum", beta=0.5))
case("smooth_l1_loss_beta0", [("f", (5, 3)), ("f", (5, 3))], lambda m, F, x, y: F.smooth_l1_loss(x, y, beta=0.0))
case("huber_loss", [("f", (5, 3)), ("f", (5, 3))], lambda m, F, x, y: F.huber_loss(x, y))
case("huber_loss_delta", [("f", (5, 3)), ("f", (5, 3))],
     lambda m, F, x, y: F.huber_loss(x, y, reduction="none", delta=0.7))
case("cross_entropy_probs", [("f", (5, 4)), ("f", (5, 4), 0.0, 1.0)],
     lambda m, F, x, q: F.cross_entropy(x, q.softmax(-1)))
case("cross_entropy_probs_smoothing_weight", [("f", (5, 4)), ("f", (5, 4), 0.0, 1.0), ("fc", [0.5, 1.0, 2.0, 0.3])],
     lambda m, F, x, q, w: F.cross_entropy(x, q.softmax(-1), weight=w, label_smoothing=0.2, reduction="none"))
case("cross_entropy_weight", [("f", (6, 4)), ("iv", [0, 3, 1, 1, 2, 0]), ("fc", [0.5, 1.0, 2.0, 0.3])],
     lambda m, F, x, t, w: F.cross_entropy(x, t, weight=w))
case("cross_entropy_weight_sum", [("f", (6, 4)), ("iv", [0, 3, 1, 1, 2, 0]), ("fc", [0.5, 1.0, 2.0, 0.3])],
     lambda m, F, x, t, w: F.cross_entropy(x, t, weight=w, reduction="sum"))
case("cross_entropy_weight_smoothing", [("f", (6, 4)), ("iv", [0, 3, 1, 1, 2, 0]), ("fc", [0.5, 1.0, 2.0, 0.3])],
     lambda m, F, x, t, w: F.cross_entropy(x, t, weight=w, label_smoothing=0.3))
case("cross_entropy_weight_ignore", [("f", (6, 4)), ("iv", [0, -100, 1, 1, -100, 3]), ("fc", [0.5, 1.0, 2.0, 0.3])],
     lambda m, F, x, t, w: F.cross_entropy(x, t, weight=w, label_smoothing=0.1))
case("cross_entropy_weight_none", [("f", (6, 4)), ("iv", [0, 3, 1, 1, 2, 0]), ("fc", [0.5, 1.0, 2.0, 0.3])],
     lambda m, F, x, t, w: F.cross_entropy(x, t, weight=w, reduction="none"))
case("cross_entropy_3d", [("f", (4, 3, 2, 2)), ("i", (4, 2, 2), 0, 3)], lambda m, F, x, t: F.cross_entropy(x, t))
case("cross_entropy_unbatched", [("f", (5,)), ("iv", 3)], lambda m, F, x, t: F.cross_entropy(x, t))
case("nll_loss_weight", [("f", (6, 4)), ("iv", [0, 3, 1, 1, 2, 0]), ("fc", [0.5, 1.0, 2.0, 0.3])],
     lambda m, F, x, t, w: F.nll_loss(x.log_softmax(1), t, weight=w))
case("nll_loss_weight_ignore_none", [("f", (6, 4)), ("iv", [0, -100, 1, 1, 2, 0]), ("fc", [0.5, 1.0, 2.0, 0.3])],
     lambda m, F, x, t, w: F.nll_loss(x.log_softmax(1), t, weight=w, reduction="none"))
case("nll_loss_3d", [("f", (4, 3, 2)), ("i", (4, 2), 0, 3)], lambda m, F, x, t: F.nll_loss(x.log_softmax(1), t))

# --- layers an MLP user reaches for
case("layer_norm", [("f", (4, 6)), ("f", (6,)), ("f", (6,))], lambda m, F, x, w, b: F.layer_norm(x, (6,), w, b))
case("layer_norm_2d_shape", [("f", (2, 3, 4)), ("f", (3, 4)), ("f", (3, 4))],
     lambda m, F, x, w, b: F.layer_norm(x, (3, 4), w, b, eps=1e-3))
case("layer_norm_no_affine", [("f", (3, 5))], lambda m, F, x: F.layer_norm(x, (5,)))
case("layer_norm_constant_row", [("fv", [[1.0, 1.0, 1.0], [1.0, 2.0, 4.0]])], lambda m, F, x: F.layer_norm(x, (3,)))
case("embedding", [("iv", [[0, 2], [4, 2]]), ("f", (5, 3))], lambda m, F, i, w: F.embedding(i, w))
case("embedding_padding", [("iv", [0, 2, 0, 3]), ("f", (5, 3))], lambda m, F, i, w: F.embedding(i, w, padding_idx=0))

# --- a few of the basics, in tinygrad's style
case("add_broadcast", [("f", (3, 4)), ("f", (4,))], lambda m, F, x, y: x + y)
case("div_broadcast", [("f", (3, 4)), ("f", (3, 1), 0.5, 2.0)], lambda m, F, x, y: x / y)
case("matmul", [("f", (3, 4)), ("f", (4, 5))], lambda m, F, x, y: x @ y)
case("softmax_dim0", [("f", (3, 4))], lambda m, F, x: x.softmax(0))
case("log_softmax", [("f", (3, 4))], lambda m, F, x: x.log_softmax(-1))
case("max_dim_values_indices", [("f", (3, 4))], lambda m, F, x: x.max(dim=1))
case("var_std", [("f", (3, 4))], lambda m, F, x: (x.var(0), x.std(1, keepdim=True)))
case("where_grad", [("b", (3, 4)), ("f", (3, 4)), ("f", (4,))], lambda m, F, c, x, y: m.where(c, x, y))
case("maximum_ties", [("fv", [1.0, 2.0, 3.0]), ("fv", [1.0, 1.0, 4.0])], lambda m, F, x, y: m.maximum(x, y))
CASES = {c.name: c for c in C}
assert len(CASES) == len(C), "duplicate case names"


# ------------------------------------------------------------------------------------------------ error cases
# Misuse that PyTorch answers with an exception: gpugrad must raise an instance of the same class.
def _e(name: str, fn: Callable) -> tuple:
    return name, fn


ERROR_CASES = dict([
    _e("matmul_inner_mismatch", lambda m, F: m.ones(2, 3) @ m.ones(4, 5)),
    _e("matmul_0d", lambda m, F: m.matmul(m.ones(()), m.ones(3))),
    _e("matmul_dtype_mismatch", lambda m, F: m.ones(2, 3) @ m.ones(3, 2, dtype=m.float64)),
    _e("reshape_bad_size", lambda m, F: m.ones(2, 3).reshape(5)),
    _e("view_bad_size", lambda m, F: m.ones(2, 3).view(4, 2)),
    _e("permute_wrong_length", lambda m, F: m.ones(2, 3, 4).permute(0, 1)),
    _e("permute_repeated", lambda m, F: m.ones(2, 3, 4).permute(0, 1, 1)),
    _e("permute_out_of_range", lambda m, F: m.ones(2, 3).permute(0, 5)),
    _e("broadcast_mismatch", lambda m, F: m.ones(2, 3) + m.ones(4)),
    _e("expand_bad", lambda m, F: m.ones(2, 3).expand(4, 4)),
    _e("cat_shape_mismatch", lambda m, F: m.cat([m.ones(2, 3), m.ones(3, 4)], 0)),
    _e("cat_0d", lambda m, F: m.cat([m.ones(()), m.ones(())])),
    _e("cat_empty_list", lambda m, F: m.cat([])),
    _e("stack_shape_mismatch", lambda m, F: m.stack([m.ones(2), m.ones(3)])),
    _e("squeeze_dim_out_of_range", lambda m, F: m.ones(1, 2, 3, 4).squeeze(50)),
    _e("unsqueeze_dim_out_of_range", lambda m, F: m.ones(1, 2, 3, 4).unsqueeze(5)),
    _e("transpose_dim_out_of_range", lambda m, F: m.ones(2, 3, 4).transpose(0, 7)),
    _e("flatten_dim_out_of_range", lambda m, F: m.ones(2, 3, 4, 5).flatten(0, 9)),
    _e("flatten_start_after_end", lambda m, F: m.ones(2, 3, 4).flatten(2, 1)),
    _e("stack_dim_out_of_range", lambda m, F: m.stack([m.ones(2, 3), m.ones(2, 3)], dim=77)),
    _e("cat_dim_out_of_range", lambda m, F: m.cat([m.ones(2, 3), m.ones(2, 3)], dim=5)),
    _e("sum_dim_out_of_range", lambda m, F: m.ones(2, 3).sum(5)),
    _e("sum_dim_repeated", lambda m, F: m.ones(2, 3).sum((0, 0))),
    _e("softmax_dim_out_of_range", lambda m, F: m.ones(2, 3).softmax(2)),
    _e("argmax_dim_out_of_range", lambda m, F: m.ones(2, 3).argmax(-3)),
    _e("max_dim_out_of_range", lambda m, F: m.ones(2, 3).max(2)),
    _e("sum_0d_dim_1", lambda m, F: m.ones(()).sum(1)),
    _e("flip_repeated_dim", lambda m, F: m.ones(3, 4).flip((1, -1))),
    _e("index_out_of_range", lambda m, F: m.ones(3)[5]),
    _e("item_of_many", lambda m, F: m.ones(2).item()),
    _e("bool_of_many", lambda m, F: bool(m.ones(2))),
    _e("requires_grad_int", lambda m, F: m.ones(2, dtype=m.int64).requires_grad_()),
    _e("linear_shape_mismatch", lambda m, F: F.linear(m.ones(2, 3), m.ones(4, 5))),
    _e("mse_not_broadcastable", lambda m, F: F.mse_loss(m.ones(2, 3), m.ones(4))),
    _e("cross_entropy_target_out_of_range", lambda m, F: F.cross_entropy(m.ones(2, 3), m.tensor([0, 3]))),
    _e("cross_entropy_batch_mismatch", lambda m, F: F.cross_entropy(m.ones(3, 4), m.zeros(2, dtype=m.int64))),
    _e("cross_entropy_float_class_target", lambda m, F: F.cross_entropy(m.ones(3, 4), m.zeros(3))),
    _e("nll_loss_float_target", lambda m, F: F.nll_loss(m.ones(3, 4), m.zeros(3))),
    _e("mean_of_int", lambda m, F: m.ones(3, dtype=m.int64).mean()),
    _e("var_of_int", lambda m, F: m.ones(3, dtype=m.int64).var()),
    _e("max_of_empty", lambda m, F: m.ones(0).max()),
    _e("gather_index_out_of_range", lambda m, F: m.ones(2, 3).gather(1, m.tensor([[0, 5], [1, 1]]))),
    _e("gather_dims_mismatch", lambda m, F: m.ones(2, 3).gather(1, m.tensor([0, 1]))),
    _e("one_hot_negative", lambda m, F: F.one_hot(m.tensor([0, -1, 2]), 3)),
    _e("one_hot_too_small", lambda m, F: F.one_hot(m.tensor([0, 3]), 3)),
    _e("one_hot_float", lambda m, F: F.one_hot(m.tensor([0.0, 1.0]), 3)),
    _e("split_sizes_mismatch", lambda m, F: m.ones(5).split([2, 2])),
    _e("chunk_zero", lambda m, F: m.ones(5).chunk(0)),
    _e("unflatten_bad_sizes", lambda m, F: m.ones(6).unflatten(0, (4, -1))),
    _e("masked_fill_int_mask", lambda m, F: m.ones(3).masked_fill(m.tensor([1, 0, 1]), 0.0)),
    _e("tril_1d", lambda m, F: m.ones(3).tril()),
    _e("embedding_index_out_of_range", lambda m, F: F.embedding(m.tensor([0, 7]), m.ones(5, 3))),
    _e("layer_norm_shape_mismatch", lambda m, F: F.layer_norm(m.ones(2, 3), (4,))),
    _e("bce_out_of_range", lambda m, F: F.binary_cross_entropy(m.tensor([0.5, 1.5]), m.tensor([0.0, 1.0]))),
    _e("bce_size_mismatch", lambda m, F: F.binary_cross_entropy(m.ones(3, 1) * 0.5, m.ones(3))),
    _e("reduction_unknown", lambda m, F: F.l1_loss(m.ones(2), m.ones(2), reduction="avg")),
    _e("pad_odd_length", lambda m, F: F.pad(m.ones(3, 3), (2, 0, 2))),
])
