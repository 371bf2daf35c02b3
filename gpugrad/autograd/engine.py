"""Reverse-mode engine: iterative topological walk, fan-out accumulation, leaf accumulation."""
from __future__ import annotations

import heapq
import weakref
from typing import Any, Callable, Sequence

from . import higher_order as _higher
from .function import GradError, TensorBase, _check_finite, _drop, _make_result, _runs, _slots, named_error
from .grad_mode import STATE


def _collect(roots: list, leaf_edges: dict | None = None, stop: frozenset = frozenset()) -> dict:
    """Count, for every node reachable from ``roots``, how many graph edges point at it; with
    ``leaf_edges``, also count there the edges that point at each leaf (by ``id(leaf)``). The walk
    does not go past the nodes in ``stop``."""
    deps: dict = dict.fromkeys(roots, 0)
    stack = [n for n in deps if n not in stop] if stop else list(deps)
    get = deps.get
    while stack:
        node = stack.pop()
        for e in node._edges:
            if e is None or e[1] < 0:
                if leaf_edges is not None and e is not None:
                    k = id(e[0])
                    leaf_edges[k] = leaf_edges.get(k, 0) + 1
                continue
            child = e[0]
            n = get(child)
            if n is None:  # first visit
                deps[child] = 1
                if not stop or child not in stop:
                    stack.append(child)
            else:
                deps[child] = n + 1
    return deps


def _needed(roots: list, deps: dict, capture: dict) -> dict:
    """For ``gg.autograd.grad``: per node, which of its edges lead to an input (one bool per edge).
    Nodes missing from the answer lead to none and are not run (PyTorch computes only what the
    inputs need, too): with ``create_graph`` this is what keeps a gradient with respect to the input
    of an MLP from also building the weight gradients' graph."""
    targets = {k[0] for k in capture if k[1] >= 0}
    # reverse topological order: a node after every node it has an edge to
    order, seen, stack = [], set(), [(n, False) for n in roots]
    while stack:
        n, done = stack.pop()
        if done:
            order.append(n)
            continue
        if n in seen:
            continue
        seen.add(n)
        stack.append((n, True))
        for e in n._edges:
            if e is not None and e[1] >= 0 and e[0] not in seen and e[0] in deps:
                stack.append((e[0], False))
    reach: set = set()  # nodes a gradient must reach: those that lead to an input, and the inputs' own
    masks: dict = {}
    for n in order:
        if n._fn.opaque_leaves:  # its backward finds leaves of its own (checkpoint): run it whole
            mask = tuple(e is not None for e in n._edges)
            masks[n] = mask
            reach.add(n)
            continue
        mask = tuple(e is not None and ((e[1] < 0 and (id(e[0]), -1) in capture) or
                                        (e[1] >= 0 and e[0] in reach)) for e in n._edges)
        if any(mask):
            masks[n] = mask
            reach.add(n)
        elif id(n) in targets:
            reach.add(n)
    return masks


def _add(acc: dict, key, g) -> None:
    """Fan-out: gradients arriving on several paths add (out of place first, we own it after)."""
    cur = acc.get(key)
    if cur is None:
        acc[key] = [g, False]
    elif cur[1]:
        cur[0] += g
    else:
        cur[0] = cur[0] + g
        cur[1] = True


def _add_graph(acc: dict, key, g) -> None:
    """Fan-out while recording a graph (``create_graph``): always out of place, a differentiable sum."""
    cur = acc.get(key)
    if cur is None:
        acc[key] = [g, False]
    else:
        cur[0] = cur[0] + g


# The backward runs in progress (innermost last). A node whose backward runs a nested backward
# (checkpoint's recompute) hands the leaf gradients it finds to the run that called it
# (``leaf_into=current_run()``), which then treats them as its own.
class _Run:
    __slots__ = ("acc", "external", "callbacks", "slots", "claimed")

    def __init__(self) -> None:
        self.acc: dict = {}  # id(leaf) -> (leaf, [grad, owned])
        self.external: list = []  # leaves a nested run handed to ``acc`` since the last look
        self.callbacks: list = []  # queue_callback(): run when this (outermost) run finishes
        self.slots = False  # gradient slots may be handed out (a plain backward into .grad)
        self.claimed: dict = {}  # id(leaf) -> the gradient slot handed out for it in this run


