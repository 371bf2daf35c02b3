"""Every activation, defined once: name, integer code, parameters, forward, first derivative, and what
backward saves. Derivatives of every higher order are derived from it.

Each formula is written once below as a small expression of the one expression language
(:mod:`gpugrad.kernels.expr`, whose primitive table also serves the optimizer rules), and every
implementation is generated from those trees:

- :func:`xp_functions` - NumPy/CuPy array code for the generic backend (in place where possible);
- :func:`scalar_source` - Python scalar source, compiled by Numba ``njit`` (CPU fused passes,
  ``gpugrad.backends.cpu_numba``) and ``cuda.jit`` (the Numba CUDA kernels, :func:`device_functions`);
- :func:`cuda_header` - the CUDA C device functions and code enum in ``activations.cuh`` (checked in;
  ``python -m gpugrad.kernels.activations`` rewrites it, and a test checks it is up to date), spliced into
  ``fused.cu`` and ``fused_mlp.cu`` by :func:`cuda_source`;
- :func:`evaluate` - the float64 interpreter of a tree: the definition every test compares to.

An activation's first derivative is written in PyTorch's order of operations as ``backward(dy, s, p)``
(``dy * act'(z)``) from what backward saves (``saves``: the output ``y``, the pre-activation ``z`` or
nothing). :func:`derivative` gives ``d^k act / dz^k`` for any ``k``, in terms of the same saved symbol
``s`` (for ``s = y``: ``d/dz g(y) = g'(y) * act'(z)``), so a double backward needs nothing more saved than
the first backward. Non-smooth points get derivative 0 from the steps (relu'' = 0, as PyTorch); where
PyTorch's second-derivative formula takes a different side of a kink than the first derivative's
(elu/selu at 0, softplus at the threshold) the record declares it (``higher``).

Parameters (``negative_slope``, ``beta``/``threshold``, ``alpha``, ``min_val``/``max_val``) are the
symbols ``p0, p1, ...`` of the trees; kernels take :data:`NPARAMS` of them (:func:`kernel_params`).
The fused MLP kernel and the cuBLASLt epilogue table are parameterised by the same records
(:data:`FUSED_MLP`, ``Activation.cublaslt``). Nothing here imports gpugrad (kernels/ is the bottom layer).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import _numba
from . import expr as E
from .expr import Expr, cos, erf, evaluate, exp, expm1, log1p, maximum, minimum, sigmoid, sin, softplus, tanh, where

__all__ = ["Activation", "ALL", "ACTIVATIONS", "BY_NAME", "BY_CODE", "CODES", "FUSED_MLP", "NPARAMS", "KERNEL_ORDERS",
           "get", "act_code", "params", "kernel_params", "saves", "saves_output", "trees", "derivative",
           "backward_tree", "evaluate", "forward_ref", "backward_ref", "cuda_header", "cuda_source", "header_path",
           "scalar_source", "scalar_functions", "xp_functions", "act_forward_ref", "act_backward_ref",
           "device_functions"]


# ---------------------------------------------------------------------------------------- definitions
@dataclass(frozen=True)
class Activation:
    """One activation. ``forward(z, p)`` gives ``y``; ``backward(dy, s, p)`` gives ``dz = dy * act'``
    from the saved array ``s``: ``saves`` is ``"y"`` (the output), ``"z"`` (the pre-activation) or
    ``"none"``; ``saves_z_when(params)`` switches to ``"z"`` where the output no longer tells the branch
    (leaky_relu with a negative slope). ``params``: ``(name, default)`` pairs, PyTorch's names; ``p`` is
    the tuple of their symbols. ``higher``: ``{order: (s, p) -> act^(order)}`` declared where PyTorch's
    convention at a kink differs from the derived one. ``cublaslt``: ``(forward epilogue, backward
    epilogue, aux operand)`` where cuBLASLt fuses it."""

    name: str
    code: int
    forward: Callable
    backward: Callable
    saves: str
    params: tuple = ()
    saves_z_when: Callable | None = None
    higher: dict = field(default_factory=dict)
    cublaslt: tuple[str, str, str] | None = None


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_A = 0.044715
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _gelu_tanh_grad(s):
    th = tanh(SQRT_2_OVER_PI * (s + GELU_A * s * s * s))
    return 0.5 * (1.0 + th) + 0.5 * s * (1.0 - th * th) * SQRT_2_OVER_PI * (1.0 + 3 * GELU_A * s * s)


def _gelu_grad(s):
    cdf = 0.5 * (1.0 + erf(s * INV_SQRT_2))
    pdf = exp(-0.5 * s * s) * INV_SQRT_2PI
    return cdf + s * pdf


def _clamp(v, lo, hi):
    """PyTorch's clamp/hardtanh: ``min(max(v, lo), hi)`` (a NaN propagates)."""
    return minimum(maximum(v, lo), hi)


