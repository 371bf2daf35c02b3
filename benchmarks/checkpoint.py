"""Gradient checkpointing: peak memory, saved bytes and step time, plain vs checkpoint="sqrt".

    python benchmarks/checkpoint.py --threads 1     # CPU: width 256, batch 4096, depths 8 32 64 128 (minutes)
    python benchmarks/checkpoint.py --quick         # CPU, about a minute: width 128, batch 2048
    python benchmarks/checkpoint.py --device cuda   # GPU: width 2048, batch 4096, depths 8 32 64 128,
                                                    # then depth 64, width 1024, batch 16384 (the 0.40 target)
    (--configs 64x1024x16384 ...: any DEPTHxWIDTHxBATCH list instead; --threads 1: single-threaded BLAS)

One training step = forward of ``nn.MLP([w] * (depth + 1) + [10])`` (``depth`` fused Linear+ReLU
blocks, He-initialised, then the head), cross-entropy, backward, SGD step. For each configuration,
plain and ``checkpoint="sqrt"``, in this order of importance:

1. peak memory of the step: on CUDA the memory pool's peak of in-use bytes during the step, above what
   was allocated before the model was built; on the CPU the ``tracemalloc`` peak (NumPy's buffers are
   traced), tracing from before the model was built. Both count everything the step holds at its
   worst moment: parameters, gradients, the batch, activations, recomputed activations, temporaries;
2. peak saved-activation bytes (``gg.memory.track``: exact and device independent, but blind to the rest);
3. the median step time over ``--repeats`` steps after a warm-up (plain and sqrt alternate, so other
   load hits both alike).

Then the planner: for the middle depth of the sweep, ``plan_for`` at a budget of half the sqrt run's
saved peak (a nested schedule), predicted vs measured. Prints whether checkpointing stays at or below
plain on every configuration and, for depth 64 / width 1024 / batch 16384, the ratio against the
issue-9 target (<= 0.40). Writes JSON and a PNG (peak memory and saved bytes vs depth) to
benchmarks/results/checkpoint_<device>.*.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tracemalloc


def _threads_from_argv(argv) -> None:
    """``--threads N`` must act before NumPy loads its BLAS: set the thread variables first."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
        else:
            continue
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ[var] = n


_threads_from_argv(sys.argv)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gpugrad as gg  # noqa: E402
from gpugrad import checkpoint as C  # noqa: E402
from gpugrad.memory import format_bytes, track  # noqa: E402
from gpugrad.benchmarking import machine_info, median_time, write_json  # noqa: E402
from gpugrad.training import training_step  # noqa: E402

MIB = 1 << 20
TARGET = (64, 1024, 16384)  # issue 9: sqrt peak device memory <= 0.40 of plain on this shape
TARGET_RATIO = 0.40


def make_step(model, x, y, opt, device):
    # training_step zeroes the gradients first (as PyTorch's loops do): the last step's are gone before the forward
    train = training_step(model, opt, gg.nn.functional.cross_entropy)

    def step():
        train(x, y)
        if device.startswith("cuda"):
            gg.backends.get_backend(device).synchronize()
    return step


def make_model(depth, width, device):
    """The MLP, He-initialised (std sqrt(2 / fan_in), zero bias) so that 128 ReLU layers neither vanish
    nor blow up: with PyTorch's default init the activations of a deep plain MLP decay into
    subnormal floats, whose arithmetic is 10-100x slower on CPUs and would distort the timings."""
    model = gg.nn.MLP([width] * (depth + 1) + [10], activation="relu", device=device)
    with gg.no_grad():
        for blk in model.blocks:
            gg.nn.init.kaiming_normal_(blk.linear.weight, nonlinearity="relu")
            gg.nn.init.zeros_(blk.linear.bias)
    return model


def _mode(checkpoint):
    return "plain" if checkpoint is None else ("sqrt" if checkpoint == "sqrt" else "plan")


