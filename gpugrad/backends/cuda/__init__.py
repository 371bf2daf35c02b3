"""The CUDA backend (CuPy arrays, cuBLAS GEMMs, gpugrad's fused kernels). Importing this package
registers the ``cuda`` device type; CuPy is imported only when a CUDA device is first asked for, and
a machine without a usable GPU gets one clear :class:`DeviceUnavailableError` saying what was found."""
from __future__ import annotations

import os

from ..._device import device as _device_t
from ...install_hints import hint
from ..._errors import named_error
from .. import register_backend
from ..base import Backend, DeviceUnavailableError
from .state import runtime

FIX = (f"Fix: install CuPy for your driver's CUDA version: {hint('cupy')}; check the driver and the GPUs "
       "with `nvidia-smi`; or run on device='cpu'.")

def probe(refresh: bool = False) -> tuple[bool, str, int]:
    """``(usable, what was found, device count)``. Never raises; kept in the runtime state
    (``refresh=True`` re-probes)."""
    rt = runtime()
    if rt.probe is None or refresh:
        rt.probe = _probe()
    return rt.probe


def _probe() -> tuple[bool, str, int]:
    try:
        import cupy
    except ImportError as e:
        return False, f"CuPy is not installed ({e})", 0
    except Exception as e:  # a broken install: wrong CUDA libraries, ABI mismatch...
        return False, f"CuPy is installed but failed to import ({type(e).__name__}: {e})", 0
    version = getattr(cupy, "__version__", "?")
    try:
        rt = cupy.cuda.runtime.runtimeGetVersion()
        rt_text = f"CUDA runtime {rt // 1000}.{(rt % 1000) // 10}"
    except Exception:
        rt_text = "its CUDA runtime"
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:
        status = getattr(e, "status", None)
        text = f"{type(e).__name__}: {e}"
        if status == 35 or "InsufficientDriver" in str(e):  # cudaErrorInsufficientDriver
            try:
                drv = cupy.cuda.runtime.driverGetVersion()
            except Exception:
                drv = 0
            found = ("no NVIDIA driver was found" if not drv else
                     f"the NVIDIA driver supports CUDA {drv // 1000}.{(drv % 1000) // 10} only")
            return False, (f"CuPy {version} (built for {rt_text}) is installed, but {found} ({text})"), 0
        if status == 100 or "NoDevice" in str(e):  # cudaErrorNoDevice
            vis = os.environ.get("CUDA_VISIBLE_DEVICES")
            extra = f"; CUDA_VISIBLE_DEVICES={vis!r}" if vis is not None else ""
            return False, (f"CuPy {version} and the NVIDIA driver are present, but no CUDA device is visible "
                           f"({text}{extra})"), 0
        return False, f"CuPy {version} is installed, but the CUDA runtime failed ({text})", 0
    if n == 0:
        return False, f"CuPy {version} and the NVIDIA driver are present, but the driver reports 0 CUDA devices", 0
    return True, f"CuPy {version}, {rt_text}, {n} device(s)", n


def unavailable_error(dev: "_device_t | str", reason: str | None = None) -> BaseException:
    """The one error for asking for CUDA where it cannot run."""
    if reason is None:
        reason = probe()[1]
    return named_error(DeviceUnavailableError, f"cuda: cannot use device '{dev}': {reason}. {FIX}")


def _factory(dev: _device_t) -> Backend:
    ok, reason, n = probe()
    if not ok:
        raise unavailable_error(dev, reason)
    index = dev.index or 0
    if index >= n:
        raise named_error(DeviceUnavailableError,
            f"cuda: device '{dev}' does not exist: {n} CUDA device(s) found (valid: cuda:0 to cuda:{n - 1}). "
            "Fix: pick an existing index, or check CUDA_VISIBLE_DEVICES and `nvidia-smi`.")
    from .backend import CUDABackend
    try:
        return CUDABackend(dev)
    except DeviceUnavailableError:
        raise
    except Exception as e:
        raise named_error(DeviceUnavailableError,
            f"cuda: device '{dev}' was found but could not be initialised ({type(e).__name__}: {e}). "
            f"{FIX}") from e


register_backend("cuda", _factory)


# ------------------------------------------------------------------ TF32 switch (applies to cuBLAS float32 GEMMs)
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() in ("1", "true", "yes", "on")


# GPUGRAD_TF32 wins; else CuPy's own CUPY_TF32 is respected.
_tf32 = [_env_flag("GPUGRAD_TF32") if "GPUGRAD_TF32" in os.environ else _env_flag("CUPY_TF32")]


def set_tf32(enabled: bool) -> None:
    """Let float32 GEMMs (matmul, linear) use TF32 tensor cores (10-bit mantissa inputs, float32
    accumulate: ~3e-4 relative error, several times faster). Off by default, as in PyTorch. Also
    settable with the environment variable ``GPUGRAD_TF32=1``. Applies to CuPy's float32 matmuls
    process-wide."""
    _tf32[0] = bool(enabled)
    from ... import backends as _b
    if any(d.type == "cuda" for d in _b._instances):
        apply_tf32()


def get_tf32() -> bool:
    return _tf32[0]


def apply_tf32() -> None:
    """Push the TF32 setting into CuPy (needs a device: called when the backend starts)."""
    import numpy as np
    from cupy._core import _routines_linalg as L
    L.set_compute_type(np.float32, L.COMPUTE_TYPE_TF32 if _tf32[0] else L.COMPUTE_TYPE_DEFAULT)


__all__ = ["runtime", "probe", "unavailable_error", "set_tf32", "get_tf32", "FIX", "DeviceUnavailableError"]
