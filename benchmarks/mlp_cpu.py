"""Training-step time of gpugrad vs PyTorch on the CPU, measured the way a user times their own loop.

    python3 benchmarks/mlp_cpu.py [--rounds 3] [--steps 15] [--warmup 3] [--cases abdc]
                                  [--out benchmarks/results/mlp_cpu.json]

One step is what a user's loop does: ``opt.zero_grad()``, ``loss = F.cross_entropy(model(x), y)``,
``loss.backward()``, ``opt.step()`` (SGD, lr 0.01), float32, a ReLU MLP (``gg.nn.MLP`` /
``torch.nn.Sequential`` of Linear+ReLU), timed with ``time.perf_counter`` around each step; the batch of
each step is drawn before its clock starts. Cases:

(a) batch 256, 784-1024x4-10; (b) batch 1024, 17 layers of 128 then 10; (d) batch 32, 64-256-256-10
(`gpugrad train`'s default model), each framework with its own seeded default init; (c) per op: a scalar graph of 1,000 small ops (``y = y * w + 0.001``),
forward + backward, in microseconds per op.

Each measurement is a fresh process with default settings: the environment is passed on without the
variables that tune either framework (``GPUGRAD_*``, ``OMP_*``, ``MKL_*``, ``OPENBLAS_*``, ``KMP_*``,
glibc's malloc tunables), so both run with the threads and allocators their default install picks.
A process warms up ``--warmup`` steps, then reports the median of ``--steps`` steps. The two frameworks
alternate, process by process, for ``--rounds`` rounds (which one goes first swaps every round, so drift
in the machine's load hits both); a figure is the median over the rounds, and the ratio is
gpugrad / PyTorch of those medians (each round's own ratio is in the JSON). Before timing, one process
runs both frameworks from the same weights on the same batches and checks that their losses agree.
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
if "--baseline-worker" in sys.argv:  # time the gpugrad of another checkout (--baseline)
    ROOT = sys.argv[sys.argv.index("--baseline-worker") + 1]
sys.path.insert(0, ROOT)

CASES = {
    "a": ("batch 256, 784-1024x4-10", 256, [784, 1024, 1024, 1024, 1024, 10]),
    "b": ("batch 1024, 17 layers of 128 then 10", 1024, [128] * 17 + [10]),
    "d": ("batch 32, 64-256-256-10 (gpugrad train's model)", 32, [64, 256, 256, 10]),
    "c": ("scalar graph of 1,000 ops, fwd+bwd, per op", None, None),
}
N_OPS = 1000
# Variables that change either framework's threads, BLAS or allocator: not passed to the timed processes.
TUNING_PREFIXES = ("GPUGRAD_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GOTO", "NUMBA_NUM_THREADS", "MALLOC_",
                   "GLIBC_TUNABLES", "TORCH_", "DNNL_", "ONEDNN_")


def default_env(root: str = ROOT) -> tuple[dict, list[str]]:
    """This process's environment less the tuning variables (and the names that were dropped), with
    ``root``'s gpugrad first on the path."""
    env, dropped = {}, []
    for k, v in os.environ.items():
        if k.startswith(TUNING_PREFIXES):
            dropped.append(k)
        else:
            env[k] = v
    env["PYTHONPATH"] = root
    return env, sorted(dropped)