# ``_runs`` (imported from function.py, where Context.grad_slot reads the innermost run): the runs in
# progress, innermost last.

# Post-accumulate-grad hooks: id(leaf) -> (weakref to the leaf, [hook, ...]). A hook runs right after
# the leaf's ``.grad`` received its gradient of this backward; when any hook is registered, plain
# ``backward()`` accumulates a leaf as soon as its last graph edge has delivered (not at the end), so
# hooks (DistributedDataParallel's bucketed all-reduce) overlap with the rest of backward.
_post_hooks: dict = {}


def current_run() -> _Run | None:
    """The innermost backward run in progress (None outside backward)."""
    return _runs[-1] if _runs else None


def register_post_accumulate_grad_hook(leaf, hook: Callable) -> Callable[[], None]:
    """``hook(leaf)`` after each accumulation of a gradient into ``leaf.grad`` (see
    ``Tensor.register_post_accumulate_grad_hook``); returns a function that removes it."""
    key = id(leaf)
    entry = _post_hooks.get(key)
    if entry is None or entry[0]() is not leaf:
        entry = _post_hooks[key] = (weakref.ref(leaf, lambda _r, k=key, t=_post_hooks, d=_drop: d(t, k, _r)), [])
    entry[1].append(hook)

    def remove() -> None:
        e = _post_hooks.get(key)
        if e is not None and hook in e[1]:
            e[1].remove(hook)
            if not e[1]:
                del _post_hooks[key]
    return remove


def queue_callback(fn: Callable[[], None]) -> None:
    """Run ``fn()`` once the outermost backward in progress has finished (PyTorch's
    ``Variable._execution_engine.queue_callback``); an error outside backward."""
    if not _runs:
        raise named_error(GradError, "queue_callback: no backward in progress; call it from a hook "
                          "that runs during backward()")
    _runs[0].callbacks.append(fn)


def run_backward(roots: Sequence, root_grads: Sequence, retain_graph: bool = False,
                 inputs: Sequence | None = None, accumulate: bool = True,
                 leaf_into: _Run | None = None, consume: bool = False, create_graph: bool = False,
                 stop: frozenset = frozenset()) -> list | None:
    """Backpropagate ``root_grads`` from the tensors ``roots``.

    With ``accumulate`` the gradients go into leaf ``.grad``; with ``inputs`` given and
    ``accumulate=False`` they are returned (``gg.autograd.grad``) in the order of ``inputs``.
    With ``leaf_into`` (an enclosing run, see ``current_run``), gradients of leaves not in ``inputs``
    are added to its accumulator instead (hooks and ``.grad`` are left to that run).
    With ``consume`` the lists ``roots`` and ``root_grads`` (the caller's own) are emptied once read,
    so the root tensors and their gradients are freed as soon as the graph no longer needs them.
    With ``create_graph`` the gradients are Tensors and every backward formula records its own graph
    (``gpugrad/autograd/higher_order.py``), so they can be differentiated again; ``root_grads`` are then
    Tensors too. The walk does not run the nodes in ``stop`` nor go past them (their gradients can
    still be captured through ``inputs``)."""
    run = _Run()
    _runs.append(run)
    try:
        out = _run_backward(roots, root_grads, retain_graph, inputs, accumulate, run, leaf_into, consume,
                            create_graph, stop)
    finally:
        _runs.pop()
    for fn in run.callbacks:
        fn()
    return out


