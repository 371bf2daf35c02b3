"""Training-step time of gpugrad vs PyTorch (eager) on one GPU, same shapes, same weights, same data.

    python benchmarks/mlp_gpu.py                       # all cases, kernel sets numba and cuda_c
    python benchmarks/mlp_gpu.py --cases c --kernels cuda_c --repeats 50
    python benchmarks/mlp_gpu.py --no-tf32             # full float32 GEMMs

Cases (8 hidden Linear+ReLU layers of the given width, then Linear(width, 10); input width = width):
  (a) batch 8192,  width 4096   (GEMM-bound; float32 with TF32)
  (b) batch 65536, width 256    (bandwidth-bound: the fused passes matter)
  (c) batch 256,   width 512    (launch/overhead-bound)
One step = forward, cross-entropy, backward, SGD(momentum 0.9) step. Before timing, one step's logits
and first-layer weight gradient are compared with a float64 reference (gpugrad in float64 on the GPU).
Timing: CUDA events around each step (so host overhead that starves the GPU counts), after warm-up,
median over --repeats steps, rotating among 4 fresh random batches. Also: achieved TFLOP/s (GEMM flops
of the step / time) and the GEMM-only floor: the step's matmuls alone through cuBLAS (cupy.matmul into
preallocated outputs, same TF32 setting). Writes benchmarks/results/mlp_gpu.json (device, versions,
date, command).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpugrad as gg  # noqa: E402
from gpugrad.benchmarking import (machine_info, mlp_flops, rel_error as rel, torch_mlp,  # noqa: E402
                                  usable_kernel_sets, write_json)

F = gg.nn.functional
CASES = {"a": (8192, 4096), "b": (65536, 256), "c": (256, 512)}
DEPTH = 8
N_CLASSES = 10
N_BATCHES = 4


def layer_sizes(width: int) -> list[int]:
    """The MLP's layer sizes: input ``width``, ``DEPTH`` hidden layers of ``width``, ``N_CLASSES`` out."""
    return [width] * (DEPTH + 1) + [N_CLASSES]


def cupy_event_times(fn, repeats: int, warmup: int) -> list[float]:
    import cupy as cp
    for i in range(warmup):
        fn(i)
    cp.cuda.get_current_stream().synchronize()
    times = []
    start, end = cp.cuda.Event(), cp.cuda.Event()
    for i in range(repeats):
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3)
    return times


def torch_event_times(fn, repeats: int, warmup: int) -> list[float]:
    import torch
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(repeats):
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return times


def build_gg(width: int, dtype, seed: int = 0):
    gg.manual_seed(seed)
    model = gg.nn.MLP(layer_sizes(width), activation="relu", device="cuda")
    return model.to(dtype)


def make_data(batch: int, width: int):
    import cupy as cp
    rs = cp.random.RandomState(1234)
    xs = [rs.standard_normal((batch, width), dtype=cp.float32) for _ in range(N_BATCHES)]
    ys = [rs.randint(0, N_CLASSES, batch).astype(cp.int64) for _ in range(N_BATCHES)]
    return xs, ys


def check_against_float64(width, xs, ys, tf32: bool, torch_model=None):
    """One forward/backward of gpugrad (float32) and PyTorch vs gpugrad float64: logits, dW of layer 0."""
    out = {}
    ref = build_gg(width, gg.float64)
    x64, y = gg.from_dlpack(xs[0]).to(gg.float64), gg.from_dlpack(ys[0])
    logits = ref(x64)
    F.cross_entropy(logits, y).backward()
    ref_logits, ref_dw = logits.numpy(), next(iter(ref.parameters())).grad.numpy()
    del ref, logits
    m32 = build_gg(width, gg.float32)
    with gg.cuda.allow_tf32(tf32):
        lg = m32(gg.from_dlpack(xs[0]))
        F.cross_entropy(lg, y).backward()
    out["gpugrad"] = {"logits": rel(lg.numpy(), ref_logits), "dW0": rel(next(iter(m32.parameters())).grad.numpy(),
                                                                         ref_dw)}
    if torch_model is not None:
        import torch
        torch_model.zero_grad(set_to_none=True)
        tl = torch_model(torch.from_dlpack(xs[0]))
        torch.nn.functional.cross_entropy(tl, torch.from_dlpack(ys[0])).backward()
        out["torch"] = {"logits": rel(tl.detach().cpu().numpy(), ref_logits),
                        "dW0": rel(torch_model[0].weight.grad.cpu().numpy(), ref_dw)}
        torch_model.zero_grad(set_to_none=True)
    return out


