"""``Function``: an op's forward and backward on raw arrays, ``Context`` (ctx), the graph node, and the
Tensor class that tensor.py registers here (``TensorBase``, ``register_tensor_class``, ``_make_result``)."""
from __future__ import annotations

import itertools
import sys
import weakref
from typing import Any

import numpy as np

from .._device import CPU
from .._errors import named_error  # noqa: F401  (re-exported: gpugrad.autograd.function.named_error)
from ..backends import get_backend
from . import saved as _saved
from .grad_mode import STATE

# Node creation numbers, increasing (the engine runs the most recent ready node first): one C call.
_next_seq = itertools.count(1).__next__
# Open probes (innermost last): a checkpoint running its function under no_grad collects here the
# tensors requiring grad that ops saw (parameters used inside), so its node is recorded when only
# they require grad (``graph.watch_grad_inputs``, used by gpugrad/checkpoint/).
_probes: list = []

# ---------------------------------------------------------------- the Tensor class
# ``Tensor`` (gpugrad/tensor.py) sits above the ops, because its methods are the ops. This layer and
# the ops recognise tensors by its base class, ``TensorBase``, and build them with ``_make_result``
# through the class tensor.py registers here right after defining it (``register_tensor_class``),
# never by importing tensor.py: no import cycle.
class TensorBase:
    """The base class of ``gpugrad.Tensor``: ``isinstance(x, TensorBase)`` is how the code below
    tensor.py (autograd, ops, creation) tells a tensor. It holds nothing; Tensor has the slots."""

    __slots__ = ()


_Tensor: type = None  # type: ignore[assignment]  # the registered Tensor class


def register_tensor_class(cls: type) -> None:
    """Make ``cls`` (a subclass of ``TensorBase`` with Tensor's slots: data, grad, _requires_grad,
    ...) the class of every tensor that ops, the engine and the factories build (called once, by
    gpugrad/tensor.py)."""
    global _Tensor
    if not (isinstance(cls, type) and issubclass(cls, TensorBase)):
        raise TypeError(f"register_tensor_class: {cls!r} is not a subclass of TensorBase")
    _Tensor = cls


def _make_result(arr, dev, ctx, idx: int, vc=None):
    """A Tensor around an array: an op's output (``ctx`` its node, ``idx`` which output) or, with
    ``ctx=None``, a plain tensor. ``vc``: a version counter to share (views, ``detach``).
    Function.apply inlines this for single outputs: keep the two in step."""
    if isinstance(arr, np.generic):  # NumPy returns scalars from 0-d arithmetic
        arr = np.asarray(arr)
    t = _new(_Tensor)
    t.data = arr
    t.grad = None
    t._requires_grad = ctx is not None
    t._grad_fn = ctx
    t._out_idx = idx
    t._vc = vc if vc is not None else [0]
    t._device = dev if dev is not None else CPU
    t._hooks = None
    return t


# ---------------------------------------------------------------- gradient slots
# Gradient slots: id(leaf) -> (weakref to the leaf, the array its .data must be, the slot). The optimizer's
# flat buckets (optim/flat.py) register each parameter's view of their flat gradient buffer; an op that
# computes a leaf's gradient may write it there directly (``Context.grad_slot``), so the optimizer's step
# finds the gradients already in its buffer and copies nothing. A slot is handed out only when that
# cannot change a value anyone can see: a plain ``backward()`` (into ``.grad``, no ``inputs``), the leaf
# has no ``.grad`` and no hooks, no gradient of it has arrived in this run yet (later ones add into the
# slot: it is owned), and nothing outside the registry and its bucket holds the slot array (a ``.grad``
# Tensor of an earlier step, or an array taken from it, keeps it; the step then writes elsewhere).
_slots: dict = {}
# The engine's backward runs in progress (innermost last; engine.py's ``_runs`` is this list).
_runs: list = []
# References to a free slot seen by sys.getrefcount in claim_grad_slot: the registry's tuple, the
# bucket's list of views, the local name and the call's argument (tests/test_grad_slots.py checks both
# sides: a free slot is used, a held one is not).
_FREE_SLOT_REFS = 4


