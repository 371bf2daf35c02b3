"""Every optimizer implementation, generated from the one rule in :mod:`gpugrad.kernels.optim_rules`.

- :func:`xp_update`: the rule run on whole NumPy/CuPy arrays (the reference and the generic backend path);
- :func:`numba_source`: Python source of a loop over ``[start, end)`` of flat buffers that calls the rule
  per element, compiled by the caller with ``numba.njit`` (CPU) or ``numba.cuda.jit`` (CUDA, grid-stride);
- :func:`cuda_c_source`: CUDA C text, the rule's syntax tree rendered to a ``__device__`` function plus
  ``extern "C"`` entry points for float32, float64 and float16 storage.

Arithmetic on hyperparameters alone (``1 - beta2``, ``1 - lr * weight_decay``) is not generated: it is
computed on the host in float64 (:func:`host_values`) and passed as scalars (:func:`host_scalars`), as
PyTorch computes it in Python before its kernels cast the scalar to the tensor's type.

Each generated kernel updates one contiguous range of flat buffers (``P``, ``G``, one per present state).
An ordinary step gets the per-step scalars (``derived``) as arguments; a capturable step reads the step
count from a one-element array, computes them with the rule's prologue on the device, and does nothing
when ``found_inf[0] != 0`` (so a CUDA graph can replay it and a skipped AMP step needs no host read).
"""
from __future__ import annotations

import ast
import copy
import inspect
import math
import textwrap
from typing import Any

from . import expr as E
from .optim_rules import Rule

_ALLOWED = (ast.FunctionDef, ast.arguments, ast.arg, ast.Assign, ast.If, ast.Return, ast.Tuple, ast.Name,
            ast.Load, ast.Store, ast.Constant, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Call,
            ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.Not, ast.And, ast.Or, ast.Lt, ast.LtE,
            ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
# The functions a rule may call: the one primitive table's (gpugrad/kernels/expr.py), by their Python names.
PRIMITIVES: dict[str, str] = {"maximum": "max", "minimum": "min", **{
    n: n for n, p in E.PRIMS.items() if p.arity and n not in ("max", "min", "where") and not p.boolean
    and (p.c.startswith("gg_") or p.body is not None)}}
_trees: dict = {}


def tree(fn) -> ast.FunctionDef:
    """The checked syntax tree of a rule function (restricted language, see optim_rules)."""
    t = _trees.get(fn)
    if t is None:
        t = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        for node in ast.walk(t):
            if not isinstance(node, _ALLOWED):
                raise SyntaxError(f"optimizer rule {fn.__name__}: {type(node).__name__} is outside the rule language "
                                  f"(line {getattr(node, 'lineno', '?')})")
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in PRIMITIVES):
                raise SyntaxError(f"optimizer rule {fn.__name__}: only {tuple(PRIMITIVES)} may be called")
            if isinstance(node, ast.Assign) and not (len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                raise SyntaxError(f"optimizer rule {fn.__name__}: assign to one name at a time")
        _trees[fn] = t
    return t


def check(rule: Rule) -> None:
    """The rule's argument order is ``p, g, *state, *hyper, *derived, *flags`` and it returns ``p, *state``."""
    args = [a.arg for a in tree(rule.fn).args.args]
    want = ["p", "g", *rule.state, *rule.hyper, *rule.derived, *rule.flags]
    if args != want:
        raise TypeError(f"optimizer rule {rule.name}: arguments {args}, expected {want}")
    ret = tree(rule.fn).body[-1]
    names = [e.id for e in ret.value.elts] if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Tuple) else None
    if names != ["p", *rule.state]:
        raise TypeError(f"optimizer rule {rule.name}: must end with 'return p, {', '.join(rule.state)}'")
    if rule.prologue is not None:
        pargs = [a.arg for a in tree(rule.prologue).args.args]
        if pargs != ["step", *rule.hyper]:
            raise TypeError(f"optimizer rule {rule.name}: prologue arguments {pargs}, expected {['step', *rule.hyper]}")


