"""`gpugrad train` as one process and as `mpiexec -n 2` ranks, samples/s side by side (docs/performance.md,
"Ranks on one machine").

    python3 benchmarks/train_ranks.py --rounds 3                       # this checkout
    python3 benchmarks/train_ranks.py --rounds 3 --baseline /tmp/old   # and another checkout, alternating

Each run is ``python3 -m gpugrad train --epochs E --quiet --no-plots`` on digits (the quick start's
model: 64-256-256-10 ReLU, Adam, batch 32 in all), in a fresh process with the user's thread variables
(OMP_NUM_THREADS, ...) removed, so that each checkout chooses its own BLAS threads. A configuration's
figure is the median over its runs of each run's median samples/s over epochs 2..E (epoch 1 compiles
the CPU kernels); the wall time is the whole command's, start-up included. Configurations alternate
within each round. Writes benchmarks/results/train_ranks.json with the command, the machine and the
load average."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gpugrad import benchmarking as bm  # noqa: E402
from gpugrad._threads import OVERRIDE_VAR, THREAD_VARS  # noqa: E402


def run_once(tree: str, ranks: int, epochs: int, extra_env: dict) -> dict:
    from gpugrad.distributed.mpi import mpiexec_command
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS and k != OVERRIDE_VAR}
    env.update(PYTHONPATH=tree, **extra_env)
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        args = ["-m", "gpugrad", "train", "--epochs", str(epochs), "--quiet", "--no-plots", "--run-dir", run]
        cmd = mpiexec_command(ranks, args) if ranks > 1 else [sys.executable, *args]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr[-3000:]}")
        with open(os.path.join(run, "metrics.jsonl")) as f:
            recs = [json.loads(line) for line in f if line.strip()]
    return {"samples_per_s": statistics.median(r["samples_per_s"] for r in recs[1:]), "wall_s": wall,
            "test_acc": recs[-1]["test_acc"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--baseline", default=None, help="another checkout (e.g. git worktree add /tmp/old REV)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "train_ranks.json"))
    args = p.parse_args(argv)
    trees = [("this", ROOT)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
    configs = [(f"{name}: {ranks} {'ranks' if ranks > 1 else 'process'}", tree, ranks, {})
               for name, tree in trees for ranks in (1, 2)]
    if args.baseline:  # what the baseline needed by hand
        configs.append(("baseline: 2 ranks, OMP_NUM_THREADS=1", trees[1][1], 2, {"OMP_NUM_THREADS": "1"}))
    results: dict = {label: [] for label, *_ in configs}
    load = [os.getloadavg()[0]]
    for k in range(args.rounds):
        for label, tree, ranks, env in configs:
            results[label].append(run_once(tree, ranks, args.epochs, env))
            print(f"round {k + 1} {label:<40} {results[label][-1]['samples_per_s']:>9,.0f} samples/s  "
                  f"{results[label][-1]['wall_s']:5.1f} s", flush=True)
        load.append(os.getloadavg()[0])
    summary = {label: {"samples_per_s": statistics.median(r["samples_per_s"] for r in runs),
                       "wall_s": statistics.median(r["wall_s"] for r in runs),
                       "test_acc": [r["test_acc"] for r in runs], "runs": runs}
               for label, runs in results.items()}
    print()
    for label, s in summary.items():
        print(f"{label:<40} {s['samples_per_s']:>9,.0f} samples/s (median)  {s['wall_s']:5.1f} s wall")
    out = {"command": "python3 benchmarks/train_ranks.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d"), "machine": bm.machine_info(), "load_average_1min": load,
           "epochs": args.epochs, "results": summary}
    bm.write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
