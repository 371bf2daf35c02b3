"""Training steps whose loss holds derivatives of the network: gpugrad vs PyTorch, side by side.

    python3 benchmarks/higher_order.py [--device cpu|cuda] [--rounds 3] [--repeats 20]
                                      [--threads N --clock thread]
                                      [--out benchmarks/results/higher_order_cpu.json]

(e) Eikonal: a signed-distance MLP 2-256-256-256-256-1 (softplus), 1024 points plus 256 surface
    points; loss = mean(f(surface)^2) + 0.1 mean((|grad_x f| - 1)^2), the gradient taken with
    create_graph; then backward to the weights and an Adam step.
(p) PINN: u(x) = MLP 1-64-64-64-1 (tanh) on 1024 collocation points of the 1-D Poisson problem
    u'' = f; loss = mean((u_xx - f)^2) + mean(u(0)^2 + u(1)^2), two nested create_graph gradients
    (a third-order graph in the weights); backward and an Adam step.

Both frameworks start from the same weights, in float32, with the same points; the losses are
checked to agree first. Each framework times in its own process, alternating ``--rounds`` times
(the best median of each is kept). On CUDA the step ends with a device synchronisation.
``--threads N`` gives both frameworks N BLAS/OpenMP threads (default: PyTorch one per core, NumPy's
OpenBLAS its own default); ``--clock thread`` times the main thread's CPU time instead of the wall clock
(with ``--threads 1``: a comparison that other jobs on a shared machine disturb far less).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gpugrad import benchmarking as bm  # noqa: E402

QUICK = {"e": {"sizes": [2, 32, 32, 1], "n": 64, "n_surface": 16}, "p": {"sizes": [1, 16, 16, 1], "n": 64}}
CASES = {
    "e": {"label": "Eikonal, 2-256x4-1 softplus, 1024+256 pts", "sizes": [2, 256, 256, 256, 256, 1],
          "activation": "softplus", "n": 1024, "n_surface": 256},
    "p": {"label": "Poisson PINN, 1-64x3-1 tanh, 1024 pts", "sizes": [1, 64, 64, 64, 1], "activation": "tanh",
          "n": 1024},
}


def weights(sizes, seed: int = 0) -> list:
    """PyTorch's default Linear init range, drawn once with NumPy (float32)."""
    rng = np.random.default_rng(seed)
    out = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        k = 1.0 / math.sqrt(a)
        out.append((rng.uniform(-k, k, (b, a)).astype(np.float32), rng.uniform(-k, k, b).astype(np.float32)))
    return out


