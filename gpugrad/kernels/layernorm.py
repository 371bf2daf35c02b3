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
from typing import Callable

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
def _scalar_python(steps, outputs_elem: tuple, outputs_row: tuple, outputs_col: tuple) -> tuple[str, str]:
    """Python source of a row body and a column body for Numba (``njit`` or ``cuda.jit``): the row body
    ``row(i, x, w, b, dy, N, eps, F, <row scalars in>, <element outputs>, <row outputs>)`` computes row
    ``i``; the column body ``col(j, ...)`` the column sums of column ``j`` over all rows."""
    kinds = _kinds(steps)
    inl = _inline(steps, kinds)

    def elem_names(n: str) -> str:
        if n in COLUMN_INPUTS:
            return f"F({n}[j])"
        if n in ELEMENT_INPUTS:
            return f"F({n}[i, j])"
        return row_names(n)

    def row_names(n: str) -> str:  # eps arrives as a Python float: its compute-type copy
        return "eps_c" if n == "eps" else n
    num = "F({!r})".format
    re = _Render(elem_names, num, "math.sqrt")
    lines = []
    for name, expr in steps:
        k = kinds[name]
        t = _tree(expr)
        if k == "row":
            sums = [c for c in ast.walk(t) if isinstance(c, ast.Call) and c.func.id == "sum"]
            for s_i, c in enumerate(sums):
                acc = f"_{name}{s_i}"
                lines += [f"{acc} = F(0.0)", "for j in range(n):", f"    {acc} += {re(_subst(_reduced(c), inl))}"]
                c.func.id = "__acc__"
                c.args = [ast.Name(id=acc, ctx=ast.Load())]
            lines.append(f"{name} = {_Render(row_names, num, 'math.sqrt').visit(_strip_acc(t))}")
        elif name in outputs_elem:
            lines += ["for j in range(n):", f"    out_{name}[i, j] = {re(inl[name])}"]
    lines += [f"out_{n}[i] = {n}" for n in outputs_row]
    cols = [(name, expr) for name, expr in steps if kinds[name] == "col"]
    col_lines = [f"_{name} = F(0.0)" for name, _ in cols]
    if cols:  # one pass over the rows; the saved row scalars are read per row
        col_lines += ["for i in range(m):"] + [f"    {r} = F({r}_[i])" for r in SAVED_ROW]
        col_lines += [f"    _{name} += {re(_subst(_reduced(_tree(expr)), inl))}" for name, expr in cols]
        col_lines += [f"out_{name}[j] = _{name}" for name in outputs_col]
    indent = "\n".join
    return indent("    " + ln for ln in lines) or "    pass", indent("    " + ln for ln in col_lines) or "    pass"


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
    f_row, _ = _scalar_python(FORWARD, ("y",), ("mean", "rstd"), ())
    b_row, b_col = _scalar_python(BACKWARD, ("dx",), (), ("dw", "db"))
    # mean and rstd of the backward are the saved ones
    return (f"def fwd_row(i, x, w, b, n, eps, out_y, out_mean, out_rstd):\n    N = F(n)\n    eps_c = F(eps)\n{f_row}\n\n\n"
            f"def bwd_row(i, x, w, dy, mean_, rstd_, n, out_dx):\n    N = F(n)\n    mean = F(mean_[i])\n"
            f"    rstd = F(rstd_[i])\n{b_row}\n\n\n"
            f"def bwd_col(j, x, dy, mean_, rstd_, m, out_dw, out_db):\n{b_col}\n")


def _build(F, wrap) -> dict:
    ns: dict = {"F": F, "math": __import__("math")}
    exec(compile(_python_kernels(F), "<layernorm:scalar>", "exec"), ns)  # noqa: S102 - generated above
    return {k: wrap(ns[k]) for k in ("fwd_row", "bwd_row", "bwd_col")}


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
        fwd_row, bwd_row, bwd_col = body["fwd_row"], body["bwd_row"], body["bwd_col"]

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
            for j in range(x.shape[1]):
                bwd_col(j, x, dy, mean, rstd, x.shape[0], dw, db)
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


