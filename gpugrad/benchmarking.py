"""The benchmark harness shared by ``gpugrad bench`` and the scripts in benchmarks/: timing, the MLP
training step of gpugrad and of PyTorch (same sizes, same weights, same data), GEMM FLOP counts, the
GEMM ceiling, machine facts and the JSON writer.

The GEMM ceiling is the best float32 TFLOP/s of an ``n x n @ n x n`` matmul on the device (best of a
few runs after a warm-up), through gpugrad's backend array library (NumPy's BLAS on the CPU, CuPy's
cuBLAS on CUDA) and, when PyTorch is installed, ``torch.matmul``: the faster of the two is the ceiling,
since no MLP step can beat its own GEMMs."""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from .io import atomic_write
from .training import training_step

OPTIMIZERS = ("sgd", "adam")


# =============================================================================================== timing
def _wall_times(fn: Callable[[], Any], repeats: int, warmup: int, setup: Callable[[], Any] | None,
                sync: Callable[[], Any] | None) -> list[float]:
    """Wall times of ``repeats`` timed runs of ``fn()`` after ``warmup`` untimed ones (see median_time)."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    sync()
    times = []
    for _ in range(repeats):
        if setup:
            setup()
            sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn: Callable[[], Any], repeats: int, warmup: int, setup: Callable[[], Any] | None = None,
                sync: Callable[[], Any] | None = None) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs.

    ``setup`` runs untimed before each call (e.g. to draw a fresh batch); ``sync`` waits for the
    device (e.g. ``backend.synchronize``) before the clock starts and before it stops."""
    return statistics.median(_wall_times(fn, repeats, warmup, setup, sync))


def best_fifth_thread_time(fn: Callable[[], Any], repeats: int, warmup: int = 5) -> float:
    """The best fifth (20th percentile) of ``repeats`` timings of ``fn()`` by the calling thread's CPU time,
    in seconds, after ``warmup`` untimed calls: a figure that other jobs on a shared machine disturb less."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        ts.append(time.thread_time() - t0)
    ts.sort()
    return ts[len(ts) // 5]


# =============================================================================================== FLOPs and the ceiling
def rel_error(a, b) -> float:
    """``|a - b| / |b|`` (Frobenius norms, float64): how far a result is from its reference."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def mlp_flops(sizes: Sequence[int], batch: int) -> float:
    """FLOPs of one training step's GEMMs for layer sizes ``sizes``: forward 2*B*in*out per layer,
    backward 4*B*in*out (dX and dW) except the first layer (no dX: the input needs no gradient)."""
    total = 0.0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        total += 2.0 * batch * a * b * (2 if i == 0 else 3)
    return total


def gemm_ceiling(device: str, n: int | None = None, repeats: int = 3) -> dict:
    """Best TFLOP/s of ``repeats`` float32 ``n x n`` matmuls through gpugrad's backend array library
    (default n: 2048 on the CPU, 8192 on CUDA)."""
    from .backends import get_backend
    be = get_backend(device)
    n = n or (2048 if device == "cpu" else 8192)
    rng = np.random.default_rng(0)
    a = be.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
    b = be.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
    best = min_time(lambda: a @ b, repeats, be.synchronize)
    return {"n": n, "dtype": "float32", "seconds": best, "tflops": 2.0 * n ** 3 / best / 1e12,
            "source": f"{'numpy' if device == 'cpu' else 'cupy'} matmul"}


def torch_gemm_tflops(torch, device: str, n: int, repeats: int = 3) -> float:
    """Best TFLOP/s of float32 ``n x n`` ``torch.matmul`` on ``device``."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    best = min_time(lambda: a @ b, repeats, torch_sync(torch, device))
    return 2.0 * n ** 3 / best / 1e12


def device_ceiling(device: str, n: int | None = None, torch=None) -> dict:
    """The GEMM ceiling of ``device``: gpugrad's backend matmul, and ``torch.matmul`` when ``torch`` is
    given; the faster one wins (``source`` says which)."""
    ceiling = gemm_ceiling(device, n=n)
    if torch is not None:
        ceiling["gpugrad_backend_tflops"] = ceiling["tflops"]
        ceiling["torch_tflops"] = torch_gemm_tflops(torch, device, ceiling["n"])
        if ceiling["torch_tflops"] > ceiling["tflops"]:
            ceiling["tflops"], ceiling["source"] = ceiling["torch_tflops"], "torch.matmul"
    return ceiling


def min_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], Any]) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs after one warm-up run, synchronised each run
    (``inf`` for no runs)."""
    return min(_wall_times(fn, repeats, 1, None, sync), default=math.inf)