def torch_model_like(gg_model, width):
    import torch
    return torch_mlp(torch, layer_sizes(width), like=gg_model, device="cuda")


def gemm_floor(batch: int, width: int, repeats: int, tf32: bool) -> float:
    """The step's matmuls alone (cupy.matmul -> cuBLAS into preallocated outputs)."""
    import cupy as cp
    rs = cp.random.RandomState(7)
    plan = []
    sizes = layer_sizes(width)
    for i, (fin, fout) in enumerate(zip(sizes[:-1], sizes[1:])):
        x = rs.standard_normal((batch, fin), dtype=cp.float32)
        w = rs.standard_normal((fout, fin), dtype=cp.float32)
        dz = rs.standard_normal((batch, fout), dtype=cp.float32)
        z, dw, dx = cp.empty((batch, fout), cp.float32), cp.empty((fout, fin), cp.float32), cp.empty((batch, fin),
                                                                                                       cp.float32)
        plan.append((x, w, dz, z, dw, dx, i == 0))

    def run(_):
        for x, w, dz, z, dw, dx, first in plan:
            cp.matmul(x, w.T, out=z)
            cp.matmul(dz.T, x, out=dw)
            if not first:
                cp.matmul(dz, w, out=dx)
    with gg.cuda.allow_tf32(tf32):
        gg.tensor([0.0], device="cuda")  # make sure the compute type is applied
        return statistics.median(cupy_event_times(run, repeats, 3))


def run_case(name: str, args, torch_mod) -> dict:
    import cupy as cp
    batch, width = CASES[name]
    flops = mlp_flops(layer_sizes(width), batch)  # GEMM flops of one step
    xs, ys = make_data(batch, width)
    row = {"case": name, "batch": batch, "width": width, "depth": DEPTH, "tf32": args.tf32, "gemm_flops": flops}
    gg.cuda.set_tf32(args.tf32)
    tm = None
    if torch_mod is not None:
        torch_mod.backends.cuda.matmul.allow_tf32 = args.tf32
        torch_mod.backends.cudnn.allow_tf32 = args.tf32
        tm = torch_model_like(build_gg(width, gg.float32), width)
    row["error_vs_float64"] = check_against_float64(width, xs, ys, args.tf32, tm)

    row["gpugrad"] = {}
    for kset in args.kernels:
        gg.cuda.set_kernels(kset)
        model = build_gg(width, gg.float32)
        opt = gg.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        data = [(gg.from_dlpack(x), gg.from_dlpack(y)) for x, y in zip(xs, ys)]

        def step(i, model=model, opt=opt, data=data):
            x, y = data[i % N_BATCHES]
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        gg.cuda.reset_peak_memory_stats()
        t = cupy_event_times(step, args.repeats, args.warmup)
        med = statistics.median(t)
        row["gpugrad"][kset] = {"median_s": med, "min_s": min(t), "tflops": flops / med / 1e12,
                                "peak_mem_bytes": gg.cuda.max_memory_allocated(),
                                "kernel_fallbacks": {str(k): v for k, v in gg.cuda.kernel_fallbacks().items()}}
        del model, opt, data
        cp.get_default_memory_pool().free_all_blocks()

    if tm is not None:
        torch = torch_mod
        opt_t = torch.optim.SGD(tm.parameters(), lr=1e-3, momentum=0.9)
        tdata = [(torch.from_dlpack(x), torch.from_dlpack(y)) for x, y in zip(xs, ys)]

        def tstep(i):
            x, y = tdata[i % N_BATCHES]
            opt_t.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(tm(x), y).backward()
            opt_t.step()
        torch.cuda.reset_peak_memory_stats()
        t = torch_event_times(tstep, args.repeats, args.warmup)
        med = statistics.median(t)
        row["torch"] = {"median_s": med, "min_s": min(t), "tflops": flops / med / 1e12,
                        "peak_mem_bytes": int(torch.cuda.max_memory_allocated())}
        del tm, opt_t, tdata
        torch.cuda.empty_cache()
    row["gemm_floor_s"] = gemm_floor(batch, width, args.repeats, args.tf32)
    return row


