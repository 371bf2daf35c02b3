"""``gpugrad bench``: training-step throughput of MLPs over a grid of widths x depths x batches,
beside PyTorch when installed and against the device's GEMM ceiling. The harness (timing, the step,
FLOPs, the ceiling) is gpugrad/benchmarking.py, shared with the scripts in benchmarks/."""
from __future__ import annotations

import argparse
import os
from typing import Sequence

import numpy as np

from .. import benchmarking as bm
from .options import DEVICES, PROG, CLIError, int_list, nonneg_int, positive_int, \
    resolve_device, timestamp

N_CLASSES = 10
OPTIMIZER, LR = "adam", 1e-4
STEP_TEXT = "zero_grad + MLP(relu) forward + cross_entropy + backward + Adam step (lr 1e-4)"


def add_parser(sub) -> None:
    """Register ``bench`` on the sub-command parsers ``sub``."""
    b = sub.add_parser(
        "bench", help="training-step throughput vs PyTorch and the GEMM ceiling",
        description="Time one training step (zero_grad, forward, cross-entropy, backward, Adam step) of "
                    "ReLU MLPs [width] + [width]*depth + [10] over a grid of widths x depths x batches, "
                    "beside PyTorch (same sizes, same step) when installed. Each case reports the median "
                    "step time, samples/s, achieved GEMM TFLOP/s and its share of the GEMM ceiling: the "
                    "best float32 NxN matmul TFLOP/s on the device, through NumPy's BLAS (cpu) or CuPy's "
                    "cuBLAS (cuda), or torch.matmul when PyTorch is installed and faster.")
    b.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto picks CUDA when gg.cuda.is_available() (default: auto)")
    b.add_argument("--widths", type=int_list("--widths"), default=[256, 1024], metavar="W[,W...]",
                   help="hidden widths (also the input width), comma-separated (default: 256,1024)")
    b.add_argument("--depths", type=int_list("--depths"), default=[4], metavar="D[,D...]",
                   help="numbers of hidden layers, comma-separated (default: 4)")
    b.add_argument("--batches", type=int_list("--batches"), default=[128, 1024], metavar="B[,B...]",
                   help="batch sizes, comma-separated (default: 128,1024)")
    b.add_argument("--repeats", type=positive_int("--repeats"), default=10,
                   help="timed steps per case; the median is reported (default: 10)")
    b.add_argument("--warmup", type=nonneg_int("--warmup"), default=2,
                   help="untimed steps before timing each case (default: 2)")
    b.add_argument("--gemm-size", type=positive_int("--gemm-size"), default=None, metavar="N",
                   help="N of the NxN float32 matmul that measures the GEMM ceiling (default: 2048 cpu, 8192 cuda)")
    b.add_argument("--tf32", action="store_true",
                   help="allow TF32 tensor cores for float32 GEMMs on CUDA (gpugrad and PyTorch alike)")
    b.add_argument("--no-torch", action="store_true", help="skip the PyTorch column even when installed")
    b.add_argument("--out", default=None, help="JSON path (default: runs/bench-<device>-<timestamp>.json; a PNG "
                                               "plot goes beside it)")
    b.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _torch_for(device: str, no_torch: bool):
    if no_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    return torch


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """``gpugrad bench``: returns the exit code."""
    import gpugrad as gg
    from ..backends import get_backend
    device = resolve_device(args.device)
    torch = _torch_for(device, args.no_torch)
    if device == "cuda":
        gg.cuda.set_tf32(bool(args.tf32))
        if torch is not None:
            torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    out = args.out or os.path.join("runs", f"bench-{device}-{timestamp()}.json")
    out_dir = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(out_dir, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise CLIError(f"--out {out!r}: cannot write there ({e.strerror or e})") from None
    say = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    ceiling = bm.device_ceiling(device, n=args.gemm_size, torch=torch)
    say(f"gpugrad bench on {device}: GEMM ceiling {ceiling['tflops']:.3f} TFLOP/s (float32 {ceiling['n']}^3 "
        f"{ceiling['source']}, best of 3){'; PyTorch ' + torch.__version__ if torch else '; PyTorch not installed' if not args.no_torch else ''}")
    rows = []
    hdr = (f"{'width':>6} {'depth':>5} {'batch':>6} | {'gpugrad ms':>10} {'samples/s':>11} {'TFLOP/s':>8} {'%ceil':>6}"
           + (f" | {'torch ms':>9} {'samples/s':>11} {'TFLOP/s':>8} {'%ceil':>6} {'gg/torch':>8}" if torch else ""))
    say(hdr)
    say("-" * len(hdr))
    sync = get_backend(device).synchronize
    for w in args.widths:
        for d in args.depths:
            for bsz in args.batches:
                sizes = [w] + [w] * d + [N_CLASSES]
                flops = bm.mlp_flops(sizes, bsz)
                x, y = bm.random_batch(np.random.default_rng(0), bsz, sizes[0], N_CLASSES)
                _, step = bm.gpugrad_mlp_step(sizes, device, OPTIMIZER, LR)
                xg, yg = gg.tensor(x, device=device), gg.tensor(y, device=device)
                t = bm.median_time(lambda: step(xg, yg), args.repeats, args.warmup, sync=sync)
                row = {"width": w, "depth": d, "batch": bsz, "sizes": sizes, "flops_per_step": flops,
                       "gpugrad_ms": t * 1e3, "gpugrad_samples_per_s": bsz / t,
                       "gpugrad_tflops": flops / t / 1e12,
                       "gpugrad_pct_ceiling": 100.0 * flops / t / 1e12 / ceiling["tflops"]}
                line = (f"{w:>6} {d:>5} {bsz:>6} | {t * 1e3:>10.3f} {bsz / t:>11,.0f} {row['gpugrad_tflops']:>8.3f} "
                        f"{row['gpugrad_pct_ceiling']:>5.1f}%")
                if torch is not None:
                    _, tstep = bm.torch_mlp_step(torch, sizes, device, OPTIMIZER, LR)
                    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
                    tt = bm.median_time(lambda: tstep(xt, yt), args.repeats, args.warmup,
                                        sync=bm.torch_sync(torch, device))
                    row.update({"torch_ms": tt * 1e3, "torch_samples_per_s": bsz / tt, "torch_tflops": flops / tt / 1e12,
                                "torch_pct_ceiling": 100.0 * flops / tt / 1e12 / ceiling["tflops"],
                                "speedup_vs_torch": tt / t})
                    line += (f" | {tt * 1e3:>9.3f} {bsz / tt:>11,.0f} {row['torch_tflops']:>8.3f} "
                             f"{row['torch_pct_ceiling']:>5.1f}% {tt / t:>7.2f}x")
                rows.append(row)
                say(line)
    result = {"command": " ".join([PROG, "bench", *argv]),
              "device": device, "device_name": bm.device_name(device), "versions": bm.versions(),
              "tf32": bool(args.tf32 and device == "cuda"), "gemm_ceiling": ceiling, "step": STEP_TEXT,
              "flops_note": "GEMM FLOPs: forward 2*B*in*out per layer; backward 4*B*in*out (dX, dW), no dX for layer 1",
              "timing": f"median of {args.repeats} steps after {args.warmup} warm-up steps, synchronised per step",
              "rows": rows, "time": timestamp()}
    bm.write_json(out, result)
    from ..diagnostics import plot_bench
    png = plot_bench(rows, os.path.splitext(out)[0] + ".png", ceiling["tflops"],
                     f"training step on {result['device_name']}")
    say(f"wrote {out}" + (f" and {png}" if png else ""))
    return 0
