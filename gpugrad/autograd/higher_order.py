"""Higher-order gradients: a backward formula that records its own graph (``create_graph=True``).

Every op keeps ONE backward formula, written so it runs on raw arrays (the normal path, unchanged
cost) and on Tensors. While the engine records (``backward(create_graph=True)``,
``gg.autograd.grad(..., create_graph=True)``), it calls each node's backward inside
:func:`enter` (until :func:`leave`), which hands the formula

- Tensors for the incoming gradients;
- ``ctx.saved_tensors`` re-linked into the graph: a saved input as that input's Tensor (its node and
  output index, or the leaf itself), a saved output as a Tensor whose ``grad_fn`` is the node itself,
  a saved non-float array (mask, index, condition) as the constant it is. An op that saves an
  intermediate float value (softmax probabilities, a pre-activation) re-links it itself with a
  ``graph_saved(ctx, saved)`` static method, usually as the output of a :func:`derived_node` (a node
  of an existing Function standing for how the forward computed it, without recomputing it);
  without one the engine raises instead of treating the value as a constant;
- the graph backend (``gpugrad/ops/graph_backend.py``) as ``ctx.backend``: the backend's methods as
  differentiable ops whose forward runs the real backend's fused kernel (so the first-order part of a
  double-backward graph runs the same fused CPU/CUDA passes) and whose own backward is again written
  for both modes (third and higher orders).

Nothing here holds a reference from an old node to a new one: the re-linked Tensors and derived nodes
point at the recorded graph, never back, so no reference cycle is made.
"""
from __future__ import annotations

from typing import Any

from . import saved as _saved
from .._mode import STATE
from .function import Context, GradError, TensorBase, _link, _make_result, named_error


def input_tensor(ctx: Context, i: int, arr) -> Any:
    """Input ``i`` of ``ctx`` as a Tensor in the graph, by its edge, with ``arr`` as its data (only a
    stand-in of its shape and dtype where the formula never reads it: see ``ActSaved``); a constant
    (a Tensor without graph, or ``arr`` itself when not floating point) if it needs no gradient."""
    edge = ctx._edges[i] if i < len(ctx._edges) else None
    if edge is None:
        return _constant(ctx, arr)
    if edge[1] < 0:
        return edge[0]  # the leaf itself
    return _make_result(arr, _device(ctx), edge[0], edge[1])


def output_tensor(ctx: Context, j: int, arr, vc=None) -> Any:
    """Output ``j`` of ``ctx`` as a Tensor whose ``grad_fn`` is ``ctx`` (gradients that reach it run
    ``ctx``'s backward again); ``arr`` itself if that output is not differentiable."""
    meta = ctx._out_meta
    if j >= len(meta) or meta[j][1].kind != "f" or any(arr is n for n in ctx._non_diff):
        return arr
    return _make_result(arr, _device(ctx), ctx, j, vc)


def _constant(ctx: Context, arr) -> Any:
    """A value without gradient: a Tensor when floating point (formulas combine it with Tensors,
    ``a @ g``), the array itself otherwise (masks, class indices)."""
    if arr.dtype.kind not in "fc":
        return arr
    return _make_result(arr, _device(ctx), None, 0)


def _device(ctx: Context):
    return ctx.out_device if ctx.out_device is not None else ctx.backend.device


def relink(ctx: Context, saved: tuple) -> tuple:
    """The default re-linking of ``saved`` (what ``ctx.saved_tensors`` returns while recording):
    each array to the input Tensor or the output it was (``Context._finalize`` recorded which); a
    plain array argument or a non-float array is a constant (masks, indices). A float array that is
    none of these is an intermediate whose dependence on the inputs would be lost: an error naming the op."""
    links = {id(e[2]): e for e in ctx._versions}
    out = []
    for a in saved:
        if a is None or not hasattr(a, "dtype") or not hasattr(a, "nbytes"):
            out.append(a)
            continue
        e = links.get(id(a))
        link = e[3] if e is not None else None
        if isinstance(link, TensorBase):  # an input
            if link._grad_fn is None:  # a leaf (the data it had when saved: the version check ensures it)
                out.append(link if link._requires_grad else _constant(ctx, a))
            else:
                out.append(_make_result(a, link._device, link._grad_fn, link._out_idx, link._vc))
        elif link is not None:  # an output
            out.append(output_tensor(ctx, link, a, e[0]))
        elif e is not None or a.dtype.kind not in "fc":  # a plain array argument, or a mask/index
            out.append(_constant(ctx, a))
        else:
            t = _cast_input(ctx, a)  # an input cast to the op's dtype (type promotion)
            if t is not None:
                out.append(t)
                continue
            raise named_error(GradError,
                f"{ctx.op_name}: double backward (create_graph=True) is not supported: its backward uses "
                f"a saved intermediate value (shape {tuple(a.shape)}, {a.dtype}) that is neither an input "
                f"nor an output, so its dependence on the inputs would be lost. Fix (for the op's author): "
                f"give {ctx.op_name}'s Function a graph_saved(ctx, saved) static method that re-links it "
                "(see gpugrad/autograd/higher_order.py), or save inputs/outputs only.")
    return tuple(out)