def _clamp_grad(dy, s, lo, hi):
    """hardtanh's backward from ``y`` (or ``z``): 0 at and beyond both bounds, as PyTorch."""
    return where(s <= lo, 0.0, where(s >= hi, 0.0, dy))


def _elu(v, neg, pos):
    """PyTorch's elu kernel (input_scale 1): ``(exp(v) - 1) * alpha*scale`` for ``v <= 0``, else ``v * scale``."""
    return where(v <= 0.0, (exp(v) - 1.0) * neg, v * pos)


def _elu_grad(dy, s, neg, pos):
    return where(s <= 0.0, dy * neg * exp(s), dy * pos)


def _mish_grad(dy, s):
    ts = tanh(softplus(s))
    return dy * (ts + s * sigmoid(s) * (1.0 - ts * ts))


def _hardsigmoid(v):
    return _clamp(v + 3.0, 0.0, 6.0) / 6.0


# PyTorch 2.13's formulas and operation order (aten/src/ATen/native/cpu/Activation.cpp, derivatives.yaml):
ALL: tuple[Activation, ...] = (
    Activation("identity", 0, lambda v, p: v, lambda dy, s, p: dy, "none"),
    Activation("relu", 1, lambda v, p: maximum(v, 0.0), lambda dy, s, p: where(s > 0.0, dy, 0.0), "y",
               cublaslt=("RELU_AUX_BIAS", "DRELU_BGRAD", "relu_aux")),
    # with slope < 0 the output's sign no longer tells the branch: backward needs z
    Activation("leaky_relu", 2, lambda v, p: where(v > 0.0, v, v * p[0]),
               lambda dy, s, p: where(s > 0.0, dy, dy * p[0]), "y", params=(("negative_slope", 0.01),),
               saves_z_when=lambda prm: prm[0] < 0),
    Activation("sigmoid", 3, lambda v, p: sigmoid(v), lambda dy, s, p: dy * s * (1.0 - s), "y"),
    Activation("tanh", 4, lambda v, p: tanh(v), lambda dy, s, p: dy * (1.0 - s * s), "y"),
    Activation("gelu", 5, lambda v, p: 0.5 * v * (1.0 + erf(v * INV_SQRT_2)), lambda dy, s, p: dy * _gelu_grad(s),
               "z"),
    Activation("gelu_tanh", 6, lambda v, p: 0.5 * v * (1.0 + tanh(SQRT_2_OVER_PI * (v + GELU_A * v * v * v))),
               lambda dy, s, p: dy * _gelu_tanh_grad(s), "z",
               cublaslt=("GELU_AUX_BIAS", "DGELU_BGRAD", "gelu_aux")),
    Activation("silu", 7, lambda v, p: v / (1.0 + exp(-v)),
               lambda dy, s, p: dy * sigmoid(s) * (1.0 + s * (1.0 - sigmoid(s))), "z"),
    # linear above the threshold (in beta * z); second derivative 0 from the threshold on (x < threshold)
    Activation("softplus", 8, lambda v, p: where(v * p[0] > p[1], v, softplus(v * p[0]) / p[0]),
               lambda dy, s, p: where(s * p[0] > p[1], dy, dy * exp(s * p[0]) / (exp(s * p[0]) + 1.0)), "z",
               params=(("beta", 1.0), ("threshold", 20.0)),
               higher={2: lambda s, p: where(s * p[0] < p[1], p[0] * sigmoid(s * p[0]) * (1.0 - sigmoid(s * p[0])),
                                             0.0)}),
    # elu/selu's second derivative is 0 at z = 0 in PyTorch (self < 0), the first derivative's branch is z <= 0
    Activation("elu", 9, lambda v, p: _elu(v, p[0], 1.0), lambda dy, s, p: _elu_grad(dy, s, p[0], 1.0), "z",
               params=(("alpha", 1.0),), higher={2: lambda s, p: where(s < 0.0, p[0] * exp(s), 0.0)}),
    Activation("selu", 10, lambda v, p: _elu(v, SELU_ALPHA * SELU_SCALE, SELU_SCALE),
               lambda dy, s, p: _elu_grad(dy, s, SELU_ALPHA * SELU_SCALE, SELU_SCALE), "z",
               higher={2: lambda s, p: where(s < 0.0, SELU_ALPHA * SELU_SCALE * exp(s), 0.0)}),
    Activation("mish", 11, lambda v, p: v * tanh(softplus(v)), lambda dy, s, p: _mish_grad(dy, s), "z"),
    # PyTorch 2.13 (recorded): 0 up to -3, x/3 + 1/2 on the open interval (-3, 3), 1 from 3 on; so the
    # second derivative is 1/3 on (-3, 3) only, as PyTorch's double backward
    Activation("hardswish", 12, lambda v, p: v * _clamp(v + 3.0, 0.0, 6.0) / 6.0,
               lambda dy, s, p: where(s <= -3.0, 0.0, where(s < 3.0, dy * (s / 3.0 + 0.5), dy)), "z"),
    # z, not y: y = (z + 3) / 6 rounds to 1 just below z = 3 in float32, where the derivative is still 1/6
    Activation("hardsigmoid", 13, lambda v, p: _hardsigmoid(v),
               lambda dy, s, p: where(s > -3.0, where(s < 3.0, dy * (1.0 / 6.0), 0.0), 0.0), "z"),
    Activation("relu6", 14, lambda v, p: _clamp(v, 0.0, 6.0), lambda dy, s, p: _clamp_grad(dy, s, 0.0, 6.0), "y"),
    Activation("hardtanh", 15, lambda v, p: _clamp(v, p[0], p[1]), lambda dy, s, p: _clamp_grad(dy, s, p[0], p[1]),
               "y", params=(("min_val", -1.0), ("max_val", 1.0))),
    # log(sigmoid(z)) = min(z, 0) - log1p(exp(-|z|)); from y: d/dz = sigmoid(-z) = 1 - exp(y) = -expm1(y)
    Activation("logsigmoid", 16, lambda v, p: minimum(v, 0.0) - log1p(exp(-E.absolute(v))),
               lambda dy, s, p: dy * -expm1(s), "y"),
    # SIREN's sine (gg.sin is this record too)
    Activation("sin", 17, lambda v, p: sin(v), lambda dy, s, p: dy * cos(s), "z"),
)
BY_NAME: dict[str, Activation] = {a.name: a for a in ALL}
BY_CODE: dict[int, Activation] = {a.code: a for a in ALL}
ACTIVATIONS: tuple[str, ...] = tuple(BY_NAME)
CODES: dict[str, int] = {a.name: a.code for a in ALL}
NPARAMS: int = max(len(a.params) for a in ALL)
KERNEL_ORDERS: tuple[int, ...] = (1, 2)  # the derivative orders the kernels (CPU Numba, CUDA C, Numba CUDA) compute
# The fully fused MLP takes the derivative from the saved float16 output and has no parameter argument.
FUSED_MLP: tuple[str, ...] = tuple(a.name for a in ALL if a.saves in ("y", "none") and not a.params
                                   and a.saves_z_when is None)