# ------------------------------------------------------------------------------------------------ host scalars
_host: dict = {}
_host_memo: dict = {}


class _Hoist(ast.NodeTransformer):
    """Replaces each largest subexpression over hyperparameters (and constants) alone by a name ``hs<k>``."""

    def __init__(self, hyper):
        self.hyper, self.found = set(hyper), {}

    def visit(self, node):
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Call)):
            calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call)}
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} - calls
            if names and names <= self.hyper:
                key = ast.dump(node)
                if key not in self.found:
                    self.found[key] = (f"hs{len(self.found)}", node)
                return ast.copy_location(ast.Name(self.found[key][0], ast.Load()), node)
        return self.generic_visit(node)


def _split(rule: Rule) -> tuple:
    """``(generated tree, ((name, expression, code), ...))`` of ``rule``, cached."""
    got = _host.get(rule.fn)
    if got is None:
        check(rule)
        orig, h = tree(rule.fn), _Hoist(rule.hyper)
        t = h.visit(copy.deepcopy(orig))
        taken = {n.id for n in ast.walk(orig) if isinstance(n, ast.Name)} | {a.arg for a in orig.args.args}
        if taken & {n for n, _ in h.found.values()}:
            raise SyntaxError(f"optimizer rule {rule.name}: hs0, hs1, ... name the generated host scalars")
        at = len(rule.state) + len(rule.hyper) + 2
        t.args.args[at:at] = [ast.arg(n) for n, _ in h.found.values()]
        host = tuple((n, ast.unparse(e), compile(ast.Expression(e), f"<optim rule {rule.name}: {n}>", "eval"))
                     for n, e in h.found.values())
        got = _host[rule.fn] = (ast.fix_missing_locations(t), host)
    return got


def host_scalars(rule: Rule) -> tuple[str, ...]:
    """Names of the scalars the generated code takes after the hyperparameters: the rule's arithmetic on
    hyperparameters alone, e.g. Adam's ``1 - beta1``, ``1 - beta2`` and ``1 - lr * weight_decay``."""
    return tuple(n for n, _, _ in _split(rule)[1])


def host_values(rule: Rule, options: dict) -> tuple[float, ...]:
    """The values of :func:`host_scalars`, computed in float64 from the hyperparameters (as PyTorch does in
    Python): in float32, ``1 - float32(0.999)`` is 1.3e-5 (relative) off ``float32(1 - 0.999)``."""
    key = (rule.fn, *(options[h] for h in rule.hyper))
    got = _host_memo.get(key)  # a step's host time matters for small models: 0.7 us instead of 2.5 us
    if got is None:
        env = {h: float(options[h]) for h in rule.hyper}
        got = tuple(float(eval(code, rule.fn.__globals__, env)) for _, _, code in _split(rule)[1])
        if len(_host_memo) > 4096:  # a schedule changes lr every step
            _host_memo.clear()
        _host_memo[key] = got
    return got


def generated_tree(rule: Rule) -> ast.FunctionDef:
    """``rule.fn`` as every implementation runs it: arguments ``p, g, *state, *hyper, *host_scalars,
    *derived, *flags``, the hyperparameter-only arithmetic replaced by those scalars."""
    return _split(rule)[0]


# ------------------------------------------------------------------------------------------------ into the language
_BIN = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
_CMP = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}


