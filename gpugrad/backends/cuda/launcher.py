"""Which fused kernels the CUDA backend launches, and how.

Kernel sets: ``cuda_c`` (the default: ``fused.cu`` through ``cupy.RawModule``, the fastest measured on an
H200 because of its low per-launch host cost), ``numba`` (the same algorithms as Numba CUDA kernels in
``gpugrad.kernels``; selectable, simulator-tested), ``xp`` (no custom kernels: plain CuPy ops, the generic
backend code). Choose with ``GPUGRAD_CUDA_KERNELS`` or ``gg.cuda.set_kernels(...)``. Every launch goes on
CuPy's current stream.

Whether the Numba kernels can load at all is probed once (:func:`numba_status`): numba-cuda 0.30.4 fails
to import its CUDA target under NumPy 2.5. With ``numba`` chosen but unusable, the CUDA C kernels run
instead (one RuntimeWarning saying why). If a custom kernel fails to build or launch for some op and
dtype, that (op, dtype) falls back (numba -> cuda_c -> CuPy ops) with one RuntimeWarning, and the failure
is kept in the runtime state's ``fallbacks`` (``gg.cuda.kernel_fallbacks()``). ``GPUGRAD_STRICT_KERNELS=1``
turns every one of these silent fallbacks into an error (the GPU tests run so).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable

from .state import runtime

IMPLS = ("numba", "cuda_c", "xp")
DEFAULT_IMPL = "cuda_c"
_state = {"impl": os.environ.get("GPUGRAD_CUDA_KERNELS", DEFAULT_IMPL).strip().lower() or DEFAULT_IMPL}
if _state["impl"] not in IMPLS:  # pragma: no cover - a typo in the environment
    warnings.warn(f"GPUGRAD_CUDA_KERNELS={_state['impl']!r} is not one of {IMPLS}; using {DEFAULT_IMPL!r}",
                  RuntimeWarning)
    _state["impl"] = DEFAULT_IMPL


def numba_status(refresh: bool = False, device_check: bool = True) -> tuple[bool, str]:
    """``(usable, why)`` for the Numba CUDA kernels, probed once (``refresh=True`` re-probes); never
    raises. Unusable when ``numba.cuda`` or its CUDA target fails to import (numba-cuda 0.30.4 under
    NumPy 2.5: its ``np/arrayobj.py`` overloads ``np.row_stack``, which NumPy 2.5 removed), when Numba
    sees no CUDA device, or when a one-line kernel fails to compile and run. Under
    ``NUMBA_ENABLE_CUDASIM=1`` the simulator counts as usable. ``device_check=False`` stops before the
    device steps (for ``gpugrad info`` on a machine without a GPU); that answer is not cached."""
    rt = runtime()
    if rt.numba is not None and not refresh:
        return rt.numba
    result = _probe_numba(device_check)
    if device_check:
        rt.numba = result
    return result


def _probe_numba(device_check: bool) -> tuple[bool, str]:
    import importlib
    try:
        from numba import cuda
    except Exception as e:
        return False, f"numba.cuda failed to import ({type(e).__name__}: {e})"
    try:
        from numba import config
        if config.ENABLE_CUDASIM:
            return True, "the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    except Exception:  # pragma: no cover
        pass
    # the CUDA target's array support is imported at the first kernel compile; import it now so that a
    # broken combination is named before any launch (ModuleNotFoundError: an older numba without it)
    for mod in ("numba.cuda.np.arrayobj", "numba.cuda.target"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is not None and mod.startswith(e.name):
                continue
            return False, _numba_import_reason(mod, e)
        except Exception as e:
            return False, _numba_import_reason(mod, e)
    if not device_check:
        return True, "numba.cuda imports (device not checked)"
    try:
        if not cuda.is_available():
            return False, "numba.cuda.is_available() is False (no GPU or driver visible to Numba, or no NVVM)"

        @cuda.jit
        def _one(a):  # pragma: no cover - runs on the GPU
            a[0] = 1.0
        import numpy as np
        d = cuda.to_device(np.zeros(1, np.float32))
        _one[1, 1](d)
        if float(d.copy_to_host()[0]) != 1.0:
            return False, "a one-line Numba CUDA kernel ran but wrote nothing"
    except Exception as e:
        return False, f"a one-line Numba CUDA kernel failed ({type(e).__name__}: {e})"
    return True, "numba.cuda imports and a kernel compiled and ran"


def _numba_import_reason(mod: str, e: BaseException) -> str:
    import numpy as np
    try:
        from importlib.metadata import version
        nc = version("numba-cuda")
    except Exception:
        nc = "?"
    return (f"importing {mod} failed ({type(e).__name__}: {e}) with numba-cuda {nc} and NumPy {np.__version__}; "
            "see docs/gpu.md's supported versions (numba-cuda 0.30.4 and older need NumPy < 2.5)")


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
    generic CuPy code instead. Fallbacks are kept in the runtime state it was made under."""

    def __init__(self) -> None:
        import cupy
        self.cp = cupy
        self.rt = runtime()
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
    def run(self, op: str, dtype, numba_call: Callable[..., None] | None, cuda_c_call: Callable[..., None],
            *arrays: Any) -> bool:
        """``numba_call(stream, *numba arrays)`` or ``cuda_c_call(*arrays)`` by the kernel set; an op with
        no Numba kernel passes ``numba_call=None`` and runs its CUDA C kernel under ``numba`` too."""
        impl = _state["impl"]
        if numba_call is None and impl == "numba":
            impl = "cuda_c"
        fallbacks = self.rt.fallbacks
        if impl == "cuda_c" and not fallbacks:  # the default, with nothing failed yet: one call
            try:
                cuda_c_call(*arrays)
                return True
            except Exception as e:
                self._failed(op, dtype, "cuda_c", True, e)
                return False
        if impl == "xp":
            return False
        if impl == "numba":
            ok, why = numba_status()
            if not ok:
                msg = f"Numba CUDA kernels: unusable: {why}; using CUDA C kernels"
                if strict():
                    raise RuntimeError(f"gpugrad: {msg} is a fallback, and GPUGRAD_STRICT_KERNELS=1 forbids it. "
                                       "Fix: gg.cuda.set_kernels('cuda_c') (the default), or a supported "
                                       "NumPy / numba-cuda pair (docs/gpu.md).")
                if not self.rt.numba_warned:
                    self.rt.numba_warned = True
                    warnings.warn(f"gpugrad: {msg}. Set GPUGRAD_STRICT_KERNELS=1 to raise instead.",
                                  RuntimeWarning, stacklevel=3)
                impl = "cuda_c"
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
                self._failed(op, dtype, im, im == chain[-1], e)
        return False

    def _failed(self, op: str, dtype, im: str, last: bool, e: Exception) -> None:
        """A kernel of set ``im`` failed: raise (strict), else remember the fallback and warn once."""
        if strict():
            raise e
        self.rt.fallbacks[(op, str(dtype), im)] = f"{type(e).__name__}: {e}"
        then = "that op now runs as plain CuPy ops (slower)" if last else "trying the cuda_c kernel"
        warnings.warn(f"gpugrad: the {im} kernel for {op} ({dtype}) failed ({type(e).__name__}: {e}); "
                      f"{then}. Set GPUGRAD_STRICT_KERNELS=1 to raise instead, or choose another kernel "
                      "set with gg.cuda.set_kernels().", RuntimeWarning, stacklevel=4)
