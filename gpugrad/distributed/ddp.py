"""``DistributedDataParallel``: one model replica per rank, gradients averaged in buckets during
backward.

How it works: at construction rank 0's parameters and buffers are broadcast to every rank and the
trainable parameters are split into buckets of about ``bucket_cap_mb`` (in reverse registration
order, the order backward produces them). Each parameter gets a post-accumulate-grad hook; the engine
runs it as soon as the parameter's ``.grad`` is final for this backward, while the rest of backward
still runs. When every parameter of a bucket is ready, the bucket's gradients are copied into one
flat buffer and a non-blocking all-reduce starts; buckets start strictly in order, so every rank
issues the same collectives in the same order. A callback queued on the engine waits for all
buckets when backward finishes and writes the averages back into ``.grad``; after
``loss.backward()`` returns, every rank holds the same averaged gradients, ready for clipping,
``GradScaler`` and any optimizer.

Semantics worth knowing:
- ``no_sync()``: backward passes inside it only accumulate locally; the first backward after it
  averages the accumulated gradients (PyTorch's rule).
- A parameter that got no gradient on this rank contributes zeros and receives the average.
- A parameter whose gradient arrives again after its bucket started (a weight shared between two
  checkpointed segments) is handled: that bucket is reduced again, in order, at the end.
- ``state_dict()`` / ``load_state_dict()`` are the wrapped module's, without PyTorch's
  ``module.`` prefix, so a checkpoint loads into the plain model and back; ``load_state_dict``
  also accepts keys with the prefix. ``named_parameters()`` keeps the ``module.`` prefix (it is the
  structure). Move the model to its device before wrapping it."""
from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import Any, Iterator

from ..autograd import engine as _engine
from ..nn.module import Module
from . import _bump, _require
from .group import DistributedError


def _broadcast(pg: Any, tensors: list) -> None:
    """Overwrite ``tensors`` with rank 0's values: all broadcasts started, then all waited."""
    for w in [pg.broadcast_array(t.data, t._backend(), 0, async_op=True) for t in tensors]:
        w.wait()


class _Bucket:
    __slots__ = ("params", "offsets", "flat", "ready", "work", "late", "be")

    def __init__(self, params: list, be: Any, reduce_dtype: Any) -> None:
        self.params = params
        self.offsets, n = [], 0
        for p in params:
            self.offsets.append(n)
            n += p.data.size
        self.be = be
        self.flat = be.xp.zeros(n, dtype=reduce_dtype)
        self.ready: set = set()
        self.work = None
        self.late = False


