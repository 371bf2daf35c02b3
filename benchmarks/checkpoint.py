"""Gradient checkpointing: activation memory and step time vs depth, with and without segments="sqrt".

    python benchmarks/checkpoint.py                 # CPU: width 1024, batch 64, depths 8 32 64 128
    python benchmarks/checkpoint.py --quick         # CPU, under a minute: width 256
    python benchmarks/checkpoint.py --device cuda   # GPU: width 2048, batch 4096
    (--threads 1: single-threaded BLAS, steadier CPU timings when other work shares the cores)

One training step = forward of ``nn.MLP([w] * (depth + 1) + [10])`` (``depth`` fused Linear+ReLU
blocks, He-initialised, then the head), cross-entropy, backward, SGD step. For each depth, plain and
``checkpoint="sqrt"``: peak saved-activation bytes (``gg.memory.track``, exact and device
independent), the CUDA pool's peak (GPU), and the median step time over ``--repeats`` steps after a
warm-up (plain and sqrt steps alternate, so other load hits both alike). Then the planner: for the middle depth, ``plan_for`` at a budget of half the sqrt run's
peak (a nested schedule), predicted vs measured. Writes JSON and a log-log PNG of saved bytes vs
depth (with a sqrt(depth) reference line) to benchmarks/results/checkpoint_<device>.*.
"""
from __future__ import annotations

import argparse
import os
import sys


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

MIB = 1 << 20


def make_step(model, x, y, opt, device):
    def step():
        loss = gg.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
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


