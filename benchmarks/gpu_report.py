"""The one command for a lent GPU: every GPU check and benchmark, one Markdown and one JSON report.

    PYTHONPATH=. python3 benchmarks/gpu_report.py                 # on the GPU machine, from a source checkout
    python3 benchmarks/gpu_report.py --list                       # the plan (steps, commands, limits), runs nothing
    python3 benchmarks/gpu_report.py --steps pytest_gpu,train_cuda --limit pytest_gpu=300
    python3 benchmarks/gpu_report.py --dry-run --out-dir /tmp/r   # CPU self-test of the machinery (CI runs it)

Steps (each a subprocess with its own wall-clock limit; the sum of the limits is under 8 minutes and the
whole run stays under ``--budget`` seconds, 470 by default, so it fits a 10-minute device call with room
to rerun a step): ``gpugrad info``; the GPU-marked tests with ``GPUGRAD_STRICT_KERNELS=1``; the training
step at issue 10's three shapes against PyTorch eager (benchmarks/mlp_gpu.py); the graphed step against
eager and PyTorch (mlp_gpu_fast.py graphs, gemm); checkpointing at issue 9's depth 64, width 1024, batch
16384 (checkpoint.py); the NCCL data-parallel step on one GPU (ddp.py, issue 12); ``gpugrad train --device
cuda``; the fused kernels alone (kernels_gpu.py); and double-backward step times (higher_order.py, another
engineer's: run when the file exists, else recorded as skipped). A step that fails or runs out of time is
recorded (exit status, output so far) and the rest still run. The report ends with the targets (issue 10:
every step shape <= 1.0x PyTorch eager, graphed <= 1/3 of eager; issue 9: checkpoint peak <= 0.40 of plain;
issue 12: the NCCL step runs), each met, missed or not measured, read from the benchmarks' JSON. Uses only
the packages already installed plus, when a ``.whl/`` folder is present, its wheels installed with ``pip
--no-index`` into /tmp/site (nvmath-python travels so). Writes ``<out-dir>/<name>.json`` (device, package
versions, date, commit, command, targets, and per step: command, status, times, everything it printed,
every JSON file it wrote) and ``<out-dir>/<name>.md``, both atomically (the JSON after every step)."""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SITE = "/tmp/site"
PY = sys.executable or "python3"
MAX_OUTPUT = 60_000  # characters of printed output kept per step


def default_steps(results: str, run_dir: str) -> list[dict]:
    """The real plan: name, argv, wall-clock limit (s), extra environment, JSON files the step writes;
    ``requires``: a file the step needs (absent: recorded as skipped, saying so)."""
    b = os.path.join(ROOT, "benchmarks")

    def out(name: str) -> str:
        return os.path.join(results, name)
    return [
        {"name": "info", "argv": [PY, "-m", "gpugrad", "info"], "limit": 20},
        {"name": "pytest_gpu", "argv": [PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rfE",
                                        "tests"],
         "limit": 150, "env": {"GPUGRAD_STRICT_KERNELS": "1"}},
        # issue 10: the three step shapes (8 hidden layers) against PyTorch eager, the default kernel set
        {"name": "mlp_gpu", "argv": [PY, os.path.join(b, "mlp_gpu.py"), "--kernels", "cuda_c", "--repeats", "20",
                                     "--warmup", "3", "--out", out("mlp_gpu.json")],
         "limit": 75, "outputs": [out("mlp_gpu.json")]},
        # issue 10: one CUDA graph per step against eager gpugrad and PyTorch (eager, torch.compile)
        {"name": "mlp_gpu_fast", "argv": [PY, os.path.join(b, "mlp_gpu_fast.py"), "--cases", "graphs,gemm",
                                          "--repeats", "30", "--out", out("mlp_gpu_fast.json")],
         "limit": 60, "outputs": [out("mlp_gpu_fast.json")]},
        # issue 9: checkpoint="sqrt" peak device memory against plain at its target shape
        {"name": "checkpoint_cuda", "argv": [PY, os.path.join(b, "checkpoint.py"), "--device", "cuda", "--configs",
                                             "64x1024x16384", "--repeats", "3", "--no-plan", "--no-plot", "--out",
                                             out("checkpoint_cuda.json")],
         "limit": 50, "outputs": [out("checkpoint_cuda.json")]},
        # issue 12: the NCCL path on one GPU (one rank under mpiexec): all-reduce and the DDP step
        {"name": "ddp_cuda", "argv": [PY, os.path.join(b, "ddp.py"), "--device", "cuda", "--quick", "--out",
                                      out("ddp_cuda.json")], "limit": 30, "outputs": [out("ddp_cuda.json")]},
        {"name": "train_cuda", "argv": [PY, "-m", "gpugrad", "train", "--device", "cuda", "--epochs", "5", "--quiet",
                                        "--no-plots", "--run-dir", run_dir],
         "limit": 25, "outputs": [os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "config.json")]},
        {"name": "kernels_gpu", "argv": [PY, os.path.join(b, "kernels_gpu.py"), "--kernels", "cuda_c,xp", "--out",
                                         out("kernels_gpu.json")],
         "limit": 25, "outputs": [out("kernels_gpu.json")]},
        # ---- HIGHER-ORDER GRADIENTS: benchmarks/higher_order.py (double-backward step times) is another
        # engineer's; this step runs it once the file exists (until then: "skipped", saying why)
        {"name": "higher_order_cuda", "argv": [PY, os.path.join(b, "higher_order.py"), "--device", "cuda", "--out",
                                               out("higher_order_cuda.json")],
         "limit": 30, "outputs": [out("higher_order_cuda.json")], "requires": os.path.join(b, "higher_order.py")},
    ]


