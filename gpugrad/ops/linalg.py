"""Matrix products: matmul, linear, and the fused linear layer (GEMM + bias + activation)."""
from __future__ import annotations

from .._errors import DtypeError, ShapeError
from ..autograd.function import Context, Function, named_error
from ..autograd.higher_order import input_tensor, output_tensor
from ..kernels.activations import ACTIVATIONS
from ..kernels.activations import params as _act_params

_ACTS = frozenset(ACTIVATIONS)


def _check_matmul(op: str, a, b) -> None:
    if a.ndim == 0 or b.ndim == 0:
        raise named_error(ShapeError, f"{op}: both operands need at least 1 dimension, got shapes "
                          f"{tuple(a.shape)} and {tuple(b.shape)}; use * for scalar multiplication")
    ka = a.shape[-1]
    kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if ka != kb:
        raise named_error(ShapeError,
            f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied: inner dimensions "
            f"{ka} (a.shape[-1]) and {kb} (b.shape[-2]) differ. Fix: transpose an operand (b.T) or reshape "
            "so that a.shape[-1] == b.shape[-2].")
    if a.dtype != b.dtype:
        raise named_error(DtypeError,
            f"{op}: operands have different dtypes {a.dtype} and {b.dtype} (shapes {tuple(a.shape)}, "
            f"{tuple(b.shape)}); convert one with .to({a.dtype}) or .to({b.dtype})")


class MatMul(Function):
    name = "matmul"

    @staticmethod
    def forward(ctx: Context, a, b):
        _check_matmul("matmul", a, b)
        na, nb = ctx.needs_input_grad
        ctx.save_for_backward(a if nb else None, b if na else None)
        ctx.shapes = (a.shape, b.shape)
        return a @ b

    @staticmethod
    def backward(ctx: Context, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.shapes
        be = ctx.backend
        xp = be.xp
        na, nb = ctx.needs_input_grad
        if len(sa) == 1 and len(sb) == 1:  # dot product
            return (g * b if na else None, g * a if nb else None)
        # promote 1-D operands to matrices, as matmul does
        if len(sa) == 1:
            g = xp.expand_dims(g, -2)
        if len(sb) == 1:
            g = xp.expand_dims(g, -1)
        ga = gb = None
        if na:
            b2 = b.reshape(sb[0], 1) if len(sb) == 1 else b
            ga = g @ xp.swapaxes(b2, -1, -2)
            if len(sa) == 1:
                ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:])
            ga = be.sum_to_shape(ga, sa)
        if nb:
            a2 = a.reshape(1, sa[0]) if len(sa) == 1 else a
            gb = xp.swapaxes(a2, -1, -2) @ g
            if len(sb) == 1:
                gb = gb.reshape(gb.shape[:-1])
            gb = be.sum_to_shape(gb, sb)
        return ga, gb


def _check_linear(op: str, x, w, b) -> None:
    if w.ndim != 2:
        raise named_error(ShapeError, f"{op}: weight must be 2-D (out_features, in_features), got shape {tuple(w.shape)}")
    if x.ndim == 0 or x.shape[-1] != w.shape[1]:
        raise named_error(ShapeError,
            f"{op}: input of shape {tuple(x.shape)} does not match weight of shape {tuple(w.shape)}: the input's "
            f"last dimension must be in_features={w.shape[1]} (weight is (out_features, in_features), as in PyTorch)")
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise named_error(ShapeError, f"{op}: bias of shape {tuple(b.shape)} does not match out_features={w.shape[0]}")
    if x.dtype != w.dtype or (b is not None and b.dtype != w.dtype):
        raise named_error(DtypeError,
            f"{op}: dtypes differ: input {x.dtype}, weight {w.dtype}" + (f", bias {b.dtype}" if b is not None else "")
            + f"; convert the input with .to({w.dtype}) or the module with .to(dtype)")


class FusedLinear(Function):
    """``y = act(x @ w.T + b)`` in one GEMM plus one fused pass; saves ``x`` and only what the
    activation's derivative needs (``y``, ``z`` or nothing: ``gpugrad/kernels/activations.py: saves``).
    Backward: one fused pass gives ``dz`` and ``db``, then two GEMMs give ``dw`` and ``dx``.
    ``params``: the activation's parameters (a tuple in the record's order, or a dict by name);
    ``negative_slope`` is leaky_relu's, kept for the older signature."""

    name = "linear"

    @staticmethod
    def forward(ctx: Context, x, w, b=None, activation: str = "identity", negative_slope: float | None = None,
                params=None):
        if activation not in _ACTS:
            raise named_error(ValueError, f"fused_linear: unknown activation {activation!r}; expected one of {ACTIVATIONS}")
        if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1] or x.dtype != w.dtype or \
                (b is not None and (b.shape != (w.shape[0],) or b.dtype != w.dtype)):  # the op's name only on error
            _check_linear("linear" if activation == "identity" else f"fused_linear[{activation}]", x, w, b)
        prm = _DEFAULTS[activation] if params is None and negative_slope is None else \
            _act_params(activation, params if params is not None else negative_slope)
        be = ctx.backend
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        z = be.linear_forward(x2, w)
        y, saved = be.bias_act(z, b, activation, prm)
        ctx.act, ctx.params, ctx.has_bias, ctx.xshape = activation, prm, b is not None, x.shape
        nx, nw, _ = ctx.needs_input_grad
        ctx.save_for_backward(x if nw else None, w if nx else None, saved)
        return y.reshape(x.shape[:-1] + (w.shape[0],)) if x.ndim != 2 else y

    @staticmethod
    def backward(ctx: Context, g, gz=None):
        x, w, saved = ctx.saved_tensors
        be = ctx.backend
        nx, nw, nb = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1]) if g.ndim != 2 else g
        if gz is None:  # dW and db go straight into the optimizer's flat gradient buffer when it has a slot
            dz, db = be.act_bias_backward(g2, saved, ctx.act, nb, ctx.params, db_out=ctx.grad_slot(2) if nb else None)
        else:  # the pre-activation's own gradient (a higher-order backward: graph_saved) joins dz first
            dz = be.act_bias_backward(g2, saved, ctx.act, False, ctx.params)[0] + gz
            db = be.sum_to_shape(dz, (dz.shape[-1],)) if nb else None
        x2 = None
        if nw:
            x2 = x.reshape(-1, x.shape[-1]) if x.ndim != 2 else x
        dx, dw = be.linear_backward(dz, x2, w, nx, nw, ctx.grad_slot(1) if nw else None)
        if dx is not None and len(ctx.xshape) != 2:
            dx = dx.reshape(ctx.xshape)
        return dx, dw, db

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """While recording: ``x`` and ``w`` re-linked to the inputs; the activation's saved array (y or
        z, the 2-D array before any reshape) with the pre-activation ``z = x @ w.T + b`` as a second
        output of this node, added now: a gradient that reaches z joins the layer's own ``dz`` in
        :meth:`backward` (``gz``) before its two GEMMs, so a double backward runs them once per layer."""
        from .elementwise import ActSaved
        x, w, s = saved
        xt = input_tensor(ctx, 0, x) if x is not None else None
        wt = input_tensor(ctx, 1, w) if w is not None else None
        if s is None:
            return xt, wt, s
        if len(ctx._out_meta) == 1:
            ctx._out_meta = ctx._out_meta + ((s.shape, s.dtype),)
        return xt, wt, ActSaved(s, output_tensor(ctx, 1, s))


_DEFAULTS = {a: _act_params(a) for a in ACTIVATIONS}
