"""Whole-step CUDA graphs: ``gg.cuda.graphed_step(fn)``.

A fixed-shape training step (forward, backward, optimizer step) launches hundreds of small kernels,
each costing a few microseconds of Python and driver time; at small batch sizes that overhead is the
step time. ``graphed_step`` records the step once into a CUDA graph and then replays the whole graph
with one launch::

    def step(x, y):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        return loss

    step = gg.cuda.graphed_step(step, optimizers=[opt])
    for x, y in batches:              # every batch the same shape (drop_last=True)
        loss = step(x, y)             # copies x, y into static buffers, replays, returns static loss

How: the first ``warmup`` calls (default 2) run ``fn`` eagerly - real training steps, one per call -
on a private side stream with a private CuPy memory pool, so optimizer state exists and the pool
holds every block the step needs. The next call captures ``fn`` on that stream
(``stream.begin_capture()``/``end_capture()``), then every call copies the batch into the static
input/target buffers ``fn`` was captured with, replays the graph (``graph.launch(stream)``) and
returns the static loss tensor (overwritten by the next call: read it, or ``.clone()`` it, first).
Each call is exactly one training step, so the run equals eager training step for step.

GEMMs: CuPy's cuBLAS wrapper refuses to run during capture, so inside ``graphed_step`` (warm-up and
capture alike) the linear layers' GEMMs go through gpugrad's own cuBLAS handle with a fixed workspace
(``backends/cuda/cublas.py``: nvmath-python's low-level bindings, or ctypes). Other cuBLAS users inside the step
(a bare ``a @ b`` on tensors) still go through CuPy and fail to capture, with the error below.
Losses: MSE and cross-entropy/NLL read nothing on the host (the ``mean`` row count stays on the device;
out-of-range targets fold into the backend's device-side error record). Every replay notes the captured
step's checks again, so the next synchronisation (``loss.item()``, ``gg.cuda.synchronize()``) reads the
record and raises for bad targets of any replayed step, as eagerly.

What a graph freezes (values computed on the host are baked into the captured kernels):
- random numbers: the counter-based generator's offset advances on the host, so every replay would
  reuse the same dropout mask. ``graphed_step`` REFUSES steps that draw random numbers (dropout,
  ``gg.rand``...): it compares the generator state before and after and raises a clear error.
- host-side hyper-parameters: the learning rate (schedulers), and Adam's step count (bias
  correction). Pass ``optimizers=[...]``: SGD (momentum, Nesterov, weight decay) is graph-safe;
  other optimizers are accepted only when every param group has ``capturable=True`` (step count on
  the device), else refused with a clear error; a learning-rate change after capture raises.
- host synchronisation is illegal during capture: ``.item()``, printing a tensor, ``bool(t)``, a
  GradScaler step, anything that reads device values on the host. Such a step fails to capture with
  an error naming the likely causes.

The CUDA side (stream, memory pool, capture and launch) is ``backends/cuda/graphs.py``; this module
is the step logic above it."""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterable

from ._errors import named_error
from .autograd.grad_mode import STATE
from .backends import get_backend
from .backends.cuda import cublas
from .backends.cuda.graphs import CupyGraphRuntime, EmulatedGraphRuntime
from .tensor import Tensor, _make_result

__all__ = ["graphed_step", "GraphedStep"]

_GRAPH_SAFE_OPTIMIZERS = ("SGD",)


def _describe(t: Any) -> str:
    if isinstance(t, Tensor):
        return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"
    return type(t).__name__