def dry_run_steps(results: str) -> list[dict]:
    """Self-test steps for the machinery on a CPU: one that prints a figure and writes JSON, one that
    fails, one that outlives its limit, one whose script is absent, one that runs gpugrad on the CPU."""
    ok_json = os.path.join(results, "selftest_ok.json")
    ok_code = ("import json, sys; print('selftest figure: 42.5 ms'); "
               f"json.dump({{'figure_ms': 42.5}}, open({ok_json!r}, 'w')); sys.exit(0)")
    missing = os.path.join(results, "no_such_benchmark.py")
    return [
        {"name": "selftest_ok", "argv": [PY, "-c", ok_code], "limit": 30, "outputs": [ok_json]},
        {"name": "selftest_fail", "argv": [PY, "-c", "import sys; print('about to fail'); "
                                                     "sys.exit('selftest: deliberate failure (exit 1)')"],
         "limit": 30},
        {"name": "selftest_timeout", "argv": [PY, "-c", "import time; print('sleeping', flush=True); time.sleep(60)"],
         "limit": 1},
        {"name": "selftest_absent", "argv": [PY, missing], "limit": 30, "requires": missing},
        {"name": "info", "argv": [PY, "-m", "gpugrad", "info"], "limit": 60},
    ]


# ------------------------------------------------------------------------------------------------ targets
def _output(steps: dict, name: str) -> Any:
    """The first JSON file step ``name`` wrote in this run (None if it did not run or wrote none)."""
    rec = steps.get(name)
    for content in (rec or {}).get("outputs", {}).values():
        if isinstance(content, dict) and not ({"missing", "stale", "unreadable"} & set(content)):
            return content
    return None


def _row(target: str, measured: str | None, met: bool | None) -> dict:
    return {"target": target, "measured": measured or "not measured",
            "verdict": "not measured" if met is None else ("met" if met else "MISSED")}


