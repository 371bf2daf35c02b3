"""Training-step time of gpugrad vs PyTorch on the CPU, side by side in one run, same shapes and data.

    python benchmarks/mlp_cpu.py [--repeats 20] [--out benchmarks/results/mlp_cpu.json]

(a) batch 256, 784-1024-1024-1024-1024-10, ReLU; (b) batch 1024, 16 hidden layers of 128, ReLU:
one step = zero_grad, forward, cross-entropy, backward, SGD step (lr 0.01), built by the harness
shared with `gpugrad bench` (gpugrad/benchmarking.py; GFLOP/s count the step's GEMMs as it does).
(c) per-op overhead: a scalar graph of 1,000 small ops, forward + backward, in microseconds per op. Both start from the same weights and their
losses are checked to agree first. Each framework times in its own process (alternating, --rounds
times; the best median of each is kept). GEMMs: MKL when the `mkl` wheel is installed
(`pip install .[mkl]`), else NumPy's OpenBLAS; GPUGRAD_BLAS=numpy forces the latter.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpugrad as gg  # noqa: E402
from gpugrad import benchmarking as bm  # noqa: E402

CASES = {
    "a": ("batch 256, 784-1024x4-10, ReLU", 256, [784, 1024, 1024, 1024, 1024, 10]),
    "b": ("batch 1024, 16 hidden x 128, ReLU", 1024, [128] + [128] * 16 + [10]),
}


def gg_step_fn(sizes, batch, rng):
    """gpugrad's model, step and a setup that draws a fresh batch (the shared harness's SGD step)."""
    model, step = bm.gpugrad_mlp_step(sizes, "cpu", optimizer="sgd", lr=0.01)
    data = {}

    def setup():
        x, y = bm.random_batch(rng, batch, sizes[0], sizes[-1])
        data["x"], data["y"] = gg.tensor(x), gg.tensor(y)

    def run():
        data["loss"] = step(data["x"], data["y"])
    return model, run, setup, data


def torch_step_fn(sizes, batch, rng, gg_model):
    """The same for PyTorch, starting from ``gg_model``'s weights."""
    import torch
    _, step = bm.torch_mlp_step(torch, sizes, "cpu", optimizer="sgd", lr=0.01, like=gg_model)
    data = {}

    def setup():
        x, y = bm.random_batch(rng, batch, sizes[0], sizes[-1])
        data["x"], data["y"] = torch.from_numpy(x), torch.from_numpy(y)

    def run():
        data["loss"] = step(data["x"], data["y"])
    return run, setup, data


def check_same_loss(sizes, batch) -> float:
    """One step of each on the same batch and weights: the losses must agree before we time anything."""
    rng = np.random.default_rng(1)
    model, gstep, _, gdata = gg_step_fn(sizes, batch, rng)
    tstep, _, tdata = torch_step_fn(sizes, batch, rng, model)
    import torch
    x, y = bm.random_batch(rng, batch, sizes[0], sizes[-1])
    gdata["x"], gdata["y"] = gg.tensor(x), gg.tensor(y)
    tdata["x"], tdata["y"] = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(2):
        gstep()
        tstep()
    a, b = gdata["loss"].item(), tdata["loss"].item()
    assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), f"losses differ: gpugrad {a}, torch {b}"
    return abs(a - b)


