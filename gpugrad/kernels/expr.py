"""One expression language for every generated formula: the activations (:mod:`.activations`) and the
optimizer rules (:mod:`.optim_codegen`) are both written as trees of :class:`Expr` over one primitive table.

An :class:`Expr` is built by Python operators and the functions below (``exp``, ``where``, ...). Nodes
are interned (structurally equal trees are one object), so common subexpressions are shared for free;
constant subtrees are folded and exact identities (``x * 1``, ``--x``, ``where(c, a, a)``) simplified.

:data:`PRIMS` is the one primitive table. Each :class:`Prim` gives, for one operation:

- ``ref``: its float64 reference (Python floats, libm): what :func:`evaluate`, the definition every test
  compares to, computes;
- ``py``: the Python scalar spelling, compiled by Numba ``njit`` (CPU) and ``cuda.jit`` (Numba CUDA)
  with the functions of :func:`py_namespace`;
- ``c``: the CUDA C spelling: an overloaded ``gg_*`` function of :func:`c_prelude` (float and double
  compute; float16 storage computes in float) or an operator;
- ``ufunc``: the NumPy/CuPy array function (``xp.<ufunc>``, with ``out=`` where it is a ufunc);
- ``d``: its derivative rule, the partial derivatives by each argument as expressions, which
  :func:`diff` chains (with simplification, so generated derivatives stay small).

Renderers: :func:`render` (one expression, inline), :func:`straight` (straight-line code: nodes used
more than once become temporaries), :func:`xp_source` (array code that reuses dying temporaries with
``out=``). Nothing here imports gpugrad (kernels/ is the bottom layer).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Expr", "Prim", "PRIMS", "const", "var", "node", "exp", "expm1", "log", "log1p", "tanh", "erf", "sin",
           "cos", "sqrt", "absolute", "sigmoid", "softplus", "sign", "expand", "maximum", "minimum", "where", "lerp", "logical_and", "logical_or",
           "logical_not", "diff", "substitute", "evaluate", "variables", "render", "straight", "xp_source",
           "c_prelude", "py_namespace", "CStyle", "PyStyle", "size"]


# ---------------------------------------------------------------------------------------- nodes
class Expr:
    """A node: ``op`` (a :data:`PRIMS` name, ``"var"`` or ``"const"``) with ``args``; ``value`` is a
    variable's name or a constant's float. Interned: build nodes with :func:`node`, never directly."""

    __slots__ = ("op", "args", "value", "__weakref__")

    def __init__(self, op: str, args: tuple, value) -> None:
        self.op, self.args, self.value = op, args, value

    def __add__(self, o): return node("add", self, o)
    def __radd__(self, o): return node("add", o, self)
    def __sub__(self, o): return node("sub", self, o)
    def __rsub__(self, o): return node("sub", o, self)
    def __mul__(self, o): return node("mul", self, o)
    def __rmul__(self, o): return node("mul", o, self)
    def __truediv__(self, o): return node("div", self, o)
    def __rtruediv__(self, o): return node("div", o, self)
    def __pow__(self, o): return node("pow", self, o)
    def __rpow__(self, o): return node("pow", o, self)
    def __neg__(self): return node("neg", self)
    def __lt__(self, o): return node("lt", self, o)
    def __le__(self, o): return node("le", self, o)
    def __gt__(self, o): return node("gt", self, o)
    def __ge__(self, o): return node("ge", self, o)
    __hash__ = object.__hash__  # identity (nodes are interned); == stays identity too

    def __bool__(self):
        raise TypeError("an Expr has no truth value: use where(cond, a, b) for a branch on element values")

    def __repr__(self) -> str:
        return render(self, PyStyle())


_INTERN: dict = {}


def _key_value(v):
    return v.hex() if isinstance(v, float) else v  # 0.0 and -0.0 stay apart


def _make(op: str, args: tuple, value=None) -> Expr:
    key = (op, tuple(id(a) for a in args), _key_value(value))
    e = _INTERN.get(key)
    if e is None:
        e = _INTERN[key] = Expr(op, args, value)
    return e


def const(x) -> Expr:
    return x if isinstance(x, Expr) else _make("const", (), float(x))


def var(name: str) -> Expr:
    return _make("var", (), name)


ZERO, ONE = const(0.0), const(1.0)


def _is(e: Expr, v: float) -> bool:
    return e.op == "const" and e.value == v and math.copysign(1.0, e.value) == math.copysign(1.0, v)


def node(op: str, *args) -> Expr:
    """A node of primitive ``op``: constants folded, exact identities applied, interned."""
    args = tuple(const(a) for a in args)
    p = PRIMS[op]
    if len(args) != p.arity:
        raise TypeError(f"{op} takes {p.arity} arguments, got {len(args)}")
    if not p.boolean and all(a.op == "const" for a in args):
        return const(p.ref(*(a.value for a in args)))
    if op == "mul":
        if _is(args[1], 1.0):
            return args[0]
        if _is(args[0], 1.0):
            return args[1]
        if _is(args[1], -1.0):
            return node("neg", args[0])
        if _is(args[0], -1.0):
            return node("neg", args[1])
    elif op == "div" and _is(args[1], 1.0):
        return args[0]
    elif op == "neg" and args[0].op == "neg":
        return args[0].args[0]
    elif op == "where" and args[1] is args[2]:
        return args[1]
    return _make(op, args)


# ---------------------------------------------------------------------------------------- the primitive table
def _ieee(np_fn, math_fn):
    """``exp``/``expm1`` that overflow to inf as the hardware does (Python's ``math`` raises); NumPy scalars
    keep their type (the CUDA simulator runs device functions as Python on NumPy scalars)."""
    def f(x):
        if isinstance(x, np.floating):
            with np.errstate(over="ignore"):
                return np_fn(x)
        try:
            return math_fn(x)
        except OverflowError:
            return math.inf
    f.__name__ = math_fn.__name__
    return f


_ieee_exp = _ieee(np.exp, math.exp)
_ieee_expm1 = _ieee(np.expm1, math.expm1)


def _log(x):
    return math.log(x) if x > 0 else (-math.inf if x == 0 else math.nan)


def _log1p(x):
    return math.log1p(x) if x > -1 else (-math.inf if x == -1 else math.nan)


def _div(a, b):
    if b != 0:
        return a / b
    return math.copysign(math.inf, a) * math.copysign(1.0, b) if a and a == a else math.nan


def _pow(a, b):
    """C's ``pow`` (what the generated code calls): a negative base to a non-integer power is NaN (Python's
    ``**`` gives a complex number), an overflow or a zero base to a negative power is an infinity with
    the base's sign for an odd integer exponent."""
    a, b = float(a), float(b)
    try:
        r = a ** b
    except (OverflowError, ZeroDivisionError):
        odd = b.is_integer() and math.fmod(b, 2.0) != 0.0
        return math.copysign(math.inf, a) if odd else math.inf
    return math.nan if isinstance(r, complex) else r


