"""Solve a 2-D Poisson problem with a physics-informed network: the loss is the PDE's residual, made
of the network's second derivatives (two nested create_graph gradients).

    python examples/poisson_pinn.py [--steps 2000] [--device cpu] [--out poisson_pinn.png]

Problem: laplace(u) = f on the unit square, u = 0 on its boundary, with f = -2 pi^2 sin(pi x) sin(pi y),
whose solution is u = sin(pi x) sin(pi y). The network u(x, y) (2-64-64-64-1, tanh) is trained on
random collocation points inside and on the boundary; the printed error is the relative L2 error
against the exact solution on a 64 x 64 grid. The PNG shows the network's u, the exact u and the
error (x to the right, y up).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

import gpugrad as gg


def exact(p: np.ndarray) -> np.ndarray:
    return np.sin(math.pi * p[..., 0]) * np.sin(math.pi * p[..., 1])


def laplacian(u, x):
    """``u_xx + u_yy`` at the points ``x`` (N, 2): the gradient, then the gradient of each of its
    components, every one recorded (create_graph) so the loss can be differentiated in the weights."""
    (du,) = gg.autograd.grad(u.sum(), x, create_graph=True)
    (d2x,) = gg.autograd.grad(du[:, 0].sum(), x, create_graph=True)
    (d2y,) = gg.autograd.grad(du[:, 1].sum(), x, create_graph=True)
    return d2x[:, 0] + d2y[:, 1]


def pinn_loss(net, x, f, edge):
    residual = laplacian(net(x)[:, 0], x) - f
    return (residual ** 2).mean() + 10.0 * (net(edge) ** 2).mean()


def edge_points(n: int, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0.0, 1.0, n)
    side = rng.integers(0, 4, n)
    return np.stack([np.where(side == 0, 0.0, np.where(side == 1, 1.0, t)),
                     np.where(side == 2, 0.0, np.where(side == 3, 1.0, t))], axis=1)


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=int(os.environ.get("GPUGRAD_EXAMPLE_STEPS", 2000)))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="poisson_pinn.png")
    args = ap.parse_args(argv)

    gg.manual_seed(0)
    rng = np.random.default_rng(0)
    net = gg.nn.MLP([2, 64, 64, 64, 1], activation="tanh", device=args.device)
    opt = gg.optim.Adam(net.parameters(), lr=2e-3)
    sched = gg.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(args.steps, 1), eta_min=1e-4)
    t0 = time.perf_counter()
    for step in range(args.steps):
        p = rng.uniform(0.0, 1.0, (512, 2))
        x = gg.tensor(p, dtype=gg.float32, device=args.device, requires_grad=True)
        f = gg.tensor(-2 * math.pi ** 2 * exact(p), dtype=gg.float32, device=args.device)
        edge = gg.tensor(edge_points(128, rng), dtype=gg.float32, device=args.device)
        opt.zero_grad()
        loss = pinn_loss(net, x, f, edge)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.5f}")
    elapsed = time.perf_counter() - t0

    side = np.linspace(0.0, 1.0, 64)
    grid = np.stack(np.meshgrid(side, side[::-1]), axis=-1).reshape(-1, 2)  # row 0 at the top (y = 1)
    with gg.no_grad():
        u = net(gg.tensor(grid, dtype=gg.float32, device=args.device)).numpy().reshape(64, 64)
    ref = exact(grid).reshape(64, 64)
    err = float(np.linalg.norm(u - ref) / np.linalg.norm(ref))
    print(f"relative L2 error against sin(pi x) sin(pi y) on a 64x64 grid: {err:.4f} "
          f"({args.steps} steps, {elapsed:.1f} s)")
    gap = np.full((64, 3, 3), 255, np.uint8)
    image = np.concatenate([gg.viz.field_image(u, symmetric=False, vmax=1.0), gap,
                            gg.viz.field_image(ref, symmetric=False, vmax=1.0), gap,
                            gg.viz.field_image(u - ref)], axis=1)
    gg.viz.write_png(args.out, np.repeat(np.repeat(image, 3, axis=0), 3, axis=1))
    print(f"wrote {args.out}")
    return err


if __name__ == "__main__":
    sys.exit(0 if np.isfinite(main()) else 1)