def _run_backward(roots, root_grads, retain_graph, inputs, accumulate, run, leaf_into, consume=False,
                  graph=False, stop=frozenset()):
    leaf_acc = run.acc
    add, add_leaf = (_add_graph, _add_leaf_graph) if graph else (_add, _add_leaf)
    claimed = run.claimed
    # gradient slots (the optimizer's flat buffer, written in place): plain backward into .grad only
    run.slots = accumulate and inputs is None and leaf_into is None and not graph and bool(_slots)

    capture: dict | None = None
    if inputs is not None:
        capture = {}
        for i, t in enumerate(inputs):
            key = (id(t._grad_fn), t._out_idx) if t._grad_fn is not None else (id(t), -1)
            capture.setdefault(key, []).append(i)
    results: list = [None] * (len(inputs) if inputs is not None else 0)

    buffers: dict = {}  # node -> {out_idx: [grad, owned]}
    root_nodes = []
    for t, g in zip(roots, root_grads):
        if t._grad_fn is None:
            if t.requires_grad:
                add_leaf(leaf_acc, t, g)
            continue
        node = t._grad_fn
        add(buffers.setdefault(node, {}), t._out_idx, g)
        root_nodes.append(node)
    handed: set = set() if graph else set(id(g) for g in root_grads)  # never store a caller's array as .grad
    if consume:
        t = g = None
        roots.clear()
        root_grads.clear()

    # Early leaf accumulation (post-accumulate hooks registered, plain backward): edges left per leaf.
    leaf_left = {} if (_post_hooks and accumulate and leaf_into is None and inputs is None) else None
    deps = _collect(root_nodes, leaf_left, stop) if root_nodes else {}
    # gg.autograd.grad: run only the nodes that lead to an input, each asked only for those inputs
    needed = _needed(root_nodes, deps, capture) if capture is not None and leaf_into is None and deps else None
    # Kahn's algorithm; ready nodes are kept in a max-heap on creation order, so the most recent
    # node runs first (what a reverse sweep of the forward does, freeing memory early).
    ready = []
    for n in set(root_nodes):
        if deps.get(n, 0) == 0:
            heapq.heappush(ready, (-n._seq, id(n), n))
    anomaly = STATE.anomaly
    push, pop = heapq.heappush, heapq.heappop
    prev_mode = STATE.grad_enabled
    STATE.grad_enabled = graph  # no_grad() without the context-manager frames (recording when graph)
    special = graph or needed is not None or bool(stop)  # else: the plain backward, as lean as it was
    try:
        nxt = None  # the one ready node when no other is (a chain of ops): it skips the heap
        while ready or nxt is not None:
            if nxt is not None:
                node, nxt = nxt, None
            else:
                node = pop(ready)[2]
            buf = buffers.pop(node, None) or {}
            if node._retained or node._hooks or capture:
                _visit_outputs(node, buf, capture, results, graph)
            fn = node._fn
            try:
                if special:  # create_graph, autograd.grad's pruning, a nested run's stop nodes
                    box, buf = [buf], None  # handed over: this run keeps no reference while the node works
                    grads_in = _special_backward(node, fn, box, graph, stop, needed)
                    if grads_in is None:  # not run: a stop node, or one that leads to no input
                        continue
                else:
                    meta = node._out_meta
                    if len(meta) == 1 and 0 in buf:
                        grads_in = fn.backward(node, buf[0][0]) if fn.backward_consuming is None else \
                            fn.backward_consuming(node, [buf.pop(0)[0]])
                    else:
                        grads_out = tuple(buf[i][0] if i in buf else node.backend.xp.zeros(shape, dtype)
                                          for i, (shape, dtype) in enumerate(meta))
                        if fn.backward_consuming is None:
                            grads_in = fn.backward(node, *grads_out)
                        else:  # hand the gradients over: this run keeps no reference while the node works
                            held, buf, grads_out = list(grads_out), None, None
                            grads_in = fn.backward_consuming(node, held)
            except Exception as e:
                if getattr(e, "_gg_named", False):
                    raise
                raise named_error(type(e) if _simple(type(e)) else RuntimeError,
                                  f"{fn.op_name()} backward: {e}") from e
            if not isinstance(grads_in, tuple):
                grads_in = (grads_in,)
            edges = node._edges
            if len(grads_in) < len(edges):
                raise named_error(GradError,
                    f"{fn.op_name()}: backward returned {len(grads_in)} gradients, expected {len(edges)} "
                    "(one per positional input of forward; use None for inputs without gradient)")
            if anomaly:
                _check_finite(node.backend, fn.op_name(), "backward gradient",
                              [getattr(g, "data", g) for g in grads_in] if graph else grads_in)
            if not retain_graph:
                node.release()
            for e, g in zip(edges, grads_in):
                if e is None:
                    continue
                target, idx = e
                if idx < 0:  # a leaf
                    if g is not None:
                        if g.shape != target.data.shape:
                            _check_shape(fn, target.data.shape, g)
                        cur = leaf_acc.get(id(target))
                        if cur is None:  # _add_leaf, inline for the common first gradient; a slot is owned
                            leaf_acc[id(target)] = (target, [g, g is claimed.get(id(target))])
                        else:
                            add_leaf(leaf_acc, target, g)
                    if leaf_left is not None:
                        k = id(target)
                        leaf_left[k] -= 1
                        if leaf_left[k] == 0 and k in leaf_acc and k in _post_hooks:
                            _accumulate_leaf(*leaf_acc.pop(k), None, results, True, handed, graph)
                    continue
                if g is not None:
                    if g.shape != target._out_meta[idx][0]:
                        _check_shape(fn, target._out_meta[idx][0], g)
                    tb = buffers.get(target)
                    if tb is None:
                        buffers[target] = {idx: [g, False]}
                    else:
                        add(tb, idx, g)
                d = deps[target] - 1
                deps[target] = d
                if d == 0:  # ready: run next if it is the only one, else by creation order (the heap)
                    if nxt is None and not ready:
                        nxt = target
                    else:
                        if nxt is not None:
                            push(ready, (-nxt._seq, id(nxt), nxt))
                            nxt = None
                        push(ready, (-target._seq, id(target), target))
            if leaf_left is not None and run.external:  # leaves a checkpoint recompute handed us
                for leaf in run.external:
                    k = id(leaf)
                    if not leaf_left.get(k) and k in leaf_acc and k in _post_hooks:
                        _accumulate_leaf(*leaf_acc.pop(k), None, results, True, handed, graph)
                run.external.clear()
            # hold no gradient past its use: the next node's backward may run for long (a checkpoint)
            grads_in = grads_out = buf = e = g = None

        for leaf, entry in leaf_acc.values():
            if leaf_into is not None:
                g = entry[0]
                idxs = capture.get((id(leaf), -1), ()) if capture is not None else ()
                for i in idxs:
                    results[i] = g
                if not idxs:
                    (_add_leaf_graph if graph else _add_leaf)(leaf_into.acc, leaf, g)
                    leaf_into.external.append(leaf)
                continue
            _accumulate_leaf(leaf, entry, capture, results, accumulate, handed, graph)
    finally:
        STATE.grad_enabled = prev_mode
    return results if inputs is not None else None


