"""Data parallel on the CPU with MPI: all-reduce bandwidth against message size, and training step
time with 1, 2 and 4 ranks, with the share of communication hidden under backward; then the cost
model that projects scaling to 8 GPUs and to 4 machines (docs/performance.md, "Data parallel").

    python3 benchmarks/ddp.py                      # ranks 1 2 4, writes benchmarks/results/ddp_cpu.json
    python3 benchmarks/ddp.py --quick              # smaller sweep, fewer repeats
    python3 benchmarks/ddp.py --model-only         # only print the cost model from the last JSON

The driver launches ``mpiexec -n N python3 benchmarks/ddp.py --worker ...`` for each N, with
``--threads`` BLAS threads per rank (default 1: N ranks use N cores, a fair strong-scaling
comparison; ``--async-progress`` sets MPICH_ASYNC_PROGRESS=1, a progress thread per rank). A training step = zero_grad, forward of
``MLP(784-1024x4-10)`` (ReLU) on this rank's share of a global batch of 256, cross-entropy,
backward (buckets of --bucket-mb all-reduced as they become ready), SGD step. Per N it reports
the median step time, the same step's compute alone (``no_sync()``: no communication), the
gradient all-reduce alone (the same buckets, blocking), and DDP's exposed wait at the end of
backward; hidden share = 1 - exposed wait / all-reduce alone. Timings are medians over
--repeats steps after warm-up; the maximum over ranks is taken (the slowest rank sets the pace).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SIZES = [784, 1024, 1024, 1024, 1024, 10]
GLOBAL_BATCH = 256

# ---------------------------------------------------------------------------------------- cost model
# GPU compute time per training step, measured on one H200 (issue 10's table, gpugrad / PyTorch eager).
H200_CASES = [
    # label, layer dims, gpugrad ms, PyTorch eager ms
    ("batch 256, 8 x 512 FP32", [512] * 9 + [10], 3.27, 1.55),
    ("batch 1024, 16 x 128", [128] * 17 + [10], 22.6, 2.94),
    ("batch 65536, 8 x 256 FP32", [256] * 9 + [10], 6.81, 6.17),
    ("batch 8192, 8 x 4096 FP32", [4096] * 9 + [10], 127.2, 126.3),
]
LINKS = [
    # name, ranks, bus bandwidth per rank and direction (bytes/s), latency per ring step (s)
    ("8 GPUs, NVLink 4 (450 GB/s)", 8, 450e9, 2e-6),
    ("4 machines, 100 Gb/s", 4, 100e9 / 8, 10e-6),
    ("4 machines, 400 Gb/s", 4, 400e9 / 8, 10e-6),
]


def n_params(sizes: list) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def ring_allreduce_s(nbytes: float, n: int, bw: float, lat: float, bucket_bytes: float = 25 * 2**20) -> float:
    """Ring all-reduce: each rank sends and receives 2(N-1)/N of the bytes, in 2(N-1) steps per bucket."""
    buckets = max(1, -(-int(nbytes) // int(bucket_bytes)))
    return 2 * (n - 1) / n * nbytes / bw + buckets * 2 * (n - 1) * lat


def efficiency(compute_s: float, comm_s: float) -> tuple[float, float]:
    """(no overlap, overlap under backward): compute / step time. Backward is taken as 2/3 of the
    step's compute (two GEMMs per layer against one); overlapped, a step costs
    forward + max(backward, all-reduce)."""
    none = compute_s / (compute_s + comm_s)
    over = compute_s / (compute_s / 3 + max(2 * compute_s / 3, comm_s))
    return none, over


def cost_model(cpu_rows: list | None = None) -> list[dict]:
    rows = []
    cases = [(c[0] + " (H200)", c[1], c[2] * 1e-3, c[3] * 1e-3) for c in H200_CASES]
    if cpu_rows:
        one = next((r for r in cpu_rows if r["ranks"] == 1), None)
        if one is not None:
            cases.append((f"batch {GLOBAL_BATCH}, 784-1024x4-10 (this CPU, benchmarks/ddp.py 1 rank)", SIZES,
                          one["compute_ms"] * 1e-3, None))
    try:  # the same MLP and batch timed by benchmarks/mlp_cpu.py (2 threads, quieter machine)
        with open(os.path.join(ROOT, "benchmarks", "results", "mlp_cpu.json")) as f:
            a = next(r for r in json.load(f)["rows"] if r["case"] == "a")
        cases.append((f"batch {GLOBAL_BATCH}, 784-1024x4-10 (this CPU, mlp_cpu.json)", SIZES,
                      a["gpugrad_ms"] * 1e-3, a["torch_ms"] * 1e-3))
    except (OSError, ValueError, KeyError, StopIteration):
        pass
    for label, sizes, t_gg, t_torch in cases:
        grad_bytes = 4 * n_params(sizes)
        for link, n, bw, lat in LINKS:
            if "CPU" in label and "NVLink" in link:
                continue
            comm = ring_allreduce_s(grad_bytes, n, bw, lat)
            row = {"case": label, "link": link, "ranks": n, "grad_MB": grad_bytes / 1e6, "comm_ms": comm * 1e3,
                   "compute_ms": t_gg * 1e3}
            row["eff_no_overlap"], row["eff_overlap"] = efficiency(t_gg, comm)
            if t_torch is not None:
                row["torch_compute_ms"] = t_torch * 1e3
                row["torch_eff_no_overlap"], row["torch_eff_overlap"] = efficiency(t_torch, comm)
            rows.append(row)
    return rows


def print_model(rows: list) -> None:
    print("\ncost model (weak scaling: per-rank batch fixed; efficiency = compute / step time)")
    print("| case | link | grad MB | all-reduce ms | compute ms | efficiency, no overlap | overlapped |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        eff = f"{r['eff_no_overlap']:.0%}"
        ov = f"{r['eff_overlap']:.0%}"
        if "torch_compute_ms" in r:
            eff += f" ({r['torch_eff_no_overlap']:.0%})"
            ov += f" ({r['torch_eff_overlap']:.0%})"
        comp = f"{r['compute_ms']:.2f}" + (f" ({r['torch_compute_ms']:.2f})" if "torch_compute_ms" in r else "")
        print(f"| {r['case']} | {r['link']} | {r['grad_MB']:.1f} | {r['comm_ms']:.3f} | {comp} | {eff} | {ov} |")


# ---------------------------------------------------------------------------------------- worker
def _median(xs: list) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    import gpugrad as gg
    import gpugrad.distributed as dist
    from gpugrad.nn.parallel import DistributedDataParallel as DDP
    from gpugrad.backends import get_backend
    dev = args.device
    dist.init_process_group("nccl" if dev == "cuda" else "mpi", timeout=600)
    r, n = dist.get_rank(), dist.get_world_size()
    pg = dist.group()
    be = get_backend(dev)

    def slowest(t: float) -> float:
        a = np.array([t])
        pg.all_reduce_array(a, None, "max")
        return float(a[0])

    out: dict = {"ranks": n}
    if (n > 1 or dev == "cuda") and not args.no_sweep:
        sweep = []
        for p in range(10, args.max_pow + 1, 2):  # 1 KiB ... 2^max_pow bytes of float32
            buf = be.xp.ones(2 ** p // 4, dtype=np.float32)
            reps = max(3, min(200, int(2e8 / 2 ** p)))
            ts = []
            for _ in range(reps):
                pg.barrier()
                t0 = time.perf_counter()
                pg.all_reduce_array(buf, be, "sum")
                be.synchronize()
                ts.append(time.perf_counter() - t0)
            t = slowest(_median(ts))
            alg = 2 ** p / t
            sweep.append({"bytes": 2 ** p, "us": t * 1e6, "algbw_GBps": alg / 1e9,
                          "busbw_GBps": alg * 2 * (n - 1) / n / 1e9})
        out["allreduce"] = sweep

    gg.manual_seed(0)
    plain = gg.nn.MLP(SIZES, activation="relu", device=dev)  # the non-distributed step, for comparison
    plain_opt = gg.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    gg.manual_seed(0)
    model = gg.nn.MLP(SIZES, activation="relu", device=dev)
    net = DDP(model, bucket_cap_mb=args.bucket_mb)
    opt = gg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(r)
    share = GLOBAL_BATCH // n + (1 if r < GLOBAL_BATCH % n else 0)
    x = gg.tensor(rng.standard_normal((share, SIZES[0])).astype(np.float32), device=dev)
    y = gg.tensor(rng.integers(0, SIZES[-1], share), device=dev)
    F = gg.nn.functional

    def step(sync: bool | None) -> float:
        """sync True: the DDP step; False: the same under no_sync (compute alone); None: the plain model."""
        pg.barrier()
        t0 = time.perf_counter()
        m, o = (plain, plain_opt) if sync is None else (net, opt)
        o.zero_grad()
        loss = F.cross_entropy(m(x), y)
        if sync is False:
            with net.no_sync():
                loss.backward()
        else:
            loss.backward()
        o.step()
        be.synchronize()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        step(True)
        step(False)
        step(None)
    t_step, t_comp, t_plain, waits = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so other load on the machine hits all alike
        t_step.append(step(True))
        waits.append(net.last_wait_s)
        t_comp.append(step(False))
        t_plain.append(step(None))
    flats = [b.flat for b in net._buckets]
    t_comm = []
    for _ in range(args.repeats):
        pg.barrier()
        t0 = time.perf_counter()
        for f in flats:
            pg.all_reduce_array(f, be, "avg")
        be.synchronize()
        t_comm.append(time.perf_counter() - t0)
    out.update({"local_batch_rank0": share, "buckets": len(flats), "bucket_mb": args.bucket_mb,
                "grad_MB": sum(f.nbytes for f in flats) / 1e6,
                "step_ms": slowest(_median(t_step)) * 1e3, "compute_ms": slowest(_median(t_comp)) * 1e3,
                "plain_step_ms": slowest(_median(t_plain)) * 1e3,
                "allreduce_ms": slowest(_median(t_comm)) * 1e3 if n > 1 else 0.0,
                "exposed_wait_ms": slowest(_median(waits)) * 1e3 if n > 1 else 0.0})
    if n > 1 and out["allreduce_ms"] > 0:
        out["hidden_share"] = max(0.0, min(1.0, 1 - out["exposed_wait_ms"] / out["allreduce_ms"]))
    if r == 0:
        with open(args.json, "w") as f:
            json.dump(out, f)
    dist.destroy_process_group()


# ---------------------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, nargs="+", default=None, help="default: 1 2 4 on cpu, 1 on cuda")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: backend nccl, one GPU per rank (writes ddp_cuda.json)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bucket-mb", type=float, default=4.0)
    ap.add_argument("--max-pow", type=int, default=24, help="largest all-reduce message: 2^P bytes (default 24 = 16 MiB)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per rank (default 1)")
    ap.add_argument("--async-progress", action="store_true", help="MPICH_ASYNC_PROGRESS=1 (a progress thread per rank)")
    ap.add_argument("--quick", action="store_true", help="repeats 5, messages up to 4 MiB")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--model-only", action="store_true")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/ddp_<device>.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.repeats, args.max_pow = 5, 22
    if args.ranks is None:
        args.ranks = [1] if args.device == "cuda" else [1, 2, 4]
    if args.out is None:
        args.out = os.path.join(ROOT, "benchmarks", "results", f"ddp_{args.device}.json")
    if args.model_only:
        with open(args.out) as f:
            print_model(cost_model(json.load(f)["steps"]))
        return
    from gpugrad.benchmarking import machine_info, write_json
    from gpugrad.distributed.mpi import THREAD_VARS, import_mpi, mpiexec_command
    import_mpi("benchmarks/ddp.py")
    cores = os.cpu_count() or 1
    results, sweeps = [], {}
    for n in args.ranks:
        threads = str(args.threads)
        env = dict(os.environ, PYTHONPATH=ROOT, **dict.fromkeys(THREAD_VARS, threads))
        if args.async_progress:
            env["MPICH_ASYNC_PROGRESS"] = "1"
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "out.json")
            cmd = mpiexec_command(n, [
                os.path.abspath(__file__), "--worker", "--json", path, "--device", args.device,
                "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--bucket-mb", str(args.bucket_mb),
                "--max-pow", str(args.max_pow)] + (["--no-sweep"] if args.no_sweep else []))
            subprocess.run(cmd, check=True, env=env, timeout=1800)
            with open(path) as f:
                res = json.load(f)
        res["blas_threads_per_rank"] = int(threads)
        sweeps[n] = res.pop("allreduce", None)
        results.append(res)
        print(f"{n} rank(s): step {res['step_ms']:.2f} ms (plain model {res['plain_step_ms']:.2f} ms), "
              f"compute alone {res['compute_ms']:.2f} ms, "
              f"all-reduce alone {res['allreduce_ms']:.1f} ms, exposed wait {res['exposed_wait_ms']:.1f} ms"
              + (f", hidden {res['hidden_share']:.0%}" if "hidden_share" in res else ""), flush=True)
    base = next((r for r in results if r["ranks"] == 1), None)
    print(f"\ntraining step on {args.device}, MLP {SIZES}, global batch {GLOBAL_BATCH} (strong scaling), {cores} cores")
    print("| ranks | BLAS threads/rank | step ms | plain model ms | compute alone ms | all-reduce alone ms | exposed wait ms | hidden | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        sp = f"{base['step_ms'] / r['step_ms']:.2f}x" if base else "-"
        hid = f"{r['hidden_share']:.0%}" if "hidden_share" in r else "-"
        print(f"| {r['ranks']} | {r['blas_threads_per_rank']} | {r['step_ms']:.2f} | {r['plain_step_ms']:.2f} | {r['compute_ms']:.2f} | "
              f"{r['allreduce_ms']:.1f} | {r['exposed_wait_ms']:.1f} | {hid} | {sp} |")
    for n, sw in sweeps.items():
        if not sw:
            continue
        how = "NCCL" if args.device == "cuda" else "MPI over shared memory"
        print(f"\nall-reduce, {n} ranks (float32 sum, {how})")
        print("| bytes | time us | algbw GB/s | busbw GB/s |")
        print("|---:|---:|---:|---:|")
        for s in sw:
            print(f"| {s['bytes']:,} | {s['us']:.0f} | {s['algbw_GBps']:.2f} | {s['busbw_GBps']:.2f} |")
    model = cost_model(results)
    print_model(model)
    import mpi4py
    from mpi4py import MPI
    info = machine_info()
    if args.device == "cuda":
        from gpugrad.benchmarking import device_name
        info["gpu"] = device_name("cuda")
    info["load_average"] = os.getloadavg()
    info["blas_threads_per_rank"] = args.threads
    info["mpich_async_progress"] = bool(args.async_progress)
    info["mpi"] = MPI.Get_library_version().splitlines()[0].strip()
    info["mpi4py"] = mpi4py.__version__
    write_json(args.out, {"machine": info, "model_sizes": SIZES, "global_batch": GLOBAL_BATCH,
                          "steps": results, "allreduce": {str(k): v for k, v in sweeps.items() if v},
                          "cost_model": model, "links": LINKS, "h200_cases": H200_CASES})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
