"""Training diagnostics: per-layer gradient norms (vanishing/exploding warnings) and PNG plots.

``GradNormTracker(model)`` finds every ``nn.Linear`` in a model; ``tracker.measure()`` after
``backward()`` returns each layer's weight-gradient L2 norm (one device sync for all layers) and
warns when a layer's norm collapses (below ``collapse_rel`` times the largest layer's norm, or
exactly zero) or explodes (above ``explode_abs``, or NaN/inf).

Plots need matplotlib (a dependency of gpugrad); without it the plot functions return ``None``
after printing a one-line note."""
from __future__ import annotations

import math
import os
import sys
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

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
                explode_abs: float = EXPLODE_ABS) -> list[tuple[str, str, str]]:
    """``(layer, kind, message)`` for each layer whose gradient norm collapsed or exploded."""
    out = []
    finite = norms[np.isfinite(norms)]
    top = float(finite.max()) if finite.size else 0.0
    for name, n in zip(names, norms):
        n = float(n)
        if not math.isfinite(n):
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
    warning once per layer and kind (collapse/explode) through ``warn``."""

    def __init__(self, model, warn: Callable[[str], None] | None = None,
                 collapse_rel: float = COLLAPSE_REL, explode_abs: float = EXPLODE_ABS) -> None:
        layers = linear_layers(model)
        self.names = [n for n, _ in layers]
        self.weights = [m.weight for _, m in layers]
        self.collapse_rel = collapse_rel
        self.explode_abs = explode_abs
        self.warn = warn if warn is not None else (lambda msg: print(f"warning: {msg}", file=sys.stderr))
        self.warned: set[tuple[str, str]] = set()
        self.warnings: list[str] = []

    def measure(self) -> dict[str, float]:
        """``{layer: norm}`` now (after ``backward()``, before the optimizer step)."""
        norms = grad_norms(self.weights)
        fresh: dict[str, list[tuple[str, str]]] = {}
        for name, kind, msg in check_norms(self.names, norms, self.collapse_rel, self.explode_abs):
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
def _pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend, or None (with a note) if missing."""
    try:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        from .install_hints import hint
        print(f"note: matplotlib is not installed, skipping plots ({hint('matplotlib')})", file=sys.stderr)
        return None
    return plt


