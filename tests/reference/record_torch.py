"""Record PyTorch's answers as data, so the conformance tests run without PyTorch installed.

    pip install torch==2.13.0        # (or into a side folder: pip install --target DIR, then PYTHONPATH=DIR)
    python3 tests/reference/record_torch.py          # rewrites tests/reference/torch_reference.json and
                                                     # tests/reference/torch_ops.json

Everything a test needs is in the file: the inputs, the hyperparameters, and PyTorch's outputs
(float64 numbers written with ``repr``, so they round-trip exactly). Nothing here imports gpugrad:
the references do not depend on gpugrad's internals (the optimizer trajectories in particular are
PyTorch's parameters after K steps of a fixed, parameter-dependent gradient). ``record()`` returns
the same dict, so a test with PyTorch installed checks the file against a live recording.

Sections: ``optimizers`` (SGD/Adam/AdamW/RMSprop trajectories in float64 and float32),
``schedulers`` (learning rates per epoch for two param groups), ``linear`` (Linear + tanh forward and
gradients, and the state_dict names/shapes), ``clip_grad_norm`` (total norm and clipped gradients),
``functional`` (losses and activations with their input gradients), ``activation_derivatives`` (first
and second derivatives of every activation through PyTorch's double backward, kinks included).
``torch_ops.json`` holds the op cases of ``op_cases.py`` (outputs with their dtypes, input gradients) and
the exception class of each misuse case (``record_ops()``)."""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "torch_reference.json")
OPS_PATH = os.path.join(HERE, "torch_ops.json")
sys.path.insert(0, HERE)
import op_cases  # noqa: E402  (the op table: no gpugrad, no torch import)

N_STEPS = 6
OPTIMIZERS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.03, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.02, betas=[0.8, 0.99], eps=1e-6, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True, maximize=True)),
]
# LambdaLR's function is named, not stored: "inverse" is e -> 1 / (1 + e).
LR_LAMBDAS = {"inverse": lambda e: 1.0 / (1 + e)}
SCHEDULERS = [
    ("StepLR", dict(step_size=4, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[3, 7, 7, 12], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=10, eta_min=0.001)),
    ("LinearLR", dict(start_factor=0.25, end_factor=1.0, total_iters=8)),
    ("LambdaLR", dict(lr_lambda="inverse")),
    ("SequentialLR", dict(schedulers=[["LinearLR", dict(start_factor=0.1, total_iters=4)],
                                      ["CosineAnnealingLR", dict(T_max=8, eta_min=0.01)],
                                      ["StepLR", dict(step_size=3, gamma=0.5)]], milestones=[5, 13])),
    ("SequentialLR", dict(schedulers=[["ExponentialLR", dict(gamma=0.8)], ["LambdaLR", dict(lr_lambda="inverse")],
                                      ["MultiStepLR", dict(milestones=[2, 4], gamma=0.5)]], milestones=[3, 9])),
    ("OneCycleLR", dict(max_lr=[1.0, 2.0], total_steps=30)),
    ("OneCycleLR", dict(max_lr=0.5, total_steps=28, pct_start=0.25, anneal_strategy="linear", three_phase=True,
                        base_momentum=0.8, max_momentum=0.9, div_factor=10.0, final_div_factor=100.0)),
    ("ReduceLROnPlateau", dict(mode="min", factor=0.5, patience=2, cooldown=1, min_lr=0.01)),
    ("ReduceLROnPlateau", dict(mode="max", factor=0.3, patience=1, threshold=0.05, threshold_mode="abs",
                               min_lr=[0.001, 0.05])),
]
N_EPOCHS = 25
# the metric ReduceLROnPlateau steps on, one per epoch (falls, stalls, falls again; the 'max' case sees it rise)
PLATEAU_METRICS = [1.0, 0.8, 0.7, 0.7, 0.71, 0.69, 0.7, 0.72, 0.5, 0.5, 0.5, 0.5, 0.49, 0.6, 0.6, 0.6, 0.6, 0.4,
                   0.4, 0.41, 0.4, 0.4, 0.4, 0.3, 0.3]


def make_scheduler(lr_scheduler, optimizer, name: str, kwargs: dict):
    """Build case ``name`` of ``SCHEDULERS`` with the scheduler module of torch or gpugrad (the sub-schedulers
    of SequentialLR too; LambdaLR's function from ``LR_LAMBDAS``)."""
    if name == "SequentialLR":
        subs = [make_scheduler(lr_scheduler, optimizer, n, kw) for n, kw in kwargs["schedulers"]]
        return lr_scheduler.SequentialLR(optimizer, subs, milestones=kwargs["milestones"])
    args = {k: (LR_LAMBDAS[v] if k == "lr_lambda" else v) for k, v in kwargs.items()}
    return getattr(lr_scheduler, name)(optimizer, **args)


