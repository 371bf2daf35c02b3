"""The ``gpugrad`` command end to end, in-process on tiny settings: train (run folder, metrics,
checkpoint, plots), bit-exact resume, clear errors with exit code 2 that leave files untouched,
info, bench, diagnose, graph."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gpugrad as gg
from gpugrad import cli, diagnostics, training
from gpugrad.install_hints import hint
from tests.support.png import read_png

TINY = ["--dataset", "synthetic", "--n-samples", "240", "--n-features", "6", "--n-outputs", "3",
        "--width", "16", "--depth", "2", "--batch-size", "32", "--quiet", "--no-plots"]
TIMING_KEYS = {"samples_per_s", "epoch_time_s", "compile_s"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _metrics(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _grad_norms(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "grad_norms.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _strip_timing(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in recs]


def _snapshot(folder) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            with open(p, "rb") as f:
                out[name] = f.read()
    return out


def test_train_writes_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    rc = cli.main(["train", *TINY, "--epochs", "2", "--run-dir", str(run), "--grad-norm-every", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "final: epoch 2/2" in out and "test acc" in out and str(run) in out
    for f in ("config.json", "metrics.jsonl", "grad_norms.jsonl", cli.CHECKPOINT_FILE):
        assert (run / f).exists(), f
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["width"] == 16 and cfg["config"]["optimizer"] == "adam" and cfg["config"]["lr"] == 1e-3
    assert cfg["model"]["sizes"] == [6, 16, 16, 3]
    assert cfg["model"]["linear_layers"] == ["blocks.0.linear", "blocks.1.linear", "head"]
    recs = _metrics(run)
    assert [r["epoch"] for r in recs] == [1, 2]
    for r in recs:
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "samples_per_s", "grad_norm"):
            assert k in r, k
        assert 0.0 <= r["test_acc"] <= 1.0 and np.isfinite(r["train_loss"])
        assert set(r["grad_norm"]) == {"blocks.0.linear", "blocks.1.linear", "head"}
    gn = [json.loads(line) for line in (run / "grad_norms.jsonl").read_text().splitlines()]
    assert [g["step"] for g in gn] == [0, 3, 6, 9]  # steps 0..11 (192 samples / 32 per epoch), every 3rd
    assert all(v > 0 for g in gn for v in g["norms"].values())
    state = gg.load(str(run / cli.CHECKPOINT_FILE))
    assert state["progress"] == {"epoch": 2, "step": 12}
    assert tuple(state["model"]["blocks.0.linear.weight"].shape) == (16, 6)


def test_train_learns_digits_quickly(tmp_path, capsys):
    run = tmp_path / "digits"
    assert cli.main(["train", "--width", "64", "--epochs", "3", "--quiet", "--no-plots", "--run-dir", str(run)]) == 0
    recs = _metrics(run)
    assert recs[-1]["test_acc"] > 0.85 and recs[-1]["train_loss"] < recs[0]["train_loss"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_and_epoch_lines(tmp_path, capsys, monkeypatch):
    args = [a for a in TINY if a != "--quiet"]
    assert cli.main(["train", *args, "--epochs", "2", "--run-dir", str(tmp_path / "r")]) == 0
    cap = capsys.readouterr()
    lines = [ln for ln in cap.out.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 2 and "train loss" in lines[0] and "test loss" in lines[0] and "samples/s" in lines[0]
    assert cap.err == ""  # no progress line when stderr is not a terminal
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli.main(["train", *args, "--epochs", "1", "--run-dir", str(tmp_path / "t")]) == 0
    shown = term.getvalue()
    assert "\repoch 1/1  100%  192/192 samples  loss " in shown  # redrawn in place on the terminal
    assert shown.endswith("\r") and shown.rstrip("\r").split("\r")[-1].strip() == ""  # and cleared at the end


def test_progress_reads_the_loss_only_when_it_redraws():
    reads = []
    p = training.Progress(1000, "epoch 1/1", stream=_Terminal())
    for _ in range(100):
        p.update(10, lambda: reads.append(1) or 0.5)
    assert 1 <= len(reads) <= 3  # the first draw, the last (100 %), and at most one 0.1 s tick between
    off = training.Progress(10, "x", stream=io.StringIO())
    off.update(10, lambda: reads.append(2))
    assert 2 not in reads and off.stream.getvalue() == ""


def test_values_print_with_four_significant_digits():
    f = training.fmt_value
    assert [f(1.1084), f(0.00072), f(1.5e30), f(-3.2e7), f(float("nan")), f(float("inf"))] == [
        "1.108", "0.00072", "1.5e+30", "-3.2e+07", "nan", "inf"]
    line = cli.train._epoch_line({"epoch": 3, "train_loss": 2.5e31, "train_acc": 0.1, "test_loss": 1e29,
                                  "test_acc": 0.1, "samples_per_s": 1000.0, "lr": 1.0, "compile_s": 0.0}, 5, True)
    assert "train loss 2.5e+31 acc 0.1000" in line and "test loss 1e+29" in line and "compiling" not in line


def test_first_epoch_reports_its_compile_time(tmp_path):
    """The first epoch of a process compiles the fused CPU passes (Numba): the epoch line says how long."""
    run = tmp_path / "c"
    args = [a for a in TINY if a != "--quiet"]
    r = subprocess.run([sys.executable, "-m", "gpugrad", "train", *args, "--epochs", "2", "--run-dir", str(run)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT})  # a fresh process: nothing compiled yet
    assert r.returncode == 0, r.stderr
    recs = _metrics(run)
    assert recs[0]["compile_s"] > 0.01 and recs[1]["compile_s"] == 0.0
    assert recs[0]["compile_s"] < recs[0]["epoch_time_s"]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("epoch")]
    assert "s of it compiling kernels, once per process)" in lines[0] and "compiling" not in lines[1]


def test_regression_reports_r2(tmp_path, capsys):
    run = tmp_path / "reg"
    rc = cli.main(["train", *TINY, "--task", "regression", "--epochs", "2", "--run-dir", str(run)])
    assert rc == 0
    r = _metrics(run)[-1]
    assert "test_r2" in r and "test_acc" not in r and r["test_r2"] <= 1.0
    assert "test R^2" in capsys.readouterr().out


def test_plots_written_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a plain install: import matplotlib fails
    run = tmp_path / "plots"
    args = [a for a in TINY if a != "--no-plots"]
    assert cli.main(["train", *args, "--epochs", "2", "--run-dir", str(run)]) == 0
    for f in ("curves.png", "grad_norms.png"):
        img = read_png(run / f)
        assert img.shape[0] > 300 and img.shape[1] > 600 and (img < 200).any(axis=-1).sum() > 2000  # drawn on


def test_default_run_dir_is_under_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *TINY, "--epochs", "1"]) == 0
    assert cli.main(["train", *TINY, "--epochs", "1"]) == 0  # same second: a second, distinct folder
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 2 and all(r.startswith("synthetic-") for r in runs)


# ------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("extra", [
    [],
    ["--optimizer", "sgd", "--schedule", "step", "--dropout", "0.2", "--clip-grad-norm", "1.0"],
    ["--optimizer", "adamw", "--schedule", "cosine", "--dropout", "0.3", "--checkpoint", "sqrt", "--residual"],
    ["--optimizer", "rmsprop", "--momentum", "0.5"],
], ids=["adam", "sgd-step-dropout-clip", "adamw-cosine-dropout-ckpt", "rmsprop"])
def test_resume_is_bit_exact(tmp_path, extra, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli.main(["train", *TINY, *extra, "--epochs", "4", "--run-dir", str(full)]) == 0
    assert cli.main(["train", *TINY, *extra, "--epochs", "4", "--stop-after", "2", "--run-dir", str(part)]) == 0
    assert len(_metrics(part)) == 2
    assert "resume with" in capsys.readouterr().out
    assert cli.main(["train", "--resume", str(part), "--quiet", "--no-plots"]) == 0
    assert _strip_timing(_metrics(part)) == _strip_timing(_metrics(full))
    a, b = gg.load(str(full / cli.CHECKPOINT_FILE)), gg.load(str(part / cli.CHECKPOINT_FILE))
    for k, v in a["model"].items():
        np.testing.assert_array_equal(v.numpy(), b["model"][k].numpy(), err_msg=k)
    assert a["rng"] == b["rng"] and a["progress"] == b["progress"]
    assert (full / "grad_norms.jsonl").read_text() == (part / "grad_norms.jsonl").read_text()


def test_resume_extends_a_finished_run(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli.main(["train", *TINY, "--epochs", "4", "--run-dir", str(full)]) == 0
    assert cli.main(["train", *TINY, "--epochs", "2", "--run-dir", str(part)]) == 0
    assert cli.main(["train", "--resume", str(part), "--epochs", "4", "--quiet", "--no-plots"]) == 0
    assert _strip_timing(_metrics(part)) == _strip_timing(_metrics(full))
    cfg = json.loads((part / "config.json").read_text())
    assert cfg["config"]["epochs"] == 4 and cfg["resumed"][0]["at_epoch"] == 2
    # resuming a finished run does nothing
    before = _snapshot(part)
    assert cli.main(["train", "--resume", str(part), "--quiet", "--no-plots"]) == 0
    assert "already finished 4 epochs" in capsys.readouterr().out
    assert _snapshot(part) == before


def test_ctrl_c_leaves_a_resumable_run(tmp_path, monkeypatch, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli.main(["train", *TINY, "--epochs", "3", "--run-dir", str(full)]) == 0
    real = training.Trainer.train_epoch

    def interrupted(self, epoch, total):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch, total)
    monkeypatch.setattr(training.Trainer, "train_epoch", interrupted)
    assert cli.main(["train", *TINY, "--epochs", "3", "--run-dir", str(part)]) == 130
    assert f"--resume {part}" in capsys.readouterr().err
    monkeypatch.setattr(training.Trainer, "train_epoch", real)
    assert cli.main(["train", "--resume", str(part), "--quiet", "--no-plots"]) == 0
    assert _strip_timing(_metrics(part)) == _strip_timing(_metrics(full))


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path):
    part = tmp_path / "part"
    assert cli.main(["train", *TINY, "--epochs", "3", "--stop-after", "2", "--run-dir", str(part)]) == 0
    recs = _metrics(part)
    with open(part / "metrics.jsonl", "a") as f:  # a crash after logging epoch 3, before its checkpoint
        f.write(json.dumps(dict(recs[-1], epoch=3)) + "\n")
    assert cli.main(["train", "--resume", str(part), "--quiet", "--no-plots"]) == 0
    assert [r["epoch"] for r in _metrics(part)] == [1, 2, 3]


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("argv, needle", [
    (["train", "--dataset", "cifar10"], "invalid choice: 'cifar10'"),
    (["train", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    (["train", "--schedule", "linear"], "invalid choice"),
    (["train", "--activation", "swish"], "invalid choice"),
    (["train", "--lr", "abc"], "--lr must be a number"),
    (["train", "--lr", "inf"], "--lr must be a finite number in (0.0, inf), got 'inf'"),
    (["train", "--lr", "nan"], "--lr must be a finite number in (0.0, inf), got 'nan'"),
    (["train", "--lr", "-1"], "--lr must be in (0.0, inf), got '-1'"),
    (["train", "--dropout", "1.0"], "--dropout must be in [0.0, 1.0), got '1.0'"),
    (["train", "--epochs", "0"], "--epochs must be a positive integer"),
    (["train", "--checkpoint", "half"], "--checkpoint must be 'none', 'sqrt'"),
    (["train", "--no-such-option"], "unrecognized arguments"),
    (["train", "--optimizer", "adam", "--momentum", "0.9"], "--momentum applies to sgd and rmsprop"),
    (["bench", "--widths", "8,x"], "--widths must be a comma-separated list"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "error" in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_unwritable_run_dir_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert cli.main(["train", *TINY, "--epochs", "1", "--run-dir", str(blocker / "run")]) == 2
    assert "cannot write to run folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"
    assert cli.main(["train", *TINY, "--epochs", "1", "--run-dir", str(blocker)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", *TINY, "--epochs", "1", "--run-dir", str(run)]) == 0
    before = _snapshot(run)
    assert cli.main(["train", *TINY, "--epochs", "2", "--run-dir", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_corrupt_or_missing_resume_files_exit_2_and_change_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", *TINY, "--epochs", "3", "--stop-after", "1", "--run-dir", str(run)]) == 0
    ck = run / cli.CHECKPOINT_FILE
    good = ck.read_bytes()
    ck.write_bytes(good[: len(good) // 2])  # truncated
    before = _snapshot(run)
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and cli.CHECKPOINT_FILE in err
    assert _snapshot(run) == before
    ck.write_bytes(b"garbage" * 10)
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 2
    ck.write_bytes(good)
    (run / "config.json").write_text("{not json")
    before = _snapshot(run)
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "config.json is missing or unreadable" in capsys.readouterr().err
    assert _snapshot(run) == before
    assert cli.main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_resume_refuses_a_changed_configuration(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", *TINY, "--epochs", "3", "--stop-after", "1", "--run-dir", str(run)]) == 0
    before = _snapshot(run)
    assert cli.main(["train", "--resume", str(run), "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the run's saved lr=0.001" in capsys.readouterr().err
    assert _snapshot(run) == before
    # repeating the same options is fine
    assert cli.main(["train", *TINY, "--epochs", "3", "--resume", str(run)]) == 0


def test_checkpoint_that_does_not_match_the_model_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", *TINY, "--epochs", "3", "--stop-after", "1", "--run-dir", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["config"]["width"] = 32  # the saved weights are 16 wide
    (run / "config.json").write_text(json.dumps(cfg))
    before = _snapshot(run)
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 2
    assert "does not match" in capsys.readouterr().err
    assert _snapshot(run) == before


def test_cuda_request_without_cuda_exits_2(tmp_path, capsys):
    if gg.cuda.is_available():
        pytest.skip("a CUDA device is available")
    assert cli.main(["train", *TINY, "--device", "cuda", "--run-dir", str(tmp_path / "r")]) == 2
    assert "CUDA is not usable here" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_mnist1d_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("mnist1d"):
            raise ImportError("No module named 'mnist1d'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert cli.main(["train", "--dataset", "mnist1d", "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "pip install mnist1d" in err and hint("mnist1d") in err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------- diagnostics
def test_check_norms_flags_collapse_and_explosion():
    names = ["a", "b", "c", "d"]
    found = diagnostics.check_norms(names, np.array([1.0, 1e-9, 2e3, np.nan]))
    kinds = {(n, k) for n, k, _ in found}
    assert kinds == {("b", "collapse"), ("c", "explode"), ("d", "explode")}
    assert diagnostics.check_norms(names, np.array([1.0, 0.5, 1e-3, 10.0])) == []


def test_deep_sigmoid_run_warns_about_vanishing_gradients(tmp_path, capsys):
    run = tmp_path / "sig"
    rc = cli.main(["train", *TINY, "--activation", "sigmoid", "--depth", "14", "--epochs", "1",
                   "--grad-norm-every", "1", "--run-dir", str(run)])
    assert rc == 0
    cap = capsys.readouterr()
    assert "warning: weight-gradient norms of" in cap.err and "vanishing gradients" in cap.err
    assert "blocks.0.linear" in cap.err
    assert "gradient warning(s)" in cap.out


def test_exploding_gradients_warn(tmp_path, capsys):
    rc = cli.main(["train", *TINY, "--optimizer", "sgd", "--lr", "30", "--epochs", "2", "--grad-norm-every", "1",
                   "--run-dir", str(tmp_path / "x")])
    assert rc == 0  # large but finite gradients: a warning, and training goes on
    assert "exploding gradients" in capsys.readouterr().err


@pytest.mark.parametrize("every", ["1", "0"])  # caught by the gradient norms, or by the epoch's loss
def test_divergence_is_reported_once_without_numpy_warnings(tmp_path, capsys, every):
    import warnings
    run = tmp_path / "x"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli.main(["train", *TINY, "--optimizer", "sgd", "--lr", "1e4", "--epochs", "3", "--grad-norm-every",
                       every, "--run-dir", str(run)])
    assert rc == 1
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []  # no overflow/invalid-value noise
    cap = capsys.readouterr()
    said = cap.err.splitlines()
    assert sum("training diverged" in ln for ln in said) == 1  # said once...
    assert all("training diverged" in ln or "exploding gradients" in ln for ln in said)  # ...and nothing else
    assert "Lower --lr (now 10000) or add --clip-grad-norm; no checkpoint.npz was written" in cap.err
    assert "(diverged" in cap.out and len(_metrics(run)) == 1
    assert not (run / cli.CHECKPOINT_FILE).exists()  # a diverged epoch never overwrites the last finite checkpoint
    if every == "1":  # stopped at the first step whose gradients are not finite
        import re
        step = int(re.search(r"training diverged at step (\d+) \(epoch 1\)", cap.err).group(1))
        assert _metrics(run)[0]["step"] == step + 1 < 240 // 32
        assert all(all(np.isfinite(list(r["norms"].values()))) for r in _grad_norms(run)[:-1])


def test_diagnose_compares_three_networks(tmp_path, capsys):
    out = tmp_path / "gn.png"
    rc = cli.main(["diagnose", "--depth", "6", "--width", "16", "--steps", "2", "--out", str(out)])
    assert rc == 0
    res = json.loads((tmp_path / "gn.json").read_text())
    models = res["models"]
    assert len(models) == 3 and all(len(m["profile"]) == 7 for m in models.values())
    sig = models["sigmoid, depth 6"]["profile"]
    res_ = models["relu + residual, depth 6"]["profile"]
    assert sig[0] / sig[-1] < res_[0] / res_[-1]  # the sigmoid net's first layer gets relatively less gradient
    assert read_png(out).shape[2] == 3


def test_diagnose_out_gets_png_extension(tmp_path):
    from gpugrad.cli.diagnose import png_path
    assert png_path(str(tmp_path / "d")) == str(tmp_path / "d.png")
    assert png_path("a/b.PNG") == "a/b.PNG"
    with pytest.raises(cli.CLIError, match=r"--out 'x\.jpg'.*ending in \.png.*'x\.png'"):
        png_path("x.jpg")
    assert cli.main(["diagnose", "--steps", "1", "--out", str(tmp_path / "d.svg")]) == 2


# ------------------------------------------------------------------------------------------- info, bench, graph
def test_info_lists_versions_devices_and_reasons(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"gpugrad {gg.__version__}" in out
    for needle in ("python", "numpy", "numba", "cpu: available", "cuda:", "backends and kernels"):
        assert needle in out, needle
    if not gg.cuda.is_available():
        assert "cuda: unavailable - " in out


def test_bench_tiny_grid_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = cli.main(["bench", "--device", "cpu", "--widths", "8,16", "--depths", "1", "--batches", "4",
                   "--repeats", "2", "--warmup", "1", "--gemm-size", "128", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["gemm_ceiling"]["tflops"] > 0
    assert [(r["width"], r["depth"], r["batch"]) for r in res["rows"]] == [(8, 1, 4), (16, 1, 4)]
    r = res["rows"][0]
    assert r["flops_per_step"] == 2 * 4 * (8 * 8 * 2 + 8 * 10 * 3)
    assert r["gpugrad_samples_per_s"] > 0 and r["gpugrad_tflops"] > 0
    assert "width" in capsys.readouterr().out
    assert read_png(tmp_path / "b.png").shape[2] == 3  # the plot, one batch size: a single point per line


def test_graph_command_writes_dot(tmp_path, capsys):
    out = tmp_path / "g.dot"
    assert cli.main(["graph", "--out", str(out)]) == 0
    text = out.read_text()
    assert "mul" in text and "add" in text and "value 20" in text
    assert cli.main(["graph", "--example", "mlp", "--out", str(tmp_path / "m.dot")]) == 0
    assert "blocks.0.linear.weight" in (tmp_path / "m.dot").read_text()


def test_help_and_version(capsys):
    assert cli.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert cli.main(["train", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert gg.__version__ in capsys.readouterr().out


def test_python_dash_m_gpugrad():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "gpugrad", "train", "--dataset", "nope"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr
