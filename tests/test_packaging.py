"""The wheel: built from a copy of the package, it holds every module, CUDA source and the digits data,
no test double and nothing from tests/ or benchmarks/; it requires only NumPy and Numba; and, unpacked
alone (no checkout, no scikit-learn, matplotlib, tqdm or SciPy), `gpugrad train` trains on digits and
writes both plots."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the core used to pull in, and must not need: each is blocked in the wheel's test run.
NOT_NEEDED = ("sklearn", "scipy", "matplotlib", "tqdm", "PIL")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    pytest.importorskip("setuptools", minversion="68")
    src = tmp_path_factory.mktemp("src")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), src)
    shutil.copy(os.path.join(ROOT, "README.md"), src)
    shutil.copytree(os.path.join(ROOT, "gpugrad"), src / "gpugrad", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-c", f"import setuptools.build_meta as b; print(b.build_wheel({str(dist)!r}))"],
                       cwd=src, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return os.path.join(dist, r.stdout.strip().splitlines()[-1])


def _metadata(path: str) -> str:
    with zipfile.ZipFile(path) as z:
        return z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()


def test_wheel_ships_the_package_and_no_test_doubles(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    package = {os.path.relpath(p, ROOT).replace(os.sep, "/")
               for pattern in ("*.py", "*.cu", "*.cuh", "*.npz")
               for p in glob.glob(os.path.join(ROOT, "gpugrad", "**", pattern), recursive=True)}
    assert "gpugrad/digits.npz" in package and not package - names, sorted(package - names)
    shipped = {n for n in names if ".dist-info/" not in n}
    assert shipped == package, sorted(shipped ^ package)  # nothing else: no tests/, benchmarks/, doubles
    assert not [n for n in names if re.search(r"strict_cupy|fake_cublas|kernel_refs|optim_examples|^tests/", n)]
    assert os.path.getsize(wheel) < 1_000_000


def test_wheel_requires_only_numpy_and_numba(wheel):
    meta = _metadata(wheel)
    core = [r for r in re.findall(r"^Requires-Dist: (.+)$", meta, re.M) if "extra ==" not in r]
    assert sorted(re.match(r"[\w.-]+", r).group(0).lower() for r in core) == ["numba", "numpy"], core
    extras = set(re.findall(r"^Provides-Extra: (.+)$", meta, re.M))
    assert {"cuda12", "cuda13", "mpi", "safetensors", "mnist1d", "torch"} <= extras


def test_the_wheel_alone_trains_and_plots_without_the_old_dependencies(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    block = "; ".join(f"sys.modules[{m!r}] = None" for m in NOT_NEEDED)
    code = (f"import sys; {block}; from gpugrad.cli import main; "
            "sys.exit(main(['train', '--epochs', '2', '--width', '32', '--run-dir', 'run']))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)  # the unpacked wheel, not the checkout
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "digits: classification, 64 features, 10 classes, 1438 train / 359 test" in r.stdout
    for f in ("curves.png", "grad_norms.png", "checkpoint.npz"):
        assert (tmp_path / "run" / f).stat().st_size > 1000, f
    r = subprocess.run([sys.executable, "-c", "import gpugrad; print(gpugrad.__file__)"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().startswith(str(site))
