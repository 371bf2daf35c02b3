"""gpugrad's CUDA runtime state, all of it in one object.

:func:`runtime` is the process's :class:`Runtime`: what was probed (CuPy and its devices, the Numba
kernels), the kernel fallbacks taken, the counting allocator, the cuBLAS binding, and one
:class:`DeviceState` per device (compiled modules, kernel handles, launch plans, cuBLAS handles and
workspaces). A ``CUDABackend`` holds the :class:`DeviceState` of its device and hands it to every
kernel launch. :func:`install` puts another :class:`Runtime` in place and returns the old one: with no
``CUDABackend`` objects alive (each holds its device's state) the next use probes, compiles and creates
everything again. That is how ``tests/support.strict_cuda`` runs the real backend on the CuPy stand-in
and then restores the real state untouched. Nothing here imports CuPy.

Settings are not state: the kernel set (``launcher``), the TF32 switch and the GEMM path keep their
own values and survive a new runtime state."""
from __future__ import annotations

import threading
from typing import Any

__all__ = ["DeviceState", "Runtime", "runtime", "install"]

MAX_PLANS = 4096  # launch plans per device: many distinct shapes (variable batches) start over, not grow


class DeviceState:
    """What gpugrad keeps for one CUDA device.

    ``modules``: compiled ``cupy.RawModule`` objects by source key; ``functions``: kernel handles by
    (source key, entry point); ``plans``: launch plans (kernel handle, grid, block, scalar arguments) by
    op, dtype, shape and options; ``cublas``: gpugrad's cuBLAS handles (with their fixed workspaces) by
    thread, as CuPy keeps its own (a handle must not be shared by threads that set its stream)."""

    def __init__(self, index: int) -> None:
        self.index = int(index)
        self.modules: dict = {}
        self.functions: dict = {}
        self.plans: dict = {}
        self.cublas: dict[int, Any] = {}

    def plan(self, key: tuple, make) -> tuple:
        """The launch plan of ``key``, made by ``make()`` the first time."""
        ent = self.plans.get(key)
        if ent is None:
            if len(self.plans) >= MAX_PLANS:
                self.plans.clear()
            ent = self.plans[key] = make()
        return ent

    def cublas_handle(self, make) -> Any:
        """This thread's cuBLAS handle on this device, made by ``make()`` on first use."""
        tid = threading.get_ident()
        h = self.cublas.get(tid)
        if h is None:
            h = self.cublas[tid] = make()
        return h


class Runtime:
    """The process's CUDA runtime state (see the module docstring)."""

    def __init__(self) -> None:
        self.probe: tuple | None = None       # (usable, what was found, device count)
        self.numba: tuple | None = None       # (usable, why) of the Numba CUDA kernels
        self.numba_warned = False
        self.fallbacks: dict[tuple, str] = {}  # (op, dtype, kernel set) -> the error that made it fall back
        self.allocator_installed = False
        self.allocator: Any = None            # the CountingAllocator, or None when another allocator was set
        self.binding: Any = None              # the cuBLAS binding (cublas.binding())
        self.devices: dict[int, DeviceState] = {}
        self.extra: dict[str, dict] = {}      # the experimental paths' caches, by name
        self._lock = threading.Lock()

    def device(self, index: int) -> DeviceState:
        """The :class:`DeviceState` of device ``index`` (created on first use)."""
        d = self.devices.get(index)
        if d is None:
            with self._lock:
                d = self.devices.setdefault(index, DeviceState(index))
        return d

    def cache(self, name: str) -> dict:
        """A named dict that lives and goes with this runtime (the experimental paths' caches)."""
        c = self.extra.get(name)
        if c is None:
            c = self.extra.setdefault(name, {})
        return c


_current = [Runtime()]


def runtime() -> Runtime:
    """The process's :class:`Runtime`."""
    return _current[0]


def install(rt: Runtime) -> Runtime:
    """Make ``rt`` the process's runtime; returns the one it replaces."""
    old = _current[0]
    _current[0] = rt
    return old
