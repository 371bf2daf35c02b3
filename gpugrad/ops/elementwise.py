"""Element-wise arithmetic and math functions (forward and backward side by side)."""
from __future__ import annotations

import math
import types

import numpy as np

from ..autograd.function import Context, Function, named_error
from ..autograd.higher_order import derived_node, input_tensor, relink
from .. import _dtype
from .._dtype import float_result, result_type
from .._errors import DtypeError
from ..kernels import activations as _A
from ..kernels.activations import saves
from ._common import check_broadcast, coerce, quiet, uncast


_SCALARS = (int, float)


# Add, Sub, Mul and Div are the hottest ops: their dtype and shape checks and gradient reduction take the
# common cases (one floating dtype, same shapes, a Python scalar operand, nothing to reduce) inline,
# without a helper call. Other operand dtypes go through ``coerce`` (PyTorch's type promotion).
class Add(Function):
    name = "add"

    @staticmethod
    def forward(ctx: Context, a, b):
        cb = b.__class__  # a Python int never changes the dtype; a float only that of a non-float array
        if cb is not int and (a.dtype.kind != "f" if cb is float else a.__class__ is not cb or a.dtype != b.dtype):
            a, b = coerce(ctx, a, b)
        ctx.shapes = None if (b.__class__ in _SCALARS and hasattr(a, "shape")) or \
            (b.__class__ is a.__class__ and a.shape == b.shape) else check_broadcast("add", a, b)
        return a + b

    @staticmethod
    def backward(ctx: Context, g):
        sh = ctx.shapes
        na, nb = ctx.needs_input_grad
        if sh is None:
            out = (g if na else None, g if nb else None)
        else:
            sa, sb = sh
            s = ctx.backend.sum_to_shape
            out = ((g if g.shape == sa else s(g, sa)) if na else None,
                   (g if g.shape == sb else s(g, sb)) if nb else None)
        return uncast(ctx, *out) if "casts" in ctx.__dict__ else out


class Sub(Function):
    name = "sub"

    @staticmethod
    def forward(ctx: Context, a, b):
        cb = b.__class__  # a Python int never changes the dtype; a float only that of a non-float array
        if cb is not int and (a.dtype.kind != "f" if cb is float else a.__class__ is not cb or a.dtype != b.dtype):
            a, b = coerce(ctx, a, b)
        ctx.shapes = None if (b.__class__ in _SCALARS and hasattr(a, "shape")) or \
            (b.__class__ is a.__class__ and a.shape == b.shape) else check_broadcast("sub", a, b)
        return a - b

    @staticmethod
    def backward(ctx: Context, g):
        sh = ctx.shapes
        na, nb = ctx.needs_input_grad
        if sh is None:
            out = (g if na else None, -g if nb else None)
        else:
            sa, sb = sh
            s = ctx.backend.sum_to_shape
            out = ((g if g.shape == sa else s(g, sa)) if na else None,
                   (-g if g.shape == sb else s(-g, sb)) if nb else None)
        return uncast(ctx, *out) if "casts" in ctx.__dict__ else out


class Mul(Function):
    name = "mul"

    @staticmethod
    def forward(ctx: Context, a, b):
        cb = b.__class__  # a Python int never changes the dtype; a float only that of a non-float array
        if cb is not int and (a.dtype.kind != "f" if cb is float else a.__class__ is not cb or a.dtype != b.dtype):
            a, b = coerce(ctx, a, b)
        ctx.shapes = None if (b.__class__ in _SCALARS and hasattr(a, "shape")) or \
            (b.__class__ is a.__class__ and a.shape == b.shape) else check_broadcast("mul", a, b)
        na, nb = ctx.needs_input_grad
        ctx._to_save = (a if nb else None, b if na else None)  # ctx.save_for_backward, inline
        return a * b

    @staticmethod
    def backward(ctx: Context, g):
        a, b = ctx.saved_tensors
        sh = ctx.shapes  # None: no input was broadcast, nothing to sum back
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            ga = g * b
            if sh is not None and ga.shape != sh[0]:
                ga = ctx.backend.sum_to_shape(ga, sh[0])
        if nb:
            gb = g * a
            if sh is not None and gb.shape != sh[1]:
                gb = ctx.backend.sum_to_shape(gb, sh[1])
        return uncast(ctx, ga, gb) if "casts" in ctx.__dict__ else (ga, gb)


