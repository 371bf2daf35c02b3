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


def torch_states() -> dict:
    """The ``optimizer_states`` section of tests/reference/torch_reference.json (PyTorch 2.13's float32
    parameters and state after steps 1 and 3 from zero state; see record_torch.py ``STATE_CASES``)."""
    import json
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference", "torch_reference.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["optimizer_states"]


def rule_options(name: str, kwargs: dict) -> tuple:
    """``(rule, options)`` that ``gpugrad.optim.<name>(params, **kwargs)`` steps with (``first`` left out)."""
    from gpugrad import nn, optim, zeros
    kw = {k: (tuple(v) if k == "betas" else v) for k, v in kwargs.items()}
    opt = getattr(optim, name)([nn.Parameter(zeros(1))], **kw)
    o = opt._options(opt.param_groups[0])
    return opt.rule, {k: o[k] for k in (*opt.rule.hyper, *opt.rule.flags) if k in o}


def steps_from_zero(run, rule: Rule, options: dict, p0, grads: list, record, capturable: bool, xp: Any) -> dict:
    """Step ``rule`` from zero state on a copy of ``p0`` with one gradient per step through ``run(rule,
    arrays, start, end, options, derived=, step=, found_inf=)`` (an ``optim_step``); returns, for each step
    number in ``record`` (as a string), ``'p'`` and each state as float64 NumPy arrays."""
    import numpy as np
    arrays = {"p": xp.asarray(p0.copy())}
    arrays.update({s: xp.zeros_like(arrays["p"]) for s, on in zip(rule.state, rule.present(options)) if on})
    out = {}
    for k, g in enumerate(grads, 1):
        arrays["g"] = xp.asarray(g)
        opts = dict(options, first=k == 1) if "first" in rule.flags else options
        run(rule, arrays, 0, len(p0), opts, **step_args(rule, opts, k, capturable, xp, p0.dtype))
        if str(k) in record:
            out[str(k)] = {n: np.asarray(a.get() if hasattr(a, "get") else a, np.float64)
                           for n, a in arrays.items() if n != "g"}
    return out


def state_ids(states: dict) -> list[str]:
    """Test ids of the cases of :func:`torch_states`."""
    return [f"{c['name']}-" + "-".join(f"{k}={v}" for k, v in c["kwargs"].items()) for c in states["cases"]]


F32_TOL = 2 * 2.0 ** -23  # 2 float32 eps; measured: <= 0.9 eps; the old float32 complements: 4 to 110 eps


def assert_matches_torch_states(case: dict, got: dict) -> None:
    """``got`` (:func:`steps_from_zero`) equals PyTorch's recorded float32 values to ``F32_TOL`` relative to
    each buffer's largest value (elementwise, a lerp's cancellation makes 1-ulp differences look large)."""
    import numpy as np
    for k, want in case["after"].items():
        assert set(got[k]) == set(want), (k, sorted(got[k]), sorted(want))
        for name, values in want.items():
            w = np.array(values)
            err = np.max(np.abs(got[k][name] - w)) / np.max(np.abs(w))
            assert err <= F32_TOL, f"step {k}, {name}: max error {err:.3g} x max |value| > {F32_TOL:.3g}"
