"""Reverse-mode engine: iterative topological walk, fan-out accumulation, leaf accumulation."""
from __future__ import annotations

import heapq
import weakref
from typing import Any, Callable, Sequence

from .function import GradError, TensorBase, _check_finite, _drop, _make_result, _runs, _slots, named_error
from .grad_mode import STATE


def _collect(roots: list, leaf_edges: dict | None = None) -> dict:
    """Count, for every node reachable from ``roots``, how many graph edges point at it; with
    ``leaf_edges``, also count there the edges that point at each leaf (by ``id(leaf)``)."""
    deps: dict = dict.fromkeys(roots, 0)
    stack = list(deps)
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
                stack.append(child)
            else:
                deps[child] = n + 1
    return deps


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
                 leaf_into: _Run | None = None, consume: bool = False) -> list | None:
    """Backpropagate ``root_grads`` from the tensors ``roots``.

    With ``accumulate`` the gradients go into leaf ``.grad``; with ``inputs`` given and
    ``accumulate=False`` they are returned (``gg.autograd.grad``) in the order of ``inputs``.
    With ``leaf_into`` (an enclosing run, see ``current_run``), gradients of leaves not in ``inputs``
    are added to its accumulator instead (hooks and ``.grad`` are left to that run).
    With ``consume`` the lists ``roots`` and ``root_grads`` (the caller's own) are emptied once read,
    so the root tensors and their gradients are freed as soon as the graph no longer needs them."""
    run = _Run()
    _runs.append(run)
    try:
        out = _run_backward(roots, root_grads, retain_graph, inputs, accumulate, run, leaf_into, consume)
    finally:
        _runs.pop()
    for fn in run.callbacks:
        fn()
    return out


def _run_backward(roots, root_grads, retain_graph, inputs, accumulate, run, leaf_into, consume=False):
    leaf_acc = run.acc
    claimed = run.claimed
    run.slots = accumulate and inputs is None and leaf_into is None and bool(_slots)

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
                _add_leaf(leaf_acc, t, g)
            continue
        node = t._grad_fn
        _add(buffers.setdefault(node, {}), t._out_idx, g)
        root_nodes.append(node)
    handed: set = set(id(g) for g in root_grads)  # never store a caller's array as .grad
    if consume:
        t = g = None
        roots.clear()
        root_grads.clear()

    # Early leaf accumulation (post-accumulate hooks registered, plain backward): edges left per leaf.
    leaf_left = {} if (_post_hooks and accumulate and leaf_into is None and inputs is None) else None
    deps = _collect(root_nodes, leaf_left) if root_nodes else {}
    # Kahn's algorithm; ready nodes are kept in a max-heap on creation order, so the most recent
    # node runs first (what a reverse sweep of the forward does, freeing memory early).
    ready = []
    for n in set(root_nodes):
        if deps.get(n, 0) == 0:
            heapq.heappush(ready, (-n._seq, id(n), n))
    anomaly = STATE.anomaly
    push, pop = heapq.heappush, heapq.heappop
    prev_mode = STATE.grad_enabled
    STATE.grad_enabled = False  # no_grad() without the context-manager frames
    try:
        while ready:
            node = pop(ready)[2]
            buf = buffers.pop(node, None) or {}
            if node._retained or node._hooks or capture:
                _visit_outputs(node, buf, capture, results)
            meta = node._out_meta
            fn = node._fn
            single = len(meta) == 1 and 0 in buf
            if single:
                grads_out = (buf[0][0],)
            else:
                grads_out = tuple(buf[i][0] if i in buf else node.backend.xp.zeros(shape, dtype)
                                  for i, (shape, dtype) in enumerate(meta))
            try:
                if fn.backward_consuming is None:
                    grads_in = fn.backward(node, buf[0][0]) if single else fn.backward(node, *grads_out)
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
                _check_finite(node.backend, fn.op_name(), "backward gradient", grads_in)
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
                            _add_leaf(leaf_acc, target, g)
                    if leaf_left is not None:
                        k = id(target)
                        leaf_left[k] -= 1
                        if leaf_left[k] == 0 and k in leaf_acc and k in _post_hooks:
                            _accumulate_leaf(*leaf_acc.pop(k), None, results, True, handed)
                    continue
                if g is not None:
                    if g.shape != target._out_meta[idx][0]:
                        _check_shape(fn, target._out_meta[idx][0], g)
                    tb = buffers.get(target)
                    if tb is None:
                        buffers[target] = {idx: [g, False]}
                    else:
                        _add(tb, idx, g)
                d = deps[target] - 1
                deps[target] = d
                if d == 0:
                    push(ready, (-target._seq, id(target), target))
            if leaf_left is not None and run.external:  # leaves a checkpoint recompute handed us
                for leaf in run.external:
                    k = id(leaf)
                    if not leaf_left.get(k) and k in leaf_acc and k in _post_hooks:
                        _accumulate_leaf(*leaf_acc.pop(k), None, results, True, handed)
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
                    _add_leaf(leaf_into.acc, leaf, g)
                    leaf_into.external.append(leaf)
                continue
            _accumulate_leaf(leaf, entry, capture, results, accumulate, handed)
    finally:
        STATE.grad_enabled = prev_mode
    return results if inputs is not None else None