class Div(Function):
    name = "div"

    @staticmethod
    def forward(ctx: Context, a, b):
        cb = b.__class__  # true division: int / int is floating, as in PyTorch
        if a.dtype.kind != "f" if cb is float or cb is int else \
                a.__class__ is not cb or a.dtype != b.dtype or a.dtype.kind != "f":
            a, b = coerce(ctx, a, b, op_float=True)
        ctx.shapes = None if (b.__class__ in _SCALARS and hasattr(a, "shape")) or \
            (b.__class__ is a.__class__ and a.shape == b.shape) else check_broadcast("div", a, b)
        out = a / b
        ctx._to_save = (b, out if ctx.needs_input_grad[1] else None)
        return out

    @staticmethod
    def backward(ctx: Context, g):
        b, out = ctx.saved_tensors
        sh = ctx.shapes  # None: no input was broadcast, nothing to sum back
        na, nb = ctx.needs_input_grad
        ga = g / b
        gb = None
        if nb:
            gb = -ga * out
            if sh is not None and gb.shape != sh[1]:
                gb = ctx.backend.sum_to_shape(gb, sh[1])
        if na and sh is not None and ga.shape != sh[0]:
            ga = ctx.backend.sum_to_shape(ga, sh[0])
        return uncast(ctx, ga if na else None, gb) if "casts" in ctx.__dict__ else ((ga if na else None), gb)


class Pow(Function):
    name = "pow"

    @staticmethod
    def forward(ctx: Context, a, b):
        a, b = coerce(ctx, a, b)
        ctx.shapes = check_broadcast("pow", a, b)
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Context, g):
        """PyTorch's edge cases: d(x ** 0)/dx = 0 (also at x = 0); d(a ** y)/dy = 0 where a = 0 and
        y >= 0, -inf where a = 0 and y < 0, nan where a < 0 (the log of a negative base)."""
        a, b, out = ctx.saved_tensors
        be = ctx.backend
        xp = be.xp
        s = be.sum_to_shape
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if na:
            with quiet(xp):
                if be.is_array(b):
                    ga = xp.where(be.detach(b) == 0, g.dtype.type(0), g * b * a ** (b - 1))
                else:  # a Python exponent: x ** 0 is constant
                    ga = xp.zeros_like(g) if b == 0 else g * b * a ** (b - 1)
            ga = s(ga, ctx.shapes[0])
        if nb:
            with quiet(xp):
                if be.is_array(a):
                    zero = g.dtype.type(0)
                    gb = g * xp.where((be.detach(a) == 0) & (be.detach(b) >= 0), zero, out * xp.log(a))
                else:  # a Python base (``2.0 ** t``): its log on the host (xp.where needs a device array)
                    log_a = math.log(a) if a > 0 else -math.inf if a == 0 else math.nan
                    gb = g * (xp.where(b >= 0, g.dtype.type(0), out * log_a) if a == 0 else out * log_a)
            gb = s(gb, ctx.shapes[1])
        return uncast(ctx, ga, gb) if "casts" in ctx.__dict__ else (ga, gb)


def _unary(name: str, fwd, bwd, save: str, floating: bool = True):
    """Build a unary Function; ``save`` is 'x' (derivative from input) or 'y' (from output).
    ``floating``: the function of an integer or bool tensor is computed in the default float dtype
    (PyTorch: ``torch.exp`` of an int64 tensor is float32)."""

    def forward(ctx: Context, x):
        if floating and x.dtype.kind != "f":
            x = x.astype(float_result(x.dtype))
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
Abs = _unary("abs", lambda be, x: be.xp.abs(x), lambda be, x, g: g * be.xp.sign(x), "x", floating=False)
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
        if a.__class__ is not b.__class__ or a.dtype != b.dtype:
            a, b = coerce(ctx, a, b)
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
        if a.__class__ is not b.__class__ or a.dtype != b.dtype:
            a, b = coerce(ctx, a, b)
        ctx.shapes = check_broadcast("minimum", a, b)
        ctx.save_for_backward(a, b)
        return ctx.backend.xp.minimum(a, b)

    @staticmethod
    def backward(ctx: Context, g):
        return _minmax_backward(ctx, g, -1)


