"""Losses: mean squared error, cross-entropy on integer class targets (via a stable log-softmax), NLL."""
from __future__ import annotations

from ..autograd.function import Context, Function, named_error

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise named_error(ValueError, f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_targets(op: str, be, logits, target, ignore_index: int) -> None:
    if logits.ndim != 2:
        raise named_error(ValueError,
            f"{op}: expected input of shape (batch, classes), got {tuple(logits.shape)}; flatten extra dimensions first")
    if getattr(target, "dtype", None) is None or target.dtype.kind not in "iu":
        raise named_error(TypeError,
            f"{op}: target must hold integer class indices (int64), got dtype {getattr(target, 'dtype', type(target))}; "
            "convert with target.long(), or use mse_loss for float targets")
    if target.shape != (logits.shape[0],):
        raise named_error(ValueError,
            f"{op}: target of shape {tuple(target.shape)} does not match input of shape {tuple(logits.shape)}: "
            f"expected ({logits.shape[0]},)")
    if target.size:
        xp = be.xp
        valid = target != ignore_index
        bad = valid & ((target < 0) | (target >= logits.shape[1]))
        if bool(bad.any()):
            i = int(xp.argmax(bad))
            raise named_error(IndexError,
                f"{op}: target {int(target[i])} at position {i} is out of range for {logits.shape[1]} classes "
                f"(valid: 0 to {logits.shape[1] - 1}, or ignore_index={ignore_index})")


def _reduce(be, per_row, reduction: str, count):
    if reduction == "none":
        return per_row
    total = per_row.sum()
    return total / per_row.dtype.type(max(count, 1)) if reduction == "mean" else total


class CrossEntropy(Function):
    """Softmax + negative log-likelihood in one stable pass; backward is ``(softmax - onehot) / N``."""

    name = "cross_entropy"

    @staticmethod
    def forward(ctx: Context, logits, target, reduction: str = "mean", ignore_index: int = -100,
                label_smoothing: float = 0.0):
        be = ctx.backend
        _check_reduction("cross_entropy", reduction)
        _check_targets("cross_entropy", be, logits, target, ignore_index)
        if not 0.0 <= label_smoothing < 1.0:
            raise named_error(ValueError, f"cross_entropy: label_smoothing must be in [0, 1), got {label_smoothing}")
        per_row, probs = be.softmax_cross_entropy(logits, target, ignore_index)
        valid = target != ignore_index
        if label_smoothing:
            # loss = (1 - eps) * nll + eps * mean_c(-log p_c)
            xp = be.xp
            logp = xp.log(xp.maximum(probs, xp.finfo(probs.dtype).tiny))
            per_row = (1 - label_smoothing) * per_row - label_smoothing * logp.mean(axis=1)
        per_row = be.xp.where(valid, per_row, per_row.dtype.type(0))
        count = int(valid.sum()) if reduction == "mean" else 1
        ctx.reduction, ctx.count, ctx.ignore, ctx.eps = reduction, count, ignore_index, label_smoothing
        ctx.save_for_backward(probs, target)
        return _reduce(be, per_row, reduction, count)

    @staticmethod
    def backward(ctx: Context, g):
        probs, target = ctx.saved_tensors
        mul = 1.0 / ctx.count if ctx.reduction == "mean" else 1.0
        return ctx.backend.cross_entropy_backward(probs, target, g, mul, ctx.ignore, ctx.eps), None


class NLLLoss(Function):
    name = "nll_loss"

    @staticmethod
    def forward(ctx: Context, logp, target, reduction: str = "mean", ignore_index: int = -100):
        be = ctx.backend
        xp = be.xp
        _check_reduction("nll_loss", reduction)
        _check_targets("nll_loss", be, logp, target, ignore_index)
        valid = target != ignore_index
        safe_t = xp.where(valid, target, 0)
        per_row = -xp.take_along_axis(logp, safe_t[:, None], axis=1)[:, 0]
        per_row = xp.where(valid, per_row, per_row.dtype.type(0))
        count = int(valid.sum()) if reduction == "mean" else 1
        ctx.reduction, ctx.count, ctx.shape, ctx.dtype = reduction, count, logp.shape, logp.dtype
        ctx.save_for_backward(safe_t, valid)
        return _reduce(be, per_row, reduction, count)

    @staticmethod
    def backward(ctx: Context, g):
        safe_t, valid = ctx.saved_tensors
        xp = ctx.backend.xp
        d = xp.zeros(ctx.shape, dtype=ctx.dtype)
        if ctx.reduction == "none":
            w = -g * valid
        else:
            scale = g / g.dtype.type(ctx.count) if ctx.reduction == "mean" else g
            w = -scale * valid.astype(ctx.dtype)
        d[xp.arange(ctx.shape[0]), safe_t] = w
        return d, None


class MSELoss(Function):
    name = "mse_loss"

    @staticmethod
    def forward(ctx: Context, a, b, reduction: str = "mean"):
        _check_reduction("mse_loss", reduction)
        if tuple(getattr(a, "shape", ())) != tuple(getattr(b, "shape", ())):
            raise named_error(ValueError,
                f"mse_loss: input shape {tuple(a.shape)} and target shape {tuple(getattr(b, 'shape', ()))} differ; "
                "broadcasting in a loss is almost always a bug: reshape the target (e.g. y.reshape(-1, 1))")
        diff = a - b
        ctx.reduction, ctx.n = reduction, diff.size
        ctx.save_for_backward(diff)
        sq = diff * diff
        if reduction == "none":
            return sq
        return sq.mean() if reduction == "mean" else sq.sum()

    @staticmethod
    def backward(ctx: Context, g):
        (diff,) = ctx.saved_tensors
        scale = 2.0 / ctx.n if ctx.reduction == "mean" else 2.0
        ga = diff * (g * diff.dtype.type(scale))
        na, nb = ctx.needs_input_grad
        return (ga if na else None, -ga if nb else None)


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
