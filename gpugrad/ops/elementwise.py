"""Element-wise arithmetic and math functions (forward and backward side by side)."""
from __future__ import annotations

import math

from ..autograd.function import Context, Function
from .. import _dtype
from ..kernels import activations as _A
from ..kernels.activations import saves
from ._common import check_broadcast


_SCALARS = (int, float)


# Add, Sub, Mul and Div are the hottest ops: their shape check and gradient reduction take the common
# cases (same shapes, a Python scalar operand, nothing to reduce) inline, without a helper call.
class Add(Function):
    name = "add"

    @staticmethod
    def forward(ctx: Context, a, b):
        ctx.shapes = ((a.shape, ()) if b.__class__ in _SCALARS and hasattr(a, "shape") else (a.shape, b.shape)
                      if b.__class__ is a.__class__ and a.shape == b.shape else check_broadcast("add", a, b))
        return a + b

    @staticmethod
    def backward(ctx: Context, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        s = ctx.backend.sum_to_shape
        return ((g if g.shape == sa else s(g, sa)) if na else None,
                (g if g.shape == sb else s(g, sb)) if nb else None)


class Sub(Function):
    name = "sub"

    @staticmethod
    def forward(ctx: Context, a, b):
        ctx.shapes = ((a.shape, ()) if b.__class__ in _SCALARS and hasattr(a, "shape") else (a.shape, b.shape)
                      if b.__class__ is a.__class__ and a.shape == b.shape else check_broadcast("sub", a, b))
        return a - b

    @staticmethod
    def backward(ctx: Context, g):
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        s = ctx.backend.sum_to_shape
        return ((g if g.shape == sa else s(g, sa)) if na else None,
                (-g if g.shape == sb else s(-g, sb)) if nb else None)


class Mul(Function):
    name = "mul"

    @staticmethod
    def forward(ctx: Context, a, b):
        ctx.shapes = ((a.shape, ()) if b.__class__ in _SCALARS and hasattr(a, "shape") else (a.shape, b.shape)
                      if b.__class__ is a.__class__ and a.shape == b.shape else check_broadcast("mul", a, b))
        na, nb = ctx.needs_input_grad
        ctx._to_save = (a if nb else None, b if na else None)  # ctx.save_for_backward, inline
        return a * b

    @staticmethod
    def backward(ctx: Context, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        s = ctx.backend.sum_to_shape
        ga = gb = None
        if na:
            ga = g * b
            if ga.shape != sa:
                ga = s(ga, sa)
        if nb:
            gb = g * a
            if gb.shape != sb:
                gb = s(gb, sb)
        return ga, gb


class Div(Function):
    name = "div"

    @staticmethod
    def forward(ctx: Context, a, b):
        ctx.shapes = ((a.shape, ()) if b.__class__ in _SCALARS and hasattr(a, "shape") else (a.shape, b.shape)
                      if b.__class__ is a.__class__ and a.shape == b.shape else check_broadcast("div", a, b))
        out = a / b
        ctx._to_save = (b, out if ctx.needs_input_grad[1] else None)
        return out

    @staticmethod
    def backward(ctx: Context, g):
        b, out = ctx.saved_tensors
        sa, sb = ctx.shapes
        na, nb = ctx.needs_input_grad
        s = ctx.backend.sum_to_shape
        ga = g / b
        gb = None
        if nb:
            gb = -ga * out
            if gb.shape != sb:
                gb = s(gb, sb)
        if na and ga.shape != sa:
            ga = s(ga, sa)
        return (ga if na else None), gb


class Pow(Function):
    name = "pow"

    @staticmethod
    def forward(ctx: Context, a, b):
        ctx.shapes = check_broadcast("pow", a, b)
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Context, g):
        a, b, out = ctx.saved_tensors
        xp = ctx.backend.xp
        s = ctx.backend.sum_to_shape
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            ga = s(g * b * a ** (b - 1), ctx.shapes[0])
        if nb:
            if ctx.backend.is_array(a):
                with_log = xp.where(a > 0, xp.log(xp.where(a > 0, a, 1)), 0)
            else:  # a Python number (``2.0 ** t``): its log on the host (xp.where needs a device array)
                with_log = math.log(a) if a > 0 else 0.0
            gb = s(g * out * with_log, ctx.shapes[1])
        return ga, gb


def _unary(name: str, fwd, bwd, save: str):
    """Build a unary Function; ``save`` is 'x' (derivative from input) or 'y' (from output)."""

    def forward(ctx: Context, x):
        y = fwd(ctx.backend, x)
        ctx.save_for_backward(x if save == "x" else y)
        return y

    def backward(ctx: Context, g):
        (v,) = ctx.saved_tensors
        return bwd(ctx.backend, v, g)

    return type(name.capitalize(), (Function,), {"name": name, "forward": staticmethod(forward),
                                                  "backward": staticmethod(backward)})


class Neg(Function):
    name = "neg"

    @staticmethod
    def forward(ctx: Context, x):
        return -x

    @staticmethod
    def backward(ctx: Context, g):
        return -g


Exp = _unary("exp", lambda be, x: be.xp.exp(x), lambda be, y, g: g * y, "y")
Log = _unary("log", lambda be, x: be.xp.log(x), lambda be, x, g: g / x, "x")
Sqrt = _unary("sqrt", lambda be, x: be.xp.sqrt(x), lambda be, y, g: g / (2 * y), "y")
Abs = _unary("abs", lambda be, x: be.xp.abs(x), lambda be, x, g: g * be.xp.sign(x), "x")
Cos = _unary("cos", lambda be, x: be.xp.cos(x), lambda be, x, g: -g * be.xp.sin(x), "x")
def _act_forward(ctx: Context, x, act: str, params: tuple = ()):
    """``act(x)``, saving for backward what the activation's definition names: ``y``, ``x`` or nothing
    (``gpugrad/kernels/activations.py``: ``saves``). ``params``: the record's parameters, in order."""
    if x.dtype.kind not in "fc":  # integer/bool input: computed in the default float dtype, as PyTorch
        x = x.astype(_dtype.get_default_dtype())
    y = ctx.backend.act_forward(x, act, params)
    keep = saves(act, params)
    ctx.act, ctx.params = act, params
    ctx.save_for_backward(y if keep == "y" else x if keep == "z" else None)
    return y


def _act_backward(ctx: Context, g):
    (v,) = ctx.saved_tensors
    return ctx.backend.act_backward(g, v, ctx.act, ctx.params)


def _activation(act: str, cls: str) -> type:
    """The Function of one activation record: ``forward(ctx, x, **params)`` with the record's parameter
    names (PyTorch's: ``negative_slope``, ``beta``, ``threshold``, ``alpha``, ``min_val``, ``max_val``)."""
    names = tuple(n for n, _ in _A.get(act).params)
    defaults = _A.params(act)

    def forward(ctx: Context, x, **kw):
        return _act_forward(ctx, x, act, _A.params(act, kw) if kw else defaults)
    return type(cls, (Function,), {"name": act, "params": names, "forward": staticmethod(forward),
                                   "backward": staticmethod(_act_backward),
                                   "__doc__": f"The ``{act}`` activation (gpugrad/kernels/activations.py)."})


Tanh = _activation("tanh", "Tanh")
Sigmoid = _activation("sigmoid", "Sigmoid")
Relu = _activation("relu", "Relu")
LeakyRelu = _activation("leaky_relu", "LeakyRelu")
Silu = _activation("silu", "Silu")
Softplus = _activation("softplus", "Softplus")
Elu = _activation("elu", "Elu")
Selu = _activation("selu", "Selu")
Mish = _activation("mish", "Mish")
Hardswish = _activation("hardswish", "Hardswish")
Hardsigmoid = _activation("hardsigmoid", "Hardsigmoid")
Relu6 = _activation("relu6", "Relu6")
Hardtanh = _activation("hardtanh", "Hardtanh")
LogSigmoid = _activation("logsigmoid", "LogSigmoid")
Sin = _activation("sin", "Sin")  # gg.sin: the activation table's sine (fusable), one formula
# the Function of each record (gelu's two forms are one Function with ``approximate``)
BY_ACTIVATION = {f.name: f for f in (Tanh, Sigmoid, Relu, LeakyRelu, Silu, Softplus, Elu, Selu, Mish, Hardswish,
                                     Hardsigmoid, Relu6, Hardtanh, LogSigmoid, Sin)}


class Gelu(Function):
    name = "gelu"

    @staticmethod
    def forward(ctx: Context, x, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        return _act_forward(ctx, x, "gelu" if approximate == "none" else "gelu_tanh")

    backward = staticmethod(_act_backward)


class Maximum(Function):
    name = "maximum"

    @staticmethod
    def forward(ctx: Context, a, b):
        ctx.shapes = check_broadcast("maximum", a, b)
        ctx.save_for_backward(a, b)
        return ctx.backend.xp.maximum(a, b)

    @staticmethod
    def backward(ctx: Context, g):
        return _minmax_backward(ctx, g, 1)


class Minimum(Function):
    name = "minimum"

    @staticmethod
    def forward(ctx: Context, a, b):
        ctx.shapes = check_broadcast("minimum", a, b)
        ctx.save_for_backward(a, b)
        return ctx.backend.xp.minimum(a, b)

    @staticmethod
    def backward(ctx: Context, g):
        return _minmax_backward(ctx, g, -1)


def _minmax_backward(ctx: Context, g, sign: int):
    """Gradient flows to the winning operand; ties split it in half (as PyTorch does)."""
    a, b = ctx.saved_tensors
    xp = ctx.backend.xp
    s = ctx.backend.sum_to_shape
    wa = xp.where(sign * (a - b) > 0, 1.0, xp.where(a == b, 0.5, 0.0)).astype(g.dtype)
    na, nb = ctx.needs_input_grad
    return (s(g * wa, ctx.shapes[0]) if na else None, s(g * (1 - wa), ctx.shapes[1]) if nb else None)


class Clamp(Function):
    name = "clamp"

    @staticmethod
    def forward(ctx: Context, x, min=None, max=None):  # noqa: A002
        if min is None and max is None:
            raise ValueError("clamp: give at least one of min and max")
        xp = ctx.backend.xp
        lo = -math.inf if min is None else min
        hi = math.inf if max is None else max
        ctx.save_for_backward((x >= lo) & (x <= hi))
        return xp.clip(x, min, max)

    @staticmethod
    def backward(ctx: Context, g):
        (mask,) = ctx.saved_tensors
        return g * mask


class Where(Function):
    name = "where"

    @staticmethod
    def forward(ctx: Context, cond, a, b):
        xp = ctx.backend.xp
        if getattr(cond, "dtype", None) is None or cond.dtype.kind != "b":
            cond = xp.asarray(cond).astype(bool)
        ctx.shapes = check_broadcast("where", a, b)
        ctx.save_for_backward(cond)
        return xp.where(cond, a, b)

    @staticmethod
    def backward(ctx: Context, g):
        (cond,) = ctx.saved_tensors
        s = ctx.backend.sum_to_shape
        zero = g.dtype.type(0)
        _, na, nb = ctx.needs_input_grad
        xp = ctx.backend.xp
        return (None, s(xp.where(cond, g, zero), ctx.shapes[0]) if na else None,
                s(xp.where(cond, zero, g), ctx.shapes[1]) if nb else None)