def _minmax_backward(ctx: Context, g, sign: int):
    """Gradient flows to the winning operand; ties split it in half (as PyTorch does). The split is
    piecewise constant in ``a`` and ``b``: computed from their values only (``backend.detach``)."""
    a, b = ctx.saved_tensors
    be = ctx.backend
    a, b = be.detach(a), be.detach(b)
    xp = be.xp
    s = be.sum_to_shape
    wa = xp.where(sign * (a - b) > 0, 1.0, xp.where(a == b, 0.5, 0.0)).astype(g.dtype)
    na, nb = ctx.needs_input_grad
    return uncast(ctx, s(g * wa, ctx.shapes[0]) if na else None, s(g * (1 - wa), ctx.shapes[1]) if nb else None)


class Clamp(Function):
    name = "clamp"

    @staticmethod
    def forward(ctx: Context, x, min=None, max=None):  # noqa: A002
        if min is None and max is None:
            raise ValueError("clamp: give at least one of min and max")
        xp = ctx.backend.xp
        dt = result_type(x, min, max)  # an integer tensor clamped to 0.5 is floating, as in PyTorch
        if dt != x.dtype:
            x = x.astype(dt)
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
        a, b = coerce(ctx, a, b)
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
        return (None, *uncast(ctx, s(xp.where(cond, g, zero), ctx.shapes[0]) if na else None,
                              s(xp.where(cond, zero, g), ctx.shapes[1]) if nb else None))


