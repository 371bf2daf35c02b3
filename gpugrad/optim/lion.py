"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), with PyTorch-style options."""
from __future__ import annotations

from typing import Any, Iterable

from ..autograd.function import named_error
from ..kernels.optim_rules import LION
from .optimizer import Optimizer

__all__ = ["Lion"]


class Lion(Optimizer):
    """``Lion(params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0, maximize=False)``.

    Per parameter: ``p *= 1 - lr*weight_decay`` (decoupled decay); ``p -= lr * sign(lerp(m, g, 1-beta1))``;
    ``m = lerp(m, g, 1-beta2)``. The update is the rule ``LION`` of ``gpugrad/kernels/optim_rules.py``
    (one multi-tensor step per group, device and dtype on every backend)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, maximize: bool = False) -> None:
        if lr < 0.0:
            raise named_error(ValueError, f"Lion: invalid learning rate {lr} (must be >= 0)")
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b <= 1.0 for b in betas):
            raise named_error(ValueError, f"Lion: betas must be two numbers in [0, 1], got {betas}")
        if weight_decay < 0.0:
            raise named_error(ValueError, f"Lion: invalid weight_decay {weight_decay} (must be >= 0)")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize))

    rule = LION

    def _options(self, group: dict) -> dict:
        beta1, beta2 = group["betas"]
        return dict(group, beta1=beta1, beta2=beta2)