def set_grad_slot(leaf, data, slot) -> None:
    """Register ``slot`` (an array of ``leaf``'s shape and dtype) as where ``leaf``'s gradient may be
    written while ``leaf.data is data``; replaces an earlier slot of ``leaf``."""
    key = id(leaf)
    _slots[key] = (weakref.ref(leaf, lambda _r, k=key, t=_slots, d=_drop: d(t, k, _r)), data, slot)


def drop_grad_slots(leaves, slots, table: dict = _slots) -> None:
    """Unregister the slots of ``leaves`` that are still ``slots`` (their owner, e.g. an optimizer's
    bucket, is gone: a slot nothing else references would otherwise look free while a user holds it)."""
    for leaf, slot in zip(leaves, slots):
        e = table.get(id(leaf))
        if e is not None and e[2] is slot:
            del table[id(leaf)]


def claim_grad_slot(leaf):
    """The slot to write ``leaf``'s gradient into in the backward run in progress, or None (see
    ``_slots``). The gradient the op then returns for ``leaf`` must be that array."""
    entry = _slots.get(id(leaf))
    if entry is None or not _runs:
        return None
    run = _runs[-1]
    key = id(leaf)
    slot = entry[2]
    if not run.slots or entry[0]() is not leaf or leaf.data is not entry[1] or leaf.grad is not None or \
            leaf._hooks or key in run.acc or key in run.claimed or sys.getrefcount(slot) > _FREE_SLOT_REFS:
        return None
    run.claimed[key] = slot
    return slot


def _drop(table: dict, key: int, ref) -> None:
    """A weakly referenced leaf's entry (its id ``key``) leaves ``table`` when the leaf dies (the
    callbacks bind the table and this function: module globals may be gone at interpreter shutdown)."""
    e = table.get(key)
    if e is not None and e[0] is ref:
        del table[key]


class GradError(RuntimeError):
    """Autograd misuse: freed graph, in-place change of a saved tensor, non-scalar backward..."""


def describe(x: Any) -> str:
    """Short description of an op argument for error messages."""
    if isinstance(x, TensorBase):
        return f"Tensor(shape={tuple(x.data.shape)}, dtype={x.data.dtype}, device={x.device})"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"array(shape={tuple(x.shape)}, dtype={x.dtype})"
    return repr(x) if not isinstance(x, (list, tuple)) or len(x) < 8 else f"{type(x).__name__} of {len(x)}"