def _sqrt(x):
    return math.sqrt(x) if x >= 0 else math.nan


def _tanh(x):
    return math.tanh(x)


def _periodic(math_fn):
    """``sin``/``cos`` that give NaN at an infinity, as C's do (Python's ``math`` raises)."""
    def f(x):
        return math_fn(x) if math.isfinite(x) else math.nan
    f.__name__ = math_fn.__name__
    return f


def _ref_sigmoid(x):
    return 1.0 / (1.0 + _ieee_exp(-x))


def _ref_softplus(x):
    return _log1p(_ieee_exp(x))


def _macro(name, ref, body, d) -> Prim:
    """A composite written in the language (its renderers expand ``body``) with its own derivative rule,
    e.g. ``sigmoid' = sigmoid (1 - sigmoid)`` where differentiating the body would give ``0 * inf`` once
    ``exp`` overflows."""
    return Prim(name, 1, ref, "", "", None, d, body=body)


def _ref_sign(x):
    return 1.0 if x > 0 else -1.0 if x < 0 else x


def _ref_lerp(a, b, w):
    return a + w * (b - a) if w < 0.5 else b - (b - a) * (1 - w)


@dataclass(frozen=True)
class Prim:
    """One primitive: arity, float64 reference, spellings (Python scalar, CUDA C, array ufunc) and
    derivative rule ``d(*args) -> partials`` (one expression per argument; ``None``: not differentiable)."""

    name: str
    arity: int
    ref: Callable
    py: str            # format string over the argument texts, e.g. "exp({0})"
    c: str             # format string, e.g. "gg_exp({0})"
    ufunc: str | None  # xp.<ufunc>(...)
    d: Callable | None = None
    boolean: bool = False      # a comparison or logical op: a condition, never a number
    c_float: str | None = None  # for gg_<name>: the C library function for float ...
    c_double: str | None = None  # ... and for double
    repeats: tuple = ()        # arguments the Python spelling reads twice (become temporaries if not leaves)
    body: Callable | None = None  # a macro: rendered as this expression of its arguments, differentiated by d


