"""RMSprop (PyTorch's formula, with centered and momentum variants)."""
from __future__ import annotations

from typing import Any, Iterable

from ..autograd.function import named_error
from ..kernels.optim_rules import RMSPROP
from .optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False)``.

    Per parameter (PyTorch's formula): ``g = grad (+ weight_decay * p)``;
    ``sq = alpha*sq + (1-alpha)*g^2``; ``avg = sqrt(sq) + eps`` (centered: ``sqrt(sq - ga^2) + eps``
    with ``ga = alpha*ga + (1-alpha)*g``); momentum: ``buf = momentum*buf + g/avg; p -= lr*buf``,
    else ``p -= lr*g/avg``. The update is the rule ``RMSPROP`` of ``gpugrad/kernels/optim_rules.py``
    (multi-tensor, fused on every backend)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
        for k, v in (("learning rate", lr), ("eps", eps), ("momentum", momentum), ("weight_decay", weight_decay),
                     ("alpha", alpha)):
            if v < 0.0:
                raise named_error(ValueError, f"RMSprop: invalid {k} {v} (must be >= 0)")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    rule = RMSPROP