class Context:
    """Per-call state of a ``Function`` and, when recorded, its node in the graph.

    ``ctx.backend`` is the device's backend; ``ctx.needs_input_grad[i]`` tells whether input ``i``
    needs a gradient; ``ctx.save_for_backward(*arrays)`` keeps arrays for backward (counted and
    version-checked); any other attribute may be set freely (shapes, flags)."""

    # Defaults live on the class (an op sets only what it uses: creating a context is on every op's
    # path). None of them is mutated in place; they are replaced per instance when set.
    _to_save: tuple = ()
    _tracked: tuple = ()
    _versions: tuple = ()
    _released = False
    _non_diff: tuple = ()
    _fn: "type | None" = None
    _edges: tuple = ()
    _out_meta: tuple = ()
    _retained: "dict | None" = None
    _hooks: "dict | None" = None
    _seq = 0
    out_device = None  # set by ops whose output lives on another device (.to)

    def __init__(self, backend, needs_input_grad: tuple) -> None:
        self.backend = backend
        self.needs_input_grad = needs_input_grad

    # -- saving
    def save_for_backward(self, *arrays: Any) -> None:
        """Keep these arrays (or None) for backward. The only sanctioned way to keep data."""
        self._to_save = arrays

    def mark_non_differentiable(self, *arrays: Any) -> None:
        """Outputs that never get a gradient (indices, masks)."""
        self._non_diff = arrays

    @property
    def saved_tensors(self) -> tuple:
        if self._released:
            raise named_error(GradError,
                f"{self.op_name}: trying to backward through the graph a second time (or to read saved "
                "values after they were freed). Saved arrays are freed after the first backward; pass "
                "retain_graph=True to the first backward() if you need to backward twice.")
        for vc, expected, arr, _ in self._versions:
            if vc[0] != expected:
                what = f"tensor of shape {tuple(arr.shape)} and dtype {arr.dtype}"
                raise named_error(GradError,
                    f"{self.op_name}: one of the arrays needed for gradient computation has been modified "
                    f"by an in-place operation: {what} is at version {vc[0]}; expected version {expected}. "
                    "Fix: use an out-of-place op (x = x * 2 instead of x *= 2), or .clone() the tensor "
                    "before changing it, or change it only after backward().")
        return self._to_save

    def grad_slot(self, i: int):
        """An array (input ``i``'s shape and dtype) to write input ``i``'s gradient into, or None.

        Set for a leaf whose gradient goes to a registered slot: the optimizer's flat gradient buffer
        (see ``autograd/function.py: _slots``). An op that takes it must return that same array as the
        gradient of input ``i``; writing there (a GEMM's ``out=``) spares the optimizer its gather."""
        e = self._edges[i]
        if e is None or e[1] >= 0 or not _slots:
            return None
        return claim_grad_slot(e[0])

    @property
    def op_name(self) -> str:
        fn = self._fn
        return fn.op_name() if fn is not None else "op"

    def _finalize(self, tensor_args: list, arrays: list, outputs: tuple) -> None:
        """Link saved arrays to the tensors they belong to (versions) and count the graph's bytes.

        Each entry of ``_versions`` is ``(version counter, version, array, link)``, ``link`` saying what
        the array was, for a higher-order backward to re-link it into the graph
        (``gpugrad/autograd/higher_order.py``): the input Tensor itself, the output's index, or None for
        a plain array argument (``arrays``: the positional arguments as passed to forward)."""
        versions = []
        tracked = None  # a list only when something is counted (the class default is ())
        for a in self._to_save:
            if a is None:
                continue
            for t in tensor_args:
                if t.data is a:
                    vc = t._vc
                    versions.append((vc, vc[0], a, t))
                    break
            else:
                t = None
            if t is not None:
                if t._grad_fn is None:
                    continue  # a leaf's data lives anyway: not counted
            elif not hasattr(a, "nbytes"):
                continue
            else:
                for j, t in enumerate(outputs):
                    d = t.data  # (NumPy's 0-d arithmetic gives a scalar, which became a 0-d array output)
                    if d is a or (isinstance(a, _np_generic) and d.ndim == 0 and d.dtype == a.dtype and d == a):
                        versions.append((t._vc, t._vc[0], a, j))
                        break
                else:
                    for arr in arrays:
                        if arr is a:  # a plain array argument: a constant, no version to check
                            versions.append((_NO_VC, 0, a, None))
                            break
            _track(a)
            if tracked is None:
                tracked = self._tracked = [a]
            else:
                tracked.append(a)
        self._versions = versions

    def release(self) -> None:
        """Free saved arrays (after backward without retain_graph)."""
        if not self._released:
            self._released = True
            for a in self._tracked:
                _saved.untrack(a)
            self._tracked = ()
            self._to_save = ()
            self._versions = ()  # (version counter, version, array): holds the arrays too

    def __del__(self) -> None:
        if self._tracked:
            for a in self._tracked:
                _saved.untrack(a)
            self._tracked = ()


class Function:
    """Base class of every differentiable op. Subclasses define static ``forward(ctx, *arrays,
    **params)`` and ``backward(ctx, *grads)`` on raw arrays of ``ctx.backend.xp``; call ``apply``.

    ``backward`` returns one gradient (or None) per positional input of ``forward``, with the
    input's shape (sum broadcast dimensions back with ``ctx.backend.sum_to_shape``)."""

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, *grads: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # Optional ``backward_consuming(ctx, grads: list)``: called instead of ``backward`` with a list the
    # node may empty, so the engine holds no reference to the incoming gradients while it runs (a
    # checkpoint's long nested backward frees them early). None: the engine calls ``backward``.
    backward_consuming = None
    # True for a node whose backward reaches leaves that are not among its edges (a checkpoint's
    # recompute finds the parameters used inside): gg.autograd.grad then always runs it.
    opaque_leaves = False

    @classmethod
    def op_name(cls) -> str:
        return getattr(cls, "name", None) or cls.__name__

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "apply" in cls.__dict__:
            return  # a class that writes its own apply keeps it (and so do its subclasses)
        inherited = cls.apply
        if getattr(inherited, "_gg_generated", False) or \
                getattr(inherited, "__func__", None) is Function.__dict__["apply"].__func__:
            cls.apply = staticmethod(_make_apply(cls))

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        """Run the op on tensors: every subclass gets its own (see ``_make_apply``)."""
        return _make_apply(cls)(*args, **kwargs)