def _u(name, ref, cf, cd, d, ufunc=None) -> Prim:
    """A unary math function: ``name(x)`` in Python, ``gg_name(x)`` in C."""
    return Prim(name, 1, ref, f"{name}({{0}})", f"gg_{name}({{0}})", ufunc or name, d, c_float=cf, c_double=cd)


def _bin(name, sym, ref, ufunc, d) -> Prim:
    return Prim(name, 2, ref, f"({{0}} {sym} {{1}})", f"({{0}} {sym} {{1}})", ufunc, d)


def _cmp(name, sym, ufunc) -> Prim:
    return Prim(name, 2, getattr(operator, name), f"({{0}} {sym} {{1}})", f"({{0}} {sym} {{1}})", ufunc, None,
                boolean=True)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

PRIMS: dict[str, Prim] = {p.name: p for p in (
    _bin("add", "+", operator.add, "add", lambda a, b: (ONE, ONE)),
    _bin("sub", "-", operator.sub, "subtract", lambda a, b: (ONE, const(-1.0))),
    _bin("mul", "*", operator.mul, "multiply", lambda a, b: (b, a)),
    _bin("div", "/", _div, "divide", lambda a, b: (1.0 / b, -(a / b) / b)),
    Prim("neg", 1, operator.neg, "(-{0})", "(-{0})", "negative", lambda a: (const(-1.0),)),
    Prim("pow", 2, _pow, "({0} ** {1})", "gg_pow({0}, {1})", "power",
         lambda a, b: (b * a ** (b - 1.0), a ** b * log(a)), c_float="powf", c_double="pow"),
    _u("exp", _ieee_exp, "expf", "exp", lambda a: (exp(a),)),
    _u("expm1", _ieee_expm1, "expm1f", "expm1", lambda a: (exp(a),)),
    _u("log", _log, "logf", "log", lambda a: (1.0 / a,)),
    _u("log1p", _log1p, "log1pf", "log1p", lambda a: (1.0 / (1.0 + a),)),
    _u("tanh", _tanh, "tanhf", "tanh", lambda a: (1.0 - tanh(a) * tanh(a),)),
    _u("erf", math.erf, "erff", "erf", lambda a: (_TWO_OVER_SQRT_PI * exp(-(a * a)),), ufunc="<erf>"),
    _u("sin", _periodic(math.sin), "sinf", "sin", lambda a: (cos(a),)),
    _u("cos", _periodic(math.cos), "cosf", "cos", lambda a: (-sin(a),)),
    _u("sqrt", _sqrt, "sqrtf", "sqrt", lambda a: (0.5 / sqrt(a),)),
    Prim("abs", 1, abs, "abs({0})", "gg_abs({0})", "absolute",
         lambda a: (where(a > 0.0, ONE, where(a < 0.0, const(-1.0), ZERO)),), c_float="fabsf", c_double="fabs"),
    _macro("sigmoid", _ref_sigmoid, lambda a: 1.0 / (1.0 + exp(-a)), lambda a: (sigmoid(a) * (1.0 - sigmoid(a)),)),
    _macro("softplus", _ref_softplus, lambda a: log1p(exp(a)), lambda a: (sigmoid(a),)),
    # sign: -1, 0 or 1 (a zero keeps its sign, a NaN stays NaN, as torch.sign); derivative 0
    _macro("sign", _ref_sign, lambda a: where(a > 0.0, 1.0, where(a < 0.0, -1.0, a)), lambda a: (ZERO,)),
    # max/min as C's and NumPy-free code spell them: a NaN in the first argument propagates
    Prim("max", 2, lambda a, b: b if a < b else a, "({1} if {0} < {1} else {0})", "gg_max({0}, {1})", "maximum",
         lambda a, b: (where(a < b, ZERO, ONE), where(a < b, ONE, ZERO)), repeats=(0, 1)),
    Prim("min", 2, lambda a, b: b if b < a else a, "({1} if {1} < {0} else {0})", "gg_min({0}, {1})", "minimum",
         lambda a, b: (where(b < a, ZERO, ONE), where(b < a, ONE, ZERO)), repeats=(0, 1)),
    # PyTorch's lerp: a + w (b - a) for w < 0.5, else b - (b - a)(1 - w)
    Prim("lerp", 3, _ref_lerp, "lerp({0}, {1}, {2})", "gg_lerp({0}, {1}, {2})", "<lerp>",
         lambda a, b, w: (1.0 - w, w, b - a)),
    Prim("where", 3, lambda c, a, b: a if c else b, "({1} if {0} else {2})", "({0} ? {1} : {2})", "where", None),
    _cmp("lt", "<", "less"), _cmp("le", "<=", "less_equal"), _cmp("gt", ">", "greater"),
    _cmp("ge", ">=", "greater_equal"), _cmp("eq", "==", "equal"), _cmp("ne", "!=", "not_equal"),
    Prim("and", 2, lambda a, b: bool(a) and bool(b), "({0} and {1})", "({0} && {1})", "logical_and", None, True),
    Prim("or", 2, lambda a, b: bool(a) or bool(b), "({0} or {1})", "({0} || {1})", "logical_or", None, True),
    Prim("not", 1, lambda a: not a, "(not {0})", "(!{0})", "logical_not", None, True),
)}


