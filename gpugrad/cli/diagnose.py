"""``gpugrad diagnose``: per-layer gradient norms of a deep sigmoid, ReLU and residual ReLU MLP
(vanishing/exploding gradients), printed and plotted against layer index."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import numpy as np

from ..benchmarking import write_json
from ..data import DATASETS
from .options import DEVICES, CLIError, float_in, load_data, positive_int, \
    resolve_device


def add_parser(sub) -> None:
    """Register ``diagnose`` on the sub-command parsers ``sub``."""
    g = sub.add_parser("diagnose", help="per-layer gradient norms: deep sigmoid vs ReLU vs residual MLP",
                       description="Train three deep MLPs (sigmoid, ReLU, residual ReLU) for a few steps and plot "
                                   "each layer's weight-gradient norm (log scale) against layer index.")
    g.add_argument("--dataset", choices=DATASETS, default="digits", help="(default: digits)")
    g.add_argument("--depth", type=positive_int("--depth"), default=16, help="hidden layers (default: 16)")
    g.add_argument("--width", type=positive_int("--width"), default=64, help="(default: 64)")
    g.add_argument("--steps", type=positive_int("--steps"), default=20, help="SGD steps measured (default: 20)")
    g.add_argument("--batch-size", type=positive_int("--batch-size"), default=64, help="(default: 64)")
    g.add_argument("--lr", type=float_in("--lr", 0.0, lo_open=True), default=0.01,
                   help="SGD learning rate (default: 0.01)")
    g.add_argument("--seed", type=int, default=0, help="init and batch-order seed (default: 0)")
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto picks CUDA when gg.cuda.is_available() (default: auto)")
    g.add_argument("--out", default="grad_norms.png", help="PNG path; .png is added when there is no extension (a .json with the numbers goes beside it)")


def grad_norm_profile(activation: str, residual: bool, depth: int, width: int, ds, device: str = "cpu",
                      steps: int = 20, batch_size: int = 64, lr: float = 0.01, seed: int = 0) -> dict:
    """Train ``MLP([in] + [width]*depth + [out])`` with plain SGD for ``steps`` steps on ``ds`` and return
    ``{"layers": [...], "profile": [geometric-mean weight-grad norm per layer], "warnings": [...],
    "loss_first", "loss_last"}``."""
    import gpugrad as gg
    from ..data import epoch_permutation
    from ..diagnostics import GradNormTracker, mean_profile
    gg.manual_seed(seed)
    model = gg.nn.MLP([ds.n_features] + [width] * depth + [ds.n_outputs], activation=activation,
                      residual=residual, device=device)
    opt = gg.optim.SGD(model.parameters(), lr=lr)
    warnings: list[str] = []
    tracker = GradNormTracker(model, warn=warnings.append)
    perm = epoch_permutation(ds.n_train, seed, 0)
    recs, losses = [], []
    F = gg.nn.functional
    for s in range(steps):
        idx = perm[(s * batch_size) % ds.n_train:][:batch_size]
        if len(idx) < batch_size:
            idx = perm[:batch_size]
        x = gg.tensor(ds.x_train[idx], device=device)
        y = gg.tensor(ds.y_train[idx], device=device)
        loss = F.cross_entropy(model(x), y) if ds.task == "classification" else F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        recs.append(tracker.measure())
        opt.step()
        losses.append(float(loss.item()))
    prof = mean_profile(recs)
    return {"layers": list(prof), "profile": list(prof.values()), "warnings": warnings,
            "loss_first": losses[0], "loss_last": losses[-1]}


def png_path(out: str) -> str:
    """``--out`` as a PNG path: ``.png`` is added when there is no extension; any other one is refused."""
    ext = os.path.splitext(out)[1]
    if ext == "":
        return out + ".png"
    if ext.lower() != ".png":
        raise CLIError(f"--out {out!r}: the plot is written as PNG; give a path ending in .png "
                       f"(or none: {os.path.splitext(out)[0] + '.png'!r})")
    return out


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """``gpugrad diagnose``: returns the exit code."""
    from .. import diagnostics
    out = png_path(args.out)
    device = resolve_device(args.device)
    ds = load_data({"dataset": args.dataset, "task": "classification", "n_samples": 2000, "n_features": 32,
                     "n_outputs": 4, "noise": 0.05, "seed": args.seed})
    variants = [(f"sigmoid, depth {args.depth}", "sigmoid", False),
                (f"relu, depth {args.depth}", "relu", False),
                (f"relu + residual, depth {args.depth}", "relu", True)]
    profiles, result = {}, {"dataset": args.dataset, "depth": args.depth, "width": args.width, "steps": args.steps,
                            "lr": args.lr, "device": device, "models": {}}
    print(f"gpugrad diagnose: {ds.describe()}; MLP with {args.depth} hidden layers of width {args.width}, "
          f"{args.steps} SGD steps (lr {args.lr}), geometric-mean weight-gradient norm per layer")
    for label, act, res in variants:
        r = grad_norm_profile(act, res, args.depth, args.width, ds, device, args.steps, args.batch_size,
                              args.lr, args.seed)
        profiles[label] = r["profile"]
        result["models"][label] = r
        p = np.asarray(r["profile"])
        ratio = p[0] / p[-1] if p[-1] > 0 else float("nan")
        print(f"  {label:<28} first layer {p[0]:.2e}  last layer {p[-1]:.2e}  first/last {ratio:.1e}  "
              f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}")
        for w in r["warnings"]:
            print(f"    warning: {w}", file=sys.stderr)
    try:
        write_json(os.path.splitext(out)[0] + ".json", result)
    except OSError as e:
        raise CLIError(f"--out {out!r}: cannot write there ({e.strerror or e})") from None
    png = diagnostics.plot_grad_norm_profiles(
        profiles, out, f"{ds.name}: weight-gradient norm per layer ({args.depth} hidden x {args.width}, "
                       f"{args.steps} SGD steps)")
    print(f"wrote {os.path.splitext(out)[0] + '.json'}" + (f" and {png}" if png else ""))
    return 0