def build(depth, width, batch, checkpoint, device, seed=0):
    """A model (same weights for every mode: same seed), its SGD step, and the memory of one step
    after a warm-up step: ``peak_bytes`` is everything alive at the step's peak that was allocated
    since just before the model was built (see the module docstring)."""
    cuda = device.startswith("cuda")
    gc.collect()
    if cuda:
        base = gg.cuda.memory_allocated(device)
    else:
        tracemalloc.start()
    try:
        gg.manual_seed(seed)
        model = make_model(depth, width, device)
        if checkpoint is not None:
            model.checkpoint = checkpoint  # "sqrt" or a CheckpointPlan
        opt = gg.optim.SGD(model.parameters(), lr=1e-3)
        rng = np.random.default_rng(seed)
        x = gg.tensor(rng.standard_normal((batch, width), dtype=np.float32)).to(device)
        y = gg.tensor(rng.integers(0, 10, batch)).to(device)
        step = make_step(model, x, y, opt, device)
        step()  # warm-up (allocations, kernels) before the measured step
        with track(device, trace=not cuda) as mem:
            step()
    finally:
        if not cuda:
            tracemalloc.stop()
    peak = mem.peak_device_bytes - base if cuda else mem.peak_traced_bytes
    row = {"depth": depth, "width": width, "batch": batch, "mode": _mode(checkpoint),
           "segments": None if checkpoint is None else (C.sqrt_segments(depth) if checkpoint == "sqrt"
                                                         else checkpoint.describe_segments()),
           "peak_bytes": int(peak), "peak_kind": "device" if cuda else "traced",
           "param_bytes": int(sum(p.data.nbytes for p in model.parameters())),
           "activation_bytes": batch * width * 4,
           "peak_saved_bytes": mem.peak_saved_bytes, "peak_device_bytes": mem.peak_device_bytes}
    return row, step


def time_interleaved(steps, repeats, warmup):
    """Median seconds of each step, measured alternately (A B A B ...) so that load from other
    processes hits every mode alike."""
    for _ in range(warmup):
        for st in steps:
            st()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for i, st in enumerate(steps):
            times[i].append(median_time(st, repeats=1, warmup=0))
    return [float(np.median(t)) for t in times]


def _ratios(row, plain):
    row["peak_ratio"] = row["peak_bytes"] / plain["peak_bytes"]
    row["saved_ratio"] = row["peak_saved_bytes"] / plain["peak_saved_bytes"]
    row["time_ratio"] = row["step_s"] / plain["step_s"]


def _line(row):
    segs = f"L{row['nesting_depth']}" if row["mode"] == "plan" else str(row["segments"] or "-")  # plan: nesting levels
    return (f"{row['depth']:>5} {row['width']:>5} {row['batch']:>6} {row['mode']:>6} {segs:>4} "
            f"{format_bytes(row['peak_bytes']):>11} {row['peak_ratio']:>10.3f} "
            f"{format_bytes(row['peak_saved_bytes']):>11} {row['saved_ratio']:>11.3f} "
            f"{row['step_s'] * 1e3:>8.1f} {row['time_ratio']:>10.2f}")


def _parse_config(text):
    try:
        d, w, b = (int(v) for v in text.lower().split("x"))
        if min(d, w, b) < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"--configs: expected DEPTHxWIDTHxBATCH with positive integers, got {text!r}")
    return d, w, b


