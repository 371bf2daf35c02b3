"""Every activation, defined once: name, integer code, forward, derivative, and what backward saves.

Each formula is written once below as a small expression over symbols (tinygrad-style: traced into a
tree of primitive ops), and every implementation is generated from that tree:

- :func:`xp_functions` - NumPy/CuPy array code for the generic backend (in place where possible);
- :func:`scalar_source` - Python scalar source, compiled by Numba ``njit`` (CPU fused passes,
  ``gpugrad.backends.cpu_numba``) and ``cuda.jit`` (the Numba CUDA kernels, :func:`device_functions`);
- :func:`cuda_header` - the CUDA C device functions and code enum in ``activations.cuh`` (checked in;
  ``python -m gpugrad.kernels.activations`` rewrites it, and a test checks it is up to date), spliced into
  ``fused.cu`` and ``fused_mlp.cu`` by :func:`cuda_source`;
- :func:`evaluate` - a direct float64 interpreter of the tree: the definition every test compares to.

The fused MLP kernel and the cuBLASLt epilogue table are parameterised by the same records
(:data:`FUSED_MLP`, ``Activation.cublaslt``). Nothing here imports gpugrad (kernels/ is the bottom layer).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _numba


# ---------------------------------------------------------------------------------------- expressions
class Expr:
    """A node of an activation formula: ``op`` with ``args`` (``var``: a named input, ``const``: a
    float). Python operators build the tree; constant subtrees are folded."""

    __slots__ = ("op", "args", "value")

    def __init__(self, op: str, args: tuple = (), value=None) -> None:
        self.op, self.args, self.value = op, args, value

    def __add__(self, o): return _node("add", self, o)
    def __radd__(self, o): return _node("add", o, self)
    def __sub__(self, o): return _node("sub", self, o)
    def __rsub__(self, o): return _node("sub", o, self)
    def __mul__(self, o): return _node("mul", self, o)
    def __rmul__(self, o): return _node("mul", o, self)
    def __truediv__(self, o): return _node("div", self, o)
    def __rtruediv__(self, o): return _node("div", o, self)
    def __neg__(self): return _node("neg", self)
    def __lt__(self, o): return _node("lt", self, o)
    def __gt__(self, o): return _node("gt", self, o)
    __hash__ = object.__hash__


_FOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "div": lambda a, b: a / b, "neg": lambda a: -a}
_BOOL_OPS = ("lt", "gt")


def _wrap(x) -> Expr:
    return x if isinstance(x, Expr) else Expr("const", (), float(x))


def _node(op: str, *args) -> Expr:
    args = tuple(_wrap(a) for a in args)
    if op in _FOLD and all(a.op == "const" for a in args):
        return Expr("const", (), float(_FOLD[op](*(a.value for a in args))))
    return Expr(op, args)


def exp(x) -> Expr: return _node("exp", x)
def tanh(x) -> Expr: return _node("tanh", x)
def erf(x) -> Expr: return _node("erf", x)
def where(c, a, b) -> Expr: return _node("where", c, a, b)
def maximum(a, b) -> Expr:
    """``max(a, b)`` that propagates a NaN in ``a`` (like ``np.maximum``)."""
    return _node("max", a, b)


# ---------------------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class Activation:
    """One activation. ``forward(v, slope)`` gives ``y``; ``derivative(dy, s, slope)`` gives
    ``dz = dy * act'`` from the saved array ``s``: ``saves`` is ``"y"`` (the output), ``"z"`` (the
    pre-activation) or ``"none"``; ``negative_slope_saves`` overrides it when ``slope < 0``.
    ``cublaslt``: ``(forward epilogue, backward epilogue, aux operand)`` where cuBLASLt fuses it."""

    name: str
    code: int
    forward: Callable
    derivative: Callable
    saves: str
    negative_slope_saves: str | None = None
    uses_slope: bool = False
    cublaslt: tuple[str, str, str] | None = None


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_A = 0.044715


def _gelu_tanh_grad(s):
    th = tanh(SQRT_2_OVER_PI * (s + GELU_A * s * s * s))
    return 0.5 * (1.0 + th) + 0.5 * s * (1.0 - th * th) * SQRT_2_OVER_PI * (1.0 + 3 * GELU_A * s * s)


def _gelu_grad(s):
    cdf = 0.5 * (1.0 + erf(s * INV_SQRT_2))
    pdf = exp(-0.5 * s * s) * INV_SQRT_2PI
    return cdf + s * pdf


ALL: tuple[Activation, ...] = (
    Activation("identity", 0, lambda v, k: v, lambda dy, s, k: dy, "none"),
    Activation("relu", 1, lambda v, k: maximum(v, 0.0), lambda dy, s, k: where(s > 0.0, dy, 0.0), "y",
               cublaslt=("RELU_AUX_BIAS", "DRELU_BGRAD", "relu_aux")),
    # with slope < 0 the output's sign no longer tells the branch: backward needs z
    Activation("leaky_relu", 2, lambda v, k: where(v > 0.0, v, v * k), lambda dy, s, k: where(s > 0.0, dy, dy * k),
               "y", negative_slope_saves="z", uses_slope=True),
    Activation("sigmoid", 3, lambda v, k: 1.0 / (1.0 + exp(-v)), lambda dy, s, k: dy * s * (1.0 - s), "y"),
    Activation("tanh", 4, lambda v, k: tanh(v), lambda dy, s, k: dy * (1.0 - s * s), "y"),
    Activation("gelu", 5, lambda v, k: 0.5 * v * (1.0 + erf(v * INV_SQRT_2)), lambda dy, s, k: dy * _gelu_grad(s),
               "z"),
    Activation("gelu_tanh", 6, lambda v, k: 0.5 * v * (1.0 + tanh(SQRT_2_OVER_PI * (v + GELU_A * v * v * v))),
               lambda dy, s, k: dy * _gelu_tanh_grad(s), "z",
               cublaslt=("GELU_AUX_BIAS", "DGELU_BGRAD", "gelu_aux")),
)
BY_NAME: dict[str, Activation] = {a.name: a for a in ALL}
BY_CODE: dict[int, Activation] = {a.code: a for a in ALL}
ACTIVATIONS: tuple[str, ...] = tuple(BY_NAME)
CODES: dict[str, int] = {a.name: a.code for a in ALL}
# The fully fused MLP takes the derivative from the saved float16 output and has no slope argument.
FUSED_MLP: tuple[str, ...] = tuple(a.name for a in ALL if a.saves in ("y", "none") and not a.uses_slope)


def get(name: str) -> Activation:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}") from None


def act_code(name: str) -> int:
    return get(name).code


def saves(name: str, slope: float = 0.01) -> str:
    """What backward needs: ``"y"`` (the output), ``"z"`` (the pre-activation) or ``"none"``."""
    a = get(name)
    return a.negative_slope_saves if (a.negative_slope_saves and slope < 0) else a.saves


def saves_output(name: str, slope: float = 0.01) -> bool:
    """True if backward needs only the output ``y`` (so ``y`` may overwrite ``z``)."""
    return saves(name, slope) == "y"


_V, _DY, _S, _K = Expr("var", (), "v"), Expr("var", (), "dy"), Expr("var", (), "s"), Expr("var", (), "slope")


def trees(a: Activation) -> tuple[Expr, Expr]:
    """``(forward tree over v, slope; derivative tree over dy, s, slope)``."""
    return _wrap(a.forward(_V, _K)), _wrap(a.derivative(_DY, _S, _K))


# ---------------------------------------------------------------------------------------- interpreter
def _ieee_exp(x):
    """``exp`` that overflows to inf as the hardware does (Python's ``math.exp`` raises): for the CUDA
    simulator, which runs device functions as Python on NumPy scalars (kept in their type)."""
    if isinstance(x, np.floating):
        with np.errstate(over="ignore"):
            return np.exp(x)
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


_MATH = {"exp": _ieee_exp, "tanh": math.tanh, "erf": math.erf}


def evaluate(e: Expr, env: dict) -> float:
    """The tree evaluated in Python floats (float64, libm): the definition the tests check against."""
    op = e.op
    if op == "var":
        return float(env[e.value])
    if op == "const":
        return e.value
    if op == "where":
        return evaluate(e.args[1], env) if evaluate(e.args[0], env) else evaluate(e.args[2], env)
    a = [evaluate(x, env) for x in e.args]
    if op in _MATH:
        return _MATH[op](a[0])
    if op == "div":
        return a[0] / a[1] if a[1] != 0 else math.copysign(math.inf, a[0]) if a[0] else math.nan
    if op == "max":
        return a[1] if a[0] < a[1] else a[0]
    if op == "lt":
        return a[0] < a[1]
    if op == "gt":
        return a[0] > a[1]
    return _FOLD[op](*a)


def forward_ref(z, act: str, slope: float = 0.01) -> np.ndarray:
    """``act(z)`` in float64, element by element through :func:`evaluate`."""
    f = trees(get(act))[0]
    z = np.asarray(z, dtype=np.float64)
    return np.array([evaluate(f, {"v": v, "slope": slope}) for v in z.ravel()], dtype=np.float64).reshape(z.shape)


def backward_ref(dy, saved, act: str, slope: float = 0.01) -> np.ndarray:
    """``dz = dy * act'`` in float64 from ``saved`` (as :func:`saves` says), through :func:`evaluate`."""
    d = trees(get(act))[1]
    dy = np.asarray(dy, dtype=np.float64)
    s = np.broadcast_to(np.asarray(dy if saved is None else saved, dtype=np.float64), dy.shape)
    out = [evaluate(d, {"dy": g, "s": v, "slope": slope}) for g, v in zip(dy.ravel(), s.ravel())]
    return np.array(out, dtype=np.float64).reshape(dy.shape)


# ---------------------------------------------------------------------------------------- rendering
def _uses(root: Expr) -> tuple[list, dict]:
    """Post-order list of the distinct non-leaf nodes and each node's number of uses."""
    order, count = [], {}

    def visit(e):
        for a in e.args:
            count[id(a)] = count.get(id(a), 0) + 1
            if count[id(a)] == 1:
                visit(a)
        if e.op not in ("var", "const"):
            order.append(e)
    visit(root)
    return order, count


_C_BIN = {"add": "+", "sub": "-", "mul": "*", "div": "/", "lt": "<", "gt": ">"}


def _render_straight(root: Expr, leaf, fn, cond, decl: str, ret: str) -> list[str]:
    """Straight-line code: nodes used more than once become named temporaries, the rest nest."""
    order, count = _uses(root)
    names: dict = {}

    def text(e):
        if id(e) in names:
            return names[id(e)]
        if e.op in ("var", "const"):
            return leaf(e)
        a = [text(x) for x in e.args]
        if e.op in _C_BIN:
            return f"({a[0]} {_C_BIN[e.op]} {a[1]})"
        if e.op == "neg":
            return f"(-{a[0]})"
        if e.op == "where":
            return cond(a[0], a[1], a[2])
        if e.op == "max":
            return cond(f"({a[0]} < {a[1]})", a[1], a[0])
        return fn(e.op, a[0])
    lines = []
    for e in order:
        if count.get(id(e), 0) > 1 and e is not root:
            t = text(e)
            names[id(e)] = f"t{len(names)}"
            lines.append(decl.format(name=names[id(e)], value=t))
    lines.append(ret.format(value=text(root)))
    return lines


def _c_const(x: float) -> str:
    return f"C({x!r})"


def cuda_header() -> str:
    """The generated CUDA C: the code enum, one ``fwd_<name>``/``bwd_<name>`` per activation, the
    ``act_fwd``/``act_bwd`` switches and the fused MLP's ``mlp_act_fwd``/``mlp_act_bwd`` (its subset, no
    slope; backward from the output) - ``__host__ __device__``, for float and double."""
    out = [
        "// Generated from gpugrad/kernels/activations.py (the one definition of every activation): do not edit.",
        "// Regenerate with `python -m gpugrad.kernels.activations`; tests/test_activations.py checks it is current.",
        "#ifndef GPUGRAD_ACTIVATIONS_CUH",
        "#define GPUGRAD_ACTIVATIONS_CUH",
        "namespace gg_act {",
        "",
        "enum Code { " + ", ".join(f"{a.name.upper()} = {a.code}" for a in ALL) + " };",
        "",
        "__host__ __device__ __forceinline__ float exp_(float x) { return expf(x); }",
        "__host__ __device__ __forceinline__ double exp_(double x) { return exp(x); }",
        "__host__ __device__ __forceinline__ float tanh_(float x) { return tanhf(x); }",
        "__host__ __device__ __forceinline__ double tanh_(double x) { return tanh(x); }",
        "__host__ __device__ __forceinline__ float erf_(float x) { return erff(x); }",
        "__host__ __device__ __forceinline__ double erf_(double x) { return erf(x); }",
    ]

    def leaf(e):
        return e.value if e.op == "var" else _c_const(e.value)
    kw = dict(leaf=leaf, fn=lambda f, x: f"{f}_({x})", cond=lambda c, a, b: f"({c} ? {a} : {b})",
              decl="    const C {name} = {value};", ret="    return {value};")
    for a in ALL:
        f, d = trees(a)
        out += ["", "template <typename C>",
                f"__host__ __device__ __forceinline__ C fwd_{a.name}(C v, C slope) {{"]
        out += _render_straight(f, **kw) + ["}", "template <typename C>"]
        out += [f"__host__ __device__ __forceinline__ C bwd_{a.name}(C dy, C s, C slope) {{"]
        out += _render_straight(d, **kw) + ["}"]
    for kind, params, args in (("fwd", "C v", "v, slope"), ("bwd", "C dy, C s", "dy, s, slope")):
        out += ["", "template <typename C>",
                f"__host__ __device__ __forceinline__ C act_{kind}({params}, int code, C slope) {{",
                "    switch (code) {"]
        out += [f"    case {a.name.upper()}: return {kind}_{a.name}<C>({args});" for a in ALL if a.code != 0]
        out += [f"    default: return {kind}_identity<C>({args});", "    }", "}"]
    # the fused MLP's switches: only its activations (FUSED_MLP), so its kernels carry no other code;
    # backward as dy * act'(y), the derivative at dy = 1 (the kernel's rounding: one multiply by dy last)
    for kind, params, call in (("fwd", "C v", "fwd_{n}<C>(v, C(0))"), ("bwd", "C dy, C y", "dy * bwd_{n}<C>(C(1), y, C(0))")):
        out += ["", "template <typename C>",
                f"__host__ __device__ __forceinline__ C mlp_act_{kind}({params}, int code) {{", "    switch (code) {"]
        out += [f"    case {n.upper()}: return {call.format(n=n)};" for n in FUSED_MLP if n != "identity"]
        out += [f"    default: return {call.format(n='identity')};", "    }", "}"]
    out += ["", "}  // namespace gg_act", "#endif  // GPUGRAD_ACTIVATIONS_CUH", ""]
    return "\n".join(out)


HEADER = "activations.cuh"
_INCLUDE = f'#include "{HEADER}"'


def header_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), HEADER)


