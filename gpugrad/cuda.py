"""``gg.cuda``: is a GPU usable, synchronisation, streams, memory figures, the TF32 switch and the
choice of fused-kernel set. Safe to import and to query on a machine without CuPy or without a GPU:
``is_available()`` is then False and ``device_count()`` 0; the other calls raise one clear
:class:`DeviceUnavailableError` that says what was found and how to fix it."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .backends import DeviceUnavailableError
from .backends import cuda as _bc
from .backends.cuda.memory import OutOfMemoryError

__all__ = ["is_available", "device_count", "synchronize", "current_stream", "get_device_name", "set_device",
           "current_device", "memory_allocated", "memory_reserved", "max_memory_allocated",
           "reset_peak_memory_stats", "memory_stats", "empty_cache", "set_tf32", "get_tf32", "allow_tf32",
           "set_kernels", "get_kernels", "numba_kernels_status", "kernel_fallbacks", "DeviceUnavailableError", "OutOfMemoryError"]


def is_available() -> bool:
    """True if CuPy is installed and the driver reports at least one CUDA device. Never raises."""
    return _bc.probe()[0]


def device_count() -> int:
    """Number of visible CUDA devices (0 without CuPy or a driver). Never raises."""
    return _bc.probe()[2]


def _require(dev=None):
    """Raise the clear error unless a GPU is usable; return the ``cuda`` backend for ``dev``."""
    from ._device import device
    from .backends import get_backend
    d = device("cuda") if dev is None else (device("cuda", dev) if isinstance(dev, int) else device(dev))
    if not is_available():
        raise _bc.unavailable_error(d)
    return get_backend(d)


def synchronize(device: Any = None) -> None:
    """Wait until all work queued on the GPU has finished."""
    _require(device).synchronize()


def current_stream(device: Any = None):
    """CuPy's current stream (gpugrad launches every kernel on it)."""
    _require(device)
    import cupy
    return cupy.cuda.get_current_stream()


def current_device() -> int:
    _require()
    import cupy
    return int(cupy.cuda.runtime.getDevice())


def set_device(index: int) -> None:
    """Make ``cuda:index`` CuPy's current device."""
    _require(index)
    import cupy
    cupy.cuda.Device(int(index)).use()


def get_device_name(device: Any = None) -> str:
    be = _require(device)
    import cupy
    name = cupy.cuda.runtime.getDeviceProperties(be._gpu.id)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


# ------------------------------------------------------------------ memory (CuPy's pool)
def memory_allocated(device: Any = None) -> int:
    """Bytes held by live arrays on the device (CuPy pool, in use)."""
    be = _require(device)
    from .backends.cuda import memory
    return memory.allocated(be._gpu.id)


def memory_reserved(device: Any = None) -> int:
    """Bytes the memory pool holds from the driver (in use + cached for reuse)."""
    be = _require(device)
    from .backends.cuda import memory
    return memory.reserved(be._gpu.id)


def max_memory_allocated(device: Any = None) -> int:
    """The most bytes in use at once since the start or the last :func:`reset_peak_memory_stats`
    (exact: counted at every allocation)."""
    be = _require(device)
    from .backends.cuda import memory
    return memory.peak(be._gpu.id)


def reset_peak_memory_stats(device: Any = None) -> None:
    be = _require(device)
    from .backends.cuda import memory
    memory.reset_peak(be._gpu.id)


def memory_stats(device: Any = None) -> dict:
    return _require(device).memory_stats()


def empty_cache() -> None:
    """Return the pool's cached (unused) blocks to the driver."""
    _require()
    from .backends.cuda import memory
    memory.empty_cache()


# ------------------------------------------------------------------ TF32
def set_tf32(enabled: bool) -> None:
    """Allow TF32 tensor cores for float32 GEMMs (matmul, linear layers): ~3e-4 relative error, much
    faster on Ampere and newer. Off by default (or ``GPUGRAD_TF32=1``). Can be called before the GPU is
    used; it is applied when the CUDA backend starts."""
    _bc.set_tf32(enabled)


def get_tf32() -> bool:
    return _bc.get_tf32()


@contextlib.contextmanager
def allow_tf32(enabled: bool = True) -> Iterator[None]:
    """``with gg.cuda.allow_tf32():`` TF32 on inside the block, previous setting restored after."""
    old = _bc.get_tf32()
    _bc.set_tf32(enabled)
    try:
        yield
    finally:
        _bc.set_tf32(old)


# ------------------------------------------------------------------ fused kernels
def set_kernels(name: str) -> None:
    """Which fused kernels to launch: ``"cuda_c"`` (default: ``gpugrad/kernels/fused.cu`` through
    ``cupy.RawModule``, the fastest measured), ``"numba"`` (the Numba CUDA kernels; if Numba cannot load
    them here, the CUDA C kernels run, see :func:`numba_kernels_status`) or ``"xp"`` (none: plain CuPy
    ops). Also ``GPUGRAD_CUDA_KERNELS``."""
    from .backends.cuda import launcher
    launcher.set_impl(name)


def get_kernels() -> str:
    from .backends.cuda import launcher
    return launcher.get_impl()


def numba_kernels_status() -> tuple[bool, str]:
    """``(usable, why)``: can the Numba CUDA kernels load on this machine (probed once; never raises)."""
    from .backends.cuda import launcher
    return launcher.numba_status()


def kernel_fallbacks() -> dict:
    """``{(op, dtype, kernel set): error}`` for fused kernels that failed and fell back to CuPy ops."""
    return dict(_bc.runtime().fallbacks)


# ------------------------------------------------------------------ fast paths (not yet run on hardware)
__all__ += ["graphed_step", "set_gemm_path", "get_gemm_path"]


def __getattr__(name: str) -> Any:
    """``graphed_step`` (whole-step CUDA graphs, gpugrad/cuda_graphs.py), imported on first use: it pulls
    in the cuBLAS bindings and the graph runtimes, which ``import gpugrad`` does not need."""
    if name == "graphed_step":
        from .cuda_graphs import graphed_step
        return graphed_step
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"graphed_step"})


def set_gemm_path(path: str) -> None:
    """Where the linear layers' GEMMs go: ``"auto"`` (default: ``cupy.matmul`` eagerly, gpugrad's
    capturable cuBLAS handle inside :func:`graphed_step`) or ``"cublas"`` (the capturable handle
    always). Also ``GPUGRAD_GEMM_PATH``; the binding: ``GPUGRAD_CUBLAS_BINDING=nvmath|ctypes``."""
    from .backends.cuda import cublas
    cublas.set_gemm_path(path)


def get_gemm_path() -> str:
    from .backends.cuda import cublas
    return cublas.get_gemm_path()
