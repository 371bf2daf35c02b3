"""Dtypes are NumPy dtypes; these names mirror PyTorch's."""
from __future__ import annotations

import builtins

import numpy as np

float16 = half = np.dtype("float16")
float32 = float = np.dtype("float32")  # noqa: A001
float64 = double = np.dtype("float64")
int32 = np.dtype("int32")
int64 = long = np.dtype("int64")
uint8 = np.dtype("uint8")
bool_ = np.dtype("bool")

_default = float32


def get_default_dtype() -> np.dtype:
    """The dtype new floating tensors get (float32 unless changed)."""
    return _default


def set_default_dtype(dt) -> None:
    """Set the dtype that Python floats become (float32 or float64)."""
    global _default
    dt = np.dtype(dt)
    if dt.kind != "f":
        raise TypeError(f"set_default_dtype: expected a floating dtype, got {dt}")
    _default = dt


def as_dtype(dt) -> np.dtype | None:
    if dt is None:
        return None
    try:
        return np.dtype(dt)
    except TypeError as e:
        raise TypeError(f"unknown dtype {dt!r}; use gg.float32, gg.float64, gg.float16, gg.int64 ...") from e


# ------------------------------------------------------------------------------------ type promotion
# PyTorch's rules (c10/core/ScalarType.h promoteTypes, aten's result_type), in one place. Categories:
# bool < integer < floating. Operands come in three priorities: tensors with dimensions, 0-d tensors,
# and Python (or NumPy) scalars; a lower-priority operand changes the result only when its category is
# higher (float32 tensor + 0-d float64 tensor -> float32; int tensor + 0.5 -> the default float dtype).
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}


def promote_types(a: np.dtype, b: np.dtype) -> np.dtype:
    """PyTorch's ``torch.promote_types``: an integer or bool meeting a floating type gives that floating
    type (int64 + float16 -> float16, where NumPy gives float64); within a category NumPy's table holds."""
    if a == b:
        return a
    ca, cb = _CATEGORY.get(a.kind, 3), _CATEGORY.get(b.kind, 3)
    if ca != cb and 2 in (ca, cb) and 3 not in (ca, cb):
        return a if ca > cb else b
    return np.promote_types(a, b)


def scalar_dtype(x) -> np.dtype:
    """The dtype a Python (or NumPy) scalar stands for: bool, int64, or the default float dtype."""
    if isinstance(x, (bool, np.bool_)):
        return bool_
    if isinstance(x, (int, np.integer)):
        return int64
    if isinstance(x, (builtins.float, np.floating)):
        return _default
    raise TypeError(f"expected a tensor or a Python number, got {type(x).__name__}")


def _combine(higher: np.dtype | None, lower: np.dtype | None) -> np.dtype | None:
    """aten's ``combine_categories``: the lower-priority dtype counts only if its category is higher."""
    if higher is None:
        return lower
    if lower is None or higher.kind == "f":
        return higher
    if higher.kind == "b" or lower.kind == "f":
        return promote_types(higher, lower)
    return higher


def result_type(*operands) -> np.dtype:
    """``torch.result_type`` over raw arrays (NumPy/CuPy, of any device) and Python scalars."""
    dim = zero = wrapped = None
    for x in operands:
        if x is None:
            continue
        if isinstance(x, np.generic) or not hasattr(x, "dtype"):
            d = scalar_dtype(x)
            wrapped = d if wrapped is None else promote_types(wrapped, d)
        elif x.ndim:
            dim = x.dtype if dim is None else promote_types(dim, x.dtype)
        else:
            zero = x.dtype if zero is None else promote_types(zero, x.dtype)
    out = _combine(dim, _combine(zero, wrapped))
    if out is None:
        raise TypeError("result_type: no operands")
    return out


def float_result(dt: np.dtype) -> np.dtype:
    """The dtype of a floating-point function of ``dt`` (``exp``, ``sqrt``, true division): ``dt`` if
    floating, else the default float dtype (PyTorch: ``torch.exp`` of an int64 tensor is float32)."""
    return dt if dt.kind == "f" else _default


def sum_result(dt: np.dtype) -> np.dtype:
    """The dtype of ``sum``/``prod`` over ``dt``: bool and every integer type accumulate in int64."""
    return int64 if dt.kind in "biu" else dt


def promote(a, b, op_float: bool = False):
    """``(a, b, dtype)``: the two operands of a binary op cast to their PyTorch result dtype (a Python
    scalar stays a scalar: NumPy keeps an array's dtype against it). ``op_float``: the op's result is
    floating whatever its inputs (true division)."""
    dt = result_type(a, b)
    if op_float:
        dt = float_result(dt)
    return _cast_operand(a, dt), _cast_operand(b, dt), dt


def _cast_operand(x, dt: np.dtype):
    if isinstance(x, np.generic):  # a NumPy scalar is typed (NEP 50): pass it on as a Python number
        return x.item()
    if hasattr(x, "dtype") and x.dtype != dt:
        return x.astype(dt)
    return x
