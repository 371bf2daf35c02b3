"""Finite-difference gradient checks (float64 centred differences)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .function import TensorBase, _make_result, named_error
from .grad_mode import enable_grad, no_grad


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def _prepare(fn_name: str, inputs: Sequence) -> list:
    ins = [inputs] if isinstance(inputs, TensorBase) else list(inputs)
    diff = [t for t in ins if isinstance(t, TensorBase) and t.requires_grad]
    if not diff:
        raise named_error(ValueError, f"{fn_name}: no input requires grad; pass tensors with requires_grad=True")
    for t in diff:
        if t.dtype != np.float64:
            raise named_error(TypeError,
                f"{fn_name}: inputs that require grad must be float64 for finite differences to be meaningful, "
                f"got {t.dtype} for shape {tuple(t.shape)}; use x.double()")
    return ins


def _scalarize(fn: Callable, ins: list, weights: list | None):
    """Evaluate ``fn`` and reduce its output(s) to ``sum(out_i * w_i)`` with fixed random weights."""
    out = fn(*ins)
    outs = [out] if isinstance(out, TensorBase) else [o for o in out if isinstance(o, TensorBase)]
    if weights is None:
        rng = np.random.default_rng(1234)
        weights = [rng.standard_normal(o.shape) for o in outs]
    total = None
    for o, w in zip(outs, weights):
        if o.dtype.kind != "f":
            continue
        term = (o * _make_result(o._backend().from_numpy(w).astype(o.dtype), o.device, None, 0)).sum()
        total = term if total is None else total + term
    if total is None:  # no floating output: a constant
        total = _make_result(np.zeros(()), None, None, 0)
    return total, weights


def _analytic(total, diff: list) -> list:
    """The gradients of ``total`` with respect to ``diff`` (None: unused). An output that does not require
    grad (a constant: e.g. a first derivative whose graph was cut) has gradient zero, which the finite
    differences then contradict, as in PyTorch's gradcheck."""
    from .engine import grad as _grad
    if not total.requires_grad:
        return [None] * len(diff)
    return list(_grad(total, diff, allow_unused=True))


def gradcheck(fn: Callable[..., Any], inputs: Sequence, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, raise_exception: bool = True) -> bool:
    """Compare autograd's gradient of ``fn`` with centred finite differences, element by element.

    Outputs are projected on fixed random weights, so any output shape works. On mismatch raises
    ``GradcheckError`` naming the input, the worst element's index, both values and the error."""
    ins = _prepare("gradcheck", inputs)
    diff = [(i, t) for i, t in enumerate(ins) if getattr(t, "requires_grad", False)]
    total, weights = _scalarize(fn, ins, None)
    analytic = _analytic(total, [t for _, t in diff])
    worst = None
    with no_grad():
        for (pos, t), ga in zip(diff, analytic):
            data = t.data
            flat = data.reshape(-1)
            num = np.zeros(data.size)
            for k in range(data.size):
                old = float(flat[k])
                flat[k] = old + eps
                fp = float(_scalarize(fn, ins, weights)[0].item())
                flat[k] = old - eps
                fm = float(_scalarize(fn, ins, weights)[0].item())
                flat[k] = old
                num[k] = (fp - fm) / (2 * eps)
            ana = np.zeros(data.size) if ga is None else np.asarray(t._backend().to_numpy(ga.data), dtype=np.float64).reshape(-1)
            err = np.abs(ana - num)
            tol = atol + rtol * np.abs(num)
            bad = err - tol
            k = int(np.argmax(bad)) if data.size else 0
            if data.size and (worst is None or bad[k] > worst[0]):
                worst = (bad[k], pos, np.unravel_index(k, data.shape), ana[k], num[k], err[k], tuple(data.shape))
    if worst is not None and worst[0] > 0:
        _, pos, idx, a, n, e, shape = worst
        msg = (f"gradcheck: gradient mismatch for input {pos} (shape {shape}) at index {tuple(int(i) for i in idx)}: "
               f"analytic {a:.10g}, numerical {n:.10g}, abs error {e:.3g} > atol {atol} + rtol {rtol} * |numerical|")
        if raise_exception:
            raise GradcheckError(msg)
        return False
    return True


