"""The GEMMs of a CPU training step, alone: NumPy's BLAS (gpugrad's default) against PyTorch's and BLIS.

    python3 benchmarks/gemm_cpu.py [--repeats 300] [--threads 1] [--out benchmarks/results/gemm_cpu.json]

For each layer shape of ``benchmarks/mlp_cpu.py`` (batch x in x out), float32, the three GEMMs of a
linear layer as gpugrad's CPU backend calls them, each into a preallocated output: forward ``x @ w.T``,
input gradient ``dz @ w``, weight gradient ``dz.T @ x``; plus ``x @ w.T`` with a contiguous copy of
``w.T`` (another layout of the same forward). Each is timed by the calling thread's CPU time, the best
fifth of ``--repeats`` runs (fewer for the large shapes), in microseconds. PyTorch (``torch.mm`` with
``out=``) and BLIS (``pip install blis``: cython-blis, ``blis.py.gemm``) are timed when importable.
Thread counts are set through the environment before NumPy loads (``--threads``; default 1).
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(256, 784, 1024), (256, 1024, 1024), (1024, 128, 128), (32, 64, 256), (32, 256, 256)]


def _us(fn, repeats: int) -> float:
    from gpugrad import benchmarking as bm
    return bm.best_fifth_thread_time(fn, repeats) * 1e6


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gemm_cpu.json"))
    args = ap.parse_args(argv)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        os.environ[k] = str(args.threads)
    import numpy as np
    sys.path.insert(0, ROOT)
    from gpugrad import benchmarking as bm
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    try:
        from blis.py import gemm as blis_gemm
    except ImportError:
        blis_gemm = None
    rng = np.random.default_rng(0)
    rows = []
    for b, i, o in SHAPES:
        x = rng.standard_normal((b, i), dtype=np.float32)
        w = rng.standard_normal((o, i), dtype=np.float32)
        dz = rng.standard_normal((b, o), dtype=np.float32)
        wt = np.ascontiguousarray(w.T)
        y, dx, dw = np.empty((b, o), np.float32), np.empty((b, i), np.float32), np.empty((o, i), np.float32)
        n = args.repeats if b * i * o < 10**8 else max(20, args.repeats // 8)
        row = {"shape": [b, i, o], "numpy": {
            "x@w.T": _us(lambda: np.matmul(x, w.T, out=y), n),
            "x@(w.T contiguous)": _us(lambda: np.matmul(x, wt, out=y), n),
            "dz@w": _us(lambda: np.matmul(dz, w, out=dx), n),
            "dz.T@x": _us(lambda: np.matmul(dz.T, x, out=dw), n)}}
        if torch is not None:
            tx, tw, tdz, ty, tdx, tdw = map(torch.from_numpy, (x, w, dz, y, dx, dw))
            row["torch"] = {"x@w.T": _us(lambda: torch.mm(tx, tw.T, out=ty), n),
                            "dz@w": _us(lambda: torch.mm(tdz, tw, out=tdx), n),
                            "dz.T@x": _us(lambda: torch.mm(tdz.T, tx, out=tdw), n)}
        if blis_gemm is not None:
            row["blis"] = {"x@w.T": _us(lambda: blis_gemm(x, w, out=y, trans2=True), n),
                           "dz@w": _us(lambda: blis_gemm(dz, w, out=dx), n),
                           "dz.T@x": _us(lambda: blis_gemm(dz, x, out=dw, trans1=True), n)}
        rows.append(row)
        print(f"{b}x{i}x{o}: " + "; ".join(f"{lib} " + " ".join(f"{k} {v:.0f}" for k, v in r.items())
                                           for lib, r in row.items() if lib != "shape") + " (us)", flush=True)
    payload = {"machine": bm.machine_info(), "threads": args.threads, "repeats": args.repeats,
               "load_average_1_5_15": os.getloadavg(), "unit": "us, thread CPU time, best fifth", "rows": rows}
    bm.write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
