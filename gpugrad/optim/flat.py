"""The multi-tensor layout of the optimizers: one flat buffer per (param group, device, dtype).

Choice: flat buffers (tiny-cuda-nn's and tinygrad's fused mode), not pointer-array kernels (PyTorch's
``foreach``/``fused``). The parameters of a bucket become views into one contiguous buffer, their
gradients are gathered into a second one (and become views of it), and each optimizer state (``exp_avg``,
``momentum_buffer``...) is a third: a step is then one kernel over a contiguous range, the same code for
NumPy, the CPU Numba pass, Numba CUDA and CUDA C; nothing needs a pointer table (which Numba's CPU and
simulator targets cannot take cheaply: a list of 20 arrays costs ~300 us per call to unbox), and the
pointers a CUDA graph captures stay valid as long as the buffers live.

Robustness: every step checks (identity, no copy) that each parameter's ``.data`` and each state tensor
is still the view it was given; a parameter whose ``.data`` was replaced (``model.to(...)``,
``p.data = ...``) or state replaced by ``load_state_dict`` triggers a rebuild of that bucket (a copy).
Gradients that are already views (``zero_grad(set_to_none=False)`` accumulates into them) are not
copied; fresh ones (``set_to_none=True``) are copied in once, by the backend's ``gather_flat`` (on CUDA
one launch whose pointer table is a kernel argument: no host-to-device copy, capturable). Parameters
whose gradient is ``None`` are skipped: the step runs over the runs of consecutive parameters that have
one (and the same step count), one kernel per run, so one in the usual case. State stays per parameter
(PyTorch's ``state_dict`` format): each state Tensor is a view of its bucket's buffer.
"""
from __future__ import annotations

import sys
import weakref
from itertools import repeat
from operator import add, attrgetter, eq, gt, is_
from typing import Any

import numpy as np

from ..autograd.function import drop_grad_slots, set_grad_slot
from ..tensor import Tensor

__all__ = ["Bucket", "buckets_of", "grad_segments"]

# id(param) -> (weakref to it, weakref to its latest Bucket); by id (Tensor's == is elementwise), and weak
# both ways: a Bucket holds its parameters, and only its optimizer may keep it (and them) alive.
_OWNER: dict = {}


_data = attrgetter("data")
_grad = attrgetter("grad")
_dev = attrgetter("_device")
_shape = attrgetter("data.shape")


