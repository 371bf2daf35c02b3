"""benchmarks/gpu_report.py's machinery, on the CPU: the dry run's self-test steps (one ok with a figure
and a JSON file, one failing, one past its wall-clock limit) are recorded and the rest still run; both
reports are written atomically; the plan and per-step limits are configurable."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_report.py")


def _load():
    spec = importlib.util.spec_from_file_location("gpu_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_records_failures_and_timeouts_and_writes_both_reports(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--skip", "info", "--out-dir", str(tmp_path),
                           "--limit", "selftest_timeout=2"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # not everything ok
    report = json.loads((tmp_path / "gpu_report_dryrun.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["selftest_ok", "selftest_fail", "selftest_timeout"]
    ok, fail, slow = steps["selftest_ok"], steps["selftest_fail"], steps["selftest_timeout"]
    assert ok["status"] == "ok" and "42.5 ms" in ok["output"] and "42.5 ms" in ok["summary"]
    assert list(ok["outputs"].values()) == [{"figure_ms": 42.5}]
    assert fail["status"] == "failed" and fail["returncode"] == 1 and "deliberate failure" in fail["output"]
    assert slow["status"] == "timeout" and slow["limit_s"] == 2 and "sleeping" in slow["output"]
    assert slow["wall_s"] < 30
    for key in ("date", "commit", "command", "device", "versions"):
        assert report[key], key
    assert "numpy" in report["versions"]
    md = (tmp_path / "gpu_report_dryrun.md").read_text()
    assert "| selftest_fail | failed |" in md and "| selftest_timeout | timeout |" in md and "42.5 ms" in md
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers  # no temporary files left behind


def test_plan_is_configurable_and_lists_every_gpu_step(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, "--list", "--limit", "pytest_gpu=200", "--skip", "info"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    names = [ln.split()[0] for ln in proc.stdout.splitlines()]
    assert names[:6] == ["pytest_gpu", "mlp_gpu", "kernels_gpu", "mlp_gpu_fast", "checkpoint_cuda", "train_cuda"]
    pt = next(ln for ln in proc.stdout.splitlines() if ln.startswith("pytest_gpu"))
    assert "200 s" in pt and "-m gpu" in pt
    assert "--device cuda" in next(ln for ln in proc.stdout.splitlines() if ln.startswith("checkpoint_cuda"))
    bad = subprocess.run([sys.executable, SCRIPT, "--list", "--steps", "nope"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "unknown step" in bad.stderr


def test_gpu_steps_run_tests_with_strict_kernels(tmp_path):
    mod = _load()
    steps = {s["name"]: s for s in mod.default_steps(str(tmp_path), str(tmp_path / "run"))}
    assert steps["pytest_gpu"]["env"] == {"GPUGRAD_STRICT_KERNELS": "1"}
    assert sum(s["limit"] for s in steps.values()) <= 8 * 60


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    mod = _load()
    path = tmp_path / "r.json"
    mod.write_atomic(str(path), "old")
    monkeypatch.setattr(mod.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        mod.write_atomic(str(path), "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
