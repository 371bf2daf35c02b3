"""The CPU backend's NumPy activation derivatives, whole arrays against chunks (``Backend.act_chunk``).

    python3 benchmarks/act_derivatives_cpu.py [--shape 1280 256] [--repeats 60] [--rounds 3]
                                              [--out benchmarks/results/act_derivatives_cpu.json]

Activations whose derivatives call ``exp``/``erf`` (softplus, silu, gelu, elu) run on the CPU as the
NumPy code generated from ``gpugrad/kernels/activations.py``: several passes per formula. The CPU
backend runs them in chunks of ``act_chunk`` elements so the temporaries stay in cache. This times
``backend.act_derivative(dy, z, act, None, order)`` for orders 1-3 (float32, one thread, the calling
thread's CPU time, the best fifth of ``--repeats`` calls) with the chunks and with whole arrays
(``act_chunk = 0``), alternating ``--rounds`` times in one process; a figure is the median over rounds.
Both give the same values (tests/test_cpu_backend.py checks it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _us(fn, repeats: int) -> float:
    from gpugrad import benchmarking as bm
    return bm.best_fifth_thread_time(fn, repeats) * 1e6


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=2, default=[1280, 256])
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "act_derivatives_cpu.json"))
    args = ap.parse_args(argv)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[k] = "1"
    import numpy as np
    sys.path.insert(0, ROOT)
    from gpugrad import benchmarking as bm
    from gpugrad.backends import get_backend

    be = get_backend("cpu")
    chunk = be.act_chunk
    rng = np.random.default_rng(0)
    z = (rng.standard_normal(args.shape) * 4).astype(np.float32)
    dy = rng.standard_normal(args.shape).astype(np.float32)
    cases = [(act, order) for act in ("softplus", "silu", "gelu", "elu") for order in (1, 2, 3)]
    res = {f"{a} order {o}": {"chunks": [], "whole": []} for a, o in cases}
    for r in range(args.rounds):
        for mode in (("chunks", "whole") if r % 2 == 0 else ("whole", "chunks")):
            be.act_chunk = chunk if mode == "chunks" else 0
            for act, order in cases:
                res[f"{act} order {order}"][mode].append(
                    _us(lambda: be.act_derivative(dy, z, act, None, order), args.repeats))
    be.act_chunk = chunk
    rows = []
    for key, v in res.items():
        c, w = statistics.median(v["chunks"]), statistics.median(v["whole"])
        rows.append({"case": key, "chunks_us": c, "whole_us": w, "speedup": w / c, "rounds": v})
        print(f"{key:<18} chunks {c:8.0f} us  whole arrays {w:8.0f} us  {w / c:5.2f}x")
    payload = {"machine": bm.machine_info(), "shape": args.shape, "act_chunk": chunk, "repeats": args.repeats,
               "rounds": args.rounds, "load_average_1_5_15": os.getloadavg(), "rows": rows}
    bm.write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