def get(name: str) -> Activation:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}") from None


def act_code(name: str) -> int:
    return get(name).code


def params(name: str, given=None) -> tuple[float, ...]:
    """The activation's parameter values in the record's order: ``given`` is ``None`` (the defaults),
    one number (the first parameter: leaky_relu's slope), a sequence (by position) or a dict (by name)."""
    a = get(name)
    defaults = [float(d) for _, d in a.params]
    if given is None:
        return tuple(defaults)
    if isinstance(given, dict):
        names = [n for n, _ in a.params]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise TypeError(f"{name}: unknown parameter(s) {unknown}; it takes {names or 'none'}")
        return tuple(float(given.get(n, d)) for n, d in zip(names, defaults))
    if isinstance(given, (int, float, np.floating, np.integer)):
        given = (given,)
    vals = [float(v) for v in given]
    return tuple(vals[:len(defaults)]) + tuple(defaults[len(vals):])


def kernel_params(name: str, given=None, dtype=None) -> tuple:
    """:func:`params` padded with zeros to :data:`NPARAMS` (the kernels' parameter arguments), as scalars
    of ``dtype`` when given (the compute type a kernel takes them in)."""
    p = params(name, given)
    p = p + (0.0,) * (NPARAMS - len(p))
    if dtype is None:
        return p
    t = np.dtype(dtype).type
    return tuple(t(v) for v in p)


