"""``gpugrad train``: train an MLP, writing config.json, metrics.jsonl, grad_norms.jsonl, a resumable
checkpoint and PNG plots into the run folder; ``--resume`` continues a stopped run."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from .. import training
from ..data import DATASETS
from ..distributed.launch import MODES as DISTRIBUTED_MODES
from ..install_hints import hint
from .options import (DEVICES, PROG, CLIError, Parser, atomic_write_text, checkpoint_arg, float_in,
                      load_data, nonneg_int, positive_int, resolve_device, timestamp)

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("none", "step", "cosine")
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh", "gelu")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 1e-2, "rmsprop": 0.0}
DEFAULT_MOMENTUM = {"sgd": 0.9, "rmsprop": 0.0}
CHECKPOINT_FILE = "checkpoint.npz"
# Options that may change when resuming (they do not change the numbers the run computes).
RESUME_OVERRIDABLE = {"epochs", "quiet", "device", "no_plots", "stop_after", "resume", "run_dir", "command",
                      "distributed"}


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=DATASETS, default="digits",
                   help="digits: 8x8 handwritten digits (shipped with gpugrad); mnist1d: generated locally by the "
                        f"'mnist1d' package, {hint('mnist1d')}; synthetic: seeded teacher-network data (default: digits)")
    d.add_argument("--task", choices=("classification", "regression"), default="classification",
                   help="synthetic only (default: classification)")
    d.add_argument("--n-samples", type=positive_int("--n-samples"), default=2000, help="synthetic only (default: 2000)")
    d.add_argument("--n-features", type=positive_int("--n-features"), default=32, help="synthetic only (default: 32)")
    d.add_argument("--n-outputs", type=positive_int("--n-outputs"), default=4,
                   help="synthetic only: classes (classification) or targets (regression) (default: 4)")
    d.add_argument("--noise", type=float_in("--noise", 0.0), default=0.05, help="synthetic only (default: 0.05)")
    m = p.add_argument_group("model")
    m.add_argument("--depth", type=nonneg_int("--depth"), default=2, help="hidden layers (default: 2)")
    m.add_argument("--width", type=positive_int("--width"), default=256, help="hidden width (default: 256)")
    m.add_argument("--activation", choices=ACTIVATIONS, default="relu", help="(default: relu)")
    m.add_argument("--residual", action="store_true", help="x + f(x) in hidden layers of equal width")
    m.add_argument("--dropout", type=float_in("--dropout", 0.0, 1.0, hi_open=True), default=0.0,
                   help="dropout after each hidden layer (default: 0)")
    m.add_argument("--checkpoint", type=checkpoint_arg, default="none",
                   help="gradient checkpointing of the hidden layers: none, sqrt, or N segments (default: none)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="(default: adam)")
    o.add_argument("--lr", type=float_in("--lr", 0.0, lo_open=True), default=None,
                   help="learning rate (default: 1e-3 for adam/adamw/rmsprop, 0.05 for sgd)")
    o.add_argument("--momentum", type=float_in("--momentum", 0.0), default=None,
                   help="sgd/rmsprop momentum (default: 0.9 for sgd, 0 for rmsprop)")
    o.add_argument("--weight-decay", type=float_in("--weight-decay", 0.0), default=None,
                   help="(default: 0.01 for adamw, else 0)")
    o.add_argument("--schedule", choices=SCHEDULES, default="none",
                   help="lr schedule per epoch: step (x0.1 every epochs/3) or cosine to 0 (default: none)")
    o.add_argument("--epochs", type=positive_int("--epochs"), default=20, help="(default: 20)")
    o.add_argument("--batch-size", type=positive_int("--batch-size"), default=32, help="(default: 32)")
    o.add_argument("--clip-grad-norm", type=float_in("--clip-grad-norm", 0.0, lo_open=True), default=None,
                   help="clip the total gradient norm to this value")
    o.add_argument("--seed", type=int, default=0, help="init, shuffling and dropout seed (default: 0)")
    r = p.add_argument_group("run")
    r.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto picks CUDA when gg.cuda.is_available() (default: auto)")
    r.add_argument("--run-dir", default=None, help="run folder (default: runs/<dataset>-<timestamp>)")
    r.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR where it stopped (pass --epochs to extend it)")
    r.add_argument("--stop-after", type=positive_int("--stop-after"), default=None, metavar="K",
                   help="stop after K epochs of this invocation, leaving a resumable run (time-sliced jobs)")
    r.add_argument("--grad-norm-every", type=nonneg_int("--grad-norm-every"), default=10, metavar="N",
                   help="record every Linear layer's weight-gradient norm every N steps; 0 disables (default: 10)")
    r.add_argument("--no-plots", action="store_true", help="do not write PNG plots at the end")
    r.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    r.add_argument("--distributed", choices=DISTRIBUTED_MODES, default="auto",
                   help="data parallel over the ranks of `mpiexec -n N python3 -m gpugrad train ...`: each rank "
                        "trains on its share of every --batch-size batch (the global batch); rank 0 prints and "
                        "writes the run folder. auto: on when launched as several ranks, nccl for --device cuda, "
                        "else mpi (default: auto)")



def add_parser(sub) -> None:
    """Register ``train`` on the sub-command parsers ``sub``."""
    t = sub.add_parser("train", help="train an MLP on digits / mnist1d / synthetic data",
                       description="Train an MLP; writes config.json, metrics.jsonl, grad_norms.jsonl, a "
                                   "resumable checkpoint and PNG plots into the run folder.")
    _add_train_args(t)


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
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _append_jsonl(path: str, records: Sequence[dict]) -> None:
    if not records:
        return
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
    p = Parser(prog=f"{PROG} train", argument_default=argparse.SUPPRESS)
    _add_train_args(p)
    for a in p._actions:
        a.default = argparse.SUPPRESS
    ns, _ = p.parse_known_args(list(argv))
    return set(vars(ns))


def _epoch_line(rec: dict, total: int, classify: bool) -> str:
    k = "acc" if classify else "R^2"
    key = "acc" if classify else "r2"
    sps = rec.get("samples_per_s") or 0.0
    score = (lambda v: f"{v:.4f}") if classify else training.fmt_value
    compiled = rec.get("compile_s") or 0.0
    return (f"epoch {rec['epoch']:>3}/{total}  train loss {training.fmt_value(rec['train_loss'])} {k} "
            f"{score(rec[f'train_{key}'])}  |  test loss {training.fmt_value(rec['test_loss'])} {k} "
            f"{score(rec[f'test_{key}'])}  |  {sps:,.0f} samples/s"
            + (f" ({compiled:.2f} s of it compiling kernels, once per process)" if compiled >= 0.01 else "")
            + f"  lr {rec['lr']:.2g}")


def _prepare_new_run(cfg: dict, run_dir: str | None) -> str:
    if run_dir is None:
        base = os.path.join("runs", f"{cfg['dataset']}-{timestamp()}")
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


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``gpugrad train``: returns the exit code."""
    import gpugrad as gg
    device = resolve_device(args.device)
    dist = _join(args, device)
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
    ds = load_data(cfg)
    if ds.n_train < 1:
        raise CLIError(f"{cfg['dataset']}: the training split is empty")

    try:
        trainer = training.Trainer(cfg, ds, device, args.quiet, dist=dist)
    except (ValueError, TypeError) as e:
        raise CLIError(f"cannot build the model: {e}") from None
    metrics_path = grads_path = None
    if args.resume:
        try:
            state = training.load_checkpoint(ck_path, device)
            trainer.epoch, trainer.step = training.restore(state, trainer.model, trainer.opt, trainer.sched, device)
            dist.decorrelate_rng(device)
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
            if dist.is_main:
                print(f"run {run_dir} already finished {trainer.epoch} epochs; pass --epochs N (> {trainer.epoch}) "
                      "to train further", flush=True)
                args.no_plots = True
                _final_report(run_dir, metrics, cfg, trainer, args, t_start=None)
            dist.close()
            return 0
        err = None if not dist.is_main or os.access(run_dir, os.W_OK) else \
            f"--resume {run_dir!r}: the run folder is not writable"
        err = dist.agree(err)
        if err:
            raise CLIError(err)
        saved["config"] = cfg
        saved.setdefault("resumed", []).append({"at_epoch": trainer.epoch, "time": timestamp(),
                                                "device": device, "argv": list(argv),
                                                "world_size": dist.world_size})
        if dist.is_main:  # rank 0 alone writes the run folder
            _write_jsonl(metrics_path, metrics)  # drop epochs after the checkpoint (a crash between the two)
            _write_jsonl(grads_path, gnorms)
            atomic_write_text(cfg_path, json.dumps(saved, indent=2) + "\n")
    else:
        err = None
        if dist.is_main:
            try:
                run_dir = _prepare_new_run(cfg, args.run_dir)
            except CLIError as e:
                err = str(e)
        err = dist.agree(err)  # all ranks stop together when rank 0 cannot use the folder
        if err:
            raise CLIError(err)
        run_dir = dist.bcast_object(run_dir)
        metrics, cfg_path = [], os.path.join(run_dir, "config.json")
        metrics_path = os.path.join(run_dir, "metrics.jsonl")
        grads_path = os.path.join(run_dir, "grad_norms.jsonl")
        saved = {"config": cfg, "device": device, "gpugrad": gg.__version__, "argv": list(argv),
                 "created": timestamp(), "dataset": ds.describe(), "dataset_info": ds.info,
                 "model": {"sizes": trainer.model.sizes, "parameters": trainer.model.num_parameters(),
                           "linear_layers": trainer.tracker.names},
                 "distributed": {"world_size": dist.world_size, "backend": dist.backend}}
        if dist.is_main:
            atomic_write_text(cfg_path, json.dumps(saved, indent=2) + "\n")
            _write_jsonl(metrics_path, [])
            _write_jsonl(grads_path, [])
    ck_path = os.path.join(run_dir, CHECKPOINT_FILE)

    total = cfg["epochs"]
    say = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    say(f"gpugrad train: {ds.describe()} | MLP {trainer.model.sizes} {cfg['activation']}"
        f"{' residual' if cfg['residual'] else ''} ({trainer.model.num_parameters():,} parameters) | "
        f"{cfg['optimizer']} lr {cfg['lr']:g} | device {device} | run folder {run_dir}"
        + (f" | {dist.world_size} ranks ({dist.backend}), {cfg['batch_size']} samples per step in all"
           if dist.active else "")
        + (f" | resuming after epoch {trainer.epoch}" if args.resume else ""))
    t_start = time.perf_counter()
    diverged = False
    stop_at = total if args.stop_after is None else min(total, trainer.epoch + args.stop_after)
    try:
        for epoch in range(trainer.epoch, stop_at):
            rec, norm_recs = trainer.train_epoch(epoch, total)
            metrics.append(rec)
            if dist.is_main:
                _append_jsonl(metrics_path, [rec])
                _append_jsonl(grads_path, norm_recs)
                if trainer.diverged is None:  # a diverged epoch leaves the last finite checkpoint in place
                    training.save_checkpoint(ck_path, training.pack_checkpoint(
                        trainer.model, trainer.opt, trainer.sched, device, trainer.epoch, trainer.step))
            say(_epoch_line(rec, total, trainer.classify))
            if trainer.diverged is not None:
                if dist.is_main:
                    print(_diverged_message(trainer, cfg, rec), file=sys.stderr, flush=True)
                diverged = True
                break
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last finished epoch ({trainer.epoch}) is saved. Continue with: "
              f"{PROG} train --resume {run_dir}", file=sys.stderr)
        return 130
    if dist.is_main:
        _final_report(run_dir, metrics, cfg, trainer, args, t_start, diverged)
    dist.close()
    return 1 if diverged else 0