def _special_backward(node, fn, box: list, graph: bool, stop: frozenset, needed: dict | None):
    """A node's backward when the run records (``graph``), asks only for some inputs (``needed``,
    gg.autograd.grad) or stops at some nodes (``stop``): its gradients in (a tuple), or None for a
    node not to run. While recording, the formula gets Tensors, its saved values re-linked into the
    graph and the graph backend as ``ctx.backend`` (``gpugrad/autograd/higher_order.py``). ``box``
    holds the node's gradient buffer, emptied here (see ``backward_consuming``)."""
    buf = box.pop()
    if node in stop:
        return None
    mask = None
    if needed is not None:
        mask = needed.get(node)
        if mask is None:  # leads to no input: its own gradient was all that was wanted
            return None
    grads_out = tuple(buf[i][0] if i in buf else _zeros(node, shape, dtype, graph)
                      for i, (shape, dtype) in enumerate(node._out_meta))
    buf = None
    needs = node.needs_input_grad
    state = _higher.enter(node) if graph else None  # re-link first: nodes derived from this one
    if mask is not None:                              # take its recorded needs_input_grad, not the mask
        node.needs_input_grad = tuple(a and b for a, b in zip(needs, mask))
    try:
        if fn.backward_consuming is None:
            grads_in = fn.backward(node, *grads_out)
        else:
            held, grads_out = list(grads_out), None
            grads_in = fn.backward_consuming(node, held)
    finally:
        node.needs_input_grad = needs
        if state is not None:
            _higher.leave(node, state)
    if not isinstance(grads_in, tuple):
        grads_in = (grads_in,)
    if graph:
        grads_in = _as_tensors(node, grads_in)
    if mask is not None:  # nothing flows along edges that lead to no input
        grads_in = tuple(g if m else None for g, m in zip(grads_in, mask))
    return grads_in