def scalar_graph_gg(n_ops: int):
    x = gg.tensor(0.5, requires_grad=True)
    w = gg.tensor(0.999, requires_grad=True)

    def run():
        y = x
        for _ in range(n_ops // 2):
            y = y * w + 0.001
        y.backward()
        x.grad = w.grad = None
    return run


def scalar_graph_torch(n_ops: int):
    import torch
    x = torch.tensor(0.5, requires_grad=True)
    w = torch.tensor(0.999, requires_grad=True)

    def run():
        y = x
        for _ in range(n_ops // 2):
            y = y * w + 0.001
        y.backward()
        x.grad = w.grad = None
    return run


def _worker(framework: str, case: str, repeats: int, warmup: int) -> float:
    """Median time of one case for one framework, in this process (seconds per step or per op)."""
    rng = np.random.default_rng(0)
    gg.manual_seed(0)
    if case == "c":
        fn = scalar_graph_gg(1000) if framework == "gpugrad" else scalar_graph_torch(1000)
        return bm.median_time(fn, repeats, warmup) / 1000
    _, batch, sizes = CASES[case]
    model, gstep, gsetup, _ = gg_step_fn(sizes, batch, rng)
    if framework == "gpugrad":
        return bm.median_time(gstep, repeats, warmup, gsetup)
    tstep, tsetup, _ = torch_step_fn(sizes, batch, rng, model)
    return bm.median_time(tstep, repeats, warmup, tsetup)


def _run_worker(framework: str, case: str, repeats: int, warmup: int) -> float:  # noqa: D401
    """Each framework times in its own process: PyTorch's OpenMP and MKL's (when gpugrad uses MKL)
    slow each other down when loaded together, which would bias the comparison."""
    import json
    import subprocess
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", framework, "--cases", case,
                          "--repeats", str(repeats), "--warmup", str(warmup)],
                         check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="alternate gpugrad/PyTorch processes this many times")
    ap.add_argument("--cases", default="abc")
    ap.add_argument("--worker", choices=["gpugrad", "torch", "check"], help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "mlp_cpu.json"))
    args = ap.parse_args(argv)
    if args.worker:
        import json
        if args.worker == "check":
            print(json.dumps({"seconds": check_same_loss(CASES[args.cases][2], CASES[args.cases][1])}))
        else:
            print(json.dumps({"seconds": _worker(args.worker, args.cases, args.repeats, args.warmup)}))
        return {}
    import importlib.util
    have_torch = importlib.util.find_spec("torch") is not None
    if not have_torch:
        print("PyTorch not installed: timing gpugrad alone (pip install torch==2.13.0 for the baseline)")
    rows = []
    for key in args.cases:
        if key in "ab" and have_torch:  # in a child process too: this parent never loads a BLAS runtime
            _run_worker("check", key, 0, 0)
        tg, tt = [], []
        for _ in range(args.rounds):  # alternate, so drift in machine load hits both
            tg.append(_run_worker("gpugrad", key, args.repeats, args.warmup))
            if have_torch:
                tt.append(_run_worker("torch", key, args.repeats, args.warmup))
        g, t = min(tg), (min(tt) if tt else None)
        if key == "c":
            rows.append({"case": "c", "label": "scalar graph of 1000 ops, fwd+bwd, per op",
                         "gpugrad_us_per_op": g * 1e6, "torch_us_per_op": t * 1e6 if t else None,
                         "ratio": g / t if t else None})
        else:
            label, batch, sizes = CASES[key]
            flops = bm.mlp_flops(sizes, batch)
            rows.append({"case": key, "label": label, "gpugrad_ms": g * 1e3, "torch_ms": t * 1e3 if t else None,
                         "ratio": g / t if t else None, "gpugrad_gflops": flops / g / 1e9})
    print(f"{'case':<4} {'what':<40} {'gpugrad':>12} {'PyTorch':>12} {'ratio':>7}")
    for r in rows:
        if r["case"] == "c":
            g, t, unit = r["gpugrad_us_per_op"], r["torch_us_per_op"], "us/op"
        else:
            g, t, unit = r["gpugrad_ms"], r["torch_ms"], "ms"
        ts = f"{t:9.2f} {unit}" if t is not None else "-"
        rs = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"{r['case']:<4} {r['label']:<40} {g:9.2f} {unit:<3}{ts:>12} {rs:>7}")
    from gpugrad.backends import cpu_blas
    payload = {"machine": bm.machine_info(), "gpugrad_blas": cpu_blas.provider(), "repeats": args.repeats,
               "rounds": args.rounds, "rows": rows}
    print(f"gpugrad GEMMs: {payload['gpugrad_blas']}")
    bm.write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
