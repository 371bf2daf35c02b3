"""Where the time of one CPU training step goes, phase by phase, gpugrad beside PyTorch.

    python3 benchmarks/profile_cpu.py [--steps 15] [--cases abd] [--out benchmarks/results/profile_cpu.json]

The step and the cases are those of ``benchmarks/mlp_cpu.py`` (zero_grad, forward, cross-entropy,
backward, SGD step; float32 ReLU MLPs), each framework in its own fresh process with default settings.

gpugrad: ``gpugrad.benchmarking.PhaseTimer`` clocks the methods that carry each phase (the CPU
backend's GEMMs, fused passes, loss and optimizer pass, the optimizer's gradient gather and
zero_grad); "Python and the rest" is the step's wall time less those phases (``Function.apply``, the
engine's walk, Tensor creation, modules, the optimizer's bookkeeping).

PyTorch: ``torch.profiler`` (CPU activity) over the same steps. Each op's self time goes to a phase by
its name and where it runs: ``aten::addmm`` (GEMM + bias) in forward, ``aten::mm`` under an autograd
``...Backward`` node, ``relu``, ``threshold_backward`` and the bias ``sum``, the loss ops, everything
under ``Optimizer.step``/``Optimizer.zero_grad``, allocation ops (``empty``, ``zeros``, ...), and other
ops (views, transposes, gradient accumulation); "Python and the rest" is the profiled step's wall time
less the ops' self times (the Python calls, the dispatcher and the autograd engine). The profiler slows
the step down, so PyTorch's phases are its shares of the profiled step times the unprofiled step's
median (the JSON keeps the slowdown).

``--threads N`` runs both with N BLAS/OpenMP threads instead of their defaults (1: a breakdown that a
machine loaded by other jobs disturbs less: no thread waits for a descheduled partner).

Each figure is the median over ``--steps`` steps (after 3 warm-ups); the phases of one framework need
not add up exactly to its step's median.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from mlp_cpu import CASES, default_env  # noqa: E402

PHASES = ("zero_grad", "forward GEMMs", "bias + activation (forward)", "loss (forward + backward)",
          "backward GEMMs", "bias/activation gradients", "gradient gather", "optimizer update",
          "allocation", "other ops", "Python and the rest")
WARMUP = 3


def _batches(case: str, n: int):
    import numpy as np
    from gpugrad import benchmarking as bm
    _, batch, sizes = CASES[case]
    rng = np.random.default_rng(0)
    return [bm.random_batch(rng, batch, sizes[0], sizes[-1]) for _ in range(n)]


def profile_gpugrad(case: str, steps: int) -> dict:
    import gpugrad as gg
    from gpugrad import benchmarking as bm
    _, batch, sizes = CASES[case]
    _, step = bm.gpugrad_mlp_step(sizes, "cpu", optimizer="sgd", lr=0.01)
    data = [(gg.tensor(x), gg.tensor(y)) for x, y in _batches(case, WARMUP + steps)]
    for x, y in data[:WARMUP]:
        step(x, y)
    with bm.PhaseTimer() as pt:
        for x, y in data[WARMUP:]:
            with pt.step():
                step(x, y)
    out = pt.per_step()
    return {"phases_ms": {p: out.get(p, 0.0) for p in PHASES}, "step_ms": out["step"],
            "page_faults_per_step": out["page_faults"]}


def _torch_phase(ev, names: list[str]) -> str | None:
    """The phase of one profiler event from its name and its ancestors' names (None: not an op)."""
    name = ev.name
    if any(n.startswith("Optimizer.zero_grad") for n in names):
        return "zero_grad"
    if any(n.startswith("Optimizer.step") for n in names):
        return "optimizer update"
    if not name.startswith("aten::"):
        return None
    op = name[6:]
    backward = any("Backward" in n for n in names)
    if op in ("addmm", "mm", "bmm", "matmul", "linear"):
        return "backward GEMMs" if backward else "forward GEMMs"
    if op in ("relu", "relu_", "clamp_min", "clamp_min_"):
        return "bias + activation (forward)"
    if op in ("threshold_backward",) or (op == "sum" and backward):
        return "bias/activation gradients"
    if op in ("log_softmax", "_log_softmax", "nll_loss", "nll_loss_nd", "nll_loss_forward", "cross_entropy_loss",
              "_log_softmax_backward_data", "nll_loss_backward") or any("LogSoftmax" in n or "NllLoss" in n for n in names):
        return "loss (forward + backward)"
    if op in ("empty", "empty_strided", "empty_like", "zeros", "zeros_like", "zero_", "fill_", "resize_", "ones_like"):
        return "allocation"
    return "other ops"