class GraphedStep:
    """A training step replayed as one CUDA graph. Call it as ``step(x, y)``; see :func:`graphed_step`."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], warmup: int = 2,
                 optimizers: Iterable[Any] | None = None, _runtime: str | None = None) -> None:
        if not callable(fn):
            raise named_error(TypeError, f"graphed_step: fn must be callable, got {type(fn).__name__}")
        if int(warmup) < 1:
            raise named_error(ValueError, f"graphed_step: warmup must be >= 1 (optimizer state and the memory pool "
                              f"are created by eager warm-up steps), got {warmup}")
        self.fn = fn
        self.warmup = int(warmup)
        self.optimizers = list(optimizers or [])
        for opt in self.optimizers:
            self._check_optimizer(opt)
        self._runtime_kind = _runtime
        self._rt: Any = None
        self._calls = 0
        self._spec: tuple | None = None
        self._xs: Tensor | None = None
        self._ys: Tensor | None = None
        self._graph: Any = None
        self._loss: Tensor | None = None
        self._hyper: list | None = None
        self._checks: list = []

    # -------------------------------------------------------------- checks
    @staticmethod
    def _check_optimizer(opt: Any) -> None:
        name = type(opt).__name__
        safe = getattr(opt, "graph_safe", None)  # gg.optim's own answer, where it gives one
        if isinstance(safe, bool):
            if safe:
                return
        else:
            if name in _GRAPH_SAFE_OPTIMIZERS:
                return
            groups = getattr(opt, "param_groups", [])
            if groups and all(g.get("capturable", False) for g in groups):
                return  # its step count lives on the device (bias correction computed there)
        try:
            has_option = "capturable" in inspect.signature(type(opt).__init__).parameters
        except (TypeError, ValueError):
            has_option = False
        fix = (f"construct it with {name}(..., capturable=True), which keeps the step count on the device"
               if has_option else "use gg.optim.SGD inside graphed_step, or run this optimizer eagerly")
        raise named_error(ValueError,
            f"graphed_step: {name} is not graph-safe here: its update uses a per-step counter computed on the "
            "host (Adam's bias correction 1 - beta**step), which a CUDA graph would freeze at its value during "
            f"capture. Fix: {fix}.")

    def _hyperparams(self) -> list:
        out = []
        for i, opt in enumerate(self.optimizers):
            for j, g in enumerate(opt.param_groups):
                out.append((i, j, tuple((k, v) for k, v in sorted(g.items()) if k != "params"
                                        and isinstance(v, (int, float, bool, tuple)))))
        return out

    def _check_inputs(self, x: Any, y: Any) -> None:
        for name, t in (("x", x), ("y", y)):
            if not isinstance(t, Tensor):
                raise named_error(TypeError, f"graphed_step: {name} must be a Tensor, got {_describe(t)}")
            if t.device.type != "cuda" and self._runtime_kind != "emulate":
                raise named_error(RuntimeError,
                    f"graphed_step: CUDA graphs capture GPU work, but {name} is on {t.device} ({_describe(t)}). "
                    f"Fix: move the model and the batches to the GPU (.to('cuda')), or call the step function "
                    "directly (without graphed_step) on CPU.")
        spec = (tuple(x.shape), x.dtype, x.device, tuple(y.shape), y.dtype, y.device)
        if self._spec is None:
            return
        if spec != self._spec:
            xs, xd, xdev, ys, yd, ydev = self._spec
            raise named_error(ValueError,
                f"graphed_step: the graph was captured for x of shape {xs} ({xd}, {xdev}) and y of shape {ys} "
                f"({yd}, {ydev}); got x {_describe(x)} and y {_describe(y)}. A CUDA graph replays fixed shapes. "
                "Fix: give every batch the same shape (e.g. drop the last partial batch: drop_last=True), or make "
                "another graphed_step for the other shape.")

    def _rng_states(self, devs) -> list:
        return [get_backend(d).get_rng_state() for d in devs]

    # -------------------------------------------------------------- call
    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """One training step on ``(x, y)``; returns the loss (the static loss tensor once captured)."""
        self._check_inputs(x, y)
        if getattr(STATE, "anomaly", False):
            raise named_error(RuntimeError, "graphed_step: anomaly detection (gg.autograd.detect_anomaly) reads "
                              "every output on the host, which a CUDA graph cannot do; turn it off for graphed steps")
        if self._rt is None:
            self._rt = EmulatedGraphRuntime() if self._runtime_kind == "emulate" else CupyGraphRuntime()
            self._spec = (tuple(x.shape), x.dtype, x.device, tuple(y.shape), y.dtype, y.device)
        rt = self._rt
        if self._graph is not None and self.optimizers:
            now = self._hyperparams()
            if now != self._hyper:
                raise named_error(RuntimeError,
                    f"graphed_step: optimizer hyper-parameters changed after capture ({self._hyper} -> {now}); the "
                    "captured kernels still use the old values. Fix: keep them constant, or build a new "
                    "graphed_step after the change (learning-rate schedules: one graphed_step per phase).")
        rt.sync_in()
        with rt.context():  # the side stream and the private memory pool
            if self._xs is None:
                xp = x._backend().xp
                self._xs = _make_result(xp.empty_like(x.data), x.device, None, 0)
                self._ys = _make_result(xp.empty_like(y.data), y.device, None, 0)
            self._xs.data[...] = x.data
            self._ys.data[...] = y.data
            devs = {x.device, y.device}
            if self._calls < self.warmup:
                before = self._rng_states(devs)
                with self._gemms():  # the same GEMM calls as the capture, checked eagerly first
                    loss = self.fn(self._xs, self._ys)
                self._check_loss(loss)
                self._check_rng(before, devs, "a warm-up step")
            else:
                if self._graph is None:
                    self._capture(devs)
                    if not rt.emulated:  # a real capture records the step without running it
                        self._launch()
                else:
                    self._launch()
                loss = self._loss
        rt.sync_out()
        self._calls += 1
        return loss  # type: ignore[return-value]

    def _check_loss(self, loss: Any) -> None:
        if not isinstance(loss, Tensor) or loss.data.size != 1:
            raise named_error(TypeError, f"graphed_step: fn must return the loss as a one-element Tensor, got "
                              f"{_describe(loss)}")

    def _check_rng(self, before: list, devs, when: str) -> None:
        if self._rng_states(devs) != before:
            raise named_error(RuntimeError,
                f"graphed_step: the step drew random numbers in {when} (dropout, gg.rand/randn...). The generator's "
                "offset advances on the host, so inside a replayed CUDA graph every step would reuse the same "
                "random numbers (the same dropout mask). graphed_step refuses such steps. Fix: set dropout to 0 "
                "(or model.eval() for the dropout layers) in graphed steps, or train this model without "
                "graphed_step.")

    def _capture(self, devs) -> None:
        rt = self._rt
        rt.prepare_capture()
        before = self._rng_states(devs)
        rt.begin_capture()
        try:
            with self._gemms():
                loss = self.fn(self._xs, self._ys)
        except Exception as e:
            rt.abort_capture()
            raise named_error(RuntimeError,
                f"graphed_step: capturing the step failed ({type(e).__name__}: {e}). During capture nothing may "
                "read GPU values on the host: no .item()/print/bool() of a tensor, no GradScaler, no boolean-mask "
                "indexing or nonzero/unique (their result size is read on the host), no anomaly detection; nothing "
                "may copy host data to the device (gg.tensor(numpy) or indexing with a list inside the step: make "
                "such tensors before it); and nothing may synchronise the device.") from e
        graph = rt.end_capture()
        self._check_loss(loss)
        self._check_rng(before, devs, "the captured step")
        self._graph = graph
        self._loss = loss.detach()
        self._hyper = self._hyperparams()
        # the device-side checks the step ran (cross-entropy's target range): the Python that notes them
        # runs only now, so every replay notes them again for the next synchronisation to read
        self._checks = [(be, dict(be.pending_checks())) for be in map(get_backend, devs)
                        if hasattr(be, "pending_checks")]

    def _launch(self) -> None:
        """Replay the graph once; its device-side checks are then pending again."""
        self._rt.launch(self._graph, self._replay)
        for be, checks in self._checks:
            be.note_checks(checks)

    def _gemms(self):
        """The real runtime routes the linear layers' GEMMs through the capturable handle."""
        return cublas.forced() if self._rt.forces_gemms else contextlib.nullcontext()

    def _replay(self) -> None:
        """Emulated replay: run the step again and write its loss into the static loss array."""
        loss = self.fn(self._xs, self._ys)
        self._loss.data[...] = loss.data  # type: ignore[union-attr]

    @property
    def captured(self) -> bool:
        """True once the graph has been captured."""
        return self._graph is not None

    @property
    def static_inputs(self) -> tuple:
        """The static ``(x, y)`` buffers the graph reads (the step function sees these)."""
        return self._xs, self._ys


def graphed_step(fn: Callable[[Tensor, Tensor], Tensor], warmup: int = 2,
                 optimizers: Iterable[Any] | None = None) -> GraphedStep:
    """Capture ``fn(x, y) -> loss`` (forward, backward and optimizer step of a fixed-shape training
    step) into one CUDA graph and replay it every call. See the module docstring for what is frozen;
    pass the step's ``optimizers`` so that graph-unsafe ones and hyper-parameter changes are caught."""
    return GraphedStep(fn, warmup=warmup, optimizers=optimizers)
