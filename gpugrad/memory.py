"""Memory you can see: the CUDA pool's peak, the traced host peak and saved-activation bytes, for a block.

    with gg.memory.track(trace=True) as m:
        loss = model(x).sum(); loss.backward()
    print(m)              # peak saved activations 12.0 MiB, peak device memory -, peak traced 14.1 MiB, 0.031 s
    m.peak_saved_bytes    # int: most bytes held for backward at once inside the block

``peak_device_bytes`` is the CUDA memory pool's true peak of in-use bytes
(``gg.cuda.max_memory_allocated``) when the block runs on a GPU, None on the CPU. With
``trace=True``, ``peak_traced_bytes`` is the peak of the host memory traced by Python's
``tracemalloc`` (NumPy's array buffers are traced): the CPU's counterpart of the device peak, every
array alive at the worst moment, not only those saved for backward. ``peak_saved_bytes`` comes from
``ctx.save_for_backward`` accounting (``gg.autograd.saved_bytes``): device independent and
deterministic, but it misses what else is alive at the peak (gradients, recomputed activations, temporaries).
"""
from __future__ import annotations

import time
import tracemalloc
from typing import Any

from ._device import as_device
from .autograd import saved as _saved

__all__ = ["track", "MemoryReport", "saved_bytes", "peak_saved_bytes", "reset_peak_saved_bytes", "format_bytes"]

saved_bytes = _saved.saved_bytes
peak_saved_bytes = _saved.peak_saved_bytes
reset_peak_saved_bytes = _saved.reset_peak_saved_bytes


def format_bytes(n: "int | float | None") -> str:
    """``1536 -> '1.5 KiB'``; None -> '-'."""
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024.0 or unit == "GiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GiB"  # pragma: no cover


def _cuda_module():
    """``gpugrad.cuda`` when it imports and a device is available, else None."""
    try:
        from . import cuda as _cuda  # type: ignore[attr-defined]
    except Exception:
        return None
    try:
        return _cuda if _cuda.is_available() else None
    except Exception:
        return None


def _cuda_in_use():
    """CUDA devices whose backend exists (something ran there), without importing CuPy otherwise."""
    from .backends import _instances
    return [d for d in _instances if d.type == "cuda"]