def _cast_input(ctx: Context, a) -> Any:
    """``a``, a copy of input ``k`` cast to the op's dtype (``ops/_common.py: coerce`` keeps which in
    ``ctx.cast_src``, weakly, with input ``k``'s dtype), as that cast of input ``k``'s Tensor: a
    differentiable ``to(dtype)``. The input's values are ``a`` cast back (its data is only read by the
    cast, which gives ``a`` again: exact for every cast type promotion makes of a floating input)."""
    for k, link in enumerate(ctx.__dict__.get("cast_src", ())):
        if link is not None and link[0]() is a:
            if k >= len(ctx._edges) or ctx._edges[k] is None:
                return _constant(ctx, a)
            return input_tensor(ctx, k, a.astype(link[1])).to(a.dtype)
    return None


def derived_node(src: Context, fn: type, inputs: tuple, out_arrays: tuple, saved: tuple = (),
                 **attrs: Any) -> tuple:
    """Tensors for values ``src``'s forward computed (``out_arrays``, e.g. the probabilities of a
    fused cross-entropy), as the outputs of a new node of Function ``fn`` over ``src``'s inputs
    number ``inputs`` (its edges; None: an input without one, a constant), without running ``fn``'s
    forward: ``fn``'s backward must be the derivative of those values with respect to those inputs.
    ``saved``: what that backward reads (arrays among ``out_arrays``, numbers, None); ``attrs``: the
    context attributes it reads."""
    ctx = Context(src.backend, tuple(i is not None and i < len(src.needs_input_grad) and src.needs_input_grad[i]
                                     for i in inputs))
    for k, v in attrs.items():
        setattr(ctx, k, v)
    edges = [src._edges[i] if i is not None and i < len(src._edges) else None for i in inputs]
    _link(ctx, fn, edges, tuple((o.shape, o.dtype) for o in out_arrays))
    dev = _device(src)
    outs = tuple(_make_result(o, dev, ctx if o.dtype.kind == "f" else None, j)
                 for j, o in enumerate(out_arrays))
    if saved:
        ctx._to_save = saved
        src_tracked = {id(a) for a in src._tracked}
        versions, tracked = [], []
        for a in saved:
            if a is None or not hasattr(a, "nbytes"):
                continue
            for j, t in enumerate(outs):
                if t.data is a:
                    versions.append((t._vc, t._vc[0], a, j))
                    break
            else:
                raise named_error(GradError, f"derived_node: {fn.op_name()} may save only its outputs")
            if id(a) in src_tracked:  # the same array src counted: counted once, held one more time
                _saved.track(a)
                tracked.append(a)
        ctx._versions = versions
        ctx._tracked = tracked
    return outs


class _Lent:
    """What the ops layer lends autograd, registered by ``gpugrad/ops/__init__.py`` when it loads
    (autograd imports nothing of the layers above it, not even late: no import cycle)."""

    graph_backend = None  # ops/graph_backend.py: graph_backend(device backend) -> GraphBackend
    stack = None  # gpugrad.ops.stack (gg.autograd.functional builds Jacobians with it)


LENT = _Lent()


def register(**functions: Any) -> None:
    """``register(graph_backend=..., stack=...)``: called once by the ops layer."""
    for k, v in functions.items():
        if not hasattr(_Lent, k):
            raise TypeError(f"register: unknown name {k!r}")
        setattr(LENT, k, v)


def enter(node: Context) -> tuple:
    """Start running ``node``'s backward formula on Tensors: the graph backend as ``node.backend`` and
    the saved values re-linked (``fn.graph_saved`` when the op defines it, else :func:`relink`).
    Returns what :func:`leave` restores (the engine calls both, around the formula)."""
    graph_backend = LENT.graph_backend
    if graph_backend is None:
        raise named_error(GradError, "create_graph=True needs gpugrad's ops: import gpugrad first")
    be = node.backend
    saved = node._to_save
    if saved and not node._released:
        hook = getattr(node._fn, "graph_saved", None)
        node._to_save = hook(node, saved) if hook is not None else relink(node, saved)
    node.backend = graph_backend(be)
    prev, STATE.recording = STATE.recording, node.op_name
    return be, saved, prev


def leave(node: Context, state: tuple) -> None:
    be, saved, prev = state
    STATE.recording = prev
    node.backend = be
    if not node._released:
        node._to_save = saved


def is_recording(backend: Any) -> bool:
    """True when ``backend`` (a formula's ``ctx.backend``) is the graph backend: the formula runs on
    Tensors and records."""
    return getattr(backend, "records", False)


__all__ = ["input_tensor", "output_tensor", "relink", "derived_node", "enter", "leave", "is_recording",
           "register", "LENT"]
