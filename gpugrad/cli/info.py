"""``gpugrad info``: versions, devices, and which backends and kernels are usable here."""
from __future__ import annotations

import argparse
import os
import platform
from typing import Sequence

from ..benchmarking import PACKAGES, versions
from ..install_hints import INSTALL_HINTS
from .options import cuda_status


_HINT_KEY = {"mpi4py": "mpi"}  # module -> its key in install_hints.INSTALL_HINTS where they differ


def add_parser(sub) -> None:
    """Register ``info`` on the sub-command parsers ``sub``."""
    sub.add_parser("info", help="versions, devices, usable backends and kernels")


def info_text() -> str:
    """The text of ``gpugrad info``."""
    v = versions()
    lines = [f"gpugrad {v['gpugrad']}",
             f"python {v['python']} ({platform.python_implementation()}, {platform.platform(terse=True)})"]
    lines.append("packages:")
    for k, dist in PACKAGES:
        if k == "gpugrad":
            continue
        ver = v.get(k)
        name = dist or k  # the name pip knows (nvmath-python); cupy's varies
        fix = INSTALL_HINTS.get(_HINT_KEY.get(k, k))
        lines.append(f"  {name:<13} {ver if ver else 'not installed' + (': ' + fix if fix else '')}")
    lines.append("devices:")
    ncpu = os.cpu_count() or 1
    blas = _blas_name()
    lines.append(f"  cpu: available - NumPy backend, {ncpu} logical cores, BLAS {blas}")
    ok, reason = cuda_status()
    if ok:
        lines.append(f"  cuda: available - {_cuda_devices_text()}")
    else:
        lines.append(f"  cuda: unavailable - {reason}")
    lines.append("backends and kernels:")
    for name, usable, why in _kernel_status(ok):
        lines.append(f"  {name:<44} {'yes' if usable else 'no '}  {why}")
    lines.append(f"default device for 'gpugrad train --device auto': {'cuda' if ok else 'cpu'}")
    return "\n".join(lines)


def _blas_name() -> str:
    """The BLAS behind the CPU backend's linear layers: MKL when installed, else NumPy's."""
    from ..backends import cpu_blas
    return cpu_blas.provider()


def _cuda_devices_text() -> str:
    try:
        import cupy
        n = cupy.cuda.runtime.getDeviceCount()
        parts = []
        for i in range(n):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            parts.append(f"cuda:{i} {name} ({props['totalGlobalMem'] / 2**30:.0f} GiB, "
                         f"sm_{props['major']}{props['minor']})")
        rt = cupy.cuda.runtime.runtimeGetVersion()
        drv = cupy.cuda.runtime.driverGetVersion()
        return "; ".join(parts) + f"; CUDA runtime {rt // 1000}.{rt % 1000 // 10}, driver {drv // 1000}.{drv % 1000 // 10}"
    except Exception as e:  # pragma: no cover - needs a GPU
        return f"(device query failed: {type(e).__name__}: {e})"


def _kernel_status(cuda_ok: bool) -> list[tuple[str, bool, str]]:
    """(name, usable, why) for the CPU and CUDA execution paths."""
    import importlib.util
    rows: list[tuple[str, bool, str]] = []
    try:
        import numba
        rows.append(("cpu: NumPy ops + numba njit", True, f"numba {numba.__version__}, BLAS {_blas_name()}"))
    except Exception as e:  # pragma: no cover - numba is a dependency
        rows.append(("cpu: NumPy ops + numba njit", False, f"numba failed to import: {e}"))
    no_gpu = "no usable CUDA device (see the cuda line above)"
    rows.append(("cuda: CuPy arrays + cuBLAS GEMMs", cuda_ok, "ready" if cuda_ok else no_gpu))
    sim = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    from ..backends.cuda import launcher as _launcher
    if sim:
        rows.append(("cuda: Numba CUDA kernels", False,
                     "NUMBA_ENABLE_CUDASIM=1: the Numba CUDA simulator (for tests, not a GPU)"))
    else:
        ok, why = _launcher.numba_status(device_check=cuda_ok)
        if ok and not cuda_ok:
            why += f"; {no_gpu}"
        rows.append(("cuda: Numba CUDA kernels", ok and cuda_ok,
                     why if ok else f"unusable: {why}; using CUDA C kernels"))
    rows.append(("cuda: CUDA C kernels (CuPy NVRTC)", cuda_ok, "ready" if cuda_ok else no_gpu))
    try:
        from .. import cuda
        impl = cuda.get_kernels()
        falls = cuda.kernel_fallbacks()
        why = f"set {impl!r} (gg.cuda.set_kernels / GPUGRAD_CUDA_KERNELS: cuda_c (default), numba, xp)"
        if falls:
            why += f"; {len(falls)} fell back to CuPy ops: " + "; ".join(f"{k}: {v}" for k, v in list(falls.items())[:3])
        rows.append(("cuda: fused bias+activation kernels", cuda_ok, why if cuda_ok else f"{no_gpu}; {why}"))
        rows.append(("cuda: TF32 GEMMs", cuda_ok and cuda.get_tf32(),
                     f"{'on' if cuda.get_tf32() else 'off'} (gg.cuda.set_tf32 / GPUGRAD_TF32=1)"))
    except Exception:  # pragma: no cover - older gpugrad.cuda
        pass
    has_nvmath = importlib.util.find_spec("nvmath") is not None
    rows.append(("cuda: cuBLASLt epilogues (nvmath-python)", has_nvmath and cuda_ok,
                 ("ready" if cuda_ok else no_gpu) if has_nvmath
                 else "nvmath-python not installed (optional: " + INSTALL_HINTS["nvmath"] + ")"))
    return rows


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """``gpugrad info``: returns the exit code."""
    print(info_text())
    return 0

