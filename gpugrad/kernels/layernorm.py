"""Layer normalisation, defined once: the forward and backward steps of one row (the normalised trailing
dimensions, flattened to ``N`` values), as expressions of the one expression language
(``gpugrad/kernels/expr.py``). Every implementation is generated from them:

- :func:`xp_forward` / :func:`xp_backward`: whole-array NumPy or CuPy code (the generic backend, and
  the float64 reference of the tests);
- :func:`cpu_kernels`: Numba ``njit`` passes over the rows (the CPU backend);
- :func:`numba_cuda_kernels`: Numba CUDA kernels (one thread per row, or per column for the parameter
  gradients; simulator-tested);
- :func:`cuda_source`: CUDA C (one block per row with shared-memory reductions, one thread per
  column for the parameter gradients; float32 and float64), loaded through ``cupy.RawModule``.

Per row: ``mean = sum(x) / N``, ``var = sum((x - mean)^2) / N`` (biased, as PyTorch),
``rstd = 1 / sqrt(var + eps)``, ``y = (x - mean) * rstd * w + b``. Backward with ``xhat = (x - mean) *
rstd`` and ``dxhat = dy * w``: ``dx = rstd * (dxhat - sum(dxhat) / N - xhat * sum(dxhat * xhat) / N)``;
over the rows ``dw = sum(dy * xhat)``, ``db = sum(dy)``. Forward saves ``mean`` and ``rstd`` per row.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _numba
from . import expr as E

cuda = None  # numba.cuda, bound when the first Numba CUDA kernel is built (the simulator swaps this global)


# ------------------------------------------------------------------------------------------ the definition
class Step(NamedTuple):
    """One step of a row: ``kind`` 'row' (a row scalar: ``total`` of ``acc``, the row sum of ``expr``;
    without ``total``, ``expr`` itself over row scalars), 'elem' (a value per element, an output) or 'col'
    (a column sum of ``expr`` over the rows, an output)."""
    name: str
    kind: str
    expr: E.Expr
    total: E.Expr | None = None


x, w, b, dy = (E.var(n) for n in ("x", "w", "b", "dy"))  # element inputs (w, b: one per column)
N, eps, acc = E.var("N"), E.var("eps"), E.var("acc")
mean, var, rstd, a, c = (E.var(n) for n in ("mean", "var", "rstd", "a", "c"))
xhat = (x - mean) * rstd
dxhat = dy * w
FORWARD = (
    Step("mean", "row", x, acc / N),
    Step("var", "row", (x - mean) * (x - mean), acc / N),
    Step("rstd", "row", 1.0 / E.sqrt(var + eps)),
    Step("y", "elem", xhat * w + b),
)
BACKWARD = (  # mean and rstd: the saved row scalars
    Step("a", "row", dxhat, acc / N),
    Step("c", "row", dxhat * xhat, acc / N),
    Step("dx", "elem", rstd * (dxhat - a - xhat * c)),
    Step("dw", "col", dy * xhat),
    Step("db", "col", dy),
)
COLUMN_INPUTS = ("w", "b")
SAVED_ROW = ("mean", "rstd")


# ------------------------------------------------------------------------------------------ NumPy / CuPy
def _xp_run(xp, steps, env: dict) -> dict:
    """Run the steps on whole arrays: the rows of ``x``'s 2-D view ``(M, N)``, row scalars as ``(M, 1)``."""
    env = dict(env)
    ns = {n: getattr(xp, "sqrt" if n == "sqrt" else n) for n in ("sqrt", "exp", "log")}
    style = E.PyStyle(var=lambda n: f"env[{n!r}]")
    for st in steps:
        value = eval(E.render(st.expr, style), {**ns, "env": env})  # noqa: S307 - the definition above
        if st.kind == "row" and st.total is not None:
            env["acc"] = value.sum(axis=1, keepdims=True)
            value = eval(E.render(st.total, style), {**ns, "env": env})  # noqa: S307
        elif st.kind == "col":
            value = value.sum(axis=0)
        env[st.name] = value
    return env


