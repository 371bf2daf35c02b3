"""``gg.nn.init``: in-place parameter initialisers with PyTorch's formulas, drawing from the
device's seeded generator (``gg.manual_seed`` makes them reproducible)."""
from __future__ import annotations

import math

import numpy as np

from ..autograd.function import named_error
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "kaiming_uniform_",
           "kaiming_normal_", "xavier_uniform_", "xavier_normal_", "trunc_normal_", "siren_uniform_"]


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for an activation (PyTorch's table)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid", "identity")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    if nonlinearity in ("gelu", "gelu_tanh"):
        return math.sqrt(2.0)  # not in PyTorch's table; ReLU's gain is the usual choice
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _check(op: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise named_error(TypeError, f"{op}: expected a Tensor, got {type(t).__name__}")
    if t.dtype.kind != "f":
        raise named_error(TypeError, f"{op}: expected a floating-point tensor, got {t.dtype}")


def _calculate_fan_in_and_fan_out(t: Tensor) -> tuple[int, int]:
    if t.ndim < 2:
        raise named_error(ValueError, f"init: fan in and fan out need a tensor with at least 2 dimensions, "
                          f"got shape {tuple(t.shape)}")
    receptive = 1
    for s in t.shape[2:]:
        receptive *= int(s)
    return int(t.shape[1]) * receptive, int(t.shape[0]) * receptive


def _fan(t: Tensor, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(t)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
    """Fill with U(a, b)."""
    _check("uniform_", tensor)
    with no_grad():
        return tensor.uniform_(a, b)


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
    """Fill with N(mean, std^2)."""
    _check("normal_", tensor)
    with no_grad():
        return tensor.normal_(mean, std)


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Tensor:
    """Fill with N(mean, std^2) truncated to [a, b] (inverse-CDF method, as PyTorch)."""
    _check("trunc_normal_", tensor)

    def norm_cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
    with no_grad():
        be = tensor._backend()
        xp = be.xp
        p = be.rand(tuple(tensor.shape), "float64") * (hi - lo) + lo  # uniform on [cdf(a), cdf(b)]
        v = _normal_quantile(be.to_numpy(p)) * std + mean
        tensor.data[...] = xp.clip(be.from_numpy(v), a, b).astype(tensor.dtype)
        tensor._vc[0] += 1
    return tensor


# Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9 over (0, 1)):
# NumPy only, where PyTorch uses erfinv (the same quantity: erfinv(2p - 1) * sqrt(2)).
_Q_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
        -3.066479806614716e+01, 2.506628277459239e+00)
_Q_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
        -1.328068155288572e+01, 1.0)
_Q_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
        4.374664141464968e+00, 2.938163982698783e+00)
_Q_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00, 1.0)


def _normal_quantile(p: np.ndarray) -> np.ndarray:
    """The standard normal's inverse CDF of ``p`` (float64 array in [0, 1]; 0 and 1 give -inf, inf)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.empty_like(p)
    tail = np.minimum(p, 1.0 - p)
    mid = tail >= 0.02425
    q = p[mid] - 0.5
    r = q * q
    out[mid] = q * np.polyval(_Q_A, r) / np.polyval(_Q_B, r)
    t = ~mid
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(-2.0 * np.log(tail[t]))
        x = np.where(np.isinf(s), -np.inf, np.polyval(_Q_C, s) / np.polyval(_Q_D, s))
    out[t] = np.where(p[t] < 0.5, x, -x)
    return out


def constant_(tensor: Tensor, val: float) -> Tensor:
    _check("constant_", tensor)
    with no_grad():
        return tensor.fill_(val)


def zeros_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 0.0)


def ones_(tensor: Tensor) -> Tensor:
    return constant_(tensor, 1.0)


def kaiming_uniform_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """He uniform: U(-bound, bound), bound = gain * sqrt(3 / fan). ``a=sqrt(5)`` gives PyTorch's
    ``Linear`` default, bound = 1/sqrt(fan_in)."""
    _check("kaiming_uniform_", tensor)
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor
    gain = calculate_gain(nonlinearity, a)
    bound = math.sqrt(3.0) * (gain / math.sqrt(fan))
    return uniform_(tensor, -bound, bound)


def siren_uniform_(tensor: Tensor, omega_0: float = 30.0, is_first: bool = False) -> Tensor:
    """SIREN's weights (Sitzmann et al. 2020) for a layer followed by ``sin``, with ``omega_0`` folded in
    (the layer computes ``sin(W' x + b')`` for the paper's ``sin(omega_0 (W x + b))``): the first layer
    ``U(-omega_0/fan_in, omega_0/fan_in)`` (the paper's ``U(-1/fan_in, 1/fan_in)`` times ``omega_0``),
    later layers ``U(-sqrt(6/fan_in), sqrt(6/fan_in))`` (``U(-sqrt(6/fan_in)/omega_0, ...)`` times
    ``omega_0``)."""
    _check("siren_uniform_", tensor)
    fan = _fan(tensor, "fan_in")
    if fan == 0:
        return tensor
    bound = float(omega_0) / fan if is_first else math.sqrt(6.0 / fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
    """He normal: N(0, std^2), std = gain / sqrt(fan)."""
    _check("kaiming_normal_", tensor)
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    _check("xavier_uniform_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
    """Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    _check("xavier_normal_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std)
