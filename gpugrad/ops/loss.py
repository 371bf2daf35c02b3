"""Losses (PyTorch's definitions and gradients): cross-entropy on class indices (fused softmax, class
weights, label smoothing, ignore_index) or on class probabilities, NLL, binary cross-entropy (on
probabilities, or on logits with ``pos_weight``), and the pointwise regression losses (MSE, L1, smooth
L1, Huber); dropout."""
from __future__ import annotations

import numpy as np

from .._errors import DtypeError, ShapeError
from ..autograd.function import Context, Function, named_error
from ..autograd.higher_order import derived_node, relink
from ._common import quiet

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise named_error(ValueError, f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_shapes(op: str, logits, target) -> None:
    if logits.ndim != 2:
        raise named_error(ShapeError,
            f"{op}: expected input of shape (batch, classes), got {tuple(logits.shape)}; flatten extra dimensions first")
    if getattr(target, "dtype", None) is None or target.dtype.kind not in "iu":
        raise named_error(DtypeError,
            f"{op}: target must hold integer class indices (int64), got dtype {getattr(target, 'dtype', type(target))}; "
            "convert with target.long()" + (", or give class probabilities of the input's shape"
                                            if op == "cross_entropy" else ""))
    if target.shape != (logits.shape[0],):
        raise named_error(ValueError,
            f"{op}: target of shape {tuple(target.shape)} does not match input of shape {tuple(logits.shape)}: "
            f"expected ({logits.shape[0]},)")


def _long(be, target):
    """Class targets as int64 (a no-op for int64): comparisons with ``ignore_index`` and the range check
    then never cast a Python int into a narrower array dtype (CuPy raises OverflowError for -100 into
    uint8, as NumPy's NEP 50 casting does)."""
    return target.astype(be.xp.int64, copy=False)


def _check_weight(op: str, ctx: Context, weight, n_classes: int, index: int = 2) -> None:
    """A class weight: 1-D of the class count; not differentiable (as in PyTorch)."""
    if weight is None:
        return
    if weight.shape != (n_classes,):
        raise named_error(ShapeError, f"{op}: weight of shape {tuple(weight.shape)} must be 1-D with one value per "
                          f"class ({n_classes},)")
    _no_grad_for(op, ctx, index, "weight")


def _no_grad_for(op: str, ctx: Context, index: int, what: str) -> None:
    if ctx.needs_input_grad[index]:
        raise named_error(RuntimeError, f"{op}: the derivative for '{what}' is not implemented (nor in PyTorch); "
                          f"pass {what}.detach()")


def _reduce(xp, per_row, reduction: str, divisor):
    """``divisor``: what a ``mean`` divides by (a count or a weight sum; 0 gives nan, as in PyTorch)."""
    if reduction == "none":
        return per_row
    total = per_row.sum()
    if reduction == "sum":
        return total
    with quiet(xp):
        return total / divisor


class CrossEntropy(Function):
    """Cross-entropy of logits ``(N, C)``. Class-index targets ``(N,)``: softmax + negative
    log-likelihood in one stable pass (the backend's fused kernel), backward ``(softmax - onehot) / N``;
    with ``weight``, row ``i`` counts ``weight[target[i]]`` and ``mean`` divides by the sum of those
    weights. Probability targets ``(N, C)`` (floating): ``-sum_c weight_c q_ic log p_ic`` per row,
    ``mean`` over rows. ``label_smoothing`` mixes the target with the uniform distribution (PyTorch's
    formulas, including with weights)."""

    name = "cross_entropy"

    @staticmethod
    def forward(ctx: Context, logits, target, weight=None, reduction: str = "mean", ignore_index: int = -100,
                label_smoothing: float = 0.0):
        be = ctx.backend
        xp = be.xp
        _check_reduction("cross_entropy", reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise named_error(ValueError, f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
        probs_target = getattr(target, "dtype", None) is not None and target.dtype.kind == "f" and \
            target.shape != logits.shape[:1]  # a floating (N,) target: class indices of the wrong dtype
        if probs_target:
            if logits.ndim != 2 or target.shape != logits.shape:
                raise named_error(ShapeError,
                    f"cross_entropy: floating target (class probabilities) of shape {tuple(target.shape)} must "
                    f"have the input's shape (batch, classes) {tuple(logits.shape)}; for class indices use an "
                    "integer target of shape (batch,)")
        else:
            _check_shapes("cross_entropy", logits, target)
            target = _long(be, target)
        n, c = logits.shape
        _check_weight("cross_entropy", ctx, weight, c)
        eps = float(label_smoothing)
        ctx.reduction, ctx.eps, ctx.ignore, ctx.probs_target = reduction, eps, ignore_index, probs_target
        if probs_target:
            return _ce_probs_forward(ctx, logits, target, weight, reduction, eps)
        # validates the target range too: at once on the CPU, lazily (no host read) on a device
        per_row, probs = be.softmax_cross_entropy(logits, target, ignore_index, check_op="cross_entropy")
        valid = target != ignore_index
        zero = per_row.dtype.type(0)
        if weight is None:
            if eps:  # loss = (1 - eps) * nll + eps * mean_c(-log p_c)
                logp = xp.log(xp.maximum(probs, xp.finfo(probs.dtype).tiny))
                per_row = (1 - eps) * per_row - eps * logp.mean(axis=1)
            per_row = xp.where(valid, per_row, zero)
            div = be.count_divisor(valid, per_row.dtype) if reduction == "mean" else None
            w_t = None
        else:
            w_t = xp.where(valid, weight[xp.clip(target, 0, c - 1)], zero)  # weight of each row's class
            per_row = per_row * w_t
            if eps:  # PyTorch: (1 - eps) * weighted nll + eps / C * sum_c(-w_c log p_c), same divisor
                logp = xp.log(xp.maximum(probs, xp.finfo(probs.dtype).tiny))
                per_row = (1 - eps) * per_row - (eps / c) * xp.where(valid, (logp * weight).sum(axis=1), zero)
            div = w_t.sum() if reduction == "mean" else None
        ctx.div = div
        ctx.save_for_backward(probs, target, weight, w_t)  # w_t: each row's class weight (released by backward)
        return _reduce(xp, per_row, reduction, div)

    @staticmethod
    def backward(ctx: Context, g):
        if ctx.probs_target:
            return _ce_probs_backward(ctx, g)
        probs, target, weight, row_w = ctx.saved_tensors
        be = ctx.backend
        xp = be.xp
        if ctx.reduction == "mean":
            with quiet(xp):
                g = g / ctx.div
        if weight is None:
            return be.cross_entropy_backward(probs, target, g, 1.0, ctx.ignore, ctx.eps), None, None
        g_rows = xp.broadcast_to(xp.asarray(g, dtype=probs.dtype).reshape(-1), (probs.shape[0],)) * row_w
        if not ctx.eps:  # w_t * (softmax - onehot): the fused pass with a per-row gradient
            return be.cross_entropy_backward(probs, target, g_rows, 1.0, ctx.ignore, 0.0), None, None
        # d/dz_ij of (1 - eps) w_t nll + eps/C sum_c(-w_c log p_c): (1 - eps) w_t (p_ij - [j = t]) + eps/C (W p_ij - w_j)
        c = probs.shape[1]
        valid = (target != ctx.ignore)[:, None]
        d = be.cross_entropy_backward(probs, target, g_rows, 1.0 - ctx.eps, ctx.ignore, 0.0)
        g_all = xp.broadcast_to(xp.asarray(g, dtype=probs.dtype).reshape(-1), (probs.shape[0],))[:, None]
        smooth = (ctx.eps / c) * (probs * weight.sum() - weight) * g_all
        return d + xp.where(valid, smooth, probs.dtype.type(0)), None, None

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """While recording, the intermediates re-linked as derived nodes (no recompute): the fused
        pass's probabilities as a ``Softmax`` node over the logits (class-index targets), or the
        log-probabilities as a ``LogSoftmax`` node and the smoothed probability target ``q (1 - eps) +
        eps / C`` as a ``Mul`` node over ``q`` (probability targets). Class indices and class weights
        stay constants (no gradient flows to class weights)."""
        from .elementwise import Mul
        from .reduction import LogSoftmax, Softmax
        if ctx.probs_target:
            logp, qs, weight = saved
            (lp,) = derived_node(ctx, LogSoftmax, (0,), (logp,), saved=(logp,), axis=1)
            if ctx.eps:
                (q,) = derived_node(ctx, Mul, (1, None), (qs,), saved=(None, 1.0 - ctx.eps), shapes=(qs.shape, ()))
            else:
                (q,) = relink(ctx, (qs,))
            return lp, q, weight
        probs, target, weight, row_w = saved
        (p,) = derived_node(ctx, Softmax, (0,), (probs,), saved=(probs,), axis=1)
        return p, target, weight, row_w


def _ce_probs_forward(ctx: Context, logits, q, weight, reduction: str, eps: float):
    xp = ctx.backend.xp
    n, c = logits.shape
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    qs = q * (1 - eps) + eps / c if eps else q
    wl = logp * weight if weight is not None else logp
    per_row = -(qs * wl).sum(axis=1)
    ctx.save_for_backward(logp, qs, weight)
    return _reduce(xp, per_row, reduction, per_row.dtype.type(n))


def _ce_probs_backward(ctx: Context, g):
    """``d/dz_ij = p_ij sum_c w_c q_ic - w_j q_ij`` and ``d/dq_ij = -(1 - eps) w_j log p_ij``."""
    logp, qs, weight = ctx.saved_tensors
    xp = ctx.backend.xp
    n = logp.shape[0]
    if ctx.reduction == "none":
        g = g[:, None]
    elif ctx.reduction == "mean":
        with quiet(xp):
            g = g / logp.dtype.type(n)
    wq = qs * weight if weight is not None else qs
    dz = (xp.exp(logp) * xp.sum(wq, axis=1, keepdims=True) - wq) * g if ctx.needs_input_grad[0] else None
    dq = None
    if ctx.needs_input_grad[1]:
        wl = logp * weight if weight is not None else logp
        dq = -(1 - ctx.eps) * wl * g
    return dz, dq, None


class CrossEntropyBackward(Function):
    """``backend.cross_entropy_backward`` as an op (the graph backend's form: its forward is the fused
    pass): ``d = (probs - eps/C - (1-eps) onehot(target)) * g[row] * mul``, 0 on ignored rows."""

    name = "cross_entropy_backward"

    @staticmethod
    def forward(ctx: Context, probs, g, target, mul: float = 1.0, ignore_index: int = -100,
                label_smoothing: float = 0.0):
        # the targets: the data of cross_entropy's integer target tensor (held there, not counted: a leaf's)
        ctx.target, ctx.args = target, (mul, ignore_index, label_smoothing)
        ctx.save_for_backward(probs, g)
        return ctx.backend.cross_entropy_backward(probs, target, g, mul, ignore_index, label_smoothing)

    @staticmethod
    def backward(ctx: Context, gd):
        probs, g = ctx.saved_tensors
        be = ctx.backend
        xp = be.xp
        target = ctx.target
        mul, ignore, eps = ctx.args
        n = probs.shape[0]
        gp = gg = None
        if ctx.needs_input_grad[0]:  # d/dprobs: gd scaled by each row's weight g[row] * mul (0 if ignored)
            valid = (target != ignore).astype(probs.dtype) * probs.dtype.type(mul)
            gp = gd * (xp.broadcast_to(g.reshape(-1), (n,)) * valid).reshape(n, 1)
        if ctx.needs_input_grad[1]:  # d/dg: each row's sum of gd * (probs - c) * mul
            ones = xp.ones((n,), dtype=probs.dtype)
            per_row = xp.sum(gd * be.cross_entropy_backward(probs, target, ones, mul, ignore, eps), axis=1)
            gg = be.sum_to_shape(per_row, tuple(g.shape))
        return gp, gg, None


class NLLLoss(Function):
    """``-weight[t_i] * logp[i, t_i]`` per row; ``mean`` divides by the sum of the rows' weights (the row
    count without ``weight``), ignoring rows whose target is ``ignore_index``."""

    name = "nll_loss"

    @staticmethod
    def forward(ctx: Context, logp, target, weight=None, reduction: str = "mean", ignore_index: int = -100):
        be = ctx.backend
        xp = be.xp
        _check_reduction("nll_loss", reduction)
        _check_shapes("nll_loss", logp, target)
        _check_weight("nll_loss", ctx, weight, logp.shape[1])
        target = _long(be, target)
        be.check_targets("nll_loss", target, logp.shape[1], ignore_index)
        valid = target != ignore_index
        safe_t = xp.clip(target, 0, logp.shape[1] - 1)  # out-of-range: reported by the check
        zero = logp.dtype.type(0)
        w = xp.where(valid, weight[safe_t], zero) if weight is not None else valid.astype(logp.dtype)
        per_row = -xp.take_along_axis(logp, safe_t[:, None], axis=1)[:, 0] * w
        div = (w.sum() if weight is not None else be.count_divisor(valid, per_row.dtype)) \
            if reduction == "mean" else None
        ctx.reduction, ctx.div, ctx.shape, ctx.dtype = reduction, div, logp.shape, logp.dtype
        ctx.save_for_backward(safe_t, w)
        return _reduce(xp, per_row, reduction, div)

    @staticmethod
    def backward(ctx: Context, g):
        safe_t, w = ctx.saved_tensors
        xp = ctx.backend.xp
        if ctx.reduction == "mean":
            with quiet(xp):
                g = g / ctx.div
        vals = xp.where(w != 0, -g * w, ctx.dtype.type(0))  # ignored rows stay 0 even when g is nan
        n = ctx.shape[0]
        return ctx.backend.put_along_axis_backward(vals.reshape(n, 1), safe_t.reshape(n, 1), 1, ctx.shape), None, None

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """The targets and the rows' weights: constants (no gradient flows to class weights)."""
        return saved


def _check_same_shape(op: str, a, b) -> None:
    if tuple(getattr(a, "shape", ())) != tuple(getattr(b, "shape", ())):
        raise named_error(ShapeError,
            f"{op}: input shape {tuple(a.shape)} and target shape {tuple(getattr(b, 'shape', ()))} differ; "
            "broadcasting in a loss is almost always a bug: reshape the target (e.g. y.reshape(-1, 1))")


def _mean_scale(g, reduction: str, n: int):
    if reduction == "mean":
        return g * g.dtype.type(1.0 / n) if n else g * g.dtype.type(np.nan)
    return g


class MSELoss(Function):
    name = "mse_loss"

    @staticmethod
    def forward(ctx: Context, a, b, reduction: str = "mean"):
        _check_reduction("mse_loss", reduction)
        _check_same_shape("mse_loss", a, b)
        diff = a - b
        ctx.reduction, ctx.n = reduction, diff.size
        ctx.save_for_backward(diff)
        sq = diff * diff
        return _reduce(ctx.backend.xp, sq, reduction, sq.dtype.type(sq.size))

    @staticmethod
    def backward(ctx: Context, g):
        (diff,) = ctx.saved_tensors
        ga = diff * (_mean_scale(g, ctx.reduction, ctx.n) * diff.dtype.type(2.0))
        na, nb = ctx.needs_input_grad
        return (ga if na else None, -ga if nb else None)

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """``diff = a - b``, an intermediate: the output of a ``Sub`` node over ``a`` and ``b``."""
        from .elementwise import Sub
        (diff,) = saved
        return derived_node(ctx, Sub, (0, 1), saved, shapes=(diff.shape, diff.shape))


class PointwiseLoss(Function):
    """``l1_loss``, ``smooth_l1_loss`` (``beta``) and ``huber_loss`` (``delta``) of ``d = input - target``:
    PyTorch's definitions and derivatives (at a kink, the derivative PyTorch takes)."""

    name = "l1_loss"

    @staticmethod
    def forward(ctx: Context, a, b, kind: str = "l1", reduction: str = "mean", param: float = 1.0):
        op = {"l1": "l1_loss", "smooth_l1": "smooth_l1_loss", "huber": "huber_loss"}[kind]
        _check_reduction(op, reduction)
        _check_same_shape(op, a, b)
        if param < 0:
            raise named_error(ValueError, f"{op}: {'beta' if kind == 'smooth_l1' else 'delta'} must be >= 0, got {param}")
        xp = ctx.backend.xp
        d = a - b
        ad = xp.abs(d)
        p = d.dtype.type(param)
        if kind == "l1" or (kind == "smooth_l1" and param == 0):
            loss = ad
        elif kind == "smooth_l1":  # 0.5 d^2 / beta inside |d| < beta, |d| - beta / 2 outside
            loss = xp.where(ad < p, d.dtype.type(0.5) * d * d / p, ad - d.dtype.type(0.5) * p)
        else:  # huber: 0.5 d^2 inside |d| < delta, delta (|d| - delta / 2) outside
            loss = xp.where(ad < p, d.dtype.type(0.5) * d * d, p * (ad - d.dtype.type(0.5) * p))
        ctx.kind, ctx.param, ctx.reduction, ctx.n = kind, param, reduction, d.size
        ctx.save_for_backward(d)
        return _reduce(xp, loss, reduction, loss.dtype.type(loss.size))

    @staticmethod
    def backward(ctx: Context, g):
        (d,) = ctx.saved_tensors
        be = ctx.backend
        xp = be.xp
        p = d.dtype.type(ctx.param)
        if ctx.kind == "l1" or (ctx.kind == "smooth_l1" and ctx.param == 0):
            dd = xp.sign(d)
        else:  # the quadratic part strictly inside |d| < p (PyTorch's second derivative there: 0 at |d| = p)
            inside = xp.abs(be.detach(d)) < p
            dd = xp.where(inside, d / p, xp.sign(d)) if ctx.kind == "smooth_l1" else xp.where(inside, d, p * xp.sign(d))
        ga = dd * _mean_scale(g, ctx.reduction, ctx.n)
        na, nb = ctx.needs_input_grad
        return (ga if na else None, -ga if nb else None)

    graph_saved = MSELoss.graph_saved  # d = input - target: a Sub node over them


def _weighted_loss(ctx: Context, loss, weight, reduction: str, *saved):
    """An elementwise loss times its weight, reduced; ``saved`` kept for backward."""
    if weight is not None:
        loss = loss * weight
    ctx.reduction, ctx.n = reduction, loss.size
    ctx.save_for_backward(*saved)
    return _reduce(ctx.backend.xp, loss, reduction, loss.dtype.type(loss.size))


def _weighted_grad(ctx: Context, g, weight):
    """The incoming gradient of an elementwise loss per element: the mean's 1/n, times the weight."""
    g = _mean_scale(g, ctx.reduction, ctx.n)
    return g * weight if weight is not None else g


_LOG_FLOOR = -100.0  # PyTorch clamps log(p) and log(1 - p) of binary_cross_entropy at -100


class BinaryCrossEntropy(Function):
    """``-w (t log p + (1 - t) log(1 - p))`` with both logs clamped at -100 (PyTorch's definition); the
    input gradient ``w (p - t) / max(p (1 - p), 1e-12)``, the target gradient ``w (log(1 - p) - log p)``."""

    name = "binary_cross_entropy"

    @staticmethod
    def forward(ctx: Context, p, t, weight=None, reduction: str = "mean"):
        be = ctx.backend
        xp = be.xp
        _check_reduction("binary_cross_entropy", reduction)
        if getattr(t, "shape", None) != p.shape:
            raise named_error(ValueError,
                f"binary_cross_entropy: target of shape {tuple(getattr(t, 'shape', ()))} must have the input's shape "
                f"{tuple(p.shape)} (reshape one of them)")
        if weight is not None:
            _no_grad_for("binary_cross_entropy", ctx, 2, "weight")
        be.check_unit_interval("binary_cross_entropy", p)
        with quiet(xp):
            lp = xp.maximum(xp.log(p), p.dtype.type(_LOG_FLOOR))
            l1p = xp.maximum(xp.log1p(-p), p.dtype.type(_LOG_FLOOR))
        return _weighted_loss(ctx, -(t * lp + (1 - t) * l1p), weight, reduction, p, t, weight, lp, l1p)

    @staticmethod
    def backward(ctx: Context, g):
        p, t, weight, lp, l1p = ctx.saved_tensors
        xp = ctx.backend.xp
        g = _weighted_grad(ctx, g, weight)
        gp = gt = None
        if ctx.needs_input_grad[0]:
            gp = g * (p - t) / xp.maximum(p * (1 - p), p.dtype.type(1e-12))
        if ctx.needs_input_grad[1]:
            gt = g * (l1p - lp)
        s = ctx.backend.sum_to_shape
        return (s(gp, p.shape) if gp is not None else None, s(gt, t.shape) if gt is not None else None, None)

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """While recording, ``log p`` and ``log(1 - p)`` (clamped at -100) recomputed from ``p`` as ops."""
        p, t, weight = relink(ctx, saved[:3])
        floor = p.dtype.type(_LOG_FLOOR)
        return p, t, weight, p.log().clamp(min=floor), (1 - p).log().clamp(min=floor)


class BCEWithLogits(Function):
    """``(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)``, times ``weight`` (PyTorch's stable form);
    input gradient ``(1 + (pw - 1) t) sigmoid(x) - pw t``, target gradient ``-x + (pw - 1) softplus(-x)``."""

    name = "binary_cross_entropy_with_logits"

    @staticmethod
    def forward(ctx: Context, x, t, weight=None, pos_weight=None, reduction: str = "mean"):
        xp = ctx.backend.xp
        op = "binary_cross_entropy_with_logits"
        _check_reduction(op, reduction)
        if getattr(t, "shape", None) != x.shape:
            raise named_error(ValueError, f"{op}: target of shape {tuple(getattr(t, 'shape', ()))} must have the "
                              f"input's shape {tuple(x.shape)} (reshape one of them)")
        if weight is not None:
            _no_grad_for(op, ctx, 2, "weight")
        if pos_weight is not None:
            _no_grad_for(op, ctx, 3, "pos_weight")
        sp = xp.maximum(-x, 0) + xp.log1p(xp.exp(-xp.abs(x)))  # softplus(-x), stable
        lw = 1 + (pos_weight - 1) * t if pos_weight is not None else None
        loss = (1 - t) * x + (lw * sp if lw is not None else sp)
        return _weighted_loss(ctx, loss, weight, reduction, x, t, weight, pos_weight, sp)

    @staticmethod
    def backward(ctx: Context, g):
        x, t, weight, pw, sp = ctx.saved_tensors
        xp = ctx.backend.xp
        g = _weighted_grad(ctx, g, weight)
        s = ctx.backend.sum_to_shape
        gx = gt = None
        if ctx.needs_input_grad[0]:
            sig = 1 / (1 + xp.exp(-x))
            gx = g * ((1 + (pw - 1) * t) * sig - pw * t if pw is not None else sig - t)
            gx = s(gx, x.shape)
        if ctx.needs_input_grad[1]:
            gt = s(g * (-x + (pw - 1) * sp if pw is not None else -x), t.shape)
        return gx, gt, None, None

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """While recording, ``softplus(-x)`` recomputed from ``x`` as ops (the forward's stable form)."""
        x, t, weight, pw = relink(ctx, saved[:4])
        return x, t, weight, pw, (-x).clamp(min=0) + (1 + (-x.abs()).exp()).log()


class Dropout(Function):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1/(1-p)``;
    only a boolean mask (1 byte per element) is saved."""

    name = "dropout"

    @staticmethod
    def forward(ctx: Context, x, p: float):
        be = ctx.backend
        mask = be.dropout_mask(x.shape, p)
        ctx.scale = x.dtype.type(1.0 / (1.0 - p))
        ctx.save_for_backward(mask)
        return x * mask * ctx.scale

    @staticmethod
    def backward(ctx: Context, g):
        (mask,) = ctx.saved_tensors
        return g * mask * ctx.scale
