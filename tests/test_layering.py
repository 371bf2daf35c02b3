"""The layering rule of docs/ARCHITECTURE.md, checked on the source: each layer imports (at module top
level) only its own layer and the layers below, gpugrad/kernels/ imports nothing else of gpugrad,
gpugrad.nn never reaches gpugrad/experimental/, and there is no import cycle, counting every import:
inside functions too (a late binding that closes a cycle is still a cycle) and the package
``__init__`` that importing ``a.b.c`` runs (``a.b``'s). Imports under ``if TYPE_CHECKING:`` never run
and are not counted."""
from __future__ import annotations

import ast
import glob
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom to top; a module belongs to the first layer with a matching prefix. The root package
# ``gpugrad`` (the public re-exports) sits above everything and is not importable from below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("kernels", ("gpugrad.kernels",)),
    ("foundation", ("gpugrad._dtype", "gpugrad._device", "gpugrad._errors", "gpugrad._mode", "gpugrad._threads",
                    "gpugrad.install_hints")),
    ("backends", ("gpugrad.backends",)),
    ("autograd", ("gpugrad.autograd", "gpugrad.creation", "gpugrad.random")),
    ("ops", ("gpugrad.ops",)),
    ("tensor", ("gpugrad.tensor",)),
    ("library", ("gpugrad.nn", "gpugrad.optim", "gpugrad.io", "gpugrad.checkpoint", "gpugrad.memory",
                 "gpugrad.amp", "gpugrad.viz", "gpugrad.plot", "gpugrad.cuda", "gpugrad.cuda_graphs", "gpugrad.data",
                 "gpugrad.diagnostics", "gpugrad.utils")),
    ("experimental", ("gpugrad.experimental",)),
    ("distributed", ("gpugrad.distributed", "gpugrad.nn.parallel")),
    ("applications", ("gpugrad.training", "gpugrad.benchmarking")),
    ("cli", ("gpugrad.cli", "gpugrad.__main__")),
    ("package", ("gpugrad",)),
]

def _source_files() -> dict[str, tuple[str, bool]]:
    """module name -> (path, is_package) for every .py file under gpugrad/."""
    out = {}
    for dirpath, dirs, files in os.walk(os.path.join(ROOT, "gpugrad")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        parts = os.path.relpath(dirpath, ROOT).split(os.sep)
        for f in files:
            if f.endswith(".py"):
                pkg = f == "__init__.py"
                name = ".".join(parts if pkg else parts + [f[:-3]])
                out[name] = (os.path.join(dirpath, f), pkg)
    return out


MODULES = _source_files()


def _type_checking_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) with no else: its imports never run."""
    return (isinstance(node, ast.If) and not node.orelse
            and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"))


def _imports(name: str, deep: bool = False) -> set[str]:
    """gpugrad modules imported by ``name``: at module top level (also under top-level if/try), or with
    ``deep`` anywhere in the file (function-level late bindings included); never those under
    ``if TYPE_CHECKING:``."""
    path, is_pkg = MODULES[name]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    nodes, stack = [], list(tree.body)
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            nodes.append(node)
        elif deep or isinstance(node, (ast.If, ast.Try, ast.ExceptHandler)):
            stack.extend(ast.iter_child_nodes(node))
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "gpugrad")
            continue
        if node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.split(".")[0] != "gpugrad":
            continue
        for a in node.names:  # `from . import sub` imports the submodule gpugrad.sub
            sub = f"{target}.{a.name}"
            found.add(sub if sub in MODULES else target)
    found.discard(name)
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(name) for name in MODULES}


def _deep_graph() -> dict[str, set[str]]:
    """Every import of every module (function-level ones included), each with the package
    ``__init__`` modules it runs: importing ``gpugrad.nn.module`` runs ``gpugrad/nn/__init__.py`` first.
    The root ``gpugrad`` is left out (it sits on top and imports everything to re-export it), and so
    is an edge to one's own ancestor package (``from . import x`` is how a package registers)."""
    graph = {}
    for name in MODULES:
        targets = set()
        for t in _imports(name, deep=True):
            parts = t.split(".")
            targets.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        graph[name] = {t for t in targets if t in MODULES and t != name and t not in _ancestors(name)}
    return graph