def lower(n) -> E.Expr:
    """A rule's expression (a checked ``ast`` node) as an expression of the one language."""
    if isinstance(n, ast.Constant):
        return E.const(float(n.value))
    if isinstance(n, ast.Name):
        return E.var(n.id)
    if isinstance(n, ast.BinOp):
        return E.node(_BIN[type(n.op)], lower(n.left), lower(n.right))
    if isinstance(n, ast.UnaryOp):
        return E.node("neg" if isinstance(n.op, ast.USub) else "not", lower(n.operand))
    if isinstance(n, ast.Compare):
        parts, left = [], n.left
        for op, right in zip(n.ops, n.comparators):
            parts.append(E.node(_CMP[type(op)], lower(left), lower(right)))
            left = right
        out = parts[0]
        for p in parts[1:]:
            out = E.node("and", out, p)
        return out
    if isinstance(n, ast.BoolOp):
        vals = [lower(v) for v in n.values]
        out = vals[0]
        for v in vals[1:]:
            out = E.node("and" if isinstance(n.op, ast.And) else "or", out, v)
        return out
    if isinstance(n, ast.Call):
        return E.node(PRIMITIVES[n.func.id], *(lower(a) for a in n.args))
    raise SyntaxError(f"cannot lower {type(n).__name__}")  # pragma: no cover - tree() forbids it


class ArrayStyle(E.PyStyle):
    """Python over whole NumPy/CuPy arrays: operators infix, ``max``/``min``/``where`` as the array
    functions ``maximum``/``minimum``/``where``, the other primitives by name (bound by :func:`xp_bound`)."""

    _CALLS = {"max": "maximum({0}, {1})", "min": "minimum({0}, {1})", "where": "where({0}, {1}, {2})",
              "and": "logical_and({0}, {1})", "or": "logical_or({0}, {1})", "not": "logical_not({0})"}

    def call(self, op: str, a: list) -> str:
        t = self._CALLS.get(op)
        return t.format(*a) if t is not None else super().call(op, a)


# how statements are spelled: Python (xp, Numba) and C; the expressions by the language's renderers
_PY_SYNTAX = {"assign": "{i}{name} = {value}", "if": "{i}if {test}:", "else": "{i}else:", "end": None,
              "return": "{i}return {values}"}
_C_SYNTAX = {"assign": "{i}{name} = {value};", "if": "{i}if ({test}) {{", "else": "{i}}} else {{", "end": "{i}}}",
             "return": None}  # C functions return through their reference arguments


def _block(stmts, indent: str, style, syntax: dict) -> list[str]:
    """A rule's statements (assignments, ``if``/``else``, the final ``return``) in ``syntax``."""
    out = []
    for st in stmts:
        if isinstance(st, ast.Assign):
            out.append(syntax["assign"].format(i=indent, name=st.targets[0].id, value=E.render(lower(st.value), style)))
        elif isinstance(st, ast.If):
            out.append(syntax["if"].format(i=indent, test=E.render(lower(st.test), style)))
            out += _block(st.body, indent + "    ", style, syntax)
            if st.orelse:
                out.append(syntax["else"].format(i=indent))
                out += _block(st.orelse, indent + "    ", style, syntax)
            if syntax["end"]:
                out.append(syntax["end"].format(i=indent))
        elif isinstance(st, ast.Return) and syntax["return"]:
            items = st.value.elts if isinstance(st.value, ast.Tuple) else [st.value]
            out.append(syntax["return"].format(i=indent, values=", ".join(E.render(lower(v), style) for v in items)))
    return out


def _tree_of(fn) -> ast.FunctionDef:
    return fn if isinstance(fn, ast.FunctionDef) else tree(fn)


def py_function(fn, name: str, style) -> str:
    """Python source of a rule (or prologue) function or :func:`generated_tree` named ``name``, its
    expressions rendered by ``style``."""
    t = _tree_of(fn)
    return "\n".join([f"def {name}({', '.join(a.arg for a in t.args.args)}):"]
                     + _block(t.body, "    ", style, _PY_SYNTAX)) + "\n"


def _uses(fn) -> set:
    """The primitives a rule function calls (after macros are expanded)."""
    out: set = set()
    for node in ast.walk(_tree_of(fn)):
        if isinstance(node, (ast.Assign, ast.If, ast.Return)):
            val = node.value if isinstance(node, (ast.Assign, ast.Return)) else node.test
            stack = [E.expand(lower(v)) for v in (val.elts if isinstance(val, ast.Tuple) else [val])]
            while stack:
                e = stack.pop()
                out.add(e.op)
                stack.extend(e.args)
    return out


