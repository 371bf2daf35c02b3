"""Thread pools under an MPI launcher (gpugrad/_threads.py): cores // local ranks per rank, set before
NumPy loads; GPUGRAD_NUM_THREADS overrides; a thread variable the user set wins."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpugrad import _threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HYDRA = {"PMI_RANK": "0", "PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"}  # what MPICH's mpiexec sets (2 of 4 ranks here)


def test_outside_a_launcher_nothing_changes():
    env: dict = {}
    assert _threads.rank_threads(env, cores=8) is None and _threads.limit_rank_threads(env) == {} and env == {}
    # a launcher's size without a rank variable (a batch job's own shell, SLURM_NTASKS=4) is one process
    assert _threads.local_ranks({"SLURM_NTASKS": "4"}) == 1


@pytest.mark.parametrize("env, cores, expected", [
    (HYDRA, 8, 4),                                                             # local ranks, not the world
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "3"}, 8, 2),
    ({"PMI_RANK": "0", "PMI_SIZE": "2"}, 2, 1),                                # no local count: all ranks here
    ({"PMI_RANK": "0", "PMI_SIZE": "16", "MPI_LOCALNRANKS": "16"}, 2, 1),      # at least one
    ({"PMI_RANK": "0", "PMI_SIZE": "1"}, 8, None),                             # one rank: the libraries' default
    ({**HYDRA, "GPUGRAD_NUM_THREADS": "3"}, 8, 3),                             # the override
    ({**HYDRA, "GPUGRAD_NUM_THREADS": "0"}, 8, None),                          # 0: leave the defaults
    ({"GPUGRAD_NUM_THREADS": "2"}, 8, 2),                                      # the override outside a launcher
])
def test_threads_per_rank(env, cores, expected):
    assert _threads.rank_threads(dict(env), cores=cores) == expected


def test_limit_sets_every_pool_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 8)
    env = dict(HYDRA)
    assert _threads.limit_rank_threads(env) == dict.fromkeys(_threads.THREAD_VARS, "4")
    assert all(env[v] == "4" for v in _threads.THREAD_VARS)
    mine = {**HYDRA, "OMP_NUM_THREADS": "2"}  # the user's own setting wins, and no other pool is changed
    assert _threads.limit_rank_threads(mine) == {} and "OPENBLAS_NUM_THREADS" not in mine
    with pytest.raises(ValueError, match="GPUGRAD_NUM_THREADS='two': expected a whole number"):
        _threads.rank_threads({"GPUGRAD_NUM_THREADS": "two"})


@pytest.mark.parametrize("numpy_first", [False, True])
def test_import_gpugrad_limits_blas_before_it_starts(numpy_first):
    """In a fresh interpreter that looks like rank 0 of 2 local ranks: the env is set by `import gpugrad`
    and OpenBLAS runs with cores // 2 threads (through threadpoolctl when NumPy was imported first)."""
    tp = pytest.importorskip("threadpoolctl")  # reads the thread count OpenBLAS actually uses
    del tp
    env = {k: v for k, v in os.environ.items() if k not in _threads.THREAD_VARS and k != _threads.OVERRIDE_VAR}
    env.update({"PYTHONPATH": ROOT, "PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALNRANKS": "2"})
    code = ("import numpy; " if numpy_first else "") + (
        "import os, gpugrad; from threadpoolctl import threadpool_info; "
        "print(os.environ['OPENBLAS_NUM_THREADS'], [i['num_threads'] for i in threadpool_info() "
        "if i['user_api'] == 'blas'])")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n = max(1, _threads.available_cores() // 2)
    assert r.stdout.split(maxsplit=1) == [str(n), f"[{n}]\n"]
