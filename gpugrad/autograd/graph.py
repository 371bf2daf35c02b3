"""``gg.autograd.graph``: build graph nodes by hand and backpropagate inside a backward.

For a custom ``Function`` whose forward is not one ``apply`` on arrays, as gradient checkpointing
(gpugrad/checkpoint/) is: its forward runs a whole Python function under ``no_grad``, its backward
runs that function again with grad and backpropagates through the result (PyTorch's reentrant
checkpoint: a custom Function whose backward runs a nested backward). Three pieces:

- :func:`watch_grad_inputs`: which tensors requiring grad did ops receive while grad mode was off
  (the parameters a function uses, which decide whether a node is needed at all);
- :func:`make_node`: record one node of a ``Function`` for outputs computed outside its ``apply``,
  with edges to given inputs;
- :func:`nested_backward` (with :func:`current_backward`, the run in progress): from inside a node's
  backward, backpropagate through a graph built there, get the gradients of chosen inputs, and hand
  every other leaf's gradient to the enclosing backward, which treats it as its own.

Example: a node that recomputes ``f`` in backward instead of keeping its activations::

    class Recompute(Function):
        @staticmethod
        def backward(ctx, g):
            x = ctx.x.detach().requires_grad_()
            with gg.enable_grad():
                y = ctx.f(x)
            return tuple(nested_backward([y], [g], [x]))

    with gg.no_grad():
        y = f(x)
    ctx, (y,) = make_node(Recompute, [x], [y])
    ctx.f, ctx.x = f, x
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from ..backends import get_backend
from . import engine as _engine
from . import function as _function
from .function import Context, GradError, _link, _make_result, named_error

__all__ = ["make_node", "watch_grad_inputs", "nested_backward", "current_backward", "BackwardRun"]

BackwardRun = _engine._Run  # one backward() / autograd.grad() in progress (opaque)


@contextmanager
def watch_grad_inputs() -> Iterator[dict]:
    """While open, collect ``{id(t): t}`` for every tensor requiring grad that an op received
    without recording a node (grad mode off). Nested watches: the innermost one collects."""
    seen: dict = {}
    _function._probes.append(seen)
    try:
        yield seen
    finally:
        _function._probes.pop()


def make_node(fn: type, inputs: Sequence[Any], outputs: Sequence[Any], save: Sequence[Any] = ()
              ) -> tuple[Context, tuple]:
    """Record one graph node of the Function ``fn`` for ``outputs`` computed outside ``fn.apply``.

    ``inputs``: tensors; the node gets an edge to each that requires grad, and
    ``ctx.needs_input_grad`` says which. ``outputs``: tensors; the node's outputs are new tensors on
    their data (sharing their version counters), the floating ones with the node as ``grad_fn``.
    ``save``: arrays for ``ctx.save_for_backward`` (counted in ``saved_bytes``, version-checked
    against ``inputs`` and the new outputs). In backward the engine calls ``fn.backward(ctx,
    *grads)`` (or ``fn.backward_consuming``), which returns one gradient (or None) per input.
    Returns ``(ctx, new_outputs)``; set any further state on ``ctx``."""
    outs = tuple(outputs)
    if not outs:
        raise named_error(ValueError, f"make_node: {fn.op_name()} has no outputs; a node needs at least one")
    ctx = Context(get_backend(outs[0]._device), tuple(t._requires_grad for t in inputs))
    edges = [((t._grad_fn, t._out_idx) if t._grad_fn is not None else (t, -1)) if t._requires_grad else None
             for t in inputs]
    _link(ctx, fn, edges, None)
    wrapped = tuple(_make_result(o.data, o._device, ctx if o.data.dtype.kind == "f" else None, i, o._vc)
                    for i, o in enumerate(outs))
    ctx._out_meta = tuple((o.data.shape, o.data.dtype) for o in outs)
    ctx.save_for_backward(*save)
    ctx._finalize(list(inputs), (), wrapped)
    return ctx, wrapped


def current_backward() -> BackwardRun | None:
    """The innermost ``backward()`` or ``gg.autograd.grad`` in progress (None outside backward)."""
    return _engine.current_run()


def nested_backward(roots: list, grads: list, inputs: Sequence[Any], op: str = "nested_backward",
                    create_graph: bool = False) -> list:
    """Backpropagate from inside a node's backward (``fn.backward`` running in the engine).

    ``roots``: tensors of a graph built during this backward (e.g. a recompute under
    ``enable_grad``); ``grads``: their gradients (arrays). Returns the gradients (arrays, None where
    unreached) of ``inputs`` (tensors requiring grad), and hands the gradient of every other leaf
    reached to :func:`current_backward`, so ``.grad``, hooks, ``inputs=`` and ``gg.autograd.grad``
    see it as if that graph were part of the outer one. The lists ``roots`` and ``grads`` are
    emptied once read, so the roots and their gradients are freed as soon as the graph no longer
    needs them (pass lists you own). ``op`` names the caller in errors.

    ``create_graph`` (the enclosing backward records: ``higher_order.is_recording(ctx.backend)``):
    ``grads`` and the results are Tensors, the nested graph is recorded and kept, and ``inputs`` must
    be non-leaf tensors whose nodes the walk stops at (each the output of a one-input node over the
    value the recompute started from), so the results stay connected to the enclosing graph."""
    run = _engine.current_run()
    if run is None:
        raise named_error(GradError, f"{op}: backward called outside of a backward pass; call it from "
                          "a Function's backward while backward() runs")
    inputs = list(inputs)
    return _engine.run_backward(roots, grads, retain_graph=create_graph, inputs=inputs, accumulate=False,
                                leaf_into=run, consume=True, create_graph=create_graph,
                                stop=frozenset(t._grad_fn for t in inputs) if create_graph else frozenset())