def profile_torch(case: str, steps: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from gpugrad import benchmarking as bm
    _, batch, sizes = CASES[case]
    _, step = bm.torch_mlp_step(torch, sizes, "cpu", optimizer="sgd", lr=0.01)
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in _batches(case, WARMUP + steps)]
    for x, y in data[:WARMUP]:
        step(x, y)
    walls = []
    for x, y in data[WARMUP:]:  # unprofiled: the step's real wall time
        t0 = time.perf_counter()
        step(x, y)
        walls.append(time.perf_counter() - t0)
    per_step: list[dict] = []
    for x, y in data[WARMUP:]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            step(x, y)
            profiled = (time.perf_counter() - t0) * 1e3
        acc = dict.fromkeys(PHASES, 0.0)
        for ev in prof.events():
            names, p = [], ev.cpu_parent
            while p is not None:
                names.append(p.name)
                p = p.cpu_parent
            phase = _torch_phase(ev, names)
            if phase is not None:
                acc[phase] += ev.self_cpu_time_total / 1e3  # us -> ms
        acc["Python and the rest"] = max(0.0, profiled - sum(acc.values()))
        acc["profiled step"] = profiled
        per_step.append(acc)
    wall = statistics.median(walls) * 1e3
    # the profiler slows every op down: its phase shares are applied to the unprofiled step's time
    scale = wall / statistics.median(s["profiled step"] for s in per_step)
    phases = {p: statistics.median(s[p] for s in per_step) * scale for p in PHASES}
    return {"phases_ms": phases, "step_ms": wall, "profiler_slowdown": 1 / scale}


GEMM_SHAPES = ((1024, 128, 128), (256, 1024, 1024), (32, 256, 256))  # (batch, in, out) of (b), (a), (d)


