"""Run a program under ``mpiexec`` from pytest (subprocess, bounded time); skip reasons when MPI is absent."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.lru_cache(maxsize=None)
def skip_reason() -> str | None:
    """Why MPI tests cannot run here (None when they can)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py mpich, or pip install -e '.[dev]')"
    if shutil.which("mpiexec") is None:
        return "no mpiexec on PATH (pip install mpich installs one)"
    return None


@functools.lru_cache(maxsize=None)
def _extra_flags() -> tuple:
    try:
        v = subprocess.run(["mpiexec", "--version"], capture_output=True, text=True, timeout=20).stdout
    except Exception:
        return ()
    return ("--oversubscribe",) if "Open MPI" in v or "OpenRTE" in v else ()  # MPICH needs nothing


def mpirun(n: int, args: list, timeout: float = 60, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """``mpiexec -n n python3 args...`` from the repository root; (result, seconds)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("OMP_NUM_THREADS", "1")
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    e.setdefault("MKL_NUM_THREADS", "1")
    e.setdefault("NUMBA_NUM_THREADS", "1")
    e.update(env or {})
    cmd = ["mpiexec", *_extra_flags(), "-n", str(n), sys.executable, *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=e)
    return r, time.perf_counter() - t0
