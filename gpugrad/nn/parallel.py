"""``gg.nn.parallel``: ``DistributedDataParallel`` under PyTorch's name. It is implemented in
:mod:`gpugrad.distributed.ddp`, which sits above ``nn``: this module belongs to the distributed layer
(docs/ARCHITECTURE.md), so ``gpugrad/nn/__init__.py`` does not import it; the root package does."""
from __future__ import annotations

from ..distributed.ddp import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