def bind(fn, namespace: dict, style=None):
    """``fn`` (a function or :func:`generated_tree`) re-made from the language with the functions of
    ``namespace`` (``style``: constants and calls, default plain Python)."""
    ns, name = dict(namespace), _tree_of(fn).name
    exec(compile(py_function(fn, name, style or E.PyStyle()), f"<optim rule {name}>", "exec"), ns)
    return ns[name]


def _typed() -> E.PyStyle:
    """Numba scalar code: constants ``F(c)`` (float32 kernels stay float32: Numba types ``1 - x`` as float64)."""
    return E.PyStyle(const=lambda v: f"F({v!r})")


# ------------------------------------------------------------------------------------------------ the definition
def scalar_update(rule: Rule, arrays: dict, options: dict, step: int = 1) -> dict:
    """The rule itself, element by element on Python floats (float64): what every generated
    implementation must agree with. Returns new float64 arrays for 'p' and each present state."""
    import numpy as np
    n = len(arrays["p"])
    mask = rule.present(options)
    derived = rule.derive(float(step), options)
    out = {k: np.array(arrays[k], dtype=np.float64) for k in ("p", *rule.state) if k in arrays}
    hyper = [float(options[h]) for h in rule.hyper]
    flags = [bool(options[f]) for f in rule.flags]
    for i in range(n):
        vals = [float(arrays["p"][i]), float(arrays["g"][i])]
        vals += [float(arrays[s][i]) if on else 0.0 for s, on in zip(rule.state, mask)]
        res = rule.fn(*vals, *hyper, *derived, *flags)
        for k, v in zip(("p", *rule.state), res):
            if k in out:
                out[k][i] = v
    return out


# ------------------------------------------------------------------------------------------------ xp (vectorised)
_xp_fns: dict = {}


def _xp_lerp(xp):
    def lerp(a, b, w):
        if isinstance(w, (int, float)):
            return a + w * (b - a) if w < 0.5 else b - (b - a) * (1 - w)
        return xp.where(w < 0.5, a + w * (b - a), b - (b - a) * (1 - w))
    return lerp


def _xp_namespace(xp) -> dict:
    """The primitives over whole arrays: the table's ufuncs of ``xp`` (``lerp`` branches on a scalar weight)."""
    ns = {n: getattr(xp, p.ufunc) for n, p in E.PRIMS.items() if p.ufunc and not p.ufunc.startswith("<")
          and hasattr(xp, p.ufunc)}
    ns.update(maximum=xp.maximum, minimum=xp.minimum, where=xp.where, logical_and=xp.logical_and,
              logical_or=xp.logical_or, logical_not=xp.logical_not, lerp=_xp_lerp(xp), abs=abs)
    return ns


def xp_bound(rule: Rule, xp) -> tuple:
    """``(update, prologue)`` of ``rule`` over whole arrays of the array module ``xp``."""
    key = (rule.name, xp.__name__)
    f = _xp_fns.get(key)
    if f is None:
        ns, style = _xp_namespace(xp), ArrayStyle()
        pro = bind(rule.prologue, ns, style) if rule.prologue is not None else None
        f = (bind(generated_tree(rule), ns, style), pro)
        _xp_fns[key] = f
    return f


