"""``gg.distributed``: process groups for data-parallel training, with PyTorch's names.

Launch N processes with MPI (``mpiexec -n N python3 train.py``) and call
``init_process_group(backend="mpi")`` (CPU tensors; device tensors go through host copies) or
``backend="nccl"`` (one GPU per rank, NCCL through CuPy). Rank and world size come from the MPI
launcher. Failure handling (see :func:`init_process_group`): an uncaught exception on any rank prints
that rank's traceback and aborts every rank (``MPI_Abort``); a rank that dies is reaped by the
launcher, which stops the others; every collective is waited with a timeout, so a diverged rank
raises :class:`DistributedTimeout` after at most ``timeout`` seconds instead of hanging."""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from .group import (DEFAULT_TIMEOUT_S, REDUCE_OPS, DistributedError, DistributedTimeout, ProcessGroup, Work,
                    default_timeout)

_group: ProcessGroup | None = None
_ABORT_FORWARD_S = 0.5  # seconds the launcher gets to forward the abort report before MPI_Abort
_prev_excepthook = None


def is_available() -> bool:
    """True when the MPI backend can be used (mpi4py imports)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def init_process_group(backend: str = "mpi", timeout: float | None = None, world_size: int | None = None,
                       abort_on_error: bool = True) -> None:
    """Join the process group of all ranks started by the MPI launcher.

    ``backend``: ``"mpi"`` (mpi4py) or ``"nccl"`` (CuPy's NCCL, GPU per local rank). ``timeout``
    (seconds, default ``GPUGRAD_DIST_TIMEOUT`` or 300) bounds every wait of a collective.
    ``world_size``, when given, must equal the number of launched processes. With
    ``abort_on_error`` (default) an uncaught exception on any rank prints the rank and its traceback
    and calls ``MPI.COMM_WORLD.Abort(1)``, which stops every rank at once (non-zero exit)."""
    global _group
    if _group is not None:
        raise DistributedError("init_process_group: already initialized; call destroy_process_group() first")
    if backend not in ("mpi", "nccl"):
        raise ValueError(f"init_process_group: unknown backend {backend!r}; expected 'mpi' (CPU, mpi4py) "
                         "or 'nccl' (GPUs, CuPy)")
    t = default_timeout() if timeout is None else float(getattr(timeout, "total_seconds", lambda: timeout)())
    if t <= 0:
        raise ValueError(f"init_process_group: timeout must be > 0 seconds, got {timeout}")
    from .mpi import check_world, import_mpi
    where = f"init_process_group(backend={backend!r})"
    MPI = import_mpi(where)
    check_world(MPI.COMM_WORLD.Get_size(), world_size, where)
    if backend == "mpi":
        from .mpi import ProcessGroupMPI
        group: ProcessGroup = ProcessGroupMPI(MPI.COMM_WORLD, t)
    else:
        from .nccl import ProcessGroupNCCL
        group = ProcessGroupNCCL.create(t)
    _group = group
    if abort_on_error and group.size > 1:
        install_abort_on_error()


def install_abort_on_error() -> None:
    """``sys.excepthook`` that reports the failing rank and aborts all ranks (idempotent)."""
    global _prev_excepthook
    if _prev_excepthook is not None:
        return
    _prev_excepthook = sys.excepthook

    def hook(tp, value, tb) -> None:
        abort(f"uncaught {tp.__name__}", (tp, value, tb))
    sys.excepthook = hook


def abort(reason: str, exc_info: tuple | None = None, code: int = 1) -> None:
    """Print ``reason`` (and a traceback) tagged with this rank, then stop every rank with MPI_Abort.

    The report goes to file descriptor 2 in one ``write`` (rank line first, repeated after the
    traceback) and the launcher gets a moment to forward it: MPI_Abort kills every process, and text
    still sitting in a Python buffer or in the launcher's pipe would otherwise be lost."""
    rank, size = (_group.rank, _group.size) if _group is not None else (0, 1)
    msg = f"[gpugrad.distributed] rank {rank}/{size}: {reason}; aborting all {size} ranks\n"
    try:
        tb = "".join(traceback.format_exception(*exc_info)) if exc_info is not None else ""
        report = (msg + tb + msg) if tb else msg
        try:
            sys.stderr.flush()
        except Exception:  # a closed or broken stderr must not stop the abort
            pass
        data = report.encode("utf-8", "replace")
        while data:
            data = data[os.write(2, data):]
        time.sleep(_ABORT_FORWARD_S)
    finally:
        from mpi4py import MPI
        MPI.COMM_WORLD.Abort(code)


def _require(where: str) -> ProcessGroup:
    if _group is None:
        raise DistributedError(f"{where}: the default process group is not initialized; call "
                               "gg.distributed.init_process_group() first (under mpiexec for several ranks)")
    return _group


def is_initialized() -> bool:
    return _group is not None


def get_rank() -> int:
    return _require("get_rank").rank


def get_world_size() -> int:
    return _require("get_world_size").size


def get_backend() -> str:
    return _require("get_backend").name


def group() -> ProcessGroup:
    """The default process group (the object DistributedDataParallel talks to)."""
    return _require("group")


def _tensor_arr(tensor: Any, where: str):
    from ..tensor import Tensor
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{where}: expected a gg.Tensor, got {type(tensor).__name__}")
    return tensor.data, tensor._backend()


def _bump(tensor: Any) -> None:
    tensor._vc[0] += 1


def all_reduce(tensor: Any, op: str = "sum", async_op: bool = False) -> Work | None:
    """Reduce ``tensor`` over all ranks in place (``"sum"``, ``"avg"``, ``"max"``, ``"min"``);
    with ``async_op`` return a :class:`Work` to ``wait()`` on."""
    g = _require("all_reduce")
    arr, be = _tensor_arr(tensor, "all_reduce")
    w = g.all_reduce_array(arr, be, op, async_op=async_op)
    _bump(tensor)
    return w


def broadcast(tensor: Any, src: int = 0, async_op: bool = False) -> Work | None:
    """Overwrite ``tensor`` on every rank with rank ``src``'s values, in place."""
    g = _require("broadcast")
    arr, be = _tensor_arr(tensor, "broadcast")
    w = g.broadcast_array(arr, be, src, async_op=async_op)
    _bump(tensor)
    return w


def barrier() -> None:
    """Block until every rank reached this call (bounded by the group's timeout)."""
    _require("barrier").barrier()


def destroy_process_group() -> None:
    """Leave the process group (collectives then raise until the next init_process_group)."""
    global _group, _prev_excepthook
    g = _require("destroy_process_group")
    _group = None
    if _prev_excepthook is not None:
        sys.excepthook = _prev_excepthook
        _prev_excepthook = None
    g.destroy()


__all__ = ["DEFAULT_TIMEOUT_S", "REDUCE_OPS", "DistributedError", "DistributedTimeout", "ProcessGroup", "Work",
           "abort", "all_reduce", "barrier", "broadcast", "destroy_process_group", "get_backend", "get_rank",
           "get_world_size", "group", "init_process_group", "install_abort_on_error", "is_available",
           "is_initialized"]
