"""``gg.autograd.functional``: vjp, jvp, jacobian, hessian, hvp, vhp, with PyTorch's names, argument
order, flags and results (``torch.autograd.functional``), on top of ``gg.autograd.grad``.

``jvp`` and ``hvp`` use the double-backward trick (a vjp is linear in its ``grad_outputs``, so the
gradient of ``<vjp(u), v>`` with respect to ``u`` is the jvp), as PyTorch does: they need the
function to be twice differentiable by reverse mode, which every gpugrad op is. Jacobians are built
row by row (one backward per output element; ``vectorize`` is accepted and computes the same).
"""
from __future__ import annotations

from typing import Any, Callable

from .._errors import named_error
from .engine import grad as _grad
from .function import TensorBase, _make_result
from .higher_order import LENT
from .grad_mode import STATE, enable_grad, set_grad_enabled

__all__ = ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"]


def _zeros_like(t, requires_grad: bool = False):
    """Zeros of ``t``'s shape, dtype and device (a leaf)."""
    z = _make_result(t._backend().xp.zeros(t.shape, t.dtype), t.device, None, 0)
    return z.requires_grad_(True) if requires_grad else z


def _as_tuple(x: Any, arg: str, fn: str) -> tuple[bool, tuple]:
    """``(was a tuple, as a tuple)``; a TypeError naming the entry that is not a Tensor."""
    is_tuple = isinstance(x, (tuple, list))
    xs = tuple(x) if is_tuple else (x,)
    for i, el in enumerate(xs):
        if not isinstance(el, TensorBase):
            where = f"the value at index {i} has type {type(el).__name__}" if is_tuple else \
                f"the given {arg} has type {type(el).__name__}"
            raise named_error(TypeError, f"{fn}: the {arg} must be either a Tensor or a tuple of Tensors but {where}")
    return is_tuple, xs


def _unpack(res, is_tuple):
    """PyTorch's ``_tuple_postprocess``: drop the tuple levels the caller did not use."""
    if isinstance(is_tuple, tuple):
        outer, inner = is_tuple
        if not inner:
            res = tuple(r[0] for r in res)
        return res if outer else res[0]
    return res if is_tuple else res[0]


def _prep(xs: tuple, create_graph: bool, need_graph: bool) -> tuple:
    """Inputs the function is differentiated at: with ``create_graph`` an input that requires grad
    stays in its graph (a view of it); otherwise a detached copy of it that requires grad."""
    return tuple(t if create_graph and t.requires_grad else t.detach().requires_grad_(need_graph) for t in xs)


def _post(xs, create_graph: bool):
    """Results without their graph unless ``create_graph``."""
    if xs and isinstance(xs[0], TensorBase):
        return xs if create_graph else tuple(t.detach() for t in xs)
    return tuple(_post(x, create_graph) for x in xs)


def _check_v(v: tuple, other: tuple, is_tuple: bool, fn: str) -> None:
    if len(v) != len(other):
        msg = (f"v is a tuple of invalid length: should be {len(other)} but got {len(v)}" if is_tuple
               else "the given v should contain a single Tensor")
        raise named_error(RuntimeError, f"{fn}: {msg}")
    for i, (a, b) in enumerate(zip(v, other)):
        if tuple(a.shape) != tuple(b.shape):
            pre = f"entry {i} in v" if is_tuple else "v"
            raise named_error(RuntimeError,
                f"{fn}: {pre} has invalid size: should be {tuple(b.shape)} but got {tuple(a.shape)}")