def xp_update(rule: Rule, xp, arrays: dict, start: int, end: int, options: dict, derived: tuple = (),
              step=None, found_inf=None, host: tuple | None = None) -> None:
    """Update ``arrays`` ('p', 'g', and each present state: 1-D buffers) on ``[start, end)`` in place.
    ``step``/``found_inf`` (one-element arrays): the capturable form (derived on the device, skip on inf).
    ``host``: the :func:`host_scalars` (default :func:`host_values` of ``options``)."""
    update, prologue = xp_bound(rule, xp)
    sl = slice(start, end)
    if step is not None and prologue is not None:
        derived = prologue(step[0], *(options[h] for h in rule.hyper))
    vals = [arrays[s][sl] if s in arrays else 0.0 for s in ("p", "g", *rule.state)]
    host = host_values(rule, options) if host is None else host
    out = update(*vals, *(options[h] for h in rule.hyper), *host, *derived, *(bool(options[f]) for f in rule.flags))
    for name, new in zip(("p", *rule.state), out):
        if name in arrays:
            dst = arrays[name][sl]
            if found_inf is not None:
                new = xp.where(found_inf[0] != 0, dst, new)
            dst[...] = new


# ------------------------------------------------------------------------------------------------ Numba (CPU, CUDA)
def kernel_args(rule: Rule, mask: tuple, capturable: bool) -> list[str]:
    """Argument names of a generated kernel (Numba and CUDA C alike)."""
    states = [f"S_{s}" for s, on in zip(rule.state, mask) if on]
    scal = ["STEP", "FOUND"] if capturable else list(rule.derived)
    return ["P", "G", *states, "start", "end", *rule.hyper, *host_scalars(rule), *scal, *rule.flags]


def pack_args(rule: Rule, mask: tuple, arrays: dict, start: int, end: int, options: dict, derived: tuple, step,
              found_inf, t, index) -> list:
    """The values of :func:`kernel_args` (``capturable`` when ``step`` is given): buffers, bounds as
    ``index`` (``np.int64``; ``np.uint64`` lets Numba vectorise the CPU loop), hyperparameters, host
    scalars (computed in float64, then cast) and derived scalars as ``t`` (the compute type), flags as ``bool``."""
    a = [arrays["p"], arrays["g"]] + [arrays[s] for s, on in zip(rule.state, mask) if on]
    a += [index(start), index(end)] + [t(options[h]) for h in rule.hyper] + [t(v) for v in host_values(rule, options)]
    a += [step, found_inf] if step is not None else [t(d) for d in derived]
    return a + [bool(options[f]) for f in rule.flags]


def numba_source(rule: Rule, mask: tuple, cuda: bool, capturable: bool) -> str:
    """Source of ``kernel(...)`` (arguments: :func:`kernel_args`) calling ``elem`` (the rule, typed) per
    element; ``prologue`` and ``F`` (the compute type) come from the namespace it is executed in."""
    check(rule)
    args = kernel_args(rule, mask, capturable)
    lines = [f"def kernel({', '.join(args)}):"]
    if capturable:
        lines.append("    if FOUND[0] != 0:")
        lines.append("        return")
        if rule.prologue is not None:
            lines.append(f"    {', '.join(rule.derived)} = prologue(F(STEP[0]), {', '.join(rule.hyper)})")
    rng = "range(start + cuda.grid(1), end, cuda.gridsize(1))" if cuda else "range(start, end)"
    lines.append(f"    for i in {rng}:")
    vals = ["F(P[i])", "F(G[i])"] + [f"F(S_{s}[i])" if on else "F(0.0)" for s, on in zip(rule.state, mask)]
    scal = [*rule.hyper, *host_scalars(rule), *rule.derived, *rule.flags]
    lines.append(f"        r = elem({', '.join(vals + scal)})")
    lines.append("        P[i] = r[0]")
    for k, (s, on) in enumerate(zip(rule.state, mask)):
        if on:
            lines.append(f"        S_{s}[i] = r[{k + 1}]")
    return "\n".join(lines) + "\n"