# ---------------------------------------------------------------------------------------- more math
_LN2, _LN10 = math.log(2.0), math.log(10.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

Rsqrt = _unary("rsqrt", lambda be, x: 1 / be.xp.sqrt(x), lambda be, y, g: g * (-0.5 * y * y * y), "y")
Erf = _unary("erf", lambda be, x: be.erf(x), lambda be, x, g: g * (_TWO_OVER_SQRT_PI * be.xp.exp(-x * x)), "x")
Log2 = _unary("log2", lambda be, x: be.xp.log2(x), lambda be, x, g: g / (x * _LN2), "x")
Log10 = _unary("log10", lambda be, x: be.xp.log10(x), lambda be, x, g: g / (x * _LN10), "x")
Exp2 = _unary("exp2", lambda be, x: be.xp.exp2(x), lambda be, y, g: g * (y * _LN2), "y")


class Sign(Function):
    """``sign(x)`` in ``x``'s dtype (PyTorch keeps integers); its gradient is 0 everywhere."""

    name = "sign"

    @staticmethod
    def forward(ctx: Context, x):
        ctx.shape = x.shape
        return ctx.backend.xp.sign(x)

    @staticmethod
    def backward(ctx: Context, g):
        return ctx.backend.xp.zeros_like(g)


class Lerp(Function):
    """``start + weight * (end - start)``; ``weight`` a number or a tensor (broadcast, differentiable)."""

    name = "lerp"

    @staticmethod
    def forward(ctx: Context, start, end, weight):
        if not hasattr(end, "dtype") or start.dtype != end.dtype:
            raise named_error(DtypeError, f"lerp: start and end must be tensors of one dtype, got {start.dtype} and "
                              f"{getattr(end, 'dtype', type(end).__name__)}")
        shape = check_broadcast("lerp", start, end)
        if hasattr(weight, "dtype"):
            if weight.dtype != start.dtype:
                raise named_error(DtypeError, f"lerp: weight of dtype {weight.dtype} must have start's dtype {start.dtype}")
            check_broadcast("lerp", types.SimpleNamespace(shape=np.broadcast_shapes(*shape)), weight)
        ctx.shapes = (shape[0], shape[1], getattr(weight, "shape", ()))
        diff = end - start
        w_arr = ctx.backend.is_array(weight)
        ctx.save_for_backward(weight if w_arr else None, diff if ctx.needs_input_grad[2] else None)
        ctx.weight = None if w_arr else weight  # a number; an array is saved (released after backward)
        return start + weight * diff

    @staticmethod
    def backward(ctx: Context, g):
        w, diff = ctx.saved_tensors
        w = ctx.weight if w is None else w
        s = ctx.backend.sum_to_shape
        ns, ne, nw = ctx.needs_input_grad
        return (s(g * (1 - w), ctx.shapes[0]) if ns else None, s(g * w, ctx.shapes[1]) if ne else None,
                s(g * diff, ctx.shapes[2]) if nw else None)

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """While recording: the weight re-linked, ``end - start`` as a ``Sub`` node over them."""
        w, diff = saved
        w = relink(ctx, (w,))[0]
        if diff is not None:
            (diff,) = derived_node(ctx, Sub, (1, 0), (diff,), shapes=(ctx.shapes[1], ctx.shapes[0]))
        return w, diff


# ---------------------------------------------------------------------------------------- higher orders
# An activation's backward is ``dy * act'(z)`` evaluated from the array it saved (y, z or nothing). While
# recording (create_graph), the graph backend runs it as ``ActDerivative``: its forward is the backend's
# fused derivative pass, its backward the pass of the next order (``backend.act_derivative``, generated
# from gpugrad/kernels/activations.py), and gradients with respect to z reach the op's inputs through
# ``ActSaved.z``: the Tensor standing for the pre-activation in the graph.
class ActSaved:
    """What an activation's backward saved, while recording: ``value`` (the array: y, z or None) and
    ``z``, the Tensor standing for the pre-activation in the graph (the op's input for an activation
    op, a node over x, w, b for a fused linear layer). Its data may be ``value`` (only its place in
    the graph, shape and dtype are used)."""

    __slots__ = ("value", "z")

    def __init__(self, value, z) -> None:
        self.value, self.z = value, z


def _carried(s) -> tuple:
    """``(z Tensor or None, saved array)`` of what a formula passed as an activation's saved value."""
    return (s.z, s.value) if isinstance(s, ActSaved) else (None, s)


class ActDerivative(Function):
    """``dy * d^order act / dz^order`` from the saved array ``s`` (``backend.act_derivative`` as an op):
    differentiable in ``dy`` (the same pass) and in ``z`` (the pass of order + 1)."""

    name = "act_derivative"

    @staticmethod
    def forward(ctx: Context, dy, z, s=None, act: str = "identity", params=(), order: int = 1):
        ctx.act, ctx.params, ctx.order = act, params, order
        ctx.save_for_backward(dy, s)
        return ctx.backend.act_derivative(dy, s, act, params, order)

    @staticmethod
    def backward(ctx: Context, g):
        return _act_derivative_backward(ctx, g)

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        dy, s = saved
        ref = s if s is not None else dy
        return input_tensor(ctx, 0, dy), ActSaved(s, input_tensor(ctx, 1, ref) if ctx._edges[1] is not None else None)


class ActBiasBackward(Function):
    """``(dz, db) = (dy * d^order act, dz summed over rows)`` in one pass (``backend.act_bias_backward``
    as an op, for a fused linear layer with bias); ``db``'s gradient is broadcast back over rows."""

    name = "act_bias_backward"

    @staticmethod
    def forward(ctx: Context, dy, z, s=None, act: str = "identity", params=(), order: int = 1):
        ctx.act, ctx.params, ctx.order = act, params, order
        ctx.save_for_backward(dy, s)
        return ctx.backend.act_bias_backward(dy, s, act, True, params, order)

    @staticmethod
    def backward(ctx: Context, gdz, gdb):
        return _act_derivative_backward(ctx, gdz + gdb)

    graph_saved = ActDerivative.graph_saved


def _act_derivative_backward(ctx: Context, g):
    """The gradients of ``dy * D(z)`` (``D`` the activation's derivative of order ``ctx.order``):
    ``g * D(z)`` for ``dy`` and ``g * dy * D'(z)`` for ``z``."""
    dy, s = ctx.saved_tensors
    be = ctx.backend
    need_dy, need_z = ctx.needs_input_grad[:2]
    gdy = be.act_derivative(g, s, ctx.act, ctx.params, ctx.order) if need_dy else None
    gz = be.act_derivative(g * dy, s, ctx.act, ctx.params, ctx.order + 1) if need_z else None
    return gdy, gz


def _act_graph_saved(ctx: Context, saved: tuple) -> tuple:
    """An activation op's saved value while recording: the array, with the op's input as its z."""
    (v,) = saved
    return (ActSaved(v, input_tensor(ctx, 0, v) if v is not None else None),)


for _cls in (*BY_ACTIVATION.values(), Gelu):
    _cls.graph_saved = staticmethod(_act_graph_saved)