def gradcheck_directional(fn: Callable[..., Any], inputs: Sequence, n_directions: int = 4,
                          eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
                          seed: int = 0, raise_exception: bool = True) -> bool:
    """Random-direction gradient check for large inputs: for random unit directions ``d``, compare
    ``<grad, d>`` with ``(f(x + eps d) - f(x - eps d)) / (2 eps)``. Costs 2 evaluations per direction."""
    ins = _prepare("gradcheck_directional", inputs)
    diff = [t for t in ins if getattr(t, "requires_grad", False)]
    total, weights = _scalarize(fn, ins, None)
    analytic = _analytic(total, diff)
    rng = np.random.default_rng(seed)
    for j in range(n_directions):
        dirs = [rng.standard_normal(t.shape) for t in diff]
        norm = np.sqrt(sum(float((d * d).sum()) for d in dirs))
        dirs = [d / norm for d in dirs]
        pred = 0.0
        for t, g, d in zip(diff, analytic, dirs):
            if g is not None:
                pred += float((t._backend().to_numpy(g.data).astype(np.float64) * d).sum())
        with no_grad():
            saved = [t.data.copy() for t in diff]
            for t, d in zip(diff, dirs):
                t.data += t._backend().from_numpy(eps * d)
            fp = float(_scalarize(fn, ins, weights)[0].item())
            for t, s, d in zip(diff, saved, dirs):
                t.data[...] = s - t._backend().from_numpy(eps * d)
            fm = float(_scalarize(fn, ins, weights)[0].item())
            for t, s in zip(diff, saved):
                t.data[...] = s
        num = (fp - fm) / (2 * eps)
        if abs(pred - num) > atol + rtol * abs(num):
            msg = (f"gradcheck_directional: direction {j}: analytic directional derivative {pred:.10g}, "
                   f"numerical {num:.10g}, abs error {abs(pred - num):.3g}")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True


def gradgradcheck(fn: Callable[..., Any], inputs: Sequence, grad_outputs: Sequence | None = None, *,
                  eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3, raise_exception: bool = True,
                  seed: int = 0) -> bool:
    """Check second derivatives (PyTorch's ``gradgradcheck``): the gradients of ``fn`` with respect to
    its inputs, computed with ``create_graph=True`` as a function of the inputs and of
    ``grad_outputs``, are checked by :func:`gradcheck` against centred finite differences (float64).

    ``grad_outputs``: one float64 tensor per floating output of ``fn`` (drawn at random with ``seed``
    when None); they take part in the check (the double backward is linear in them)."""
    from .engine import grad as _grad
    ins = _prepare("gradgradcheck", inputs)
    out = fn(*ins)
    outs = [out] if isinstance(out, TensorBase) else [o for o in out if isinstance(o, TensorBase)]
    outs = [o for o in outs if o.dtype.kind == "f"]
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        grad_outputs = [_make_result(o._backend().from_numpy(rng.standard_normal(o.shape)), o.device, None, 0)
                        .requires_grad_(True) for o in outs]
    else:
        grad_outputs = [grad_outputs] if isinstance(grad_outputs, TensorBase) else list(grad_outputs)
        if len(grad_outputs) != len(outs):
            raise named_error(ValueError, f"gradgradcheck: {len(outs)} floating output(s) but "
                              f"{len(grad_outputs)} grad_outputs")
    n_in = len(ins)
    diff_pos = [i for i, t in enumerate(ins) if isinstance(t, TensorBase) and t.requires_grad]

    def first_derivatives(*args):
        with enable_grad():  # gradcheck evaluates under no_grad; these need their graph
            return _first(*args)

    def _first(*args):
        xs = args[:n_in]
        o = fn(*xs)
        os = [o] if isinstance(o, TensorBase) else [t for t in o if isinstance(t, TensorBase)]
        os = [t for t in os if t.dtype.kind == "f"]
        pairs = [(t, g) for t, g in zip(os, args[n_in:]) if t.requires_grad]
        if not pairs:
            return ()
        gs = _grad([t for t, _ in pairs], [xs[i] for i in diff_pos], [g for _, g in pairs], create_graph=True,
                   allow_unused=True)
        return tuple(g for g in gs if g is not None)  # (one without graph is checked too: as a constant)

    return gradcheck(first_derivatives, list(ins) + list(grad_outputs), eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception)