def _warm_device(device):
    """One tiny step first, so that one-time allocations (library handles, workspaces, kernel caches)
    fall before the first measured configuration instead of into its plain run."""
    gg.manual_seed(0)
    m = make_model(2, 64, device)
    opt = gg.optim.SGD(m.parameters(), lr=1e-3)
    x = gg.randn(256, 64, device=device)
    y = gg.tensor(np.arange(256) % 10).to(device)
    make_step(m, x, y, opt, device)()
    m.checkpoint = "sqrt"
    make_step(m, x, y, opt, device)()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--depths", type=int, nargs="+", default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--configs", type=_parse_config, nargs="+", default=None,
                    help="DEPTHxWIDTHxBATCH list, instead of --depths/--width/--batch")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="small width and batch, 2 repeats (CPU: about a minute)")
    ap.add_argument("--no-plan", action="store_true", help="skip the planner run")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/checkpoint_<device>.json)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads (set before NumPy loads; 1 gives steadier CPU timings on a busy machine)")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not gg.cuda.is_available():
        print(f"checkpoint.py: no usable CUDA GPU ({gg.backends.cuda.probe()[1]}); nothing measured, "
              "no results written. Run on a machine with an NVIDIA GPU, or with --device cpu.")
        return None
    if args.configs:
        configs = list(args.configs)
    else:
        width = args.width or ((1024 if args.quick else 2048) if cuda else (128 if args.quick else 256))
        batch = args.batch or (4096 if cuda else (2048 if args.quick else 4096))
        depths = args.depths or ([8, 16, 32, 64] if args.quick else [8, 32, 64, 128])
        configs = [(d, width, batch) for d in depths]
        if cuda and not args.quick and args.width is None and args.batch is None and args.depths is None:
            configs.append(TARGET)
    repeats = args.repeats or (2 if args.quick else (5 if cuda else 3))
    warmup = 2 if cuda else 1
    tag = args.device.replace(":", "")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"checkpoint_{tag}{'_quick' if args.quick else ''}.json")
    kind = "device (CUDA pool, in use)" if cuda else "traced (tracemalloc)"
    print(f"gpugrad checkpointing on {args.device}, float32; peak memory = {kind} peak of one training step "
          f"(forward + cross-entropy + backward + SGD), parameters included; step time = median of {repeats} "
          "interleaved steps")
    print(f"{'depth':>5} {'width':>5} {'batch':>6} {'mode':>6} {'segs':>4} {'peak mem':>11} {'peak/plain':>10} "
          f"{'peak saved':>11} {'saved/plain':>11} {'step ms':>8} {'time/plain':>10}")
    _warm_device(args.device)
    rows = []
    for depth, width, batch in configs:
        r_plain, s_plain = build(depth, width, batch, None, args.device)
        r_sqrt, s_sqrt = build(depth, width, batch, "sqrt", args.device)
        t_plain, t_sqrt = time_interleaved([s_plain, s_sqrt], repeats, warmup)
        del s_plain, s_sqrt
        r_plain["step_s"], r_sqrt["step_s"] = t_plain, t_sqrt
        for row in (r_plain, r_sqrt):
            _ratios(row, r_plain)
            rows.append(row)
            print(_line(row), flush=True)

    if not args.no_plan:
        rows.append(run_planner(rows, configs, args.device, repeats, warmup))

    over = [r for r in rows if r["mode"] != "plain" and r["peak_ratio"] > 1.0]
    print("\ncheckpointing at or below plain peak memory on every configuration: "
          + ("yes" if not over else "NO: " + ", ".join(f"depth {r['depth']} width {r['width']} batch {r['batch']} "
                                                       f"{r['mode']} ({r['peak_ratio']:.3f})" for r in over)))
    target = next((r for r in rows if (r["depth"], r["width"], r["batch"]) == TARGET and r["mode"] == "sqrt"), None)
    verdict = None
    if target is not None:
        verdict = target["peak_ratio"] <= TARGET_RATIO
        print(f"issue 9 target, depth {TARGET[0]} width {TARGET[1]} batch {TARGET[2]}: sqrt peak {kind} = "
              f"{target['peak_ratio']:.3f} of plain (target <= {TARGET_RATIO:.2f}): {'met' if verdict else 'NOT MET'}")

    payload = {"benchmark": "checkpoint", "device": args.device, "dtype": "float32", "repeats": repeats,
               "peak_kind": "device" if cuda else "traced", "configs": [list(c) for c in configs],
               "blas_threads": args.threads, "target": {"config": list(TARGET), "max_ratio": TARGET_RATIO,
                                                        "met": verdict},
               "all_at_or_below_plain": not over,
               "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None, "rows": rows,
               "machine": machine_info()}
    write_json(out, payload)
    print(f"\nwrote {out}")
    if not args.no_plot:
        png = os.path.splitext(out)[0] + ".png"
        if plot(rows, png, f"{args.device}, float32", cuda):
            print(f"wrote {png}")
    return payload