def _check_requires_grad(xs: tuple, kind: str, strict: bool, fn: str) -> None:
    if not strict:
        return
    for i, t in enumerate(xs):
        if t is None:
            raise named_error(RuntimeError, f"{fn}: the output of the user-provided function is independent of "
                              f"input {i}. This is not allowed in strict mode.")
        if not t.requires_grad:
            what = {"outputs": f"output {i} of the user-provided function does not require gradients; the "
                               "outputs must be computed in a differentiable manner from the inputs",
                    "grad_inputs": f"the gradient with respect to input {i} is independent of the inputs of "
                                   "the user-provided function",
                    "jacobian": f"the jacobian of the user-provided function with respect to input {i} is "
                                "independent of the input (is the function twice differentiable, and not "
                                "linear?)",
                    "hessian": f"the hessian of the user-provided function with respect to input {i} is "
                               "independent of the input (is the function thrice differentiable?)"}[kind]
            raise named_error(RuntimeError, f"{fn}: {what}. This is not allowed in strict mode.")


def _autograd_grad(outputs: tuple, inputs: tuple, grad_outputs: tuple | None = None,
                   create_graph: bool = False, retain_graph: bool | None = None) -> tuple:
    """``gg.autograd.grad`` over the outputs that require grad (None for every input when none does)."""
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o is not None and o.requires_grad]
    if not pairs:
        return (None,) * len(inputs)
    return _grad([o for o, _ in pairs], list(inputs), [g for _, g in pairs], retain_graph=retain_graph,
                 create_graph=create_graph, allow_unused=True)


def _zeros_for(grads: tuple, refs: tuple, strict: bool, create_graph: bool, stage: str, fn: str) -> tuple:
    """None gradients as zeros (the mathematical value); in strict mode an error instead."""
    out = []
    for i, g in enumerate(grads):
        if g is None:
            if strict:
                what = {"back": f"the output of the user-provided function is independent of input {i}",
                        "back_trick": f"the gradient with respect to the input is independent of entry {i} in "
                                      "the grad_outputs when using the double backward trick to compute "
                                      "forward mode gradients",
                        "double_back": f"the jacobian of the user-provided function is independent of input {i}",
                        "double_back_trick": f"the hessian of the user-provided function is independent of entry "
                                             f"{i} in the grad_jacobian (the double backward trick needs it)"}[stage]
                raise named_error(RuntimeError, f"{fn}: {what}. This is not allowed in strict mode.")
            g = _zeros_like(refs[i])
        elif strict and create_graph and not g.requires_grad:
            kind = "hessian" if "double" in stage else "jacobian"
            raise named_error(RuntimeError, f"{fn}: the {kind} of the user-provided function is independent of "
                              f"input {i}. This is not allowed in strict mode when create_graph=True.")
        out.append(g)
    return tuple(out)


def _single_scalar(outputs: tuple, is_tuple: bool, fn: str) -> None:
    if is_tuple:
        raise named_error(RuntimeError, f"{fn}: the function given to {fn} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise named_error(RuntimeError, f"{fn}: the Tensor returned by the function given to {fn} should contain "
                          f"a single element, got shape {tuple(outputs[0].shape)}")


def _prep_v(v, others: tuple, others_tuple: bool, create_graph: bool, fn: str, what: str) -> tuple | None:
    if v is None:
        if len(others) != 1 or others[0].numel() != 1:
            raise named_error(RuntimeError, f"{fn}: the vector v can only be None if the {what} is a single "
                              "Tensor with a single element")
        return None
    _, vs = _as_tuple(v, "v", fn)
    vs = _prep(vs, create_graph, need_graph=False)
    _check_v(vs, others, others_tuple, fn)
    return vs


def _product(outs, out_tuple, grad_args: tuple, like, res_tuple, create_graph: bool, strict: bool, stage: str,
             name: str) -> tuple:
    """The shared tail of vjp/jvp/vhp/hvp: ``autograd.grad(*grad_args)`` (a graph only with ``create_graph``),
    unused inputs as zeros shaped like ``like`` (or refused under ``strict``), and ``(outputs, product)``
    unpacked as the caller's ``out_tuple``/``res_tuple`` say."""
    targets, wrt, vs = grad_args
    with set_grad_enabled(True if create_graph else STATE.grad_enabled):
        res = _zeros_for(_autograd_grad(targets, wrt, vs, create_graph=create_graph), like, strict, create_graph,
                         stage, name)
    return _unpack(_post(outs, create_graph), out_tuple), _unpack(_post(res, create_graph), res_tuple)