# ============================================================================ what one process runs
def _model(framework: str, sizes: list[int], like=None):
    """``(step, to_tensors, model)``: a seeded MLP, its SGD optimizer and the user's step. PyTorch's
    model has PyTorch's own seeded init, or ``like``'s weights (a gpugrad model) for the loss check; the
    timed PyTorch process never creates a gpugrad array (gpugrad's CPU backend sets glibc's malloc
    thresholds when it starts, which would change PyTorch's allocations too)."""
    from gpugrad import benchmarking as bm
    if framework == "gpugrad":
        import gpugrad as gg
        model, step = bm.gpugrad_mlp_step(sizes, "cpu", optimizer="sgd", lr=0.01)
        return step, lambda x, y: (gg.tensor(x), gg.tensor(y)), model
    import torch
    model, step = bm.torch_mlp_step(torch, sizes, "cpu", optimizer="sgd", lr=0.01, like=like)
    return step, lambda x, y: (torch.from_numpy(x), torch.from_numpy(y)), model


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def time_steps(framework: str, case: str, steps: int, warmup: int, clock=time.perf_counter) -> list[float]:
    """Times (s, wall by default) of ``steps`` training steps after ``warmup`` ones, each around the
    step alone."""
    import numpy as np
    from gpugrad import benchmarking as bm
    _, batch, sizes = CASES[case]
    step, to_tensors, _ = _model(framework, sizes)
    rng = np.random.default_rng(0)
    times = []
    for i in range(warmup + steps):
        x, y = to_tensors(*bm.random_batch(rng, batch, sizes[0], sizes[-1]))
        t0 = clock()
        step(x, y)
        t1 = clock()
        if i >= warmup:
            times.append(t1 - t0)
    return times


def time_ops(framework: str, steps: int, warmup: int, clock=time.perf_counter) -> list[float]:
    """Seconds per op of a scalar graph of ``N_OPS`` ops, forward + backward, ``steps`` times."""
    if framework == "gpugrad":
        import gpugrad as lib
    else:
        import torch as lib
    x = lib.tensor(0.5, requires_grad=True)
    w = lib.tensor(0.999, requires_grad=True)
    times = []
    for i in range(warmup + steps):
        t0 = clock()
        y = x
        for _ in range(N_OPS // 2):
            y = y * w + 0.001
        y.backward()
        t1 = clock()
        x.grad = w.grad = None
        if i >= warmup:
            times.append((t1 - t0) / N_OPS)
    return times


def check_same_loss(case: str) -> float:
    """Two steps of each framework from the same weights on the same batches: the losses must agree."""
    import numpy as np
    from gpugrad import benchmarking as bm
    _, batch, sizes = CASES[case]
    g_step, g_tensors, g_model = _model("gpugrad", sizes)
    t_step, t_tensors, _ = _model("torch", sizes, like=g_model)  # before gpugrad's steps change the weights
    losses = {}
    for fw, step, to_tensors in (("gpugrad", g_step, g_tensors), ("torch", t_step, t_tensors)):
        rng = np.random.default_rng(1)
        for _ in range(2):
            loss = step(*to_tensors(*bm.random_batch(rng, batch, sizes[0], sizes[-1])))
        losses[fw] = float(loss.item())
    a, b = losses["gpugrad"], losses["torch"]
    assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), f"losses differ: gpugrad {a}, torch {b}"
    return abs(a - b)


def _worker(args) -> None:
    if args.worker == "check":
        print(json.dumps({"loss_diff": check_same_loss(args.cases)}))
        return
    clock = CLOCKS[args.clock]
    if args.cases == "c":
        times = time_ops(args.worker, args.steps, args.warmup, clock)
    else:
        times = time_steps(args.worker, args.cases, args.steps, args.warmup, clock)
    print(json.dumps({"median": statistics.median(times), "times": times}))


def run_process(worker: str, case: str, steps: int, warmup: int, env: dict, baseline: str | None = None,
                clock: str = "wall") -> dict:
    """One fresh process (default settings) for one framework and case; ``baseline``: gpugrad from
    that checkout."""
    extra = (["--baseline-worker", baseline] if baseline else []) + ["--clock", clock]
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", worker, "--cases", case,
                          "--steps", str(steps), "--warmup", str(warmup)] + extra,
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