def xp_forward(xp, x2, w, b, eps: float):
    """``(y, mean, rstd)`` of the rows of ``x2`` ``(M, N)`` in its dtype; ``mean``/``rstd`` are ``(M,)``."""
    dt = x2.dtype.type
    env = _xp_run(xp, FORWARD, {"x": x2, "w": w, "b": b, "N": dt(x2.shape[1]), "eps": dt(eps)})
    return env["y"], env["mean"][:, 0], env["rstd"][:, 0]


def xp_backward(xp, dy, x2, w, mean, rstd):
    """``(dx, dw, db)`` of the rows of ``x2`` ``(M, N)``."""
    dt = x2.dtype.type
    env = _xp_run(xp, BACKWARD, {"x": x2, "w": w, "dy": dy, "N": dt(x2.shape[1]), "mean": mean[:, None],
                                 "rstd": rstd[:, None]})
    return env["dx"], env["dw"], env["db"]


# ------------------------------------------------------------------------------------------ scalar code
class _Dialect(NamedTuple):
    """How the scalar code of one target spells the pieces of a row or column body."""
    style: type  # expr.PyStyle or expr.CStyle
    elem: str  # an element input: .format(name=...)
    col: str  # a per-column input (w, b)
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


_PY = _Dialect(style=E.PyStyle, elem="F({name}[i, j])", col="F({name}[j])", acc="{acc} = F(0.0)",
               row_loop="for j in range(n):", reduce="", let="{name} = {expr}", store="out_{name}[i, j] = {expr}",
               col_loop="for i in range(m):", col_end="", saved="F({name}_[{row}])", row_index="i", eps="eps_c",
               end="")
_C = _Dialect(style=E.CStyle, elem="C({name}[r * n + j])", col="C({name}[j])", acc="C {acc} = C(0);",
              row_loop="for (i64 j = threadIdx.x; j < n; j += blockDim.x)", reduce="{acc} = block_sum<C>({acc}, sh);",
              let="const C {name} = {expr};", store="out_{name}[r * n + j] = {expr};",
              col_loop="for (i64 r = 0; r < m; ++r) {", col_end="}", saved="{name}_[{row}]", row_index="r",
              eps="eps", end=";")


class _Names:
    """A style of ``d`` whose variables are spelled as the dialect reads them (``acc``: the step's own)."""

    def __init__(self, d: _Dialect, acc_name: str = "acc") -> None:
        self.d, self.acc_name = d, acc_name
        self.base = d.style() if d.style is E.CStyle else d.style(const="F({!r})".format)

    def const(self, v: float) -> str:
        return self.base.const(v)

    def call(self, op: str, args: list) -> str:
        return self.base.call(op, args)

    def var(self, n: str) -> str:
        d = self.d
        if n in COLUMN_INPUTS:
            return d.col.format(name=n)
        if n in ("x", "dy"):
            return d.elem.format(name=n)
        return {"eps": d.eps, "acc": self.acc_name}.get(n, n)


