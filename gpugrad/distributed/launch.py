"""Data parallelism for a training loop launched with ``mpiexec`` (what ``gpugrad train`` uses).

:func:`setup` joins the process group when the launcher started more than one process (or when
asked to); the returned :class:`DistContext` answers the few questions a trainer has: this rank's
share of a global batch, the loss factor that makes the averaged gradient the gradient of the global
batch's mean, sums of host scalars over ranks, and whether this rank is the one that prints and
writes (rank 0). With one process it is a no-op context: the single-process code path is unchanged."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..data import shard_batch
from .mpi import launcher_size

MODES = ("auto", "off", "mpi", "nccl")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: Any, **kwargs: Any) -> Any:
        """``DistributedDataParallel(model)`` when distributed, else ``model``."""
        if not self.active:
            return model
        from .ddp import DistributedDataParallel
        return DistributedDataParallel(model, **kwargs)

    def shard(self, batch: Any) -> Any:
        """This rank's strided share ``batch[rank::world_size]`` of a global batch (array or tensor)."""
        return shard_batch(batch, self.rank, self.world_size) if self.active else batch

    def loss_factor(self, n_local: int, n_global: int) -> float:
        """Multiply a rank's mean loss by this so that the gradients DistributedDataParallel averages
        equal the gradient of the mean over the global batch (shards may differ by one sample)."""
        return self.world_size * n_local / n_global if self.active else 1.0

    def decorrelate_rng(self, device: str) -> None:
        """Give every rank but 0 its own random stream (dropout masks), derived from the current
        state: rank 0 keeps the stream a checkpoint records, so a resume starts from it again."""
        if not self.active or self.rank == 0:
            return
        from .. import random as _random
        seed, offset = _random.get_rng_state(device)
        _random.set_rng_state(((int(seed) + 0x9E3779B97F4A7C15 * self.rank) % 2**63, int(offset)), device)

    def sum(self, values: list) -> list:
        """Element-wise sum of a few host floats over all ranks."""
        if not self.active:
            return [float(v) for v in values]
        import numpy as np

        from . import group
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
        group().all_reduce_array(arr, None, "sum")
        return arr.tolist()

    def agree(self, error: str | None) -> str | None:
        """Every rank learns the first error any rank had (so all stop together, none hangs)."""
        if not self.active:
            return error
        from . import group
        errs = group().allgather_object(error)
        return next((f"rank {r}: {e}" if r else e for r, e in enumerate(errs) if e), None)

    def bcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        from . import group
        return group().allgather_object(obj if self.is_main else None)[0]

    def close(self) -> None:
        if self.active:
            from . import barrier, destroy_process_group
            barrier()
            destroy_process_group()


def setup(mode: str = "auto", device: str = "cpu") -> DistContext:
    """Join the process group: ``auto`` does when the launcher started more than one process
    (backend ``nccl`` for a CUDA device, else ``mpi``); ``mpi``/``nccl`` always do; ``off`` never."""
    if mode not in MODES:
        raise ValueError(f"distributed mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "off":
        return DistContext()
    if mode == "auto":
        ann = launcher_size()
        if ann is None or ann[1] <= 1:
            return DistContext()
        mode = "nccl" if str(device).startswith("cuda") else "mpi"
    from . import get_rank, get_world_size, init_process_group, is_initialized
    if not is_initialized():
        init_process_group(mode)
    return DistContext(get_rank(), get_world_size(), mode)


__all__ = ["DistContext", "MODES", "setup"]