# ============================================================================ the parent
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="alternating gpugrad/PyTorch processes per case")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per process (the median is kept)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--cases", default="abdc")
    ap.add_argument("--threads", type=int, help="BLAS/OpenMP threads of both frameworks (default: their own; "
                    "1 with --clock thread gives a comparison that other jobs on the machine disturb less)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: what a user's loop sees (default); thread: the main thread's CPU time")
    ap.add_argument("--baseline", help="another checkout of gpugrad (e.g. git worktree add /tmp/main main) "
                    "timed in the same alternation, reported as 'baseline'")
    ap.add_argument("--worker", choices=["gpugrad", "torch", "check"], help=argparse.SUPPRESS)
    ap.add_argument("--baseline-worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "mlp_cpu.json"))
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return {}
    import importlib.util

    from gpugrad import benchmarking as bm
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print("PyTorch not installed: timing gpugrad alone (pip install torch==2.13.0 for the baseline)")
    env, dropped = default_env()
    threads = {k: str(args.threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")} \
        if args.threads else {}
    env.update(threads)
    if dropped:
        print(f"not passed to the timed processes: {', '.join(dropped)}")
    frameworks = ["gpugrad", "torch"] if have_torch else ["gpugrad"]
    base_env = None
    if args.baseline:
        frameworks.insert(1, "baseline")
        base_env = dict(default_env(os.path.abspath(args.baseline))[0], **threads)
    load_before = os.getloadavg()
    rows = []
    for key in args.cases:
        label, batch, sizes = CASES[key]
        if key != "c" and have_torch:
            run_process("check", key, 0, 0, env)
        per = {fw: [] for fw in frameworks}
        for r in range(args.rounds):
            for fw in (frameworks if r % 2 == 0 else frameworks[::-1]):
                if fw == "baseline":
                    per[fw].append(run_process("gpugrad", key, args.steps, args.warmup, base_env,
                                               os.path.abspath(args.baseline), args.clock)["median"])
                else:
                    per[fw].append(run_process(fw, key, args.steps, args.warmup, env, clock=args.clock)["median"])
        g = statistics.median(per["gpugrad"])
        t = statistics.median(per["torch"]) if have_torch else None
        scale, unit = (1e6, "us_per_op") if key == "c" else (1e3, "ms")
        row = {"case": key, "label": label, f"gpugrad_{unit}": g * scale, f"torch_{unit}": t * scale if t else None,
               "ratio": g / t if t else None,
               f"gpugrad_rounds_{unit}": [v * scale for v in per["gpugrad"]],
               f"torch_rounds_{unit}": [v * scale for v in per["torch"]] if have_torch else None,
               "round_ratios": [a / b for a, b in zip(per["gpugrad"], per["torch"])] if have_torch else None}
        if args.baseline:
            b = statistics.median(per["baseline"])
            row[f"baseline_{unit}"], row["baseline_ratio"] = b * scale, (b / t if t else None)
            row[f"baseline_rounds_{unit}"] = [v * scale for v in per["baseline"]]
        if key != "c":
            row["batch"], row["sizes"] = batch, sizes
            row["gpugrad_gflops"] = bm.mlp_flops(sizes, batch) / g / 1e9
        rows.append(row)
        _print_row(row)
    load_after = os.getloadavg()
    from gpugrad.backends import cpu_blas
    payload = {"machine": bm.machine_info(), "load_average_1_5_15": {"before": load_before, "after": load_after},
               "gpugrad_blas": cpu_blas.provider(), "steps": args.steps, "warmup": args.warmup,
               "rounds": args.rounds, "threads": args.threads or "default", "clock": args.clock,
               "baseline": args.baseline, "variables_not_passed": dropped, "rows": rows}
    print(f"gpugrad GEMMs: {payload['gpugrad_blas']}; load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after")
    bm.write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


def _print_row(r: dict) -> None:
    unit = "us/op" if r["case"] == "c" else "ms"
    key = "us_per_op" if r["case"] == "c" else "ms"
    g, t = r[f"gpugrad_{key}"], r[f"torch_{key}"]
    ts = f"{t:9.2f} {unit}" if t is not None else "-"
    rs = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
    rounds = " ".join(f"{x:.2f}" for x in r["round_ratios"]) if r["round_ratios"] else ""
    base = ""
    if r.get("baseline_ratio") is not None:
        base = f"  baseline {r[f'baseline_{key}']:8.2f} {unit} (ratio {r['baseline_ratio']:.2f})"
    print(f"({r['case']}) {r['label']:<48} gpugrad {g:8.2f} {unit:<5}  PyTorch {ts:>12}  ratio {rs}  (rounds: {rounds})"
          + base, flush=True)


if __name__ == "__main__":
    main()
