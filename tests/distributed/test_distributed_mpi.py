"""Data parallel on 2 and 4 CPU ranks under mpiexec (subprocesses; skipped without MPI)."""
from __future__ import annotations

import json
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


def _params(run_dir) -> dict:
    import numpy as np
    with np.load(os.path.join(run_dir, "checkpoint.npz")) as z:
        return {k: z[k].astype(np.float64) for k in z.files if k.startswith("model/")}


def test_cli_train_resume_across_rank_counts(tmp_path) -> None:
    """`mpiexec -n 2 python3 -m gpugrad train` for 1 epoch, resumed on 4 ranks, then on one process:
    the same model as one uninterrupted single-process run; rank 0 alone prints and writes."""
    import subprocess
    import sys

    from mpirun import ROOT
    common = ["-m", "gpugrad", "train", "--dataset", "synthetic", "--n-samples", "400", "--width", "16",
              "--epochs", "3", "--batch-size", "30", "--no-plots", "--seed", "5", "--grad-norm-every", "0"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    r = subprocess.run([sys.executable, *common, "--run-dir", ref, "--quiet"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env=env)
    _ok(r)
    r, _ = mpirun(2, [*common, "--run-dir", run, "--stop-after", "1"], timeout=120)
    _ok(r)
    assert r.stdout.count("epoch   1/3") == 1 and "2 ranks (mpi)" in r.stdout, r.stdout  # rank 0 prints
    assert sorted(os.listdir(run)) == ["checkpoint.npz", "config.json", "grad_norms.jsonl", "metrics.jsonl"]
    r, _ = mpirun(4, ["-m", "gpugrad", "train", "--resume", run, "--stop-after", "1", "--quiet"], timeout=120)
    _ok(r)
    r = subprocess.run([sys.executable, "-m", "gpugrad", "train", "--resume", run, "--quiet"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT, env=env)
    _ok(r)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2, 3]
    with open(os.path.join(run, "config.json")) as f:
        saved = json.load(f)
    assert saved["distributed"]["world_size"] == 2 and [x["world_size"] for x in saved["resumed"]] == [4, 1]
    a, b = _params(ref), _params(run)
    assert a.keys() == b.keys()
    for k in a:  # float32 training, a different summation order per rank count
        assert float(abs(a[k] - b[k]).max()) < 2e-5, k


def test_each_rank_gets_its_share_of_the_cores(tmp_path) -> None:
    """Under a real mpiexec, with no thread variable set: `import gpugrad` gives each of 2 ranks
    cores // 2 BLAS threads (and sets the variables for the other pools). Each rank writes its own file:
    the launcher forwards the ranks' stdout in pieces, so two printed lines can interleave."""
    from gpugrad._threads import THREAD_VARS, available_cores
    code = ("import json, os, gpugrad; "
            f"open(os.path.join({str(tmp_path)!r}, 'rank' + os.environ['PMI_RANK']), 'w').write(json.dumps("
            f"[os.environ['OPENBLAS_NUM_THREADS'], *[os.environ[v] for v in {THREAD_VARS!r}]]))")
    r, _ = mpirun(2, ["-c", code], timeout=60, env=dict.fromkeys(THREAD_VARS, ""))
    _ok(r)
    n = str(max(1, available_cores() // 2))
    got = {f.name: json.loads(f.read_text()) for f in tmp_path.iterdir()}
    assert got == {"rank0": [n] * 5, "rank1": [n] * 5}, (got, r.stdout)


def test_the_guides_data_parallel_example_prints_each_rank_and_the_accuracy() -> None:
    """docs/guide.md's DDP example under mpiexec -n 2: each rank prints its epochs, rank 0 the accuracy."""
    import re

    from mpirun import ROOT
    guide = open(os.path.join(ROOT, "docs", "guide.md"), encoding="utf-8").read()
    code = next(b for b in re.findall(r"^```python\n(.*?)^```", guide, re.S | re.M) if "DistributedDataParallel" in b)
    r, _ = mpirun(2, ["-c", code], timeout=180)
    _ok(r)
    for rank in (0, 1):  # (the launcher may interleave the ranks' output: no line anchors)
        assert len(re.findall(rf"rank {rank}/2, epoch \d: loss of its last batch \d+\.\d+", r.stdout)) == 3
    acc = re.findall(r"held-out accuracy (\d\.\d+) after 3 epochs on 2 rank\(s\)", r.stdout)
    assert len(acc) == 1 and float(acc[0]) > 0.9, r.stdout


@pytest.mark.gpu
def test_nccl_on_gpus() -> None:
    """backend='nccl': one rank per GPU (1 rank on a one-GPU machine), collectives and DDP grads on CUDA."""
    import cupy
    n = min(4, cupy.cuda.runtime.getDeviceCount())
    r, _ = mpirun(n, [PROG, "nccl"], timeout=300, env={"PROG_BACKEND": "nccl"})
    _ok(r)
    assert f"OK nccl (world {n})" in r.stdout