def torch_sync(torch, device: str) -> Callable[[], Any]:
    """``torch.cuda.synchronize`` on a CUDA device, else a no-op."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


# =============================================================================================== the training step
def gpugrad_mlp_step(sizes: Sequence[int], device: str = "cpu", optimizer: str = "adam", lr: float = 1e-4):
    """``(model, step)``: a seeded ReLU ``gg.nn.MLP(sizes)`` and ``step(x, y) -> loss``: zero_grad,
    forward, cross-entropy, backward, ``optimizer`` step (``"adam"`` or ``"sgd"``)."""
    import gpugrad as gg
    gg.manual_seed(0)
    model = gg.nn.MLP(list(sizes), activation="relu", device=device)
    opt = _optimizer(gg.optim, optimizer, model.parameters(), lr)
    return model, training_step(model, opt, gg.nn.functional.cross_entropy)


def torch_mlp(torch, sizes: Sequence[int], like=None, device: str = "cpu"):
    """``torch.nn.Sequential`` of Linear+ReLU layers (no ReLU after the last) with the weights of the
    gpugrad model ``like`` when given, on ``device``."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    if like is not None:
        import gpugrad as gg
        linears = [m for m in like.modules() if isinstance(m, gg.nn.Linear)]
        with torch.no_grad():
            for tl, gl in zip([m for m in model if isinstance(m, torch.nn.Linear)], linears):
                tl.weight.copy_(torch.from_numpy(gl.weight.numpy()))
                tl.bias.copy_(torch.from_numpy(gl.bias.numpy()))
    return model.to(torch.device(device))


def torch_mlp_step(torch, sizes: Sequence[int], device: str = "cpu", optimizer: str = "adam", lr: float = 1e-4,
                   like=None):
    """``(model, step)`` of PyTorch matching :func:`gpugrad_mlp_step` (weights of ``like`` when given,
    else ``torch.manual_seed(0)``)."""
    torch.manual_seed(0)
    model = torch_mlp(torch, sizes, like, device)
    opt = _optimizer(torch.optim, optimizer, model.parameters(), lr)
    # training_step's opt.zero_grad(): PyTorch >= 2.0 sets the gradients to None by default
    return model, training_step(model, opt, torch.nn.functional.cross_entropy)


def _optimizer(optim, name: str, params, lr: float):
    if name == "adam":
        return optim.Adam(params, lr=lr)
    if name == "sgd":
        return optim.SGD(params, lr=lr)
    raise ValueError(f"benchmark optimizer must be one of {OPTIMIZERS}, got {name!r}")


