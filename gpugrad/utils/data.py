"""``gg.utils.data``: ``Dataset``, ``TensorDataset``, ``DataLoader`` and the samplers, with PyTorch's
semantics: mini-batches of ``batch_size`` (the last one smaller unless ``drop_last``), shuffled anew each
epoch when ``shuffle`` (from ``gg.manual_seed``'s CPU stream, or from a ``gg.Generator``), collated into
Tensors. A ``sampler`` replaces the order, e.g. ``gg.data.DistributedSampler`` (re-exported here: one
sharding for the whole package). Loading runs in the calling process (``num_workers`` and
``pin_memory`` are accepted and ignored); ``device=`` (gpugrad's addition) puts each batch there."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .._device import as_device
from ..autograd.function import named_error
from ..creation import randperm, tensor as _tensor
from ..data import DistributedSampler
from ..ops import stack as _stack
from ..random import Generator
from ..tensor import Tensor

__all__ = ["Dataset", "TensorDataset", "DataLoader", "Sampler", "SequentialSampler", "RandomSampler",
           "BatchSampler", "DistributedSampler", "default_collate"]


class Dataset:
    """A map-style dataset: ``__getitem__(i)`` and ``__len__``."""

    def __getitem__(self, index: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")


class TensorDataset(Dataset):
    """Sample ``i`` is ``(t[i] for t in tensors)``; every tensor has the same first dimension."""

    def __init__(self, *tensors: Tensor) -> None:
        if not tensors:
            raise named_error(ValueError, "TensorDataset: give at least one tensor")
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise named_error(TypeError, f"TensorDataset: argument {i} is a {type(t).__name__}, not a Tensor; "
                                  "wrap it with gg.tensor(...)")
            if t.ndim == 0 or t.shape[0] != tensors[0].shape[0]:
                raise named_error(ValueError, "TensorDataset: size mismatch between tensors: first dimensions "
                                  f"{[tuple(x.shape)[:1] for x in tensors]} must be equal")
        self.tensors = tensors

    def __getitem__(self, index: Any) -> tuple:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class Sampler:
    """An iterable of dataset indices (``__iter__``, and ``__len__`` when known)."""

    def __iter__(self) -> Iterator[int]:  # pragma: no cover - abstract
        raise NotImplementedError


class SequentialSampler(Sampler):
    def __init__(self, data_source: Any) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A fresh permutation per iteration, drawn from ``generator`` or from the CPU generator that
    ``gg.manual_seed`` seeds (so a seeded run draws the same orders)."""

    def __init__(self, data_source: Any, generator: Generator | None = None) -> None:
        self.data_source, self.generator = data_source, generator

    def __iter__(self) -> Iterator[int]:
        return iter(randperm(len(self.data_source), generator=self.generator).numpy().tolist())

    def __len__(self) -> int:
        return len(self.data_source)


class BatchSampler(Sampler):
    """Lists of ``batch_size`` indices from ``sampler`` (the last one shorter unless ``drop_last``)."""

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise named_error(ValueError, f"BatchSampler: batch_size must be a positive int, got {batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), bool(drop_last)

    def __iter__(self) -> Iterator[list]:
        batch: list = []
        for i in self.sampler:
            batch.append(int(i))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def default_collate(samples: Sequence) -> Any:
    """A list of samples into one batch: Tensors are stacked, NumPy arrays and numbers become Tensors
    (Python floats float32, as ``gg.tensor`` does), tuples/lists and dicts are collated per field."""
    first = samples[0]
    if isinstance(first, Tensor):
        return _stack(list(samples))
    if isinstance(first, np.ndarray) or isinstance(first, (int, float, bool, np.number, np.bool_)):
        return _tensor(np.stack([np.asarray(s) for s in samples]) if isinstance(first, np.ndarray) else list(samples))
    if isinstance(first, dict):
        return {k: default_collate([s[k] for s in samples]) for k in first}
    if isinstance(first, (tuple, list)):
        if any(len(s) != len(first) for s in samples):
            raise named_error(RuntimeError, "default_collate: each element in the batch should be of equal size")
        return type(first)(default_collate(list(field)) for field in zip(*samples)) if isinstance(first, tuple) \
            else [default_collate(list(field)) for field in zip(*samples)]
    raise named_error(TypeError, f"default_collate: cannot batch samples of type {type(first).__name__}; "
                      "give a collate_fn")


def _to_device(batch: Any, dev) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(dev)
    if isinstance(batch, tuple):
        return tuple(_to_device(b, dev) for b in batch)
    if isinstance(batch, list):
        return [_to_device(b, dev) for b in batch]
    if isinstance(batch, dict):
        return {k: _to_device(v, dev) for k, v in batch.items()}
    return batch


class DataLoader:
    """Mini-batches of a dataset, as ``torch.utils.data.DataLoader``: ``batch_size`` (None: one sample at
    a time, uncollated), ``shuffle`` (a new order per epoch) or ``sampler`` (any iterable of indices,
    e.g. ``DistributedSampler``: call its ``set_epoch`` per epoch), ``drop_last``, ``collate_fn``,
    ``generator`` (a ``gg.Generator`` for the shuffle order), and ``device`` (gpugrad's: batches are put
    on it). A ``TensorDataset`` with the default collation is batched by indexing each tensor once."""

    def __init__(self, dataset: Any, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Iterable[int] | None = None, batch_sampler: Iterable[list] | None = None,
                 num_workers: int = 0, collate_fn: Callable[[list], Any] | None = None, pin_memory: bool = False,
                 drop_last: bool = False, generator: Generator | None = None, device: Any = None) -> None:
        if sampler is not None and shuffle:
            raise named_error(ValueError, "DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise named_error(ValueError, "DataLoader: batch_sampler option is mutually exclusive with batch_size, "
                              "shuffle, sampler, and drop_last")
        if int(num_workers) < 0:
            raise named_error(ValueError, f"DataLoader: num_workers must be >= 0, got {num_workers}")
        self.dataset, self.num_workers, self.pin_memory, self.generator = dataset, int(num_workers), pin_memory, generator
        self.drop_last = bool(drop_last)
        if sampler is None:
            sampler = RandomSampler(dataset, generator) if shuffle else SequentialSampler(dataset)
        self.sampler = sampler
        self.batch_size = batch_size
        if batch_sampler is None and batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, self.drop_last)
        self.batch_sampler = batch_sampler
        self.collate_fn = collate_fn
        self.device = as_device(device) if device is not None else None

    def __iter__(self) -> Iterator[Any]:
        if self.batch_sampler is None:  # batch_size=None: samples one by one, not collated
            for i in self.sampler:
                yield self._place(self.dataset[i])
            return
        fast = self.collate_fn is None and isinstance(self.dataset, TensorDataset)
        for idx in self.batch_sampler:
            if fast:
                index = np.asarray(idx, dtype=np.int64)
                batch = tuple(t[_tensor(index, device=t.device)] for t in self.dataset.tensors)
            else:
                batch = (self.collate_fn or default_collate)([self.dataset[i] for i in idx])
            yield self._place(batch)

    def _place(self, batch: Any) -> Any:
        return _to_device(batch, self.device) if self.device is not None else batch

    def __len__(self) -> int:
        if self.batch_sampler is None:
            return len(self.sampler)  # type: ignore[arg-type]
        return len(self.batch_sampler)  # type: ignore[arg-type]
