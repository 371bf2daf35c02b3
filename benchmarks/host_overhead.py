"""Host cost of a CUDA training step, without a GPU: gpugrad's real CUDA backend on the strict CuPy
stand-in (tests/support/strict_cupy.py) with no-op kernels and no-op GEMMs.

    python benchmarks/host_overhead.py                          # this checkout only
    python benchmarks/host_overhead.py --baseline /tmp/old1da   # also a checkout of another commit
                                                                # (git worktree add /tmp/old1da 1da5382)

Per training step (forward, cross-entropy, backward, optimizer step: SGD momentum 0.9, and Adam) of an
MLP with DEPTH hidden Linear+ReLU layers of WIDTH, then Linear(WIDTH, 10) (the shapes of issue 10):
  launches  kernels the device would run: fused-kernel launches (RawModule) plus CuPy array operations
            (ufuncs, reductions, copies, fills, indexed writes); split into forward+loss+backward ("w/o
            opt") and optimizer (zero_grad + step); "/layer" is the growth per added Linear layer (the
            same run with one more hidden layer) and "+const" the rest, both without the optimizer
  gemms     cuBLAS calls
  d2h       device-to-host reads (each one a host synchronisation on a GPU)
  h2d       host-to-device copies (a hidden transfer per step; refused while a CUDA graph is captured)
  (JSON)    kernel_handle_lookups: RawModule.get_function calls in the step (0 once handles are cached)
  host us   median host microseconds per step (CPU time of the thread, time.thread_time: robust on a
            shared machine; the wall-clock median is in the JSON), best of --rounds processes, with every
            kernel and GEMM a no-op and the arrays of the remaining CuPy operations tiny
  gpugrad   the same less the time inside the stand-in's array operations (what CuPy's C code would
            do on a GPU): gpugrad's own Python work; "w/o opt": without the optimizer step
Counting does not depend on the batch or width (checked: the counts at the full shapes equal the
counts at the tiny proxy shapes used for timing; --full-counts recounts at full size where it fits).
Each (checkout, depth, optimizer) runs in its own processes (shapes of equal depth share them: the proxy
shape is the same), which load the stand-in by file path before importing that checkout's gpugrad; the
kernel set is cuda_c (RawModule). Writes benchmarks/results/host_overhead.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import operator
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STAND_IN = os.path.join(ROOT, "tests", "support", "strict_cupy.py")
# (label, batch, depth, width)
SHAPES = [("batch 256 x 8 x 512", 256, 8, 512), ("batch 1024 x 16 x 128", 1024, 16, 128),
          ("batch 65536 x 8 x 256", 65536, 8, 256), ("batch 8192 x 8 x 4096", 8192, 8, 4096)]
N_CLASSES = 10
TINY = (16, 16)  # (batch, width) of the timing proxy: same depth, negligible NumPy work
# CuPy functions that run no kernel (views, metadata, uninitialised allocation)
_NO_KERNEL = {"empty", "empty_like", "reshape", "ravel", "broadcast_to", "broadcast_arrays", "expand_dims",
              "squeeze", "swapaxes", "moveaxis", "rollaxis", "transpose", "atleast_1d", "atleast_2d",
              "atleast_3d", "shares_memory", "may_share_memory", "result_type", "can_cast", "ndim", "shape",
              "size", "promote_types", "dtype", "finfo", "iinfo", "isscalar", "min_scalar_type", "issubdtype",
              "_sort_inplace",
              # counted elsewhere: GEMMs, host<->device copies, and copies only when they copy (below)
              "matmul", "dot", "array", "asarray", "asnumpy", "ascontiguousarray", "copyto", "get_array_module",
              "from_dlpack"}


def load_stand_in(path: str = STAND_IN):
    """The stand-in module, loaded by file path (it imports NumPy only), installed as ``cupy``, with
    every fused.cu entry point a no-op, GEMMs that allocate their output without computing it, and a
    counter of CuPy array operations (``sc.counters.xp_ops``)."""
    spec = importlib.util.spec_from_file_location("strict_cupy_standin", path)
    sc = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sc
    spec.loader.exec_module(sc)
    np = sc.np
    c = sc.counters
    c.xp_ops = 0
    c.stand_in_s = 0.0  # time inside the stand-in's array operations (outermost calls)
    depth = [0]
    clock = time.perf_counter

    def timed(f):
        def g(*a, **k):
            if depth[0]:
                return f(*a, **k)
            depth[0] = 1
            t0 = clock()
            try:
                return f(*a, **k)
            finally:
                c.stand_in_s += clock() - t0
                depth[0] = 0
        g.__name__ = getattr(f, "__name__", "op")
        return g

    def counted(f):
        tf = timed(f)

        def g(*a, **k):
            if not depth[0]:
                c.xp_ops += 1
            return tf(*a, **k)
        g.__name__ = getattr(f, "__name__", "op")
        return g

    for name, f in list(sc._functions.items()):
        if name not in _NO_KERNEL and callable(f) and not isinstance(f, sc.ufunc):
            sc._functions[name] = counted(f)
    for name, f in list(sc._functions.items()):  # views, allocation, metadata: timed, not counted
        if (name in _NO_KERNEL or name in ("matmul", "dot", "array", "asarray")) and callable(f) \
                and not isinstance(f, (type, sc.ufunc)) and name not in ("ascontiguousarray", "copyto"):
            sc._functions[name] = timed(f)
    for m in ("reshape", "ravel", "view", "transpose", "swapaxes", "squeeze", "__getitem__", "get"):
        setattr(sc.ndarray, m, timed(getattr(sc.ndarray, m)))
    for prop in ("shape", "dtype", "ndim", "size", "nbytes", "itemsize", "strides"):
        # C-level attribute reads, as on a CuPy array (no Python frame charged to gpugrad)
        setattr(sc.ndarray, prop, property(operator.attrgetter("_a." + prop)))
    for prop in ("T", "flags"):
        fget = getattr(sc.ndarray, prop).fget
        setattr(sc.ndarray, prop, property(timed(fget)))
    for m in ("__call__", "reduce", "at", "outer"):
        setattr(sc.ufunc, m, counted(getattr(sc.ufunc, m)))
    for m in ("copy", "fill", "__setitem__"):
        setattr(sc.ndarray, m, counted(getattr(sc.ndarray, m)))
    astype = sc.ndarray.astype

    def astype_counted(self, *a, **k):
        r = astype(self, *a, **k)
        if r is not self and not depth[0]:
            c.xp_ops += 1
        return r
    sc.ndarray.astype = timed(astype_counted)
    sc._functions["copyto"] = counted(sc.copyto)
    contig = sc.ascontiguousarray

    def ascontiguous_counted(a, dtype=None):
        r = contig(a, dtype)
        if r is not a and isinstance(a, sc.ndarray) and not depth[0]:
            c.xp_ops += 1
        return r
    sc._functions["ascontiguousarray"] = timed(ascontiguous_counted)
    for name in ("scatter_add", "_erf"):
        if hasattr(sc, name):
            setattr(sc, name, counted(getattr(sc, name)))

    def gemm_no_compute(name, a, b, out=None):
        sc.counters.gemm_calls += 1
        shape = a.shape[:-1] + b.shape[-1:] if b.ndim > 1 else a.shape[:-1]
        dt = np.result_type(a.dtype, b.dtype)
        if out is not None:
            return out
        return sc._new(np.empty(shape, dt))
    sc._gemm = gemm_no_compute
    modules = sc._make_modules()  # rebuild the module objects with the counted functions
    sc._modules.clear()
    sc._modules.update(modules)
    sc._module = sc.cupy = modules["cupy"]
    # the module's ufunc loop shadows the GEMM functions with NumPy's matmul ufunc: cuBLAS calls, not
    # elementwise kernels (and counted as GEMMs)
    modules["cupy"].matmul, modules["cupy"].dot = sc.matmul, sc.dot
    sc.install()
    return sc


def register_noop_kernels(sc, root: str) -> None:
    """Every fused.cu entry point of ``root``: a launch only counts (the stand-in's argument checks are
    tests' business, and would add their own Python time to the host figure)."""
    path = os.path.join(root, "gpugrad", "kernels", "fused.cu")
    if not os.path.exists(path):  # a baseline tree from before kernels/ moved into gpugrad/
        path = os.path.join(root, "kernels", "fused.cu")
    with open(path, encoding="utf-8") as f:
        src = f.read()
    for name in sc.parse_entry_points(src):
        sc.register_kernel(name, lambda args, grid, block: None)
    c = sc.counters

    def launch(self, grid, block, args, *, shared_mem=0, stream=None) -> None:
        t0 = time.perf_counter()
        c.kernel_launches += 1
        c.kernels[self.name] = c.kernels.get(self.name, 0) + 1
        c.stand_in_s += time.perf_counter() - t0
    sc.RawKernel.__call__ = launch
    c.kernel_lookups = 0
    get_function = sc.RawModule.get_function

    def lookup(self, name):
        c.kernel_lookups += 1
        return get_function(self, name)
    sc.RawModule.get_function = lookup


def worker(root: str, batch: int, depth: int, width: int, opt_name: str, repeats: int, groups: int = 1) -> dict:
    os.environ["GPUGRAD_CUDA_KERNELS"] = "cuda_c"
    sc = load_stand_in()
    register_noop_kernels(sc, root)
    sys.path.insert(0, root)
    import numpy as np
    import gpugrad as gg
    assert os.path.dirname(os.path.dirname(os.path.abspath(gg.__file__))) == os.path.abspath(root), gg.__file__
    gg.manual_seed(0)
    model = gg.nn.MLP([width] * (depth + 1) + [N_CLASSES], activation="relu").to("cuda")
    ps = list(model.parameters())
    params = [{"params": ps[i::groups]} for i in range(groups)] if groups > 1 else ps  # interleaved groups
    opt = gg.optim.SGD(params, lr=0.01, momentum=0.9) if opt_name == "sgd" else gg.optim.Adam(params, lr=1e-3)
    rng = np.random.default_rng(0)
    x = gg.tensor(rng.standard_normal((batch, width), dtype=np.float32)).to("cuda")
    y = gg.tensor(rng.integers(0, N_CLASSES, batch)).to("cuda")
    F = gg.nn.functional
    c = sc.counters

    def snap():
        return (c.kernel_launches + c.xp_ops, c.gemm_calls, c.device_to_host, c.kernel_lookups, c.host_to_device)

    def step(phases=None):
        s0 = snap() if phases is not None else None
        loss = F.cross_entropy(model(x), y)
        s1 = snap() if phases is not None else None
        opt.zero_grad()
        loss.backward()
        s2 = snap() if phases is not None else None
        opt.step()
        if phases is not None:
            s3 = snap()
            phases.update(fwd=[b - a for a, b in zip(s0, s1)], bwd=[b - a for a, b in zip(s1, s2)],
                          opt=[b - a for a, b in zip(s2, s3)])
        return loss

    for _ in range(3):
        step()
    phases: dict = {}
    c.kernels.clear()
    before = snap()
    step(phases)
    after = snap()
    kernels = dict(c.kernels)
    launches, gemms, d2h, lookups, h2d = (b - a for a, b in zip(before, after))
    times, cpu, own, own_opt = [], [], [], []
    tt = time.thread_time
    for _ in range(repeats):
        s0 = c.stand_in_s
        c0, t0 = tt(), time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        s1, c1 = c.stand_in_s, tt()
        opt.step()
        c2 = tt()
        times.append(time.perf_counter() - t0)
        cpu.append(c2 - c0)
        own.append(c2 - c0 - (c.stand_in_s - s0))
        own_opt.append(c2 - c1 - (c.stand_in_s - s1))
    n_layers = depth + 1
    no_opt = phases["fwd"][0] + phases["bwd"][0]
    return {"launches": launches, "launches_excl_optimizer": no_opt, "launches_optimizer": phases["opt"][0],
            "gemms": gemms, "d2h": d2h, "h2d": h2d, "kernel_handle_lookups": lookups, "kernels": kernels,
            "d2h_by_phase": {k: v[2] for k, v in phases.items()}, "h2d_by_phase": {k: v[4] for k, v in phases.items()},
            "params": len(ps), "groups": groups, "host_us": statistics.median(cpu) * 1e6,
            "wall_us": statistics.median(times) * 1e6, "host_us_outside_stand_in": statistics.median(own) * 1e6,
            "host_us_outside_stand_in_optimizer": statistics.median(own_opt) * 1e6,
            "layers": n_layers}


def run_worker(root: str, batch: int, depth: int, width: int, opt: str, repeats: int, groups: int = 1) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", root, str(batch), str(depth), str(width), opt,
           "--repeats", str(repeats)] + (["--groups", str(groups)] if groups != 1 else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def proxy_runs(root: str, depth: int, opt: str, repeats: int, rounds: int) -> dict:
    """The best of ``rounds`` workers at the TINY proxy shape (lowest host time), with the per-layer
    launch slope from one more worker with one more hidden layer; or the first run's error."""
    runs = [run_worker(root, TINY[0], depth, TINY[1], opt, repeats) for _ in range(rounds)]
    ok = [x for x in runs if "error" not in x]
    r = min(ok, key=lambda x: x["host_us"]) if ok else runs[0]
    deeper = run_worker(root, TINY[0], depth + 1, TINY[1], opt, 1)
    if "error" not in r and "error" not in deeper:  # per layer: the slope over one more layer
        r["launches_per_layer"] = deeper["launches_excl_optimizer"] - r["launches_excl_optimizer"]
        r["launches_constant"] = r["launches_excl_optimizer"] - r["launches_per_layer"] * r["layers"]
        r["optimizer_launches_per_layer"] = deeper["launches_optimizer"] - r["launches_optimizer"]
    return r


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", help="root of a checkout of an older commit (e.g. /tmp/old1da at 1da5382)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="processes per (checkout, shape, optimizer); best kept")
    ap.add_argument("--full-counts", action="store_true",
                    help="also count at the full shapes that fit in memory (batch x width <= 2^21)")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--groups", type=int, default=1, help="param groups (parameters dealt round-robin)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "host_overhead.json"))
    args = ap.parse_args(argv)
    if args.worker:
        root, batch, depth, width, opt = args.worker
        print(json.dumps(worker(root, int(batch), int(depth), int(width), opt, args.repeats, args.groups)))
        return {}
    sys.path.insert(0, ROOT)
    from gpugrad.benchmarking import machine_info, write_json  # this checkout's harness (the parent process)
    roots = [("this", ROOT)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
    commits = {}
    for tag, root in roots:
        r = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        commits[tag] = r.stdout.strip() or "?"
    rows = []
    # every proxy run has the TINY shape, so it depends only on (checkout, depth, optimizer): shapes of
    # equal depth share one set of runs (the --full-counts recount below runs at each real shape)
    proxy: dict[tuple[str, int, str], dict] = {}
    for label, batch, depth, width in SHAPES:
        for opt in ("sgd", "adam"):
            row = {"shape": label, "batch": batch, "depth": depth, "width": width, "optimizer": opt}
            for tag, root in roots:
                if (root, depth, opt) not in proxy:
                    proxy[root, depth, opt] = proxy_runs(root, depth, opt, args.repeats, args.rounds)
                row[tag] = dict(proxy[root, depth, opt])
                if args.full_counts and batch * width <= 2 ** 21:
                    full = run_worker(root, batch, depth, width, opt, 1)
                    row[tag + "_full_counts_equal"] = all(full.get(k) == row[tag].get(k) for k in
                                                          ("launches", "gemms", "d2h"))
            rows.append(row)
    hdr = (f"{'shape':<24}{'opt':<5}{'commit':<9}{'launch':>7}{'w/o opt':>8}{'/layer':>7}{'+const':>7}{'opt':>5}"
           f"{'gemm':>5}{'d2h':>5}{'h2d':>5}{'host us':>9}{'gpugrad':>9}{'w/o opt':>9}")
    print(hdr)
    for row in rows:
        for tag, _ in roots:
            r = row[tag]
            if "error" in r:
                print(f"{row['shape']:<24}{row['optimizer']:<5}{commits[tag]:<9} error: {r['error']}")
                continue
            print(f"{row['shape']:<24}{row['optimizer']:<5}{commits[tag]:<9}{r['launches']:>7}"
                  f"{r['launches_excl_optimizer']:>8}{r.get('launches_per_layer', '?'):>7}"
                  f"{r.get('launches_constant', '?'):>7}{r['launches_optimizer']:>5}{r['gemms']:>5}{r['d2h']:>5}"
                  f"{r.get('h2d', '?'):>5}"
                  f"{r['host_us']:>9.0f}{r['host_us_outside_stand_in']:>9.0f}"
                  f"{r['host_us_outside_stand_in'] - r['host_us_outside_stand_in_optimizer']:>9.0f}")
        if len(roots) == 2 and "error" not in row["this"] and "error" not in row["baseline"]:
            a, b = row["this"], row["baseline"]
            row["host_us_ratio"] = a["host_us"] / b["host_us"]
            row["gpugrad_us_ratio"] = a["host_us_outside_stand_in"] / b["host_us_outside_stand_in"]
            row["gpugrad_us_ratio_excl_optimizer"] = (
                (a["host_us_outside_stand_in"] - a["host_us_outside_stand_in_optimizer"])
                / (b["host_us_outside_stand_in"] - b["host_us_outside_stand_in_optimizer"]))
            print(f"{'':<24}{'':<5}{'ratio':<9}{'':>52}{row['host_us_ratio']:>9.2f}{row['gpugrad_us_ratio']:>9.2f}"
                  f"{row['gpugrad_us_ratio_excl_optimizer']:>9.2f}")
    payload = {"machine": machine_info(), "commits": commits, "stand_in": os.path.relpath(STAND_IN, ROOT),
               "kernels": "cuda_c (no-op)", "timing_proxy": {"batch": TINY[0], "width": TINY[1]},
               "repeats": args.repeats, "rounds": args.rounds, "rows": rows}
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