def random_batch(rng: np.random.Generator, batch: int, n_in: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A float32 input batch and int64 class labels."""
    return rng.standard_normal((batch, n_in), dtype=np.float32), rng.integers(0, n_classes, batch)


# =============================================================================================== machine facts
# (module, distribution) of gpugrad and the packages it can use, in the order versions() and
# `gpugrad info` list them; cupy's distribution is one of several (cupy-cuda12x, ...).
PACKAGES: tuple[tuple[str, str | None], ...] = (
    ("gpugrad", "gpugrad"), ("numpy", "numpy"), ("numba", "numba"), ("cupy", None), ("torch", "torch"),
    ("mnist1d", "mnist1d"), ("safetensors", "safetensors"), ("mpi4py", "mpi4py"), ("nvmath", "nvmath-python"))


def versions() -> dict[str, str | None]:
    """Versions of Python, gpugrad and the packages it can use (None: not installed), keyed by module
    name (:data:`PACKAGES`)."""
    import importlib.metadata as md
    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod, dist in PACKAGES:
        ver = None
        if mod == "gpugrad":
            from . import __version__
            ver = __version__
        elif mod == "cupy":
            for dname in ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy"):
                try:
                    ver = md.version(dname) + f" ({dname})"
                    break
                except md.PackageNotFoundError:
                    continue
        else:
            try:
                ver = md.version(dist)
            except md.PackageNotFoundError:
                ver = None
        out[mod] = ver
    return out


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def device_name(device: str) -> str:
    """The GPU's name for ``"cuda"``; the CPU model and core count for ``"cpu"``."""
    if device == "cuda":
        try:
            from . import cuda
            return cuda.get_device_name()
        except Exception:  # no usable GPU
            return "cuda"
    return f"{cpu_name()} ({os.cpu_count()} logical cores)"


def machine_info() -> dict:
    """Date, command line, Python/NumPy/PyTorch versions, CPU and cores: recorded with every result."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically (:func:`gpugrad.io.atomic_write`), creating the
    folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    text = json.dumps(payload, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def usable_kernel_sets(requested: list[str]) -> tuple[list[str], dict]:
    """The requested CUDA kernel sets minus those that cannot run here (the Numba CUDA kernels where
    Numba cannot load them: timing them would time their CUDA C replacement under the wrong name), and
    ``{set: why}`` for the ones dropped (printed and written to the JSON)."""
    import gpugrad as gg
    keep, skipped = [], {}
    for k in requested:
        if k == "numba":
            ok, why = gg.cuda.numba_kernels_status()
            if not ok:
                skipped[k] = f"Numba CUDA kernels: unusable: {why}"
                print(f"skipping kernel set numba: {why}", flush=True)
                continue
        keep.append(k)
    return keep, skipped


# =============================================================================================== phase profile
# The phases of one CPU training step, in step order (the PhaseTimer's rows; "Python and the rest" is the
# step's wall time less the timed phases: Function.apply, the engine's walk, Tensor creation, modules).
STEP_PHASES = ("zero_grad", "forward GEMMs", "bias + activation (forward)", "loss (forward + backward)",
               "backward GEMMs", "bias/activation gradients", "gradient gather", "optimizer update",
               "Python and the rest")


class PhaseTimer:
    """Wall time of each phase of gpugrad's training steps on the CPU backend, per step.

    Within the ``with`` block, the methods that carry each phase (the CPU backend's GEMMs, fused passes
    and optimizer pass, ``CrossEntropy``'s forward and backward, the optimizer's gradient gather and
    ``zero_grad``) are wrapped with a clock; outside it nothing is wrapped, so the instrument costs
    nothing when unused. Nested phases count once (the outermost). Call :meth:`step` around each step;
    :meth:`per_step` gives milliseconds per phase (medians over the steps) and the minor page faults
    (fresh memory the allocator had to map) per step::

        with PhaseTimer() as pt:
            for _ in range(10):
                with pt.step():
                    train_step(x, y)
        print(pt.per_step())
    """

    def __init__(self) -> None:
        self._saved: list = []
        self._depth = 0
        self._acc: dict[str, float] = {}
        self.steps: list[dict] = []

    def _targets(self) -> list:
        from .backends.cpu import CPUBackend
        from .ops.loss import CrossEntropy
        from .optim.flat import Bucket
        from .optim.optimizer import Optimizer
        return [(CPUBackend, "linear_forward", "forward GEMMs", False),
                (CPUBackend, "bias_act", "bias + activation (forward)", False),
                (CPUBackend, "linear_backward", "backward GEMMs", False),
                (CPUBackend, "act_bias_backward", "bias/activation gradients", False),
                (CPUBackend, "optim_step", "optimizer update", False),
                (CrossEntropy, "forward", "loss (forward + backward)", True),
                (CrossEntropy, "backward", "loss (forward + backward)", True),
                (Bucket, "gather_grads", "gradient gather", False),
                (Optimizer, "zero_grad", "zero_grad", False)]

    def _wrap(self, fn: Callable, phase: str) -> Callable:
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth = 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._acc[phase] = self._acc.get(phase, 0.0) + time.perf_counter() - t0
                self._depth = 0
        return timed

    def __enter__(self) -> "PhaseTimer":
        for owner, name, phase, static in self._targets():
            raw = owner.__dict__.get(name)
            if raw is None:  # inherited: wrap what the class resolves to, restore by deleting
                fn = getattr(owner, name)
            else:
                fn = raw.__func__ if isinstance(raw, staticmethod) else raw
            wrapped = self._wrap(fn, phase)
            self._saved.append((owner, name, raw))
            setattr(owner, name, staticmethod(wrapped) if static else wrapped)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, raw in reversed(self._saved):
            if raw is None:
                delattr(owner, name)
            else:
                setattr(owner, name, raw)
        self._saved.clear()

    def step(self):
        """Context manager around one training step: records its wall time and phases."""
        import contextlib
        import resource

        @contextlib.contextmanager
        def _step():
            self._acc = {}
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            yield
            wall = time.perf_counter() - t0
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            rec = {p: self._acc.get(p, 0.0) for p in STEP_PHASES[:-1]}
            rec[STEP_PHASES[-1]] = wall - sum(rec.values())
            rec["step"] = wall
            rec["page_faults"] = faults
            self.steps.append(rec)
        return _step()

    def per_step(self) -> dict:
        """``{phase: ms}`` (median over the recorded steps) plus ``step`` (ms) and ``page_faults``."""
        out = {}
        for k in STEP_PHASES + ("step",):
            out[k] = statistics.median(s[k] for s in self.steps) * 1e3
        out["page_faults"] = statistics.median(s["page_faults"] for s in self.steps)
        return out
