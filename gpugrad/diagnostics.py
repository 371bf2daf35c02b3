"""Training diagnostics: per-layer gradient norms (vanishing/exploding warnings) and PNG plots.

``GradNormTracker(model)`` finds every ``nn.Linear`` in a model; ``tracker.measure()`` after
``backward()`` returns each layer's weight-gradient L2 norm (one device sync for all layers) and
warns when a layer's norm collapses (below ``collapse_rel`` times the largest layer's norm, or
exactly zero) or explodes (above ``explode_abs``, or NaN/inf).

The plots are PNG files drawn by ``gpugrad/plot.py`` (NumPy only: a plain install writes them)."""
from __future__ import annotations

import math
import sys
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .plot import PALETTE, Figure, viridis

COLLAPSE_REL = 1e-7
EXPLODE_ABS = 1e3


def linear_layers(model) -> list[tuple[str, object]]:
    """``(name, module)`` of each ``nn.Linear`` in ``model``, input to output."""
    from .nn import Linear
    return [(name or "linear", m) for name, m in model.named_modules() if isinstance(m, Linear)]


def grad_norms(weights: Sequence) -> np.ndarray:
    """L2 norms of the ``.grad`` of each tensor, in float64 (NaN where a tensor has no grad).

    All norms are reduced on the device and copied to the host at once (one synchronisation)."""
    if not weights:
        return np.zeros(0)
    be = weights[0]._backend()
    xp = be.xp
    vals = []
    for w in weights:
        g = w.grad
        if g is None:
            vals.append(xp.asarray(float("nan"), dtype=xp.float64))
        else:
            a = g.data.astype(xp.float64, copy=False).ravel()
            vals.append(xp.sqrt(xp.dot(a, a)))
    return np.asarray(be.to_numpy(xp.stack(vals)), dtype=np.float64)


def check_norms(names: Sequence[str], norms: np.ndarray, collapse_rel: float = COLLAPSE_REL,
                explode_abs: float = EXPLODE_ABS, report_nonfinite: bool = True) -> list[tuple[str, str, str]]:
    """``(layer, kind, message)`` for each layer whose gradient norm collapsed or exploded (a non-finite
    norm only with ``report_nonfinite``)."""
    out = []
    finite = norms[np.isfinite(norms)]
    top = float(finite.max()) if finite.size else 0.0
    for name, n in zip(names, norms):
        n = float(n)
        if not math.isfinite(n):
            if report_nonfinite:
                out.append((name, "explode", f"gradient norm of {name}.weight is {n} (non-finite): training "
                            "diverged. Lower --lr, add --clip-grad-norm, or use a residual/ReLU network."))
        elif n > explode_abs:
            out.append((name, "explode", f"gradient norm of {name}.weight is {n:.3g} (> {explode_abs:g}): "
                        "exploding gradients. Lower --lr or add --clip-grad-norm."))
        elif top > 0 and n < collapse_rel * top:
            out.append((name, "collapse", f"gradient norm of {name}.weight is {n:.3g}, {n / top:.1e} of the "
                        f"largest layer's ({top:.3g}): vanishing gradients. Try --activation relu, "
                        "--residual, or a shallower network."))
    return out


class GradNormTracker:
    """Records the weight-gradient norm of every ``Linear`` of ``model`` when ``measure`` is called,
    warning once per layer and kind (collapse/explode) through ``warn``; ``report_nonfinite=False``
    leaves NaN/inf norms (divergence) to the caller."""

    def __init__(self, model, warn: Callable[[str], None] | None = None,
                 collapse_rel: float = COLLAPSE_REL, explode_abs: float = EXPLODE_ABS,
                 report_nonfinite: bool = True) -> None:
        layers = linear_layers(model)
        self.names = [n for n, _ in layers]
        self.weights = [m.weight for _, m in layers]
        self.collapse_rel = collapse_rel
        self.explode_abs = explode_abs
        self.report_nonfinite = report_nonfinite
        self.warn = warn if warn is not None else (lambda msg: print(f"warning: {msg}", file=sys.stderr))
        self.warned: set[tuple[str, str]] = set()
        self.warnings: list[str] = []

    def measure(self) -> dict[str, float]:
        """``{layer: norm}`` now (after ``backward()``, before the optimizer step)."""
        norms = grad_norms(self.weights)
        fresh: dict[str, list[tuple[str, str]]] = {}
        for name, kind, msg in check_norms(self.names, norms, self.collapse_rel, self.explode_abs,
                                            self.report_nonfinite):
            if (name, kind) not in self.warned:
                self.warned.add((name, kind))
                fresh.setdefault(kind, []).append((name, msg))
        for kind, items in fresh.items():
            if len(items) == 1:
                msg = items[0][1]
            else:  # one line for all the layers that crossed the threshold at this step
                vals = ", ".join(f"{n} {float(norms[self.names.index(n)]):.2g}" for n, _ in items)
                what = (f"below {self.collapse_rel:g} of the largest layer's norm: vanishing gradients. Try "
                        "--activation relu, --residual, or a shallower network" if kind == "collapse" else
                        f"above {self.explode_abs:g} or non-finite: exploding gradients. Lower --lr or add "
                        "--clip-grad-norm")
                msg = f"weight-gradient norms of {len(items)} layers are {what} ({vals})"
            self.warnings.append(msg)
            self.warn(msg)
        return {n: float(v) for n, v in zip(self.names, norms)}


