"""Backend registry: one backend object per device; ops call it, never the array library by name."""
from __future__ import annotations

from typing import Callable

from .._device import device as _device_t, as_device
from .base import Backend, DeviceUnavailableError

_factories: dict[str, Callable[[_device_t], Backend]] = {}
_instances: dict[_device_t, Backend] = {}
_seed: list = [None]  # set by gg.manual_seed; applied to backends created later


def register_backend(device_type: str, factory: Callable[[_device_t], Backend]) -> None:
    """Register ``factory(device) -> Backend`` for a device type (a new device is a new backend)."""
    _factories[device_type] = factory


def get_backend(dev) -> Backend:
    """The backend object for ``dev`` (created on first use)."""
    dev = as_device(dev)
    be = _instances.get(dev)
    if be is None:
        factory = _factories.get(dev.type)
        if factory is None and dev.type == "cuda":
            from . import cuda as _cuda  # noqa: F401  registers itself
            factory = _factories.get("cuda")
        if factory is None:
            raise ValueError(f"no backend for device type {dev.type!r}")
        be = factory(dev)
        if _seed[0] is not None:
            be.manual_seed(_seed[0])
        _instances[dev] = be
    return be


def _cpu_factory(dev: _device_t) -> Backend:
    from .cpu import CPUBackend
    return CPUBackend(dev)


register_backend("cpu", _cpu_factory)

__all__ = ["Backend", "DeviceUnavailableError", "get_backend", "register_backend"]