def _layer(name: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if name == p or name.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (i, len(p))
    assert best is not None, f"{name} is in no layer of tests/test_layering.py: add it to LAYERS"
    return best[0]


def _ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_every_module_has_a_layer_and_the_graph_is_not_empty():
    assert len(MODULES) > 40 and sum(map(len, GRAPH.values())) > 50
    for name in MODULES:
        _layer(name)


def test_kernels_import_nothing_of_gpugrad():
    bad = {(m, t) for m, ts in GRAPH.items() if m.startswith("gpugrad.kernels")
           for t in ts if not t.startswith("gpugrad.kernels")}
    assert not bad, f"gpugrad/kernels/ must not import the rest of gpugrad: {sorted(bad)}"


def test_nn_never_imports_experimental():
    """gpugrad/experimental/ is opt-in: nothing below it reaches it, not even inside a function."""
    experimental = _layer("gpugrad.experimental")
    bad = sorted(f"{m} imports {t}" for m in MODULES if _layer(m) < experimental
                 for t in _imports(m, deep=True) if t.startswith("gpugrad.experimental"))
    assert not bad, "only code above the library layer may import gpugrad.experimental:\n  " + "\n  ".join(bad)


def test_each_layer_imports_only_layers_below():
    bad = []
    for m, targets in GRAPH.items():
        for t in targets:
            if t in _ancestors(m) and _layer(t) == _layer(m):
                continue
            if _layer(t) > _layer(m):
                bad.append(f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})")
    assert not bad, "layering violations (see docs/ARCHITECTURE.md):\n  " + "\n  ".join(sorted(bad))