# ------------------------------------------------------------------------------------------- plots
def plot_curves(records: Sequence[Mapping], path: str, title: str = "") -> str | None:
    """Loss and accuracy (or R^2) per epoch, train vs test, from metrics.jsonl records."""
    if not records:
        return None
    ep = [r["epoch"] for r in records]
    score = "acc" if "train_acc" in records[0] else "r2"
    name = "accuracy" if score == "acc" else "R^2"
    fig = Figure(ncols=2, width=1100, height=440, title=title)
    a1 = fig.panel(title="loss", xlabel="epoch", ylabel="loss", yscale="log")
    a1.line(ep, [r["train_loss"] for r in records], label="train", marker="o")
    a1.line(ep, [r["test_loss"] for r in records], label="test", marker="s")
    best = max(r[f"test_{score}"] for r in records)
    a2 = fig.panel(title=f"final test {name} {records[-1][f'test_{score}']:.4f} (best {best:.4f})",
                   xlabel="epoch", ylabel=name)
    a2.line(ep, [r[f"train_{score}"] for r in records], label="train", marker="o")
    a2.line(ep, [r[f"test_{score}"] for r in records], label="test", marker="s")
    return fig.save(path)


def _rolling_geomean(vals: np.ndarray, win: int) -> np.ndarray:
    """Geometric mean over a centred window of ``win`` points, skipping non-finite values."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logv = np.log(vals)
    ok = np.isfinite(logv)
    kern = np.ones(win)
    num = np.convolve(np.where(ok, logv, 0.0), kern, mode="same")
    den = np.convolve(ok.astype(np.float64), kern, mode="same")
    return np.where(den > 0, np.exp(num / np.maximum(den, 1)), np.nan)


def plot_grad_norm_history(records: Sequence[Mapping], path: str, title: str = "") -> str | None:
    """Each Linear layer's weight-gradient norm over training steps (log scale), from grad_norms.jsonl."""
    if not records:
        return None
    names = list(records[0]["norms"].keys())
    steps = [r["step"] for r in records]
    fig = Figure(width=760, height=460, title=title or "per-layer weight-gradient norm")
    ax = fig.panel(xlabel="step", ylabel="||dL/dW|| (L2)", yscale="log")
    ax.legend = len(names) <= 12
    win = max(1, len(records) // 40)  # smoothed: rolling geometric mean; raw values faint behind it
    for i, n in enumerate(names):
        vals = np.maximum(np.array([r["norms"].get(n, float("nan")) for r in records], dtype=np.float64), 1e-30)
        col = viridis(i / max(1, len(names) - 1))
        if win > 1:
            ax.line(steps, vals, color=col, width=0.8, alpha=0.25)
            ax.line(steps, _rolling_geomean(vals, win), color=col, width=1.8, label=n)
        else:
            ax.line(steps, vals, color=col, width=1.5, label=n)
    return fig.save(path)


def plot_grad_norm_profiles(profiles: Mapping[str, Sequence[float]], path: str, title: str = "") -> str | None:
    """Gradient norm vs layer index (log scale), one line per model: vanishing/exploding at a glance."""
    if not profiles:
        return None
    fig = Figure(width=760, height=460, title=title or "weight-gradient norm per layer")
    ax = fig.panel(xlabel="layer index (1 = input layer)", ylabel="||dL/dW|| (L2)", yscale="log")
    for label, norms in profiles.items():
        v = np.maximum(np.asarray(norms, dtype=np.float64), 1e-30)
        ax.line(np.arange(1, len(v) + 1), v, label=label, marker="o")
    return fig.save(path)


def plot_bench(rows: Sequence[Mapping], path: str, ceiling_tflops: float | None = None,
               title: str = "") -> str | None:
    """Training-step TFLOP/s vs batch size: one panel per depth, one line per width, gpugrad solid and
    PyTorch dashed; the measured GEMM ceiling as a horizontal line."""
    if not rows:
        return None
    depths = sorted({r["depth"] for r in rows})
    widths = sorted({r["width"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    fig = Figure(ncols=len(depths), width=120 + 480 * len(depths), height=460, title=title)
    for d in depths:
        ax = fig.panel(title=f"depth {d}", xlabel="batch size", ylabel="TFLOP/s (training step)",
                       xscale="log2", xticks=batches)
        for i, w in enumerate(widths):
            sel = sorted((r for r in rows if r["depth"] == d and r["width"] == w), key=lambda r: r["batch"])
            if not sel:
                continue
            col = PALETTE[i % len(PALETTE)]
            ax.line([r["batch"] for r in sel], [r["gpugrad_tflops"] for r in sel], color=col, marker="o",
                    label=f"gpugrad w={w}")
            if any(r.get("torch_tflops") is not None for r in sel):
                ax.line([r["batch"] for r in sel], [r.get("torch_tflops") or float("nan") for r in sel], color=col,
                        marker="s", dashed=True, alpha=0.7, label=f"torch w={w}")
        if ceiling_tflops:
            ax.hline(ceiling_tflops, label="GEMM ceiling")
    return fig.save(path)


def mean_profile(records: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Geometric mean of each layer's norm over several measurements (robust to step noise)."""
    recs = list(records)
    if not recs:
        return {}
    out = {}
    for n in recs[0]:
        v = np.array([r[n] for r in recs], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[n] = float(np.exp(np.mean(np.log(np.maximum(v, 1e-300))))) if v.size else float("nan")
    return out


__all__ = ["COLLAPSE_REL", "EXPLODE_ABS", "GradNormTracker", "check_norms", "grad_norms", "linear_layers",
           "mean_profile", "plot_bench", "plot_curves", "plot_grad_norm_history", "plot_grad_norm_profiles"]
