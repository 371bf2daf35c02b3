"""``gg.nn.parallel``: ``DistributedDataParallel`` (implemented in :mod:`gpugrad.distributed.ddp`,
which sits above ``nn``; imported on first use)."""
from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "DistributedDataParallel":
        from ..distributed.ddp import DistributedDataParallel
        return DistributedDataParallel
    raise AttributeError(f"module 'gpugrad.nn.parallel' has no attribute {name!r}")


__all__ = ["DistributedDataParallel"]
