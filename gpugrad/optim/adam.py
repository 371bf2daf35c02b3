"""Adam and AdamW (PyTorch's formulas, including AMSGrad and maximize)."""
from __future__ import annotations

from typing import Any, Iterable

from ..autograd.function import named_error
from ..tensor import Tensor
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False)``.

    Per parameter at step t (PyTorch's formula): ``g = grad (+ weight_decay * p)``;
    ``m = beta1*m + (1-beta1)*g``; ``v = beta2*v + (1-beta2)*g^2`` (AMSGrad: use ``max(v)`` so far);
    ``p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)``. With
    ``decoupled_weight_decay=True`` (that is AdamW) the decay is ``p *= 1 - lr*weight_decay`` instead.
    The update runs in the device backend's ``adam_step``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        name = type(self).__name__
        if lr < 0.0:
            raise named_error(ValueError, f"{name}: invalid learning rate {lr} (must be >= 0)")
        if eps < 0.0:
            raise named_error(ValueError, f"{name}: invalid eps {eps} (must be >= 0)")
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise named_error(ValueError, f"{name}: betas must be two numbers in [0, 1), got {betas}")
        if weight_decay < 0.0:
            raise named_error(ValueError, f"{name}: invalid weight_decay {weight_decay} (must be >= 0)")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, group: dict, p: Tensor, g: Any, state: dict) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = self._zeros_like(p)
            state["exp_avg_sq"] = self._zeros_like(p)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = self._zeros_like(p)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        vmax = state["max_exp_avg_sq"].data if group["amsgrad"] else None
        p._backend().adam_step(p.data, g, state["exp_avg"].data, state["exp_avg_sq"].data, state["step"],
                               group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                               group["decoupled_weight_decay"], vmax, group["maximize"])


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr*weight_decay`` before the Adam update),
    ``weight_decay=1e-2`` by default, as PyTorch's AdamW."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay=True)