def exp(x) -> Expr: return node("exp", x)
def expm1(x) -> Expr: return node("expm1", x)
def log(x) -> Expr: return node("log", x)
def log1p(x) -> Expr: return node("log1p", x)
def tanh(x) -> Expr: return node("tanh", x)
def erf(x) -> Expr: return node("erf", x)
def sin(x) -> Expr: return node("sin", x)
def cos(x) -> Expr: return node("cos", x)
def sqrt(x) -> Expr: return node("sqrt", x)
def absolute(x) -> Expr: return node("abs", x)
def sigmoid(x) -> Expr: return node("sigmoid", x)
def softplus(x) -> Expr: return node("softplus", x)
def sign(x) -> Expr: return node("sign", x)
def where(c, a, b) -> Expr: return node("where", c, a, b)
def lerp(a, b, w) -> Expr: return node("lerp", a, b, w)
def logical_and(a, b) -> Expr: return node("and", a, b)
def logical_or(a, b) -> Expr: return node("or", a, b)
def logical_not(a) -> Expr: return node("not", a)


def maximum(a, b) -> Expr:
    """``b if a < b else a``: a NaN in ``a`` propagates (like ``std::max``)."""
    return node("max", a, b)


def minimum(a, b) -> Expr:
    """``b if b < a else a``: a NaN in ``a`` propagates (like ``std::min``)."""
    return node("min", a, b)


# ---------------------------------------------------------------------------------------- derivatives
def _add(a: Expr, b: Expr) -> Expr:
    if a is ZERO:
        return b
    if b is ZERO:
        return a
    return a + b


def _mul(a: Expr, b: Expr) -> Expr:
    if a is ZERO or b is ZERO:
        return ZERO
    return a * b


def diff(e: Expr, x: str, memo: dict | None = None) -> Expr:
    """``d e / d x`` (``x`` a variable's name) by the chain rule over each primitive's ``d``. Zeros are
    structural (``0 * anything`` drops), so branches that are constant vanish: relu's second derivative
    is 0, as PyTorch's. A ``where`` differentiates each branch; its condition is a step (derivative 0)."""
    memo = {} if memo is None else memo
    r = memo.get(id(e))
    if r is not None:
        return r
    if e.op == "var":
        r = ONE if e.value == x else ZERO
    elif e.op == "const":
        r = ZERO
    elif e.op == "where":
        c, a, b = e.args
        da, db = diff(a, x, memo), diff(b, x, memo)
        r = ZERO if (da is ZERO and db is ZERO) else where(c, da, db)
    else:
        p = PRIMS[e.op]
        if p.boolean or p.d is None:
            raise TypeError(f"{e.op} is not differentiable")
        dargs = [diff(a, x, memo) for a in e.args]
        if all(d is ZERO for d in dargs):
            r = ZERO
        elif e.op == "add":
            r = _add(*dargs)
        elif e.op == "sub":
            r = -dargs[1] if dargs[0] is ZERO else dargs[0] if dargs[1] is ZERO else dargs[0] - dargs[1]
        elif e.op == "neg":
            r = -dargs[0]
        elif e.op == "mul":
            r = _add(_mul(dargs[0], e.args[1]), _mul(e.args[0], dargs[1]))
        else:
            r = ZERO
            for part, da in zip(p.d(*e.args), dargs):
                r = _add(r, _mul(const(part), da))
    memo[id(e)] = r
    return r