def _diverged_message(trainer, cfg: dict, rec: dict) -> str:
    """The one message of a run whose loss or gradients stopped being finite."""
    epoch, step = trainer.diverged
    kept = (f"{CHECKPOINT_FILE} keeps epoch {epoch - 1}" if epoch > 1 else f"no {CHECKPOINT_FILE} was written")
    return (f"{PROG} train: training diverged at step {step} (epoch {epoch}): the gradients or the loss are not "
            f"finite (train loss {training.fmt_value(rec['train_loss'])}). Lower --lr (now {cfg['lr']:g}) or add "
            f"--clip-grad-norm; {kept}.")


def _join(args: argparse.Namespace, device: str):
    """The data-parallel context (one process unless launched as several ranks); other ranks than 0
    run quietly and write nothing (the run folder and the final report are rank 0's)."""
    from ..distributed import DistributedError
    from ..distributed.launch import setup
    try:
        dist = setup(args.distributed, device)
    except DistributedError as e:
        raise CLIError(str(e)) from None
    if not dist.is_main:
        args.quiet = True
    return dist


def _final_report(run_dir: str, metrics: list, cfg: dict, trainer, args, t_start, diverged: bool = False) -> None:
    from .. import diagnostics
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
    score = (lambda v: f"{v:.4f}") if trainer.classify else training.fmt_value
    print(f"final: epoch {last['epoch']}/{cfg['epochs']}{elapsed}{stopped}: {name} {score(last[f'test_{key}'])} "
          f"(best {score(best[f'test_{key}'])} at epoch {best['epoch']}), test loss "
          f"{training.fmt_value(last['test_loss'])}, train loss {training.fmt_value(last['train_loss'])}", flush=True)
    files = [f for f in ("config.json", "metrics.jsonl", "grad_norms.jsonl", CHECKPOINT_FILE)
             if os.path.exists(os.path.join(run_dir, f))] + [os.path.basename(p) for p in plots]
    print(f"run folder: {run_dir} ({', '.join(files)})", flush=True)
    if trainer.tracker.warnings:
        print(f"{len(trainer.tracker.warnings)} gradient warning(s) (see above)", flush=True)


