"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's SGD)."""
from __future__ import annotations

from typing import Any, Iterable

from ..autograd.function import named_error
from ..kernels.optim_rules import SGD as SGD_RULE
from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, maximize=False)``.

    Per parameter (PyTorch's formula): ``g = grad (+ weight_decay * p)``; with momentum
    ``buf = momentum * buf + (1 - dampening) * g`` (``buf = g`` on the first step) and
    ``g = g + momentum * buf`` (Nesterov) or ``g = buf``; then ``p -= lr * g``. The update is the rule
    ``SGD`` of ``gpugrad/kernels/optim_rules.py`` (multi-tensor: one fused pass per group, device and dtype)."""

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

    rule = SGD_RULE
    has_step = False  # PyTorch's SGD keeps only the momentum buffer
