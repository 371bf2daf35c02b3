"""Layer normalisation: one op whose forward and backward run the backend's passes, generated from the
one definition in ``gpugrad/kernels/layernorm.py`` (Numba on the CPU, CUDA C on CUDA, array code
otherwise)."""
from __future__ import annotations

from .._errors import ShapeError
import math

from ..autograd.function import Context, Function, named_error
from ..autograd.higher_order import relink


class LayerNorm(Function):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the trailing ``normalized_shape``
    dimensions (biased variance, as PyTorch); ``weight``/``bias`` optional. Saves ``x``, ``mean`` and
    ``rstd`` (one per row)."""

    name = "layer_norm"

    @staticmethod
    def forward(ctx: Context, x, weight=None, bias=None, normalized_shape: tuple = (), eps: float = 1e-5):
        k = len(normalized_shape)
        if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != tuple(normalized_shape):
            raise named_error(ShapeError,
                f"layer_norm: normalized_shape {tuple(normalized_shape)} must be non-empty and equal the last "
                f"dimensions of the input of shape {tuple(x.shape)}")
        for what, p in (("weight", weight), ("bias", bias)):
            if p is not None and tuple(p.shape) != tuple(normalized_shape):
                raise named_error(ShapeError, f"layer_norm: {what} of shape {tuple(p.shape)} must have the "
                                  f"normalized_shape {tuple(normalized_shape)}")
        be = ctx.backend
        n = 1
        for s in normalized_shape:
            n *= int(s)
        x2 = x.reshape(-1, n)
        w = weight.reshape(n) if weight is not None else None
        b = bias.reshape(n) if bias is not None else None
        y, mean, rstd = be.layer_norm_forward(x2, w, b, float(eps))
        ctx.xshape, ctx.pshape, ctx.eps = x.shape, tuple(normalized_shape), float(eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx: Context, g):
        x, weight, mean, rstd = ctx.saved_tensors
        nx, nw, nb = ctx.needs_input_grad
        n = math.prod(ctx.pshape)
        x2 = x.reshape(-1, n)
        w = weight.reshape(n) if weight is not None else None
        dx, dw, db = ctx.backend.layer_norm_backward(g.reshape(-1, n), x2, w, mean, rstd, nx, nw or nb)
        return (dx.reshape(ctx.xshape) if nx else None,
                dw.reshape(ctx.pshape) if nw and dw is not None else None,
                db.reshape(ctx.pshape) if nb and db is not None else None)

    @staticmethod
    def graph_saved(ctx: Context, saved: tuple) -> tuple:
        """While recording, each row's mean and ``1 / sqrt(var + eps)`` recomputed from ``x`` as ops (the
        graph backend's ``layer_norm_backward`` is written with ops too: see gpugrad/ops/graph_backend.py)."""
        x, weight = relink(ctx, saved[:2])
        x2 = x.reshape(-1, math.prod(ctx.pshape))
        mean = x2.mean(dim=1)
        centred = x2 - mean.reshape(-1, 1)
        return x, weight, mean, ((centred * centred).mean(dim=1) + ctx.eps).rsqrt()