class MemoryReport:
    """What :func:`track` measured: ``peak_saved_bytes`` (absolute, includes ``start_saved_bytes``
    saved before the block), ``peak_saved_delta`` (above the start), ``end_saved_bytes``,
    ``peak_device_bytes`` (CUDA pool peak, None on CPU), ``peak_traced_bytes`` (tracemalloc peak, with
    ``trace=True``: counts everything traced, also what was traced before the block; tracing that
    starts at the block counts only what the block allocates), ``device`` and ``elapsed_s``."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.start_saved_bytes = 0
        self.end_saved_bytes = 0
        self.peak_saved_bytes = 0
        self.peak_device_bytes: int | None = None
        self.peak_traced_bytes: int | None = None
        self.elapsed_s = 0.0

    @property
    def peak_saved_delta(self) -> int:
        return self.peak_saved_bytes - self.start_saved_bytes

    def as_dict(self) -> dict:
        return {"device": None if self.device is None else str(self.device),
                "start_saved_bytes": self.start_saved_bytes, "end_saved_bytes": self.end_saved_bytes,
                "peak_saved_bytes": self.peak_saved_bytes, "peak_device_bytes": self.peak_device_bytes,
                "peak_traced_bytes": self.peak_traced_bytes, "elapsed_s": self.elapsed_s}

    def __str__(self) -> str:
        s = f"peak saved activations {format_bytes(self.peak_saved_bytes)}"
        if self.start_saved_bytes:
            s += f" ({format_bytes(self.peak_saved_delta)} above the {format_bytes(self.start_saved_bytes)} at entry)"
        s += f", peak device memory {format_bytes(self.peak_device_bytes)}"
        if self.device is not None and self.peak_device_bytes is None and getattr(self.device, "type", "") == "cpu":
            s += " (cpu: not tracked)"
        if self.peak_traced_bytes is not None:
            s += f", peak traced {format_bytes(self.peak_traced_bytes)}"
        return s + f", {self.elapsed_s:.3f} s"

    __repr__ = __str__


_open: list = []  # tracks in progress (outermost first)


class track:  # noqa: N801  (context manager, used like a function)
    """``with gg.memory.track(device=None, trace=False) as m:`` measure the peak saved-activation
    bytes, the CUDA pool peak (when ``device`` is CUDA, or for ``device=None`` when a CUDA device is in
    use), with ``trace`` the ``tracemalloc`` peak of host memory (started for the block when not
    already tracing, and stopped after it), and the wall time of the block (synchronised on CUDA).
    Nests: an inner block does not hide its peak from an outer one."""

    def __init__(self, device: Any = None, trace: bool = False) -> None:
        self._dev = as_device(device) if device is not None else None
        self.report = MemoryReport(self._dev)
        self._cuda_devs: list = []
        self._cuda = None
        self._device_seen = 0
        self._trace = bool(trace)
        self._started_tracing = False
        self._traced_seen = 0

    def _device_peak_now(self) -> int:
        return int(sum(self._cuda.max_memory_allocated(d) for d in self._cuda_devs)) if self._cuda_devs else 0

    def _sync(self) -> None:
        if self._cuda_devs:
            from .backends import get_backend
            for d in self._cuda_devs:
                get_backend(d).synchronize()

    def __enter__(self) -> MemoryReport:
        r = self.report
        if self._dev is None or self._dev.type == "cuda":
            devs = [self._dev] if self._dev is not None else _cuda_in_use()
            if devs:
                self._cuda = _cuda_module()
                if self._cuda is not None:
                    self._cuda_devs = devs
                    self._sync()
                    for t in _open:  # enclosing tracks keep the peak they saw before this reset
                        if t._cuda is not None:
                            t._device_seen = max(t._device_seen, t._device_peak_now())
                    for d in devs:
                        self._cuda.reset_peak_memory_stats(d)
        if self._trace:
            if tracemalloc.is_tracing():
                for t in _open:  # enclosing tracks keep the traced peak they saw before this reset
                    if t._trace:
                        t._traced_seen = max(t._traced_seen, tracemalloc.get_traced_memory()[1])
            else:
                tracemalloc.start()
                self._started_tracing = True
            tracemalloc.reset_peak()
        _open.append(self)
        self._outer_peak = _saved.peak_saved_bytes()
        _saved.reset_peak_saved_bytes()
        r.start_saved_bytes = _saved.saved_bytes()
        self._t0 = time.perf_counter()
        return r

    def __exit__(self, *exc: Any) -> None:
        if self._dev is None or self._dev.type == "cuda":
            # a CUDA device first used inside the block: its pool's peak since creation is the block's
            fresh = [d for d in _cuda_in_use() if d not in self._cuda_devs
                     and (self._dev is None or d == self._dev)]
            if fresh:
                if self._cuda is None:
                    self._cuda = _cuda_module()
                if self._cuda is not None:
                    self._cuda_devs = self._cuda_devs + fresh
        self._sync()
        if self in _open:
            _open.remove(self)
        r = self.report
        r.elapsed_s = time.perf_counter() - self._t0
        if self._trace:
            r.peak_traced_bytes = max(int(tracemalloc.get_traced_memory()[1]), self._traced_seen)
            if self._started_tracing:
                tracemalloc.stop()
        r.end_saved_bytes = _saved.saved_bytes()
        r.peak_saved_bytes = _saved.peak_saved_bytes()
        _saved._stats[1] = max(self._outer_peak, r.peak_saved_bytes)  # an enclosing track still sees it
        if self._cuda_devs and self._cuda is not None:
            r.peak_device_bytes = max(self._device_peak_now(), self._device_seen)
