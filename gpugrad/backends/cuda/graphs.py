"""The two runtimes behind ``gg.cuda.graphed_step`` (``gpugrad/cuda_graphs.py``): CUDA graphs through
CuPy (a side stream, a private memory pool, gpugrad's capturable cuBLAS handle) and a CPU emulation
for the tests. Both have the same methods: ``context``, ``sync_in``/``sync_out``, ``prepare_capture``,
``begin_capture``/``end_capture``/``abort_capture``, ``launch``. No autograd here: the step logic
(static buffers, warm-up, capture, the checks) is in ``gpugrad/cuda_graphs.py``."""
from __future__ import annotations

import contextlib
from typing import Callable

from . import cublas
from .state import runtime

__all__ = ["CupyGraphRuntime", "EmulatedGraphRuntime"]


class CupyGraphRuntime:  # pragma: no cover - needs a GPU
    """Real CUDA graphs through CuPy: a non-blocking side stream, a private memory pool used during
    warm-up and capture only (so no later allocation can land in memory the graph replays into), a
    preset cuBLAS workspace, and events to order the side stream against the caller's stream."""

    emulated = False
    forces_gemms = True  # the linear layers' GEMMs through gpugrad's capturable cuBLAS handle

    def __init__(self) -> None:
        import cupy
        self.cp = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()

    def context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(self.cp.cuda.using_allocator(self.pool.malloc))
        stack.enter_context(self.stream)
        return stack

    def sync_in(self) -> None:
        """The side stream waits for the work the caller queued (the batch it passes)."""
        ev = self.cp.cuda.Event(disable_timing=True)
        ev.record(self.cp.cuda.get_current_stream())
        self.stream.wait_event(ev)

    def sync_out(self) -> None:
        """The caller's stream waits for the step (before it reads the loss or the weights)."""
        ev = self.cp.cuda.Event(disable_timing=True)
        ev.record(self.stream)
        self.cp.cuda.get_current_stream().wait_event(ev)

    def prepare_capture(self) -> None:
        """Point gpugrad's own cuBLAS handle (``cublas.py``: CuPy's wrapper refuses capture) at the side
        stream, with its fixed workspace, so that a captured GEMM allocates nothing."""
        cublas.get(runtime().device(self.cp.cuda.runtime.getDevice()), self.cp).set_stream(self.stream.ptr)

    def begin_capture(self) -> None:
        self.stream.begin_capture()

    def end_capture(self):
        return self.stream.end_capture()

    def abort_capture(self) -> None:
        try:
            if self.stream.is_capturing():
                self.stream.end_capture()
        except Exception:
            pass

    def launch(self, graph, replay: Callable[[], None]) -> None:
        graph.launch(stream=self.stream)


class _EmulatedGraph:
    def __init__(self, replay: Callable[[], None]) -> None:
        self.replay = replay


class EmulatedGraphRuntime:
    """CPU stand-in for the tests: 'capture' runs the step once (so that call needs no launch) and
    'replay' re-runs it on the static buffers, copying its loss into the static loss array. It
    exercises everything but the driver: static buffers, warm-up/capture/replay order, shape, RNG and
    hyper-parameter checks."""

    emulated = True
    forces_gemms = False  # nothing is captured: the backend's normal GEMMs (NumPy, or the CuPy stand-in's)

    def context(self):
        return contextlib.nullcontext()

    def sync_in(self) -> None:
        pass

    def sync_out(self) -> None:
        pass

    def prepare_capture(self) -> None:
        pass

    def begin_capture(self) -> None:
        pass

    def end_capture(self):
        return _EmulatedGraph(lambda: None)

    def abort_capture(self) -> None:
        pass

    def launch(self, graph, replay: Callable[[], None]) -> None:
        replay()
