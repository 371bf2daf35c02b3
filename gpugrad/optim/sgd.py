"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's SGD)."""
from __future__ import annotations

from typing import Any, Iterable

from ..autograd.function import named_error
from ..tensor import Tensor, _make_result
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False)``.

    Per parameter (PyTorch's formula): ``g = grad (+ weight_decay * p)``; with momentum
    ``buf = momentum * buf + (1 - dampening) * g`` (``buf = g`` on the first step) and
    ``g = g + momentum * buf`` (Nesterov) or ``g = buf``; then ``p -= lr * g``. The update runs in
    the device backend's ``sgd_step`` (one fused kernel on CUDA)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        if lr < 0.0:
            raise named_error(ValueError, f"SGD: invalid learning rate {lr} (must be >= 0)")
        if momentum < 0.0:
            raise named_error(ValueError, f"SGD: invalid momentum {momentum} (must be >= 0)")
        if weight_decay < 0.0:
            raise named_error(ValueError, f"SGD: invalid weight_decay {weight_decay} (must be >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise named_error(ValueError, "SGD: Nesterov momentum requires a momentum > 0 and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _update(self, group: dict, p: Tensor, g: Any, state: dict) -> None:
        buf = state.get("momentum_buffer")
        new = p._backend().sgd_step(p.data, g, None if buf is None else buf.data, group["lr"], group["momentum"],
                                    group["dampening"], group["nesterov"], group["weight_decay"], group["maximize"])
        if new is not None and buf is None:
            state["momentum_buffer"] = _make_result(new, p.device, None, 0)
