"""Test doubles (not shipped in the wheel): the strict CuPy stand-in (:mod:`tests.support.strict_cupy`),
a cuBLAS binding stand-in (:mod:`tests.support.fake_cublas`), the NumPy references of the CUDA kernels
(:mod:`tests.support.kernel_refs`), and :func:`strict_cuda`, which runs gpugrad's real CUDA backend on
the stand-in inside the normal test process, on a runtime state of its own::

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
    run gpugrad's CUDA backend on a fresh runtime state (``gpugrad/backends/cuda/state.py``: the probe,
    compiled modules, kernel handles, launch plans, fallbacks, the allocator, cuBLAS binding and
    handles, the experimental paths' caches) with no ``cuda`` backend objects; on exit the outer
    runtime state and backend objects come back untouched.
    ``kernels``: the kernel set (``"cuda_c"``: RawModule launches, checked against the CUDA source;
    ``"xp"``: plain array ops). ``strict_kernels``: ``GPUGRAD_STRICT_KERNELS=1`` inside (a kernel that
    fails raises instead of falling back). Yields the stand-in module (counters: ``.counters``,
    ``.snapshot()``, ``.reset_counters()``)."""
    from gpugrad import backends as _b
    from gpugrad.backends.cuda import launcher as _la
    from gpugrad.backends.cuda import state as _st
    from . import kernel_refs

    saved_instances = {d: be for d, be in _b._instances.items() if d.type == "cuda"}
    saved_impl = _la._state["impl"]
    saved_env = os.environ.get("GPUGRAD_STRICT_KERNELS")

    def drop_backends() -> None:
        for d in [d for d in _b._instances if d.type == "cuda"]:
            del _b._instances[d]

    saved_modules = strict_cupy.install(device_count)
    kernel_refs.register(strict_cupy)
    outer = _st.install(_st.Runtime())
    drop_backends()
    _la.set_impl(kernels)
    if strict_kernels:
        os.environ["GPUGRAD_STRICT_KERNELS"] = "1"
    try:
        yield strict_cupy
    finally:
        strict_cupy.uninstall(saved_modules)
        drop_backends()
        _st.install(outer)
        _b._instances.update(saved_instances)
        _la._state["impl"] = saved_impl
        if saved_env is None:
            os.environ.pop("GPUGRAD_STRICT_KERNELS", None)
        else:
            os.environ["GPUGRAD_STRICT_KERNELS"] = saved_env