def build(depth, width, batch, checkpoint, device, seed=0):
    """A model (same weights for every mode: same seed), its SGD step, and one measured step."""
    gg.manual_seed(seed)
    model = make_model(depth, width, device)
    if checkpoint is not None:
        model.checkpoint = checkpoint  # "sqrt" or a CheckpointPlan
    opt = gg.optim.SGD(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    x = gg.tensor(rng.standard_normal((batch, width), dtype=np.float32), device=device)
    y = gg.tensor(rng.integers(0, 10, batch), device=device)
    step = make_step(model, x, y, opt, device)
    step()  # warm-up (allocations, kernels) before the measured step
    with track(device) as mem:
        step()
    row = {"depth": depth, "mode": "plain" if checkpoint is None else ("sqrt" if checkpoint == "sqrt" else "plan"),
           "segments": None if checkpoint is None else (C.sqrt_segments(depth) if checkpoint == "sqrt"
                                                         else checkpoint.describe_segments()),
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--depths", type=int, nargs="+", default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="small width and depths, 2 repeats (CPU: < 1 min)")
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
    width = args.width or (256 if args.quick else (2048 if cuda else 1024))
    batch = args.batch or (64 if not cuda else (1024 if args.quick else 4096))
    depths = args.depths or ([8, 16, 32, 64] if args.quick else [8, 32, 64, 128])
    repeats = args.repeats or (3 if args.quick else (10 if cuda else 5))
    warmup = 2 if cuda else 1
    tag = args.device.replace(":", "")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"checkpoint_{tag}{'_quick' if args.quick else ''}.json")

    rows = []
    print(f"gpugrad checkpointing on {args.device}: width {width}, batch {batch}, float32, "
          f"median of {repeats} interleaved steps (forward + cross-entropy + backward + SGD)")
    hdr = (f"{'depth':>5} {'mode':>6} {'segs':>4} {'peak saved':>11} {'saved/plain':>11} "
           f"{'peak device':>11} {'step ms':>8} {'time/plain':>10}")
    print(hdr)
    for depth in depths:
        r_plain, s_plain = build(depth, width, batch, None, args.device)
        r_sqrt, s_sqrt = build(depth, width, batch, "sqrt", args.device)
        t_plain, t_sqrt = time_interleaved([s_plain, s_sqrt], repeats, warmup)
        del s_plain, s_sqrt
        r_plain["step_s"], r_sqrt["step_s"] = t_plain, t_sqrt
        for row in (r_plain, r_sqrt):
            row["saved_ratio"] = row["peak_saved_bytes"] / r_plain["peak_saved_bytes"]
            row["time_ratio"] = row["step_s"] / r_plain["step_s"]
            rows.append(row)
            print(f"{depth:>5} {row['mode']:>6} {str(row['segments'] or '-'):>4} "
                  f"{format_bytes(row['peak_saved_bytes']):>11} {row['saved_ratio']:>11.3f} "
                  f"{format_bytes(row['peak_device_bytes']):>11} {row['step_s'] * 1e3:>8.1f} {row['time_ratio']:>10.2f}")

    # planner: a budget below what one level of segments reaches -> a nested schedule
    pdepth = depths[len(depths) // 2]
    sqrt_row = next(r for r in rows if r["depth"] == pdepth and r["mode"] == "sqrt")
    plain_row = next(r for r in rows if r["depth"] == pdepth and r["mode"] == "plain")
    gg.manual_seed(0)
    probe = make_model(pdepth, width, args.device)
    xb = gg.randn(batch, width, device=args.device)
    head = C.plan_for(probe, xb, 10 ** 15)  # plain peak of the blocks alone
    extra = plain_row["peak_saved_bytes"] - head.plain_peak_bytes  # what the head and loss add
    budget = sqrt_row["peak_saved_bytes"] // 2
    pl = C.plan_for(probe, xb, budget, extra_bytes=extra)
    del probe, xb
    prow, s_plan = build(pdepth, width, batch, pl, args.device)
    _, s_plain = build(pdepth, width, batch, None, args.device)
    t_plain, t_plan = time_interleaved([s_plain, s_plan], repeats, warmup)
    del s_plain, s_plan
    prow["step_s"] = t_plan
    prow["saved_ratio"] = prow["peak_saved_bytes"] / plain_row["peak_saved_bytes"]
    prow["time_ratio"] = t_plan / t_plain
    prow.update({"budget_bytes": budget, "predicted_peak_bytes": pl.predicted_peak_bytes,
                 "recompute_layers": pl.recompute_layers, "nesting_depth": pl.depth})
    rows.append(prow)
    print(f"\nplanner, depth {pdepth}, budget {format_bytes(budget)} (half the sqrt run's peak):")
    print(str(pl))
    print(f"  measured peak saved (whole step): {format_bytes(prow['peak_saved_bytes'])} "
          f"(predicted {format_bytes(pl.predicted_peak_bytes)}), {prow['saved_ratio']:.3f} of plain, "
          f"step {prow['step_s'] * 1e3:.1f} ms = {prow['time_ratio']:.2f}x plain")

    payload = {"benchmark": "checkpoint", "device": args.device, "width": width, "batch": batch,
               "dtype": "float32", "repeats": repeats, "blas_threads": args.threads,
               "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None, "rows": rows, "machine": machine_info()}
    write_json(out, payload)
    print(f"\nwrote {out}")
    if not args.no_plot:
        png = os.path.splitext(out)[0] + ".png"
        if plot(rows, depths, png, f"{args.device}, width {width}, batch {batch}"):
            print(f"wrote {png}")
    return payload


def plot(rows, depths, path, subtitle) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for mode, style, label in (("plain", "o-", "no checkpointing"), ("sqrt", "s-", 'checkpoint="sqrt"')):
        d = [r["depth"] for r in rows if r["mode"] == mode]
        v = [r["peak_saved_bytes"] / MIB for r in rows if r["mode"] == mode]
        ax.plot(d, v, style, label=label)
    sq = [r for r in rows if r["mode"] == "sqrt"]
    d0, v0 = sq[0]["depth"], sq[0]["peak_saved_bytes"] / MIB
    ref = np.array(sorted(depths), dtype=float)
    ax.plot(ref, v0 * np.sqrt(ref / d0), "k--", lw=1, label=r"$\propto\sqrt{depth}$ reference")
    ax.plot(ref, [r["peak_saved_bytes"] / MIB for r in rows if r["mode"] == "plain"][0] * ref / d0, "k:", lw=1,
            label=r"$\propto depth$ reference")
    pr = [r for r in rows if r["mode"] == "plan"]
    if pr:
        ax.plot([pr[0]["depth"]], [pr[0]["peak_saved_bytes"] / MIB], "r*", ms=12,
                label=f"planner (nested, {pr[0]['nesting_depth']} levels)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("depth (hidden layers)")
    ax.set_ylabel("peak saved activations (MiB)")
    ax.set_title(f"gpugrad gradient checkpointing\n{subtitle}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


if __name__ == "__main__":
    main()