def _save(fig, path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_curves(records: Sequence[Mapping], path: str, title: str = "") -> str | None:
    """Loss and accuracy (or R^2) per epoch, train vs test, from metrics.jsonl records."""
    plt = _pyplot()
    if plt is None or not records:
        return None
    ep = [r["epoch"] for r in records]
    score = "acc" if "train_acc" in records[0] else "r2"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.plot(ep, [r["train_loss"] for r in records], "o-", ms=3, label="train")
    a1.plot(ep, [r["test_loss"] for r in records], "s-", ms=3, label="test")
    a1.set_xlabel("epoch"); a1.set_ylabel("loss"); a1.set_yscale("log"); a1.grid(alpha=0.3); a1.legend()
    a2.plot(ep, [r[f"train_{score}"] for r in records], "o-", ms=3, label="train")
    a2.plot(ep, [r[f"test_{score}"] for r in records], "s-", ms=3, label="test")
    a2.set_xlabel("epoch"); a2.set_ylabel("accuracy" if score == "acc" else "R^2"); a2.grid(alpha=0.3); a2.legend()
    best = max(r[f"test_{score}"] for r in records)
    a2.set_title(f"final test {'accuracy' if score == 'acc' else 'R^2'} {records[-1][f'test_{score}']:.4f} "
                 f"(best {best:.4f})", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_grad_norm_history(records: Sequence[Mapping], path: str, title: str = "") -> str | None:
    """Each Linear layer's weight-gradient norm over training steps (log scale), from grad_norms.jsonl."""
    plt = _pyplot()
    if plt is None or not records:
        return None
    names = list(records[0]["norms"].keys())
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("viridis")
    win = max(1, len(records) // 40)  # smoothed: rolling geometric mean; raw values faint behind it
    for i, n in enumerate(names):
        vals = np.maximum(np.array([r["norms"].get(n, float("nan")) for r in records], dtype=np.float64), 1e-30)
        col = cmap(i / max(1, len(names) - 1))
        if win > 1:
            ax.plot(steps, vals, color=col, lw=0.6, alpha=0.25)
            logv = np.log(vals)
            ok = np.isfinite(logv)
            kern = np.ones(win)
            num = np.convolve(np.where(ok, logv, 0.0), kern, mode="same")
            den = np.convolve(ok.astype(np.float64), kern, mode="same")
            smooth = np.exp(num / np.maximum(den, 1))
            ax.plot(steps, np.where(den > 0, smooth, np.nan), color=col, lw=1.6, label=n)
        else:
            ax.plot(steps, vals, color=col, lw=1.2, label=n)
    ax.set_yscale("log"); ax.set_xlabel("step"); ax.set_ylabel("||dL/dW|| (L2)")
    ax.grid(alpha=0.3, which="both")
    if len(names) <= 12:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "per-layer weight-gradient norm", fontsize=10)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_grad_norm_profiles(profiles: Mapping[str, Sequence[float]], path: str, title: str = "") -> str | None:
    """Gradient norm vs layer index (log scale), one line per model: vanishing/exploding at a glance."""
    plt = _pyplot()
    if plt is None or not profiles:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, norms in profiles.items():
        v = np.maximum(np.asarray(norms, dtype=np.float64), 1e-30)
        ax.plot(np.arange(1, len(v) + 1), v, "o-", ms=3, label=label)
    ax.set_yscale("log"); ax.set_xlabel("layer index (1 = input layer)"); ax.set_ylabel("||dL/dW|| (L2)")
    ax.grid(alpha=0.3, which="both"); ax.legend(fontsize=8)
    ax.set_title(title or "weight-gradient norm per layer", fontsize=10)
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_bench(rows: Sequence[Mapping], path: str, ceiling_tflops: float | None = None,
               title: str = "") -> str | None:
    """Training-step TFLOP/s vs batch size: one panel per depth, one line per width, gpugrad solid and
    PyTorch dashed; the measured GEMM ceiling as a horizontal line."""
    plt = _pyplot()
    if plt is None or not rows:
        return None
    depths = sorted({r["depth"] for r in rows})
    widths = sorted({r["width"] for r in rows})
    fig, axes = plt.subplots(1, len(depths), figsize=(4.6 * len(depths), 3.8), squeeze=False, sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, d in zip(axes[0], depths):
        for i, w in enumerate(widths):
            sel = sorted((r for r in rows if r["depth"] == d and r["width"] == w), key=lambda r: r["batch"])
            if not sel:
                continue
            col = cmap(i / max(1, len(widths) - 1))
            ax.plot([r["batch"] for r in sel], [r["gpugrad_tflops"] for r in sel], "o-", color=col,
                    label=f"gpugrad w={w}")
            if any(r.get("torch_tflops") is not None for r in sel):
                ax.plot([r["batch"] for r in sel], [r.get("torch_tflops") or float("nan") for r in sel], "s--",
                        color=col, alpha=0.7, label=f"torch w={w}")
        if ceiling_tflops:
            ax.axhline(ceiling_tflops, color="red", lw=1, ls=":", label="GEMM ceiling")
        batches = sorted({r["batch"] for r in rows})
        ax.set_xscale("log", base=2); ax.set_xlabel("batch size")
        ax.set_xticks(batches); ax.set_xticklabels([str(b) for b in batches]); ax.minorticks_off()
        ax.set_title(f"depth {d}", fontsize=10); ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("TFLOP/s (training step)")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95) if title else (0, 0, 1, 1))
    out = _save(fig, path)
    plt.close(fig)
    return out


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