def numba_kernel(rule: Rule, mask: tuple, capturable: bool, F: Any, jit, device_jit, cuda_module=None):
    """Compile the generated loop: ``jit`` wraps the kernel, ``device_jit`` the rule, its prologue and the
    composite primitives (``numba.njit`` on the CPU; ``cuda.jit`` / ``cuda.jit(device=True)``)."""
    prim = dict(E.py_namespace(), F=F)
    helper: dict = {"F": F}
    exec(compile(E.py_helper_source("lerp", lambda v: f"F({v!r})"), "<optim lerp>", "exec"), helper)
    prim["lerp"] = device_jit(helper["lerp"])
    ns = dict(prim, math=math)
    if cuda_module is not None:
        ns["cuda"] = cuda_module
    ns["elem"] = device_jit(bind(generated_tree(rule), prim, _typed()))
    if rule.prologue is not None:
        ns["prologue"] = device_jit(bind(rule.prologue, prim, _typed()))
    src = numba_source(rule, mask, cuda_module is not None, capturable)
    exec(compile(src, f"<optim kernel {rule.name}>", "exec"), ns)
    return jit(ns["kernel"])


# NumPy's error model: x/0 gives inf/nan (as NumPy, PyTorch and the GPU do) instead of a check per
# division that raises ZeroDivisionError, which also stops LLVM from vectorising the loop (8x slower).
_NJIT = '@numba.njit(cache=True, error_model="numpy")\n'


def numba_module_source(rule: Rule, mask: tuple, capturable: bool, dtype_name: str) -> str:
    """A complete Python module for the CPU: the typed rule as ``elem``, its prologue, the composite
    primitives it calls and the loop, each ``numba.njit(cache=True)``. Written to a file (not exec'd) so
    that Numba's on-disk cache works and a process does not recompile it (seconds) on its first step."""
    fns = [(generated_tree(rule), "elem")] + ([(rule.prologue, "prologue")] if rule.prologue is not None else [])
    used = set().union(*(_uses(fn) for fn, _ in fns))
    names = sorted(n for n in used if n in E.py_namespace() and n != "abs")
    parts = [f"# Generated by gpugrad/kernels/optim_codegen.py from gpugrad/kernels/optim_rules.py ({rule.name}): do not edit.",
             "import numba", "import numpy as np"] + ([f"from math import {', '.join(names)}"] if names else []) + \
        [f"F = np.{dtype_name}", ""]
    if "lerp" in used:
        parts.append(_NJIT + E.py_helper_source("lerp", lambda v: f"F({v!r})"))
    for fn, name in fns:
        parts.append(_NJIT + py_function(fn, name, _typed()))
    parts.append(_NJIT + numba_source(rule, mask, False, capturable))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ CUDA C
def c_function(fn, outputs: tuple, flags: tuple, name: str) -> str:
    """``template <typename C> __device__ void name(...)``: ``outputs`` by reference, the rest by value."""
    t = _tree_of(fn)
    args = [a.arg for a in t.args.args]
    params = []
    for a in args:
        if a in outputs:
            params.append(f"C& {a}")
        elif a in flags:
            params.append(f"bool {a}")
        else:
            params.append(f"C {a}")
    declared = set(args)
    locals_ = []
    for node in ast.walk(t):
        if isinstance(node, ast.Assign) and node.targets[0].id not in declared and node.targets[0].id not in outputs:
            declared.add(node.targets[0].id)
            locals_.append(node.targets[0].id)
    extra = [f"C& {o}" for o in outputs if o not in args]
    body = [f"    C {v};" for v in locals_] + _block(t.body, "    ", E.CStyle(), _C_SYNTAX)
    return (f"template <typename C>\n__device__ __forceinline__ void {name}({', '.join(params + extra)}) {{\n"
            + "\n".join(body) + "\n}\n")


