"""Thread pools of a rank started by an MPI launcher: ``mpiexec -n 2 python3 -m gpugrad train`` on one
machine starts two processes, and each one's BLAS (and OpenMP, Numba) would start a thread per core,
so the ranks fight over the cores. ``import gpugrad`` calls :func:`limit_rank_threads` before NumPy
loads, which gives each rank ``cores // local ranks`` threads (at least 1):

- only under a launcher that started more than one process (``PMI_RANK``/``OMPI_COMM_WORLD_RANK``/...
  is set), counting the ranks on this machine (``MPI_LOCALNRANKS``, ``OMPI_COMM_WORLD_LOCAL_SIZE``,
  ``LOCAL_WORLD_SIZE``; else all ranks) and the cores this process may run on;
- ``GPUGRAD_NUM_THREADS=N`` sets N threads instead (in any process), ``GPUGRAD_NUM_THREADS=0`` leaves
  the libraries' defaults;
- when the user set any of :data:`THREAD_VARS` (``OMP_NUM_THREADS=4 mpiexec ...``), none is changed
  (OpenBLAS reads ``OMP_NUM_THREADS`` when ``OPENBLAS_NUM_THREADS`` is unset, and so on).

When NumPy was imported before gpugrad, its BLAS has already started: the limit then applies through
``threadpoolctl`` when that package is installed, else not at all. Imports nothing of gpugrad."""
from __future__ import annotations

import os
import sys
from typing import MutableMapping

# The thread pools of a rank's libraries (BLAS, OpenMP, Numba).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
OVERRIDE_VAR = "GPUGRAD_NUM_THREADS"
# Set by launchers in each process they start: its rank, the number of processes, the number on this machine.
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK")
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE", "SLURM_NTASKS",
                       "WORLD_SIZE")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE")


def _int(env: MutableMapping[str, str], var: str) -> int | None:
    v = env.get(var, "").strip()
    return int(v) if v.isdigit() else None


def launcher_size(env: MutableMapping[str, str] | None = None) -> tuple[str, int] | None:
    """(variable, number of processes) announced by the launcher's environment, if any."""
    env = os.environ if env is None else env
    for var in _LAUNCHER_SIZE_VARS:
        n = _int(env, var)
        if n is not None and var != "MPI_LOCALNRANKS":
            return var, n
    return None


def local_ranks(env: MutableMapping[str, str] | None = None) -> int:
    """Processes the launcher started on this machine (1 outside a launcher)."""
    env = os.environ if env is None else env
    if not any(v in env for v in _RANK_VARS):
        return 1
    for var in _LOCAL_SIZE_VARS:
        n = _int(env, var)
        if n:
            return n
    ann = launcher_size(env)
    return max(1, ann[1]) if ann else 1


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def rank_threads(env: MutableMapping[str, str] | None = None, cores: int | None = None) -> int | None:
    """The thread count for this process's pools, or None to leave the libraries' defaults."""
    env = os.environ if env is None else env
    override = env.get(OVERRIDE_VAR, "").strip()
    if override:
        if not override.isdigit():
            raise ValueError(f"{OVERRIDE_VAR}={override!r}: expected a whole number of threads "
                             "(0 leaves the libraries' defaults)")
        return int(override) or None
    k = local_ranks(env)
    if k <= 1:
        return None
    return max(1, (available_cores() if cores is None else cores) // k)


def limit_rank_threads(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`THREAD_VARS` to :func:`rank_threads` unless the user set one of them; returns what it set."""
    env = os.environ if env is None else env
    n = rank_threads(env)
    if n is None or any(env.get(var) for var in THREAD_VARS):
        return {}
    done = dict.fromkeys(THREAD_VARS, str(n))
    env.update(done)
    if env is os.environ and "numpy" in sys.modules:  # BLAS already started: limit it at run time
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(n)
        except Exception:  # noqa: BLE001 - optional: without threadpoolctl the env covers only later starts
            pass
    return done


__all__ = ["OVERRIDE_VAR", "THREAD_VARS", "available_cores", "launcher_size", "limit_rank_threads", "local_ranks",
           "rank_threads"]