def saves(name: str, given=None) -> str:
    """What backward needs: ``"y"`` (the output), ``"z"`` (the pre-activation) or ``"none"``."""
    a = get(name)
    if a.saves_z_when is not None and a.saves_z_when(params(name, given)):
        return "z"
    return a.saves


def saves_output(name: str, given=None) -> bool:
    """True if backward needs only the output ``y`` (so ``y`` may overwrite ``z``)."""
    return saves(name, given) == "y"


# ---------------------------------------------------------------------------------------- trees
_Z, _DY, _S = E.var("z"), E.var("dy"), E.var("s")
_P = tuple(E.var(f"p{i}") for i in range(NPARAMS))


def trees(a: Activation | str) -> tuple[Expr, Expr]:
    """``(forward over z, p0..; first-derivative backward over dy, s, p0..)``."""
    a = get(a) if isinstance(a, str) else a
    return E.const(a.forward(_Z, _P)), E.const(a.backward(_DY, _S, _P))


_deriv_cache: dict = {}


def derivative(name: str, order: int, saved: str | None = None) -> Expr:
    """``d^order act / dz^order`` over the saved symbol ``s`` and the parameters ``p0, p1, ...``; order 0
    is the forward (over ``z``). ``saved`` (``"y"``, ``"z"``, ``"none"``; default: the record's) names
    what ``s`` stands for: the derivative by ``z`` of an expression in ``s = y`` carries the factor
    ``act'(y)`` (chain rule), so every order is evaluated from the array the first backward saved."""
    a = get(name)
    saved = a.saves if saved is None else saved
    if order < 0:
        raise ValueError(f"derivative order must be >= 0, got {order}")
    key = (name, order, saved)
    d = _deriv_cache.get(key)
    if d is None:
        if order == 0:
            d = trees(a)[0]
        elif order == 1:
            d = E.substitute(trees(a)[1], {"dy": 1.0})
        elif order in a.higher:
            d = E.const(a.higher[order](_S, _P))
        else:
            d = E.diff(derivative(name, order - 1, saved), "s")
            if saved == "y" and d is not E.ZERO:
                d = d * derivative(name, 1, saved)
        _deriv_cache[key] = d
    return d


def backward_tree(name: str, order: int = 1, saved: str | None = None) -> Expr:
    """``dy * d^order act / dz^order`` over ``dy``, ``s`` and the parameters (order 1: the record's
    backward, in PyTorch's order of operations)."""
    if order == 1:
        return trees(name)[1]
    if order < 1:
        raise ValueError(f"backward order must be >= 1, got {order}")
    return _DY * derivative(name, order, saved)


# ---------------------------------------------------------------------------------------- interpreter
def _env(act: str, given) -> dict:
    return {f"p{i}": v for i, v in enumerate(kernel_params(act, given))}


def forward_ref(z, act: str, given=None) -> np.ndarray:
    """``act(z)`` in float64, element by element through :func:`evaluate`."""
    f = trees(act)[0]
    z = np.asarray(z, dtype=np.float64)
    env = _env(act, given)
    return np.array([evaluate(f, dict(env, z=v)) for v in z.ravel()], dtype=np.float64).reshape(z.shape)


def backward_ref(dy, saved, act: str, given=None, order: int = 1) -> np.ndarray:
    """``dy * d^order act / dz^order`` in float64 from ``saved`` (as :func:`saves` says), through
    :func:`evaluate`."""
    d = backward_tree(act, order, saves(act, given))
    dy = np.asarray(dy, dtype=np.float64)
    s = np.broadcast_to(np.asarray(dy if saved is None else saved, dtype=np.float64), dy.shape)
    env = _env(act, given)
    out = [evaluate(d, dict(env, dy=g, s=v)) for g, v in zip(dy.ravel(), s.ravel())]
    return np.array(out, dtype=np.float64).reshape(dy.shape)


