"""MPI backend: mpi4py buffer-protocol collectives on NumPy arrays.

CUDA-aware MPI is not assumed: a device (CuPy) array goes through a host copy (device -> host, the
collective on the host buffer, host -> device on ``wait()``). Use ``backend="nccl"`` for GPUs.
Every collective is non-blocking underneath (``Iallreduce``/``Ibcast``/``Ibarrier``) and waited
with the group's timeout, so a dead or diverged rank raises :class:`DistributedTimeout` instead of
hanging."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

from .._threads import THREAD_VARS, launcher_size
from ..install_hints import hint
from .group import DistributedError, ProcessGroup, Work, check_op


def import_mpi(where: str):
    """``mpi4py.MPI``, or a :class:`DistributedError` saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"{where}: mpi4py is not installed (or cannot load its MPI library: {e}). "
                               f"Fix: {hint('mpi')}") from e
    return MPI


@functools.lru_cache(maxsize=None)
def mpiexec() -> str | None:
    """The ``mpiexec`` beside this Python (a venv's, from the ``mpich`` wheel), else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


@functools.lru_cache(maxsize=None)
def _extra_flags() -> tuple[str, ...]:
    """Open MPI's mpiexec needs ``--oversubscribe`` (more ranks than cores) and, as root,
    ``--allow-run-as-root``; MPICH's (the ``mpich`` wheel) needs nothing."""
    try:
        v = subprocess.run([str(mpiexec()), "--version"], capture_output=True, text=True, timeout=20).stdout
    except Exception:
        return ()
    if "Open MPI" not in v and "OpenRTE" not in v:
        return ()
    root = ("--allow-run-as-root",) if hasattr(os, "geteuid") and os.geteuid() == 0 else ()
    return ("--oversubscribe", *root)


def mpiexec_command(n: int, args: Sequence[str]) -> list[str]:
    """``mpiexec [Open MPI's flags] -n n <this python> args...``."""
    exe = mpiexec()
    if exe is None:
        raise DistributedError(f"no mpiexec beside {sys.executable} or on PATH. Fix: {hint('mpi')}")
    return [exe, *_extra_flags(), "-n", str(n), sys.executable, *args]


def check_world(comm_size: int, expected: int | None, where: str) -> None:
    """Errors for a process started outside mpiexec when more ranks were expected, or under the
    mpiexec of a different MPI library than mpi4py's (every process then sees a world of 1)."""
    if expected is not None and expected != comm_size:
        raise DistributedError(
            f"{where}: world_size={expected} was requested but MPI sees {comm_size} process(es). Launch "
            f"with `mpiexec -n {expected} python3 ...` (a plain `python3` run is a world of 1).")
    ann = launcher_size()
    if ann is not None and ann[1] > 1 and comm_size == 1:
        raise DistributedError(
            f"{where}: the launcher started {ann[1]} processes ({ann[0]}={ann[1]}) but mpi4py's MPI sees a "
            "world of 1: mpiexec and mpi4py come from different MPI libraries. Use the mpiexec that "
            "belongs to mpi4py's MPI (`python3 -c \"from mpi4py import MPI; print(MPI.Get_library_version())\"`; "
            "with the `mpich` wheel it is the `mpiexec` that wheel installs).")


_MPI_OPS = {"sum": "SUM", "avg": "SUM", "max": "MAX", "min": "MIN"}


class ProcessGroupMPI(ProcessGroup):
    """Collectives over a duplicate of ``MPI.COMM_WORLD`` (ours never mix with the user's)."""

    name = "mpi"

    def __init__(self, comm: Any, timeout: float) -> None:
        self.MPI = import_mpi("init_process_group(backend='mpi')")
        self.comm = comm.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.timeout = float(timeout)

    def _work(self, req, finish, what: str) -> Work:
        return Work(req.Test, finish, self.timeout, what, self.rank, self.size)

    def reduce_dtype(self, dtype: Any) -> Any:
        # MPI has no portable half type: float16 buckets travel (and are summed) in float32.
        return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)

    def _host(self, arr: Any, be: Any, reduce: bool) -> tuple[np.ndarray, bool]:
        """A C-contiguous NumPy buffer for ``arr`` and whether it is a copy to write back. MPI has no
        portable half type: float16 is summed in a float32 copy, and broadcast as raw 16-bit words."""
        if isinstance(arr, np.ndarray) and arr.flags.c_contiguous and arr.dtype != np.float16:
            return arr, False
        host = np.ascontiguousarray(arr if isinstance(arr, np.ndarray) else be.to_numpy(arr))
        if host.dtype == np.float16:
            host = host.astype(np.float32) if reduce else host.view(np.uint16)
        return host, True  # a device array goes through this host copy (CUDA-aware MPI is not assumed)

    @staticmethod
    def _write_back(arr: Any, be: Any, host: np.ndarray) -> None:
        if host.dtype == np.uint16 and arr.dtype == np.float16:
            host = host.view(np.float16)
        arr[...] = host if isinstance(arr, np.ndarray) else be.from_numpy(host.astype(arr.dtype, copy=False))

    def all_reduce_array(self, arr: Any, be: Any, op: str = "sum", async_op: bool = False) -> Work | None:
        op = check_op(op, "all_reduce")
        host, copied = self._host(arr, be, True)
        if op == "avg" and host.dtype.kind not in "fc":
            raise DistributedError(f"all_reduce(op='avg'): needs a floating-point tensor, got {host.dtype}; "
                                   "use op='sum' and divide as you need")
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=getattr(self.MPI, _MPI_OPS[op]))
        return self._complete(req, arr, be, host, copied, f"all_reduce({op}, {host.size} x {host.dtype})",
                              async_op, self.size if op == "avg" else None)

    def broadcast_array(self, arr: Any, be: Any, src: int = 0, async_op: bool = False) -> Work | None:
        if not 0 <= src < self.size:
            raise DistributedError(f"broadcast: src={src} is not a rank of this world of {self.size}")
        host, copied = self._host(arr, be, False)
        req = self.comm.Ibcast(host, root=src)
        return self._complete(req, arr, be, host, copied, f"broadcast(src={src}, {host.size} x {host.dtype})",
                              async_op)

    def _complete(self, req, arr: Any, be: Any, host: np.ndarray, copied: bool, what: str, async_op: bool,
                  divide: int | None = None) -> Work | None:
        """The Work of request ``req``: on completion divide (avg) and copy the host buffer back."""
        def finish() -> None:
            if divide is not None:
                host[...] /= divide
            if copied:
                self._write_back(arr, be, host)
        w = self._work(req, finish, what)
        if async_op:
            return w
        w.wait()
        return None

    def barrier(self) -> None:
        self._work(self.comm.Ibarrier(), None, "barrier").wait()

    def allgather_object(self, obj: Any) -> list:
        # Small metadata only (pickled by mpi4py between live ranks; never written to disk).
        return self.comm.allgather(obj)

    def destroy(self) -> None:
        if self.comm is not None:
            self.comm.Free()
            self.comm = None
