"""The README and the docs/ pages, as written: every ```python block runs in a fresh interpreter, every
``gpugrad`` command in a ```bash block parses with the real parser (and each option it shows exists,
with the choices it shows), the extras it names exist in pyproject.toml, and its install hints are the
ones ``gpugrad info`` prints."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from gpugrad import cli
from gpugrad.install_hints import INSTALL_HINTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
DOC_PATHS = ["README.md"] + sorted(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
                                   if f.endswith(".md"))
DOCS = "\n".join(open(os.path.join(ROOT, p), encoding="utf-8").read() for p in DOC_PATHS)


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOCS, re.S | re.M)


PYTHON_BLOCKS = blocks("python")
BASH_BLOCKS = blocks("bash")


def test_the_readme_has_the_blocks_this_file_checks():
    assert len(PYTHON_BLOCKS) >= 2 and len(BASH_BLOCKS) >= 2


def test_docs_state_what_is_true_now_without_issue_numbers():
    """The docs describe the product, not the tracker's history: no "issue 19", "issues 15-19", "#19"."""
    for p in DOC_PATHS:
        text = open(os.path.join(ROOT, p), encoding="utf-8").read()
        found = re.findall(r"\b(?:issues? #?\d+|#\d+\b)", text, re.I)
        assert not found, f"{p} names {found}: say what is true now instead"


@pytest.mark.parametrize("i", range(len(PYTHON_BLOCKS)))
def test_python_block_runs_as_written(i, tmp_path):
    if "gpugrad.distributed" in PYTHON_BLOCKS[i] and importlib.util.find_spec("mpi4py") is None:
        pytest.skip("the data-parallel example needs mpi4py (pip install mpi4py mpich, or the [dev] extra)")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", PYTHON_BLOCKS[i]], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"README python block {i} failed:\n{PYTHON_BLOCKS[i]}\n--- stderr:\n{r.stderr[-3000:]}"


def _commands(block: str) -> list[str]:
    """Shell commands of a block: comments dropped, ``[...]`` continuation lines joined, ``&&`` split."""
    lines: list[str] = []
    for raw in block.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        if raw[:1].isspace() and line.lstrip().startswith("[") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line.strip())
    return [c.strip() for line in lines for c in line.split("&&")]


def _subparsers():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def _gpugrad_argv(cmd: str) -> list[str] | None:
    words = shlex.split(cmd)
    for prefix in (["gpugrad"], ["python3", "-m", "gpugrad"], ["docker", "run"]):
        if words[:len(prefix)] == prefix:
            if prefix == ["docker", "run"]:  # docker run [opts] IMAGE [gpugrad ...]
                at = [i for i, w in enumerate(words) if w == "gpugrad"]  # the image, then the command
                return words[at[1] + 1:] if len(at) > 1 else []
            return words[len(prefix):]
    return None


def _check_synopsis(sub: str, argv: list[str]) -> None:
    """A synopsis line (``[--opt a|b --opt2 N]``): each option exists; ``a|b|c`` lists are its choices."""
    actions = {o: a for a in _subparsers()[sub]._actions for o in a.option_strings}
    tokens = " ".join(argv).replace("[", " ").replace("]", " ").split()
    for k, tok in enumerate(tokens):
        if tok.startswith("--"):
            assert tok in actions, f"README shows `gpugrad {sub} {tok}`, which the parser does not know"
            nxt = tokens[k + 1] if k + 1 < len(tokens) else ""
            if "|" in nxt and actions[tok].choices is not None:
                shown = [c for c in nxt.split("|") if not c.isupper()]  # N in none|sqrt|N is a placeholder
                for c in shown:
                    assert c in [str(x) for x in actions[tok].choices] or tok == "--checkpoint", (tok, c)


def test_bash_gpugrad_commands_parse():
    seen = set()
    for block in BASH_BLOCKS:
        for cmd in _commands(block):
            argv = _gpugrad_argv(cmd)
            if argv is None:
                continue
            if not argv:  # `docker run ... gpugrad`: the image's default command
                continue
            sub = argv[0]
            assert sub in _subparsers(), f"README runs unknown sub-command {sub!r}: {cmd}"
            seen.add(sub)
            if "[" in cmd or "|" in cmd:
                _check_synopsis(sub, argv[1:])
            else:
                cli.build_parser().parse_args(argv)  # raises CLIError on anything it does not accept
    assert {"train", "bench", "info", "diagnose", "graph"} <= seen


def test_every_subcommand_option_is_documented():
    for name, parser in _subparsers().items():
        for a in parser._actions:
            if a.option_strings and a.dest != "help":
                assert a.help, f"gpugrad {name} {a.option_strings[0]} has no help text"


def test_extras_the_readme_names_exist():
    pyproject = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+)\s*=", section, re.M))
    named = {e for group in re.findall(r'\.\[([\w,-]+)\]', DOCS) for e in group.split(",")}
    assert named and named <= extras, f"README names extras {sorted(named - extras)} that pyproject.toml lacks"
    for hint in INSTALL_HINTS.values():
        for group in re.findall(r'\.\[([\w,-]+)\]', hint):
            assert set(group.split(",")) <= extras, hint


def test_install_hints_are_the_readmes_and_info_prints_them(monkeypatch):
    for pkg, hint in INSTALL_HINTS.items():
        assert hint in README, f"README does not quote the install hint of {pkg}: {hint}"
    from gpugrad.cli import info
    monkeypatch.setattr(info, "versions", lambda: {"gpugrad": "0", "python": "3", "mpi4py": None,
                                                   **{k: None for k in INSTALL_HINTS}})
    text = info.info_text()
    for pkg in ("cupy", "torch", "mnist1d", "safetensors", "nvmath"):
        assert f"not installed: {INSTALL_HINTS[pkg]}" in text
    assert f"mpi4py        not installed: {INSTALL_HINTS['mpi']}" in text


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def test_install_hints_work_from_a_wheel():
    """A hint names packages (``pip install "cupy-cuda12x[ctk]>=13.4"``), never a checkout's extra
    (``pip install ".[cuda12]"`` fails outside one), each as the matching extra of pyproject.toml requires it."""
    extras = _pyproject()["project"]["optional-dependencies"]
    required = {r.replace(" ", "") for reqs in extras.values() for r in reqs}
    names = {_name(r) for r in required}
    for key, hint in INSTALL_HINTS.items():
        assert ".[" not in hint and "-e " not in hint, f"{key}: {hint} works only in a checkout"
        commands = [re.split(r" for | \(|,| then | or ", c)[0] for c in hint.split("pip install ")[1:]]
        assert commands, f"{key}: {hint} has no pip install"
        for command in commands:
            for quoted, bare in re.findall(r'"([^"]+)"|(\S+)', command):
                req = quoted or bare
                if req.startswith("nvidia-nccl-"):  # NCCL's wheels: no extra of ours (the nccl backend)
                    continue
                assert _name(req) in names, f"{key}: {req} is in no extra of pyproject.toml"
                if re.search(r"[=<>]", req):
                    assert req in required, f"{key}: {req} differs from the extra's requirement"


def test_a_plain_install_needs_numpy_and_numba_only():
    assert "curves.png" in README and "grad_norms.png" in README  # the quick start's plots: drawn with NumPy
    deps = _pyproject()["project"]["dependencies"]
    assert sorted(_name(d) for d in deps) == ["numba", "numpy"], deps