def vjp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False,
        strict: bool = False) -> tuple:
    """``(func(inputs), v^T J)``: the vector-Jacobian product at ``inputs`` (``v`` shaped like the
    outputs; optional for a single-element output). Results shaped like the inputs."""
    with enable_grad():
        in_tuple, xs = _as_tuple(inputs, "inputs", "vjp")
        xs = _prep(xs, create_graph, need_graph=True)
        out_tuple, outs = _as_tuple(func(*xs), "outputs of the user-provided function", "vjp")
        _check_requires_grad(outs, "outputs", strict, "vjp")
        vs = _prep_v(v, outs, out_tuple, create_graph, "vjp", "user-provided function's output")
    return _product(outs, out_tuple, (outs, xs, vs), xs, in_tuple, create_graph, strict, "back", "vjp")


def jvp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False,
        strict: bool = False) -> tuple:
    """``(func(inputs), J v)``: the Jacobian-vector product at ``inputs`` (``v`` shaped like the
    inputs), by the double-backward trick. Results shaped like the outputs."""
    with enable_grad():
        in_tuple, xs = _as_tuple(inputs, "inputs", "jvp")
        xs = _prep(xs, create_graph, need_graph=True)
        vs = _prep_v(v, xs, in_tuple, create_graph, "jvp", "input to the user-provided function")
        out_tuple, outs = _as_tuple(func(*xs), "outputs of the user-provided function", "jvp")
        _check_requires_grad(outs, "outputs", strict, "jvp")
        dummies = tuple(_zeros_like(o, requires_grad=True) for o in outs)
        grad_inputs = _autograd_grad(outs, xs, dummies, create_graph=True)
        _check_requires_grad(grad_inputs, "grad_inputs", strict, "jvp")
    return _product(outs, out_tuple, (grad_inputs, dummies, vs), outs, out_tuple, create_graph, strict,
                    "back_trick", "jvp")


def jacobian(func: Callable, inputs: Any, create_graph: bool = False, strict: bool = False,
             vectorize: bool = False, strategy: str = "reverse-mode") -> Any:
    """The Jacobian of ``func`` at ``inputs``: for output ``i`` and input ``j`` a Tensor of shape
    ``outputs[i].shape + inputs[j].shape`` (nested tuples as the arguments were tuples or not)."""
    stack = LENT.stack
    if strategy not in ("reverse-mode", "forward-mode"):
        raise named_error(ValueError, f"jacobian: strategy must be 'reverse-mode' or 'forward-mode', got {strategy!r}")
    if strategy == "forward-mode":
        raise named_error(NotImplementedError, "jacobian: strategy='forward-mode' needs forward-mode AD, which "
                          "gpugrad does not have; use strategy='reverse-mode' (the default)")
    with enable_grad():
        in_tuple, xs = _as_tuple(inputs, "inputs", "jacobian")
        xs = _prep(xs, create_graph, need_graph=True)
        out_tuple, outs = _as_tuple(func(*xs), "outputs of the user-provided function", "jacobian")
        _check_requires_grad(outs, "outputs", strict, "jacobian")
        jac = []
        for i, out in enumerate(outs):
            rows: list = [[] for _ in xs]
            flat = out.reshape(-1)
            for k in range(out.numel()):
                vj = _autograd_grad((flat[k],), xs, retain_graph=True, create_graph=create_graph)
                for j, (g, x) in enumerate(zip(vj, xs)):
                    if g is None:
                        if strict:
                            raise named_error(RuntimeError, f"jacobian: output {i} of the user-provided function "
                                              f"is independent of input {j}. This is not allowed in strict mode.")
                        g = _zeros_like(x)
                    elif strict and create_graph and not g.requires_grad:
                        raise named_error(RuntimeError, f"jacobian: the jacobian of output {i} of the user-provided "
                                          f"function is independent of input {j}. This is not allowed in strict mode "
                                          "when create_graph=True.")
                    rows[j].append(g)
            jac.append(tuple(stack(r, dim=0).reshape(tuple(out.shape) + tuple(x.shape)) if r else
                             _make_result(x._backend().xp.zeros(tuple(out.shape) + tuple(x.shape), x.dtype),
                                          x.device, None, 0)
                             for r, x in zip(rows, xs)))
    return _unpack(_post(tuple(jac), create_graph), (out_tuple, in_tuple))