def _bodies(steps, d: _Dialect, saved_in: bool) -> tuple[list, list, list]:
    """The lines of a row body (row scalars through ``sum`` loops, element outputs), of a column body
    (the 'col' steps of one column, one pass over the rows) and of a row's share of the column sums
    (added into them: the cache-friendly order on a CPU), in dialect ``d``. ``saved_in``: the saved row
    scalars (mean, rstd) are read, not computed."""
    sfx = d.end
    style = _Names(d)
    saved = [d.let.format(name=r, expr=d.saved.format(name=r, row=d.row_index)) for r in SAVED_ROW]
    rows = list(saved) if saved_in else []
    for st in steps:
        if st.kind == "row" and not (saved_in and st.name in SAVED_ROW):
            if st.total is None:
                rows.append(d.let.format(name=st.name, expr=E.render(st.expr, style)))
                continue
            acc_name = f"_{st.name}"
            rows += [d.acc.format(acc=acc_name), d.row_loop, f"    {acc_name} += {E.render(st.expr, style)}{sfx}"]
            rows += [d.reduce.format(acc=acc_name)] if d.reduce else []
            rows.append(d.let.format(name=st.name, expr=E.render(st.total, _Names(d, acc_name))))
        elif st.kind == "elem":
            rows += [d.row_loop, "    " + d.store.format(name=st.name, expr=E.render(st.expr, style))]
    cols = [st for st in steps if st.kind == "col"]
    colb = [d.acc.format(acc=f"_{st.name}") for st in cols]
    if cols:  # one pass over the rows of this column; the saved row scalars are read per row
        colb += [d.col_loop] + ["    " + ln for ln in saved]
        colb += [f"    _{st.name} += {E.render(st.expr, style)}{sfx}" for st in cols]
        colb += [d.col_end] if d.col_end else []
        colb += [f"out_{st.name}[j] = _{st.name}{sfx}" for st in cols]
    accb = saved + [d.row_loop] + [f"    out_{st.name}[j] += {E.render(st.expr, style)}{sfx}"
                                   for st in cols] if cols else []
    return rows, colb, accb


def _python_kernels() -> str:
    """The Python source of the forward row body, the backward row body, the column body and a row's
    share of the column sums."""
    f_row, _, _ = _bodies(FORWARD, _PY, False)
    b_row, b_col, b_acc = _bodies(BACKWARD, _PY, True)
    f_row += [f"out_{n}[i] = {n}" for n in SAVED_ROW]

    def body(lines: list) -> str:
        return "\n".join("    " + ln for ln in lines)
    return (f"def fwd_row(i, x, w, b, n, eps, out_y, out_mean, out_rstd):\n    N = F(n)\n    eps_c = F(eps)\n"
            f"{body(f_row)}\n\n\ndef bwd_row(i, x, w, dy, mean_, rstd_, n, out_dx):\n    N = F(n)\n{body(b_row)}\n\n\n"
            f"def bwd_col(j, x, dy, mean_, rstd_, m, out_dw, out_db):\n{body(b_col)}\n\n\n"
            f"def bwd_acc(i, x, dy, mean_, rstd_, n, out_dw, out_db):\n{body(b_acc)}\n")


def _build(F, wrap) -> dict:
    ns: dict = {"F": F, **E.py_namespace()}
    exec(compile(_python_kernels(), "<layernorm:scalar>", "exec"), ns)  # noqa: S102 - generated above
    return {k: wrap(ns[k]) for k in ("fwd_row", "bwd_row", "bwd_col", "bwd_acc")}


