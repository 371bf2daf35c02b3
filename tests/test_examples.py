"""The scripts in examples/ run as the README shows them (here with a few training steps): each prints
its error against the known solution and writes its PNG."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py"))
ERROR_LINE = {"sdf_eikonal.py": r"mean \|f - exact signed distance\| on a 128x128 grid: (\S+)",
              "poisson_pinn.py": r"relative L2 error against sin\(pi x\) sin\(pi y\) on a 64x64 grid: (\S+)"}


def test_every_example_is_listed_here_and_in_the_readme():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert set(EXAMPLES) == set(ERROR_LINE)
    for name in EXAMPLES:
        assert f"python3 examples/{name}" in readme, f"README does not show examples/{name}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_and_writes_its_png(name, tmp_path):
    out = tmp_path / "field.png"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), "--steps", "3", "--out", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = re.search(ERROR_LINE[name], r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) >= 0.0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" in data[-12:]