def targets(records: list[dict]) -> list[dict]:
    """The issues' GPU targets, each met / MISSED / not measured, from the steps' JSON outputs."""
    steps = {r["name"]: r for r in records}
    rows = []
    mg = _output(steps, "mlp_gpu")
    cases = (mg or {}).get("results") or []
    for r in cases:
        g, t = (r.get("gpugrad") or {}).get("cuda_c"), r.get("torch")
        what = f"issue 10: step, batch {r.get('batch')} x 8 x {r.get('width')}, <= 1.0x PyTorch eager"
        if g and t:
            ratio = g["median_s"] / t["median_s"]
            rows.append(_row(what, f"{g['median_s'] * 1e3:.3f} ms vs {t['median_s'] * 1e3:.3f} ms = {ratio:.2f}x",
                             ratio <= 1.0))
        else:
            rows.append(_row(what, "gpugrad or PyTorch missing from mlp_gpu.json", None))
    if not cases:
        rows.append(_row("issue 10: every step shape <= 1.0x PyTorch eager", None, None))
    ms = (((_output(steps, "mlp_gpu_fast") or {}).get("results") or {}).get("graphs") or {}).get("ms") or {}
    graphed, torch_eager, eager = ms.get("gpugrad graphed_step"), ms.get("torch eager"), ms.get("gpugrad eager")
    for base, label in ((torch_eager, "PyTorch eager"), (eager, "gpugrad eager")):
        what = f"issue 10: graphed step (batch 256 x 8 x 512) <= 1/3 of {label}"
        if graphed and base:
            rows.append(_row(what, f"{graphed:.3f} ms vs {base:.3f} ms = {graphed / base:.2f}x",
                             graphed <= base / 3))
        else:
            rows.append(_row(what, None, None))
    ck = _output(steps, "checkpoint_cuda")
    tgt = (ck or {}).get("target") or {}
    hit = next((r for r in (ck or {}).get("rows", []) if r.get("mode") == "sqrt"
                and [r.get("depth"), r.get("width"), r.get("batch")] == tgt.get("config")), None)
    rows.append(_row("issue 9: checkpoint='sqrt' peak device memory <= 0.40 of plain, depth 64, width 1024, "
                     "batch 16384", f"{hit['peak_ratio']:.3f} of plain" if hit else None,
                     tgt.get("met") if hit else None))
    dd, ddp = _output(steps, "ddp_cuda"), steps.get("ddp_cuda")
    st = ((dd or {}).get("steps") or [None])[0]
    what = "issue 12: the NCCL data-parallel step runs (one GPU, one rank)"
    if st and ddp["status"] == "ok":
        rows.append(_row(what, f"step {st['step_ms']:.2f} ms, plain model {st['plain_step_ms']:.2f} ms", True))
    elif ddp is not None and ddp["status"] != "skipped":
        rows.append(_row(what, f"ddp_cuda {ddp['status']}: {ddp.get('summary', '')}", False))
    else:
        rows.append(_row(what, None, None))
    ho = _output(steps, "higher_order_cuda")
    for r in (ho or {}).get("rows") or [{"label": "Eikonal and PINN steps"}]:
        what = f"issue 16: {r['label']} (create_graph step) <= 1.0x PyTorch eager"
        if r.get("ratio") is not None:
            rows.append(_row(what, f"{r['gpugrad_ms']:.3f} ms vs {r['torch_ms']:.3f} ms = {r['ratio']:.2f}x",
                             r["ratio"] <= 1.0))
        else:
            rows.append(_row(what, None, None))
    pt = steps.get("pytest_gpu")
    if pt is not None:
        rows.append(_row("every GPU-marked test passes with GPUGRAD_STRICT_KERNELS=1", pt.get("summary"),
                         pt["status"] == "ok" if pt["status"] != "skipped" else None))
    return rows


# ------------------------------------------------------------------------------------------------ facts
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for dist in ("numpy", "cupy-cuda13x", "cupy-cuda12x", "cupy", "numba", "numba-cuda", "torch", "nvmath-python",
                 "pytest", "scipy", "scikit-learn", "safetensors"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def device() -> dict:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"gpu": None, "note": "nvidia-smi not found"}
    try:
        r = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        rows = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
        return {"gpu": rows, "nvidia_smi_rc": r.returncode}
    except Exception as e:  # pragma: no cover - odd machines
        return {"gpu": None, "note": f"nvidia-smi failed: {type(e).__name__}: {e}"}


