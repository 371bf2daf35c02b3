"""The training loop behind ``gpugrad train``: model and optimizer from a config dict, one epoch of
mini-batch training with per-epoch metrics and gradient-norm records, evaluation, and the resumable
checkpoint state (model, optimizer, scheduler, RNG, progress). No argument parsing here: the CLI
(gpugrad/cli/train.py) owns the run folder, the files and the messages."""
from __future__ import annotations

import contextlib
import math
import sys
import time
from typing import Any, Iterator, TextIO

import numpy as np


def training_step(model: Any, optimizer: Any, loss_fn: Any) -> Any:
    """``step(x, y) -> loss``: one plain training step - ``optimizer.zero_grad()``, ``loss_fn(model(x),
    y)``, ``loss.backward()``, ``optimizer.step()`` - the step the benchmarks time and
    ``gg.cuda.graphed_step`` captures."""
    def step(x, y):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return step


def build(cfg: dict, ds, device: str):
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


def pack_checkpoint(model, opt, sched, device: str, epoch: int, step: int) -> dict:
    import gpugrad as gg
    seed, offset = gg.random.get_rng_state(device)
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict() if sched is not None else {},
        "rng": {"seed": int(seed), "offset": int(offset)},
        "progress": {"epoch": int(epoch), "step": int(step)},
    }


def save_checkpoint(path: str, state: dict) -> None:
    import gpugrad as gg
    gg.save(state, path)


def load_checkpoint(path: str, device: str) -> dict:
    import gpugrad as gg
    return gg.load(path, device=device)


def restore(state: dict, model, opt, sched, device: str) -> tuple[int, int]:
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


def fmt_value(v: float) -> str:
    """A loss (or R^2) for people: 4 significant digits, scientific outside [1e-4, 1e4), ``nan``/``inf``
    as such (a diverged run's 1e30 prints as ``1e+30``, not as 31 digits)."""
    v = float(v)
    return f"{v:.4g}" if math.isfinite(v) else str(v)


@contextlib.contextmanager
def compile_timer() -> Iterator[list[float]]:
    """Seconds spent compiling Numba kernels inside the block: ``with compile_timer() as t: ...``, then
    ``t[0]`` (the fused CPU passes are compiled on first use, once per process, activation and dtype)."""
    out = [0.0]
    try:
        from numba.core import event
    except ImportError:  # pragma: no cover - numba is a dependency
        yield out
        return
    timer = event.TimingListener()
    with event.install_listener("numba:compile", timer):
        yield out
    out[0] = timer.duration if timer.done else 0.0


