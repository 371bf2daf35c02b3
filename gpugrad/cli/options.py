"""Shared pieces of the ``gpugrad`` sub-commands: the raise-instead-of-exit parser, argument types
that validate option values (with messages that name the option), ``--device`` and ``--dataset``
resolution, and small file helpers (atomic writes)."""
from __future__ import annotations

import argparse
import math
import time

from ..install_hints import hint
from ..io import atomic_write

PROG = "gpugrad"
DEVICES = ("auto", "cpu", "cuda")


class CLIError(Exception):
    """Bad input: printed as ``gpugrad <cmd>: error: ...`` on stderr, exit code 2."""


def int_at_least(name: str, lo: int):
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


def positive_int(name: str):
    return int_at_least(name, 1)


def nonneg_int(name: str):
    return int_at_least(name, 0)


def float_in(name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
             hi_open: bool = False):
    """argparse type: a finite float in the interval [lo, hi] (ends open with ``lo_open``/``hi_open``;
    None: unbounded on that side)."""
    left = "(-inf" if lo is None else f"{'(' if lo_open else '['}{lo}"
    right = "inf)" if hi is None else f"{hi}{')' if hi_open else ']'}"
    rng = f"{left}, {right}"

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number in {rng}, got {s!r}")
        bad = False
        if lo is not None:
            bad = bad or (v <= lo if lo_open else v < lo)
        if hi is not None:
            bad = bad or (v >= hi if hi_open else v > hi)
        if bad:
            raise argparse.ArgumentTypeError(f"{name} must be in {rng}, got {s!r}")
        return v
    return parse


def checkpoint_arg(s: str) -> str | int:
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


def int_list(name: str):
    def parse(s: str) -> list[int]:
        try:
            vals = [int(x) for x in s.replace(" ", "").split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of positive integers, got {s!r}") from None
        if not vals or any(v < 1 for v in vals):
            raise argparse.ArgumentTypeError(f"{name} must be a comma-separated list of positive integers, got {s!r}")
        return vals
    return parse


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so ``main`` can return the code in-process."""

    def error(self, message: str):  # type: ignore[override]
        raise CLIError(f"{message}\n(see '{self.prog} --help')")


# =============================================================================================== helpers
def resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    avail, reason = cuda_status()
    if requested == "cuda":
        if not avail:
            raise CLIError(f"--device cuda: CUDA is not usable here: {reason}. Use --device cpu (or auto).")
        return "cuda"
    return "cuda" if avail else "cpu"


def cuda_status() -> tuple[bool, str]:
    """(available, reason text): ``gg.cuda.is_available()`` and the CUDA backend's probe message."""
    try:
        from .. import cuda
        ok = bool(cuda.is_available())
    except Exception as e:  # pragma: no cover - a broken install
        return False, f"gpugrad.cuda failed ({type(e).__name__}: {e})"
    if ok:
        return True, "available"
    try:
        from ..backends import cuda as _bc
        reason = _bc.probe()[1]
        fix = getattr(_bc, "FIX", "")
    except Exception:  # pragma: no cover
        reason, fix = "", ""
    if not reason:
        reason = "CuPy not installed"
    if "not installed" in reason and "pip install" not in reason:
        reason += f" ({hint('cupy')})"
    elif fix and "pip install" not in reason:
        reason += ". " + fix
    return False, reason


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`gpugrad.io.atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def load_data(cfg: dict):
    from .. import data
    try:
        if cfg["dataset"] == "synthetic":
            return data.load_dataset("synthetic", task=cfg["task"], n_samples=cfg["n_samples"],
                                     n_features=cfg["n_features"], n_outputs=cfg["n_outputs"], noise=cfg["noise"],
                                     seed=cfg["seed"])
        return data.load_dataset(cfg["dataset"])
    except data.DatasetError as e:
        raise CLIError(str(e)) from None


