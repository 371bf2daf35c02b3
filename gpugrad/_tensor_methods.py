"""Operators and methods of ``Tensor``, bound to the functions in ``gpugrad.ops``."""
from __future__ import annotations

from . import ops as F
from .ops import elementwise as _e
from .autograd.grad_mode import STATE
from .tensor import Tensor


def _rsub(self, other):
    return F.sub(other, self)


def _rdiv(self, other):
    return F.div(other, self)


def _rpow(self, other):
    return F.pow(other, self)


def _rmatmul(self, other):
    return F.matmul(other, self)


def _iop(name: str, method: str):
    """``x += y`` edits in place, except for a tensor that requires grad while grad mode is on:
    then it rebinds ``x`` to a new tensor (gpugrad records no in-place ops in graphs)."""
    out_of_place = getattr(F, name)

    def f(self, other):
        if self._requires_grad and STATE.grad_enabled:
            return out_of_place(self, other)
        return getattr(self, method)(other)
    return f


# The hottest operators and methods bind their Function's apply directly: one Python frame less per op
# than the ``gpugrad.ops`` wrappers (which stay plain functions: named parameters, keyword calls).
_METHODS = {
    "__add__": _e.Add.apply, "__radd__": _e.Add.apply, "__sub__": _e.Sub.apply, "__rsub__": _rsub,
    "__mul__": _e.Mul.apply, "__rmul__": _e.Mul.apply, "__truediv__": _e.Div.apply, "__rtruediv__": _rdiv,
    "__pow__": F.pow, "__rpow__": _rpow, "__matmul__": F.matmul, "__rmatmul__": _rmatmul,
    "__neg__": _e.Neg.apply, "__abs__": F.abs, "__getitem__": F.getitem,
    "__lt__": F.lt, "__le__": F.le, "__gt__": F.gt, "__ge__": F.ge, "__eq__": F.eq, "__ne__": F.ne,
    "__iadd__": _iop("add", "add_"), "__isub__": _iop("sub", "sub_"),
    "__imul__": _iop("mul", "mul_"), "__itruediv__": _iop("div", "div_"),
    "add": _e.Add.apply, "sub": _e.Sub.apply, "mul": _e.Mul.apply, "div": _e.Div.apply, "pow": F.pow,
    "matmul": F.matmul,
    "neg": F.neg, "abs": F.abs, "exp": F.exp, "log": F.log, "sqrt": F.sqrt, "sin": F.sin, "cos": F.cos,
    "tanh": F.tanh, "sigmoid": F.sigmoid, "relu": F.relu, "clamp": F.clamp, "clip": F.clamp,
    "maximum": F.maximum, "minimum": F.minimum,
    "sum": F.sum, "mean": F.mean, "max": F.max, "min": F.min, "amax": F.amax, "amin": F.amin,
    "var": F.var, "std": F.std, "logsumexp": F.logsumexp, "softmax": F.softmax, "log_softmax": F.log_softmax,
    "argmax": F.argmax, "argmin": F.argmin,
    "reshape": F.reshape, "view": F.reshape, "permute": F.permute, "transpose": F.transpose,
    "flatten": F.flatten, "unsqueeze": F.unsqueeze, "squeeze": F.squeeze, "expand": F.expand,
    "eq": F.eq, "ne": F.ne, "lt": F.lt, "le": F.le, "gt": F.gt, "ge": F.ge,
    "rsqrt": F.rsqrt, "erf": F.erf, "sign": F.sign, "log2": F.log2, "exp2": F.exp2, "log10": F.log10,
    "isnan": F.isnan, "isinf": F.isinf, "isfinite": F.isfinite, "lerp": F.lerp, "masked_fill": F.masked_fill,
    "prod": F.prod, "any": F.any, "all": F.all, "gather": F.gather, "split": F.split, "chunk": F.chunk,
    "unflatten": F.unflatten, "flip": F.flip, "tril": F.tril, "triu": F.triu,
}

for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)


def _T(self) -> Tensor:
    return F.permute(self, tuple(range(self.ndim - 1, -1, -1))) if self.ndim >= 2 else self


def _expand_as(self, other: Tensor) -> Tensor:
    return F.expand(self, other.shape)


def _view_as(self, other: Tensor) -> Tensor:
    return F.reshape(self, other.shape)


Tensor.T = property(_T)
Tensor.mT = property(lambda self: F.transpose(self, -2, -1))
Tensor.expand_as = _expand_as
Tensor.view_as = _view_as
Tensor.reshape_as = _view_as
