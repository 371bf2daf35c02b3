"""GPU memory accounting on CuPy's memory pool: bytes in use, bytes reserved, and a true peak.

The peak comes from a counting allocator installed in front of CuPy's default pool: in-use bytes only
grow at an allocation, so reading the pool's in-use figure right after each allocation and keeping
the maximum gives the exact peak. The same allocator turns an out-of-memory failure into an error that
names the size asked for and what to change (after one retry with the pool's cached blocks freed).
"""
from __future__ import annotations

import gc
import threading
from typing import Any

from .state import runtime


class OutOfMemoryError(MemoryError):
    """The GPU ran out of memory (message: the size asked for, what is in use, and what to change)."""


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"  # pragma: no cover


def oom_message(size: int, in_use: int, reserved: int, free: int | None, total: int | None, device_id: int) -> str:
    dev = f"cuda:{device_id}"
    card = "" if total is None else f", {_fmt(free or 0)} free of {_fmt(total)} on the card"
    return (f"cuda: out of memory allocating a tensor of {_fmt(size)} ({size} bytes) on {dev}: "
            f"{_fmt(in_use)} held by live tensors, {_fmt(reserved)} reserved by the memory pool{card}. "
            "Fix: use a smaller batch; recompute activations in backward with gg.checkpoint.checkpoint(...) or "
            "checkpoint_sequential(...) instead of saving them; delete tensors you no longer need (then "
            "gg.cuda.empty_cache()); or train in float16.")


class CountingAllocator:
    """``cupy.cuda.set_allocator`` hook over a ``cupy.cuda.MemoryPool``: tracks the peak of in-use bytes
    per device and reports out-of-memory clearly."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.peak: dict[int, int] = {}
        self._lock = threading.Lock()

    def malloc(self, size: int):
        pool = self.pool
        try:
            mp = pool.malloc(size)
        except Exception as e:
            if type(e).__name__ != "OutOfMemoryError":
                raise
            pool.free_all_blocks()  # give cached blocks back and collect cycles, then retry once
            gc.collect()
            try:
                mp = pool.malloc(size)
            except Exception as e2:
                if type(e2).__name__ != "OutOfMemoryError":
                    raise
                raise OutOfMemoryError(self._describe(size)) from None
        used = pool.used_bytes()
        dev = mp.device_id
        if used > self.peak.get(dev, 0):
            with self._lock:
                if used > self.peak.get(dev, 0):
                    self.peak[dev] = used
        return mp

    def _describe(self, size: int) -> str:
        import cupy
        free = total = None
        try:
            free, total = cupy.cuda.runtime.memGetInfo()
        except Exception:
            pass
        try:
            dev = cupy.cuda.runtime.getDevice()
        except Exception:
            dev = 0
        return oom_message(int(size), int(self.pool.used_bytes()), int(self.pool.total_bytes()), free, total, dev)


def install() -> "CountingAllocator | None":
    """Put the counting allocator in front of CuPy's default pool (once per runtime state). If the
    application has already set another allocator, leave it alone and return None (peaks then fall back
    to current use)."""
    rt = runtime()
    if rt.allocator_installed:
        return rt.allocator
    import cupy
    pool = cupy.get_default_memory_pool()
    alloc = None
    try:
        current = cupy.cuda.get_allocator()
    except Exception:  # pragma: no cover
        current = None
    if current is None or current == pool.malloc:
        alloc = CountingAllocator(pool)
        cupy.cuda.set_allocator(alloc.malloc)
    rt.allocator, rt.allocator_installed = alloc, True
    return alloc


def _device_id(device) -> int:
    import cupy
    if device is None:
        return cupy.cuda.runtime.getDevice()
    if isinstance(device, int):
        return device
    idx = getattr(device, "index", None)
    if idx is None and isinstance(device, str):
        from ..._device import device as _dev
        idx = _dev(device).index
    return int(idx or 0)


def _pool_for(device):
    import cupy
    return cupy.get_default_memory_pool(), _device_id(device)


def allocated(device=None) -> int:
    pool, dev = _pool_for(device)
    with _on(dev):
        return int(pool.used_bytes())


def reserved(device=None) -> int:
    pool, dev = _pool_for(device)
    with _on(dev):
        return int(pool.total_bytes())


def peak(device=None) -> int:
    alloc = install()
    dev = _device_id(device)
    cur = allocated(dev)
    if alloc is None:
        return cur
    return max(alloc.peak.get(dev, 0), cur)


def reset_peak(device=None) -> None:
    alloc = install()
    if alloc is not None:
        dev = _device_id(device)
        alloc.peak[dev] = allocated(dev)


def empty_cache() -> None:
    import cupy
    cupy.get_default_memory_pool().free_all_blocks()


def _on(dev: int):
    import cupy
    return cupy.cuda.Device(dev)


def stats(device=None) -> dict:
    return {"allocated_bytes": allocated(device), "reserved_bytes": reserved(device),
            "peak_allocated_bytes": peak(device)}
