"""GPU fast paths beyond eager execution, each beside PyTorch eager (and torch.compile where it runs)
in the same run, on the same shapes and weights.

GPU SESSION - the commands to run (about 6 minutes of device time in all; none has run yet):

    # here, before the session (the GPU image has nvmath-python's dependencies: cuda-bindings,
    # cuda-core, cuda-pathfinder, nvidia-cublas; /.whl/ is git-ignored, so pass carry=[".whl"]):
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d .whl nvmath-python==1.0.0
    # there:
    python3 -m pip install --no-deps --no-index .whl/nvmath_python-1.0.0-*.whl
    GPUGRAD_STRICT_KERNELS=1 python3 -m pytest -q -m gpu -p no:cacheprovider \
        tests/test_cublas.py tests/test_cuda_graphs.py        # bindings, capture, graphed == eager (SGD, Adam)
    python3 benchmarks/mlp_gpu_fast.py --cases gemm,graphs --repeats 50          # FP32
    python3 benchmarks/mlp_gpu_fast.py --cases graphs --tf32 --repeats 50 --out benchmarks/results/mlp_gpu_fast_tf32.json
    GPUGRAD_CUBLAS_BINDING=ctypes python3 benchmarks/mlp_gpu_fast.py --cases gemm --out /tmp/gemm_ctypes.json
    python3 benchmarks/mlp_gpu_fast.py --cases epilogues,fused --out benchmarks/results/mlp_gpu_fast_rest.json
    # then the fused-MLP profile: the ncu lines in gpugrad/experimental/fused_mlp_kernels.py's docstring

    python benchmarks/mlp_gpu_fast.py [--cases gemm,graphs,epilogues,fused] [--repeats 30] [--quick]

(gemm)      the linear layer's three GEMMs (x @ w.T, dz @ w, dz.T @ x) at batch 256 x 512 x 512 and
            8192 x 4096 x 4096, float32 (and TF32 with --tf32) and float16: ``cupy.matmul`` against
            gpugrad's capturable cuBLAS handle (``gpugrad/backends/cuda/cublas.py``, nvmath or ctypes
            binding): the evidence for ``gg.cuda.set_gemm_path("cublas")`` as the default.
(graphs)    batch 256, 8 hidden layers of 512 (+ a 10-class output), cross-entropy, SGD(momentum): one
            training step eager vs ``gg.cuda.graphed_step`` (one CUDA graph per step) vs PyTorch eager,
            torch.compile and torch.compile(mode="reduce-overhead") (CUDA graphs too); also Adam graphed
            (``capturable=True``). Target: graphed <= 1/3 of PyTorch eager and
            faster than reduce-overhead.
(epilogues) batch 8192, 8 layers of 4096 (7 ReLU + linear), forward + backward: the fused-kernel path
            (GEMM + one bias/activation pass) vs cuBLASLt epilogues (bias/ReLU/bias-grad inside the
            GEMMs, nvmath-python) vs the GEMM-only floor (the 24 GEMMs alone) vs PyTorch eager.
(fused)     batch 2**18, 8 hidden layers of 64 and of 128 (input 32, output 16), training step: the
            EXPERIMENTAL fully fused tensor-core MLP (``FusedMLP``, float16; out of the public API) vs
            ``nn.MLP`` float32 vs PyTorch eager float32 and float16 (autocast) and torch.compile.

Before any timing, every fast path is compared with the float64 CPU reference (gpugrad's NumPy path in
float64, same weights, same batch; at the full shape, or at a reduced batch/width for the large cases
where float64 on the CPU would take minutes - the reduced shape is recorded). Times are medians of
CUDA-event-timed steps after warm-up. Results: benchmarks/results/mlp_gpu_fast.json (device, date,
versions, command). Without a CUDA GPU the script says so and exits without measuring anything.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpugrad as gg  # noqa: E402
import gpugrad.nn.functional as F  # noqa: E402
from gpugrad import benchmarking  # noqa: E402
from gpugrad.benchmarking import machine_info, rel_error as _rel, write_json  # noqa: E402
from gpugrad.training import training_step  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "mlp_gpu_fast.json")


# ---------------------------------------------------------------------------------------- timing
def time_cupy(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median seconds per call, CUDA events on CuPy's current stream around each call."""
    import cupy
    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        a, b = cupy.cuda.Event(), cupy.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(cupy.cuda.get_elapsed_time(a, b) / 1e3)
    return statistics.median(times)


