"""``gg.nn.utils``: gradient clipping (PyTorch's formulas) and parameter/vector conversion."""
from __future__ import annotations

import math
from typing import Iterable

from ..autograd.function import named_error
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor, _make_result

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "parameters_to_vector", "vector_to_parameters"]


def _as_list(parameters: "Tensor | Iterable[Tensor]") -> list[Tensor]:
    if isinstance(parameters, Tensor):
        return [parameters]
    return list(parameters)


def _vector_norm(be, a, norm_type: float):
    """``||a||_p`` of a flattened array, as a 0-d array of ``a``'s dtype."""
    xp = be.xp
    if norm_type == math.inf:
        return xp.abs(a).max() if a.size else xp.zeros((), a.dtype)
    if norm_type == -math.inf:
        return xp.abs(a).min() if a.size else xp.asarray(math.inf, a.dtype)
    if norm_type == 0:
        return xp.asarray((a != 0).sum(), dtype=a.dtype)
    if norm_type == 2:
        f = a.reshape(-1)
        return xp.sqrt(xp.dot(f, f))
    if norm_type == 1:
        return xp.abs(a).sum()
    return (xp.abs(a) ** norm_type).sum() ** (1.0 / norm_type)


def get_total_norm(tensors: "Tensor | Iterable[Tensor]", norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> Tensor:
    """The ``norm_type``-norm of the norms of ``tensors`` (as if they were one concatenated vector)."""
    ts = [t for t in _as_list(tensors) if t is not None]
    norm_type = float(norm_type)
    if not ts:
        return Tensor(0.0)
    dev = ts[0].device
    be = ts[0]._backend()
    for t in ts:
        if t.device != dev:
            raise named_error(RuntimeError, f"clip_grad_norm_: gradients on different devices {dev} and {t.device}")
    return _total([t.data for t in ts], norm_type, error_if_nonfinite, dev, be)


def _total(arrays: list, norm_type: float, error_if_nonfinite: bool, dev, be) -> Tensor:
    """The norm of the norms of ``arrays`` (one device), as a 0-d Tensor left on the device."""
    xp = be.xp
    norms = [_vector_norm(be, a, norm_type) for a in arrays]
    dt = xp.result_type(*[n.dtype for n in norms])
    stacked = xp.stack([n.astype(dt) for n in norms])
    total = _vector_norm(be, stacked, norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise named_error(RuntimeError,
            f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is non-finite "
            f"({float(total)}), so it cannot be clipped. Fix: find the NaN/inf (gg.autograd.detect_anomaly()), "
            "lower the learning rate, or pass error_if_nonfinite=False.")
    return _make_result(xp.asarray(total), dev, None, 0)


def clip_grad_norm_(parameters: "Tensor | Iterable[Tensor]", max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """Scale all gradients in place so that their joint norm is at most ``max_norm``; returns the
    total norm before clipping. PyTorch's formula: ``coef = min(max_norm / (total_norm + 1e-6), 1)``,
    every gradient multiplied by ``coef``. Multi-tensor when the parameters are those of a gpugrad
    optimizer (its flat gradient buffers: one norm and one scale per buffer); the norm and ``coef``
    stay on the device (read only with ``error_if_nonfinite=True``)."""
    params = _as_list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return Tensor(0.0)
    from ..optim.flat import grad_segments
    segs = grad_segments(params, "clip_grad_norm_")
    if segs is None or len({b.device for b, _, _ in segs}) != 1:
        total = get_total_norm(grads, norm_type, error_if_nonfinite)
        pieces = [g.data for g in grads]
    else:
        pieces = [b.grad[s:e] for b, s, e in segs]
        total = _total(pieces, float(norm_type), error_if_nonfinite, grads[0].device, segs[0][0].be)
    xp = total._backend().xp
    coef = float(max_norm) / (total.data + 1e-6)
    coef = xp.minimum(coef, 1.0)
    with no_grad():
        for a in pieces:
            a *= coef.astype(a.dtype)
        for g in grads:
            g._vc[0] += 1
    return total


def clip_grad_value_(parameters: "Tensor | Iterable[Tensor]", clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every gradient in place to ``[-clip_value, clip_value]``."""
    c = float(clip_value)
    if c < 0:
        raise named_error(ValueError, f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for p in _as_list(parameters):
        g = p.grad
        if g is None:
            continue
        g._backend().xp.clip(g.data, -c, c, out=g.data)
        g._vc[0] += 1


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """All parameters flattened and concatenated (a copy, not connected to the graph)."""
    ps = list(parameters)
    if not ps:
        raise named_error(ValueError, "parameters_to_vector: no parameters given")
    xp = ps[0]._backend().xp
    return _make_result(xp.concatenate([p.data.reshape(-1) for p in ps]), ps[0].device, None, 0)


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Copy slices of ``vec`` into the parameters, in place (inverse of ``parameters_to_vector``)."""
    ps = list(parameters)
    total = sum(p.numel() for p in ps)
    if vec.ndim != 1 or vec.numel() != total:
        raise named_error(ValueError, f"vector_to_parameters: vector of shape {tuple(vec.shape)} does not hold "
                          f"the {total} parameter elements")
    off = 0
    for p in ps:
        n = p.numel()
        p.data[...] = vec.data[off:off + n].reshape(p.shape).astype(p.dtype)
        p._vc[0] += 1
        off += n