class DistributedDataParallel(Module):
    """Data-parallel wrapper (PyTorch's name and use): ``model = DistributedDataParallel(model)``.

    ``bucket_cap_mb``: bucket size (MB of gradients) for the overlapped all-reduce; smaller buckets
    start earlier, larger ones cost fewer collectives. ``broadcast_buffers``: also broadcast rank 0's
    buffers before each forward in training mode. ``process_group``: defaults to the one of
    ``gg.distributed.init_process_group``."""

    def __init__(self, module: Module, bucket_cap_mb: float = 25.0, broadcast_buffers: bool = True,
                 process_group: Any = None) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected a gg.nn.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        self.module = module
        pg = process_group if process_group is not None else _require("DistributedDataParallel")
        object.__setattr__(self, "process_group", pg)
        object.__setattr__(self, "broadcast_buffers", bool(broadcast_buffers))
        object.__setattr__(self, "bucket_cap_mb", float(bucket_cap_mb))
        self._check_same_model(pg)
        self._sync_module_states(pg)
        params = [p for p in module.parameters() if p.requires_grad]  # parameters() yields shared ones once
        object.__setattr__(self, "_buckets", self._make_buckets(params, pg, bucket_cap_mb))
        object.__setattr__(self, "_bucket_of", {id(p): b for b in self._buckets for p in b.params})
        object.__setattr__(self, "_sync", True)
        object.__setattr__(self, "_active", False)
        object.__setattr__(self, "_next", 0)
        object.__setattr__(self, "last_wait_s", 0.0)
        object.__setattr__(self, "_removers", [p.register_post_accumulate_grad_hook(self._grad_ready)
                                               for p in params])

    # ------------------------------------------------------------------ construction
    def _check_same_model(self, pg: Any) -> None:
        sig = [(n, tuple(p.shape), str(p.dtype), str(p.device)) for n, p in self.module.named_parameters()]
        sig += [(n, tuple(b.shape), str(b.dtype), str(b.device)) for n, b in self.module.named_buffers()]
        sigs = pg.allgather_object(sig)
        for r, s in enumerate(sigs):
            if s != sigs[0]:
                diff = next((f"{a} vs {b}" for a, b in zip(sigs[0], s) if a != b),
                            f"{len(sigs[0])} vs {len(s)} tensors")
                raise DistributedError(f"DistributedDataParallel: rank {r} has a different model than rank 0 "
                                       f"(first difference: {diff}); every rank must build the same model")
        devs = {str(p.device) for p in self.module.parameters()}
        if pg.name == "nccl" and any(not d.startswith("cuda") for d in devs):
            raise DistributedError("DistributedDataParallel: the nccl backend needs the model on the GPU; call "
                                   "model.to('cuda') before wrapping it (or use backend='mpi' on CPUs)")

    def _sync_module_states(self, pg: Any) -> None:
        """Every rank starts from rank 0's parameters and buffers."""
        tensors = list(self.module.parameters()) + list(self.module.buffers())
        _broadcast(pg, tensors)
        for t in tensors:
            _bump(t)

    @staticmethod
    def _make_buckets(params: list, pg: Any, cap_mb: float) -> list:
        cap = cap_mb * 1024 * 1024
        buckets: list = []
        open_: dict = {}  # (device, dtype) -> (params, bytes)
        for p in reversed(params):
            key = (str(p.device), str(p.dtype))
            cur = open_.setdefault(key, ([], 0))
            lst, nbytes = cur[0], cur[1] + p.data.nbytes
            lst.append(p)
            open_[key] = (lst, nbytes)
            if nbytes >= cap:
                buckets.append(lst)
                del open_[key]
        buckets.extend(v[0] for v in open_.values() if v[0])
        out = []
        for lst in buckets:
            be = lst[0]._backend()
            out.append(_Bucket(lst, be, pg.reduce_dtype(lst[0].data.dtype)))
        return out

    # ------------------------------------------------------------------ use
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.broadcast_buffers and self.training:
            _broadcast(self.process_group, list(self.module.buffers()))
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward passes inside only accumulate ``.grad`` locally (gradient accumulation); the next
        backward outside averages everything accumulated."""
        old = self._sync
        object.__setattr__(self, "_sync", False)
        try:
            yield
        finally:
            object.__setattr__(self, "_sync", old)

    def state_dict(self, destination: dict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> "OrderedDict[str, Any]":
        """The wrapped module's state dict (no ``module.`` prefix)."""
        return self.module.state_dict(destination, prefix, keep_vars)

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> Any:
        """Load into the wrapped module; keys may carry PyTorch's ``module.`` prefix."""
        if state_dict and all(isinstance(k, str) and k.startswith("module.") for k in state_dict.keys()):
            state_dict = OrderedDict((k[len("module."):], v) for k, v in state_dict.items())
        return self.module.load_state_dict(state_dict, strict)

    def extra_repr(self) -> str:
        return (f"world_size={self.process_group.size}, backend={self.process_group.name}, "
                f"buckets={len(self._buckets)}, bucket_cap_mb={self.bucket_cap_mb:g}")

    # ------------------------------------------------------------------ the overlapped reduction
    def _grad_ready(self, p: Any) -> None:
        if not self._sync:
            return
        if not self._active:
            object.__setattr__(self, "_active", True)
            object.__setattr__(self, "_next", 0)
            for b in self._buckets:
                b.ready.clear()
                b.work = None
                b.late = False
            _engine.queue_callback(self._finish)
        b = self._bucket_of[id(p)]
        if id(p) in b.ready:  # a second contribution in the same backward
            if b.work is not None:
                b.late = True
            return
        b.ready.add(id(p))
        self._launch_ready()

    def _launch_ready(self) -> None:
        bs = self._buckets
        while self._next < len(bs) and len(bs[self._next].ready) == len(bs[self._next].params):
            self._launch(bs[self._next])
            object.__setattr__(self, "_next", self._next + 1)
        for b in bs[:self._next]:  # let MPI progress the reductions in flight
            if b.work is not None:
                b.work.is_completed()

    def _launch(self, b: _Bucket) -> None:
        flat = b.flat
        for p, o in zip(b.params, b.offsets):
            n = p.data.size
            if p.grad is None:
                flat[o:o + n] = 0
            else:
                flat[o:o + n] = p.grad.data.reshape(-1)
        b.work = self.process_group.all_reduce_array(flat, b.be, "avg", async_op=True)

    def _finish(self) -> None:
        """End of backward: start what did not start (unused parameters), wait, write back.
        ``last_wait_s``: the seconds this took (the communication backward did not hide)."""
        t0 = time.perf_counter()
        object.__setattr__(self, "_active", False)
        bs = self._buckets
        while self._next < len(bs):
            self._launch(bs[self._next])
            object.__setattr__(self, "_next", self._next + 1)
        for b in bs:
            b.work.wait()
            if b.late:  # gradients arrived after the bucket started: reduce it again, same order everywhere
                self._launch(b)
                b.work.wait()
            self._write_back(b)
        object.__setattr__(self, "last_wait_s", time.perf_counter() - t0)

    @staticmethod
    def _write_back(b: _Bucket) -> None:
        from ..tensor import Tensor
        flat = b.flat
        for p, o in zip(b.params, b.offsets):
            n = p.data.size
            avg = flat[o:o + n].reshape(p.data.shape)
            if p.grad is None:
                p.grad = Tensor._wrap(avg.astype(p.data.dtype, copy=True), p._device)
            else:
                p.grad.data[...] = avg
                _bump(p.grad)


__all__ = ["DistributedDataParallel"]