def test_backends_never_reach_up_even_inside_functions():
    """Backends and kernels sit below autograd: not even a late (function-level) import of autograd,
    Tensor, ops or the library layers (the autograd mode flags they read live in gpugrad/_mode.py)."""
    backends = _layer("gpugrad.backends")
    bad = sorted(f"{m} imports {t}" for m in MODULES if _layer(m) <= backends
                 for t in _imports(m, deep=True) if _layer(t) > backends)
    assert not bad, "the backends must not depend on the layers above them:\n  " + "\n  ".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (edges to one's own ancestor
    packages excluded: ``from . import x`` in a package's submodule is how packages register)."""
    graph = {m: {t for t in ts if t not in _ancestors(m)} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = [0]

    def visit(v):  # Tarjan, recursive: the graph is ~80 modules deep at most
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """No cycle, counting imports inside functions and the package __init__ modules imports run."""
    cycles = _cycles(_deep_graph())
    assert not cycles, f"import cycles (function-level imports and package __init__s included): {cycles}"


def test_the_checker_sees_a_violation_and_a_cycle(monkeypatch):
    """The checks above can fail: fake an upward import and a cycle."""
    with monkeypatch.context() as m:
        m.setitem(GRAPH, "gpugrad.backends.base", GRAPH["gpugrad.backends.base"] | {"gpugrad.nn.module"})
        with pytest.raises(AssertionError, match="gpugrad.backends.base .backends. imports gpugrad.nn.module"):
            test_each_layer_imports_only_layers_below()
    monkeypatch.setitem(GRAPH, "gpugrad.ops.loss", GRAPH["gpugrad.ops.loss"] | {"gpugrad.ops.shape"})
    monkeypatch.setitem(GRAPH, "gpugrad.ops.shape", GRAPH["gpugrad.ops.shape"] | {"gpugrad.ops.loss"})
    assert ["gpugrad.ops.loss", "gpugrad.ops.shape"] in _cycles(GRAPH)


def _fake_source(monkeypatch, tmp_path, name: str, code: str) -> None:
    """Make the checker read ``code`` (appended to the real file) as module ``name``'s source."""
    path, is_pkg = MODULES[name]
    fake = tmp_path / (name + ".py")
    fake.write_text(open(path, encoding="utf-8").read() + "\n" + code, encoding="utf-8")
    monkeypatch.setitem(MODULES, name, (str(fake), is_pkg))


def test_the_cycle_check_sees_function_level_imports(monkeypatch, tmp_path):
    """An import inside a function closes a cycle (as the late ``from ..tensor import Tensor`` in
    autograd/function.py did); one under ``if TYPE_CHECKING:`` does not count."""
    with monkeypatch.context() as m:
        _fake_source(m, tmp_path, "gpugrad.autograd.function", "if TYPE_CHECKING:\n    from ..tensor import Tensor\n")
        assert not _cycles(_deep_graph())
    _fake_source(monkeypatch, tmp_path, "gpugrad.autograd.function",
                 "def _late():\n    from ..tensor import Tensor\n    return Tensor\n")
    assert "gpugrad.tensor" not in GRAPH["gpugrad.autograd.function"]  # not a top-level import
    assert any({"gpugrad.autograd.function", "gpugrad.tensor"} <= set(c) for c in _cycles(_deep_graph()))
    with pytest.raises(AssertionError, match="function-level imports and package __init__s included"):
        test_no_import_cycles()


def test_the_cycle_check_sees_package_inits(monkeypatch, tmp_path):
    """Importing gpugrad.nn.module runs gpugrad/nn/__init__.py, which imports gpugrad.nn.init: a
    module that nn.init imports may not import gpugrad.nn.module, though nn.module imports neither."""
    _fake_source(monkeypatch, tmp_path, "gpugrad.random", "def _late():\n    import gpugrad.nn.module\n")
    assert not _cycles(_deep_graph())
    _fake_source(monkeypatch, tmp_path, "gpugrad.nn.init", "def _late():\n    from .. import random\n")
    assert "gpugrad.nn.init" not in _imports("gpugrad.nn.module", deep=True)
    assert any({"gpugrad.random", "gpugrad.nn", "gpugrad.nn.init"} <= set(c) for c in _cycles(_deep_graph()))


def _architecture_tree() -> set[str]:
    """Source files named in docs/ARCHITECTURE.md's tree (paths from the indentation)."""
    text = open(os.path.join(ROOT, "docs", "ARCHITECTURE.md"), encoding="utf-8").read()
    block = text.split("## The tree", 1)[1].split("```", 2)[1]
    listed, dirs = set(), []  # dirs: (indent, "path/") from the outermost in
    for line in block.splitlines():
        names = []
        for tok in line.split():
            if not re.fullmatch(r"[\w.]+(\.py|\.cuh?|/)", tok):
                break
            names.append(tok)
        if not names:
            continue
        indent = len(line) - len(line.lstrip())
        while dirs and dirs[-1][0] >= indent:
            dirs.pop()
        prefix = dirs[-1][1] if dirs else ""
        for n in names:
            if n.endswith("/"):
                dirs.append((indent, prefix + n))
            else:
                listed.add(prefix + n)
    return listed


def _cuda_sources() -> list[str]:
    return glob.glob(os.path.join(ROOT, "gpugrad", "**", "*.cu*"), recursive=True)


def test_architecture_tree_lists_every_source_file():
    """docs/ARCHITECTURE.md's tree names every module and CUDA source of gpugrad/, and nothing that is gone."""
    sources = [path for path, _ in MODULES.values()] + _cuda_sources()
    actual = {os.path.relpath(p, ROOT).replace(os.sep, "/") for p in sources}
    listed = {p for p in _architecture_tree() if p.startswith("gpugrad/")}
    assert len(listed) > 60
    assert not actual - listed, f"add to docs/ARCHITECTURE.md's tree: {sorted(actual - listed)}"
    assert not listed - actual, f"gone, remove from docs/ARCHITECTURE.md's tree: {sorted(listed - actual)}"


def _pyproject() -> str:
    return open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()


def test_every_source_folder_is_a_package():
    """setuptools' ``packages.find`` (pyproject.toml: include gpugrad*) takes folders with an __init__.py:
    a folder of modules without one would be left out of the wheel."""
    assert re.search(r'^\[tool\.setuptools\.packages\.find\]\s*include\s*=\s*\["gpugrad\*"\]', _pyproject(), re.M)
    folders = {os.path.dirname(path) for path, _ in MODULES.values()}
    missing = sorted(os.path.relpath(d, ROOT) for d in folders if not os.path.exists(os.path.join(d, "__init__.py")))
    assert not missing, f"add an __init__.py to: {missing}"


def test_package_data_ships_every_cuda_source():
    """Every .cu/.cuh file under gpugrad/ matches a [tool.setuptools.package-data] pattern of its package."""
    import fnmatch
    section = _pyproject().split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    data = {pkg: re.findall(r'"([^"]+)"', pats) for pkg, pats in re.findall(r'^"([\w.]+)"\s*=\s*\[(.*?)\]', section, re.M)}
    unshipped = []
    for path in _cuda_sources():
        pkg = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
        if not any(fnmatch.fnmatch(os.path.basename(path), p) for p in data.get(pkg, [])):
            unshipped.append(os.path.relpath(path, ROOT))
    assert not unshipped, f"add to [tool.setuptools.package-data] in pyproject.toml: {unshipped}"