def substitute(e: Expr, values: dict) -> Expr:
    """``e`` with variables replaced (``{name: Expr or number}``), re-simplified."""
    memo: dict = {}

    def go(n: Expr) -> Expr:
        r = memo.get(id(n))
        if r is None:
            if n.op == "var":
                r = const(values[n.value]) if n.value in values else n
            elif n.op == "const":
                r = n
            else:
                r = node(n.op, *(go(a) for a in n.args))
            memo[id(n)] = r
        return r
    return go(e)


def expand(e: Expr, memo: dict | None = None) -> Expr:
    """``e`` with every macro (``sigmoid``, ``softplus``) replaced by its body: what renderers compute."""
    memo = {} if memo is None else memo
    r = memo.get(id(e))
    if r is None:
        if e.op in ("var", "const"):
            r = e
        else:
            args = [expand(a, memo) for a in e.args]
            body = PRIMS[e.op].body
            r = expand(body(*args), memo) if body is not None else node(e.op, *args)
        memo[id(e)] = r
    return r


def variables(e: Expr) -> list[str]:
    """The names of the variables in ``e`` (first-seen order)."""
    out, seen, stack = [], set(), [e]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n.op == "var" and n.value not in out:
            out.append(n.value)
        stack.extend(reversed(n.args))
    return out


def size(e: Expr) -> int:
    """Distinct nodes in ``e`` (what straight-line code computes)."""
    seen, stack = set(), [e]
    while stack:
        n = stack.pop()
        if id(n) not in seen:
            seen.add(id(n))
            stack.extend(n.args)
    return len(seen)


# ---------------------------------------------------------------------------------------- the definition
def evaluate(e: Expr, env: dict, memo: dict | None = None):
    """``e`` in Python floats (float64, libm) with variables from ``env``: the definition tests compare
    every generated implementation to."""
    memo = {} if memo is None else memo
    r = memo.get(id(e))
    if r is not None or id(e) in memo:
        return r
    op = e.op
    if op == "var":
        r = float(env[e.value]) if not isinstance(env[e.value], bool) else env[e.value]
    elif op == "const":
        r = e.value
    elif op == "where":
        r = evaluate(e.args[1], env, memo) if evaluate(e.args[0], env, memo) else evaluate(e.args[2], env, memo)
    else:
        r = PRIMS[op].ref(*(evaluate(a, env, memo) for a in e.args))
    memo[id(e)] = r
    return r


# ---------------------------------------------------------------------------------------- rendering
class CStyle:
    """CUDA C: constants ``C(x)`` (the compute type), functions the ``gg_*`` overloads of :func:`c_prelude`."""

    def const(self, v: float) -> str:
        if math.isinf(v):
            return f"C({'-' if v < 0 else ''}INFINITY)"
        return f"C({v!r})"

    def var(self, name: str) -> str:
        return name

    def call(self, op: str, a: list) -> str:
        return PRIMS[op].c.format(*a)


class PyStyle:
    """Python scalar code (Numba): constants through ``const`` (default ``repr``), functions by their
    plain names (bound by :func:`py_namespace`); ``var`` maps a variable's name to its text."""

    def __init__(self, const: Callable[[float], str] | None = None, var: Callable[[str], str] | None = None):
        self._const, self._var = const, var

    def const(self, v: float) -> str:
        if self._const is not None:
            return self._const(v)
        return repr(v) if math.isfinite(v) else f"float({str(v)!r})"

    def var(self, name: str) -> str:
        return self._var(name) if self._var is not None else name

    def call(self, op: str, a: list) -> str:
        return PRIMS[op].py.format(*a)