def _make_apply(cls: type):
    """``cls.apply``: a plain function per ``Function`` subclass (set by ``__init_subclass__``), so that
    ``Tensor.__mul__ = Mul.apply`` binds like a method and an op costs one Python frame here."""

    def apply(*args: Any, **kwargs: Any) -> Any:
        # The hot path of every op: written flat (no helper calls, no generators) to keep the Python
        # frames per op few; Tensor results are built inline (what _make_result does).
        Tensor = _Tensor
        a = args[0] if args else None
        if len(args) == 2 and a.__class__ is Tensor and (args[1].__class__ is Tensor or args[1].__class__ in _SCALARS):
            # the binary ops (x * w, y + 0.001): both inputs scanned without the lists of the loop below
            b = args[1]
            dev = a._device
            requires = a._requires_grad
            ea = ((a._grad_fn, a._out_idx) if a._grad_fn is not None else (a, -1)) if requires else None
            if b.__class__ is Tensor:
                if b._device is not dev and b._device != dev:
                    _device_mismatch(cls, args, dev, b._device)
                tensor_args = args
                arrays = (a.data, b.data)
                if b._requires_grad:
                    edges = (ea, (b._grad_fn, b._out_idx) if b._grad_fn is not None else (b, -1))
                    needs = _NEEDS_TT if requires else _NEEDS_FT
                    requires = True
                else:
                    edges = (ea, None)
                    needs = _NEEDS_TF if requires else _NEEDS_FF
            else:
                tensor_args = (a,)
                arrays = (a.data, b)
                edges = (ea, None)
                needs = _NEEDS_TF if requires else _NEEDS_FF
        else:
            tensor_args = []
            arrays = []
            edges = []
            needs = []
            dev = None
            requires = False
            for a in args:
                if a.__class__ is Tensor or isinstance(a, Tensor):
                    if dev is None:
                        dev = a._device
                    elif a._device is not dev and a._device != dev:
                        _device_mismatch(cls, args, dev, a._device)
                    tensor_args.append(a)
                    arrays.append(a.data)
                    if a._requires_grad:
                        requires = True
                        edges.append((a._grad_fn, a._out_idx) if a._grad_fn is not None else (a, -1))
                        needs.append(True)
                    else:
                        edges.append(None)
                        needs.append(False)
                else:
                    arrays.append(a)
                    edges.append(None)
                    needs.append(False)
        if dev is not None:
            backend = dev._be
            if backend is None:
                backend = dev._be = get_backend(dev)
        else:
            backend = get_backend("cpu")
        record = requires and STATE.grad_enabled
        if requires and not record and _probes:
            probe = _probes[-1]
            for t in tensor_args:
                if t._requires_grad:
                    probe[id(t)] = t
        ctx = _new(Context)
        ctx.backend = backend
        ctx.needs_input_grad = tuple(needs) if record else _NEEDS_NONE.get(len(needs)) or (False,) * len(needs)
        try:
            out = cls.forward(ctx, *arrays, **kwargs)
        except Exception as e:
            if getattr(e, "_gg_named", False):
                raise
            raise _wrap(e, cls, args) from e
        if ctx.out_device is not None:
            dev = ctx.out_device
        elif dev is None:
            dev = CPU
        if STATE.anomaly:
            _check_finite(backend, cls.op_name(), "forward output", out if isinstance(out, tuple) else (out,))
        if not isinstance(out, tuple):
            if out.__class__ is _np_generic or isinstance(out, _np_generic):  # NumPy's 0-d arithmetic
                out = _asarray(out)
            # _make_result inlined (one call less per op on the hot path): keep the two in step
            res = _new(Tensor)
            res.data = out
            res.grad = None
            res._out_idx = 0
            res._vc = [0]
            res._device = dev
            res._hooks = None
            if not record or out.dtype.kind != "f":
                res._requires_grad = False
                res._grad_fn = None
                if record:  # an integer output of a recorded op: the node still gets its metadata
                    _link(ctx, cls, edges, ((out.shape, out.dtype),))
                    if ctx._to_save:
                        ctx._finalize(tensor_args, arrays, (res,))
                return res
            res._requires_grad = True
            res._grad_fn = ctx
            ctx._fn = cls  # _link, inline
            ctx._seq = _next_seq()
            ctx._edges = tuple(edges)
            key = (out.shape, out.dtype)
            meta = _metas.get(key)
            ctx._out_meta = meta if meta is not None else _new_meta(key)
            if ctx._to_save:
                ctx._finalize(tensor_args, arrays, (res,))
            return res
        make = _make_result
        if not record:
            ctx._to_save = ()
            return tuple(make(o, dev, None, i) for i, o in enumerate(out))
        _link(ctx, cls, edges, None)
        non_diff = ctx._non_diff
        results = tuple(
            make(o, dev, ctx if (o.dtype.kind == "f" and not any(o is n for n in non_diff)) else None, i)
            for i, o in enumerate(out))
        ctx._out_meta = tuple((r.data.shape, r.data.dtype) for r in results)
        ctx._finalize(tensor_args, arrays, results)
        return results

    apply._gg_generated = True  # type: ignore[attr-defined]
    apply.__qualname__ = f"{cls.__qualname__}.apply"
    apply.__doc__ = f"Run ``{cls.__qualname__}`` on tensors (records the graph node when grad is needed)."
    return apply


