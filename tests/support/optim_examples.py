"""Optimizer test inputs: option sets that reach every branch of a rule (``examples``), random buffers
for one step (``example_arrays``), the step arguments of an ordinary or capturable step
(``step_args``) and the state masks a rule's options produce (``masks``). Used by the tests and
benchmarks of gpugrad/kernels/optim_codegen.py's generated code; not part of the package."""
from __future__ import annotations

from typing import Any

from gpugrad.kernels.optim_rules import Rule

_EXAMPLE = {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.999,
            "eps": 1e-8, "alpha": 0.99}


def examples(rule: Rule) -> list[dict]:
    """Option sets that reach every branch of ``rule``: all flag combinations, each with and without
    weight decay (and momentum), plus one with weights >= 0.5 in ``lerp`` (PyTorch's other branch)."""
    import itertools
    out = []
    for flags in itertools.product((False, True), repeat=len(rule.flags)):
        base = {h: _EXAMPLE[h] for h in rule.hyper}
        base.update(zip(rule.flags, flags))
        out.append(base)
        out.append(dict(base, **{k: 0.0 for k in ("weight_decay", "momentum") if k in base}))
    out.append(dict(out[-1], **{k: v for k, v in (("beta1", 0.3), ("alpha", 0.4)) if k in rule.hyper}))
    return out



def example_arrays(rule: Rule, options: dict, n: int, rng, dtype: Any = "float64", base: dict | None = None) -> dict:
    """Random 1-D buffers for one step of ``rule`` under ``options`` (tests and benchmarks): ``'p'`` and
    ``'g'`` (standard normal, unless given in ``base``) and each state the options use. Square averages
    are drawn >= 2 so that they exceed their squared means (centered RMSprop)."""
    import numpy as np
    arrays = dict(base) if base is not None else {"p": rng.standard_normal(n).astype(dtype),
                                                  "g": rng.standard_normal(n).astype(dtype)}
    for s, on in zip(rule.state, rule.present(options)):
        if on:
            sq = "sq" in s or "square" in s
            arrays[s] = (np.abs(rng.standard_normal(n)) * (1.0 if sq else 0.3) + (2.0 if sq else 0.0)).astype(dtype)
    return arrays


def step_args(rule: Rule, options: dict, step: int, capturable: bool, xp: Any, dtype: Any = "float64") -> dict:
    """Keyword arguments ``derived``, ``step``, ``found_inf`` of an optimizer step number ``step`` on
    buffers of ``dtype`` (tests and benchmarks): the host-derived scalars, or for a ``capturable`` step
    the step count as a one-element ``xp`` array of the compute dtype and a zero ``found_inf`` (float32)."""
    if not capturable:
        return {"derived": rule.derive(step, options), "step": None, "found_inf": None}
    import numpy as np

    from gpugrad.kernels._numba import compute_dtype
    return {"derived": (), "step": xp.asarray([float(step)], compute_dtype(dtype)),
            "found_inf": xp.zeros(1, np.float32)}


def masks(rule: Rule) -> list[tuple]:
    """The state masks the rule's options can produce (one per distinct ``rule.present``)."""
    return sorted({rule.present(o) for o in examples(rule)})
