"""The ``gpugrad`` command: ``train`` an MLP, ``bench`` a training step, ``info`` about the install,
``diagnose`` vanishing/exploding gradients, ``graph`` a small computation graph.

Every command returns an exit code (``main([...])`` runs in-process): 0 success, 2 bad input
(unknown option values, an unwritable run folder, a corrupt resume file: the message goes to
stderr and nothing is overwritten), 130 interrupted (the last finished epoch stays resumable)."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any, Sequence

import numpy as np

PROG = "gpugrad"
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "cosine")
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 1e-2, "rmsprop": 0.0}
DEFAULT_MOMENTUM = {"sgd": 0.9, "rmsprop": 0.0}
CHECKPOINT_FILE = "checkpoint.npz"
# Options that may change when resuming (they do not change the numbers the run computes).
RESUME_OVERRIDABLE = {"epochs", "quiet", "device", "no_plots", "stop_after", "resume", "run_dir", "command"}


class CLIError(Exception):
    """Bad input: printed as ``gpugrad <cmd>: error: ...`` on stderr, exit code 2."""


# =============================================================================================== parsing
def _int_at_least(name: str, lo: int):
    """argparse type: an integer >= ``lo`` (messages say 'positive' for lo=1)."""
    what = "a positive integer" if lo == 1 else f"an integer >= {lo}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{name} must be {what}, got {s!r}")
        return v
    return parse


def _positive_int(name: str):
    return _int_at_least(name, 1)


def _nonneg_int(name: str):
    return _int_at_least(name, 0)


def _float_in(name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
              hi_open: bool = False):
    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        bad = not math.isfinite(v)
        if lo is not None:
            bad = bad or (v <= lo if lo_open else v < lo)
        if hi is not None:
            bad = bad or (v >= hi if hi_open else v > hi)
        if bad:
            rng = f"{'(' if lo_open else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"{name} must be in {rng}, got {s!r}")
        return v
    return parse


def _checkpoint_arg(s: str) -> str | int:
    s = s.strip().lower()
    if s in ("none", "sqrt"):
        return s
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"--checkpoint must be 'none', 'sqrt' or a positive number of segments, got {s!r}")
    return v


def _int_list(name: str):
    def parse(s: str) -> list[int]:
        try:
            vals = [int(x) for x in s.replace(" ", "").split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of positive integers, got {s!r}") from None
        if not vals or any(v < 1 for v in vals):
            raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of positive integers, got {s!r}")
        return vals
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` can return the code in-process."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message}\n(see '{self.prog} --help')")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=("digits", "mnist1d", "synthetic"), default="digits",
                   help="digits: scikit-learn's 8x8 digits (bundled); mnist1d: generated locally by the "
                        "'mnist1d' package (pip install mnist1d); synthetic: seeded teacher-network data (default: digits)")
    d.add_argument("--task", choices=("classification", "regression"), default="classification",
                   help="synthetic only (default: classification)")
    d.add_argument("--n-samples", type=_positive_int("--n-samples"), default=2000, help="synthetic only (default: 2000)")
    d.add_argument("--n-features", type=_positive_int("--n-features"), default=32, help="synthetic only (default: 32)")
    d.add_argument("--n-outputs", type=_positive_int("--n-outputs"), default=4,
                   help="synthetic only: classes (classification) or targets (regression) (default: 4)")
    d.add_argument("--noise", type=_float_in("--noise", 0.0), default=0.05, help="synthetic only (default: 0.05)")
    m = p.add_argument_group("model")
    m.add_argument("--depth", type=_nonneg_int("--depth"), default=2, help="hidden layers (default: 2)")
    m.add_argument("--width", type=_positive_int("--width"), default=256, help="hidden width (default: 256)")
    m.add_argument("--activation", choices=ACTIVATIONS, default="relu", help="(default: relu)")
    m.add_argument("--residual", action="store_true", help="x + f(x) in hidden layers of equal width")
    m.add_argument("--dropout", type=_float_in("--dropout", 0.0, 1.0, hi_open=True), default=0.0,
                   help="dropout after each hidden layer (default: 0)")
    m.add_argument("--checkpoint", type=_checkpoint_arg, default="none",
                   help="gradient checkpointing of the hidden layers: none, sqrt, or N segments (default: none)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="(default: adam)")
    o.add_argument("--lr", type=_float_in("--lr", 0.0, lo_open=True), default=None,
                   help="learning rate (default: 1e-3 for adam/adamw/rmsprop, 0.05 for sgd)")
    o.add_argument("--momentum", type=_float_in("--momentum", 0.0), default=None,
                   help="sgd/rmsprop momentum (default: 0.9 for sgd, 0 for rmsprop)")
    o.add_argument("--weight-decay", type=_float_in("--weight-decay", 0.0), default=None,
                   help="(default: 0.01 for adamw, else 0)")
    o.add_argument("--schedule", choices=SCHEDULES, default="none",
                   help="lr schedule per epoch: step (x0.1 every epochs/3) or cosine to 0 (default: none)")
    o.add_argument("--epochs", type=_positive_int("--epochs"), default=20, help="(default: 20)")
    o.add_argument("--batch-size", type=_positive_int("--batch-size"), default=32, help="(default: 32)")
    o.add_argument("--clip-grad-norm", type=_float_in("--clip-grad-norm", 0.0, lo_open=True), default=None,
                   help="clip the total gradient norm to this value")
    o.add_argument("--seed", type=int, default=0, help="init, shuffling and dropout seed (default: 0)")
    r = p.add_argument_group("run")
    r.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto picks CUDA when gg.cuda.is_available() (default: auto)")
    r.add_argument("--run-dir", default=None, help="run folder (default: runs/<dataset>-<timestamp>)")
    r.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR where it stopped (pass --epochs to extend it)")
    r.add_argument("--stop-after", type=_positive_int("--stop-after"), default=None, metavar="K",
                   help="stop after K epochs of this invocation, leaving a resumable run (time-sliced jobs)")
    r.add_argument("--grad-norm-every", type=_nonneg_int("--grad-norm-every"), default=10, metavar="N",
                   help="record every Linear layer's weight-gradient norm every N steps; 0 disables (default: 10)")
    r.add_argument("--no-plots", action="store_true", help="do not write PNG plots at the end")
    r.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    """The ``gpugrad`` argument parser (sub-commands train, bench, info, diagnose, graph)."""
    p = _Parser(prog=PROG, description="gpugrad: reverse-mode autodiff for MLPs on CPU and NVIDIA GPUs.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="{train,bench,info,diagnose,graph}", parser_class=_Parser)
    t = sub.add_parser("train", help="train an MLP on digits / mnist1d / synthetic data",
                       description="Train an MLP; writes config.json, metrics.jsonl, grad_norms.jsonl, a "
                                   "resumable checkpoint and PNG plots into the run folder.")
    _add_train_args(t)
    b = sub.add_parser("bench", help="training-step throughput vs PyTorch and the GEMM ceiling",
                       description="Time one training step (forward, cross-entropy, backward, Adam) of MLPs "
                                   "over a grid of widths x depths x batches, beside PyTorch when installed.")
    b.add_argument("--device", choices=DEVICES, default="auto")
    b.add_argument("--widths", type=_int_list("--widths"), default=[256, 1024])
    b.add_argument("--depths", type=_int_list("--depths"), default=[4])
    b.add_argument("--batches", type=_int_list("--batches"), default=[128, 1024])
    b.add_argument("--repeats", type=_positive_int("--repeats"), default=10, help="timed steps (median) (default: 10)")
    b.add_argument("--warmup", type=_nonneg_int("--warmup"), default=2)
    b.add_argument("--gemm-size", type=_positive_int("--gemm-size"), default=None,
                   help="N of the NxN float32 matmul that measures the GEMM ceiling (default: 2048 cpu, 8192 cuda)")
    b.add_argument("--tf32", action="store_true",
                   help="allow TF32 tensor cores for float32 GEMMs on CUDA (gpugrad and PyTorch alike)")
    b.add_argument("--no-torch", action="store_true", help="skip the PyTorch column even when installed")
    b.add_argument("--out", default=None, help="JSON path (default: runs/bench-<device>-<timestamp>.json; a PNG "
                                               "plot goes beside it)")
    b.add_argument("--quiet", action="store_true")
    sub.add_parser("info", help="versions, devices, usable backends and kernels")
    g = sub.add_parser("diagnose", help="per-layer gradient norms: deep sigmoid vs ReLU vs residual MLP",
                       description="Train three deep MLPs (sigmoid, ReLU, residual ReLU) for a few steps and plot "
                                   "each layer's weight-gradient norm (log scale) against layer index.")
    g.add_argument("--dataset", choices=("digits", "mnist1d", "synthetic"), default="digits")
    g.add_argument("--depth", type=_positive_int("--depth"), default=16, help="hidden layers (default: 16)")
    g.add_argument("--width", type=_positive_int("--width"), default=64, help="(default: 64)")
    g.add_argument("--steps", type=_positive_int("--steps"), default=20, help="SGD steps measured (default: 20)")
    g.add_argument("--batch-size", type=_positive_int("--batch-size"), default=64)
    g.add_argument("--lr", type=_float_in("--lr", 0.0, lo_open=True), default=0.01)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", choices=DEVICES, default="auto")
    g.add_argument("--out", default="grad_norms.png", help="PNG path (a .json with the numbers goes beside it)")
    gr = sub.add_parser("graph", help="write the computation graph of z = (x + y) * w (or an MLP loss) as DOT/SVG")
    gr.add_argument("--example", choices=("scalar", "mlp"), default="scalar")
    gr.add_argument("--out", default="graph.dot", help="DOT path (an .svg goes beside it when Graphviz is installed)")
    return p


# =============================================================================================== helpers
def _err(cmd: str, msg: str) -> int:
    print(f"{PROG} {cmd}: error: {msg}", file=sys.stderr)
    return 2


def _resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    avail, reason = _cuda_status()
    if requested == "cuda":
        if not avail:
            raise CLIError(f"--device cuda: CUDA is not usable here: {reason}. Use --device cpu (or auto).")
        return "cuda"
    return "cuda" if avail else "cpu"


def _cuda_status() -> tuple[bool, str]:
    """(available, reason text): ``gg.cuda.is_available()`` and the CUDA backend's probe message."""
    try:
        from . import cuda
        ok = bool(cuda.is_available())
    except Exception as e:  # pragma: no cover - a broken install
        return False, f"gpugrad.cuda failed ({type(e).__name__}: {e})"
    if ok:
        return True, "available"
    try:
        from .backends import cuda as _bc
        reason = _bc.probe()[1]
        fix = getattr(_bc, "FIX", "")
    except Exception:  # pragma: no cover
        reason, fix = "", ""
    if not reason:
        reason = "CuPy not installed"
    if "not installed" in reason and "pip install" not in reason:
        reason += " (pip install gpugrad[cuda12] or gpugrad[cuda13])"
    elif fix and "pip install" not in reason:
        reason += ". " + fix
    return False, reason