# ---------------------------------------------------------------------------------------- CUDA C
_PARAM_DECL = ", ".join(f"C p{i}" for i in range(NPARAMS))
_PARAM_ARGS = ", ".join(f"p{i}" for i in range(NPARAMS))


def cuda_header() -> str:
    """The generated CUDA C: the expression prelude (:func:`expr.c_prelude`), the code enum, per activation
    ``fwd_<name>``, ``bwd_<name>`` (order 1) and ``d<k>_<name>`` (the other :data:`KERNEL_ORDERS`), the
    ``act_fwd``/``act_bwd``/``act_deriv`` switches and the fused MLP's ``mlp_act_fwd``/``mlp_act_bwd``
    (its subset, no parameters; backward from the output) - ``__host__ __device__``, for float and double.
    ``GG_ACT_PARAMS(C)`` / ``GG_ACT_ARGS`` spell the parameter list in kernels that pass it on."""
    out = [
        "// Generated from gpugrad/kernels/activations.py (the one definition of every activation): do not edit.",
        "// Regenerate with `python -m gpugrad.kernels.activations`; tests/test_activations.py checks it is current.",
        "#ifndef GPUGRAD_ACTIVATIONS_CUH",
        "#define GPUGRAD_ACTIVATIONS_CUH",
        E.c_prelude(),
        f"#define GG_ACT_PARAMS(C) {_PARAM_DECL}",
        f"#define GG_ACT_ARGS {_PARAM_ARGS}",
        "namespace gg_act {",
        "",
        "enum Code { " + ", ".join(f"{a.name.upper()} = {a.code}" for a in ALL) + " };",
    ]
    C = E.CStyle()

    def fn(signature: str, root: Expr) -> list[str]:
        lines, (value,) = E.straight(root, C, "    const C {name} = {value};")
        return ["template <typename C>", f"GG_FN C {signature} {{"] + lines + [f"    return {value};", "}"]
    for a in ALL:
        out.append("")
        out += fn(f"fwd_{a.name}(C z, {_PARAM_DECL})", trees(a)[0])
        for k in KERNEL_ORDERS:
            out += fn(f"{_kname(k)}_{a.name}(C dy, C s, {_PARAM_DECL})", backward_tree(a.name, k))
    kinds = [("fwd", "C z", "z")] + [(_kname(k), "C dy, C s", "dy, s") for k in KERNEL_ORDERS]
    for kind, prm, args in kinds:
        out += ["", "template <typename C>", f"GG_FN C act_{kind}({prm}, int code, {_PARAM_DECL}) {{",
                "    switch (code) {"]
        out += [f"    case {a.name.upper()}: return {kind}_{a.name}<C>({args}, {_PARAM_ARGS});" for a in ALL if a.code]
        out += [f"    default: return {kind}_identity<C>({args}, {_PARAM_ARGS});", "    }", "}"]
    out += ["", "// dy * d^order act / dz^order for order in KERNEL_ORDERS (order 1 otherwise)", "template <typename C>",
            f"GG_FN C act_deriv(C dy, C s, int code, int order, {_PARAM_DECL}) {{"]
    out += [f"    if (order == {k}) return act_{_kname(k)}<C>(dy, s, code, {_PARAM_ARGS});" for k in KERNEL_ORDERS[1:]]
    out += [f"    return act_bwd<C>(dy, s, code, {_PARAM_ARGS});", "}"]
    # the fused MLP's switches: only its activations (FUSED_MLP), so its kernels carry no other code;
    # backward as dy * act'(y), the derivative at dy = 1 (the kernel's rounding: one multiply by dy last)
    zeros = ", ".join(["C(0)"] * NPARAMS)
    for kind, prm, call in (("fwd", "C v", f"fwd_{{n}}<C>(v, {zeros})"),
                            ("bwd", "C dy, C y", f"dy * bwd_{{n}}<C>(C(1), y, {zeros})")):
        out += ["", "template <typename C>", f"GG_FN C mlp_act_{kind}({prm}, int code) {{", "    switch (code) {"]
        out += [f"    case {n.upper()}: return {call.format(n=n)};" for n in FUSED_MLP if n != "identity"]
        out += [f"    default: return {call.format(n='identity')};", "    }", "}"]
    out += ["", "}  // namespace gg_act", "#endif  // GPUGRAD_ACTIVATIONS_CUH", ""]
    return "\n".join(out)