def render(e: Expr, style, names: dict | None = None) -> str:
    """``e`` as one expression of ``style``; nodes in ``names`` (id -> text) are referenced by name."""
    names = {} if names is None else names
    e = expand(e)

    def text(n: Expr) -> str:
        t = names.get(id(n))
        if t is not None:
            return t
        if n.op == "const":
            return style.const(n.value)
        if n.op == "var":
            return style.var(n.value)
        return style.call(n.op, [text(a) for a in n.args])
    return text(e)


def _uses(roots: list, style) -> tuple[list, dict]:
    """Post-order list of the distinct operation nodes under ``roots`` and each node's number of reads in
    the rendered text (an argument the Python spelling repeats counts twice)."""
    order, count = [], {}
    py = isinstance(style, PyStyle)

    def visit(e):
        reps = PRIMS[e.op].repeats if (py and e.op in PRIMS) else ()
        for i, a in enumerate(e.args):
            count[id(a)] = count.get(id(a), 0) + (2 if i in reps else 1)
            if id(a) not in seen:
                seen.add(id(a))
                visit(a)
        if e.op not in ("var", "const"):
            order.append(e)
    seen: set = set()
    for r in roots:
        if id(r) not in seen:
            seen.add(id(r))
            visit(r)
    return order, count


def straight(roots, style, decl: str, prefix: str = "t") -> tuple[list[str], list[str]]:
    """Straight-line code for one or more expressions: nodes read more than once become temporaries
    (``decl.format(name=..., value=...)``). Returns ``(lines, texts of the roots)``."""
    roots = [expand(r) for r in (roots if isinstance(roots, (list, tuple)) else [roots])]
    order, count = _uses(roots, style)
    names: dict = {}
    lines = []
    for e in order:
        if count.get(id(e), 0) > 1 and not any(e is r for r in roots) and not PRIMS[e.op].boolean:
            t = render(e, style, names)
            names[id(e)] = f"{prefix}{len(names)}"
            lines.append(decl.format(name=names[id(e)], value=t))
    return lines, [render(r, style, names) for r in roots]


def xp_source(root: Expr, name: str, arrays: tuple, scalars: tuple, reuse: bool) -> str:
    """Array code for ``root``: ``def name(xp, erf, *arrays, *scalars, out=None)``, one NumPy/CuPy call per
    node in the tree's order, in the first array's dtype (constants and scalars cast to it). A ufunc
    writes into a temporary that dies at that node (``reuse``) or into ``out`` once no input is read again
    (``out`` may alias an input). Variables not in ``arrays`` or ``scalars`` are an error."""
    root = expand(root)
    order, count = _uses([root], None)
    left = dict(count)  # remaining reads per node
    inputs = [v for v in _leaves(root) if v.op == "var" and v.value in arrays]
    for v in _leaves(root):
        if v.op == "var" and v.value not in arrays and v.value not in scalars:
            raise NameError(f"{name}: variable {v.value!r} is neither an array nor a scalar argument")
    is_array = {id(v): True for v in inputs}
    val: dict = {}
    temps: dict = {}  # id(node) -> name of a float array this function allocated
    taken = False
    lines = [f"def {name}(xp, erf, lerp, {', '.join(arrays + scalars)}, out=None):", f"    T = {arrays[0]}.dtype.type"]
    lines += [f"    {s} = T({s})" for s in scalars if s in variables(root)]

    def arg(e):
        if id(e) in val:
            return val[id(e)]
        return e.value if e.op == "var" else f"T({e.value!r})"
    for i, e in enumerate(order):
        a = [arg(x) for x in e.args]
        for x in e.args:
            left[id(x)] -= 1
        p = PRIMS[e.op]
        is_array[id(e)] = any(is_array.get(id(x), False) for x in e.args)
        ufunc = p.ufunc if not p.ufunc.startswith("<") else None
        dst = None
        if ufunc and e.op != "where" and not p.boolean and is_array[id(e)]:
            if reuse:
                dst = next((temps[id(x)] for x in e.args if id(x) in temps and left[id(x)] == 0), None)
            if dst is None and not taken and all(left.get(id(v), 0) == 0 for v in inputs):
                dst, taken = "out", True
        if ufunc:
            call = f"xp.{ufunc}({', '.join(a)}" + (f", out={dst})" if dst else ")")
        else:
            call = f"{p.ufunc[1:-1]}({', '.join(a)})"
        val[id(e)] = f"t{i}"
        lines.append(f"    t{i} = {call}")
        if not p.boolean and is_array[id(e)]:
            temps[id(e)] = f"t{i}"
    r = arg(root)
    if root.op == "var" and root.value in scalars:
        r = f"xp.full({arrays[0]}.shape, {r}, dtype={arrays[0]}.dtype)"
    elif root.op == "const":
        r = f"xp.full({arrays[0]}.shape, {r}, dtype={arrays[0]}.dtype)"
    lines += [f"    r = {r}", "    if out is not None and r is not out:", "        out[...] = r",
              "        return out", f"    return r if r.dtype == {arrays[0]}.dtype else r.astype({arrays[0]}.dtype)",
              ""]
    return "\n".join(lines)


