"""The CPU backend's optimizer pass: the rule of ``gpugrad/kernels/optim_rules.py`` compiled by Numba (``njit``) into
one serial loop over a range of flat buffers (see ``gpugrad/kernels/optim_codegen.py``), per rule, state mask,
dtype and variant. Serial on purpose: a threaded build ran the step 1.5x slower on 2 cores (Numba's and
the BLAS threads spin against each other)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile

import numba
import numpy as np

from ..kernels import optim_codegen as cg
from ..kernels.optim_rules import Rule

_cache: dict = {}
_JIT = numba.njit(cache=False, error_model="numpy")  # see optim_codegen._NJIT


def kernel(rule: Rule, mask: tuple, dtype, capturable: bool):
    """The compiled loop for one rule, state mask, dtype and variant (cached in memory and on disk)."""
    key = (rule.name, mask, np.dtype(dtype).str, capturable)
    k = _cache.get(key)
    if k is None:
        try:
            k = _from_file(cg.numba_module_source(rule, mask, capturable, np.dtype(dtype).name))
        except OSError:  # no writable cache folder: compile in memory (every process)
            k = cg.numba_kernel(rule, mask, capturable, np.dtype(dtype).type, _JIT, _JIT)
        _cache[key] = k
    return k


def _cache_dir() -> str:
    base = os.environ.get("GPUGRAD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "gpugrad")
    return os.path.join(base, "optim")


def _from_file(source: str):
    """Import the generated module from ``<cache>/optim/<hash>.py`` (written atomically once), so that
    Numba's ``cache=True`` keeps its machine code across processes."""
    digest = hashlib.sha256((source + numba.__version__).encode()).hexdigest()[:20]
    folder = _cache_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"k_{digest}.py")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"gpugrad_optim_k_{digest}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # Numba's cache finds a function's module by name
    spec.loader.exec_module(mod)
    return mod.kernel


def run(rule: Rule, arrays: dict, start: int, end: int, options: dict, derived: tuple = (), step=None,
         found_inf=None) -> None:
    """Update ``[start, end)`` of the float32/float64 flat buffers in ``arrays`` in place."""
    dt = arrays["p"].dtype
    mask = rule.present(options)
    k = kernel(rule, mask, dt, step is not None)
    # unsigned bounds: Numba then knows the index is >= 0 (no wraparound code) and vectorises the loop (5x)
    k(*cg.pack_args(rule, mask, arrays, start, end, options, derived, step, found_inf, dt.type, np.uint64))