def _zeros(node, shape: tuple, dtype, graph: bool):
    """The gradient of an output that received none (a node with several outputs)."""
    z = node.backend.xp.zeros(shape, dtype)
    return _make_result(z, node.out_device or node.backend.device, None, 0) if graph else z


def _as_tensors(node, grads: tuple) -> tuple:
    """A formula run while recording may return plain arrays (constants): make them Tensors."""
    if all(g is None or isinstance(g, TensorBase) for g in grads):
        return grads
    dev = node.backend.device
    return tuple(g if g is None or isinstance(g, TensorBase) else _make_result(g, dev, None, 0) for g in grads)


def _accumulate_leaf(leaf, entry: list, capture: dict | None, results: list, accumulate: bool,
                     handed: set, graph: bool = False) -> None:
    """A leaf's gradient of this run is complete: its hooks, ``inputs`` capture, ``.grad``, post hooks.
    With ``graph`` the gradient is a Tensor with its graph, and ``.grad`` accumulates out of place
    (``leaf.grad = leaf.grad + g``, as PyTorch does under ``create_graph``)."""
    g = entry[0]
    if leaf._hooks:
        for h in leaf._hooks:
            r = h(g if graph else _make_result(g, leaf._device, None, 0))
            if r is not None:
                g = r if graph else r.data
    if capture is not None:
        for i in capture.get((id(leaf), -1), ()):
            results[i] = g
    if accumulate:
        if graph:
            if g.dtype != leaf.data.dtype:
                g = g.to(leaf.data.dtype)
            _add_to_grad(leaf, g, True)
        else:
            if g.dtype != leaf.data.dtype:
                g = g.astype(leaf.data.dtype)
            if leaf.grad is None:
                if not (entry[1] or (leaf.data.__class__ is g.__class__ and g.base is None and id(g) not in handed)):
                    g = g.copy()
                handed.add(id(g))
                leaf.grad = _make_result(g, leaf._device, None, 0)
            else:
                leaf.grad.data += g
                leaf.grad._vc[0] += 1
        if _post_hooks:
            e = _post_hooks.get(id(leaf))
            if e is not None and e[0]() is leaf:
                for h in tuple(e[1]):
                    h(leaf)


def _visit_outputs(node, buf: dict, capture: dict | None, results: list, graph: bool = False) -> None:
    """A node's output gradients, before its backward runs: tensor hooks, retain_grad, ``inputs`` capture."""
    for idx, entry in buf.items():
        if node._hooks and idx in node._hooks:
            for h in node._hooks[idx]:
                r = h(entry[0] if graph else _make_result(entry[0], node.out_device or node.backend.device, None, 0))
                if r is not None:
                    entry[0], entry[1] = (r if graph else r.data), False
        if node._retained and idx in node._retained:
            t = node._retained[idx]()
            if t is not None:
                _add_to_grad(t, entry[0], graph)
        if capture:
            for i in capture.get((id(node), idx), ()):
                results[i] = entry[0]