def step_scheduler(scheduler, name: str, epoch: int) -> None:
    scheduler.step(PLATEAU_METRICS[epoch]) if name == "ReduceLROnPlateau" else scheduler.step()


def momenta(optimizer) -> list:
    """The momentum each param group holds now (OneCycleLR cycles it)."""
    return [float(g["momentum"]) for g in optimizer.param_groups]


def optimizer_gradient(p: np.ndarray, i: int, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The gradient fed to parameter ``i`` at value ``p`` (float64): a quadratic's for i = 0, a bump's else."""
    if i == 0:
        return A.T @ (A @ p - B)
    return np.sin(3 * p) + p


def _optimizers(torch) -> dict:
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((5, 5)), rng.standard_normal(5)
    P0 = [rng.standard_normal(5), rng.standard_normal((2, 3))]
    cases = []
    for name, kw in OPTIMIZERS:
        out = {"name": name, "kwargs": kw}
        for key, tdtype in (("float64", torch.float64), ("float32", torch.float32)):
            ps = [torch.tensor(p0, dtype=tdtype, requires_grad=True) for p0 in P0]
            opt = getattr(torch.optim, name)(ps, **kw)
            for _ in range(N_STEPS):
                for i, p in enumerate(ps):
                    p.grad = torch.tensor(optimizer_gradient(p.detach().numpy().astype(np.float64), i, A, B),
                                          dtype=tdtype)
                opt.step()
            out[key] = [p.detach().numpy().astype(np.float64).tolist() for p in ps]
        cases.append(out)
    return {"n_steps": N_STEPS, "A": A.tolist(), "B": B.tolist(), "p0": [p.tolist() for p in P0],
            "gradient": "param 0: A.T @ (A @ p - B); param 1: sin(3 p) + p (computed in float64 from the "
                        "current parameter, then cast to the parameter's dtype)",
            "cases": cases}


def _schedulers(torch) -> dict:
    cases = []
    for name, kw in SCHEDULERS:
        ps = [torch.zeros(1, requires_grad=True) for _ in range(2)]
        opt = torch.optim.SGD([{"params": [p], "lr": 0.1 * (i + 1)} for i, p in enumerate(ps)], lr=0.1)
        s = make_scheduler(torch.optim.lr_scheduler, opt, name, kw)
        lrs, moms = [s.get_last_lr()], [momenta(opt)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for epoch in range(N_EPOCHS):
                opt.step()
                step_scheduler(s, name, epoch)
                lrs.append(s.get_last_lr())
                moms.append(momenta(opt))
        cases.append({"name": name, "kwargs": kw, "lrs": [[float(v) for v in row] for row in lrs],
                      "momentum": moms})
    return {"base_lrs": [0.1, 0.2], "optimizer": "SGD, one param group per base lr", "cases": cases}


def _linear(torch) -> dict:
    rng = np.random.default_rng(1)
    w, b, x = rng.standard_normal((4, 6)) / 3, rng.standard_normal(4) / 3, rng.standard_normal((3, 6))
    lin = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        lin.bias.copy_(torch.from_numpy(b))
    y = torch.tanh(lin(torch.from_numpy(x)))
    y.sum().backward()
    return {"weight": w.tolist(), "bias": b.tolist(), "x": x.tolist(), "activation": "tanh",
            "y": y.detach().numpy().tolist(), "weight_grad": lin.weight.grad.numpy().tolist(),
            "bias_grad": lin.bias.grad.numpy().tolist(),
            "state_dict": {k: list(v.shape) for k, v in lin.state_dict().items()}}


def _clip(torch) -> dict:
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    ps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = torch.from_numpy(g.copy())
    cases = []
    for max_norm, norm_type in ((0.3, 2.0), (0.3, 1.0), (0.3, math.inf), (100.0, 2.0)):
        for p, g in zip(ps, grads):
            p.grad = torch.from_numpy(g.copy())
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
        cases.append({"max_norm": max_norm, "norm_type": "inf" if norm_type == math.inf else norm_type,
                      "total": float(total), "clipped": [p.grad.numpy().tolist() for p in ps]})
    return {"grads": [g.tolist() for g in grads], "cases": cases}


def _functional(torch) -> list:
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((5, 4))
    target = np.array([0, 3, 1, 1, 2])
    x = rng.standard_normal((3, 5)) * 2
    y = rng.standard_normal((3, 5))
    cases = [
        ("cross_entropy", logits, target, {}),
        ("cross_entropy", logits, target, {"reduction": "sum"}),
        ("cross_entropy", logits, target, {"label_smoothing": 0.1}),
        ("cross_entropy", logits, np.array([0, -100, 1, 1, -100]), {"ignore_index": -100}),
        ("cross_entropy", logits, np.array([0, 2, 1, 1, 2]), {"ignore_index": 2, "label_smoothing": 0.2}),
        ("nll_loss", logits, target, {}),
        ("mse_loss", x, y, {}),
        ("mse_loss", x, y, {"reduction": "sum"}),
        ("log_softmax", x, None, {"dim": 1}),
        ("softmax", x, None, {"dim": 0}),
        ("gelu", x, None, {}),
        ("gelu", x, None, {"approximate": "tanh"}),
        ("leaky_relu", x, None, {"negative_slope": 0.1}),
        ("leaky_relu", x, None, {"negative_slope": -0.5}),
        ("relu", x, None, {}),
        ("sigmoid", x, None, {}),
        ("tanh", x, None, {}),
        ("silu", x, None, {}),
        ("softplus", x, None, {}),
        ("softplus", x, None, {"beta": 2.0, "threshold": 3.0}),
        ("elu", x, None, {}),
        ("elu", x, None, {"alpha": 0.7}),
        ("selu", x, None, {}),
        ("mish", x, None, {}),
        ("hardswish", x * 2.5, None, {}),
        ("hardsigmoid", x * 2.5, None, {}),
        ("relu6", x * 2.5, None, {}),
        ("hardtanh", x, None, {}),
        ("hardtanh", x * 2.5, None, {"min_val": -2.0, "max_val": 3.0}),
        ("logsigmoid", x, None, {}),
    ]
    out = []
    rw = np.random.default_rng(3)
    for name, a, t, kw in cases:
        ta = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        args = [ta] if t is None else [ta, torch.tensor(t, dtype=torch.int64 if t.dtype.kind == "i" else torch.float64)]
        r = getattr(F, name)(*args, **kw)
        # a fixed random weighting, so the gradient checks more than d(sum)/dx
        weight = rw.standard_normal(tuple(r.shape))
        (r * torch.from_numpy(weight)).sum().backward()
        out.append({"name": name, "input": a.tolist(), "target": None if t is None else t.tolist(), "kwargs": kw,
                    "output": r.detach().numpy().tolist(), "output_weight": weight.tolist(),
                    "input_grad": ta.grad.numpy().tolist()})
    return out


# (F name, kwargs): the activations whose first and second derivatives are recorded at DERIVATIVE_POINTS
ACTIVATION_DERIVATIVES = [("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("sigmoid", {}), ("tanh", {}),
                          ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}), ("softplus", {}),
                          ("softplus", {"beta": 2.0, "threshold": 3.0}), ("elu", {}), ("elu", {"alpha": 0.7}),
                          ("selu", {}), ("mish", {}), ("hardswish", {}), ("hardsigmoid", {}), ("relu6", {}),
                          ("hardtanh", {}), ("hardtanh", {"min_val": -2.0, "max_val": 3.0}), ("logsigmoid", {})]
# kinks (0, +-1, +-3, 6, softplus' threshold 1.5 at beta 2) and smooth points; 16 values
DERIVATIVE_POINTS = [-7.0, -3.0, -2.0, -1.0, -0.6, -1e-3, 0.0, 1e-3, 0.4, 1.0, 1.5, 2.2, 3.0, 4.5, 6.0, 8.0]


def _activation_derivatives(torch) -> dict:
    F = torch.nn.functional
    cases = []
    for name, kw in ACTIVATION_DERIVATIVES:
        x = torch.tensor(DERIVATIVE_POINTS, dtype=torch.float64, requires_grad=True)
        y = getattr(F, name)(x, **kw)
        (g1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        try:
            (g2,) = torch.autograd.grad(g1.sum(), x)
            second = g2.numpy().tolist()
        except RuntimeError:  # e.g. "derivative for aten::hardsigmoid_backward is not implemented"
            second = None
        cases.append({"name": name, "kwargs": kw, "first": g1.detach().numpy().tolist(), "second": second})
    return {"points": DERIVATIVE_POINTS, "cases": cases}


def record() -> dict:
    """PyTorch's reference values (needs torch)."""
    import torch
    torch.set_num_threads(1)  # deterministic reductions
    return {"torch_version": torch.__version__.split("+")[0], "recorded_by": "tests/reference/record_torch.py",
            "optimizers": _optimizers(torch), "schedulers": _schedulers(torch), "linear": _linear(torch),
            "clip_grad_norm": _clip(torch), "functional": _functional(torch),
            "activation_derivatives": _activation_derivatives(torch)}


def output_weights(case_name: str, shapes: list) -> list:
    """The fixed random weighting of a case's outputs (the gradient checks more than d(sum)/dx)."""
    rng = np.random.default_rng(zlib.crc32(case_name.encode()) + 1)
    return [{"shape": list(s), "values": rng.standard_normal(tuple(s)).reshape(-1).tolist()} if s is not None else None
            for s in shapes]


def _dtype_name(dt) -> str:
    return str(dt).replace("torch.", "")


def _run_op_case(torch, case) -> dict:
    inputs = op_cases.make_inputs(case)
    xs = []
    for d in inputs:
        t = torch.from_numpy(op_cases.as_array(d).copy())
        xs.append(t.requires_grad_() if d["grad"] else t)
    out = (case.torch_fn or case.fn)(torch, torch.nn.functional, *xs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    diff = [o.dtype.is_floating_point and o.requires_grad for o in outs]
    weights = output_weights(case.name, [list(o.shape) if d else None for o, d in zip(outs, diff)])
    total = None
    for o, w in zip(outs, weights):
        if w is not None:
            term = (o * torch.tensor(np.reshape(w["values"], w["shape"]), dtype=o.dtype)).sum()
            total = term if total is None else total + term.to(total.dtype)
    if total is not None:
        total.backward()
    grads = []
    for t, d in zip(xs, inputs):
        g = t.grad if d["grad"] else None
        grads.append(None if g is None else g.detach().numpy().astype(np.float64).reshape(-1).tolist())
    return {"name": case.name, "inputs": inputs,
            "outputs": [{"dtype": _dtype_name(o.dtype), "shape": list(o.shape),
                         "values": o.detach().numpy().reshape(-1).tolist()} for o in outs],
            "output_weights": weights, "grads": grads}


def _builtin_class(e: BaseException) -> str:
    """The first built-in exception class of ``e``'s type (what user code catches)."""
    return next(c.__name__ for c in type(e).__mro__ if c.__module__ == "builtins")


def record_ops() -> dict:
    """The op cases and the misuse cases of ``op_cases.py``, run by PyTorch (needs torch)."""
    import torch
    torch.set_num_threads(1)
    errors = {}
    for name, fn in op_cases.ERROR_CASES.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(torch, torch.nn.functional)
        except Exception as e:  # noqa: BLE001 - the class is what is recorded
            errors[name] = {"class": _builtin_class(e), "torch_type": type(e).__name__, "message": str(e)[:300]}
        else:
            raise AssertionError(f"error case {name}: PyTorch raised nothing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [_run_op_case(torch, c) for c in op_cases.C]
    return {"torch_version": torch.__version__.split("+")[0], "recorded_by": "tests/reference/record_torch.py",
            "cases": cases, "errors": errors}


def assert_same(a, b, rel=lambda path: 1e-12, skip: tuple = (), path: str = "$") -> None:
    """Two recordings agree: the same structure, equal strings and integers, floats to ``rel(path)`` (NaN
    equals NaN); keys in ``skip`` are not compared."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            if k not in skip:
                assert_same(a[k], b[k], rel, skip, f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, rel, skip, f"{path}[{i}]")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel(path), abs_tol=1e-15), (path, a, b)
    else:
        assert a == b, path


def load() -> dict:
    """The recorded reference values."""
    with open(PATH, encoding="utf-8") as f:
        return json.load(f)


def load_ops() -> dict:
    """The recorded op and misuse cases."""
    with open(OPS_PATH, encoding="utf-8") as f:
        return json.load(f)


def _write(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=None, separators=(",", ":")) if path == OPS_PATH else json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path):,} bytes, torch {data['torch_version']})")


def main() -> int:
    _write(PATH, record())
    _write(OPS_PATH, record_ops())
    return 0


if __name__ == "__main__":
    sys.exit(main())
