"""Shared helpers of the benchmark scripts: timing, machine facts, JSON output."""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable


def median_time(fn: Callable[[], None], repeats: int, warmup: int, setup: Callable[[], None] | None = None) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` runs after ``warmup`` runs
    (``setup`` runs untimed before each call, e.g. to draw a fresh batch)."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times = []
    for _ in range(repeats):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine_info() -> dict:
    import numpy as np
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` atomically (temp file then rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def usable_kernel_sets(requested: list[str]) -> tuple[list[str], dict]:
    """The requested kernel sets minus those that cannot run here (the Numba CUDA kernels where Numba
    cannot load them: timing them would time their CUDA C replacement under the wrong name), and
    ``{set: why}`` for the ones dropped (printed and written to the JSON)."""
    import gpugrad as gg
    keep, skipped = [], {}
    for k in requested:
        if k == "numba":
            ok, why = gg.cuda.numba_kernels_status()
            if not ok:
                skipped[k] = f"Numba CUDA kernels: unusable: {why}"
                print(f"skipping kernel set numba: {why}", flush=True)
                continue
        keep.append(k)
    return keep, skipped