def _accumulate_leaf(leaf, entry: list, capture: dict | None, results: list, accumulate: bool,
                     handed: set) -> None:
    """A leaf's gradient of this run is complete: its hooks, ``inputs`` capture, ``.grad``, post hooks."""
    g = entry[0]
    if leaf._hooks:
        for h in leaf._hooks:
            r = h(_make_result(g, leaf._device, None, 0))
            if r is not None:
                g = r.data
    if capture is not None:
        for i in capture.get((id(leaf), -1), ()):
            results[i] = g
    if accumulate:
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


def _visit_outputs(node, buf: dict, capture: dict | None, results: list) -> None:
    for idx, entry in buf.items():
        if node._hooks and idx in node._hooks:
            for h in node._hooks[idx]:
                r = h(_make_result(entry[0], None, None, 0))
                if r is not None:
                    entry[0], entry[1] = r.data, False
        if node._retained and idx in node._retained:
            t = node._retained[idx]()
            if t is not None:
                g = entry[0]
                if t.grad is None:
                    t.grad = _make_result(g.copy(), t._device, None, 0)
                else:
                    t.grad.data += g
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


def _check_shape(fn, shape: tuple, g) -> None:
    if g.shape != shape:
        raise named_error(GradError,
            f"{fn.op_name()}: backward returned a gradient of shape {tuple(g.shape)} for an input of shape "
            f"{tuple(shape)}; sum broadcast dimensions back with ctx.backend.sum_to_shape(g, shape)")


def _simple(t: type) -> bool:
    return t in (ValueError, TypeError, IndexError, RuntimeError, FloatingPointError, ZeroDivisionError)


def backward(tensor, grad=None, retain_graph: bool = False, inputs: Sequence | None = None) -> None:
    """``tensor.backward()``: gradients of ``tensor`` into every leaf's ``.grad``."""
    _backward_checks(tensor)
    g = _root_grad(tensor, grad, "backward")
    if inputs is not None:
        grads = run_backward([tensor], [g], retain_graph=retain_graph, inputs=list(inputs), accumulate=False)
        for t, gi in zip(inputs, grads):
            if gi is None:
                continue
            if t.grad is None:
                t.grad = _make_result(gi.copy(), t._device, None, 0)
            else:
                t.grad.data += gi
        return
    run_backward([tensor], [g], retain_graph=retain_graph)


def _backward_checks(tensor) -> None:
    if not tensor.requires_grad:
        raise named_error(GradError,
            f"backward: tensor of shape {tuple(tensor.shape)} does not require grad and has no grad_fn. "
            "Create the inputs/parameters with requires_grad=True, and do not compute it under no_grad().")


def _root_grad(tensor, grad, where: str):
    be = tensor._device._be or tensor._backend()
    if grad is None:
        if tensor.data.size != 1:
            raise named_error(GradError,
                f"{where}: grad can be implicitly created only for scalar outputs, but the output has shape "
                f"{tuple(tensor.shape)}. Reduce it first (loss = y.sum() or y.mean()) or pass "
                "grad=<tensor of the same shape>.")
        return be.xp.ones(tensor.data.shape, dtype=tensor.data.dtype)
    g = grad.data if isinstance(grad, TensorBase) else be.asarray(grad, dtype=tensor.data.dtype)
    if tuple(g.shape) != tuple(tensor.shape):
        raise named_error(GradError,
            f"{where}: grad has shape {tuple(g.shape)} but the output has shape {tuple(tensor.shape)}")
    return g


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool = False) -> tuple:
    """Gradients of ``outputs`` with respect to ``inputs``, returned (``.grad`` untouched)."""
    if create_graph:
        raise NotImplementedError("gg.autograd.grad: create_graph=True (higher-order gradients) is not "
                                  "supported: backward formulas run on raw arrays")
    single_out = isinstance(outputs, TensorBase)
    outs = [outputs] if single_out else list(outputs)
    ins = [inputs] if isinstance(inputs, TensorBase) else list(inputs)
    if grad_outputs is None:
        gos = [None] * len(outs)
    else:
        gos = [grad_outputs] if isinstance(grad_outputs, TensorBase) or not isinstance(grad_outputs, (list, tuple)) else list(grad_outputs)
    for t in ins:
        if not t.requires_grad:
            raise named_error(GradError, f"autograd.grad: input of shape {tuple(t.shape)} does not require grad")
    roots, rgs = [], []
    for o, go in zip(outs, gos):
        _backward_checks(o)
        roots.append(o)
        rgs.append(_root_grad(o, go, "autograd.grad"))
    res = run_backward(roots, rgs, retain_graph=bool(retain_graph), inputs=ins, accumulate=False)
    out = []
    for t, g in zip(ins, res):
        if g is None and not allow_unused:
            raise named_error(GradError,
                f"autograd.grad: one of the inputs (shape {tuple(t.shape)}) was not used to compute the "
                "outputs; pass allow_unused=True to get None for it")
        out.append(None if g is None else _make_result(g.copy() if g.base is not None else g, t._device, None, 0))
    return tuple(out)
