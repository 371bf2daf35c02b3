"""The CPU backend's optimizer pass: the rule of ``kernels/optim_rules.py`` compiled by Numba (``njit``) into
one serial loop over a range of flat buffers (see ``kernels/optim_codegen.py``), per rule, state mask,
dtype and variant. Serial on purpose: a threaded build ran the step 1.5x slower on 2 cores (Numba's and
the BLAS threads spin against each other)."""
from __future__ import annotations

import numba
import numpy as np

from ..kernels import optim_codegen as cg
from ..kernels.optim_rules import Rule

_cache: dict = {}
_JIT = numba.njit(cache=False)


def kernel(rule: Rule, mask: tuple, dtype, capturable: bool):
    key = (rule.name, mask, np.dtype(dtype).str, capturable)
    k = _cache.get(key)
    if k is None:
        k = _cache[key] = cg.numba_kernel(rule, mask, capturable, np.dtype(dtype).type, _JIT, _JIT)
    return k


def run(rule: Rule, arrays: dict, start: int, end: int, options: dict, derived: tuple = (), step=None,
         found_inf=None) -> None:
    """Update ``[start, end)`` of the float32/float64 flat buffers in ``arrays`` in place."""
    dt = arrays["p"].dtype
    t = dt.type
    mask = rule.present(options)
    k = kernel(rule, mask, dt, step is not None)
    a = [arrays["p"], arrays["g"]] + [arrays[s] for s, on in zip(rule.state, mask) if on]
    # unsigned bounds: Numba then knows the index is >= 0 (no wraparound code) and vectorises the loop (5x)
    a += [np.uint64(start), np.uint64(end)] + [t(options[h]) for h in rule.hyper]
    a += [step, found_inf] if step is not None else [t(d) for d in derived]
    k(*a, *[bool(options[f]) for f in rule.flags])
