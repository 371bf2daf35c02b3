"""Higher-order gradients: a backward formula that records its own graph (``create_graph=True``).

Every op keeps ONE backward formula, written so it runs on raw arrays (the normal path, unchanged
cost) and on Tensors. While the engine records (``backward(create_graph=True)``,
``gg.autograd.grad(..., create_graph=True)``), it calls each node's backward inside
:func:`recording`, which hands the formula

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

import contextlib
from typing import Any, Iterator

from . import saved as _saved
from .function import _NO_VC, Context, GradError, _lazy, _link, named_error


def input_tensor(ctx: Context, i: int, arr) -> Any:
    """Input ``i`` of ``ctx`` as a Tensor in the graph, with ``arr`` as its data (the saved array,
    or only a stand-in of its shape and dtype when the formula never reads it: see ``ActSaved``).
    An input that needs no gradient is a constant: a Tensor without graph when it is floating point
    (so formulas combine it with Tensors: ``a @ g``), else ``arr`` itself (masks, class indices)."""
    edge = ctx._edges[i] if i < len(ctx._edges) else None
    if edge is not None and edge[1] < 0:
        return edge[0]  # the leaf itself
    if edge is None and arr.dtype.kind not in "fc":
        return arr
    vc = None
    for e in ctx._versions:
        if e[3] == i and e[2] is arr:
            vc = e[0] if e[0] is not _NO_VC else None
            break
    return _lazy.make_result(arr, _device(ctx), edge[0] if edge is not None else None,
                             edge[1] if edge is not None else 0, vc)


def output_tensor(ctx: Context, j: int, arr) -> Any:
    """Output ``j`` of ``ctx`` as a Tensor whose ``grad_fn`` is ``ctx`` (gradients that reach it run
    ``ctx``'s backward again); ``arr`` itself if that output is not differentiable."""
    meta = ctx._out_meta
    if j >= len(meta) or meta[j][1].kind != "f" or any(arr is n for n in ctx._non_diff):
        return arr
    vc = None
    for e in ctx._versions:
        if e[3] == -1 - j and e[2] is arr:
            vc = e[0]
            break
    return _lazy.make_result(arr, _device(ctx), ctx, j, vc)


def _device(ctx: Context):
    return ctx.out_device if ctx.out_device is not None else ctx.backend.device


def relink(ctx: Context, saved: tuple) -> tuple:
    """The default re-linking of ``saved`` (what ``ctx.saved_tensors`` returns while recording): each
    array to the input or output it was (``Context._finalize`` recorded which), a non-float array
    unchanged (a constant: masks, indices). A float array that is neither is an intermediate value
    whose dependence on the inputs would be lost: an error naming the op."""
    links = {id(e[2]): e[3] for e in ctx._versions}
    out = []
    for a in saved:
        if a is None or not hasattr(a, "dtype") or not hasattr(a, "nbytes"):
            out.append(a)
            continue
        k = links.get(id(a))
        if k is None:
            if a.dtype.kind in "fc":
                raise named_error(GradError,
                    f"{ctx.op_name}: double backward (create_graph=True) is not supported: its backward uses "
                    f"a saved intermediate value (shape {tuple(a.shape)}, {a.dtype}) that is neither an input "
                    f"nor an output, so its dependence on the inputs would be lost. Fix (for the op's author): "
                    f"give {ctx.op_name}'s Function a graph_saved(ctx, saved) static method that re-links it "
                    "(see gpugrad/autograd/higher_order.py), or save inputs/outputs only.")
            out.append(a)
        elif k >= 0:
            out.append(input_tensor(ctx, k, a))
        else:
            out.append(output_tensor(ctx, -1 - k, a))
    return tuple(out)


def derived_node(src: Context, fn: type, inputs: tuple, out_arrays: tuple, saved: tuple = (),
                 **attrs: Any) -> tuple:
    """Tensors for values ``src``'s forward computed (``out_arrays``, e.g. the probabilities of a
    fused cross-entropy), as the outputs of a new node of Function ``fn`` over ``src``'s inputs
    number ``inputs`` (its edges), without running ``fn``'s forward: ``fn``'s backward must be the
    derivative of those values with respect to those inputs. ``saved`` are the arrays that backward
    reads (``src``'s inputs or the new outputs), ``attrs`` the context attributes it reads."""
    ctx = Context(src.backend, tuple(src.needs_input_grad[i] if i < len(src.needs_input_grad) else False
                                     for i in inputs))
    for k, v in attrs.items():
        setattr(ctx, k, v)
    edges = [src._edges[i] if i < len(src._edges) else None for i in inputs]
    _link(ctx, fn, edges, tuple((o.shape, o.dtype) for o in out_arrays))
    dev = _device(src)
    outs = tuple(_lazy.make_result(o, dev, ctx if o.dtype.kind == "f" else None, j)
                 for j, o in enumerate(out_arrays))
    if saved:
        ctx._to_save = saved
        src_links = {id(e[2]): e for e in src._versions}
        src_tracked = {id(a) for a in src._tracked}
        versions, tracked = [], []
        for a in saved:
            if a is None or not hasattr(a, "nbytes"):
                continue
            e = src_links.get(id(a))
            if e is not None and e[3] >= 0 and e[3] in inputs:
                versions.append((e[0], e[1], a, inputs.index(e[3])))
            else:
                for j, t in enumerate(outs):
                    if t.data is a:
                        versions.append((t._vc, t._vc[0], a, -1 - j))
                        break
            if id(a) in src_tracked:  # the same array src counted: counted once, held one more time
                _saved.track(a)
                tracked.append(a)
        ctx._versions = versions
        ctx._tracked = tracked
    return outs


@contextlib.contextmanager
def recording(node: Context) -> Iterator[None]:
    """Run ``node``'s backward formula on Tensors: the graph backend as ``node.backend`` and the
    saved values re-linked (``fn.graph_saved`` when the op defines it, else :func:`relink`); both
    restored afterwards."""
    from ..ops.graph_backend import graph_backend  # late: ops sit above autograd
    be = node.backend
    saved = node._to_save
    fn = node._fn
    if saved and not node._released:
        hook = getattr(fn, "graph_saved", None)
        node._to_save = hook(node, saved) if hook is not None else relink(node, saved)
    node.backend = graph_backend(be)
    try:
        yield
    finally:
        node.backend = be
        if not node._released:
            node._to_save = saved


def is_recording(backend: Any) -> bool:
    """True when ``backend`` (a formula's ``ctx.backend``) is the graph backend: the formula runs on
    Tensors and records."""
    return getattr(backend, "records", False)


__all__ = ["input_tensor", "output_tensor", "relink", "derived_node", "recording", "is_recording"]