def versions(torch_mod) -> dict:
    import cupy as cp
    import numba
    out = {"gpugrad": gg.__version__, "cupy": cp.__version__, "numba": numba.__version__,
           "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(), "cuda_driver": cp.cuda.runtime.driverGetVersion()}
    try:
        import numba_cuda  # type: ignore
        out["numba_cuda"] = getattr(numba_cuda, "__version__", "?")
    except ImportError:
        pass
    if torch_mod is not None:
        out["torch"] = torch_mod.__version__
        out["torch_cuda"] = torch_mod.version.cuda
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="abc")
    ap.add_argument("--kernels", default="cuda_c,numba",
                    help="comma-separated kernel sets: cuda_c, numba, xp (numba is skipped, saying why, where unusable)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-tf32", dest="tf32", action="store_false")
    ap.add_argument("--no-torch", dest="torch", action="store_false")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "mlp_gpu.json"))
    args = ap.parse_args()
    args.kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    if not gg.cuda.is_available():
        sys.exit("mlp_gpu.py: no usable CUDA GPU: " + gg.backends.cuda.probe()[1])
    os.environ.setdefault("GPUGRAD_STRICT_KERNELS", "1")
    args.kernels, skipped_kernels = usable_kernel_sets(args.kernels)
    torch_mod = None
    if args.torch:
        try:
            import torch
            torch_mod = torch if torch.cuda.is_available() else None
        except ImportError:
            pass
    rows = [run_case(c, args, torch_mod) for c in args.cases]
    info = machine_info()
    info.update(device=gg.cuda.get_device_name(), versions=versions(torch_mod))
    write_json(args.out, {"benchmark": "mlp_gpu", "machine": info, "results": rows, "skipped_kernels": skipped_kernels})

    hdr = (f"{'case':>4} {'batch':>6} {'width':>5} {'kernels':>7} {'gpugrad ms':>10} {'torch ms':>9} {'ratio':>6} "
           f"{'gg TF/s':>8} {'pt TF/s':>8} {'GEMM ms':>8} {'floor %':>7}  errors vs float64 (gg / torch)")
    print(f"device: {info['device']}  TF32: {args.tf32}  versions: {info['versions']}")
    print(hdr)
    for r in rows:
        e = r["error_vs_float64"]
        err = f"logits {e['gpugrad']['logits']:.1e}/{e.get('torch', {}).get('logits', float('nan')):.1e} " \
              f"dW0 {e['gpugrad']['dW0']:.1e}/{e.get('torch', {}).get('dW0', float('nan')):.1e}"
        for k, g in r["gpugrad"].items():
            t = r.get("torch")
            tms = t["median_s"] * 1e3 if t else float("nan")
            print(f"{r['case']:>4} {r['batch']:>6} {r['width']:>5} {k:>7} {g['median_s'] * 1e3:>10.3f} {tms:>9.3f} "
                  f"{g['median_s'] * 1e3 / tms if t else float('nan'):>6.2f} {g['tflops']:>8.1f} "
                  f"{(t['tflops'] if t else float('nan')):>8.1f} {r['gemm_floor_s'] * 1e3:>8.3f} "
                  f"{100 * r['gemm_floor_s'] / g['median_s']:>6.0f}%  {err}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