def _kname(order: int) -> str:
    return "bwd" if order == 1 else f"d{order}"


HEADER = "activations.cuh"
_INCLUDE = f'#include "{HEADER}"'


def header_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), HEADER)


def cuda_source(path: str) -> str:
    """A ``.cu`` file's text with ``#include "activations.cuh"`` replaced by the generated header and the
    parameter-list macros spelled out, so NVRTC needs no include path and CuPy's compile cache (and the
    strict stand-in's signature parser) see the real text."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    import re
    src = re.sub(r"GG_ACT_PARAMS\(([^()]*)\)", lambda m: ", ".join(f"{m.group(1)} p{i}" for i in range(NPARAMS)),
                 src)
    src = src.replace("GG_ACT_ARGS", _PARAM_ARGS)
    return src.replace(_INCLUDE, cuda_header())


# ---------------------------------------------------------------------------------------- Python scalar code
def _scalar_roots() -> list:
    """Every tree the scalar code computes: ``(kind, activation, tree)``."""
    out = []
    for a in ALL:
        out.append(("fwd", a, trees(a)[0]))
        for k in KERNEL_ORDERS:
            out.append((_kname(k), a, backward_tree(a.name, k)))
    return out


def scalar_constants() -> list[float]:
    """The distinct constants of every formula, in the order of ``K0, K1, ...`` in :func:`scalar_source`."""
    seen: dict = {}
    for _, _, t in _scalar_roots():
        stack, done = [E.expand(t)], set()
        while stack:
            e = stack.pop()
            if id(e) in done:
                continue
            done.add(id(e))
            if e.op == "const":
                seen.setdefault(E._key_value(e.value), e.value)
            stack.extend(e.args)
    return list(seen.values())


def scalar_source() -> str:
    """Python source of one function per activation and formula, ``fwd_<name>(v, prm)`` and
    ``bwd_<name>(dy, s, prm)`` / ``d<k>_<name>(dy, s, prm)`` (the other :data:`KERNEL_ORDERS`), and of
    the switches over the code ``act_fwd(v, code, prm)``, ``act_bwd(dy, s, code, prm)``, ``act_d<k>`` and
    ``act_deriv(dy, s, code, order, prm)``: scalar code for Numba. ``prm`` is the tuple of
    :data:`NPARAMS` parameters; the functions of :func:`expr.py_namespace` and the constants ``K0, K1, ...``
    (:func:`scalar_constants`) are bound by :func:`scalar_functions`."""
    index = {E._key_value(c): i for i, c in enumerate(scalar_constants())}
    style = E.PyStyle(const=lambda v: f"K{index[E._key_value(v)]}",
                      var=lambda n: {"z": "v"}.get(n, f"prm[{n[1:]}]" if n[0] == "p" and n[1:].isdigit() else n))
    out = []
    for kind, a, t in _scalar_roots():
        args = "v" if kind == "fwd" else "dy, s"
        lines, (value,) = E.straight(t, style, "    {name} = {value}")
        out += [f"def {kind}_{a.name}({args}, prm):"] + lines + [f"    return {value}", ""]
    for kind, args in [("fwd", "v")] + [(_kname(k), "dy, s") for k in KERNEL_ORDERS]:
        out.append(f"def act_{kind}({args}, code, prm):")
        for a in ALL[1:]:
            out += [f"    if code == {a.code}:", f"        return {kind}_{a.name}({args}, prm)"]
        out += [f"    return {kind}_{ALL[0].name}({args}, prm)", ""]
    out.append("def act_deriv(dy, s, code, order, prm):")
    out += [f"    if order == {k}:\n        return act_{_kname(k)}(dy, s, code, prm)" for k in KERNEL_ORDERS[1:]]
    out += ["    return act_bwd(dy, s, code, prm)", ""]
    return "\n".join(out)


def scalar_functions(const_type: Callable = float, ieee_exp: bool = False, wrap: Callable | None = None) -> dict:
    """Every function of :func:`scalar_source` by name (``act_fwd``, ``bwd_relu``, ...) with the constants converted by
    ``const_type`` (e.g. ``np.float32`` so float32 kernels stay float32); ``ieee_exp`` binds an ``exp``
    that returns inf on overflow (for code run as Python). ``wrap`` (a compiler, e.g. ``numba.njit``)
    wraps every function, and the functions call each other's wrapped versions."""
    ns: dict = E.py_namespace(ieee_exp)
    ns.update({f"K{i}": const_type(c) for i, c in enumerate(scalar_constants())})
    exec(compile(scalar_source(), "<activations:scalar>", "exec"), ns)
    names = [f"{kind}_{a.name}" for kind, a, _ in _scalar_roots()]
    names += ["act_fwd"] + [f"act_{_kname(k)}" for k in KERNEL_ORDERS] + ["act_deriv"]
    if wrap is not None:
        for k in names:
            ns[k] = wrap(ns[k])
    return {k: ns[k] for k in names}