C_MATH = E.c_prelude()  # the primitives in C, from the one table (a host compiler takes them too)
_C_PRELUDE = r"""// Generated by gpugrad/kernels/optim_codegen.py from gpugrad/kernels/optim_rules.py: do not edit.
typedef long long i64;
template <typename T> struct GGStore;
template <> struct GGStore<float> { typedef float C;
    static __device__ __forceinline__ float in(float x) { return x; }
    static __device__ __forceinline__ float out(float x) { return x; } };
template <> struct GGStore<double> { typedef double C;
    static __device__ __forceinline__ double in(double x) { return x; }
    static __device__ __forceinline__ double out(double x) { return x; } };
template <> struct GGStore<unsigned short> { typedef float C;  // float16 bits, computed in float32
    static __device__ __forceinline__ float in(unsigned short h) { float f; asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h)); return f; }
    static __device__ __forceinline__ unsigned short out(float f) { unsigned short h; asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f)); return h; } };
""" + C_MATH + "\n"
_SUFFIX = (("f32", "float"), ("f64", "double"), ("f16", "unsigned short"))


def entry_name(rule: Rule, mask: tuple, capturable: bool, suffix: str) -> str:
    """The ``extern "C"`` name of one generated kernel, e.g. ``adam_110_cap_f32``."""
    return f"{rule.name}_{''.join('1' if m else '0' for m in mask)}{'_cap' if capturable else ''}_{suffix}"


def cuda_c_source(rule: Rule, masks) -> str:
    """CUDA C for ``rule`` with each state mask in ``masks``, ordinary and capturable, all storage types."""
    check(rule)
    parts = [_C_PRELUDE, c_rule(rule)]
    for mask in masks:
        for cap in (False, True):
            for suf, T in _SUFFIX:
                parts.append(_c_entry(rule, tuple(mask), cap, suf, T))
    return "\n".join(parts)


def c_rule(rule: Rule) -> str:
    """The rule (``gg_rule_<name>``) and its prologue (``gg_prologue_<name>``) as C device functions."""
    out = c_function(generated_tree(rule), ("p", *rule.state), rule.flags, f"gg_rule_{rule.name}")
    if rule.prologue is not None:
        out += "\n" + c_function(rule.prologue, rule.derived, (), f"gg_prologue_{rule.name}")
    return out


def _c_entry(rule: Rule, mask: tuple, cap: bool, suf: str, T: str) -> str:
    C = "double" if T == "double" else "float"
    states = [s for s, on in zip(rule.state, mask) if on]
    sig = [f"{T}* P", f"const {T}* G"] + [f"{T}* S_{s}" for s in states] + ["i64 start", "i64 end"]
    sig += [f"{C} {h}" for h in (*rule.hyper, *host_scalars(rule))]
    sig += [f"const {C}* STEP", "const float* FOUND"] if cap else [f"{C} {d}" for d in rule.derived]
    sig += [f"int {f}" for f in rule.flags]
    body = []
    if cap:
        body.append("    if (FOUND[0] != 0.0f) return;")
        if rule.prologue is not None:
            body.append(f"    {C} {', '.join(rule.derived)};")
            args = ", ".join(("STEP[0]", *rule.hyper, *rule.derived))
            body.append(f"    gg_prologue_{rule.name}<{C}>({args});")
    L = f"GGStore<{T}>"
    body.append("    for (i64 i = start + (i64)blockIdx.x * blockDim.x + threadIdx.x; i < end; "
                "i += (i64)gridDim.x * blockDim.x) {")
    body.append(f"        {C} p = {L}::in(P[i]);")
    vals = ["p", f"{L}::in(G[i])"]
    for s, on in zip(rule.state, mask):
        body.append(f"        {C} s_{s} = " + (f"{L}::in(S_{s}[i]);" if on else f"{C}(0);"))
        vals.append(f"s_{s}")
    call = vals + [*rule.hyper, *host_scalars(rule), *rule.derived] + [f"{f} != 0" for f in rule.flags]
    body.append(f"        gg_rule_{rule.name}<{C}>({', '.join(call)});")
    body.append(f"        P[i] = {L}::out(p);")
    for s in states:
        body.append(f"        S_{s}[i] = {L}::out(s_{s});")
    body.append("    }")
    return (f'extern "C" __global__ void {entry_name(rule, mask, cap, suf)}({", ".join(sig)}) {{\n'
            + "\n".join(body) + "\n}\n")