def points(case: dict, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    if "n_surface" in case:
        a = rng.uniform(0, 2 * math.pi, case["n_surface"])
        return {"x": rng.uniform(-1, 1, (case["n"], 2)).astype(np.float32),
                "surface": (0.5 * np.stack([np.cos(a), np.sin(a)], 1)).astype(np.float32)}
    x = rng.uniform(0, 1, (case["n"], 1)).astype(np.float32)
    return {"x": x, "f": (-math.pi ** 2 * np.sin(math.pi * x)).astype(np.float32),
            "boundary": np.array([[0.0], [1.0]], np.float32)}


def losses(lib, autograd_grad):
    """The two losses, written once for either framework (``lib``: gpugrad or torch)."""

    def eikonal(net, x, surface):
        f = net(x)
        (g,) = autograd_grad(f.sum(), x, create_graph=True)
        eik = (((g * g).sum(dim=1) + 1e-12).sqrt() - 1) ** 2
        return (net(surface) ** 2).mean() + 0.1 * eik.mean()

    def pinn(net, x, f, boundary):
        u = net(x)
        (ux,) = autograd_grad(u.sum(), x, create_graph=True)
        (uxx,) = autograd_grad(ux.sum(), x, create_graph=True)
        return ((uxx - f) ** 2).mean() + (net(boundary) ** 2).mean()
    return {"e": eikonal, "p": pinn}


def training_step(net, opt, loss_fn, data: dict):
    """One step of either framework: zero_grad, the loss (with its create_graph gradients), backward,
    the optimizer step; returns the loss."""
    def step():
        opt.zero_grad()
        loss = loss_fn(net, **data)
        loss.backward()
        opt.step()
        return loss
    return step


def gpugrad_step(key: str, device: str):
    import gpugrad as gg
    case = CASES[key]
    net = gg.nn.MLP(case["sizes"], activation=case["activation"], device=device)
    with gg.no_grad():
        for lin, (w, b) in zip([blk.linear for blk in net.blocks] + [net.head], weights(case["sizes"])):
            lin.weight.copy_(gg.tensor(w, device=device))
            lin.bias.copy_(gg.tensor(b, device=device))
    data = {k: gg.tensor(v, device=device) for k, v in points(case).items()}
    data["x"].requires_grad_(True)
    step = training_step(net, gg.optim.Adam(net.parameters(), lr=1e-4), losses(gg, gg.autograd.grad)[key], data)
    return step, data["x"]._backend().synchronize, lambda loss: loss.item()


def torch_step(key: str, device: str):
    import torch
    given = os.environ.get("OMP_NUM_THREADS", "")  # --threads; else one thread per core
    torch.set_num_threads(int(given) if given.isdigit() and int(given) > 0 else os.cpu_count() or 1)
    case = CASES[key]
    act = {"softplus": torch.nn.Softplus, "tanh": torch.nn.Tanh}[case["activation"]]
    layers = []
    for i, (w, b) in enumerate(weights(case["sizes"])):
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(case["sizes"]) - 2:
            layers.append(act())
    net = torch.nn.Sequential(*layers).to(device)
    data = {k: torch.from_numpy(v).to(device) for k, v in points(case).items()}
    data["x"].requires_grad_(True)
    step = training_step(net, torch.optim.Adam(net.parameters(), lr=1e-4), losses(torch, torch.autograd.grad)[key],
                         data)
    return step, bm.torch_sync(torch, device), lambda loss: loss.item()


def _worker(framework: str, key: str, device: str, repeats: int, warmup: int, clock: str = "wall") -> dict:
    step, sync, value = (gpugrad_step if framework == "gpugrad" else torch_step)(key, device)
    first = value(step())  # the loss at the shared starting weights
    if clock == "wall":
        return {"seconds": bm.median_time(step, repeats, warmup, sync=sync), "first_loss": first}
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        step()
        sync()
        times.append(time.thread_time() - t0)
    times.sort()
    return {"seconds": times[len(times) // 2], "first_loss": first}


def _run(framework: str, key: str, device: str, repeats: int, warmup: int, quick: bool, clock: str = "wall",
         threads: int | None = None) -> dict:
    env = dict(os.environ, **({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                           "MKL_NUM_THREADS")} if threads else {}))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", framework, "--cases", key,
                          "--device", device, "--repeats", str(repeats), "--warmup", str(warmup), "--clock", clock]
                         + (["--quick"] if quick else []), check=True, capture_output=True, text=True,
                         env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", default="ep")
    ap.add_argument("--repeats", type=int, default=None, help="timed steps per process (default 20; 10 on CUDA)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=None,
                    help="alternate gpugrad/PyTorch processes this many times (default 3; 1 on CUDA, whose run "
                         "fits benchmarks/gpu_report.py's 30 s step)")
    ap.add_argument("--no-torch", action="store_true", help="time gpugrad alone")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (a check that the script runs, not figures)")
    ap.add_argument("--in-process", action="store_true",
                    help="time gpugrad in this process, not a child (for tests/support/run_on_stand_in.py)")
    ap.add_argument("--worker", choices=["gpugrad", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, help="BLAS/OpenMP threads of both frameworks (default: their own)")
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="wall (default) or the main thread's CPU time")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    args.repeats = args.repeats if args.repeats is not None else (10 if on_cuda else 20)
    args.rounds = args.rounds if args.rounds is not None else (1 if on_cuda else 3)
    if args.quick:
        for key, small in QUICK.items():
            CASES[key].update(small, label=CASES[key]["label"].split(",")[0] + ", --quick shapes")
    if args.worker:
        print(json.dumps(_worker(args.worker, args.cases, args.device, args.repeats, args.warmup, args.clock)))
        return {}
    import importlib.util
    have_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
    if not have_torch and not args.no_torch:
        print("PyTorch not installed: timing gpugrad alone (pip install torch==2.13.0 for the baseline)")
    rows = []
    for key in args.cases:
        g_runs, t_runs = [], []
        for _ in range(args.rounds):  # alternate, so drift in machine load hits both
            g_runs.append(_worker("gpugrad", key, args.device, args.repeats, args.warmup, args.clock)
                          if args.in_process else
                          _run("gpugrad", key, args.device, args.repeats, args.warmup, args.quick, args.clock,
                               args.threads))
            if have_torch:
                t_runs.append(_run("torch", key, args.device, args.repeats, args.warmup, args.quick, args.clock,
                                   args.threads))
        g = min(r["seconds"] for r in g_runs)
        t = min(r["seconds"] for r in t_runs) if t_runs else None
        loss_g = g_runs[0]["first_loss"]
        loss_t = t_runs[0]["first_loss"] if t_runs else None
        if loss_t is not None and not math.isclose(loss_g, loss_t, rel_tol=1e-3):
            raise SystemExit(f"case {key}: the first losses differ: gpugrad {loss_g}, PyTorch {loss_t}")
        rows.append({"case": key, "label": CASES[key]["label"], "gpugrad_ms": g * 1e3,
                     "torch_ms": t * 1e3 if t else None, "ratio": g / t if t else None,
                     "first_loss_gpugrad": loss_g, "first_loss_torch": loss_t})
    print(f"device {args.device}; medians of {args.repeats} steps, best of {args.rounds} alternating rounds")
    print(f"{'case':<4} {'what':<44} {'gpugrad':>10} {'PyTorch':>10} {'ratio':>6}")
    for r in rows:
        ts = f"{r['torch_ms']:7.2f} ms" if r["torch_ms"] is not None else "-"
        rs = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(f"{r['case']:<4} {r['label']:<44} {r['gpugrad_ms']:7.2f} ms {ts:>10} {rs:>6}")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"higher_order_{args.device.split(':')[0]}.json")
    payload = {"machine": bm.machine_info(), "device": args.device, "repeats": args.repeats, "rounds": args.rounds,
               "threads": args.threads or "default", "clock": args.clock, "load_average_1_5_15": os.getloadavg(),
               "rows": rows}
    bm.write_json(out, payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
