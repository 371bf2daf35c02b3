"""Layer normalisation, defined once: the forward and backward formulas of one row (the normalised
trailing dimensions, flattened to ``N`` values), as small expressions. Every implementation is
generated from them:

- :func:`xp_forward` / :func:`xp_backward`: whole-array NumPy or CuPy code (the generic backend, and
  the float64 reference of the tests);
- :func:`cpu_kernels`: Numba ``njit`` passes over the rows and over the columns (the CPU backend);
- :func:`numba_cuda_kernels`: the same row and column bodies as Numba CUDA kernels (one thread per row
  or column; simulator-tested);
- :func:`cuda_source`: CUDA C (one block per row with shared-memory reductions, one thread per
  column for the parameter gradients; float32 and float64), loaded through ``cupy.RawModule``.

Per row: ``mean = sum(x) / N``, ``var = sum((x - mean)^2) / N`` (biased, as PyTorch),
``rstd = 1 / sqrt(var + eps)``, ``y = (x - mean) * rstd * w + b``. Backward with ``xhat = (x - mean) *
rstd`` and ``dxhat = dy * w``: ``dx = rstd * (dxhat - sum(dxhat) / N - xhat * sum(dxhat * xhat) / N)``;
over the rows ``dw = sum(dy * xhat)``, ``db = sum(dy)``. Forward saves ``mean`` and ``rstd`` per row.
"""
from __future__ import annotations

import ast
from typing import Callable, NamedTuple

import numpy as np

from . import _numba

cuda = None  # numba.cuda, bound when the first Numba CUDA kernel is built (the simulator swaps this global)

# ------------------------------------------------------------------------------------------ the definition
# Element inputs (one value per element of a row; w, b per column), constants, then the steps in order.
# A step is a row scalar (``sum(...)`` reduces over the row), an element value, or (``colsum``) a column
# sum over the rows. Only + - * /, sqrt, numbers and the names above appear.
ELEMENT_INPUTS = ("x", "w", "b", "dy")
COLUMN_INPUTS = ("w", "b")
CONSTANTS = ("N", "eps")
FORWARD = (
    ("mean", "sum(x) / N"),
    ("var", "sum((x - mean) * (x - mean)) / N"),
    ("rstd", "1 / sqrt(var + eps)"),
    ("xhat", "(x - mean) * rstd"),
    ("y", "xhat * w + b"),
)
BACKWARD = (  # mean and rstd are the saved row scalars
    ("xhat", "(x - mean) * rstd"),
    ("dxhat", "dy * w"),
    ("a", "sum(dxhat) / N"),
    ("c", "sum(dxhat * xhat) / N"),
    ("dx", "rstd * (dxhat - a - xhat * c)"),
    ("dw", "colsum(dy * xhat)"),
    ("db", "colsum(dy)"),
)
FORWARD_OUTPUTS = ("y", "mean", "rstd")
SAVED_ROW = ("mean", "rstd")


def _tree(expr: str) -> ast.expr:
    return ast.parse(expr, mode="eval").body


def _kinds(steps) -> dict:
    """Each step's kind: 'row' (a row scalar), 'elem' (an element value) or 'col' (a column sum)."""
    kinds = {n: "row" for n in SAVED_ROW}
    kinds.update({n: "elem" for n in ELEMENT_INPUTS})
    for name, expr in steps:
        t = _tree(expr)
        if isinstance(t, ast.Call) and t.func.id == "colsum":
            kinds[name] = "col"
        elif isinstance(t, ast.BinOp) and _has_sum(t) or isinstance(t, ast.Call) and t.func.id == "sum":
            kinds[name] = "row"
        else:
            uses = {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
            kinds[name] = "elem" if any(kinds.get(u) == "elem" for u in uses) else "row"
    return kinds


def _has_sum(t: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and n.func.id == "sum" for n in ast.walk(t))


# ------------------------------------------------------------------------------------------ rendering
class _Render(ast.NodeVisitor):
    """An expression tree as source text: ``names`` maps a name to its text, ``num`` formats a constant,
    ``sqrt`` names the square root; ``sum(...)``/``colsum(...)`` are handled by the callers."""

    def __init__(self, names: Callable[[str], str], num: Callable[[float], str], sqrt: str) -> None:
        self.names, self.num, self.sqrt = names, num, sqrt

    def __call__(self, t: ast.AST) -> str:
        return self.visit(t)

    def visit_BinOp(self, t: ast.BinOp) -> str:
        op = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}[type(t.op)]
        return f"({self.visit(t.left)} {op} {self.visit(t.right)})"

    def visit_UnaryOp(self, t: ast.UnaryOp) -> str:
        if not isinstance(t.op, ast.USub):
            raise ValueError(f"layernorm definition: unsupported operator {ast.dump(t.op)}")
        return f"(-{self.visit(t.operand)})"

    def visit_Name(self, t: ast.Name) -> str:
        return self.names(t.id)

    def visit_Constant(self, t: ast.Constant) -> str:
        return self.num(float(t.value))

    def visit_Call(self, t: ast.Call) -> str:
        if t.func.id != "sqrt":
            raise ValueError(f"layernorm definition: {t.func.id}() is only allowed at the top of a step")
        return f"{self.sqrt}({self.visit(t.args[0])})"

    def generic_visit(self, t: ast.AST) -> str:  # pragma: no cover - the definition uses nothing else
        raise ValueError(f"layernorm definition: unsupported syntax {ast.dump(t)}")


