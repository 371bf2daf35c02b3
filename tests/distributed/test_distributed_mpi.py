"""Data parallel on 2 and 4 CPU ranks under mpiexec (subprocesses; skipped without MPI)."""
from __future__ import annotations

import os

import pytest

from mpirun import mpirun, require_or_skip


@pytest.fixture(autouse=True)
def _mpi() -> None:
    require_or_skip()

PROG = os.path.join("tests", "distributed", "_prog.py")
SCENARIOS = ["collectives", "grads", "steps", "adam", "nosync", "checkpoint", "amp"]


def _ok(r) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr[-4000:]}"


@pytest.mark.parametrize("n", [2, 4])
def test_ddp_equals_single_process(n: int) -> None:
    """Grads after one backward and parameters after K steps (SGD, Adam, clipping), no_sync, checkpoint,
    float16 + GradScaler: N ranks with batch B/N equal one process with batch B (float64, 1e-12)."""
    r, _ = mpirun(n, [PROG, *SCENARIOS], timeout=120)
    _ok(r)
    for s in SCENARIOS:
        assert f"OK {s} (world {n})" in r.stdout, r.stdout


def test_rank_that_raises_stops_all() -> None:
    r, secs = mpirun(2, [PROG, "fail"], timeout=60, env={"PROG_TIMEOUT": "30"})
    assert r.returncode != 0
    assert "rank 1/2: uncaught ValueError" in r.stderr and "injected failure on the last rank" in r.stderr, r.stderr
    assert secs < 25, f"took {secs:.1f} s: the other rank was not stopped by MPI_Abort but by the timeout"


def test_rank_that_vanishes_times_out() -> None:
    """A rank that leaves without error: the others raise DistributedTimeout after the timeout, then abort."""
    r, secs = mpirun(2, [PROG, "vanish"], timeout=60, env={"PROG_TIMEOUT": "2"})
    assert r.returncode != 0
    assert "did not complete within 2 s" in r.stderr and "rank 0/2" in r.stderr, r.stderr
    assert secs < 40


def test_rank_that_is_killed_stops_all() -> None:
    r, secs = mpirun(2, [PROG, "die"], timeout=60, env={"PROG_TIMEOUT": "30"})
    assert r.returncode != 0
    assert secs < 25, f"took {secs:.1f} s: the launcher did not stop the surviving rank"
