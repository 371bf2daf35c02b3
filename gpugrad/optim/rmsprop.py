"""RMSprop (PyTorch's formula, with centered and momentum variants)."""
from __future__ import annotations

from typing import Any, Iterable

from ..autograd.function import named_error
from ..tensor import Tensor
from .optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False, maximize=False)``.

    Per parameter (PyTorch's formula): ``g = grad (+ weight_decay * p)``;
    ``sq = alpha*sq + (1-alpha)*g^2``; ``avg = sqrt(sq) + eps`` (centered: ``sqrt(sq - ga^2) + eps``
    with ``ga = alpha*ga + (1-alpha)*g``); momentum: ``buf = momentum*buf + g/avg; p -= lr*buf``,
    else ``p -= lr*g/avg``. The update runs in the device backend's ``rmsprop_step``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
        for k, v in (("learning rate", lr), ("eps", eps), ("momentum", momentum), ("weight_decay", weight_decay),
                     ("alpha", alpha)):
            if v < 0.0:
                raise named_error(ValueError, f"RMSprop: invalid {k} {v} (must be >= 0)")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered, maximize=maximize))

    def _update(self, group: dict, p: Tensor, g: Any, state: dict) -> None:
        if not state:
            state["step"] = 0
            state["square_avg"] = self._zeros_like(p)
        if group["momentum"] > 0 and "momentum_buffer" not in state:
            state["momentum_buffer"] = self._zeros_like(p)
        if group["centered"] and "grad_avg" not in state:
            state["grad_avg"] = self._zeros_like(p)
        state["step"] += 1
        ga = state["grad_avg"].data if group["centered"] else None
        buf = state["momentum_buffer"].data if group["momentum"] > 0 else None
        p._backend().rmsprop_step(p.data, g, state["square_avg"].data, ga, buf, group["lr"], group["alpha"],
                                  group["eps"], group["weight_decay"], group["momentum"], group["centered"],
                                  group["maximize"])
