"""Run a program under ``mpiexec`` from pytest (subprocess, bounded time); skip reasons when MPI is absent."""
from __future__ import annotations

import functools
import os
import subprocess
import time

from gpugrad.distributed.mpi import THREAD_VARS, mpiexec, mpiexec_command

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.lru_cache(maxsize=None)
def skip_reason() -> str | None:
    """Why MPI tests cannot run here (None when they can). With GPUGRAD_REQUIRE_MPI=1 (CI) the
    tests fail instead of skipping."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpi4py mpich, or pip install -e '.[dev]')"
    if mpiexec() is None:
        return "no mpiexec beside python or on PATH (pip install mpich installs one)"
    return None


def require_or_skip() -> None:
    import pytest
    reason = skip_reason()
    if reason is None:
        return
    if os.environ.get("GPUGRAD_REQUIRE_MPI") == "1":
        pytest.fail(f"GPUGRAD_REQUIRE_MPI=1 but {reason}")
    pytest.skip(reason)


def mpirun(n: int, args: list, timeout: float = 60, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """``mpiexec -n n python3 args...`` from the repository root; (result, seconds)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    for var in THREAD_VARS:
        e.setdefault(var, "1")
    e.update(env or {})
    cmd = mpiexec_command(n, args)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=e)
    return r, time.perf_counter() - t0
