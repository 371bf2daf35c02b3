"""Which fused kernels the CUDA backend launches, and how.

Kernel sets: ``numba`` (the Numba CUDA kernels in ``gpugrad.kernels``, the default), ``cuda_c`` (the
same algorithms in ``fused.cu`` through ``cupy.RawModule``: lower launch overhead), ``xp`` (no custom
kernels: plain CuPy ops, the generic backend code). Choose with ``GPUGRAD_CUDA_KERNELS`` or
``gg.cuda.set_kernels(...)``. Every launch goes on CuPy's current stream.

If a custom kernel fails to build or launch for some op and dtype, that (op, dtype) falls back (numba ->
cuda_c -> CuPy ops) with one RuntimeWarning per step, and the failure is kept in ``fallbacks``
(``gg.cuda.kernel_fallbacks()``); ``GPUGRAD_STRICT_KERNELS=1`` raises instead (the GPU tests run so).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable

IMPLS = ("numba", "cuda_c", "xp")
_state = {"impl": os.environ.get("GPUGRAD_CUDA_KERNELS", "numba").strip().lower() or "numba"}
if _state["impl"] not in IMPLS:  # pragma: no cover - a typo in the environment
    warnings.warn(f"GPUGRAD_CUDA_KERNELS={_state['impl']!r} is not one of {IMPLS}; using 'numba'", RuntimeWarning)
    _state["impl"] = "numba"
fallbacks: dict[tuple, str] = {}


def set_impl(name: str) -> None:
    name = str(name).strip().lower()
    if name not in IMPLS:
        raise ValueError(f"gg.cuda.set_kernels: expected one of {IMPLS}, got {name!r}")
    _state["impl"] = name


def get_impl() -> str:
    return _state["impl"]


def strict() -> bool:
    return os.environ.get("GPUGRAD_STRICT_KERNELS", "0").strip().lower() in ("1", "true", "yes", "on")


class Launcher:
    """Runs one fused op through the chosen kernel set; returns False when the caller should use the
    generic CuPy code instead."""

    def __init__(self) -> None:
        import cupy
        self.cp = cupy
        self._streams: dict[int, Any] = {}
        dev = cupy.cuda.Device()
        try:
            self.sms = int(dev.attributes["MultiProcessorCount"])
        except Exception:  # pragma: no cover
            self.sms = 80
        self.max_blocks = self.sms * 16  # grid-stride loops: enough resident blocks to hide latency
        self.target_blocks = self.sms * 4

    def _current_device(self) -> int:
        return int(self.cp.cuda.runtime.getDevice())

    # -------------------------------------------------------------- numba interop
    def _nb_stream(self):
        from numba import cuda
        ptr = int(self.cp.cuda.get_current_stream().ptr)
        s = self._streams.get(ptr)
        if s is None:
            s = cuda.default_stream() if ptr == 0 else cuda.external_stream(ptr)
            self._streams[ptr] = s
        return s

    def _nb(self, a):
        """A Numba device array viewing CuPy array ``a`` (no copy, no stream synchronisation: we launch
        on the stream that produced ``a``)."""
        if not isinstance(a, self.cp.ndarray):
            return a
        from numba import cuda
        desc = a.__cuda_array_interface__
        if "stream" in desc:
            desc = dict(desc)
            del desc["stream"]
        return cuda.from_cuda_array_interface(desc, owner=a, sync=False)

    # -------------------------------------------------------------- dispatch
    def run(self, op: str, dtype, numba_call: Callable[..., None], cuda_c_call: Callable[..., None],
            *arrays: Any) -> bool:
        impl = _state["impl"]
        if impl == "xp":
            return False
        if impl == "numba" and self._current_device() != 0:
            impl = "cuda_c"  # Numba targets device 0 here; CuPy's RawModule follows CuPy's current device
        chain = (impl, "cuda_c") if impl == "numba" else (impl,)  # numba failing: try the CUDA C twin
        for im in chain:
            if fallbacks and (op, str(dtype), im) in fallbacks:  # the key is formatted only after a failure
                continue
            try:
                if im == "numba":
                    numba_call(self._nb_stream(), *(self._nb(a) for a in arrays))
                else:
                    cuda_c_call(*arrays)
                return True
            except Exception as e:
                if strict():
                    raise
                fallbacks[(op, str(dtype), im)] = f"{type(e).__name__}: {e}"
                then = "trying the cuda_c kernel" if im != chain[-1] else "that op now runs as plain CuPy ops (slower)"
                warnings.warn(f"gpugrad: the {im} kernel for {op} ({dtype}) failed ({type(e).__name__}: {e}); "
                              f"{then}. Set GPUGRAD_STRICT_KERNELS=1 to raise instead, or choose another kernel "
                              "set with gg.cuda.set_kernels().", RuntimeWarning, stacklevel=3)
        return False
