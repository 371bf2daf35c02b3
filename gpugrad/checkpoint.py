"""Gradient checkpointing: keep a block's inputs, recompute its activations during backward.

``checkpoint(fn, *args)`` runs ``fn`` under ``no_grad`` (nothing inside is saved) and records one
graph node that keeps only ``fn``'s tensor inputs. Its backward restores the random state, runs
``fn`` again with grad enabled on detached copies of the inputs, and backpropagates through that
recomputed graph: gradients for the inputs go back to the enclosing backward, gradients for the
parameters used inside ``fn`` are handed to the enclosing backward too (so ``.grad``, hooks,
``inputs=`` and ``gg.autograd.grad`` behave exactly as without checkpointing). Trade: one extra
forward of the block, for the memory of its activations (Chen et al. 2016).

``checkpoint_sequential(functions, segments, input)`` splits a chain into segments (an int,
``"sqrt"`` or a :class:`CheckpointPlan`) and checkpoints all but the last. ``plan(...)`` chooses a
schedule for a memory budget: the fewest recomputations whose predicted peak of saved activation
bytes fits, over nested (multi-level, Griewank-style binomial) schedules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ._device import CPU
from .autograd import engine as _engine
from .autograd import function as _function
from .autograd import saved as _saved
from .autograd.function import Context, Function, GradError, named_error
from .autograd.grad_mode import STATE, enable_grad, no_grad
from . import backends as _backends
from .backends import get_backend
from .tensor import Tensor, _make_result

__all__ = ["checkpoint", "checkpoint_sequential", "plan", "plan_for", "CheckpointPlan", "Segment",
           "predict_peak", "recompute_count", "even_segments", "sqrt_segments", "layer_bytes"]


# ====================================================================== checkpoint
class CheckpointFunction(Function):
    """The graph node of one ``checkpoint`` call (built by :func:`checkpoint`, not by ``apply``)."""

    name = "checkpoint"

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
        inputs = []
        for arr, (rg, dev, vc) in zip(saved, st.in_meta):
            t = _make_result(arr, dev, None, 0, vc)
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
        res = _engine.run_backward(roots, root_grads, retain_graph=False, inputs=want, accumulate=False,
                                   leaf_into=_outer_run(), consume=True)
        it = iter(res)
        return tuple(next(it) if t._requires_grad else None for t in inputs)


def _outer_run() -> _engine._Run:
    run = _engine.current_run()
    if run is None:  # pragma: no cover - the engine always runs us inside a backward
        raise named_error(GradError, "checkpoint: backward called outside of a backward pass")
    return run


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

    probe: dict = {}
    _function._probes.append(probe)
    try:
        with no_grad():
            out = fn(*args, **kwargs)
    finally:
        _function._probes.pop()

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

    dev = outs[0]._device
    ctx = Context(get_backend(dev), tuple(t._requires_grad for t in inputs))
    ctx._fn = CheckpointFunction
    ctx._seq = _function._next_seq()
    ctx._edges = tuple(((t._grad_fn, t._out_idx) if t._grad_fn is not None else (t, -1)) if t._requires_grad
                       else None for t in inputs)
    wrapped = tuple(_make_result(o.data, o._device, ctx if o.data.dtype.kind == "f" else None, i, o._vc)
                    for i, o in enumerate(outs))
    ctx._out_meta = tuple((o.data.shape, o.data.dtype) for o in outs)
    ctx.save_for_backward(*(t.data for t in inputs))
    ctx._finalize(inputs, wrapped)
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


# ====================================================================== sequential
@dataclass(frozen=True)
class Segment:
    """Layers ``[start, end)`` of a chain. ``checkpoint``: run under :func:`checkpoint` (keep only the
    input); ``children``: how the recompute of a checkpointed segment is itself split (nested
    checkpointing, absolute layer indices), or None to recompute it plainly."""

    start: int
    end: int
    checkpoint: bool = False
    children: "tuple[Segment, ...] | None" = None

    def __len__(self) -> int:
        return self.end - self.start

    def describe(self) -> str:
        if not self.checkpoint:
            return f"[{self.start}:{self.end}]"
        inner = "" if self.children is None else " " + " ".join(c.describe() for c in self.children)
        return f"ckpt[{self.start}:{self.end}{inner}]"


def _as_list(functions: Any) -> list:
    if isinstance(functions, (list, tuple)):
        fns = list(functions)
    elif hasattr(functions, "__iter__"):
        fns = list(functions)
    elif hasattr(functions, "_modules"):
        fns = list(functions._modules.values())
    else:
        raise named_error(TypeError,
            f"checkpoint_sequential: functions must be a Sequential or a list of modules/callables, got "
            f"{type(functions).__name__}")
    for i, f in enumerate(fns):
        if not callable(f):
            raise named_error(TypeError, f"checkpoint_sequential: functions[{i}] ({type(f).__name__}) is not callable")
    return fns


def even_segments(n: int, segments: int) -> list:
    """Split ``n`` layers into ``segments`` contiguous pieces whose sizes differ by at most one, the
    larger ones first (the last segment runs while the most boundaries are held)."""
    s = max(1, min(int(segments), n))
    q, r = divmod(n, s)
    out, a = [], 0
    for j in range(s):
        b = a + q + (1 if j < r else 0)
        out.append(Segment(a, b, checkpoint=j < s - 1))
        a = b
    return out


def sqrt_segments(n: int) -> int:
    """The number of segments near ``sqrt(n)`` whose even split has the smallest peak of held
    activations, ``max_j (j boundaries + size of segment j)`` ~ 2 sqrt(n) layers (ties: fewer
    segments, less recompute)."""
    if n <= 1:
        return 1
    best, best_s = None, 1
    r = int(round(math.sqrt(n)))
    for s in range(max(1, r - 2), min(n, r + 2) + 1):
        sizes = [len(seg) for seg in even_segments(n, s)]
        cost = max(j + k for j, k in enumerate(sizes))
        if best is None or cost < best:
            best, best_s = cost, s
    return best_s


def _run_segments(fns: list, segs: Sequence[Segment], x: Any, preserve: bool) -> Any:
    for seg in segs:
        if seg.checkpoint and STATE.grad_enabled:
            x = checkpoint(_run_inner, fns, seg, x, preserve, preserve_rng_state=preserve)
        else:
            for f in fns[seg.start:seg.end]:
                x = f(x)
    return x


def _run_inner(fns: list, seg: Segment, x: Any, preserve: bool) -> Any:
    if seg.children is None:
        for f in fns[seg.start:seg.end]:
            x = f(x)
        return x
    return _run_segments(fns, seg.children, x, preserve)


def checkpoint_sequential(functions: Any, segments: "int | str | CheckpointPlan", input: Any,  # noqa: A002
                          preserve_rng_state: bool = True) -> Any:
    """Run a chain ``functions`` (a Sequential or list of modules/callables) on ``input``, keeping
    only segment boundaries: ``segments`` is an int, ``"sqrt"`` (about sqrt(n) segments, the
    O(sqrt(n)) memory schedule) or a :class:`CheckpointPlan` from :func:`plan`. All segments but the
    last are checkpointed; the last runs normally (its activations are needed right away)."""
    fns = _as_list(functions)
    n = len(fns)
    if n == 0:
        return input
    if isinstance(segments, CheckpointPlan):
        if segments.n_layers != n:
            raise named_error(ValueError,
                f"checkpoint_sequential: the plan is for {segments.n_layers} layers but the chain has {n}. "
                f"Make the plan with plan(n_layers={n}, ...)")
        segs = segments.segments
    elif isinstance(segments, str):
        if segments.lower() != "sqrt":
            raise named_error(ValueError,
                f"checkpoint_sequential: segments must be an int >= 1, 'sqrt' or a CheckpointPlan, got {segments!r}")
        segs = even_segments(n, sqrt_segments(n))
    elif isinstance(segments, int) and not isinstance(segments, bool):
        if segments < 1:
            raise named_error(ValueError, f"checkpoint_sequential: segments must be >= 1, got {segments}")
        segs = even_segments(n, segments)
    else:
        raise named_error(TypeError,
            f"checkpoint_sequential: segments must be an int, 'sqrt' or a CheckpointPlan, got {type(segments).__name__}")
    if not STATE.grad_enabled:
        for f in fns:
            input = f(input)
        return input
    return _run_segments(fns, segs, input, preserve_rng_state)


# ====================================================================== memory model and planner
def _per_layer(n: int, v: "int | Sequence[int]", what: str) -> list:
    if isinstance(v, (int, float)):
        vals = [int(v)] * n
    else:
        vals = [int(b) for b in v]
        if len(vals) != n:
            raise named_error(ValueError, f"plan: {what} has {len(vals)} entries for {n} layers")
    if any(b < 0 for b in vals):
        raise named_error(ValueError, f"plan: {what} must be >= 0, got {vals}")
    return vals


def predict_peak(segments: Sequence[Segment], bytes_per_layer: "int | Sequence[int]", n_layers: int | None = None,
                 input_bytes: int = 0, internal_bytes: "int | Sequence[int]" = 0,
                 saves_output: "bool | Sequence[bool]" = True) -> int:
    """Peak saved-activation bytes of a schedule, by simulating forward and backward.

    Model: running layer ``i`` with grad saves its input (the previous layer's output, of
    ``bytes_per_layer[i - 1]`` bytes), its own output (``bytes_per_layer[i]``) when
    ``saves_output[i]`` (a fused linear+ReLU does; a block ending in dropout does not) and
    ``internal_bytes[i]`` more (pre-dropout activations, masks); a checkpointed
    segment keeps its input until its backward, then recomputes its layers (per ``children``).
    Arrays shared by several holders count once (as ``gg.autograd.saved_bytes`` does); the chain's
    input counts ``input_bytes`` (0 for a leaf such as a data batch)."""
    n = n_layers if n_layers is not None else max(s.end for s in segments)
    out_b = _per_layer(n, bytes_per_layer, "bytes_per_layer")
    int_b = _per_layer(n, internal_bytes, "internal_bytes")
    so = [bool(saves_output)] * n if isinstance(saves_output, bool) else [bool(v) for v in saves_output]
    live: dict = {}
    cur = [0, 0]
    gen = [0]

    def hold(key, nb):
        e = live.get(key)
        if e is None:
            live[key] = [1, nb]
            cur[0] += nb
            cur[1] = max(cur[1], cur[0])
        else:
            e[0] += 1

    def drop(key):
        e = live[key]
        e[0] -= 1
        if e[0] == 0:
            del live[key]
            cur[0] -= e[1]

    def new_key(i):
        gen[0] += 1
        return (i, gen[0])

    def forward(segs, k_in, in_b, tape):
        for seg in segs:
            if seg.checkpoint:
                hold(k_in, in_b)
                tape.append(("ckpt", seg, k_in, in_b))
                k_in, in_b = new_key(seg.end - 1), out_b[seg.end - 1]
            else:
                for i in range(seg.start, seg.end):
                    k_out, k_int = new_key(i), new_key(-1)
                    hold(k_in, in_b)
                    if so[i]:
                        hold(k_out, out_b[i])
                    if int_b[i]:
                        hold(k_int, int_b[i])
                    tape.append(("layer", k_in, k_out if so[i] else None, k_int if int_b[i] else None))
                    k_in, in_b = k_out, out_b[i]
        return tape

    def backward(tape):
        while tape:
            rec = tape.pop()
            if rec[0] == "layer":
                for k in rec[1:]:
                    if k is not None:
                        drop(k)
            else:
                _, seg, k_in, in_b = rec
                inner = seg.children if seg.children is not None else [Segment(seg.start, seg.end)]
                backward(forward(inner, k_in, in_b, []))
                drop(k_in)

    backward(forward(list(segments), ("input",), int(input_bytes), []))
    return cur[1]


def recompute_count(segments: Sequence[Segment]) -> int:
    """Extra layer evaluations a schedule costs (each checkpointed layer is run again, nested ones
    once more per level)."""
    total = 0
    for s in segments:
        if s.checkpoint:
            total += len(s) + (recompute_count(s.children) if s.children is not None else 0)
    return total


@dataclass(repr=False)
class CheckpointPlan:
    """A checkpointing schedule for a chain of ``n_layers`` layers (pass it to
    ``checkpoint_sequential`` or ``nn.MLP(..., checkpoint=plan)``). ``predicted_peak_bytes`` is the
    model's peak of saved activation bytes; :meth:`measure` fills ``measured_peak_bytes``."""

    n_layers: int
    segments: tuple
    budget_bytes: int | None
    predicted_peak_bytes: int
    plain_peak_bytes: int
    recompute_layers: int
    bytes_per_layer: tuple = ()
    input_bytes: int = 0
    extra_bytes: int = 0
    strategy: str = "optimal"
    measured_peak_bytes: int | None = field(default=None)

    @property
    def recompute_fraction(self) -> float:
        """Extra forward work relative to one plain forward."""
        return self.recompute_layers / max(1, self.n_layers)

    @property
    def depth(self) -> int:
        """Nesting depth (0: no checkpointing, 1: one level of segments, ...)."""
        def d(segs):
            return max((1 + (d(s.children) if s.children else 0) for s in segs if s.checkpoint), default=0)
        return d(self.segments)

    def describe_segments(self) -> str:
        """The schedule in one line: ``ckpt[0:6 ckpt[0:3] [3:6]] [6:10]`` (nested brackets)."""
        return " ".join(s.describe() for s in self.segments)

    def measure(self, functions: Any, input: Any, loss_fn: Callable | None = None) -> int:  # noqa: A002
        """Run one forward+backward of ``functions`` (a chain, or an ``nn.MLP`` run whole with this
        plan) on ``input`` and record the measured peak of saved activation bytes above what was
        saved before (``loss_fn(out)``, default ``out.sum()``)."""
        base = _saved.saved_bytes()
        prev_peak = _saved.peak_saved_bytes()
        _saved.reset_peak_saved_bytes()
        model = functions if hasattr(functions, "blocks") and hasattr(functions, "checkpoint") else None
        try:
            if model is not None:  # an nn.MLP: run the whole model with this plan
                old, model.checkpoint = model.checkpoint, self
                try:
                    out = model(input)
                finally:
                    model.checkpoint = old
            else:
                out = checkpoint_sequential(functions, self, input)
            loss = loss_fn(out) if loss_fn is not None else out.sum()
            loss.backward()
            peak = _saved.peak_saved_bytes() - base
        finally:
            _saved._stats[1] = max(prev_peak, _saved.peak_saved_bytes())
        self.measured_peak_bytes = int(peak)
        return self.measured_peak_bytes

    def __str__(self) -> str:
        from .memory import format_bytes as fb
        segs = self.describe_segments()
        lines = [f"CheckpointPlan({self.strategy}): {self.n_layers} layers, nesting depth {self.depth}",
                 f"  segments: {segs}",
                 f"  recompute: {self.recompute_layers} extra layer forwards ({self.recompute_fraction:.2f}x a forward)",
                 f"  predicted peak saved: {fb(self.predicted_peak_bytes)} (no checkpointing: "
                 f"{fb(self.plain_peak_bytes)}" + (f", budget {fb(self.budget_bytes)})" if self.budget_bytes is not None else ")")]
        if self.measured_peak_bytes is not None:
            lines.append(f"  measured peak saved: {fb(self.measured_peak_bytes)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"CheckpointPlan(n_layers={self.n_layers}, segments='{self.describe_segments()}', "
                f"predicted_peak_bytes={self.predicted_peak_bytes}, recompute_layers={self.recompute_layers})")


_INF = float("inf")


def _dp_tables(n: int, m_max: int, wl: int = 1, wb: int = 1):
    """``C[k][m]``: fewest extra layer evaluations to run forward+backward over ``k`` layers whose
    input is held, with at most ``m`` memory units saved at once, where a layer run with grad costs
    ``wl`` units and a checkpoint boundary ``wb``; ``K[k][m]``: the length of the first
    checkpointed segment (0: run plainly). The recursion (Griewank's, for nested checkpointing):
    checkpoint the first ``j`` layers, run the rest holding their boundary, then recompute the
    first ``j`` with the whole budget: ``C[k][m] = min_j j + C[j][m] + C[k-j][m-wb]``."""
    import numpy as np
    C = np.full((n + 1, m_max + 1), _INF)
    K = np.zeros((n + 1, m_max + 1), dtype=np.int64)
    C[0, :] = 0.0
    js = np.arange(1, n + 1, dtype=np.float64)
    for m in range(1, m_max + 1):
        col = C[:, m]
        fits = np.arange(n + 1) * wl <= m
        col[fits] = 0.0
        rest = m - wb
        if rest < wl:
            continue
        prev = C[:, rest]
        for k in range(1, n + 1):
            if fits[k]:
                continue
            # first segment j = 1..k-1: j + C[j][m] + C[k-j][m-wb]
            cand = js[:k - 1] + col[1:k] + prev[k - 1:0:-1]
            i = int(np.argmin(cand))
            if cand[i] < _INF:
                col[k], K[k, m] = cand[i], i + 1
    return C, K


def _dp_segments(K, k0: int, k: int, m: int, wl: int = 1, wb: int = 1) -> list:
    """Rebuild the schedule for layers ``[k0, k0 + k)`` with ``m`` units."""
    segs = []
    while k > 0:
        j = int(K[k, m]) if k * wl > m else 0
        if j == 0:
            segs.append(Segment(k0, k0 + k))
            break
        inner = _dp_segments(K, k0, j, m, wl, wb)
        children = tuple(inner) if any(s.checkpoint for s in inner) else None
        segs.append(Segment(k0, k0 + j, checkpoint=True, children=children))
        k0, k, m = k0 + j, k - j, m - wb
    return segs


def plan(n_layers: int, bytes_per_layer: "int | Sequence[int]", budget_bytes: int, *,
         input_bytes: int = 0, internal_bytes: "int | Sequence[int]" = 0,
         saves_output: "bool | Sequence[bool]" = True, extra_bytes: int = 0,
         strategy: str = "optimal") -> CheckpointPlan:
    """Choose which layers to checkpoint so the peak of saved activation bytes fits ``budget_bytes``.

    ``bytes_per_layer``: bytes of each layer's output (``batch * width * itemsize`` for a fused
    linear+activation layer; an int for all or one per layer); ``internal_bytes``/``saves_output``
    refine the model (see :func:`predict_peak`; :func:`plan_for` measures them on a real model).
    ``extra_bytes``: saved by what comes after the chain (the loss), counted against the budget.
    Strategies:
    ``"optimal"`` (default): the fewest recomputed layers over nested schedules (each checkpointed
    segment may itself be split, Griewank's binomial/revolve recursion), O(log n) memory when
    the budget demands it; ``"uniform"``: one level of evenly spaced segments, the fewest that fit
    (``"sqrt"`` segments at the smallest). Raises ``ValueError`` naming the smallest reachable peak
    when nothing fits."""
    if not isinstance(n_layers, int) or n_layers < 1:
        raise named_error(ValueError, f"plan: n_layers must be an int >= 1, got {n_layers!r}")
    out_b = _per_layer(n_layers, bytes_per_layer, "bytes_per_layer")
    int_b = _per_layer(n_layers, internal_bytes, "internal_bytes")
    if strategy not in ("optimal", "uniform"):
        raise named_error(ValueError, f"plan: strategy must be 'optimal' or 'uniform', got {strategy!r}")
    budget = int(budget_bytes)

    so = [bool(saves_output)] * n_layers if isinstance(saves_output, bool) else [bool(v) for v in saves_output]
    if len(so) != n_layers:
        raise named_error(ValueError, f"plan: saves_output has {len(so)} entries for {n_layers} layers")

    def peak(segs):
        return predict_peak(segs, out_b, n_layers, input_bytes, int_b, so) + int(extra_bytes)

    def make(segs, strat):
        return CheckpointPlan(n_layers, tuple(segs), budget, peak(segs), plain, recompute_count(segs),
                              tuple(out_b), int(input_bytes), int(extra_bytes), strat)

    plain_segs = [Segment(0, n_layers)]
    plain = peak(plain_segs)
    if plain <= budget:
        return make(plain_segs, strategy)

    # memory units: a boundary costs wb, a layer run with grad wl (quarter-boundary resolution); the
    # DP's schedule for each level m is simulated exactly (predict_peak) against the budget
    b_unit = max(1, max(out_b))
    layer_cost = max(o + i for o, i in zip(out_b, int_b))
    wb, wl = 4, max(1, -(-4 * layer_cost // b_unit))
    m_hi = max(wl + wb, min(n_layers * wl, 4 * max(0, budget - int(extra_bytes)) // b_unit + wl + wb))
    if strategy == "optimal" and n_layers * n_layers * m_hi <= 3e7:
        C, K = _dp_tables(n_layers, m_hi, wl, wb)
        # C[n][m] never grows with m: scanning down, the first schedule that fits is the cheapest
        smallest = None
        for m in range(m_hi, wl + wb - 1, -1):
            if C[n_layers, m] == _INF:
                continue
            segs = _dp_segments(K, 0, n_layers, m, wl, wb)
            p = peak(segs)
            if p <= budget:
                return make(segs, "optimal")
            if smallest is None or p < smallest:
                smallest = p
        raise named_error(ValueError,
            f"plan: no checkpointing schedule of {n_layers} layers fits a budget of {budget} bytes of saved "
            f"activations; the smallest predicted peak is {smallest} bytes. Raise the budget, lower the "
            "batch size, or make the layers narrower.")
    smallest = None
    for s in range(2, n_layers + 1):
        segs = even_segments(n_layers, s)
        p = peak(segs)
        if p <= budget:
            return make(segs, "uniform")
        if smallest is None or p < smallest[0]:
            smallest = (p, s)
    raise named_error(ValueError,
        f"plan: no one-level schedule of {n_layers} layers fits a budget of {budget} bytes of saved activations; "
        f"the smallest predicted peak is {smallest[0]} bytes ({smallest[1]} segments). Raise the budget"
        + (", or use strategy='optimal' (nested checkpointing reaches less memory)." if strategy == "uniform" else
           f" (with {n_layers} layers the nested search is too large and only one level was tried)."))


def layer_bytes(functions: Any, example_input: Tensor) -> tuple:
    """Measure, layer by layer, what each layer of a chain saves for backward on ``example_input``:
    ``(output_bytes, internal_bytes, saves_output)`` lists (internal: saved beyond its input and
    output, e.g. pre-dropout activations and masks; saves_output: whether it keeps its own output).
    Runs the chain once with grad (random state restored afterwards)."""
    fns = _as_list(functions.blocks if hasattr(functions, "blocks") else functions)
    states = {d: get_backend(d).get_rng_state() for d in list(_backends._instances)}
    outs, internal, keeps = [], [], []
    x = example_input
    try:
        for f in fns:
            xi = x.detach()
            if xi.data.dtype.kind == "f":
                xi._requires_grad = True
            base = _saved.saved_bytes()
            with enable_grad():
                y = f(xi)
            if not isinstance(y, Tensor):
                raise named_error(TypeError, f"plan_for: layer {type(f).__name__} returned {type(y).__name__}, not a Tensor")
            delta = int(_saved.saved_bytes() - base)
            own = id(y.data) in _saved._live
            outs.append(int(y.data.nbytes))
            keeps.append(own)
            internal.append(max(0, delta - (int(y.data.nbytes) if own else 0)))
            x = y.detach()
            del y
    finally:
        for d, s in states.items():
            get_backend(d).set_rng_state(s)
    return outs, internal, keeps


def plan_for(model_or_functions: Any, example_input: Tensor, budget_bytes: int, *, extra_bytes: int = 0,
             strategy: str = "optimal") -> CheckpointPlan:
    """:func:`plan` for a real chain (an ``nn.MLP``, whose ``blocks`` are planned, a Sequential or a
    list of modules): measures each layer's saved bytes on ``example_input`` (a batch of the size
    you will train with), then plans for ``budget_bytes``. Use as ``nn.MLP(..., checkpoint=plan)``
    or ``checkpoint_sequential(blocks, plan, x)``."""
    outs, internal, keeps = layer_bytes(model_or_functions, example_input)
    return plan(len(outs), outs, budget_bytes, internal_bytes=internal, saves_output=keeps, extra_bytes=extra_bytes,
                input_bytes=0 if example_input._grad_fn is None else int(example_input.data.nbytes),
                strategy=strategy)
