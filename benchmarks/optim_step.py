"""Optimizer step on the CPU: the multi-tensor step (this tree) against the per-parameter step of an earlier
commit, side by side in one process, on the same 20-parameter MLP, weights and gradients.

    python benchmarks/optim_step.py [--before fec3c69] [--width 128] [--repeats 200]
                                    [--out benchmarks/results/optim_step_cpu.json]

The earlier commit's ``gpugrad`` and ``kernels`` are extracted with ``git archive`` into a temporary
folder and imported as ``gpugrad_before``. One timed step = ``optimizer.step()`` with fresh gradient
Tensors assigned (untimed) before each, as after ``zero_grad()`` + ``backward()``. Reports the median
step time per optimizer, and the Python calls in one Adam step (cProfile's call count, after warm-up).
"""
from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import pstats
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gpugrad as gg  # noqa: E402
from gpugrad.benchmarking import machine_info, median_time, write_json  # noqa: E402

OPTIMIZERS = {
    "SGD (momentum 0.9)": ("SGD", dict(lr=0.01, momentum=0.9)),
    "Adam": ("Adam", dict(lr=1e-3)),
    "AdamW (amsgrad)": ("AdamW", dict(lr=1e-3, amsgrad=True)),
    "RMSprop (centered)": ("RMSprop", dict(lr=1e-3, centered=True)),
}


def load_before(commit: str, tmp: str):
    """The ``gpugrad`` package of ``commit``, importable as ``gpugrad_before``."""
    top = subprocess.run(["git", "-C", ROOT, "ls-tree", "--name-only", commit], capture_output=True, text=True,
                         check=True).stdout.split()
    paths = ["gpugrad"] + (["kernels"] if "kernels" in top else [])  # trees before kernels/ moved into gpugrad/
    tar = subprocess.run(["git", "-C", ROOT, "archive", commit, *paths], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", tmp], input=tar.stdout, check=True)
    os.rename(os.path.join(tmp, "gpugrad"), os.path.join(tmp, "gpugrad_before"))
    sys.path.insert(0, tmp)
    return importlib.import_module("gpugrad_before")


def setup_case(lib, width: int, opt_name: str, kw: dict, rng_seed: int = 0):
    """A 10-layer MLP (20 parameters), its optimizer, and a function that assigns fresh gradients."""
    lib.manual_seed(0)
    model = lib.nn.MLP([width] * 10 + [10], activation="relu")
    params = list(model.parameters())
    rng = np.random.default_rng(rng_seed)
    grads = [rng.standard_normal(tuple(p.shape)).astype(np.float32) for p in params]
    opt = getattr(lib.optim, opt_name)(params, **kw)

    def fresh_grads():
        for p, g in zip(params, grads):
            p.grad = lib.tensor(g.copy())
    return params, opt, fresh_grads


def python_calls(opt, fresh) -> int:
    fresh()
    prof = cProfile.Profile()
    prof.enable()
    opt.step()
    prof.disable()
    return pstats.Stats(prof).total_calls


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="fec3c69", help="the commit to compare with (default: %(default)s)")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "optim_step_cpu.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        before = load_before(args.before, tmp)
        rows = []
        for label, (name, kw) in OPTIMIZERS.items():
            res = {"optimizer": label}
            finals = {}
            for tag, lib in (("before", before), ("after", gg)):
                params, opt, fresh = setup_case(lib, args.width, name, kw)
                res[f"{tag}_us"] = 1e6 * median_time(opt.step, args.repeats, 20, setup=fresh)
                res[f"{tag}_python_calls"] = python_calls(opt, fresh)
                finals[tag] = [p.numpy().copy() for p in params]
            res["max_abs_diff"] = float(max(np.max(np.abs(a - b)) for a, b in zip(finals["before"], finals["after"])))
            rows.append(res)
    n_params = 20
    print(f"optimizer step, CPU, MLP {args.width}x10 ({n_params} parameters), median of {args.repeats}")
    print(f"{'optimizer':22s} {'before us':>10s} {'after us':>9s} {'speedup':>8s} {'calls before':>13s} "
          f"{'calls after':>12s} {'max |diff|':>11s}")
    for r in rows:
        speedup = r["before_us"] / r["after_us"]
        print(f"{r['optimizer']:22s} {r['before_us']:10.1f} {r['after_us']:9.1f} {speedup:7.2f}x "
              f"{r['before_python_calls']:13d} {r['after_python_calls']:12d} {r['max_abs_diff']:11.2e}")
    payload = {"machine": machine_info(), "width": args.width, "parameters": n_params, "before": args.before,
               "repeats": args.repeats, "rows": rows}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