def cuda_source(path: str) -> str:
    """A ``.cu`` file's text with ``#include "activations.cuh"`` replaced by the generated header, so
    NVRTC needs no include path and CuPy's compile cache keys on the real text."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    return src.replace(_INCLUDE, cuda_header())


def scalar_source() -> str:
    """Python source of ``act_fwd(v, code, slope)`` and ``act_bwd(dy, s, code, slope)``:
    scalar code for Numba (the globals ``exp``, ``tanh``, ``erf`` and the constants ``K0, K1, ...``
    listed by :func:`scalar_constants` are bound by :func:`scalar_functions`)."""
    consts: list = scalar_constants()
    index = {c: i for i, c in enumerate(consts)}

    def leaf(e):
        return e.value if e.op == "var" else f"K{index[e.value]}"
    kw = dict(leaf=leaf, fn=lambda f, x: f"{f}({x})", cond=lambda c, a, b: f"({a} if {c} else {b})",
              decl="        {name} = {value}", ret="        return {value}")
    out = []
    for kind, params, idx, fallback in (("fwd", "v", 0, "v"), ("bwd", "dy, s", 1, "dy")):
        out.append(f"def act_{kind}({params}, code, slope):")
        for a in ALL:
            if a.code == 0:
                continue
            out.append(f"    if code == {a.code}:")
            out += _render_straight(trees(a)[idx], **kw)
        out.append(f"    return {fallback}")
        out.append("")
    return "\n".join(out)


def scalar_constants() -> list[float]:
    """The distinct constants of every formula, in the order of ``K0, K1, ...`` in :func:`scalar_source`."""
    seen: dict = {}

    def visit(e):
        if e.op == "const":
            seen.setdefault(e.value, None)
        for x in e.args:
            visit(x)
    for a in ALL:
        for t in trees(a):
            visit(t)
    return list(seen)


def scalar_functions(const_type: Callable = float, ieee_exp: bool = False) -> dict:
    """``{"act_fwd": f, "act_bwd": g}`` (plain Python functions, for a compiler to wrap), with the
    constants converted by ``const_type`` (e.g. ``np.float32`` so float32 kernels stay float32);
    ``ieee_exp`` binds an ``exp`` that returns inf on overflow (for code run as Python)."""
    ns: dict = {"exp": _ieee_exp if ieee_exp else math.exp, "tanh": math.tanh, "erf": math.erf}
    ns.update({f"K{i}": const_type(c) for i, c in enumerate(scalar_constants())})
    exec(compile(scalar_source(), "<activations:scalar>", "exec"), ns)
    return {k: ns[k] for k in ("act_fwd", "act_bwd")}


# ---------------------------------------------------------------------------------------- array code
_UFUNC = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide", "neg": "negative", "exp": "exp",
          "tanh": "tanh", "max": "maximum", "lt": "less", "gt": "greater"}


def _xp_source(root: Expr, params: tuple, name: str, reuse: bool) -> str:
    """Array code for one formula: one ufunc call per node, writing into a temporary that dies at that
    node (``reuse``) or into ``out`` once no input is read again (``out`` may alias the input)."""
    order, count = _uses(root)
    left = dict(count)  # remaining reads per node
    arrays = [p for p in params if p != "slope"]
    inputs = [v for v in _vars(root) if v.value in arrays]
    is_array = {id(v): True for v in inputs}
    val: dict = {}
    temps: dict = {}  # id(node) -> name of a float array this function allocated
    taken = False
    lines = [f"def {name}(xp, erf, {', '.join(params)}, out=None):",
             f"    T = {params[0]}.dtype.type", "    slope = T(slope)"]

    def arg(e):
        if id(e) in val:
            return val[id(e)]
        return e.value if e.op == "var" else f"T({e.value!r})"
    for i, e in enumerate(order):
        a = [arg(x) for x in e.args]
        for x in e.args:
            left[id(x)] -= 1
        is_array[id(e)] = any(is_array.get(id(x), False) for x in e.args)
        dst = None
        if e.op in _UFUNC and e.op not in _BOOL_OPS and is_array[id(e)]:
            if reuse:
                dst = next((temps[id(x)] for x in e.args if id(x) in temps and left[id(x)] == 0), None)
            if dst is None and not taken and all(left.get(id(v), 0) == 0 for v in inputs):
                dst, taken = "out", True
        if e.op in _UFUNC:
            call = f"xp.{_UFUNC[e.op]}({', '.join(a)}" + (f", out={dst})" if dst else ")")
        elif e.op == "erf":
            call = f"erf({a[0]})"
        else:  # where
            call = f"xp.where({', '.join(a)})"
        val[id(e)] = f"t{i}"
        lines.append(f"    t{i} = {call}")
        if e.op not in _BOOL_OPS and is_array[id(e)]:
            temps[id(e)] = f"t{i}"
    lines += [f"    r = {arg(root)}", "    if out is not None and r is not out:", "        out[...] = r",
              "        return out",
              f"    return r if r.dtype == {params[0]}.dtype else r.astype({params[0]}.dtype)", ""]
    return "\n".join(lines)


def _vars(root: Expr) -> list:
    out, stack, seen = [], [root], set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if e.op == "var":
            out.append(e)
        stack.extend(e.args)
    return out


_xp_cache: dict = {}


def xp_functions(name: str, reuse: bool = True) -> tuple[Callable, Callable]:
    """``(forward(xp, erf, v, slope, out=None), backward(xp, erf, dy, s, slope))`` for the generic
    backend: NumPy or CuPy ufunc calls in the tree's order, in the input dtype (constants are cast to
    it). ``reuse`` lets temporaries be overwritten (needs ``dy`` and ``s`` of one shape and dtype)."""
    key = (name, reuse)
    fns = _xp_cache.get(key)
    if fns is None:
        f, d = trees(get(name))
        ns: dict = {}
        exec(compile(_xp_source(f, ("v", "slope"), "forward", reuse) + _xp_source(d, ("dy", "s", "slope"), "backward",
                                                                                 reuse), f"<activations:xp:{name}>",
                     "exec"), ns)
        fns = _xp_cache[key] = (ns["forward"], ns["backward"])
    return fns


# ---------------------------------------------------------------------------------------- references
def _erf64(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x.astype(np.float64)


def act_forward_ref(z, act: str, slope: float = 0.01) -> np.ndarray:
    """``act(z)`` in float64 NumPy (the generated array code; the kernels' test reference)."""
    z = np.array(z, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return xp_functions(act)[0](np, _erf64, z, slope)


def act_backward_ref(dy, saved, act: str, slope: float = 0.01) -> np.ndarray:
    """``dz = dy * act'`` in float64; ``saved`` is what :func:`saves` names (``y`` or ``z``)."""
    dy = np.array(dy, dtype=np.float64)
    s = dy if saved is None else np.asarray(saved, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return xp_functions(act, reuse=False)[1](np, _erf64, dy, s, slope)


# ---------------------------------------------------------------------------------------- device code
def device_functions(cdt):
    """``(act_fwd(v, code, slope), act_bwd(dy, s, code, slope))`` as Numba CUDA device functions that
    compute in ``cdt`` (float32 or float64; constants of that type); built once per dtype."""
    cdt = np.dtype(cdt)

    def build():
        cuda = _numba.nb_cuda()
        fns = scalar_functions(cdt.type, ieee_exp=_numba.simulating())
        jit = cuda.jit(device=True, inline=True)
        return jit(fns["act_fwd"]), jit(fns["act_bwd"])
    return _numba.cached(("act_device", cdt.str), build)


if __name__ == "__main__":  # python -m gpugrad.kernels.activations: rewrite the generated header
    with open(header_path(), "w", encoding="utf-8") as fh:
        fh.write(cuda_header())
    print("wrote", header_path())