def hessian(func: Callable, inputs: Any, create_graph: bool = False, strict: bool = False,
            vectorize: bool = False, outer_jacobian_strategy: str = "reverse-mode") -> Any:
    """The Hessian of the scalar function ``func`` at ``inputs``: for inputs ``i`` and ``j`` a
    Tensor of shape ``inputs[i].shape + inputs[j].shape``."""
    in_tuple, xs = _as_tuple(inputs, "inputs", "hessian")

    def single_output(*inp):
        out = func(*inp)
        is_tuple, t_out = _as_tuple(out, "outputs of the user-provided function", "hessian")
        _check_requires_grad(t_out, "outputs", strict, "hessian")
        _single_scalar(t_out, is_tuple, "hessian")
        return out.reshape(())

    def jac_func(*inp):
        jac = jacobian(single_output, inp, create_graph=True)
        _check_requires_grad(jac if isinstance(jac, tuple) else (jac,), "jacobian", strict, "hessian")
        return jac

    res = jacobian(jac_func, xs, create_graph=create_graph, strict=strict, vectorize=vectorize,
                   strategy=outer_jacobian_strategy)
    return _unpack(res, (in_tuple, in_tuple))


def _scalar_jac(func: Callable, inputs: Any, v: Any, create_graph: bool, strict: bool, fn: str) -> tuple:
    """vhp's and hvp's first part: the inputs, ``v``, the scalar output and its gradient, with graph."""
    in_tuple, xs = _as_tuple(inputs, "inputs", fn)
    xs = _prep(xs, create_graph, need_graph=True)
    vs = _prep_v(v, xs, in_tuple, create_graph, fn, "input to the user-provided function")
    out_tuple, outs = _as_tuple(func(*xs), "outputs of the user-provided function", fn)
    _check_requires_grad(outs, "outputs", strict, fn)
    _single_scalar(outs, out_tuple, fn)
    jac = _autograd_grad(outs, xs, create_graph=True)
    _check_requires_grad(jac, "jacobian", strict, fn)
    return in_tuple, xs, vs, out_tuple, outs, jac


def vhp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False,
        strict: bool = False) -> tuple:
    """``(func(inputs), v^T H)`` for a scalar function: two backward passes."""
    with enable_grad():
        in_tuple, xs, vs, out_tuple, outs, jac = _scalar_jac(func, inputs, v, create_graph, strict, "vhp")
    return _product(outs, out_tuple, (jac, xs, vs), xs, in_tuple, create_graph, strict, "double_back", "vhp")


def hvp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False,
        strict: bool = False) -> tuple:
    """``(func(inputs), H v)`` for a scalar function, by the double-backward trick (equal to
    :func:`vhp` where the Hessian is symmetric)."""
    with enable_grad():
        in_tuple, xs, vs, out_tuple, outs, jac = _scalar_jac(func, inputs, v, create_graph, strict, "hvp")
        grad_jac = tuple(_zeros_like(x, requires_grad=True) for x in xs)
        double_back = _autograd_grad(jac, xs, grad_jac, create_graph=True)
        _check_requires_grad(jac, "hessian", strict, "hvp")
    return _product(outs, out_tuple, (double_back, grad_jac, vs), xs, in_tuple, create_graph, strict,
                    "double_back_trick", "hvp")