# ---------------------------------------------------------------------------------------- array code
_xp_cache: dict = {}
_SCALARS = tuple(f"p{i}" for i in range(NPARAMS))


def _as_kernel_params(given) -> tuple:
    if isinstance(given, (int, float, np.floating, np.integer)):
        given = (given,)
    given = tuple(given or ())
    return given + (0.0,) * (NPARAMS - len(given))


def xp_functions(name: str, reuse: bool = True, order: int = 1, saved: str | None = None) -> tuple[Callable, Callable]:
    """``(forward(xp, erf, z, params, out=None), backward(xp, erf, dy, s, params, out=None))`` for the generic
    backend: NumPy or CuPy ufunc calls in the tree's order, in the input dtype (constants are cast to it);
    ``params`` is the tuple of :func:`params` (or one number). ``backward`` computes ``dy * d^order act``
    (``saved``: what ``s`` is, default the record's). ``reuse`` lets temporaries be overwritten (needs
    ``dy`` and ``s`` of one shape and dtype)."""
    key = (name, reuse, order, saved)
    fns = _xp_cache.get(key)
    if fns is None:
        f = trees(name)[0]
        d = backward_tree(name, order, saved)
        ns: dict = {}
        src = E.xp_source(f, "forward", ("z",), _SCALARS, reuse) + E.xp_source(d, "backward", ("dy", "s"), _SCALARS,
                                                                                reuse)
        exec(compile(src, f"<activations:xp:{name}:{order}>", "exec"), ns)
        fwd, bwd = ns["forward"], ns["backward"]

        def forward(xp, erf, z, given=(), out=None, _f=fwd):
            return _f(xp, erf, None, z, *_as_kernel_params(given), out=out)

        def backward(xp, erf, dy, s, given=(), out=None, _b=bwd):
            return _b(xp, erf, None, dy, s, *_as_kernel_params(given), out=out)
        fns = _xp_cache[key] = (forward, backward)
    return fns


# ---------------------------------------------------------------------------------------- references
def _erf64(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x.astype(np.float64)


def act_forward_ref(z, act: str, given=None) -> np.ndarray:
    """``act(z)`` in float64 NumPy (the generated array code; the kernels' test reference)."""
    z = np.array(z, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return xp_functions(act)[0](np, _erf64, z, params(act, given))


def act_backward_ref(dy, saved, act: str, given=None, order: int = 1) -> np.ndarray:
    """``dy * d^order act`` in float64; ``saved`` is what :func:`saves` names (``y`` or ``z``)."""
    dy = np.array(dy, dtype=np.float64)
    s = dy if saved is None else np.asarray(saved, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return xp_functions(act, reuse=False, order=order, saved=saves(act, given))[1](np, _erf64, dy, s,
                                                                                       params(act, given))


# ---------------------------------------------------------------------------------------- device code
def device_functions(cdt):
    """``(act_fwd(v, code, prm), act_deriv(dy, s, code, order, prm))`` as Numba CUDA device functions
    that compute in ``cdt`` (float32 or float64; constants of that type); built once per dtype."""
    cdt = np.dtype(cdt)

    def build():
        cuda = _numba.nb_cuda()
        fns = scalar_functions(cdt.type, ieee_exp=_numba.simulating(), wrap=cuda.jit(device=True, inline=True))
        return fns["act_fwd"], fns["act_deriv"]
    return _numba.cached(("act_device", cdt.str), build)


if __name__ == "__main__":  # python -m gpugrad.kernels.activations: rewrite the generated header
    with open(header_path(), "w", encoding="utf-8") as fh:
        fh.write(cuda_header())
    print("wrote", header_path())