def _add_leaf(leaf_acc: dict, leaf, g) -> None:
    key = id(leaf)
    cur = leaf_acc.get(key)
    if cur is None:
        leaf_acc[key] = (leaf, [g, False])
    else:
        entry = cur[1]
        if entry[1]:
            entry[0] += g
        else:
            entry[0] = entry[0] + g
            entry[1] = True


def _add_leaf_graph(leaf_acc: dict, leaf, g) -> None:
    cur = leaf_acc.get(id(leaf))
    if cur is None:
        leaf_acc[id(leaf)] = (leaf, [g, False])
    else:
        cur[1][0] = cur[1][0] + g


def _check_shape(fn, shape: tuple, g) -> None:
    if g.shape != shape:
        raise named_error(GradError,
            f"{fn.op_name()}: backward returned a gradient of shape {tuple(g.shape)} for an input of shape "
            f"{tuple(shape)}; sum broadcast dimensions back with ctx.backend.sum_to_shape(g, shape)")


def _simple(t: type) -> bool:
    return t in (ValueError, TypeError, IndexError, RuntimeError, FloatingPointError, ZeroDivisionError)


def backward(tensors, grad_tensors=None, retain_graph: bool | None = None, create_graph: bool = False,
             inputs: Sequence | None = None) -> None:
    """``gg.autograd.backward`` (PyTorch's arguments): the gradients of ``tensors`` (a Tensor or a
    sequence, weighted by ``grad_tensors``: None for scalars) accumulated into every leaf's ``.grad``
    (only into ``inputs``' when given). With ``create_graph`` the gradients carry their own graph
    (``retain_graph`` then defaults to True) and ``.grad`` accumulates out of place."""
    outs = [tensors] if isinstance(tensors, TensorBase) else list(tensors)
    if grad_tensors is None:
        gts = [None] * len(outs)
    else:
        gts = [grad_tensors] if isinstance(grad_tensors, TensorBase) or not isinstance(grad_tensors, (list, tuple)) \
            else list(grad_tensors)
    if len(gts) != len(outs):
        raise named_error(ValueError, f"backward: {len(outs)} tensor(s) but {len(gts)} grad_tensors; give one per "
                          "tensor (None for a scalar)")
    if retain_graph is None:
        retain_graph = create_graph
    for t in outs:
        _backward_checks(t)
    roots = list(outs)
    rgs = [_root_grad(t, g, "backward", create_graph) for t, g in zip(outs, gts)]
    if inputs is None:
        run_backward(roots, rgs, retain_graph=retain_graph, create_graph=create_graph)
        return
    inputs = [inputs] if isinstance(inputs, TensorBase) else list(inputs)
    grads = run_backward(roots, rgs, retain_graph=retain_graph, inputs=inputs, accumulate=False,
                         create_graph=create_graph)
    for t, gi in zip(inputs, grads):
        if gi is not None:
            _add_to_grad(t, gi, create_graph)


def _add_to_grad(t, g, graph: bool) -> None:
    """``t.grad += g`` (a copy of ``g`` first); while recording out of place, keeping ``g``'s graph (a
    differentiable copy first, as PyTorch's: ``g`` may be the caller's tensor, another leaf's gradient
    or a read-only broadcast view)."""
    if graph:
        t.grad = g.clone() if t.grad is None else t.grad + g
    elif t.grad is None:
        t.grad = _make_result(g.copy(), t._device, None, 0)
    else:
        t.grad.data += g


def _backward_checks(tensor) -> None:
    if not tensor.requires_grad:
        raise named_error(GradError,
            f"backward: tensor of shape {tuple(tensor.shape)} does not require grad and has no grad_fn. "
            "Create the inputs/parameters with requires_grad=True, and do not compute it under no_grad().")


