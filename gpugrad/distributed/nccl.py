"""NCCL backend (GPUs): CuPy's ``cupy.cuda.nccl`` communicator, set up over MPI.

Rank 0 makes the NCCL unique id and MPI broadcasts it; every rank selects the GPU of its local rank
on the node (``MPI.COMM_TYPE_SHARED``), builds ``NcclCommunicator(world, uid, rank)`` and runs the
collectives on a dedicated CUDA stream ordered after the caller's current stream (an event), so they
overlap with compute queued later. ``Work.wait()`` makes the caller's current stream wait for the
communication stream (no host synchronisation); ``barrier()`` and timed waits poll a CUDA event on
the host and call ``ncclCommAbort`` when the group's timeout passes."""
from __future__ import annotations

from typing import Any

from ..install_hints import hint
from .group import DistributedError, ProcessGroup, Work, check_op, wait_until
from .mpi import import_mpi

NCCL_HINT = f"the nccl backend needs CuPy with NCCL and a CUDA GPU per rank: {hint('nccl')}; on CPUs use backend='mpi'"


def import_nccl(where: str) -> tuple[Any, Any]:
    """(cupy, cupy.cuda.nccl), or a :class:`DistributedError` saying what to install."""
    try:
        import cupy
        from cupy.cuda import nccl
    except Exception as e:  # ImportError, or CuPy failing to load its NCCL library
        raise DistributedError(f"{where}: cannot import cupy.cuda.nccl ({type(e).__name__}: {e}). "
                               f"Fix: {NCCL_HINT}") from e
    if not getattr(nccl, "available", True):
        raise DistributedError(f"{where}: CuPy was built without NCCL. Fix: {NCCL_HINT}")
    return cupy, nccl


def _nccl_dtypes(nccl: Any) -> dict:
    return {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64,
            "int32": nccl.NCCL_INT32, "int64": nccl.NCCL_INT64, "uint8": nccl.NCCL_UINT8}


class ProcessGroupNCCL(ProcessGroup):
    """Collectives on CuPy arrays through an NCCL communicator (one GPU per rank)."""

    name = "nccl"

    def __init__(self, comm: Any, rank: int, size: int, timeout: float, cupy: Any, nccl: Any,
                 mpi_comm: Any = None) -> None:
        self.comm, self.rank, self.size, self.timeout = comm, rank, size, float(timeout)
        self.cupy, self.nccl, self.mpi_comm = cupy, nccl, mpi_comm
        self._dtypes = _nccl_dtypes(nccl)
        self._ops = {"sum": nccl.NCCL_SUM, "avg": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
        self.stream = cupy.cuda.Stream(non_blocking=True)

    @classmethod
    def create(cls, timeout: float) -> "ProcessGroupNCCL":
        """Real set-up under mpiexec: device by local rank, unique id over MPI, the communicator."""
        where = "init_process_group(backend='nccl')"
        MPI = import_mpi(where)
        cupy, nccl = import_nccl(where)
        world = MPI.COMM_WORLD.Dup()
        rank, size = world.Get_rank(), world.Get_size()
        node = world.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = node.Get_rank(), node.Get_size()
        node.Free()
        try:
            ndev = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:
            raise DistributedError(f"{where}: no CUDA device ({type(e).__name__}: {e}). Fix: {NCCL_HINT}") from e
        if local_size > ndev:
            raise DistributedError(
                f"{where}: {local_size} ranks on this node but only {ndev} GPU(s); NCCL needs one GPU per "
                f"rank. Launch at most {ndev} ranks per node (mpiexec -n {ndev}) or use backend='mpi'.")
        cupy.cuda.Device(local_rank).use()
        uid = nccl.get_unique_id() if rank == 0 else None
        uid = world.bcast(uid, root=0)
        comm = nccl.NcclCommunicator(size, uid, rank)
        return cls(comm, rank, size, timeout, cupy, nccl, mpi_comm=world)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _ptr(arr: Any) -> int:
        return arr.data.ptr

    def _check(self, arr: Any, where: str) -> int:
        if not isinstance(arr, self.cupy.ndarray):
            raise DistributedError(f"{where}: the nccl backend reduces CUDA tensors, got a {type(arr).__module__}."
                                   f"{type(arr).__name__}; move the tensor with .to('cuda') or use backend='mpi'")
        if not arr.flags.c_contiguous:
            raise DistributedError(f"{where}: needs a contiguous tensor (shape {arr.shape}, strides {arr.strides})")
        dt = self._dtypes.get(str(arr.dtype))
        if dt is None:
            raise DistributedError(f"{where}: dtype {arr.dtype} is not supported by NCCL here; expected one of "
                                   f"{', '.join(self._dtypes)}")
        return dt

    def _enqueue(self, launch, what: str, async_op: bool) -> Work | None:
        """Order the communication stream after the caller's stream, launch, return the Work."""
        cur = self.cupy.cuda.get_current_stream()
        self.stream.wait_event(cur.record())
        launch()
        done = self.stream.record()

        def finish() -> None:
            self.cupy.cuda.get_current_stream().wait_event(done)
        if async_op:  # wait() never blocks the host: it orders the caller's stream after the collective
            return Work(lambda: True, finish, self.timeout, what, self.rank, self.size)
        finish()
        return None

    # ------------------------------------------------------------------ collectives
    def all_reduce_array(self, arr: Any, be: Any = None, op: str = "sum", async_op: bool = False) -> Work | None:
        op = check_op(op, "all_reduce")
        dt = self._check(arr, "all_reduce")
        if op == "avg" and arr.dtype.kind != "f":
            raise DistributedError(f"all_reduce(op='avg'): needs a floating-point tensor, got {arr.dtype}")

        def launch() -> None:
            p = self._ptr(arr)
            self.comm.allReduce(p, p, arr.size, dt, self._ops[op], self.stream.ptr)
            if op == "avg":
                with self.stream:
                    arr[...] *= 1.0 / self.size
        return self._enqueue(launch, f"all_reduce({op}, {arr.size} x {arr.dtype})", async_op)

    def broadcast_array(self, arr: Any, be: Any = None, src: int = 0, async_op: bool = False) -> Work | None:
        if not 0 <= src < self.size:
            raise DistributedError(f"broadcast: src={src} is not a rank of this world of {self.size}")
        dt = self._check(arr, "broadcast")
        return self._enqueue(lambda: self.comm.bcast(self._ptr(arr), arr.size, dt, src, self.stream.ptr),
                             f"broadcast(src={src}, {arr.size} x {arr.dtype})", async_op)

    def barrier(self) -> None:
        """All ranks reach this point and all queued communication finished (host-side, timed)."""
        one = self.cupy.zeros(1, dtype=self.cupy.float32)
        self._enqueue(lambda: self.comm.allReduce(self._ptr(one), self._ptr(one), 1, self._dtypes["float32"],
                                                  self._ops["sum"], self.stream.ptr), "barrier", True)
        done = self.stream.record()
        try:
            wait_until(lambda: done.done, self.timeout, "barrier", self.rank, self.size)
        except DistributedError:
            self.comm.abort()  # ncclCommAbort: frees the communicator, unblocks its kernels
            raise

    def allgather_object(self, obj: Any) -> list:
        if self.mpi_comm is None:
            return [obj]
        return self.mpi_comm.allgather(obj)

    def destroy(self) -> None:
        if self.comm is not None:
            self.stream.synchronize()
            self.comm.destroy()
            self.comm = None
        if self.mpi_comm is not None:
            self.mpi_comm.Free()
            self.mpi_comm = None