class Progress:
    """One progress line on a terminal (``stream`` a TTY; nothing otherwise), redrawn at most 10 times a
    second: ``epoch 3/20  45%  640/1438 samples  loss 0.1234``; ``write`` prints a message above it."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.on = bool(enabled and isatty is not None and isatty())
        self.total, self.desc, self.done, self.shown = total, desc, 0, 0
        self.last = 0.0

    def due(self) -> bool:
        """Whether a redraw is due (so that callers read the loss from the device only then)."""
        return self.on and (time.perf_counter() - self.last >= 0.1 or self.done >= self.total)

    def update(self, n: int, loss: Any = None) -> None:
        """``n`` more samples done; ``loss`` (a float or a callable giving one) is read only when a redraw is due."""
        self.done += n
        if not self.due():
            return
        value = loss() if callable(loss) else loss
        pct = 100 * self.done // max(self.total, 1)
        line = f"{self.desc}  {pct:3d}%  {self.done:,}/{self.total:,} samples" + (
            f"  loss {fmt_value(value)}" if value is not None else "")
        self.stream.write("\r" + line.ljust(self.shown))
        self.stream.flush()
        self.shown, self.last = len(line), time.perf_counter()

    def clear(self) -> None:
        if self.on and self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0

    def write(self, msg: str) -> None:
        """``msg`` on a line of its own on the stream, above the progress line."""
        self.clear()
        print(msg, file=self.stream, flush=True)


class Trainer:
    """One training run: data on the device, model, optimizer, per-epoch metrics and checkpoints.

    Divergence: when a measured gradient norm or the epoch's loss is not finite, ``train_epoch`` stops
    and sets ``diverged`` to ``(epoch, step)``; NumPy's floating-point warnings are silenced inside the
    loop (the run reports the divergence once, see ``gpugrad/cli/train.py``)."""

    def __init__(self, cfg: dict, ds, device: str, quiet: bool, dist=None) -> None:
        import gpugrad as gg
        from .backends import get_backend
        from .diagnostics import GradNormTracker
        from .distributed.launch import DistContext
        self.gg = gg
        self.dist = dist if dist is not None else DistContext()  # data parallel over MPI ranks, or one process
        self.cfg, self.ds, self.device, self.quiet = cfg, ds, device, quiet
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
        self.model, self.opt, self.sched = build(cfg, ds, device)
        self.net = self.dist.wrap(self.model)  # DistributedDataParallel(model) on several ranks
        self.dist.decorrelate_rng(device)  # dropout masks differ across ranks
        self.params = list(self.model.parameters())
        # non-finite norms are the divergence the trainer reports itself, once
        self.tracker = GradNormTracker(self.model, warn=self._warn, report_nonfinite=False)
        self.epoch = 0
        self.step = 0
        self.diverged: tuple[int, int] | None = None  # (epoch, step) where the loss/gradients stopped being finite
        self.progress: Progress | None = None

    def _warn(self, msg: str) -> None:
        text = f"warning: {msg}"
        if self.progress is not None:
            self.progress.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

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
        with gg.no_grad(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, n, batch):
                xb = gg.as_tensor(x[i:i + batch], device=self.device)
                yb = gg.as_tensor(y[i:i + batch], device=self.device)
                out = self.model(xb)
                loss_sum = loss_sum + self._loss(out, yb, "sum").data
                score_sum = score_sum + self._score_sum(out, yb)
            return self._finish(loss_sum, score_sum, n, sst)

    def train_epoch(self, epoch: int, total_epochs: int) -> tuple[dict, list[dict]]:
        """Train one epoch; returns (the epoch's metrics record, its gradient-norm records). The record's
        ``compile_s`` is the time spent compiling kernels during the epoch (the first one of a process
        compiles the fused CPU passes), included in ``epoch_time_s``."""
        from .data import batch_slices, epoch_permutation
        gg, cfg = self.gg, self.cfg
        n, bs = self.ds.n_train, cfg["batch_size"]
        perm = self.be.from_numpy(epoch_permutation(n, cfg["seed"], epoch))
        xs, ys = self.x_train[perm], self.y_train[perm]
        self.model.train()
        loss_sum, score_sum = 0.0, 0
        every = cfg["grad_norm_every"]
        norm_records = []
        seen = 0
        self.progress = Progress(n, f"epoch {epoch + 1}/{total_epochs}", enabled=not self.quiet)
        self.be.synchronize()
        t0 = time.perf_counter()
        with compile_timer() as compile_s, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for sl in batch_slices(n, bs):
                # several ranks: each takes its strided share of the global batch (see DistContext)
                xb = gg.as_tensor(self.dist.shard(xs[sl]), device=self.device)
                yb = gg.as_tensor(self.dist.shard(ys[sl]), device=self.device)
                nb, nl = sl.stop - sl.start, int(xb.shape[0])
                self.opt.zero_grad()
                if nl:
                    out = self.net(xb)
                    loss = self._loss(out, yb)
                    (loss * self.dist.loss_factor(nl, nb) if self.dist.active else loss).backward()
                else:  # a global batch smaller than the world: this rank adds zero gradients
                    out, loss = None, gg.zeros((), device=self.device)
                    gg.stack([p.sum() for p in self.params]).sum().mul(0.0).backward()
                if every and self.step % every == 0:
                    norms = self.tracker.measure()
                    norm_records.append({"epoch": epoch + 1, "step": self.step, "norms": norms})
                    if not all(math.isfinite(v) for v in norms.values()):
                        self.diverged = (epoch + 1, self.step)  # every rank measures the same averaged gradients
                if cfg["clip_grad_norm"] is not None:
                    gg.nn.utils.clip_grad_norm_(self.params, cfg["clip_grad_norm"])
                self.opt.step()
                loss_sum = loss_sum + loss.data * nl
                if nl:
                    score_sum = score_sum + self._score_sum(out, yb)
                self.step += 1
                seen += nb
                self.progress.update(nb, lambda: float(loss.item()))
                if self.diverged:
                    break
            self.be.synchronize()
        train_time = time.perf_counter() - t0
        self.progress.clear()
        self.progress = None
        lr = self.opt.param_groups[0]["lr"]
        if self.sched is not None:
            self.sched.step()
        sst_tr = None if self.classify else self.sst_train
        sst_te = None if self.classify else self.sst_test
        if self.dist.active:  # sums over the ranks' shards
            loss_sum, score_sum = self.dist.sum([self.be.to_numpy(self.xp.asarray(loss_sum)),
                                                 self.be.to_numpy(self.xp.asarray(score_sum))])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            train_loss, train_score = self._finish(loss_sum, score_sum, seen, sst_tr)
        test_loss, test_score = self.evaluate(self.x_test, self.y_test, sst_te)
        if self.diverged is None and not math.isfinite(train_loss):
            self.diverged = (epoch + 1, self.step)
        key = "acc" if self.classify else "r2"
        rec = {"epoch": epoch + 1, "step": self.step, "lr": lr,
               "train_loss": train_loss, f"train_{key}": train_score,
               "test_loss": test_loss, f"test_{key}": test_score,
               "samples_per_s": seen / train_time if train_time > 0 else None, "epoch_time_s": train_time,
               "compile_s": compile_s[0]}
        if norm_records:
            from .diagnostics import mean_profile
            rec["grad_norm"] = mean_profile(r["norms"] for r in norm_records)
        self.epoch = epoch + 1
        return rec, norm_records