def python_source() -> str:
    """The generated scalar source (for reading and for the tests)."""
    return _python_kernels()


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
    row sum a shared-memory tree reduction; one thread per column for ``dw``/``db``. Templates over the
    compute type ``C`` with the expression language's ``gg_*`` functions (``expr.c_prelude``)."""
    fwd, _, _ = _bodies(FORWARD, _C, False)
    bwd, col, _ = _bodies(BACKWARD, _C, True)

    def body(lines: list) -> list:
        return ["        " + ln for ln in lines]
    n_decl = "        const C N = C(n);"
    parts = ["// generated by gpugrad/kernels/layernorm.py from its definition; do not edit", E.c_prelude(),
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
             "}",
             "template <typename C> __device__ void fwd_impl(const C* x, const C* w, const C* b, C* out_y, "
             "C* out_mean, C* out_rstd, i64 m, i64 n, C eps, C* sh) {",
             "    for (i64 r = blockIdx.x; r < m; r += gridDim.x) {", n_decl, *body(fwd),
             "        if (threadIdx.x == 0) { out_mean[r] = mean; out_rstd[r] = rstd; }",
             "    }", "}",
             "template <typename C> __device__ void bwd_dx_impl(const C* x, const C* w, const C* dy, const C* mean_, "
             "const C* rstd_, C* out_dx, i64 m, i64 n, C* sh) {",
             "    for (i64 r = blockIdx.x; r < m; r += gridDim.x) {", n_decl, *body(bwd), "    }", "}",
             "template <typename C> __device__ void bwd_params_impl(const C* x, const C* dy, const C* mean_, "
             "const C* rstd_, C* out_dw, C* out_db, i64 m, i64 n) {",
             "    for (i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (i64)gridDim.x * blockDim.x) {",
             *body(col), "    }", "}"]
    for suffix, C in _C_TYPES.items():
        parts += [
            f'extern "C" __global__ void layer_norm_fwd_{suffix}(const {C}* x, const {C}* w, const {C}* b, '
            f"{C}* out_y, {C}* out_mean, {C}* out_rstd, i64 m, i64 n, {C} eps) {{",
            f"    __shared__ {C} sh[{_BLOCK}];", f"    fwd_impl<{C}>(x, w, b, out_y, out_mean, out_rstd, m, n, eps, sh);",
            "}",
            f'extern "C" __global__ void layer_norm_bwd_dx_{suffix}(const {C}* x, const {C}* w, const {C}* dy, '
            f"const {C}* mean_, const {C}* rstd_, {C}* out_dx, i64 m, i64 n) {{",
            f"    __shared__ {C} sh[{_BLOCK}];", f"    bwd_dx_impl<{C}>(x, w, dy, mean_, rstd_, out_dx, m, n, sh);", "}",
            f'extern "C" __global__ void layer_norm_bwd_params_{suffix}(const {C}* x, const {C}* dy, '
            f"const {C}* mean_, const {C}* rstd_, {C}* out_dw, {C}* out_db, i64 m, i64 n) {{",
            f"    bwd_params_impl<{C}>(x, dy, mean_, rstd_, out_dw, out_db, m, n);", "}"]
    return "\n".join(parts) + "\n"


def c_function(state, name: str, dtype):
    """The compiled CUDA C entry point ``<name>_<f32|f64>`` on ``state``'s device (the backend's
    ``DeviceState``: compiled once there, forgotten with the runtime state)."""
    suffix = _numba.storage_suffix(dtype, "layer_norm's CUDA C kernels")
    if suffix not in _C_TYPES:
        raise TypeError(f"layer_norm's CUDA C kernels support float32 and float64, got {np.dtype(dtype)}")
    key = ("layernorm", name, suffix)  # cuda_c.function's key for this source
    f = state.functions.get(key)  # every launch: one dict lookup
    if f is None:
        from .cuda_c import entry
        f = entry(state, key, "layernorm", cuda_source, f"{name}_{suffix}")
    return f


def launch_forward(x2, w, b, eps: float, y, mean, rstd, *, state, max_blocks: int | None = None) -> None:
    """One block per row (CuPy arrays, contiguous, CuPy's current stream)."""
    m, n = x2.shape
    C = _numba.compute_dtype(x2.dtype).type
    c_function(state, "layer_norm_fwd", x2.dtype)((_numba.blocks_for(m, 1, max_blocks),), (_BLOCK,),
                                                   (x2, w, b, y, mean, rstd, np.int64(m), np.int64(n), C(eps)))


def launch_backward(dy, x2, w, mean, rstd, dx, dw, db, *, state, max_blocks: int | None = None) -> None:
    """``dx`` (one block per row), then ``dw``/``db`` (one thread per column); ``dx`` or ``dw`` may be
    None (not needed)."""
    m, n = x2.shape
    if dx is not None:
        c_function(state, "layer_norm_bwd_dx", x2.dtype)((_numba.blocks_for(m, 1, max_blocks),), (_BLOCK,),
                                                          (x2, w, dy, mean, rstd, dx, np.int64(m), np.int64(n)))
    if dw is not None:
        c_function(state, "layer_norm_bwd_params", x2.dtype)((_numba.blocks_for(n, _BLOCK, max_blocks),), (_BLOCK,),
                                                              (x2, dy, mean, rstd, dw, db, np.int64(m), np.int64(n)))
