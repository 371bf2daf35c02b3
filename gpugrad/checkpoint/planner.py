"""Checkpointing a chain: ``checkpoint_sequential``, its schedules (:class:`Segment`) and the planner
that chooses one for a memory budget.

``checkpoint_sequential(functions, segments, input)`` splits a chain into segments (an int,
``"sqrt"`` or a :class:`CheckpointPlan`) and checkpoints all but the last (with
:func:`gpugrad.checkpoint.mechanism.checkpoint`). ``plan(...)`` chooses a schedule for a memory
budget: the fewest recomputations whose predicted peak of saved activation bytes fits, over nested
(multi-level, Griewank-style binomial) schedules; ``predict_peak`` is its memory model and
``plan_for`` measures a real model's layers first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .. import backends as _backends
from ..autograd import saved as _saved
from ..autograd.function import named_error
from ..autograd.grad_mode import STATE, enable_grad
from ..backends import get_backend
from ..memory import format_bytes
from ..tensor import Tensor
from .mechanism import checkpoint

__all__ = ["checkpoint_sequential", "plan", "plan_for", "CheckpointPlan", "Segment", "predict_peak",
           "recompute_count", "even_segments", "sqrt_segments", "layer_bytes"]


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
        fb = format_bytes
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