def time_torch(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return statistics.median(times)


def _torch():
    try:
        import torch
        if torch.cuda.is_available():
            return torch
        print("  PyTorch is installed without CUDA: no PyTorch baseline")
    except ImportError:
        print("  PyTorch not installed: no PyTorch baseline (pip install torch)")
    return None


def torch_mlp(torch, sizes, gg_model, dtype=None):
    m = benchmarking.torch_mlp(torch, sizes, like=gg_model, device="cuda")
    return m if dtype is None else m.to(dtype)


def torch_variants(torch, sizes, gg_model, x_np, y_np, step_kind: str, repeats: int, warmup: int,
                   amp: bool = False, loss: str = "mse") -> dict:
    """PyTorch eager (and autocast float16 with ``amp``), torch.compile, reduce-overhead. ``loss``:
    ``"mse"`` (float targets) or ``"ce"`` (integer class targets)."""
    out = {}
    loss_kind = loss
    x = torch.from_numpy(x_np).cuda()
    y = torch.from_numpy(y_np).cuda()

    def make(compile_mode=None, use_amp=False):
        m = torch_mlp(torch, sizes, gg_model)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
        fwd = m if compile_mode is None else torch.compile(m, mode=compile_mode)

        def step():
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                out_ = fwd(x).float()
                loss = (torch.nn.functional.cross_entropy(out_, y) if loss_kind == "ce"
                        else torch.nn.functional.mse_loss(out_, y))
            if step_kind == "train":
                opt.zero_grad(set_to_none=True)
            loss.backward()
            if step_kind == "train":
                opt.step()
            else:
                for p in m.parameters():
                    p.grad = None
            return loss
        return step

    variants = [("torch eager", None, False)]
    if amp:
        variants.append(("torch eager fp16 autocast", None, True))
    variants += [("torch.compile", "default", False), ("torch.compile reduce-overhead", "reduce-overhead", False)]
    for name, mode, use_amp in variants:
        try:
            out[name] = time_torch(make(mode, use_amp), repeats, warmup)
        except Exception as e:  # torch.compile needs triton and a compiler; report, do not fail
            out[name] = None
            print(f"  {name}: not run ({type(e).__name__}: {str(e)[:120]})")
    return out


# ---------------------------------------------------------------------------------------- cases
def _reference_step(sizes, state_dict, x_np, y_np, n_steps: int, lr: float):
    """float64 CPU: n cross-entropy + SGD(momentum) training steps; returns (losses, params)."""
    m = gg.nn.MLP(sizes).to(gg.float64)
    m.load_state_dict({k: v.cpu().double() for k, v in state_dict.items()})
    opt = gg.optim.SGD(m.parameters(), lr=lr, momentum=0.9)
    x, y = gg.tensor(x_np, dtype=gg.float64), gg.tensor(y_np, dtype=gg.int64)
    step = training_step(m, opt, F.cross_entropy)
    losses = [step(x, y).item() for _ in range(n_steps)]
    return losses, [p.numpy() for p in m.parameters()]


def case_graphs(args, torch) -> dict:
    from gpugrad.backends.cuda import cublas
    from gpugrad.cuda import graphed_step
    batch, sizes = (256, [512] + [512] * 8 + [10]) if not args.quick else (256, [128] * 4 + [10])
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y_np = rng.integers(0, sizes[-1], batch).astype(np.int64)
    gg.manual_seed(0)
    model = gg.nn.MLP(sizes).to("cuda")
    init = {k: v.cpu() for k, v in model.state_dict().items()}
    x, y = gg.tensor(x_np, device="cuda"), gg.tensor(y_np, device="cuda")
    lr = 1e-3

    def make_step(m, adam: bool = False):
        opt = (gg.optim.Adam(m.parameters(), lr=lr, capturable=True) if adam
               else gg.optim.SGD(m.parameters(), lr=lr, momentum=0.9))
        return training_step(m, opt, F.cross_entropy), opt

    def fresh():
        m = gg.nn.MLP(sizes).to("cuda")
        m.load_state_dict({k: v.to("cuda") for k, v in init.items()})
        return m

    # correctness: 5 graphed steps vs 5 float64 CPU steps, same weights and batch
    step, opt = make_step(model)
    gstep = graphed_step(step, optimizers=[opt])
    losses = [gstep(x, y).item() for _ in range(5)]
    ref_losses, ref_params = _reference_step(sizes, init, x_np, y_np, 5, lr)
    err = max(_rel(losses, ref_losses), max(_rel(p.numpy(), q) for p, q in zip(model.parameters(), ref_params)))
    check = {"vs_float64_cpu_rel_err": err, "shape": "full"}
    assert err < (1e-2 if args.tf32 else 1e-3), f"graphed step disagrees with the float64 CPU reference: {err}"

    res: dict = {"batch": batch, "sizes": sizes, "loss": "cross_entropy", "check": check, "ms": {},
                 "cublas_binding": cublas.binding().name}
    eager_model = fresh()
    eager_step, _ = make_step(eager_model)
    res["ms"]["gpugrad eager"] = time_cupy(lambda: eager_step(x, y), args.repeats, args.warmup) * 1e3
    cublas.set_gemm_path("cublas")
    try:
        res["ms"]["gpugrad eager, GEMMs via the capturable handle"] = \
            time_cupy(lambda: eager_step(x, y), args.repeats, args.warmup) * 1e3
    finally:
        cublas.set_gemm_path("auto")
    res["ms"]["gpugrad graphed_step"] = time_cupy(lambda: gstep(x, y), args.repeats, args.warmup) * 1e3
    astep, aopt = make_step(fresh(), adam=True)
    agraph = graphed_step(astep, optimizers=[aopt])
    res["ms"]["gpugrad graphed_step, Adam(capturable)"] = \
        time_cupy(lambda: agraph(x, y), args.repeats, args.warmup) * 1e3
    if torch is not None:
        for k, v in torch_variants(torch, sizes, eager_model, x_np, y_np, "train", args.repeats, args.warmup,
                                   loss="ce").items():
            res["ms"][k] = None if v is None else v * 1e3
    return res


def case_gemm(args, torch) -> dict:
    """Per-GEMM time of the linear layer's three products: cupy.matmul vs the capturable handle."""
    import cupy
    from gpugrad.backends.cuda import cublas
    g = cublas.CublasGemm(cublas.binding(), cupy)
    out: dict = {"binding": g.binding.name, "us_per_gemm": {}, "max_rel_err_vs_cupy": 0.0}
    shapes = [(256, 512, 512), (8192, 4096, 4096)] if not args.quick else [(256, 512, 512)]
    tf32 = gg.cuda.get_tf32()
    for dtype in (np.float32, np.float16):
        for M, K, N in shapes:
            rng = np.random.default_rng(M)
            x = cupy.asarray(rng.standard_normal((M, K)).astype(dtype))
            w = cupy.asarray(rng.standard_normal((N, K)).astype(dtype))
            dz = cupy.asarray(rng.standard_normal((M, N)).astype(dtype))
            st = cupy.cuda.get_current_stream().ptr
            ours = [lambda: g.matmul(x, w, False, True, stream=st, tf32=tf32),
                    lambda: g.matmul(dz, w, stream=st, tf32=tf32),
                    lambda: g.matmul(dz, x, True, False, stream=st, tf32=tf32)]
            theirs = [lambda: cupy.matmul(x, w.T), lambda: cupy.matmul(dz, w), lambda: cupy.matmul(dz.T, x)]
            for a, b in zip(ours, theirs):
                ra, rb = a().astype(np.float64), b().astype(np.float64)
                out["max_rel_err_vs_cupy"] = max(out["max_rel_err_vs_cupy"],
                                                 float(cupy.linalg.norm(ra - rb) / cupy.linalg.norm(rb)))
            n = 20 if M >= 4096 else 200
            for name, fns in (("cupy.matmul", theirs), (f"capturable ({g.binding.name})", ours)):
                def run(fns=fns):
                    for _ in range(n):
                        for f in fns:
                            f()
                t = time_cupy(run, max(3, args.repeats // 5), 2)
                out["us_per_gemm"][f"{np.dtype(dtype).name} {M}x{K}x{N} {name}"] = t / (3 * n) * 1e6
    out["ms"] = {}  # no per-step times in this case
    return out


def case_epilogues(args, torch) -> dict:
    from gpugrad.experimental import epilogue_kernels as E
    from gpugrad.experimental import epilogue_mlp as em
    batch, width, nl = (8192, 4096, 8) if not args.quick else (1024, 1024, 4)
    sizes = [width] * (nl + 1)
    res: dict = {"batch": batch, "sizes": sizes, "ms": {}}
    ok, why = E.available()
    # correctness on a reduced shape (float64 CPU on the full one would take minutes): same code path
    rng = np.random.default_rng(1)
    small = [256] * 4
    gg.manual_seed(1)
    sm = gg.nn.MLP(small).to("cuda")
    xs_np = rng.standard_normal((512, 256)).astype(np.float32)
    ys_np = rng.standard_normal((512, 256)).astype(np.float32)
    if ok:
        lins = [b.linear for b in sm.blocks] + [sm.head]
        xs = gg.tensor(xs_np, device="cuda", requires_grad=True)
        out = em.epilogue_mlp(xs, [m.weight for m in lins], [m.bias for m in lins], "relu")
        F.mse_loss(out, gg.tensor(ys_np, device="cuda")).backward()
        ref = gg.nn.MLP(small).to(gg.float64)
        ref.load_state_dict({k: v.cpu().double() for k, v in sm.state_dict().items()})
        o64 = ref(gg.tensor(xs_np, dtype=gg.float64))
        F.mse_loss(o64, gg.tensor(ys_np, dtype=gg.float64)).backward()
        err = max([_rel(out.numpy(), o64.numpy())] + [_rel(p.grad.numpy(), q.grad.numpy())
                                                     for p, q in zip(sm.parameters(), ref.parameters())])
        res["check"] = {"vs_float64_cpu_rel_err": err, "shape": f"batch 512, sizes {small}"}
        assert err < (5e-3 if gg.cuda.get_tf32() else 1e-4), f"epilogue path disagrees with float64 CPU: {err}"
    else:
        res["check"] = None
        print(f"  cuBLASLt epilogues not available: {why}")

    rng = np.random.default_rng(2)
    gg.manual_seed(2)
    model = gg.nn.MLP(sizes).to("cuda")
    x_np = rng.standard_normal((batch, width)).astype(np.float32)
    y_np = rng.standard_normal((batch, width)).astype(np.float32)
    x, y = gg.tensor(x_np, device="cuda"), gg.tensor(y_np, device="cuda")
    lins = [b.linear for b in model.blocks] + [model.head]
    ws, bs = [m.weight for m in lins], [m.bias for m in lins]

    def kernel_path():
        model.zero_grad()
        F.mse_loss(model(x), y).backward()

    def epilogue_path():
        model.zero_grad()
        F.mse_loss(em.epilogue_mlp(x, ws, bs, "relu"), y).backward()

    if ok:  # the two paths agree at full size before timing
        epilogue_path()
        g_ep = [p.grad.numpy() for p in model.parameters()]
        kernel_path()
        g_k = [p.grad.numpy() for p in model.parameters()]
        res["check_full_vs_kernel_path_rel_err"] = max(_rel(a, b) for a, b in zip(g_ep, g_k))
    wd = [w.data for w in ws]
    xd = x.data

    def gemm_floor():  # the 3 GEMMs per layer, nothing else
        h = xd
        hs = []
        for w in wd:
            hs.append(h)
            h = h @ w.T
        d = h
        for w, hin in zip(reversed(wd), reversed(hs)):
            _ = d.T @ hin
            d = d @ w

    flops = 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    res["ms"]["gpugrad kernel path (GEMM + fused pass)"] = time_cupy(kernel_path, args.repeats, args.warmup) * 1e3
    if ok:
        res["ms"]["gpugrad cuBLASLt epilogues"] = time_cupy(epilogue_path, args.repeats, args.warmup) * 1e3
    res["ms"]["GEMM-only floor"] = time_cupy(gemm_floor, args.repeats, args.warmup) * 1e3
    if torch is not None:
        for k, v in torch_variants(torch, sizes, model, x_np, y_np, "fwdbwd", args.repeats, args.warmup).items():
            res["ms"][k] = None if v is None else v * 1e3
    res["tflops"] = {k: (flops / (v / 1e3) / 1e12 if v else None) for k, v in res["ms"].items()}
    return res


def case_fused(args, torch) -> dict:
    from gpugrad.experimental import fused_mlp as fm
    out: dict = {}
    batch = 2 ** 18 if not args.quick else 2 ** 14
    for width in (64, 128):
        sizes = [32] + [width] * 8 + [16]
        rng = np.random.default_rng(width)
        gg.manual_seed(width)
        model = fm.FusedMLP(sizes).to("cuda")
        init = {k: v.cpu() for k, v in model.state_dict().items()}
        # correctness vs float64 CPU on the first 4096 rows (same kernels, smaller grid)
        xc = rng.standard_normal((4096, 32)).astype(np.float32)
        yc = rng.standard_normal((4096, 16)).astype(np.float32)
        o = model(gg.tensor(xc, device="cuda"))
        F.mse_loss(o, gg.tensor(yc, device="cuda")).backward()
        ref = gg.nn.MLP(sizes).to(gg.float64)
        ref.load_state_dict({k: v.double() for k, v in init.items()})
        o64 = ref(gg.tensor(xc, dtype=gg.float64))
        F.mse_loss(o64, gg.tensor(yc, dtype=gg.float64)).backward()
        e_out = _rel(o.numpy(), o64.numpy())
        e_grad = max(_rel(p.grad.numpy(), q.grad.numpy()) for p, q in zip(model.parameters(), ref.parameters()))
        assert e_out < 1e-2 and e_grad < 5e-2, f"FusedMLP disagrees with float64 CPU: out {e_out}, grads {e_grad}"
        res: dict = {"batch": batch, "sizes": sizes, "ms": {},
                     "check": {"out_rel_err": e_out, "grad_rel_err_max": e_grad, "shape": "batch 4096"}}
        x_np = rng.standard_normal((batch, 32)).astype(np.float32)
        y_np = rng.standard_normal((batch, 16)).astype(np.float32)
        x, y = gg.tensor(x_np, device="cuda"), gg.tensor(y_np, device="cuda")
        plain = gg.nn.MLP(sizes).to("cuda")
        plain.load_state_dict({k: v.to("cuda") for k, v in init.items()})
        for name, m in (("gpugrad FusedMLP (fp16 tensor cores)", model), ("gpugrad nn.MLP float32", plain)):
            step = training_step(m, gg.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9), F.mse_loss)
            res["ms"][name] = time_cupy(lambda: step(x, y), args.repeats, args.warmup) * 1e3
        if torch is not None:
            for k, v in torch_variants(torch, sizes, plain, x_np, y_np, "train", args.repeats, args.warmup,
                                       amp=True).items():
                res["ms"][k] = None if v is None else v * 1e3
        out[f"width {width}"] = res
    return out


CASES = {"gemm": case_gemm, "graphs": case_graphs, "epilogues": case_epilogues, "fused": case_fused}


def _speedups(ms: dict) -> dict:
    base = ms.get("torch eager")
    return {k: (base / v if base and v else None) for k, v in ms.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="gemm,graphs,epilogues,fused")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small shapes (a smoke run, not the reported numbers)")
    ap.add_argument("--tf32", action="store_true", help="TF32 for float32 GEMMs (gpugrad, cuBLASLt and PyTorch)")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    if not gg.cuda.is_available():
        from gpugrad.backends import cuda as _bc
        print(f"mlp_gpu_fast: no usable CUDA GPU ({_bc.probe()[1]}). These benchmarks time GPU fast paths "
              "(CUDA graphs, cuBLASLt epilogues, the fused tensor-core MLP) and need one; nothing was measured "
              "and no results were written. Run on a machine with an NVIDIA GPU and CuPy.")
        return 0
    gg.cuda.set_tf32(args.tf32)
    torch = _torch()
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    info = machine_info()
    info["device"] = gg.cuda.get_device_name()
    import cupy
    info["cupy"] = cupy.__version__
    try:
        import nvmath
        info["nvmath"] = nvmath.__version__
    except Exception:
        info["nvmath"] = None
    info["tf32"] = args.tf32
    results: dict = {}
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r}; choose from {sorted(CASES)}")
        print(f"[{name}]")
        t0 = time.perf_counter()
        r = CASES[name](args, torch)
        if name == "gemm":
            print(f"  binding {r['binding']}, max rel. error vs cupy.matmul {r['max_rel_err_vs_cupy']:.2e}")
            for k, v in r["us_per_gemm"].items():
                print(f"    {k:<52} {v:9.2f} us per GEMM")
            results[name] = r
            continue
        groups = r.items() if name == "fused" else [(name, r)]
        for label, g in groups:
            g["speedup_vs_torch_eager"] = _speedups(g["ms"])
            print(f"  {label}: batch {g['batch']}, sizes {g['sizes'][:3]}...{g['sizes'][-1]} "
                  f"(check: {g.get('check')})")
            for k, v in g["ms"].items():
                sp = g["speedup_vs_torch_eager"][k]
                print(f"    {k:<42} {('%9.3f ms' % v) if v is not None else '        -':>12}"
                      f"   {('x%.2f vs torch eager' % sp) if sp else ''}")
        print(f"  ({time.perf_counter() - t0:.0f} s)")
        results[name] = r
    payload = {"machine": info, "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
               "results": results}
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