def gemms(framework: str) -> dict:
    """Each layer GEMM alone (forward ``x @ w.T``, ``dz @ w``, ``dz.T @ x``): us, the best fifth of 300
    runs after 20, with this process's threads."""
    import numpy as np
    rng = np.random.default_rng(0)
    out = {}
    for b, i, o in GEMM_SHAPES:
        x, w, dz = (rng.standard_normal(s, dtype=np.float32) for s in ((b, i), (o, i), (b, o)))
        if framework == "torch":
            import torch
            x, w, dz = map(torch.from_numpy, (x, w, dz))
        else:
            import gpugrad as gg
            gg.zeros(1)  # the CPU backend's allocator settings, as in a step
        row = []
        for f in (lambda: x @ w.T, lambda: dz @ w, lambda: dz.T @ x):
            for _ in range(20):
                f()
            ts = []
            for _ in range(300):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            row.append(sorted(ts)[len(ts) // 5] * 1e6)
        out[f"{b}x{i}x{o}"] = row
    return out


def per_op(steps: int = 40) -> dict:
    """Case (c)'s scalar graph on the main thread's CPU clock: us per op with Python's garbage collector
    on and off (alternating, 3 times), and the recording / backward split with it on."""
    import gc
    import gpugrad as gg
    x = gg.tensor(0.5, requires_grad=True)
    w = gg.tensor(0.999, requires_grad=True)

    def run():
        y = x
        t0 = time.thread_time()
        for _ in range(500):
            y = y * w + 0.001
        t1 = time.thread_time()
        y.backward()
        t2 = time.thread_time()
        x.grad = w.grad = None
        return t1 - t0, t2 - t1
    res: dict = {"gc on": [], "gc off": []}
    split = []
    for mode in ("gc on", "gc off") * 3:
        (gc.disable if mode == "gc off" else gc.enable)()
        for _ in range(3):
            run()
        ts = [run() for _ in range(steps)]
        res[mode].append(statistics.median(a + b for a, b in ts) / 1000 * 1e6)
        if mode == "gc on":
            split += ts
    gc.enable()
    return {"us_per_op": {k: statistics.median(v) for k, v in res.items()},
            "record_us_per_op": statistics.median(a for a, _ in split) / 1000 * 1e6,
            "backward_us_per_op": statistics.median(b for _, b in split) / 1000 * 1e6}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--cases", default="abd")
    ap.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads of both (default: their own)")
    ap.add_argument("--extras", action="store_true", help="also time the layers' GEMMs alone (NumPy and "
                    "PyTorch, 1 and 2 threads) and case (c) per op with the garbage collector on and off")
    ap.add_argument("--worker", choices=["gpugrad", "torch", "gemms-gpugrad", "gemms-torch", "per-op"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "profile_cpu.json"))
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker.startswith("gemms-"):
            print(json.dumps(gemms(args.worker[6:])))
        elif args.worker == "per-op":
            print(json.dumps(per_op()))
        else:
            fn = profile_gpugrad if args.worker == "gpugrad" else profile_torch
            print(json.dumps(fn(args.cases, args.steps)))
        return {}
    from gpugrad import benchmarking as bm
    env, dropped = default_env()
    if args.threads:
        env.update({k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    load_before = os.getloadavg()
    cases = {}
    for key in args.cases:
        res = {}
        for fw in ("gpugrad", "torch"):
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", fw, "--cases", key,
                                  "--steps", str(args.steps)], check=True, capture_output=True, text=True, env=env).stdout
            res[fw] = json.loads(out.strip().splitlines()[-1])
        cases[key] = {"label": CASES[key][0], **res}
    payload = {"machine": bm.machine_info(), "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
               "steps": args.steps, "threads": args.threads or "default", "variables_not_passed": dropped,
               "cases": cases}
    print(markdown(payload))
    if args.extras:
        payload["extras"] = extras(env)
    bm.write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


def _run(worker: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", worker], check=True,
                         capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def extras(env: dict) -> dict:
    """The layers' GEMMs alone on 1 and 2 threads (us: forward, dX, dW) and the per-op split."""
    out: dict = {"gemms_us": {}}
    for n in (1, 2):
        e = dict(env, **{k: str(n) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        for fw in ("gpugrad", "torch"):
            out["gemms_us"][f"{fw} {n} thread(s)"] = r = _run(f"gemms-{fw}", e)
            for shape, (f, dx, dw) in r.items():
                print(f"GEMMs {shape}, {fw} ({'NumPy' if fw == 'gpugrad' else 'PyTorch'}), {n} thread(s): "
                      f"x @ w.T {f:.1f} us, dz @ w {dx:.1f} us, dz.T @ x {dw:.1f} us")
    out["per_op"] = p = _run("per-op", env)
    print(f"case (c) per op, CPU time: gc on {p['us_per_op']['gc on']:.2f} us, gc off {p['us_per_op']['gc off']:.2f} us; "
          f"recording {p['record_us_per_op']:.2f} us, backward {p['backward_us_per_op']:.2f} us")
    return out


def markdown(payload: dict) -> str:
    """The profile as a Markdown table: one row per phase, gpugrad | PyTorch ms per case."""
    cases = payload["cases"]
    head = "| phase | " + " | ".join(f"({k}) gpugrad | ({k}) PyTorch" for k in cases) + " |"
    sep = "|---|" + "---:|---:|" * len(cases)
    rows = [head, sep]
    for p in PHASES:
        cells = []
        for c in cases.values():
            for fw in ("gpugrad", "torch"):
                v = c[fw]["phases_ms"].get(p)
                cells.append("-" if v is None or (v == 0 and p in ("gradient gather", "allocation", "other ops")
                                                  and fw == "gpugrad") else f"{v:.2f}")
        rows.append(f"| {p} | " + " | ".join(cells) + " |")
    rows.append("| **step (median)** | " + " | ".join(f"**{c[fw]['step_ms']:.2f}**" for c in cases.values()
                                                     for fw in ("gpugrad", "torch")) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
