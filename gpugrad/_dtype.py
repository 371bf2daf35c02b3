"""Dtypes are NumPy dtypes; these names mirror PyTorch's."""
from __future__ import annotations

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
