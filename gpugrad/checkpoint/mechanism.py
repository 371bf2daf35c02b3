"""The checkpoint mechanism: ``checkpoint(fn, *args)`` and the graph node it records.

``checkpoint(fn, *args)`` runs ``fn`` under ``no_grad`` (nothing inside is saved) and records one
graph node that keeps only ``fn``'s tensor inputs (``autograd.graph.make_node``). Its backward
restores the random state, runs ``fn`` again with grad enabled on detached copies of the inputs, and
backpropagates through that recomputed graph (``autograd.graph.nested_backward``): gradients for the
inputs go back to the enclosing backward, gradients for the parameters used inside ``fn`` are handed
to the enclosing backward too (so ``.grad``, hooks, ``inputs=`` and ``gg.autograd.grad`` behave
exactly as without checkpointing). Under ``create_graph`` the recompute starts from the inputs' places
in the graph and the nested backward records, so gradients of gradients go through the segment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .._device import CPU
from .. import backends as _backends
from ..autograd.function import Context, Function, GradError, named_error
from ..autograd.grad_mode import STATE, enable_grad, no_grad
from ..autograd.graph import make_node, nested_backward, watch_grad_inputs
from ..autograd.higher_order import is_recording
from ..backends import get_backend
from ..tensor import Tensor, _make_result

__all__ = ["checkpoint", "CheckpointFunction"]


class CheckpointFunction(Function):
    """The graph node of one ``checkpoint`` call (built by :func:`checkpoint`, not by ``apply``)."""

    name = "checkpoint"
    opaque_leaves = True

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called
        raise named_error(RuntimeError, "checkpoint: call gg.checkpoint.checkpoint(fn, *args), not .apply")

    @staticmethod
    def backward(ctx: Context, *grads: Any) -> tuple:
        return CheckpointFunction.backward_consuming(ctx, list(grads))

    @staticmethod
    def backward_consuming(ctx: Context, grads: list) -> tuple:
        """Recompute and backpropagate. ``grads`` (this node's incoming gradients, handed over by the
        engine) and the recomputed outputs are let go as soon as the nested backward has read them:
        each is as large as an activation and would otherwise stay alive through the whole segment."""
        saved = ctx.saved_tensors  # raises the clear "backward a second time" / in-place errors
        st = ctx._ckpt
        # Under create_graph this is no backward formula on Tensors but the user's forward and a nested
        # backward whose nodes mark their own formulas: NumPy on the forward's tensors (or in a hook) stays
        # allowed, as without checkpointing. (The engine restores the flag after this node: higher_order.leave.)
        STATE.recording = None
        # create_graph: the recompute starts from the inputs' places in the graph (through a boundary
        # node each, where the nested backward stops), so its gradients can be differentiated again
        recording = is_recording(ctx.backend)
        inputs = []
        for val, (rg, dev, vc) in zip(saved, st.in_meta):
            if recording and rg:
                inputs.append(_Boundary.apply(val))
                continue
            t = _make_result(val.data if isinstance(val, Tensor) else val, dev, None, 0, vc)
            t._requires_grad = rg
            inputs.append(t)
        args, kwargs = _fill(st.args, st.kwargs, st.slots, inputs)

        cur = None
        if st.rng is not None:
            cur = {d: get_backend(d).get_rng_state() for d in st.rng}
            for d, s in st.rng.items():
                get_backend(d).set_rng_state(s)
        try:
            with enable_grad():
                out = st.fn(*args, **kwargs)
        finally:
            if cur is not None:
                for d, s in cur.items():
                    get_backend(d).set_rng_state(s)

        outs = _tensors_of(out)
        if len(outs) != len(st.out_meta) or any(
                tuple(o.shape) != m[0] or o.dtype != m[1] for o, m in zip(outs, st.out_meta)):
            raise named_error(GradError,
                f"checkpoint: recomputing {_fn_name(st.fn)} in backward gave outputs "
                f"{[(tuple(o.shape), str(o.dtype)) for o in outs]} but the forward gave "
                f"{[(m[0], str(m[1])) for m in st.out_meta]}. The function must compute the same thing "
                "every time it is called with the same inputs (no state changed between calls).")
        roots, root_grads = [], []
        for o, g in zip(outs, grads):
            if o.requires_grad and g is not None:
                roots.append(o)
                root_grads.append(g)
        want = [t for t in inputs if t._requires_grad]
        grads.clear()
        out = outs = o = g = None  # from here on only the lists handed to the engine hold them
        if not roots:
            return tuple(None for _ in inputs)
        res = nested_backward(roots, root_grads, want, op="checkpoint", create_graph=recording)
        it = iter(res)
        return tuple(next(it) if t._requires_grad else None for t in inputs)


class _Boundary(Function):
    """Where a recompute under ``create_graph`` starts: the input itself, as a node the nested
    backward stops at (its gradient is the checkpoint's gradient for that input)."""

    name = "checkpoint_input"

    @staticmethod
    def forward(ctx: Context, x):
        return x

    @staticmethod
    def backward(ctx: Context, g):
        return g


@dataclass
class _State:
    fn: Callable
    args: tuple
    kwargs: dict
    slots: tuple  # where the tensor inputs sit: ("a", i) or ("k", name)
    in_meta: tuple  # (requires_grad, device, version counter) per tensor input
    out_meta: tuple  # (shape, dtype) per tensor output
    rng: dict | None  # device -> (seed, offset) before the forward


def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _tensors_of(out: Any) -> list:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [o for o in out if isinstance(o, Tensor)]
    return []


def _fill(args: tuple, kwargs: dict, slots: tuple, tensors: list) -> tuple:
    a = list(args)
    k = dict(kwargs)
    for (kind, key), t in zip(slots, tensors):
        if kind == "a":
            a[key] = t
        else:
            k[key] = t
    return a, k


def checkpoint(fn: Callable, *args: Any, preserve_rng_state: bool = True, use_reentrant: bool | None = None,
               **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` without keeping its activations: they are recomputed in backward.

    Tensor arguments (positional or keyword, top level) are the inputs whose gradients flow back;
    other arguments are passed through unchanged. Parameters used inside ``fn`` (leaf tensors, e.g. a
    module's weights) get exactly the gradients they would get without checkpointing, also when no
    input requires grad. ``fn`` returns a Tensor or a tuple/list holding at least one Tensor. With
    ``preserve_rng_state`` the random state of the inputs' devices and the CPU is restored for the
    recompute, so dropout draws the same masks. Under ``no_grad`` this is a plain call.
    ``use_reentrant`` is accepted for PyTorch compatibility and ignored."""
    if not callable(fn):
        raise named_error(TypeError, f"checkpoint: fn must be callable, got {type(fn).__name__}. "
                          "Usage: checkpoint(fn, *args, **kwargs)")
    if not STATE.grad_enabled:
        return fn(*args, **kwargs)

    slots, inputs = [], []
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            slots.append(("a", i))
            inputs.append(a)
    for k, v in kwargs.items():
        if isinstance(v, Tensor):
            slots.append(("k", k))
            inputs.append(v)

    rng = None
    if preserve_rng_state:  # the CPU, the inputs' devices and every device already in use (parameters)
        devs = {CPU}
        devs.update(t._device for t in inputs)
        devs.update(_backends._instances)
        rng = {d: get_backend(d).get_rng_state() for d in devs}

    with watch_grad_inputs() as probe, no_grad():
        out = fn(*args, **kwargs)

    single = isinstance(out, Tensor)
    if not single and not isinstance(out, (tuple, list)):
        raise named_error(TypeError,
            f"checkpoint: {_fn_name(fn)} returned {type(out).__name__}; it must return a Tensor or a "
            "tuple/list containing Tensors (the values to differentiate).")
    outs = _tensors_of(out)
    if not outs:
        raise named_error(TypeError,
            f"checkpoint: {_fn_name(fn)} returned no Tensor (got {type(out).__name__} of "
            f"{[type(o).__name__ for o in out]}); return at least one Tensor, or call fn directly "
            "when there is nothing to differentiate.")

    input_ids = {id(t) for t in inputs}
    params = False
    for t in probe.values():
        if id(t) in input_ids:
            continue
        if t._grad_fn is not None:
            raise named_error(GradError,
                f"checkpoint: {_fn_name(fn)} uses a tensor of shape {tuple(t.shape)} that requires grad and "
                "was computed outside it (it has a grad_fn) but is not one of its arguments: its gradient "
                "could not flow back through the checkpoint. Fix: pass it to checkpoint as an argument, "
                "checkpoint(fn, x, that_tensor), and use the argument inside fn.")
        params = True
    if not (params or any(t._requires_grad for t in inputs)):
        return out  # nothing inside needs a gradient: the no_grad result is the answer

    ctx, wrapped = make_node(CheckpointFunction, inputs, outs, save=[t.data for t in inputs])
    tmpl_args, tmpl_kwargs = _fill(args, kwargs, tuple(slots), [None] * len(inputs))
    ctx._ckpt = _State(fn, tuple(tmpl_args), tmpl_kwargs, tuple(slots),
                       tuple((t._requires_grad, t._device, t._vc) for t in inputs),
                       tuple((tuple(o.shape), o.dtype) for o in outs), rng)

    if single:
        return wrapped[0]
    it = iter(wrapped)
    res = [next(it) if isinstance(o, Tensor) else o for o in out]
    if isinstance(out, list):
        return res
    return type(out)(*res) if hasattr(out, "_fields") else tuple(res)