def commit(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            raise RuntimeError(head.stderr.strip())
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except Exception:
        return "unknown (no git checkout here; pass --commit)"


# ------------------------------------------------------------------------------------------------ running
def install_wheels(env: dict) -> dict | None:
    """``.whl/*.whl`` -> /tmp/site (no index, no dependencies), prepended to PYTHONPATH."""
    wheels = sorted(glob.glob(os.path.join(ROOT, ".whl", "*.whl")))
    if not wheels:
        return None
    argv = [PY, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target", SITE, *wheels]
    rec = run_step({"name": "install_wheels", "argv": argv, "limit": 120}, env, time.monotonic() + 120)
    if rec["status"] == "ok":
        env["PYTHONPATH"] = SITE + os.pathsep + env.get("PYTHONPATH", "")
    return rec


def run_step(step: dict, base_env: dict, deadline: float) -> dict:
    """Run one step under its limit (capped by the overall deadline); never raises."""
    left = deadline - time.monotonic()
    limit = min(float(step["limit"]), left)
    rec: dict[str, Any] = {"name": step["name"], "command": " ".join(step["argv"]), "limit_s": round(limit, 1),
                           "status": "skipped", "returncode": None, "wall_s": 0.0, "output": "", "outputs": {}}
    if left < 5:
        rec["summary"] = f"not run: {max(left, 0):.0f} s left of the overall budget"
        return rec
    need = step.get("requires")
    if need and not os.path.exists(need):
        rec["summary"] = f"not run: {os.path.relpath(need, ROOT)} is not in this checkout"
        return rec
    env = dict(base_env, **step.get("env", {}))
    t0 = time.monotonic()
    started = time.time()
    try:
        p = subprocess.Popen(step["argv"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace", start_new_session=True)
    except OSError as e:
        rec.update(status="failed", summary=f"could not start: {e}")
        return rec
    try:
        out, _ = p.communicate(timeout=limit)
        rec["status"] = "ok" if p.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover
            pass
        out, _ = p.communicate()
        rec["status"] = "timeout"
    rec["returncode"] = p.returncode
    rec["wall_s"] = round(time.monotonic() - t0, 2)
    out = out or ""
    rec["output"] = out if len(out) <= MAX_OUTPUT else "[... earlier output cut ...]\n" + out[-MAX_OUTPUT:]
    for path in step.get("outputs", []):
        shown = os.path.relpath(path, ROOT) if os.path.abspath(path).startswith(ROOT + os.sep) else path
        rec["outputs"][shown] = _read_output(path, started)
    rec["summary"] = summarize(step["name"], rec)
    return rec


def _read_output(path: str, started: float) -> Any:
    if not os.path.exists(path):
        return {"missing": True}
    if os.path.getmtime(path) < started - 1:
        return {"stale": f"not rewritten by this run (modified {time.ctime(os.path.getmtime(path))})"}
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith(".jsonl"):
            return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        return json.loads(text)
    except Exception as e:
        return {"unreadable": f"{type(e).__name__}: {e}"}


def summarize(name: str, rec: dict) -> str:
    lines = [ln.rstrip() for ln in rec["output"].splitlines() if ln.strip()]
    if rec["status"] == "timeout":
        head = f"timed out after {rec['limit_s']:.0f} s"
    elif rec["status"] == "failed":
        head = f"failed (exit {rec['returncode']})"
    else:
        head = "ok"
    if name.startswith("pytest"):
        counts = [ln for ln in lines if re.search(r"\d+ (passed|failed|error|skipped)", ln)]
        return f"{head}: {counts[-1].strip('= ')}" if counts else head
    if name.startswith("train"):
        final = [ln for ln in lines if ln.startswith("final:")]
        return f"{head}: {final[-1]}" if final else (f"{head}: {lines[-1]}" if lines else head)
    return f"{head}: {lines[-1][:200]}" if lines else head


# ------------------------------------------------------------------------------------------------ writing
def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def markdown(report: dict) -> str:
    md = [f"# gpugrad GPU report{' (dry run: machinery self-test, no GPU figures)' if report['dry_run'] else ''}", "",
          f"- date: {report['date']}", f"- commit: {report['commit']}", f"- command: `{report['command']}`",
          f"- device: {json.dumps(report['device'])}",
          f"- packages: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
          f"- total wall time: {report['wall_s']:.0f} s (budget {report['budget_s']:.0f} s)", "",
          "| step | status | wall s | limit s | summary |", "| --- | --- | ---: | ---: | --- |"]
    for s in report["steps"]:
        summ = s.get("summary", "").replace("|", "\\|")
        md.append(f"| {s['name']} | {s['status']} | {s['wall_s']:.1f} | {s['limit_s']:.0f} | {summ} |")
    if report.get("targets"):
        md += ["", "## Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
        md += [f"| {t['target']} | {t['measured']} | {t['verdict']} |".replace("\n", " ") for t in report["targets"]]
    for s in report["steps"]:
        md += ["", f"## {s['name']}: {s['status']}", "", f"`{s['command']}`", ""]
        if s["output"]:
            tail = s["output"].splitlines()[-80:]
            md += ["Printed (last 80 lines; all of it is in the JSON):", "", "```", *tail, "```"]
        for path, content in s["outputs"].items():
            text = json.dumps(content, indent=1, default=str)
            if len(text) > 6000:
                text = text[:6000] + "\n... (the rest is in the JSON report)"
            md += ["", f"Wrote `{path}`:", "", "```json", text, "```"]
    return "\n".join(md) + "\n"


def parse_limits(items: list[str]) -> dict[str, float]:
    out = {}
    for it in items:
        name, _, val = it.partition("=")
        if not name or not val:
            raise SystemExit(f"gpu_report.py: --limit wants NAME=SECONDS, got {it!r}")
        out[name] = float(val)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default=None, help="comma-separated step names to run (default: all)")
    ap.add_argument("--skip", default="", help="comma-separated step names to leave out")
    ap.add_argument("--limit", action="append", default=[], metavar="NAME=SECONDS",
                    help="wall-clock limit of one step (repeatable)")
    ap.add_argument("--budget", type=float, default=470.0, help="wall-clock budget of the whole run, s (default 470)")
    ap.add_argument("--out-dir", default=RESULTS, help="where the reports (and the benchmarks' JSON) go")
    ap.add_argument("--name", default=None, help="report file stem (default gpu_report, dry run gpu_report_dryrun)")
    ap.add_argument("--commit", default=os.environ.get("GPUGRAD_COMMIT"), help="commit id when there is no .git here")
    ap.add_argument("--dry-run", action="store_true", help="self-test the machinery with tiny CPU steps")
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    out_dir = os.path.abspath(args.out_dir)
    name = args.name or ("gpu_report_dryrun" if args.dry_run else "gpu_report")
    run_dir = os.path.join(tempfile.gettempdir(), f"gpugrad-report-train-{os.getpid()}")
    steps = dry_run_steps(out_dir) if args.dry_run else default_steps(out_dir, run_dir)
    known = {s["name"] for s in steps}
    chosen = [x.strip() for x in args.steps.split(",")] if args.steps else [s["name"] for s in steps]
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    unknown = (set(chosen) | skip) - known
    if unknown:
        raise SystemExit(f"gpu_report.py: unknown step(s) {sorted(unknown)}; known: {sorted(known)}")
    limits = parse_limits(args.limit)
    if set(limits) - known:
        raise SystemExit(f"gpu_report.py: --limit for unknown step(s) {sorted(set(limits) - known)}")
    plan = [dict(s, limit=limits.get(s["name"], s["limit"])) for s in steps if s["name"] in chosen
            and s["name"] not in skip]
    if args.list:
        for s in plan:
            print(f"{s['name']:<18} {s['limit']:>5.0f} s  {' '.join(s['argv'])}")
        return 0
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    deadline = t_start + args.budget
    records = []
    wh = None if args.dry_run else install_wheels(env)
    if wh is not None:
        records.append(wh)
    report = {"dry_run": bool(args.dry_run),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": commit(args.commit), "command": " ".join([os.path.basename(PY)] + sys.argv),
              "device": device(), "versions": versions(), "budget_s": args.budget, "steps": records, "wall_s": 0.0}
    json_path, md_path = os.path.join(out_dir, name + ".json"), os.path.join(out_dir, name + ".md")
    for s in plan:
        print(f"[gpu_report] {s['name']} (limit {min(s['limit'], deadline - time.monotonic()):.0f} s): "
              f"{' '.join(s['argv'])}", flush=True)
        rec = run_step(s, env, deadline)
        records.append(rec)
        print(f"[gpu_report] {s['name']}: {rec['summary']} ({rec['wall_s']:.1f} s)", flush=True)
        report["wall_s"] = round(time.monotonic() - t_start, 1)
        write_atomic(json_path, json.dumps(report, indent=1, default=str))  # partial reports survive a kill
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    if not args.dry_run:
        report["targets"] = targets(records)
    write_atomic(json_path, json.dumps(report, indent=1, default=str))
    write_atomic(md_path, markdown(report))
    shutil.rmtree(run_dir, ignore_errors=True)
    bad = [r["name"] for r in records if r["status"] not in ("ok", "skipped")]
    for t in report.get("targets", []):
        print(f"[gpu_report] {t['verdict']:>12}: {t['target']} ({t['measured']})", flush=True)
    print(f"[gpu_report] wrote {md_path} and {json_path}; {len(records) - len(bad)} ok or skipped, "
          f"{len(bad)} not ok{': ' + ', '.join(bad) if bad else ''}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