def _c_row_body(steps, outputs_elem: tuple, C: str, read_saved: bool) -> list:
    kinds = _kinds(steps)
    inl = _inline(steps, kinds)

    def elem_names(n: str) -> str:
        if n in COLUMN_INPUTS:
            return f"(({C}){n}[j])"
        if n in ELEMENT_INPUTS:
            return f"(({C}){n}[r * n + j])"
        return n
    num = f"(({C}){{!r}})".format
    re = _Render(elem_names, num, "sqrt")
    lines = [f"    const {C} N = ({C})n;"]
    if read_saved:
        lines += [f"    const {C} mean = mean_[r];", f"    const {C} rstd = rstd_[r];"]
    for name, expr in steps:
        k = kinds[name]
        t = _tree(expr)
        if k == "row" and not (read_saved and name in SAVED_ROW):
            sums = [c for c in ast.walk(t) if isinstance(c, ast.Call) and c.func.id == "sum"]
            for s_i, c in enumerate(sums):
                acc = f"_{name}{s_i}"
                lines += [f"    {C} {acc} = 0;", "    for (i64 j = threadIdx.x; j < n; j += blockDim.x)",
                          f"        {acc} += {re(_subst(_reduced(c), inl))};",
                          f"    {acc} = block_sum<{C}>({acc}, sh);"]
                c.func.id = "__acc__"
                c.args = [ast.Name(id=acc, ctx=ast.Load())]
            lines.append(f"    const {C} {name} = {_Render(lambda n: n, num, 'sqrt').visit(_strip_acc(t))};")
        elif name in outputs_elem:
            lines += ["    for (i64 j = threadIdx.x; j < n; j += blockDim.x)",
                      f"        out_{name}[r * n + j] = {re(inl[name])};"]
    return lines


def _c_kernels(suffix: str, C: str) -> str:
    fwd = _c_row_body(FORWARD, ("y",), C, False)
    bwd = _c_row_body(BACKWARD, ("dx",), C, True)
    kinds = _kinds(BACKWARD)
    inl = _inline(BACKWARD, kinds)

    def col_names(n: str) -> str:
        return f"(({C}){n}[r * n + j])" if n in ELEMENT_INPUTS else n
    re = _Render(col_names, f"(({C}){{!r}})".format, "sqrt")
    col = []
    for name, expr in BACKWARD:
        if kinds[name] == "col":
            col += [f"    {C} _{name} = 0;"]
    col += ["    for (i64 r = 0; r < m; ++r) {", f"        const {C} mean = mean_[r];", f"        const {C} rstd = rstd_[r];"]
    for name, expr in BACKWARD:
        if kinds[name] == "col":
            col.append(f"        _{name} += {re(_subst(_reduced(_tree(expr)), inl))};")
    col.append("    }")
    for name, _ in BACKWARD:
        if kinds[name] == "col":
            col.append(f"    out_{name}[j] = _{name};")
    shared = f"    __shared__ {C} sh[{_BLOCK}];"
    return "\n".join([
        f'extern "C" __global__ void layer_norm_fwd_{suffix}(const {C}* x, const {C}* w, const {C}* b, {C}* out_y, '
        f"{C}* out_mean, {C}* out_rstd, i64 m, i64 n, {C} eps) {{", shared,
        "    for (i64 r = blockIdx.x; r < m; r += gridDim.x) {",
        *("    " + ln for ln in fwd),
        "        if (threadIdx.x == 0) { out_mean[r] = mean; out_rstd[r] = rstd; }",
        "    }", "}",
        f'extern "C" __global__ void layer_norm_bwd_dx_{suffix}(const {C}* x, const {C}* w, const {C}* dy, '
        f"const {C}* mean_, const {C}* rstd_, {C}* out_dx, i64 m, i64 n) {{", shared,
        "    for (i64 r = blockIdx.x; r < m; r += gridDim.x) {",
        *("    " + ln for ln in bwd),
        "    }", "}",
        f'extern "C" __global__ void layer_norm_bwd_params_{suffix}(const {C}* x, const {C}* dy, const {C}* mean_, '
        f"const {C}* rstd_, {C}* out_dw, {C}* out_db, i64 m, i64 n) {{",
        "    for (i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (i64)gridDim.x * blockDim.x) {",
        *("    " + ln for ln in col),
        "    }", "}"])


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