def run_planner(rows, configs, device, repeats, warmup):
    """``plan_for`` at half the sqrt run's saved peak, for the middle depth of the first width/batch."""
    w0, b0 = configs[0][1], configs[0][2]
    sweep = [d for d, w, b in configs if (w, b) == (w0, b0)]
    pdepth = sweep[len(sweep) // 2]
    sqrt_row = next(r for r in rows if (r["depth"], r["width"], r["batch"]) == (pdepth, w0, b0) and r["mode"] == "sqrt")
    plain_row = next(r for r in rows if (r["depth"], r["width"], r["batch"]) == (pdepth, w0, b0) and r["mode"] == "plain")
    gg.manual_seed(0)
    probe = make_model(pdepth, w0, device)
    xb = gg.randn(b0, w0, device=device)
    head = C.plan_for(probe, xb, 10 ** 15)  # plain peak of the blocks alone
    extra = plain_row["peak_saved_bytes"] - head.plain_peak_bytes  # what the head and loss add
    budget = sqrt_row["peak_saved_bytes"] // 2
    pl = C.plan_for(probe, xb, budget, extra_bytes=extra)
    del probe, xb
    prow, s_plan = build(pdepth, w0, b0, pl, device)
    _, s_plain = build(pdepth, w0, b0, None, device)
    t_plain, t_plan = time_interleaved([s_plain, s_plan], repeats, warmup)
    del s_plain, s_plan
    prow["step_s"] = t_plan
    _ratios(prow, dict(plain_row, step_s=t_plain))
    prow.update({"budget_bytes": budget, "predicted_peak_bytes": pl.predicted_peak_bytes,
                 "recompute_layers": pl.recompute_layers, "nesting_depth": pl.depth})
    print(_line(prow))
    print(f"\nplanner, depth {pdepth}, budget {format_bytes(budget)} of saved activations (half the sqrt run's):")
    print(str(pl))
    print(f"  measured: peak memory {format_bytes(prow['peak_bytes'])} ({prow['peak_ratio']:.3f} of plain), "
          f"peak saved {format_bytes(prow['peak_saved_bytes'])} (predicted {format_bytes(pl.predicted_peak_bytes)}, "
          f"{prow['saved_ratio']:.3f} of plain), step {prow['step_s'] * 1e3:.1f} ms = {prow['time_ratio']:.2f}x plain")
    return prow


def plot(rows, path, subtitle, cuda) -> bool:
    """Peak memory (left) and peak saved activations (right) vs depth, for the depth sweep (the first
    width/batch), plain vs sqrt, with the planner's point (drawn by gpugrad/plot.py: NumPy only)."""
    from gpugrad.plot import Figure
    w0, b0 = rows[0]["width"], rows[0]["batch"]
    sweep = [r for r in rows if (r["width"], r["batch"]) == (w0, b0)]
    depths = sorted({r["depth"] for r in sweep})
    fig = Figure(ncols=2, width=1200, height=480,
                 title=f"gpugrad gradient checkpointing: {subtitle}, width {w0}, batch {b0}")
    for key, label in (("peak_bytes", f"peak memory of a step, {'device' if cuda else 'traced'} (MiB)"),
                       ("peak_saved_bytes", "peak saved activations (MiB)")):
        ax = fig.panel(xlabel="depth (hidden layers)", ylabel=label, xscale="log2", yscale="log", xticks=depths)
        for mode, marker, name in (("plain", "o", "no checkpointing"), ("sqrt", "s", 'checkpoint="sqrt"')):
            d = [r["depth"] for r in sweep if r["mode"] == mode]
            ax.line(d, [r[key] / MIB for r in sweep if r["mode"] == mode], marker=marker, label=name)
        pr = [r for r in sweep if r["mode"] == "plan"]
        if pr:
            ax.line([pr[0]["depth"]], [pr[0][key] / MIB], color=(0.84, 0.15, 0.16), marker="s",
                    label=f"planner (nested, {pr[0]['nesting_depth']} levels)")
        sq = [r for r in sweep if r["mode"] == "sqrt"]
        if key == "peak_saved_bytes" and sq:
            ref = np.array(sorted(r["depth"] for r in sq), dtype=float)
            ax.line(ref, sq[0][key] / MIB * np.sqrt(ref / sq[0]["depth"]), color=(0.1, 0.1, 0.1), dashed=True,
                    width=1.0, label="sqrt(depth) reference")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.save(path)
    return True


if __name__ == "__main__":
    main()
