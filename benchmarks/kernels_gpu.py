"""Achieved bandwidth of each fused kernel against the measured device-to-device copy bandwidth.

    python benchmarks/kernels_gpu.py                     # rows x cols = 65536 x 1024 float32
    python benchmarks/kernels_gpu.py --rows 8192 --cols 4096 --kernels numba,cuda_c,xp

For each fused op of the CUDA backend (bias+activation forward, activation backward + bias gradient,
softmax-cross-entropy forward and backward, SGD-momentum and Adam steps) and each kernel set (``numba``,
``cuda_c``, and ``xp`` = the same op as plain CuPy ops, the unfused baseline), the backend method is
checked against the kernels' float64 NumPy reference on a small shape, then timed on the large one:
CUDA events around 10 back-to-back calls, median of --repeats such groups. Bytes = the fewest the op
must move (each input read once, each output written once); GB/s = bytes / time; "% copy" compares
with a large device-to-device copy (bytes read + written). The per-call host overhead (a 1 x 32 call,
wall clock) is printed too: it decides small problems. Writes benchmarks/results/kernels_gpu.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpugrad as gg  # noqa: E402
from gpugrad.benchmarking import machine_info, rel_error as rel, usable_kernel_sets, write_json  # noqa: E402
from gpugrad.kernels import act_bias_grad as kabg, bias_act as kba, softmax_xent as ksx  # noqa

INNER = 10


def event_time(fn, repeats: int) -> float:
    """Median seconds per call: events around INNER back-to-back calls, ``repeats`` groups."""
    import cupy as cp
    for _ in range(3):
        fn()
    cp.cuda.get_current_stream().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        for _ in range(INNER):
            fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3 / INNER)
    return statistics.median(times)


def host_overhead(fn, n: int = 200) -> float:
    """Wall-clock microseconds per call of a tiny launch (host side)."""
    import cupy as cp
    for _ in range(10):
        fn()
    cp.cuda.get_current_stream().synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    cp.cuda.get_current_stream().synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def copy_bandwidth(nbytes: int, repeats: int) -> float:
    import cupy as cp
    src = cp.random.RandomState(0).standard_normal(nbytes // 4, dtype=cp.float32)
    dst = cp.empty_like(src)
    t = event_time(lambda: cp.copyto(dst, src), repeats)
    return 2 * src.nbytes / t


def ops(be, cp, M, N, dtype, rng):
    """name -> (make state, call(state), bytes moved, check(small state) -> rel. error)."""
    isz = np.dtype(dtype).itemsize

    def z_b(m, n):
        return (cp.asarray(rng.standard_normal((m, n)).astype(dtype)), cp.asarray(rng.standard_normal(n).astype(dtype)))

    def fwd(act):
        def make(m, n):
            z, b = z_b(m, n)
            return {"z": z, "b": b, "z0": z.get(), "b0": b.get()}

        def call(s):
            return be.bias_act(s["z"], s["b"], act)

        def check(s):
            y, _ = call(s)
            return rel(y.get(), kba.bias_act_ref(s["z0"], s["b0"], act)[0])
        nbytes = (2 if act != "gelu" else 3) * M * N * isz
        return make, call, nbytes, check

    def bwd(act):
        def make(m, n):
            z, b = z_b(m, n)
            y, saved = be.bias_act(z, b, act)
            dy = cp.asarray(rng.standard_normal((m, n)).astype(dtype))
            return {"dy": dy, "saved": saved}

        def call(s):
            return be.act_bias_backward(s["dy"], s["saved"], act, True)

        def check(s):
            dz, db = call(s)
            dz_r, db_r = kabg.act_bias_grad_ref(s["dy"].get(), s["saved"].get(), act)
            return max(rel(dz.get(), dz_r), rel(db.get(), db_r))
        return make, call, 3 * M * N * isz, check

    def sx_fwd():
        def make(m, n):
            x = cp.asarray((rng.standard_normal((m, n)) * 3).astype(dtype))
            t = cp.asarray(rng.integers(0, n, m))
            return {"x": x, "t": t}

        def call(s):
            return be.softmax_cross_entropy(s["x"], s["t"])

        def check(s):
            loss, p = call(s)
            lr_, pr = ksx.softmax_xent_ref(s["x"].get(), s["t"].get())
            return max(rel(loss.get(), lr_), rel(p.get(), pr))
        return make, call, 2 * M * N * isz + M * (8 + isz), check

    def sx_bwd():
        def make(m, n):
            x = cp.asarray(rng.standard_normal((m, n)).astype(dtype))
            t = cp.asarray(rng.integers(0, n, m))
            _, p = be.softmax_cross_entropy(x, t)
            return {"p": p, "t": t, "g": cp.asarray(np.float32(1.0).astype(dtype))}

        def call(s):
            return be.cross_entropy_backward(s["p"], s["t"], s["g"], 1.0 / s["p"].shape[0])

        def check(s):
            d = call(s)
            return rel(d.get(), ksx.softmax_xent_backward_ref(s["p"].get(), s["t"].get(), 1.0,
                                                             1.0 / s["p"].shape[0]))
        return make, call, 2 * M * N * isz + M * 8, check

    def _optim(name, opts, traffic):
        from gpugrad.backends.base import Backend
        from gpugrad.kernels.optim_rules import RULES
        rule = RULES[name]
        cpu = gg.tensor([0.0])._backend()

        def make(m, n):
            p, g = z_b(m, n)[0].reshape(-1), cp.asarray(rng.standard_normal(m * n).astype(dtype))
            s = {"p": p, "g": g}
            for st, on in zip(rule.state, rule.present(opts)):
                if on:
                    s[st] = cp.zeros_like(p)
            return {"a": s, "host": {k: v.get().astype(np.float64) for k, v in s.items()}}

        def call(s):
            return be.optim_step(rule, s["a"], 0, s["a"]["p"].shape[0], opts, rule.derive(1, opts))

        def check(s):
            call(s)
            h = s["host"]
            Backend.optim_step(cpu, rule, h, 0, h["p"].shape[0], opts, rule.derive(1, opts))
            return max(rel(s["a"][k].get(), h[k]) for k in h)
        return make, call, traffic * M * N * isz, check

    def sgd():
        return _optim("sgd", dict(lr=1e-3, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False,
                                  maximize=False, first=True), 5)

    def adam():
        return _optim("adam", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False,
                                   amsgrad=False, maximize=False), 7)

    return {"bias_act[relu]": fwd("relu"), "bias_act[gelu]": fwd("gelu"), "act_bias_grad[relu]": bwd("relu"),
            "act_bias_grad[gelu]": bwd("gelu"), "softmax_xent_fwd": sx_fwd(), "softmax_xent_bwd": sx_bwd(),
            "sgd_momentum": sgd(), "adam": adam()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "float64"])
    ap.add_argument("--kernels", default="cuda_c,numba,xp", help="numba is skipped, saying why, where unusable")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "kernels_gpu.json"))
    args = ap.parse_args()
    if not gg.cuda.is_available():
        sys.exit("kernels_gpu.py: no usable CUDA GPU: " + gg.backends.cuda.probe()[1])
    os.environ.setdefault("GPUGRAD_STRICT_KERNELS", "1")
    import cupy as cp
    be = gg.tensor([0.0], device="cuda")._backend()
    dtype = np.dtype(args.dtype)
    M, N = args.rows, args.cols
    copy_bw = copy_bandwidth(max(M * N * dtype.itemsize, 1 << 30), args.repeats)
    rng = np.random.default_rng(0)
    tol = {"float64": 1e-10, "float32": 1e-5, "float16": 1e-2}[args.dtype]
    rows = []
    ksets, skipped_kernels = usable_kernel_sets([k.strip() for k in args.kernels.split(",") if k.strip()])
    for kset in ksets:
        gg.cuda.set_kernels(kset)
        for name, (make, call, nbytes, check) in ops(be, cp, M, N, dtype, rng).items():
            err = check(make(257, 77))  # odd sizes: partial blocks and tiles
            big = make(M, N)
            t = event_time(lambda s=big: call(s), args.repeats)
            tiny = make(1, 32)
            over = host_overhead(lambda s=tiny: call(s))
            rows.append({"op": name, "kernels": kset, "rows": M, "cols": N, "dtype": args.dtype, "seconds": t,
                         "bytes": nbytes, "GBps": nbytes / t / 1e9, "pct_copy": 100 * nbytes / t / copy_bw,
                         "host_us_per_call": over, "rel_err_small": err, "ok": bool(err < tol)})
            del big, tiny
            cp.get_default_memory_pool().free_all_blocks()
    info = machine_info()
    import numba
    info.update(device=gg.cuda.get_device_name(), cupy=cp.__version__, numba=numba.__version__,
                cuda_runtime=cp.cuda.runtime.runtimeGetVersion(), cuda_driver=cp.cuda.runtime.driverGetVersion())
    write_json(args.out, {"benchmark": "kernels_gpu", "machine": info, "copy_GBps": copy_bw / 1e9, "results": rows,
                          "fallbacks": {str(k): v for k, v in gg.cuda.kernel_fallbacks().items()},
                          "skipped_kernels": skipped_kernels})
    print(f"device: {info['device']}  {M} x {N} {args.dtype}  device-to-device copy: {copy_bw / 1e9:.0f} GB/s "
          "(read + write)")
    print(f"{'op':<22} {'kernels':>7} {'ms':>8} {'GB/s':>7} {'% copy':>7} {'host us/call':>12} {'rel err':>8}")
    for r in rows:
        print(f"{r['op']:<22} {r['kernels']:>7} {r['seconds'] * 1e3:>8.3f} {r['GBps']:>7.0f} {r['pct_copy']:>6.0f}% "
              f"{r['host_us_per_call']:>12.1f} {r['rel_err_small']:>8.1e}{'' if r['ok'] else '  FAIL'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
