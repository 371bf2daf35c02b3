"""Runs tests/kernels in its own Python process under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM must
be set before numba.cuda is first imported, so it cannot share this process): every fused kernel is
checked against its NumPy reference on tiny shapes, on any machine."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kernels_under_the_cuda_simulator():
    pytest.importorskip("numba")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", GPUGRAD_STRICT_KERNELS="1", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "pytest", os.path.join(ROOT, "tests", "kernels"), "-q", "-p", "no:cacheprovider",
           "-x", "--rootdir", ROOT]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"simulator kernel tests failed (exit {proc.returncode}):\n{out[-20000:]}", pytrace=False)
    summary = [line for line in out.splitlines() if " passed" in line]
    assert summary and "skipped" not in summary[-1], out[-3000:]  # the kernel tests ran, none skipped
