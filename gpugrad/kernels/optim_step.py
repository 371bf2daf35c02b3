"""Multi-tensor optimizer steps on the GPU: one launch updates a contiguous range of flat buffers (every
parameter of one device, dtype and param group, see ``gpugrad/optim/flat.py``), generated from the rule in
``optim_rules.py`` by ``optim_codegen.py``, as a Numba CUDA kernel or as CUDA C through ``cupy.RawModule``.

``arrays`` maps ``'p'``, ``'g'`` and each present state name to a 1-D buffer; ``options`` holds the rule's
hyperparameters and flags; ``derived`` the per-step scalars of an ordinary step. A capturable step passes
``step`` (one element, compute dtype: the count for this update) and ``found_inf`` (one float32 element)
instead; both stay on the device. float16 storage computes in float32.
"""
from __future__ import annotations

import numpy as np

from . import _numba
from . import optim_codegen as cg
from .optim_rules import Rule

cuda = None  # numba.cuda, bound when the first kernel is built


def numba_kernel(rule: Rule, mask: tuple, cdt, capturable: bool):
    """The generated Numba CUDA kernel for one rule, state mask, compute dtype and variant."""
    def build():
        mod = _numba.nb_cuda(globals())
        F = np.dtype(cdt).type
        return cg.numba_kernel(rule, mask, capturable, F, mod.jit, mod.jit(device=True), cuda_module=mod)
    return _numba.cached(("optim", rule.name, mask, np.dtype(cdt).str, capturable), build)


def step_numba(rule: Rule, arrays: dict, start: int, end: int, options: dict, derived: tuple = (), step=None,
               found_inf=None, *, stream=None, block: int = 256, max_blocks: int | None = None) -> None:
    """One Numba CUDA launch over ``[start, end)``."""
    if end <= start:
        return
    c = _numba.compute_dtype(arrays["p"].dtype)
    mask = rule.present(options)
    k = numba_kernel(rule, mask, c, step is not None)
    args = cg.pack_args(rule, mask, arrays, start, end, options, derived, step, found_inf, c.type, np.int64)
    _numba.launch(k, _numba.blocks_for(end - start, block, max_blocks), block, stream, *args)


def step_cuda_c(rule: Rule, arrays: dict, start: int, end: int, options: dict, derived: tuple = (), step=None,
                found_inf=None, *, state, block: int = 256, max_blocks: int | None = None) -> None:
    """One CUDA C launch over ``[start, end)`` (CuPy arrays, CuPy's current stream). The generated CUDA C of
    ``rule`` for one state mask is compiled once per device into ``state`` (the backend's per-device
    state; see ``cuda_c.module``), and each entry point looked up there once (a lookup per launch costs
    host time)."""
    if end <= start:
        return
    dt = np.dtype(arrays["p"].dtype)
    c = _numba.compute_dtype(dt).type
    mask = rule.present(options)
    key = ("optim", rule.name, mask, step is not None, dt)
    f = state.functions.get(key)
    if f is None:
        from .cuda_c import entry
        f = entry(state, key, ("optim", rule.name, mask), lambda: cg.cuda_c_source(rule, [mask]),
                  cg.entry_name(rule, mask, step is not None, _numba.storage_suffix(dt)))
    args = cg.pack_args(rule, mask, arrays, start, end, options, derived, step, found_inf, c, np.int64)
    args = [np.int32(a) if isinstance(a, bool) else a for a in args]
    f((_numba.blocks_for(end - start, block, max_blocks),), (block,), tuple(args))
