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
    assert list(steps) == ["selftest_ok", "selftest_fail", "selftest_timeout", "selftest_absent"]
    ok, fail, slow = steps["selftest_ok"], steps["selftest_fail"], steps["selftest_timeout"]
    absent = steps["selftest_absent"]
    assert absent["status"] == "skipped" and "not in this checkout" in absent["summary"]
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
    assert names == ["pytest_gpu", "mlp_gpu", "mlp_gpu_fast", "checkpoint_cuda", "ddp_cuda", "train_cuda",
                     "kernels_gpu", "higher_order_cuda"]
    lines = {ln.split()[0]: ln for ln in proc.stdout.splitlines()}
    assert "200 s" in lines["pytest_gpu"] and "-m gpu" in lines["pytest_gpu"]
    assert "--device cuda --configs 64x1024x16384" in lines["checkpoint_cuda"]  # issue 9's target shape
    assert "--kernels cuda_c" in lines["mlp_gpu"] and "--cases graphs" in lines["mlp_gpu_fast"]
    assert "higher_order.py --device cuda" in lines["higher_order_cuda"]
    bad = subprocess.run([sys.executable, SCRIPT, "--list", "--steps", "nope"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "unknown step" in bad.stderr


def test_gpu_steps_run_tests_with_strict_kernels(tmp_path):
    mod = _load()
    steps = {s["name"]: s for s in mod.default_steps(str(tmp_path), str(tmp_path / "run"))}
    assert steps["pytest_gpu"]["env"] == {"GPUGRAD_STRICT_KERNELS": "1"}
    assert sum(s["limit"] for s in steps.values()) <= 8 * 60  # inside a 10-minute device call, with room
    assert steps["higher_order_cuda"]["requires"].endswith(os.path.join("benchmarks", "higher_order.py"))


def test_targets_are_read_from_the_benchmarks_json():
    """Each target met, MISSED or not measured, from what the steps wrote (the JSON layouts of mlp_gpu.py,
    mlp_gpu_fast.py, checkpoint.py and ddp.py)."""
    mod = _load()
    ok = {"status": "ok", "summary": "ok"}
    recs = [
        dict(ok, name="mlp_gpu", outputs={"mlp_gpu.json": {"results": [
            {"case": "a", "batch": 8192, "width": 4096, "gpugrad": {"cuda_c": {"median_s": 0.010}},
             "torch": {"median_s": 0.011}},
            {"case": "c", "batch": 256, "width": 512, "gpugrad": {"cuda_c": {"median_s": 0.003}},
             "torch": {"median_s": 0.0015}}]}}),
        dict(ok, name="mlp_gpu_fast", outputs={"f.json": {"results": {"graphs": {"ms": {
            "gpugrad graphed_step": 0.4, "torch eager": 1.5, "gpugrad eager": 1.0}}}}}),
        dict(ok, name="checkpoint_cuda", outputs={"c.json": {"target": {"config": [64, 1024, 16384], "met": True},
                                                              "rows": [{"depth": 64, "width": 1024, "batch": 16384,
                                                                        "mode": "sqrt", "peak_ratio": 0.31}]}}),
        dict(name="ddp_cuda", status="failed", summary="failed (exit 1): no mpiexec",
             outputs={"d.json": {"missing": True}}),
        dict(ok, name="higher_order_cuda", outputs={"h.json": {"rows": [
            {"label": "Eikonal", "gpugrad_ms": 2.0, "torch_ms": 2.5, "ratio": 0.8},
            {"label": "PINN", "gpugrad_ms": 3.0, "torch_ms": 2.0, "ratio": 1.5}]}}),
        dict(name="pytest_gpu", status="ok", summary="ok: 40 passed", outputs={}),
    ]
    got = {t["target"]: t for t in mod.targets(recs)}
    verdicts = [t["verdict"] for t in got.values()]
    assert verdicts == ["met", "MISSED", "met", "MISSED", "met", "MISSED", "met", "MISSED", "met"], got
    assert "0.91x" in next(t["measured"] for k, t in got.items() if "batch 8192" in k)
    assert "no mpiexec" in next(t["measured"] for k, t in got.items() if "NCCL" in k)
    assert "1.50x" in next(t["measured"] for k, t in got.items() if "issue 16: PINN" in k)
    empty = mod.targets([])
    assert {t["verdict"] for t in empty} == {"not measured"} and len(empty) == 6  # 10 (x3), 9, 12, 16


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    mod = _load()
    path = tmp_path / "r.json"
    mod.write_atomic(str(path), "old")
    monkeypatch.setattr(mod.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        mod.write_atomic(str(path), "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_the_reports_gpu_benchmarks_run_end_to_end_on_the_strict_stand_in(tmp_path):
    """The target benchmarks of the report's plan, run on the strict CuPy stand-in at small shapes
    (tests/support/run_on_stand_in.py: CuPy's rules, graphs captured and replayed, host times): a script
    that breaks is found here, not in a GPU session's minutes; and the targets are read from what they
    wrote (the layouts ``targets`` expects)."""
    runs = {"mlp_gpu": ["--cases", "c", "--kernels", "cuda_c", "--repeats", "1", "--warmup", "1", "--no-torch"],
            "mlp_gpu_fast": ["--quick", "--cases", "graphs", "--repeats", "2", "--warmup", "1"],
            "checkpoint_cuda": ["--device", "cuda", "--configs", "4x64x256", "--repeats", "1", "--no-plan",
                                "--no-plot"],
            "higher_order_cuda": ["--device", "cuda", "--quick", "--no-torch", "--in-process", "--repeats", "1",
                                  "--warmup", "0"]}
    # (kernels_gpu.py is left out: its copy-bandwidth reference moves 1 GiB, too much for CI's host memory)
    scripts = {"mlp_gpu": "mlp_gpu.py", "mlp_gpu_fast": "mlp_gpu_fast.py", "checkpoint_cuda": "checkpoint.py",
               "higher_order_cuda": "higher_order.py"}
    env = dict(os.environ, PYTHONPATH=ROOT, GPUGRAD_STRICT_KERNELS="1")
    procs = {name: subprocess.Popen([sys.executable, "-m", "tests.support.run_on_stand_in",
                                     os.path.join(ROOT, "benchmarks", scripts[name]), *args,
                                     "--out", str(tmp_path / f"{name}.json")],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, args in runs.items()}
    records = []
    for name, p in procs.items():
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"{name}:\n{out[-4000:]}"
        records.append({"name": name, "status": "ok", "summary": "ok",
                        "outputs": {f"{name}.json": json.loads((tmp_path / f"{name}.json").read_text())}})
    got = {t["target"]: t for t in _load().targets(records)}
    graphed = next(t for k, t in got.items() if "graphed" in k and "gpugrad eager" in k)
    assert graphed["verdict"] in ("met", "MISSED") and " ms vs " in graphed["measured"]
    step = next(t for k, t in got.items() if "batch 256 x 8 x 512" in k)
    assert step["measured"] == "gpugrad or PyTorch missing from mlp_gpu.json"  # --no-torch
    # the rows higher_order.py wrote (its --quick labels), not the placeholder row of a layout not read
    eik = next(t for k, t in got.items() if k.startswith("issue 16: Eikonal, --quick shapes"))
    assert eik["measured"] == "not measured"  # --no-torch: no ratio
    assert sum(k.startswith("issue 16: ") for k in got) == 2  # Eikonal and PINN
    fast = records[1]["outputs"]["mlp_gpu_fast.json"]["results"]["graphs"]
    assert fast["check"]["vs_float64_cpu_rel_err"] < 1e-5  # graphed steps (captured, replayed) = float64 CPU