def _atomic_write_text(path: str, text: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def _write_jsonl(path: str, records: Sequence[dict]) -> None:
    _atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _append_jsonl(path: str, records: Sequence[dict]) -> None:
    if not records:
        return
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md
    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod, dist in (("gpugrad", "gpugrad"), ("numpy", "numpy"), ("numba", "numba"), ("cupy", None),
                      ("torch", "torch"), ("sklearn", "scikit-learn"), ("tqdm", "tqdm"),
                      ("matplotlib", "matplotlib"), ("mnist1d", "mnist1d"), ("safetensors", "safetensors")):
        ver = None
        if mod == "gpugrad":
            import gpugrad
            ver = gpugrad.__version__
        elif mod == "cupy":
            for dname in ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy"):
                try:
                    ver = md.version(dname) + f" ({dname})"
                    break
                except md.PackageNotFoundError:
                    continue
        else:
            try:
                ver = md.version(dist)
            except md.PackageNotFoundError:
                ver = None
        out[mod] = ver
    return out


# =============================================================================================== train
def _train_config(args: argparse.Namespace) -> dict:
    opt = args.optimizer
    cfg = {
        "dataset": args.dataset,
        "task": args.task if args.dataset == "synthetic" else "classification",
        "n_samples": args.n_samples, "n_features": args.n_features, "n_outputs": args.n_outputs, "noise": args.noise,
        "depth": args.depth, "width": args.width, "activation": args.activation, "residual": args.residual,
        "dropout": args.dropout, "checkpoint": args.checkpoint,
        "optimizer": opt,
        "lr": args.lr if args.lr is not None else DEFAULT_LR[opt],
        "momentum": args.momentum if args.momentum is not None else DEFAULT_MOMENTUM.get(opt, 0.0),
        "weight_decay": args.weight_decay if args.weight_decay is not None else DEFAULT_WEIGHT_DECAY[opt],
        "schedule": args.schedule, "epochs": args.epochs, "batch_size": args.batch_size,
        "clip_grad_norm": args.clip_grad_norm, "seed": args.seed, "grad_norm_every": args.grad_norm_every,
    }
    if opt in ("adam", "adamw") and args.momentum is not None:
        raise CLIError(f"--momentum applies to sgd and rmsprop, not {opt} (Adam's betas are fixed at (0.9, 0.999))")
    return cfg


def _explicit_options(argv: Sequence[str]) -> set[str]:
    """Destinations of the train options written on the command line."""
    p = _Parser(prog=f"{PROG} train", argument_default=argparse.SUPPRESS)
    _add_train_args(p)
    for a in p._actions:
        a.default = argparse.SUPPRESS
    ns, _ = p.parse_known_args(list(argv))
    return set(vars(ns))


def _load_data(cfg: dict):
    from . import data
    try:
        if cfg["dataset"] == "synthetic":
            return data.load_dataset("synthetic", task=cfg["task"], n_samples=cfg["n_samples"],
                                     n_features=cfg["n_features"], n_outputs=cfg["n_outputs"], noise=cfg["noise"],
                                     seed=cfg["seed"])
        return data.load_dataset(cfg["dataset"])
    except data.DatasetError as e:
        raise CLIError(str(e)) from None


def _build(cfg: dict, ds, device: str):
    import gpugrad as gg
    gg.manual_seed(cfg["seed"])
    sizes = [ds.n_features] + [cfg["width"]] * cfg["depth"] + [ds.n_outputs]
    ck = cfg["checkpoint"]
    model = gg.nn.MLP(sizes, activation=cfg["activation"], residual=cfg["residual"], dropout=cfg["dropout"],
                      device=device, checkpoint=None if ck == "none" else ck)
    params = list(model.parameters())
    name, lr, wd = cfg["optimizer"], cfg["lr"], cfg["weight_decay"]
    if name == "sgd":
        opt = gg.optim.SGD(params, lr=lr, momentum=cfg["momentum"], weight_decay=wd)
    elif name == "adam":
        opt = gg.optim.Adam(params, lr=lr, weight_decay=wd)
    elif name == "adamw":
        opt = gg.optim.AdamW(params, lr=lr, weight_decay=wd)
    else:
        opt = gg.optim.RMSprop(params, lr=lr, momentum=cfg["momentum"], weight_decay=wd)
    sched = None
    if cfg["schedule"] == "step":
        sched = gg.optim.lr_scheduler.StepLR(opt, step_size=max(1, cfg["epochs"] // 3), gamma=0.1)
    elif cfg["schedule"] == "cosine":
        sched = gg.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"])
    return model, opt, sched


def _pack_checkpoint(model, opt, sched, device: str, epoch: int, step: int) -> dict:
    import gpugrad as gg
    seed, offset = gg.random.get_rng_state(device)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else {},
        "rng": {"seed": int(seed), "offset": int(offset)},
        "progress": {"epoch": int(epoch), "step": int(step)},
    }


def _save_checkpoint(path: str, state: dict) -> None:
    import gpugrad as gg
    gg.save(state, path)


def _load_checkpoint(path: str, device: str) -> dict:
    import gpugrad as gg
    return gg.load(path, device=device)


def _restore(state: dict, model, opt, sched, device: str) -> tuple[int, int]:
    import gpugrad as gg
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None:
        sched.load_state_dict(state["scheduler"])
    rng = state["rng"]
    gg.random.set_rng_state((int(_scalar(rng["seed"])), int(_scalar(rng["offset"]))), device)
    prog = state["progress"]
    return int(_scalar(prog["epoch"])), int(_scalar(prog["step"]))


def _scalar(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v


class _Trainer:
    """One training run: data on the device, model, optimizer, per-epoch metrics and checkpoints."""

    def __init__(self, cfg: dict, ds, device: str, run_dir: str, quiet: bool) -> None:
        import gpugrad as gg
        from .backends import get_backend
        from .diagnostics import GradNormTracker
        self.gg = gg
        self.cfg, self.ds, self.device, self.run_dir, self.quiet = cfg, ds, device, run_dir, quiet
        self.be = get_backend(device)
        self.xp = self.be.xp
        self.classify = ds.task == "classification"
        self.x_train = self.be.from_numpy(np.ascontiguousarray(ds.x_train))
        self.y_train = self.be.from_numpy(np.ascontiguousarray(ds.y_train))
        self.x_test = self.be.from_numpy(np.ascontiguousarray(ds.x_test))
        self.y_test = self.be.from_numpy(np.ascontiguousarray(ds.y_test))
        if not self.classify:
            self.sst_train = float(((ds.y_train - ds.y_train.mean(0)) ** 2).sum())
            self.sst_test = float(((ds.y_test - ds.y_test.mean(0)) ** 2).sum())
        self.model, self.opt, self.sched = _build(cfg, ds, device)
        self.params = list(self.model.parameters())
        self.tracker = GradNormTracker(self.model, warn=self._warn)
        self.epoch = 0
        self.step = 0

    def _warn(self, msg: str) -> None:
        from tqdm import tqdm
        tqdm.write(f"warning: {msg}", file=sys.stderr)

    def _loss(self, out, y, reduction: str = "mean"):
        F = self.gg.nn.functional
        if self.classify:
            return F.cross_entropy(out, y, reduction=reduction)
        return F.mse_loss(out, y, reduction=reduction)

    def _score_sum(self, out, y):
        """Device scalar: correct predictions (classification) or 0 (regression uses the loss)."""
        if self.classify:
            return (out.data.argmax(axis=1) == y.data).sum()
        return 0

    def _finish(self, loss_sum, score_sum, n: int, sst: float | None) -> tuple[float, float]:
        loss_sum = float(self.be.to_numpy(self.xp.asarray(loss_sum)))
        if self.classify:
            return loss_sum / n, float(self.be.to_numpy(self.xp.asarray(score_sum))) / n
        n_el = n * self.ds.n_outputs
        return loss_sum / n_el, 1.0 - loss_sum / sst if sst else float("nan")

    def evaluate(self, x, y, sst: float | None, batch: int = 2048) -> tuple[float, float]:
        gg = self.gg
        self.model.eval()
        loss_sum, score_sum = 0.0, 0
        n = int(x.shape[0])
        with gg.no_grad():
            for i in range(0, n, batch):
                xb = gg.as_tensor(x[i:i + batch], device=self.device)
                yb = gg.as_tensor(y[i:i + batch], device=self.device)
                out = self.model(xb)
                loss_sum = loss_sum + self._loss(out, yb, "sum").data
                score_sum = score_sum + self._score_sum(out, yb)
        return self._finish(loss_sum, score_sum, n, sst)

    def train_epoch(self, epoch: int, total_epochs: int) -> dict:
        from tqdm import tqdm
        from .data import batch_slices, epoch_permutation
        gg, cfg = self.gg, self.cfg
        n, bs = self.ds.n_train, cfg["batch_size"]
        perm = self.be.from_numpy(epoch_permutation(n, cfg["seed"], epoch))
        xs, ys = self.x_train[perm], self.y_train[perm]
        self.model.train()
        loss_sum, score_sum = 0.0, 0
        every = cfg["grad_norm_every"]
        norm_records = []
        n_steps = -(-n // bs)
        show_every = max(1, n_steps // 25)
        self.be.synchronize()
        t0 = time.perf_counter()
        with tqdm(total=n, desc=f"epoch {epoch + 1}/{total_epochs}", unit="sample", unit_scale=True,
                  disable=self.quiet, leave=False, file=sys.stderr, dynamic_ncols=True) as bar:
            for k, sl in enumerate(batch_slices(n, bs)):
                xb = gg.as_tensor(xs[sl], device=self.device)
                yb = gg.as_tensor(ys[sl], device=self.device)
                out = self.model(xb)
                loss = self._loss(out, yb)
                self.opt.zero_grad()
                loss.backward()
                if every and self.step % every == 0:
                    norm_records.append({"epoch": epoch + 1, "step": self.step, "norms": self.tracker.measure()})
                if cfg["clip_grad_norm"] is not None:
                    gg.nn.utils.clip_grad_norm_(self.params, cfg["clip_grad_norm"])
                self.opt.step()
                nb = sl.stop - sl.start
                loss_sum = loss_sum + loss.data * nb
                score_sum = score_sum + self._score_sum(out, yb)
                self.step += 1
                if not self.quiet:
                    bar.update(nb)
                    if k % show_every == 0 or k == n_steps - 1:
                        bar.set_postfix(loss=f"{float(loss.item()):.4f}", refresh=False)
        self.be.synchronize()
        train_time = time.perf_counter() - t0
        lr = self.opt.param_groups[0]["lr"]
        if self.sched is not None:
            self.sched.step()
        sst_tr = None if self.classify else self.sst_train
        sst_te = None if self.classify else self.sst_test
        train_loss, train_score = self._finish(loss_sum, score_sum, n, sst_tr)
        test_loss, test_score = self.evaluate(self.x_test, self.y_test, sst_te)
        key = "acc" if self.classify else "r2"
        rec = {"epoch": epoch + 1, "step": self.step, "lr": lr,
               "train_loss": train_loss, f"train_{key}": train_score,
               "test_loss": test_loss, f"test_{key}": test_score,
               "samples_per_s": n / train_time if train_time > 0 else None, "epoch_time_s": train_time}
        if norm_records:
            from .diagnostics import mean_profile
            rec["grad_norm"] = mean_profile(r["norms"] for r in norm_records)
        self.epoch = epoch + 1
        return rec, norm_records


def _epoch_line(rec: dict, total: int, classify: bool) -> str:
    k = "acc" if classify else "R^2"
    key = "acc" if classify else "r2"
    sps = rec.get("samples_per_s") or 0.0
    return (f"epoch {rec['epoch']:>3}/{total}  train loss {rec['train_loss']:.4f} {k} {rec[f'train_{key}']:.4f}"
            f"  |  test loss {rec['test_loss']:.4f} {k} {rec[f'test_{key}']:.4f}"
            f"  |  {sps:,.0f} samples/s  lr {rec['lr']:.2g}")


def _prepare_new_run(cfg: dict, run_dir: str | None) -> str:
    if run_dir is None:
        base = os.path.join("runs", f"{cfg['dataset']}-{_timestamp()}")
        run_dir, k = base, 1
        while os.path.exists(run_dir):
            run_dir = f"{base}-{k}"
            k += 1
    run_dir = os.path.normpath(run_dir)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise CLIError(f"--run-dir {run_dir!r} exists and is not a folder")
    if os.path.isdir(run_dir) and any(os.path.exists(os.path.join(run_dir, f))
                                      for f in ("config.json", "metrics.jsonl", CHECKPOINT_FILE)):
        raise CLIError(f"run folder {run_dir!r} already holds a run; continue it with --resume {run_dir} "
                       "or choose another --run-dir (nothing was overwritten)")
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise CLIError(f"cannot write to run folder {run_dir!r}: {e.strerror or e}. Choose another --run-dir.") from None
    return run_dir


def cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gpugrad train``: returns the exit code."""
    import gpugrad as gg
    if args.resume:
        run_dir = os.path.normpath(args.resume)
        cfg_path = os.path.join(run_dir, "config.json")
        ck_path = os.path.join(run_dir, CHECKPOINT_FILE)
        if not os.path.isdir(run_dir):
            raise CLIError(f"--resume {run_dir!r}: no such run folder")
        try:
            with open(cfg_path, encoding="utf-8") as f:
                saved = json.load(f)
            cfg = dict(saved["config"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CLIError(f"--resume {run_dir!r}: config.json is missing or unreadable ({e}); "
                           "cannot resume (nothing was changed)") from None
        explicit = _explicit_options(argv)
        new_cfg = _train_config(args)
        for k in sorted(explicit - RESUME_OVERRIDABLE):
            if k in new_cfg and new_cfg[k] != cfg.get(k):
                raise CLIError(f"--resume: --{k.replace('_', '-')} {new_cfg[k]} differs from the run's saved "
                               f"{k}={cfg.get(k)!r}; a resumed run keeps its configuration (only --epochs, "
                               "--device, --quiet, --no-plots, --stop-after may change)")
        if "epochs" in explicit:
            if args.epochs != cfg["epochs"] and cfg.get("schedule", "none") != "none" and not args.quiet:
                print(f"note: the {cfg['schedule']} lr schedule was planned for {cfg['epochs']} epochs; the resumed "
                      f"run continues it from its saved state (for an exact interrupted-and-resumed run, start "
                      f"with the final --epochs and use --stop-after)", file=sys.stderr)
            cfg["epochs"] = args.epochs
        if args.run_dir and os.path.normpath(args.run_dir) != run_dir:
            raise CLIError("--resume continues the run in its own folder; drop --run-dir")
        if not os.path.exists(ck_path):
            raise CLIError(f"--resume {run_dir!r}: {CHECKPOINT_FILE} is missing; the run has no finished epoch "
                           "to continue from (start a new run instead)")
    else:
        cfg = _train_config(args)
        run_dir = None
    device = _resolve_device(args.device)
    ds = _load_data(cfg)
    if ds.n_train < 1:
        raise CLIError(f"{cfg['dataset']}: the training split is empty")

    try:
        trainer = _Trainer(cfg, ds, device, run_dir or "", args.quiet)
    except (ValueError, TypeError) as e:
        raise CLIError(f"cannot build the model: {e}") from None
    metrics_path = grads_path = None
    if args.resume:
        try:
            state = _load_checkpoint(ck_path, device)
            trainer.epoch, trainer.step = _restore(state, trainer.model, trainer.opt, trainer.sched, device)
        except Exception as e:
            raise CLIError(f"--resume {run_dir!r}: {CHECKPOINT_FILE} is corrupt or does not match the saved "
                           f"config ({type(e).__name__}: {e}); nothing was changed") from None
        metrics_path = os.path.join(run_dir, "metrics.jsonl")
        grads_path = os.path.join(run_dir, "grad_norms.jsonl")
        try:
            metrics = [r for r in _read_jsonl(metrics_path) if r["epoch"] <= trainer.epoch]
            gnorms = [r for r in _read_jsonl(grads_path) if r["epoch"] <= trainer.epoch]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CLIError(f"--resume {run_dir!r}: metrics.jsonl/grad_norms.jsonl is unreadable ({e}); "
                           "nothing was changed") from None
        if trainer.epoch >= cfg["epochs"]:  # nothing to do: touch nothing
            print(f"run {run_dir} already finished {trainer.epoch} epochs; pass --epochs N (> {trainer.epoch}) to "
                  "train further", flush=True)
            args.no_plots = True
            _final_report(run_dir, metrics, cfg, trainer, args, t_start=None)
            return 0
        if not os.access(run_dir, os.W_OK):
            raise CLIError(f"--resume {run_dir!r}: the run folder is not writable")
        saved["config"] = cfg
        saved.setdefault("resumed", []).append({"at_epoch": trainer.epoch, "time": _timestamp(),
                                                "device": device, "argv": list(argv)})
        _write_jsonl(metrics_path, metrics)  # drop epochs after the checkpoint (a crash between the two)
        _write_jsonl(grads_path, gnorms)
        _atomic_write_text(cfg_path, json.dumps(saved, indent=2) + "\n")
    else:
        run_dir = _prepare_new_run(cfg, args.run_dir)
        trainer.run_dir = run_dir
        metrics, cfg_path = [], os.path.join(run_dir, "config.json")
        metrics_path = os.path.join(run_dir, "metrics.jsonl")
        grads_path = os.path.join(run_dir, "grad_norms.jsonl")
        saved = {"config": cfg, "device": device, "gpugrad": gg.__version__, "argv": list(argv),
                 "created": _timestamp(), "dataset": ds.describe(), "dataset_info": ds.info,
                 "model": {"sizes": trainer.model.sizes, "parameters": trainer.model.num_parameters(),
                           "linear_layers": trainer.tracker.names}}
        _atomic_write_text(cfg_path, json.dumps(saved, indent=2) + "\n")
        _write_jsonl(metrics_path, [])
        _write_jsonl(grads_path, [])
    ck_path = os.path.join(run_dir, CHECKPOINT_FILE)

    total = cfg["epochs"]
    say = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    say(f"gpugrad train: {ds.describe()} | MLP {trainer.model.sizes} {cfg['activation']}"
        f"{' residual' if cfg['residual'] else ''} ({trainer.model.num_parameters():,} parameters) | "
        f"{cfg['optimizer']} lr {cfg['lr']:g} | device {device} | run folder {run_dir}"
        + (f" | resuming after epoch {trainer.epoch}" if args.resume else ""))
    t_start = time.perf_counter()
    diverged = False
    stop_at = total if args.stop_after is None else min(total, trainer.epoch + args.stop_after)
    try:
        for epoch in range(trainer.epoch, stop_at):
            rec, norm_recs = trainer.train_epoch(epoch, total)
            metrics.append(rec)
            _append_jsonl(metrics_path, [rec])
            _append_jsonl(grads_path, norm_recs)
            _save_checkpoint(ck_path, _pack_checkpoint(trainer.model, trainer.opt, trainer.sched, device,
                                                       trainer.epoch, trainer.step))
            say(_epoch_line(rec, total, trainer.classify))
            if not math.isfinite(rec["train_loss"]):
                print(f"{PROG} train: training diverged (train loss {rec['train_loss']}); lower --lr or add "
                      "--clip-grad-norm", file=sys.stderr)
                diverged = True
                break
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last finished epoch ({trainer.epoch}) is saved. Continue with: "
              f"{PROG} train --resume {run_dir}", file=sys.stderr)
        return 130
    _final_report(run_dir, metrics, cfg, trainer, args, t_start, diverged)
    return 1 if diverged else 0


def _final_report(run_dir: str, metrics: list, cfg: dict, trainer, args, t_start, diverged: bool = False) -> None:
    from . import diagnostics
    key = "acc" if trainer.classify else "r2"
    plots = []
    if not args.no_plots and metrics:
        title = f"{cfg['dataset']}: MLP {trainer.model.sizes} {cfg['activation']}, {cfg['optimizer']} lr {cfg['lr']:g}"
        p = diagnostics.plot_curves(metrics, os.path.join(run_dir, "curves.png"), title)
        if p:
            plots.append(p)
            recs = _read_jsonl(os.path.join(run_dir, "grad_norms.jsonl"))
            if recs:
                p2 = diagnostics.plot_grad_norm_history(recs, os.path.join(run_dir, "grad_norms.png"),
                                                        "per-layer weight-gradient norm: " + title)
                if p2:
                    plots.append(p2)
    if not metrics:
        return
    last = metrics[-1]
    best = max(metrics, key=lambda r: r[f"test_{key}"])
    name = "test acc" if trainer.classify else "test R^2"
    elapsed = f" in {time.perf_counter() - t_start:.1f} s" if t_start is not None else ""
    stopped = "" if last["epoch"] >= cfg["epochs"] else f" (stopped; resume with: {PROG} train --resume {run_dir})"
    if diverged:
        stopped = " (diverged: the loss is not finite)"
    print(f"final: epoch {last['epoch']}/{cfg['epochs']}{elapsed}{stopped}: {name} {last[f'test_{key}']:.4f} "
          f"(best {best[f'test_{key}']:.4f} at epoch {best['epoch']}), test loss {last['test_loss']:.4f}, "
          f"train loss {last['train_loss']:.4f}", flush=True)
    print(f"run folder: {run_dir} (config.json, metrics.jsonl, grad_norms.jsonl, {CHECKPOINT_FILE}"
          + "".join(f", {os.path.basename(p)}" for p in plots) + ")", flush=True)
    if trainer.tracker.warnings:
        print(f"{len(trainer.tracker.warnings)} gradient warning(s) (see above)", flush=True)


# =============================================================================================== info
def info_text() -> str:
    """The text of ``gpugrad info``."""
    v = _versions()
    lines = [f"gpugrad {v['gpugrad']}",
             f"python {v['python']} ({platform.python_implementation()}, {platform.platform(terse=True)})"]
    order = ["numpy", "numba", "cupy", "torch", "sklearn", "tqdm", "matplotlib", "mnist1d", "safetensors"]
    hints = {"cupy": "pip install gpugrad[cuda12]", "torch": "pip install torch (optional: benchmarks)",
             "matplotlib": "pip install matplotlib (plots)", "mnist1d": "pip install mnist1d (--dataset mnist1d)",
             "safetensors": "optional"}
    lines.append("packages:")
    for k in order:
        ver = v.get(k)
        name = "scikit-learn" if k == "sklearn" else k
        lines.append(f"  {name:<12} {ver if ver else 'not installed' + (' (' + hints[k] + ')' if k in hints else '')}")
    lines.append("devices:")
    ncpu = os.cpu_count() or 1
    blas = _blas_name()
    lines.append(f"  cpu: available - NumPy backend, {ncpu} logical cores, BLAS {blas}")
    ok, reason = _cuda_status()
    if ok:
        lines.append(f"  cuda: available - {_cuda_devices_text()}")
    else:
        lines.append(f"  cuda: unavailable - {reason}")
    lines.append("backends and kernels:")
    for name, usable, why in _kernel_status(ok):
        lines.append(f"  {name:<44} {'yes' if usable else 'no '}  {why}")
    lines.append(f"default device for 'gpugrad train --device auto': {'cuda' if ok else 'cpu'}")
    return "\n".join(lines)


def _blas_name() -> str:
    """The BLAS behind the CPU backend's linear layers: MKL when installed, else NumPy's."""
    from .backends import cpu_blas
    return cpu_blas.provider()


def _cuda_devices_text() -> str:
    try:
        import cupy
        n = cupy.cuda.runtime.getDeviceCount()
        parts = []
        for i in range(n):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            parts.append(f"cuda:{i} {name} ({props['totalGlobalMem'] / 2**30:.0f} GiB, "
                         f"sm_{props['major']}{props['minor']})")
        rt = cupy.cuda.runtime.runtimeGetVersion()
        drv = cupy.cuda.runtime.driverGetVersion()
        return "; ".join(parts) + f"; CUDA runtime {rt // 1000}.{rt % 1000 // 10}, driver {drv // 1000}.{drv % 1000 // 10}"
    except Exception as e:  # pragma: no cover - needs a GPU
        return f"(device query failed: {type(e).__name__}: {e})"


def _kernel_status(cuda_ok: bool) -> list[tuple[str, bool, str]]:
    """(name, usable, why) for the CPU and CUDA execution paths."""
    import importlib.util
    rows: list[tuple[str, bool, str]] = []
    try:
        import numba
        rows.append(("cpu: NumPy ops + numba njit", True, f"numba {numba.__version__}, BLAS {_blas_name()}"))
    except Exception as e:  # pragma: no cover - numba is a dependency
        rows.append(("cpu: NumPy ops + numba njit", False, f"numba failed to import: {e}"))
    no_gpu = "no usable CUDA device (see the cuda line above)"
    rows.append(("cuda: CuPy arrays + cuBLAS GEMMs", cuda_ok, "ready" if cuda_ok else no_gpu))
    sim = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    try:
        from numba import cuda as ncuda
        if sim:
            rows.append(("cuda: Numba CUDA kernels", False,
                         "NUMBA_ENABLE_CUDASIM=1: the Numba CUDA simulator (for tests, not a GPU)"))
        elif ncuda.is_available():
            rows.append(("cuda: Numba CUDA kernels", True, "numba.cuda.is_available()"))
        else:
            rows.append(("cuda: Numba CUDA kernels", False,
                         "numba.cuda.is_available() is False (no GPU/driver, or no NVVM: pip install numba-cuda[cu12])"))
    except Exception as e:  # pragma: no cover
        rows.append(("cuda: Numba CUDA kernels", False, f"numba.cuda failed: {type(e).__name__}: {e}"))
    rows.append(("cuda: CUDA C kernels (CuPy NVRTC)", cuda_ok, "ready" if cuda_ok else no_gpu))
    try:
        from . import cuda
        impl = cuda.get_kernels()
        falls = cuda.kernel_fallbacks()
        why = f"set {impl!r} (gg.cuda.set_kernels / GPUGRAD_CUDA_KERNELS: numba, cuda_c, xp)"
        if falls:
            why += f"; {len(falls)} fell back to CuPy ops: " + "; ".join(f"{k}: {v}" for k, v in list(falls.items())[:3])
        rows.append(("cuda: fused bias+activation kernels", cuda_ok, why if cuda_ok else f"{no_gpu}; {why}"))
        rows.append(("cuda: TF32 GEMMs", cuda_ok and cuda.get_tf32(),
                     f"{'on' if cuda.get_tf32() else 'off'} (gg.cuda.set_tf32 / GPUGRAD_TF32=1)"))
    except Exception:  # pragma: no cover - older gpugrad.cuda
        pass
    if importlib.util.find_spec("gpugrad.backends.cuda.fused_mlp") is not None:
        rows.append(("cuda: fused whole-MLP kernel (tensor cores)", cuda_ok,
                     "gpugrad.backends.cuda.fused_mlp, narrow MLPs" + ("" if cuda_ok else f"; {no_gpu}")))
    has_nvmath = importlib.util.find_spec("nvmath") is not None
    rows.append(("cuda: cuBLASLt epilogues (nvmath-python)", has_nvmath and cuda_ok,
                 ("ready" if cuda_ok else no_gpu) if has_nvmath
                 else "nvmath-python not installed (optional: pip install nvmath-python[cu12])"))
    return rows


def cmd_info(args: argparse.Namespace) -> int:
    print(info_text())
    return 0


# =============================================================================================== bench
def _mlp_flops(sizes: Sequence[int], batch: int) -> float:
    """FLOPs of one training step's GEMMs: forward 2*B*in*out per layer, backward 4*B*in*out
    (dX and dW) except the first layer (no dX: the input needs no gradient)."""
    total = 0.0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        total += 2.0 * batch * a * b * (2 if i == 0 else 3)
    return total


def _gemm_ceiling(device: str, repeats: int = 3, n: int | None = None) -> dict:
    """Best TFLOP/s of a few big float32 matmuls on the device (the roofline for the MLP GEMMs)."""
    from .backends import get_backend
    be = get_backend(device)
    n = n or (2048 if device == "cpu" else 8192)
    rng = np.random.default_rng(0)
    a = be.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
    b = be.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
    c = a @ b  # warm-up
    be.synchronize()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        c = a @ b
        be.synchronize()
        best = min(best, time.perf_counter() - t)
    del c
    return {"n": n, "dtype": "float32", "seconds": best, "tflops": 2.0 * n ** 3 / best / 1e12,
            "source": f"{'numpy' if device == 'cpu' else 'cupy'} matmul"}


def _torch_gemm_tflops(torch, device: str, n: int, repeats: int = 3) -> float:
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    c = a @ b
    sync()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        c = a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    del c
    return 2.0 * n ** 3 / best / 1e12


def _time_steps(step, sync, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _bench_gpugrad(device: str, sizes: list[int], batch: int, warmup: int, repeats: int) -> float:
    import gpugrad as gg
    from .backends import get_backend
    be = get_backend(device)
    gg.manual_seed(0)
    model = gg.nn.MLP(sizes, activation="relu", device=device)
    opt = gg.optim.Adam(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    x = gg.tensor(rng.standard_normal((batch, sizes[0]), dtype=np.float32), device=device)
    y = gg.tensor(rng.integers(0, sizes[-1], batch), device=device)
    F = gg.nn.functional

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return _time_steps(step, be.synchronize, warmup, repeats)


def _bench_torch(torch, device: str, sizes: list[int], batch: int, warmup: int, repeats: int) -> float:
    dev = torch.device(device)
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, sizes[0], device=dev)
    y = torch.randint(0, sizes[-1], (batch,), device=dev)
    F = torch.nn.functional

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return _time_steps(step, sync, warmup, repeats)


def cmd_bench(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    import gpugrad as gg
    device = _resolve_device(args.device)
    torch = None
    if not args.no_torch:
        try:
            import torch  # type: ignore[no-redef]
            if device == "cuda" and not torch.cuda.is_available():
                torch = None
        except ImportError:
            torch = None
    if device == "cuda":
        gg.cuda.set_tf32(bool(args.tf32))
        if torch is not None:
            torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    out = args.out or os.path.join("runs", f"bench-{device}-{_timestamp()}.json")
    out_dir = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(out_dir, exist_ok=True)
        if not os.access(out_dir, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise CLIError(f"--out {out!r}: cannot write there ({e.strerror or e})") from None
    say = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    ceiling = _gemm_ceiling(device, n=args.gemm_size)
    if torch is not None:  # the device's ceiling is the best GEMM any library here reaches
        ceiling["gpugrad_backend_tflops"] = ceiling["tflops"]
        ceiling["torch_tflops"] = _torch_gemm_tflops(torch, device, ceiling["n"])
        if ceiling["torch_tflops"] > ceiling["tflops"]:
            ceiling["tflops"], ceiling["source"] = ceiling["torch_tflops"], "torch.matmul"
    say(f"gpugrad bench on {device}: GEMM ceiling {ceiling['tflops']:.3f} TFLOP/s (float32 {ceiling['n']}^3 "
        f"{ceiling['source']}, best of 3){'; PyTorch ' + torch.__version__ if torch else '; PyTorch not installed' if not args.no_torch else ''}")
    n_in, n_out = None, 10
    rows = []
    hdr = (f"{'width':>6} {'depth':>5} {'batch':>6} | {'gpugrad ms':>10} {'samples/s':>11} {'TFLOP/s':>8} {'%ceil':>6}"
           + (f" | {'torch ms':>9} {'samples/s':>11} {'TFLOP/s':>8} {'%ceil':>6} {'gg/torch':>8}" if torch else ""))
    say(hdr)
    say("-" * len(hdr))
    for w in args.widths:
        for d in args.depths:
            for bsz in args.batches:
                sizes = [n_in or w] + [w] * d + [n_out]
                flops = _mlp_flops(sizes, bsz)
                t = _bench_gpugrad(device, sizes, bsz, args.warmup, args.repeats)
                row = {"width": w, "depth": d, "batch": bsz, "sizes": sizes, "flops_per_step": flops,
                       "gpugrad_ms": t * 1e3, "gpugrad_samples_per_s": bsz / t,
                       "gpugrad_tflops": flops / t / 1e12,
                       "gpugrad_pct_ceiling": 100.0 * flops / t / 1e12 / ceiling["tflops"]}
                line = (f"{w:>6} {d:>5} {bsz:>6} | {t * 1e3:>10.3f} {bsz / t:>11,.0f} {row['gpugrad_tflops']:>8.3f} "
                        f"{row['gpugrad_pct_ceiling']:>5.1f}%")
                if torch is not None:
                    tt = _bench_torch(torch, device, sizes, bsz, args.warmup, args.repeats)
                    row.update({"torch_ms": tt * 1e3, "torch_samples_per_s": bsz / tt, "torch_tflops": flops / tt / 1e12,
                                "torch_pct_ceiling": 100.0 * flops / tt / 1e12 / ceiling["tflops"],
                                "speedup_vs_torch": tt / t})
                    line += (f" | {tt * 1e3:>9.3f} {bsz / tt:>11,.0f} {row['torch_tflops']:>8.3f} "
                             f"{row['torch_pct_ceiling']:>5.1f}% {tt / t:>7.2f}x")
                rows.append(row)
                say(line)
    result = {"command": " ".join([PROG, "bench", *argv]),
              "device": device, "device_name": _device_name(device), "versions": _versions(),
              "tf32": bool(args.tf32 and device == "cuda"), "gemm_ceiling": ceiling, "step": "zero_grad + MLP(relu) forward + cross_entropy + backward + Adam step",
              "flops_note": "GEMM FLOPs: forward 2*B*in*out per layer; backward 4*B*in*out (dX, dW), no dX for layer 1",
              "timing": f"median of {args.repeats} steps after {args.warmup} warm-up steps, synchronised per step",
              "rows": rows, "time": _timestamp()}
    _atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    from .diagnostics import plot_bench
    png = plot_bench(rows, os.path.splitext(out)[0] + ".png", ceiling["tflops"],
                     f"training step on {result['device_name']}")
    say(f"wrote {out}" + (f" and {png}" if png else ""))
    return 0


def _device_name(device: str) -> str:
    if device == "cuda":
        try:
            import cupy
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            return name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # pragma: no cover
            return "cuda"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


# =============================================================================================== diagnose
def grad_norm_profile(activation: str, residual: bool, depth: int, width: int, ds, device: str = "cpu",
                      steps: int = 20, batch_size: int = 64, lr: float = 0.01, seed: int = 0) -> dict:
    """Train ``MLP([in] + [width]*depth + [out])`` with plain SGD for ``steps`` steps on ``ds`` and return
    ``{"layers": [...], "profile": [geometric-mean weight-grad norm per layer], "warnings": [...],
    "loss_first", "loss_last"}``."""
    import gpugrad as gg
    from .data import epoch_permutation
    from .diagnostics import GradNormTracker, mean_profile
    gg.manual_seed(seed)
    model = gg.nn.MLP([ds.n_features] + [width] * depth + [ds.n_outputs], activation=activation,
                      residual=residual, device=device)
    opt = gg.optim.SGD(model.parameters(), lr=lr)
    warnings: list[str] = []
    tracker = GradNormTracker(model, warn=warnings.append)
    perm = epoch_permutation(ds.n_train, seed, 0)
    recs, losses = [], []
    F = gg.nn.functional
    for s in range(steps):
        idx = perm[(s * batch_size) % ds.n_train:][:batch_size]
        if len(idx) < batch_size:
            idx = perm[:batch_size]
        x = gg.tensor(ds.x_train[idx], device=device)
        y = gg.tensor(ds.y_train[idx], device=device)
        loss = F.cross_entropy(model(x), y) if ds.task == "classification" else F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        recs.append(tracker.measure())
        opt.step()
        losses.append(float(loss.item()))
    prof = mean_profile(recs)
    return {"layers": list(prof), "profile": list(prof.values()), "warnings": warnings,
            "loss_first": losses[0], "loss_last": losses[-1]}


def cmd_diagnose(args: argparse.Namespace) -> int:
    from . import diagnostics
    device = _resolve_device(args.device)
    ds = _load_data({"dataset": args.dataset, "task": "classification", "n_samples": 2000, "n_features": 32,
                     "n_outputs": 4, "noise": 0.05, "seed": args.seed})
    variants = [(f"sigmoid, depth {args.depth}", "sigmoid", False),
                (f"relu, depth {args.depth}", "relu", False),
                (f"relu + residual, depth {args.depth}", "relu", True)]
    profiles, result = {}, {"dataset": args.dataset, "depth": args.depth, "width": args.width, "steps": args.steps,
                            "lr": args.lr, "device": device, "models": {}}
    print(f"gpugrad diagnose: {ds.describe()}; MLP with {args.depth} hidden layers of width {args.width}, "
          f"{args.steps} SGD steps (lr {args.lr}), geometric-mean weight-gradient norm per layer")
    for label, act, res in variants:
        r = grad_norm_profile(act, res, args.depth, args.width, ds, device, args.steps, args.batch_size,
                              args.lr, args.seed)
        profiles[label] = r["profile"]
        result["models"][label] = r
        p = np.asarray(r["profile"])
        ratio = p[0] / p[-1] if p[-1] > 0 else float("nan")
        print(f"  {label:<28} first layer {p[0]:.2e}  last layer {p[-1]:.2e}  first/last {ratio:.1e}  "
              f"loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}")
        for w in r["warnings"]:
            print(f"    warning: {w}", file=sys.stderr)
    out = args.out
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        _atomic_write_text(os.path.splitext(out)[0] + ".json", json.dumps(result, indent=2) + "\n")
    except OSError as e:
        raise CLIError(f"--out {out!r}: cannot write there ({e.strerror or e})") from None
    png = diagnostics.plot_grad_norm_profiles(
        profiles, out, f"{ds.name}: weight-gradient norm per layer ({args.depth} hidden x {args.width}, "
                       f"{args.steps} SGD steps)")
    print(f"wrote {os.path.splitext(out)[0] + '.json'}" + (f" and {png}" if png else ""))
    return 0


# =============================================================================================== graph
def cmd_graph(args: argparse.Namespace) -> int:
    import gpugrad as gg
    from . import viz
    if args.example == "scalar":
        x = gg.tensor(2.0, requires_grad=True)
        y = gg.tensor(3.0, requires_grad=True)
        w = gg.tensor(4.0, requires_grad=True)
        s = x + y
        s.retain_grad()
        z = s * w
        z.retain_grad()
        z.backward()
        names = {"x": x, "y": y, "w": w, "s": s, "z": z}
        root = z
    else:
        gg.manual_seed(0)
        model = gg.nn.MLP([3, 4, 2], activation="relu")
        xin = gg.randn(2, 3)
        loss = gg.nn.functional.cross_entropy(model(xin), gg.tensor([0, 1]))
        loss.backward()
        names = dict(model.named_parameters())
        root = loss
    try:
        text = viz.graph(root, path=args.out, names=names)
    except OSError as e:
        raise CLIError(f"--out {args.out!r}: cannot write there ({e.strerror or e})") from None
    print(text, end="")
    base = os.path.splitext(args.out)[0]
    print(f"wrote {base}.dot" + (f" and {base}.svg" if viz.dot_available() else " (install Graphviz for SVG)"),
          file=sys.stderr)
    return 0


# =============================================================================================== main
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpugrad`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    cmd = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        args = parser.parse_args(argv)
    except CLIError as e:
        return _err(cmd or "", str(e)) if cmd else (print(f"{PROG}: error: {e}", file=sys.stderr) or 2)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.version:
        import gpugrad
        print(f"gpugrad {gpugrad.__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 0
    handlers = {"train": lambda: cmd_train(args, argv[1:]), "bench": lambda: cmd_bench(args, argv[1:]),
                "info": lambda: cmd_info(args), "diagnose": lambda: cmd_diagnose(args),
                "graph": lambda: cmd_graph(args)}
    try:
        return handlers[args.command]()
    except CLIError as e:
        return _err(args.command, str(e))
    except KeyboardInterrupt:
        print(f"\n{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