class Bucket:
    """Parameters of one group, device and dtype, as views into one flat buffer."""

    def __init__(self, params: list[Tensor]) -> None:
        p0 = params[0]
        self.params = params
        self.device = p0.device
        self.dtype = p0.dtype
        self.be = p0._backend()
        xp = self.be.xp
        self.shapes = [tuple(p.shape) for p in params]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.total = self.offsets[-1]
        self.flat = xp.empty(self.total, self.dtype)
        self.views = self._views(self.flat)
        for p, v in zip(params, self.views):
            v[...] = p.data
            p.data = v
        self.slots = bool(getattr(self.be, "grad_slots", False))
        self._new_grad_buffer()
        self.state: dict[str, Any] = {}          # name -> flat buffer
        self.state_views: dict[str, list] = {}   # name -> per-parameter views
        self.steps = None                        # capturable: per-parameter step counts on the device
        self.step_views: list = []
        self.synced = None                       # (optimizer state dict, state names, capturable) last bound
        self.st_dicts: list = []                 # per-parameter state dicts bound to this bucket
        self.st_tensors: dict = {}               # name -> the state Tensors viewing this bucket's buffers
        self.shadow = [0] * len(params)          # host step counts (capturable: equal where the device's are)
        me = weakref.ref(self)
        for p in params:
            _OWNER[id(p)] = (weakref.ref(p, _forget(id(p))), me)

    def __del__(self, _drop=drop_grad_slots) -> None:  # (bound: module globals may be gone at exit)
        # the slots go with the bucket: its gradient buffer is no longer the optimizer's
        if getattr(self, "slots", False):
            _drop(self.params, self.grad_views)

    def _views(self, flat) -> list:
        o = self.offsets
        return [flat[o[i]:o[i + 1]].reshape(s) for i, s in enumerate(self.shapes)]

    def _new_grad_buffer(self) -> None:
        """A fresh flat gradient buffer and its per-parameter views; on a backend that writes gradients
        in place (``grad_slots``) the views are registered as the parameters' gradient slots, so
        backward writes dW and db straight into this buffer (``autograd/function.py: _slots``)."""
        self.grad = self.be.xp.zeros(self.total, self.dtype)
        self.grad_views = self._views(self.grad)
        if self.slots:
            for p, v, g in zip(self.params, self.views, self.grad_views):
                set_grad_slot(p, v, g)

    def _grads_held(self, grads: list) -> bool:
        """Whether a gradient view of this buffer is held outside the bucket and its parameter's current
        ``.grad`` (an earlier step's ``.grad`` kept by the user): new gradients must not overwrite it.
        No Python call per parameter (the step's call count does not grow with the parameters)."""
        views = self.grad_views
        # references of a free view seen through map: the views list, the slot registry, the argument
        free = 3 if self.slots else 2
        current = [g is not None and g.data is v for g, v in zip(grads, views)]  # + p.grad's own
        return any(map(gt, map(sys.getrefcount, views), map(add, repeat(free), current)))

    def valid(self) -> bool:
        """Every parameter still views this bucket's buffer (no ``.data`` was replaced)."""
        return all(map(is_, map(_data, self.params), self.views))

    def state_buffer(self, name: str):
        """The flat buffer of one state (zeros, allocated on first use) and its per-parameter views."""
        buf = self.state.get(name)
        if buf is None:
            buf = self.state[name] = self.be.xp.zeros(self.total, self.dtype)
            self.state_views[name] = self._views(buf)
        return buf, self.state_views[name]

    def gather_grads(self, where: str) -> list[bool] | None:
        """Gradients into the flat gradient buffer (each ``p.grad`` then views it); returns which
        parameters have one (``None`` if none has)."""
        grads = list(map(_grad, self.params))
        present = [g is not None for g in grads]
        if not any(present):
            return None
        if all(present) and all(map(is_, map(_data, grads), self.grad_views)):
            return present
        if self._grads_held(grads):  # a gradient handed out earlier is still held: copy into a new buffer
            self._new_grad_buffer()
        if all(present) and all(map(is_, map(_dev, grads), repeat(self.device))) and \
                all(map(eq, map(_shape, grads), self.shapes)):  # all fresh and well formed: one copy
            self.be.gather_flat(list(map(_data, grads)), self.grad)
            for g, v in zip(grads, self.grad_views):
                g.data = v
            return present
        for i0, i1 in runs(present):
            arrays = []
            for i in range(i0, i1):
                g, p = grads[i], self.params[i]
                if g.device != p.device or tuple(g.shape) != self.shapes[i]:
                    from ..autograd.function import named_error
                    raise named_error(RuntimeError,
                        f"{where}: gradient of shape {tuple(g.shape)} on {g.device} does not match its parameter "
                        f"of shape {self.shapes[i]} on {p.device}")
                if g.data is not self.grad_views[i]:
                    arrays.append(g.data)
                else:
                    arrays.append(None)
            if all(a is None for a in arrays):
                continue
            if any(a is None for a in arrays):  # partly views already: copy the others one by one
                for i, a in zip(range(i0, i1), arrays):
                    if a is not None:
                        self.grad_views[i][...] = grads[i].data
            else:
                self.be.gather_flat(arrays, self.grad[self.offsets[i0]:self.offsets[i1]])
            for i in range(i0, i1):
                grads[i].data = self.grad_views[i]
        return present

    def grad_ranges(self, present: list[bool]) -> list[tuple[int, int]]:
        """Element ranges of the flat gradient buffer that hold this step's gradients."""
        o = self.offsets
        return [(o[i0], o[i1]) for i0, i1 in runs(present)]


def runs(present: list[bool], keys: list | None = None) -> list[tuple[int, int]]:
    """Maximal ``[i0, i1)`` runs of consecutive True entries (with equal ``keys`` when given)."""
    out = []
    i, n = 0, len(present)
    while i < n:
        if not present[i]:
            i += 1
            continue
        j = i + 1
        while j < n and present[j] and (keys is None or keys[j] == keys[i]):
            j += 1
        out.append((i, j))
        i = j
    return out


def _forget(key: int):
    def drop(_ref) -> None:
        entry = _OWNER.get(key)
        if entry is not None and entry[0] is _ref:
            del _OWNER[key]
    return drop


def buckets_of(params: list[Tensor]) -> list[Bucket]:
    """Group ``params`` (one param group) by device and dtype into buckets, in first-seen order."""
    groups: dict = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    return [Bucket(ps) for ps in groups.values()]


def grad_segments(params: list[Tensor], where: str) -> list[tuple[Bucket, int, int]] | None:
    """``(bucket, start, end)`` ranges of flat gradient buffers holding exactly the gradients of ``params``
    (gathered first), or ``None`` when some parameter is not in a valid optimizer bucket or its bucket
    also holds parameters not in ``params`` (the caller then works per tensor)."""
    seen: dict = {}
    for p in params:
        ref, bref = _OWNER.get(id(p), (None, None))
        if ref is None or ref() is not p:
            return None
        b = bref()
        if b is None:  # its optimizer is gone
            return None
        seen[id(b)] = b
    ids = {id(p) for p in params}
    out = []
    for b in seen.values():
        if not b.valid() or any(id(q) not in ids for q in b.params):
            return None
        present = b.gather_grads(where)
        if present is not None:
            out += [(b, s, e) for s, e in b.grad_ranges(present)]
    return out
