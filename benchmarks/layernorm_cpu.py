"""Layer norm on the CPU: the Numba passes generated from gpugrad/kernels/layernorm.py (what
gg.nn.LayerNorm runs) against the generic array code generated from the same definition (NumPy), in one
process, alternating, median of repeats (forward; backward with dx, dw and db).

    python benchmarks/layernorm_cpu.py [--repeats 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gpugrad.backends import get_backend  # noqa: E402
from gpugrad.backends.base import Backend  # noqa: E402

SHAPES = [(256, 64), (1024, 256), (4096, 1024)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    be = get_backend("cpu")
    rng = np.random.default_rng(0)
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
            fused(), generic()  # compile, warm
            t = {"fused": [], "generic": []}
            for _ in range(args.repeats):  # alternating
                for k, f in (("fused", fused), ("generic", generic)):
                    s = time.perf_counter()
                    f()
                    t[k].append(time.perf_counter() - s)
            a, g = statistics.median(t["fused"]) * 1e6, statistics.median(t["generic"]) * 1e6
            print(f"{m:>5} x {n:<5} {name:>9} {a:9.0f} {g:9.0f} {g / a:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