def _root_grad(tensor, grad, where: str, graph: bool = False):
    """The gradient a backward starts from: an array, or with ``graph`` a Tensor (``grad`` itself when
    it is one, so a ``grad_outputs`` that requires grad stays in the recorded graph)."""
    be = tensor._device._be or tensor._backend()
    if grad is None:
        if tensor.data.size != 1:
            raise named_error(GradError,
                f"{where}: grad can be implicitly created only for scalar outputs, but the output has shape "
                f"{tuple(tensor.shape)}. Reduce it first (loss = y.sum() or y.mean()) or pass "
                "grad=<tensor of the same shape>.")
        g = be.xp.ones(tensor.data.shape, dtype=tensor.data.dtype)
        return _make_result(g, tensor._device, None, 0) if graph else g
    if isinstance(grad, TensorBase):
        if grad._device != tensor._device:
            raise named_error(RuntimeError,
                f"{where}: grad is on {grad._device} but the output is on {tensor._device}; move it first")
        g = grad.data
    else:
        g = be.asarray(grad, dtype=tensor.data.dtype)
    if tuple(g.shape) != tuple(tensor.shape):
        raise named_error(GradError,
            f"{where}: grad has shape {tuple(g.shape)} but the output has shape {tuple(tensor.shape)}")
    if graph:
        return grad if isinstance(grad, TensorBase) else _make_result(g, tensor._device, None, 0)
    return g


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool | None = None, materialize_grads: bool = False) -> tuple:
    """Gradients of ``outputs`` with respect to ``inputs``, returned (``.grad`` untouched), with
    PyTorch's semantics: ``grad_outputs`` weight the outputs (required for non-scalar outputs);
    with ``create_graph`` the gradients carry their own graph and can be differentiated again, to
    any order (``retain_graph`` then defaults to True); ``allow_unused`` gives None for an input the
    outputs do not depend on (``materialize_grads``: zeros instead, and implies ``allow_unused``)."""
    if allow_unused is None:
        allow_unused = materialize_grads
    if materialize_grads and not allow_unused:
        raise named_error(ValueError, "autograd.grad: materialize_grads=True needs allow_unused (None or True), "
                          "got allow_unused=False")
    if retain_graph is None:
        retain_graph = create_graph
    single_out = isinstance(outputs, TensorBase)
    outs = [outputs] if single_out else list(outputs)
    ins = [inputs] if isinstance(inputs, TensorBase) else list(inputs)
    if grad_outputs is None:
        gos = [None] * len(outs)
    else:
        gos = [grad_outputs] if isinstance(grad_outputs, TensorBase) or not isinstance(grad_outputs, (list, tuple)) else list(grad_outputs)
    if len(gos) != len(outs):
        raise named_error(ValueError, f"autograd.grad: {len(outs)} output(s) but {len(gos)} grad_outputs; give "
                          "one per output (None for a scalar output)")
    for t in ins:
        if not isinstance(t, TensorBase):
            raise named_error(TypeError, f"autograd.grad: inputs must be Tensors, got {type(t).__name__}")
        if not t.requires_grad:
            raise named_error(GradError, f"autograd.grad: input of shape {tuple(t.shape)} does not require grad")
    roots, rgs = [], []
    for o, go in zip(outs, gos):
        _backward_checks(o)
        roots.append(o)
        rgs.append(_root_grad(o, go, "autograd.grad", create_graph))
    res = run_backward(roots, rgs, retain_graph=bool(retain_graph), inputs=ins, accumulate=False,
                       create_graph=create_graph)
    out = []
    for t, g in zip(ins, res):
        if g is None:
            if not allow_unused:
                raise named_error(GradError,
                    f"autograd.grad: one of the inputs (shape {tuple(t.shape)}) was not used to compute the "
                    "outputs; pass allow_unused=True to get None for it")
            if materialize_grads:
                g = t._backend().xp.zeros(t.shape, t.dtype)
                out.append(_make_result(g, t._device, None, 0))
                continue
            out.append(None)
        elif create_graph:
            out.append(g)
        else:
            out.append(_make_result(g.copy() if g.base is not None else g, t._device, None, 0))
    return tuple(out)
