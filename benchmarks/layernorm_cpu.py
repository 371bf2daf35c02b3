"""Layer norm on the CPU: the Numba passes generated from gpugrad/kernels/layernorm.py (what
gg.nn.LayerNorm runs) against the generic array code generated from the same definition (NumPy), in one
process: rounds alternate the two, each round takes a median, the best round is kept (forward; backward
with dx, dw and db). Writes benchmarks/results/layernorm_cpu.json.

    python benchmarks/layernorm_cpu.py [--rounds 5] [--repeats 10]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpugrad.backends import get_backend  # noqa: E402
from gpugrad.backends.base import Backend  # noqa: E402
from gpugrad.benchmarking import machine_info, median_time, write_json  # noqa: E402

SHAPES = [(256, 64), (1024, 256), (4096, 1024)]
HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "layernorm_cpu.json"))
    args = ap.parse_args()
    be = get_backend("cpu")
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'shape':>12} {'pass':>9} {'numba us':>9} {'numpy us':>9} {'speed-up':>8}")
    for m, n in SHAPES:
        x = rng.standard_normal((m, n)).astype(np.float32)
        w, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
        dy = rng.standard_normal((m, n)).astype(np.float32)
        _, mean, rstd = be.layer_norm_forward(x, w, b, 1e-5)
        runs = {
            "forward": (lambda: be.layer_norm_forward(x, w, b, 1e-5),
                        lambda: Backend.layer_norm_forward(be, x, w, b, 1e-5)),
            "backward": (lambda: be.layer_norm_backward(dy, x, w, mean, rstd, True, True),
                         lambda: Backend.layer_norm_backward(be, dy, x, w, mean, rstd, True, True)),
        }
        for name, (fused, generic) in runs.items():
            best = {"numba": float("inf"), "numpy": float("inf")}
            for _ in range(args.rounds):  # alternating rounds
                best["numba"] = min(best["numba"], median_time(fused, args.repeats, 2))
                best["numpy"] = min(best["numpy"], median_time(generic, args.repeats, 2))
            a, g = best["numba"] * 1e6, best["numpy"] * 1e6
            rows.append({"shape": [m, n], "dtype": "float32", "pass": name, "numba_us": a, "numpy_us": g})
            print(f"{m:>5} x {n:<5} {name:>9} {a:9.0f} {g:9.0f} {g / a:7.2f}x")
    write_json(args.out, {"machine": machine_info(), "rows": rows})
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