_new = object.__new__
_track = _saved.track
_NO_VC = [0]  # the version counter of a plain array argument (never bumped)
_SCALARS = (int, float)
# needs_input_grad of the binary ops, shared (tuples are never changed in place; the engine replaces a
# node's needs_input_grad while it runs, never edits it): one tuple less per op for the collector.
_NEEDS_TT, _NEEDS_TF, _NEEDS_FT, _NEEDS_FF = (True, True), (True, False), (False, True), (False, False)
_NEEDS_NONE = {n: (False,) * n for n in range(1, 9)}  # an op that records nothing


def _device_mismatch(cls: type, args: tuple, dev, other) -> None:
    raise named_error(RuntimeError,
        f"{cls.op_name()}: expected all tensors on the same device, found {dev} and "
        f"{other} (inputs: {', '.join(describe(x) for x in args)}). "
        f"Move them first, e.g. x.to('{dev}').")
_np_generic = np.generic
# The ``_out_meta`` of single-output nodes, one shared tuple per (shape, dtype) seen: two tuples less per
# op for the garbage collector to track (their creation cost is the lookup's).
_metas: dict = {}


def _new_meta(key: tuple) -> tuple:
    if len(_metas) >= 4096:  # many distinct shapes (varying batch sizes): start over
        _metas.clear()
    meta = _metas[key] = (key,)
    return meta
_asarray = np.asarray


def _link(ctx: Context, cls: type, edges: list, out_meta) -> None:
    """Make ``ctx`` a graph node: its function, creation order and edges to its inputs' nodes."""
    ctx._fn = cls
    ctx._seq = _next_seq()
    ctx._edges = tuple(edges)
    if out_meta is not None:
        ctx._out_meta = out_meta


def _wrap(e: Exception, cls: type, args: tuple) -> Exception:
    msg = f"{cls.op_name()}: {e} (inputs: {', '.join(describe(x) for x in args)})"
    try:
        new = type(e)(msg)
    except Exception:
        new = RuntimeError(msg)
    new._gg_named = True  # type: ignore[attr-defined]
    return new


def _check_finite(backend, op: str, what: str, arrays) -> None:
    xp = backend.xp
    for i, a in enumerate(arrays):
        if a is None or not hasattr(a, "dtype") or a.dtype.kind not in "fc":
            continue
        if not bool(xp.isfinite(a).all()):
            n_nan = int(xp.isnan(a).sum())
            n_inf = int(xp.isinf(a).sum())
            raise named_error(FloatingPointError,
                f"detect_anomaly: {op} produced non-finite values in its {what} #{i} "
                f"(shape {tuple(a.shape)}, {n_nan} NaN, {n_inf} inf). This is the first op that did.")


__all__ = ["Context", "Function", "GradError", "named_error", "describe", "TensorBase", "register_tensor_class",
           "np"]
