"""Test doubles (not shipped in the wheel): the strict CuPy stand-in (:mod:`tests.support.strict_cupy`),
a cuBLAS binding stand-in (:mod:`tests.support.fake_cublas`), the NumPy references of the CUDA kernels
(:mod:`tests.support.kernel_refs`), and :func:`strict_cuda`, which runs gpugrad's real CUDA backend on
the stand-in inside the normal test process::

    with tests.support.strict_cuda() as cp:   # device "cuda" is now CUDABackend over the stand-in
        x = gg.tensor(np_data, device="cuda")
        cp_counts = cp_module.snapshot()
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from . import strict_cupy

__all__ = ["strict_cupy", "strict_cuda"]


@contextlib.contextmanager
def strict_cuda(kernels: str = "cuda_c", strict_kernels: bool = True, device_count: int = 1) -> Iterator:
    """Install the strict CuPy stand-in as ``cupy``, register the NumPy references of ``fused.cu``, and
    reset every gpugrad cache that remembers a CuPy (the availability probe, the ``cuda`` backend
    objects, the counting allocator, compiled modules and kernel handles, launch plans, kernel fallbacks);
    everything is restored on exit.
    ``kernels``: the kernel set (``"cuda_c"``: RawModule launches, checked against the CUDA source;
    ``"xp"``: plain array ops). ``strict_kernels``: ``GPUGRAD_STRICT_KERNELS=1`` inside (a kernel that
    fails raises instead of falling back). Yields the stand-in module (counters: ``.counters``,
    ``.snapshot()``, ``.reset_counters()``)."""
    from gpugrad import backends as _b
    from gpugrad.backends import cuda as _bc
    from gpugrad.experimental import epilogue_kernels as _ep
    from gpugrad.experimental import fused_mlp_kernels as _fm
    from gpugrad.backends.cuda import launcher as _la
    from gpugrad.backends.cuda import memory as _mem
    from gpugrad.kernels import cuda_c as _kc
    from gpugrad.kernels import optim_step as _ko
    from . import kernel_refs

    caches = [_bc._probe_cache, _mem._allocator, _kc._modules, _kc._plans, _kc._runtime, _la.fallbacks, _ep._avail,
              _ep._plans, _ep._unsupported, _fm._modules, _ko._modules, _ko._functions]
    saved_caches = [c.copy() for c in caches]
    saved_instances = {d: be for d, be in _b._instances.items() if d.type == "cuda"}
    saved_impl = _la._state["impl"]
    saved_env = os.environ.get("GPUGRAD_STRICT_KERNELS")

    def clear() -> None:
        for c in caches:
            c.clear()
        for d in [d for d in _b._instances if d.type == "cuda"]:
            del _b._instances[d]

    saved_modules = strict_cupy.install(device_count)
    kernel_refs.register(strict_cupy)
    clear()
    _la.set_impl(kernels)
    if strict_kernels:
        os.environ["GPUGRAD_STRICT_KERNELS"] = "1"
    try:
        yield strict_cupy
    finally:
        strict_cupy.uninstall(saved_modules)
        clear()
        for c, old in zip(caches, saved_caches):
            if isinstance(c, dict):
                c.update(old)
            else:
                c[:] = old
        _b._instances.update(saved_instances)
        _la._state["impl"] = saved_impl
        if saved_env is None:
            os.environ.pop("GPUGRAD_STRICT_KERNELS", None)
        else:
            os.environ["GPUGRAD_STRICT_KERNELS"] = saved_env