def _inline(steps, kinds: dict) -> dict:
    """Element steps as trees over the element inputs and row scalars (earlier element steps inlined)."""
    out: dict = {}

    class Sub(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.AST:
            return out.get(n.id, n)
    for name, expr in steps:
        if kinds[name] == "elem":
            out[name] = Sub().visit(_tree(expr))
    return out


def _reduced(t: ast.AST) -> ast.expr:
    """The argument of a top-level ``sum(...)`` or ``colsum(...)``."""
    return t.args[0]


# ------------------------------------------------------------------------------------------ NumPy / CuPy
def _xp_eval(xp, steps, env: dict) -> dict:
    """Run the steps on whole arrays: rows are the last axis of ``x``'s 2-D view ``(M, N)``."""
    env = dict(env)

    def names(n: str) -> str:
        return f"env[{n!r}]"
    r = _Render(names, repr, "xp.sqrt")
    for name, expr in steps:
        t = _tree(expr)
        if isinstance(t, ast.Call) and t.func.id == "colsum":
            src = f"({r(_reduced(t))}).sum(axis=0)"
        else:
            src = _sum_to_xp(t, r)
        env[name] = eval(src, {"xp": xp, "env": env})  # noqa: S307 - the definition above, not user input
    return env


def _sum_to_xp(t: ast.AST, r: _Render) -> str:
    class Sums(_Render):
        def visit_Call(self, c: ast.Call) -> str:
            if c.func.id == "sum":
                return f"({self.visit(c.args[0])}).sum(axis=1, keepdims=True)"
            return super().visit_Call(c)
    return Sums(r.names, r.num, r.sqrt)(t)


def xp_forward(xp, x2, w, b, eps: float):
    """``(y, mean, rstd)`` of the rows of ``x2`` ``(M, N)`` in its dtype; ``mean``/``rstd`` are ``(M,)``."""
    dt = x2.dtype.type
    env = _xp_eval(xp, FORWARD, {"x": x2, "w": w, "b": b, "N": dt(x2.shape[1]), "eps": dt(eps)})
    return env["y"], env["mean"][:, 0], env["rstd"][:, 0]


def xp_backward(xp, dy, x2, w, mean, rstd):
    """``(dx, dw, db)`` of the rows of ``x2`` ``(M, N)``."""
    dt = x2.dtype.type
    env = _xp_eval(xp, BACKWARD, {"x": x2, "w": w, "b": None, "dy": dy, "N": dt(x2.shape[1]),
                                  "mean": mean[:, None], "rstd": rstd[:, None]})
    return env["dx"], env["dw"], env["db"]


# ------------------------------------------------------------------------------------------ scalar code
class _Dialect(NamedTuple):
    """How the scalar code of one target spells the pieces of a row or column body."""
    elem: str  # an element input: .format(name=..., row=...)
    col: str  # a per-column input (w, b)
    num: str  # a constant
    sqrt: str
    acc: str  # declare an accumulator: .format(acc=...)
    row_loop: str  # the loop over a row's elements (j)
    reduce: str  # after a row loop: combine the partial sums (C: the block's threads), "" if none
    let: str  # bind a row scalar: .format(name=..., expr=...)
    store: str  # write an element output
    col_loop: str  # the loop over the rows of one column, opening its block
    col_end: str  # closing it ("" in Python)
    saved: str  # read a saved row scalar of row {row}
    row_index: str  # the row variable (of a row body and of the column loop)
    eps: str  # how the row code names eps
    end: str  # statement terminator


_PY = _Dialect(elem="F({name}[i, j])", col="F({name}[j])", num="F({!r})", sqrt="math.sqrt", acc="{acc} = F(0.0)",
               row_loop="for j in range(n):", reduce="", let="{name} = {expr}", store="out_{name}[i, j] = {expr}",
               col_loop="for i in range(m):", col_end="", saved="F({name}_[{row}])", row_index="i", eps="eps_c",
               end="")


def _c_dialect(C: str) -> _Dialect:
    return _Dialect(elem=f"(({C}){{name}}[r * n + j])", col=f"(({C}){{name}}[j])", num=f"(({C}){{!r}})",
                    sqrt="sqrt", acc=f"{C} {{acc}} = 0;", row_loop="for (i64 j = threadIdx.x; j < n; j += blockDim.x)",
                    reduce=f"{{acc}} = block_sum<{C}>({{acc}}, sh);", let=f"const {C} {{name}} = {{expr}};",
                    store="out_{name}[r * n + j] = {expr};", col_loop="for (i64 r = 0; r < m; ++r) {", col_end="}",
                    saved="{name}_[{row}]", row_index="r", eps="eps", end=";")


def _bodies(steps, d: _Dialect, outputs_elem: tuple, saved_in: bool) -> tuple[list, list, list]:
    """The lines of a row body (row scalars through ``sum`` loops, element outputs), of a column body
    (the ``colsum`` steps of one column, one pass over the rows) and of a row's share of the column sums
    (added into them: the cache-friendly order on a CPU), in dialect ``d``. ``saved_in``: the saved row
    scalars (mean, rstd) are read, not computed."""
    kinds = _kinds(steps)
    inl = _inline(steps, kinds)
    sfx = d.end

    def names(n: str) -> str:
        if n in COLUMN_INPUTS:
            return d.col.format(name=n)
        if n in ELEMENT_INPUTS:
            return d.elem.format(name=n)
        return d.eps if n == "eps" else n
    num = d.num.format
    re = _Render(names, num, d.sqrt)
    saved = [d.let.format(name=r, expr=d.saved.format(name=r, row=d.row_index)) for r in SAVED_ROW]
    rows = list(saved) if saved_in else []
    for name, expr in steps:
        t = _tree(expr)
        if kinds[name] == "row" and not (saved_in and name in SAVED_ROW):
            for s_i, c in enumerate([c for c in ast.walk(t) if isinstance(c, ast.Call) and c.func.id == "sum"]):
                acc = f"_{name}{s_i}"
                rows += [d.acc.format(acc=acc), d.row_loop, f"    {acc} += {re(_subst(_reduced(c), inl))}{sfx}"]
                rows += [d.reduce.format(acc=acc)] if d.reduce else []
                c.func.id = "__acc__"
                c.args = [ast.Name(id=acc, ctx=ast.Load())]
            rows.append(d.let.format(name=name, expr=re(_strip_acc(t))))
        elif name in outputs_elem:
            rows += [d.row_loop, "    " + d.store.format(name=name, expr=re(inl[name]))]
    cols = [(name, expr) for name, expr in steps if kinds[name] == "col"]
    colb = [d.acc.format(acc=f"_{name}") for name, _ in cols]
    if cols:  # one pass over the rows of this column; the saved row scalars are read per row
        colb += [d.col_loop] + ["    " + ln for ln in saved]
        colb += [f"    _{name} += {re(_subst(_reduced(_tree(expr)), inl))}{sfx}" for name, expr in cols]
        colb += [d.col_end] if d.col_end else []
        colb += [f"out_{name}[j] = _{name}{sfx}" for name, _ in cols]
    accb = saved + [d.row_loop] + [f"    out_{name}[j] += {re(_subst(_reduced(_tree(expr)), inl))}{sfx}"
                                   for name, expr in cols] if cols else []
    return rows, colb, accb


def _subst(t: ast.AST, inl: dict) -> ast.AST:
    class Sub(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.AST:
            return inl.get(n.id, n)
    return Sub().visit(t)


def _strip_acc(t: ast.AST) -> ast.AST:
    class Strip(ast.NodeTransformer):
        def visit_Call(self, c: ast.Call) -> ast.AST:
            if c.func.id == "__acc__":
                return c.args[0]
            return self.generic_visit(c)
    return Strip().visit(t)


def _python_kernels(F) -> str:
    """The Python source of the forward row body, the backward row body and the column body."""
    f_row, _, _ = _bodies(FORWARD, _PY, ("y",), False)
    b_row, b_col, b_acc = _bodies(BACKWARD, _PY, ("dx",), True)
    f_row += [f"out_{n}[i] = {n}" for n in SAVED_ROW]

    def body(lines: list) -> str:
        return "\n".join("    " + ln for ln in lines)
    return (f"def fwd_row(i, x, w, b, n, eps, out_y, out_mean, out_rstd):\n    N = F(n)\n    eps_c = F(eps)\n"
            f"{body(f_row)}\n\n\ndef bwd_row(i, x, w, dy, mean_, rstd_, n, out_dx):\n    N = F(n)\n{body(b_row)}\n\n\n"
            f"def bwd_col(j, x, dy, mean_, rstd_, m, out_dw, out_db):\n{body(b_col)}\n\n\n"
            f"def bwd_acc(i, x, dy, mean_, rstd_, n, out_dw, out_db):\n{body(b_acc)}\n")


def _build(F, wrap) -> dict:
    ns: dict = {"F": F, "math": __import__("math")}
    exec(compile(_python_kernels(F), "<layernorm:scalar>", "exec"), ns)  # noqa: S102 - generated above
    return {k: wrap(ns[k]) for k in ("fwd_row", "bwd_row", "bwd_col", "bwd_acc")}


def python_source() -> str:
    """The generated scalar source (for reading and for the tests)."""
    return _python_kernels(np.float64)


def cpu_kernels(dtype):
    """Numba ``njit`` passes for ``dtype`` (float32 or float64): ``forward(x, w, b, eps, y, mean, rstd)``,
    ``backward_dx(x, w, dy, mean, rstd, dx)`` and ``backward_params(x, dy, mean, rstd, dw, db)``."""
    dt = np.dtype(dtype)

    def build():
        import numba
        F = dt.type
        body = _build(F, numba.njit(inline="always", cache=False))
        fwd_row, bwd_row, bwd_acc = body["fwd_row"], body["bwd_row"], body["bwd_acc"]

        @numba.njit(parallel=False, cache=False)
        def forward(x, w, b, eps, y, mean, rstd):
            for i in range(x.shape[0]):
                fwd_row(i, x, w, b, x.shape[1], eps, y, mean, rstd)

        @numba.njit(cache=False)
        def backward_dx(x, w, dy, mean, rstd, dx):
            for i in range(x.shape[0]):
                bwd_row(i, x, w, dy, mean, rstd, x.shape[1], dx)

        @numba.njit(cache=False)
        def backward_params(x, dy, mean, rstd, dw, db):
            dw[:] = 0
            db[:] = 0
            for i in range(x.shape[0]):  # row by row (contiguous reads), adding into the column sums
                bwd_acc(i, x, dy, mean, rstd, x.shape[1], dw, db)
        return forward, backward_dx, backward_params
    return _numba.cached(("layernorm_cpu", dt.str), build)


def numba_cuda_kernels(dtype):
    """Numba CUDA kernels for ``dtype``: one thread per row (forward, dx) or per column (dw, db), grid-
    stride loops; the same bodies as the CPU passes."""
    dt = np.dtype(dtype)

    def build():
        jit = _numba.nb_cuda(globals()).jit  # binds the module global ``cuda`` the kernels read
        F = dt.type
        body = _build(F, jit(device=True, inline=True))
        fwd_row, bwd_row, bwd_col = body["fwd_row"], body["bwd_row"], body["bwd_col"]

        @jit
        def forward(x, w, b, eps, y, mean, rstd):
            for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
                fwd_row(i, x, w, b, x.shape[1], eps, y, mean, rstd)

        @jit
        def backward_dx(x, w, dy, mean, rstd, dx):
            for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
                bwd_row(i, x, w, dy, mean, rstd, x.shape[1], dx)

        @jit
        def backward_params(x, dy, mean, rstd, dw, db):
            for j in range(cuda.grid(1), x.shape[1], cuda.gridsize(1)):
                bwd_col(j, x, dy, mean, rstd, x.shape[0], dw, db)
        return forward, backward_dx, backward_params
    return _numba.cached(("layernorm_numba_cuda", dt.str), build)


# ------------------------------------------------------------------------------------------ CUDA C
_C_TYPES = {"f32": "float", "f64": "double"}
_BLOCK = 256  # threads per row block (a power of two: the shared-memory tree reduction halves it)


def cuda_source() -> str:
    """CUDA C for float32 and float64 (entry points ``layer_norm_fwd_<s>``, ``layer_norm_bwd_dx_<s>``,
    ``layer_norm_bwd_params_<s>``): one block of 256 threads per row (grid-stride over rows), each
    ``sum(...)`` a shared-memory tree reduction; one thread per column for ``dw``/``db``."""
    parts = ["// generated by gpugrad/kernels/layernorm.py from its definition; do not edit",
             "typedef long long i64;",
             "template <typename C> __device__ C block_sum(C v, C* sh) {",
             "    sh[threadIdx.x] = v;",
             "    __syncthreads();",
             f"    for (int s = {_BLOCK // 2}; s > 0; s >>= 1) {{",
             "        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];",
             "        __syncthreads();",
             "    }",
             "    C r = sh[0];",
             "    __syncthreads();",
             "    return r;",
             "}"]
    for suffix, C in _C_TYPES.items():
        parts.append(_c_kernels(suffix, C))
    return "\n".join(parts) + "\n"


def _c_kernels(suffix: str, C: str) -> str:
    d = _c_dialect(C)
    fwd, _, _ = _bodies(FORWARD, d, ("y",), False)
    bwd, col, _ = _bodies(BACKWARD, d, ("dx",), True)
    shared = f"    __shared__ {C} sh[{_BLOCK}];"
    n_decl = f"        const {C} N = ({C})n;"

    def body(lines: list, indent: str = "        ") -> list:
        return [indent + ln for ln in lines]
    return "\n".join([
        f'extern "C" __global__ void layer_norm_fwd_{suffix}(const {C}* x, const {C}* w, const {C}* b, {C}* out_y, '
        f"{C}* out_mean, {C}* out_rstd, i64 m, i64 n, {C} eps) {{", shared,
        "    for (i64 r = blockIdx.x; r < m; r += gridDim.x) {", n_decl, *body(fwd),
        "        if (threadIdx.x == 0) { out_mean[r] = mean; out_rstd[r] = rstd; }",
        "    }", "}",
        f'extern "C" __global__ void layer_norm_bwd_dx_{suffix}(const {C}* x, const {C}* w, const {C}* dy, '
        f"const {C}* mean_, const {C}* rstd_, {C}* out_dx, i64 m, i64 n) {{", shared,
        "    for (i64 r = blockIdx.x; r < m; r += gridDim.x) {", n_decl, *body(bwd),
        "    }", "}",
        f'extern "C" __global__ void layer_norm_bwd_params_{suffix}(const {C}* x, const {C}* dy, const {C}* mean_, '
        f"const {C}* rstd_, {C}* out_dw, {C}* out_db, i64 m, i64 n) {{",
        "    for (i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (i64)gridDim.x * blockDim.x) {",
        *body(col), "    }", "}"])


_modules: dict = {}
_functions: dict = {}


def c_function(name: str, dtype):
    """The compiled CUDA C entry point ``<name>_<f32|f64>`` on CuPy's current device (compiled once)."""
    import cupy
    suffix = _numba.storage_suffix(dtype, "layer_norm's CUDA C kernels")
    if suffix not in _C_TYPES:
        raise TypeError(f"layer_norm's CUDA C kernels support float32 and float64, got {np.dtype(dtype)}")
    dev = cupy.cuda.runtime.getDevice()
    f = _functions.get((name, suffix, dev))
    if f is None:
        mod = _modules.get(dev)
        if mod is None:
            mod = _modules[dev] = cupy.RawModule(code=cuda_source(), options=("--std=c++14",))
        f = _functions[(name, suffix, dev)] = mod.get_function(f"{name}_{suffix}")
    return f


def launch_forward(x2, w, b, eps: float, y, mean, rstd, *, max_blocks: int | None = None) -> None:
    """One block per row (CuPy arrays, contiguous, CuPy's current stream)."""
    m, n = x2.shape
    C = _numba.compute_dtype(x2.dtype).type
    c_function("layer_norm_fwd", x2.dtype)((_numba.blocks_for(m, 1, max_blocks),), (_BLOCK,),
                                            (x2, w, b, y, mean, rstd, np.int64(m), np.int64(n), C(eps)))


def launch_backward(dy, x2, w, mean, rstd, dx, dw, db, *, max_blocks: int | None = None) -> None:
    """``dx`` (one block per row), then ``dw``/``db`` (one thread per column); ``dx`` or ``dw`` may be
    None (not needed)."""
    m, n = x2.shape
    if dx is not None:
        c_function("layer_norm_bwd_dx", x2.dtype)((_numba.blocks_for(m, 1, max_blocks),), (_BLOCK,),
                                                   (x2, w, dy, mean, rstd, dx, np.int64(m), np.int64(n)))
    if dw is not None:
        c_function("layer_norm_bwd_params", x2.dtype)((_numba.blocks_for(n, _BLOCK, max_blocks),), (_BLOCK,),
                                                       (x2, dy, mean, rstd, dw, db, np.int64(m), np.int64(n)))