def _leaves(root: Expr) -> list:
    out, stack, seen = [], [root], set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if e.op in ("var", "const"):
            out.append(e)
        stack.extend(e.args)
    return out


def c_prelude() -> str:
    """The C side of the table: ``gg_<name>`` overloads for float and double compute (``__host__
    __device__`` under a CUDA compiler, plain inline functions under a host C++ compiler)."""
    out = ["#ifndef GG_EXPR_PRELUDE", "#define GG_EXPR_PRELUDE",
           "#if defined(__CUDACC__) || defined(__CUDACC_RTC__)",
           "#define GG_FN __host__ __device__ __forceinline__", "#else", "#define GG_FN inline", "#endif"]
    for p in PRIMS.values():
        if p.c_float is None:
            continue
        params = ", ".join(f"{{t}} x{i}" for i in range(p.arity))
        argv = ", ".join(f"x{i}" for i in range(p.arity))
        for t, fn in (("float", p.c_float), ("double", p.c_double)):
            out.append(f"GG_FN {t} gg_{p.name}({params.format(t=t)}) {{ return {fn}({argv}); }}")
    C = CStyle()
    for name in ("max", "min", "lerp"):
        p = PRIMS[name]
        args = [var(f"x{i}") for i in range(p.arity)]
        body = render(_BODIES[name](*args), C)
        params = ", ".join(f"C x{i}" for i in range(p.arity))
        out.append(f"template <typename C> GG_FN C gg_{name}({params}) {{ return {body}; }}")
    out.append("#endif  // GG_EXPR_PRELUDE")
    return "\n".join(out)


# the composite primitives' bodies in the language itself (C templates, Python helpers)
_BODIES: dict = {
    "max": lambda a, b: where(a < b, b, a),
    "min": lambda a, b: where(b < a, b, a),
    "lerp": lambda a, b, w: where(w < 0.5, a + w * (b - a), b - (b - a) * (1.0 - w)),
}


def py_helper_source(name: str, const: Callable[[float], str] | None = None) -> str:
    """``def <name>(...)``: a composite primitive (``lerp``) as a Python scalar function, constants
    rendered by ``const`` (e.g. typed ``F(0.5)`` for float32 Numba code)."""
    p = PRIMS[name]
    args = [var(f"x{i}") for i in range(p.arity)]
    body = render(_BODIES[name](*args), PyStyle(const))
    return f"def {name}({', '.join(f'x{i}' for i in range(p.arity))}):\n    return {body}\n"


def py_namespace(ieee: bool = False) -> dict:
    """The functions Python scalar code calls, by their names in the table (``math``'s; ``ieee``: an
    ``exp``/``expm1`` that return inf on overflow, for code run as Python, e.g. in the CUDA simulator)."""
    ns = {"exp": math.exp, "expm1": math.expm1, "log": math.log, "log1p": math.log1p, "tanh": math.tanh,
          "erf": math.erf, "sin": math.sin, "cos": math.cos, "sqrt": math.sqrt, "abs": abs}
    if ieee:
        ns["exp"], ns["expm1"] = _ieee_exp, _ieee_expm1
    return ns
