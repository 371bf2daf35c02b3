"""Adam and AdamW (PyTorch's formulas, including AMSGrad and maximize)."""
from __future__ import annotations

from typing import Any, Iterable

from ..autograd.function import named_error
from ..kernels.optim_rules import ADAM
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False)``.

    Per parameter at step t (PyTorch's formula): ``g = grad (+ weight_decay * p)``;
    ``m = beta1*m + (1-beta1)*g``; ``v = beta2*v + (1-beta2)*g^2`` (AMSGrad: use ``max(v)`` so far);
    ``p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)``. With
    ``decoupled_weight_decay=True`` (that is AdamW) the decay is ``p *= 1 - lr*weight_decay`` instead.
    The update is the rule ``ADAM`` of ``gpugrad/kernels/optim_rules.py``, one backend ``optim_step`` per
    (group, device, dtype). ``capturable=True`` (PyTorch's name) keeps ``state['step']`` and the bias
    corrections on the device (a 0-d Tensor per parameter) and skips a step on the device when a
    ``GradScaler`` found inf/NaN, so the step reads nothing from the device and can be captured in a
    CUDA graph (the buffers it updates are stable: see ``gpugrad/optim/flat.py``)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False,
                 decoupled_weight_decay: bool = False, *, capturable: bool = False) -> None:
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
                                      maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
                                      capturable=bool(capturable)))

    rule = ADAM

    def _options(self, group: dict) -> dict:
        beta1, beta2 = group["betas"]
        return dict(group, beta1=beta1, beta2=beta2, decoupled=group["decoupled_weight_decay"])


class AdamW(Adam):
    """Adam with decoupled weight decay (``p *= 1 - lr*weight_decay`` before the Adam update),
    ``weight_decay=1e-2`` by default, as PyTorch's AdamW."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False, *,
                 capturable: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay=True,
                         capturable=capturable)
