"""The optimizer update rules, each written once: the per-element update of SGD, Adam/AdamW and RMSprop.

Every implementation is generated from these functions by :mod:`kernels.optim_codegen`: the NumPy/CuPy
reference (the function run on whole arrays), the CPU pass (Numba ``njit``), the Numba CUDA kernel and
the CUDA C source (the function's syntax tree rendered to C). A rule is a restricted Python function:

- arguments, in order: ``p``, ``g``, the state arrays, the float hyperparameters, the per-step derived
  scalars (from the rule's ``prologue``), the boolean flags; it returns ``p`` and every state value;
- statements: assignments to names, ``if``/``else``; ``if`` tests only scalars (hyperparameters,
  flags), never element values, so the same code also runs vectorised on whole arrays;
- expressions: ``+ - * / **``, unary ``-``, comparisons, ``and``/``or``/``not``, numeric constants and
  the functions of the one primitive table (``gpugrad/kernels/expr.py``: ``sqrt``, ``maximum``, ``sign``,
  ``lerp`` - PyTorch's ``lerp_``: ``a + w*(b-a)`` for ``w < 0.5``, else ``b - (b-a)*(1-w)`` - ...).

Arithmetic on hyperparameters alone (``1 - beta2``, ``1 - lr * weight_decay``) is written in the rule but
computed once per step on the host in float64 and passed to the generated code as scalars
(``optim_codegen.host_scalars``), as PyTorch does: the float32 kernels never see ``1 - float32(beta2)``.

A ``prologue(step, *hyper)`` computes the scalars that depend on the step count (Adam's bias
corrections): on the host in float64 for an ordinary step, on the device from a step-count array for a
``capturable`` step. Adding an optimizer means adding one rule here and its Python class in
``gpugrad/optim``. The formulas and their operation order are PyTorch's single-tensor ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from . import expr as _E

__all__ = ["Rule", "RULES", "SGD", "ADAM", "RMSPROP", "LION", "sqrt", "maximum", "lerp", "sign"]


# The functions a rule calls are the one primitive table's (gpugrad/kernels/expr.py): these are their float64
# references, so running a rule as Python is the definition every generated implementation is tested against.
sqrt = _E.PRIMS["sqrt"].ref
maximum = _E.PRIMS["max"].ref
lerp = _E.PRIMS["lerp"].ref
sign = _E.PRIMS["sign"].ref


@dataclass(frozen=True)
class Rule:
    """One update rule: ``fn`` (the per-element update), the names of its parts, and when each state
    array exists (``state_when[name](options) -> bool``; absent states are not read or written)."""

    name: str
    fn: Callable
    state: tuple[str, ...]
    hyper: tuple[str, ...]
    flags: tuple[str, ...]
    state_when: dict = field(default_factory=dict)
    prologue: Callable | None = None
    derived: tuple[str, ...] = ()

    def present(self, options: dict) -> tuple[bool, ...]:
        """Which state arrays this configuration uses (a mask over ``state``)."""
        return tuple(bool(self.state_when[s](options)) if s in self.state_when else True for s in self.state)

    def derive(self, step, options: dict) -> tuple:
        """The per-step scalars (empty without a prologue)."""
        if self.prologue is None:
            return ()
        return tuple(self.prologue(step, *(options[h] for h in self.hyper)))


# ------------------------------------------------------------------------------------------------ SGD
def sgd(p, g, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, maximize, first):
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    if momentum != 0:
        if first:
            momentum_buffer = g
        else:
            momentum_buffer = momentum * momentum_buffer + (1 - dampening) * g
        if nesterov:
            g = g + momentum * momentum_buffer
        else:
            g = momentum_buffer
    p = p - lr * g
    return p, momentum_buffer


# ------------------------------------------------------------------------------------------------ Adam
def adam_prologue(step, lr, beta1, beta2, eps, weight_decay):
    step_size = lr / (1 - beta1 ** step)
    bc2_sqrt = sqrt(1 - beta2 ** step)
    return step_size, bc2_sqrt


def adam(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt,
         decoupled, amsgrad, maximize):
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    exp_avg = lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq = beta2 * exp_avg_sq + ((1 - beta2) * g) * g
    if amsgrad:
        max_exp_avg_sq = maximum(max_exp_avg_sq, exp_avg_sq)
        denom = sqrt(max_exp_avg_sq) / bc2_sqrt + eps
    else:
        denom = sqrt(exp_avg_sq) / bc2_sqrt + eps
    p = p - step_size * exp_avg / denom
    return p, exp_avg, exp_avg_sq, max_exp_avg_sq


# ------------------------------------------------------------------------------------------------ RMSprop
def rmsprop(p, g, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered,
            maximize):
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    square_avg = alpha * square_avg + ((1 - alpha) * g) * g
    if centered:
        grad_avg = lerp(grad_avg, g, 1 - alpha)
        avg = sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = sqrt(square_avg) + eps
    if momentum > 0:
        momentum_buffer = momentum * momentum_buffer + g / avg
        p = p - lr * momentum_buffer
    else:
        p = p - lr * g / avg
    return p, square_avg, grad_avg, momentum_buffer


# ------------------------------------------------------------------------------------------------ Lion
def lion(p, g, exp_avg, lr, beta1, beta2, weight_decay, maximize):
    if maximize:
        g = -g
    if weight_decay != 0:
        p = p * (1 - lr * weight_decay)
    update = lerp(exp_avg, g, 1 - beta1)
    p = p - lr * sign(update)
    exp_avg = lerp(exp_avg, g, 1 - beta2)
    return p, exp_avg


SGD = Rule("sgd", sgd, ("momentum_buffer",), ("lr", "momentum", "dampening", "weight_decay"),
           ("nesterov", "maximize", "first"), {"momentum_buffer": lambda o: o["momentum"] != 0})
ADAM = Rule("adam", adam, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), ("lr", "beta1", "beta2", "eps", "weight_decay"),
            ("decoupled", "amsgrad", "maximize"), {"max_exp_avg_sq": lambda o: bool(o["amsgrad"])},
            adam_prologue, ("step_size", "bc2_sqrt"))
RMSPROP = Rule("rmsprop", rmsprop, ("square_avg", "grad_avg", "momentum_buffer"),
               ("lr", "alpha", "eps", "weight_decay", "momentum"), ("centered", "maximize"),
               {"grad_avg": lambda o: bool(o["centered"]), "momentum_buffer": lambda o: o["momentum"] > 0})
LION = Rule("lion", lion, ("exp_avg",), ("lr", "beta1", "beta2", "weight_decay"), ("maximize",))
RULES = {r.name: r for r in (SGD, ADAM, RMSPROP, LION)}
