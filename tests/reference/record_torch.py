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
``optimizer_states`` (float32 parameters and optimizer state after steps 1 and 3: ``STATE_CASES``),
``schedulers`` (learning rates per epoch for two param groups), ``linear`` (Linear + tanh forward and
gradients, and the state_dict names/shapes), ``clip_grad_norm`` (total norm and clipped gradients),
``functional`` (losses and activations with their input gradients), ``activation_derivatives`` (first
and second derivatives of every activation through PyTorch's double backward, kinks included).
``torch_ops.json`` holds the op cases of ``op_cases.py`` (outputs with their dtypes, input gradients) and
the exception class of each misuse case (``record_ops()``). Higher orders of whole graphs go to
``torch_higher_order.json`` (``record_higher``): ``gradgrad`` (second derivatives of every op),
``eikonal`` (an SDF's Eikonal loss on a 4x256 softplus MLP), ``pinn`` (a 1-D Poisson residual loss),
``hessian`` (Hessians of a small MLP and a Hessian-vector product)."""
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


# float32 state after a few steps from zero state (PyTorch's default single-tensor path on the CPU, whose
# complements 1 - beta are Python doubles cast once to the scalar of lerp_/addcmul_/add_): the cases make
# 1 - hyperparameter computed in float32 differ from it (beta2=0.999: 1.3e-5 relative; alpha, dampening 0.99: 9e-7)
STATE_CASES = [
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-3, weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=1e-3, weight_decay=0.1)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, centered=True, momentum=0.9)),
    ("SGD", dict(lr=1e-3, momentum=0.01, dampening=0.99)),  # small momentum: step 3 mostly (1 - dampening) g
]
STATE_STEPS = (1, 3)


def state_inputs(n: int = 48) -> tuple:
    """``(p0, grads)`` of the state cases: float32 values, one gradient per step."""
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(n).astype(np.float32)
    return p0, [rng.standard_normal(n).astype(np.float32) for _ in range(max(STATE_STEPS))]


def _optimizer_states(torch) -> dict:
    p0, grads = state_inputs()
    cases = []
    for name, kw in STATE_CASES:
        p = torch.tensor(p0, requires_grad=True)
        opt = getattr(torch.optim, name)([p], **kw)
        after = {}
        for k, g in enumerate(grads, 1):
            p.grad = torch.tensor(g)
            opt.step()
            if k in STATE_STEPS:
                st = {s: v.numpy().astype(np.float64).tolist() for s, v in opt.state[p].items() if s != "step"}
                after[str(k)] = dict(st, p=p.detach().numpy().astype(np.float64).tolist())
        cases.append({"name": name, "kwargs": kw, "after": after})
    return {"dtype": "float32", "p0": p0.astype(np.float64).tolist(),
            "grads": [g.astype(np.float64).tolist() for g in grads], "cases": cases}


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


# ------------------------------------------------------------------------------------------ higher orders
PATH_HIGHER = os.path.join(HERE, "torch_higher_order.json")

# Second derivatives of every op: (name, inputs, PyTorch expression, gpugrad expression or None for the
# same). Inputs: a shape (uniform in [-2, 2], kept 0.2 away from the kinks at 0, -0.5 and 0.7), "+shape"
# (uniform in [0.5, 2]), "p(shape)" / "k(shape)" (uniform in [0.1, 0.9]; k: a constant, no gradient),
# "f32:shape" (float32, no gradient), "t:n,c" (n integer classes below c),
# "t2:n,m,c" (an n x m index below c), "c:shape" (booleans). Expressions see the inputs as a, b, ... and
# T (torch / gpugrad), F (their functional modules).
GRADGRAD = [
    ("add", [(3, 4), (4,)], "a + b", None),
    ("sub", [(2, 1, 4), (3, 1)], "a - b", None),
    ("mul", [(3, 4), (4,)], "a * b", None),
    ("mul_self", [(3, 4)], "a * a", None),
    ("div", [(3, 4), "+(4,)"], "a / b", None),
    ("rdiv", ["+(3, 4)"], "1.5 / a", None),
    ("pow", ["+(3, 4)", (4,)], "a ** b", None),
    ("pow_scalar", [(3, 4)], "a ** 3", None),
    ("rpow", [(3, 4)], "2.0 ** a", None),
    ("neg", [(3, 4)], "-a", None),
    ("exp", [(3, 4)], "a.exp()", None),
    ("log", ["+(3, 4)"], "a.log()", None),
    ("sqrt", ["+(3, 4)"], "a.sqrt()", None),
    ("abs", [(3, 4)], "a.abs() * a", None),
    ("sin", [(3, 4)], "T.sin(a)", None),
    ("cos", [(3, 4)], "T.cos(a)", None),
    ("maximum", [(3, 4), (4,)], "T.maximum(a, b) * a", None),
    ("minimum", [(3, 4), (3, 4)], "T.minimum(a, b) * b", None),
    ("clamp", [(3, 4)], "a.clamp(-0.5, 0.7) * a", None),
    ("where", ["c:(3, 4)", (3, 4), (4,)], "T.where(a, b * b, c.exp())", None),
    ("sum_dim", [(2, 3, 4)], "(a.sum(dim=1) ** 2)", None),
    ("mean_keep", [(2, 3, 4)], "(a.mean(dim=(0, 2), keepdim=True) ** 2) * a", None),
    ("max_all", [(3, 4)], "a.max() * a", None),
    ("max_dim", [(3, 4)], "a.max(dim=1).values ** 2", None),
    ("amin_dims", [(2, 3, 4)], "a.amin(dim=(1, 2)) ** 2", None),
    ("var", [(3, 4)], "a.var(dim=1)", None),
    ("var_all", [(3, 4)], "a.var()", None),
    ("std", [(3, 4)], "a.std(dim=0)", None),
    ("logsumexp", [(3, 4)], "a.logsumexp(dim=1)", None),
    ("logsumexp_all", [(3, 4)], "a.logsumexp(dim=(0, 1))", "a.logsumexp()"),
    ("softmax", [(3, 4)], "F.softmax(a, dim=1)", None),
    ("softmax_dim0", [(3, 4)], "F.softmax(a, dim=0)", None),
    ("log_softmax", [(3, 4)], "F.log_softmax(a, dim=-1)", None),
    ("reshape", [(2, 3, 4)], "a.reshape(4, 6) ** 2", None),
    ("permute", [(2, 3, 4)], "a.permute(2, 0, 1) ** 2", None),
    ("transpose", [(2, 3, 4)], "a.transpose(0, 2) ** 2", None),
    ("expand", [(2, 1, 4)], "a.expand(2, 5, 4) ** 2", None),
    ("getitem", [(2, 3, 4)], "a[1, ::2, 1:] ** 2", None),
    ("getitem_index", [(2, 3, 4), "t:4,3"], "a[:, b] ** 2", None),
    ("cat", [(2, 3), (4, 3)], "T.cat([a * b.sum(), b], dim=0) ** 2", None),
    ("stack", [(2, 3), (2, 3)], "T.stack([a * b, b], dim=1) ** 2", None),
    ("clone", [(3, 3)], "a.clone() * a", None),
    ("to_dtype", [(3, 3)], "(a.to(T.float32) * 2).to(T.float64) * a", None),
    ("matmul", [(3, 4), (4, 5)], "a @ b", None),
    ("matmul_batched", [(2, 1, 3, 4), (5, 4, 2)], "(a @ b) ** 2", None),
    ("matmul_vec", [(4,), (4, 3)], "(a @ b) ** 2", None),
    ("dot", [(4,), (4,)], "(a @ b) ** 2", None),
    ("linear", [(5, 3), (4, 3), (4,)], "F.linear(a, b, c) ** 2", None),
    ("linear_3d", [(2, 3, 4), (5, 4)], "F.linear(a, b) ** 2", None),
    ("cross_entropy", [(5, 4), "t:5,4"], "F.cross_entropy(a, b)", None),
    ("cross_entropy_sum", [(5, 4), "t:5,4"], "F.cross_entropy(a, b, reduction='sum')", None),
    ("cross_entropy_none", [(5, 4), "t:5,4"], "F.cross_entropy(a, b, reduction='none')", None),
    ("cross_entropy_smooth", [(5, 4), "t:5,4"], "F.cross_entropy(a, b, label_smoothing=0.1)", None),
    ("cross_entropy_ignore", [(5, 4), "i:0,-100,2,1,-100"], "F.cross_entropy(a, b)", None),
    ("nll_loss", [(5, 4), "t:5,4"], "F.nll_loss(F.log_softmax(a, dim=1), b)", None),
    ("nll_loss_none", [(5, 4), "t:5,4"], "F.nll_loss(a * a, b, reduction='none')", None),
    ("mse_loss", [(3, 2), (3, 2)], "F.mse_loss(a, b)", None),
    ("mse_loss_sum", [(3, 2), (3, 2)], "F.mse_loss(a * b, b, reduction='sum')", None),
    ("tanh", [(3, 4)], "T.tanh(a)", None),
    ("sigmoid", [(3, 4)], "T.sigmoid(a)", None),
    ("relu", [(3, 4)], "F.relu(a) * a", None),
    ("leaky_relu", [(3, 4)], "F.leaky_relu(a, 0.1) * a", None),
    ("leaky_relu_neg", [(3, 4)], "F.leaky_relu(a, -0.3) * a", None),
    ("gelu", [(3, 4)], "F.gelu(a)", None),
    ("gelu_tanh", [(3, 4)], "F.gelu(a, approximate='tanh')", None),
    ("silu", [(3, 4)], "F.silu(a)", None),
    ("softplus", [(3, 4)], "F.softplus(a)", None),
    ("softplus_beta", [(3, 4)], "F.softplus(a, beta=2.0, threshold=1.5)", None),
    ("elu", [(3, 4)], "F.elu(a, alpha=0.7) * a", None),
    ("selu", [(3, 4)], "F.selu(a) * a", None),
    ("mish", [(3, 4)], "F.mish(a)", None),
    ("hardswish", [(3, 4)], "F.hardswish(a) * a", None),
    ("hardsigmoid", [(3, 4)], "F.hardsigmoid(a) * a", None),
    ("relu6", [(3, 4)], "F.relu6(a * 4.0) * a", None),
    ("hardtanh", [(3, 4)], "F.hardtanh(a, -0.5, 0.7) * a", None),
    ("logsigmoid", [(3, 4)], "F.logsigmoid(a)", None),
    ("sin_activation", [(3, 4)], "T.sin(a) * a", None),
    # issue 17's ops
    ("rsqrt", ["+(3, 4)"], "a.rsqrt()", None),
    ("erf", [(3, 4)], "a.erf()", None),
    ("log2", ["+(3, 4)"], "a.log2()", None),
    ("log10", ["+(3, 4)"], "a.log10()", None),
    ("exp2", [(3, 4)], "a.exp2()", None),
    ("sign", [(3, 4)], "a.sign() * a * a", None),
    ("lerp", [(3, 4), (3, 4), "p(4,)"], "T.lerp(a, b, c) * a", None),
    ("lerp_scalar", [(3, 4), (3, 4)], "T.lerp(a, b, 0.3) * a", None),
    ("masked_fill", [(3, 4), "c:(3, 4)"], "a.masked_fill(b, 0.5) * a", None),
    ("mul_promote", [(3, 4), "f32:(3, 4)"], "a * b * a", None),
    ("prod_dim", [(2, 3, 4)], "a.prod(dim=1)", None),
    ("prod_all", [(3, 4)], "a.prod()", None),
    ("flip", [(2, 3, 4)], "a.flip([1, 2]) * a", "a.flip((1, 2)) * a"),
    ("tril", [(4, 4)], "a.tril(-1) * a", None),
    ("triu", [(4, 4)], "a.triu(1) ** 3", None),
    ("split", [(4, 3)], "T.cat([p * p.sum() for p in a.split(3)], dim=0)", None),
    ("chunk", [(3, 4)], "a.chunk(2, dim=1)[1] ** 3", None),
    ("gather", [(3, 4), "t2:3,2,4"], "a.gather(1, b) ** 3", None),
    ("embedding", [(5, 3), "t:4,5"], "F.embedding(b, a) ** 3", None),
    ("pad", [(2, 3)], "F.pad(a, (1, 2)) ** 3", None),
    ("layer_norm", [(3, 4), (4,), (4,)], "F.layer_norm(a, (4,), b, c)", None),
    ("layer_norm_plain", [(2, 3, 4)], "F.layer_norm(a, (3, 4)) ** 2", None),
    ("bce", ["p(3, 4)", "k(3, 4)"], "F.binary_cross_entropy(a, b)", None),
    ("bce_logits", [(3, 4), "k(3, 4)"], "F.binary_cross_entropy_with_logits(a, b)", None),
    ("bce_logits_pos_weight", [(3, 4), "k(3, 4)", "k(4,)"], "F.binary_cross_entropy_with_logits(a, b, pos_weight=c)",
     None),
    ("l1_loss", [(3, 2), (3, 2)], "F.l1_loss(a, b) * a.sum()", None),
    ("smooth_l1_loss", [(3, 2), (3, 2)], "F.smooth_l1_loss(a, b, beta=0.6)", None),
    ("huber_loss", [(3, 2), (3, 2)], "F.huber_loss(a, b, delta=0.5, reduction='sum')", None),
    ("cross_entropy_weight", [(5, 4), "t:5,4", "k(4,)"], "F.cross_entropy(a, b, weight=c)", None),
    ("cross_entropy_weight_smooth", [(5, 4), "t:5,4", "k(4,)"], "F.cross_entropy(a, b, weight=c, label_smoothing=0.2)",
     None),
    ("cross_entropy_probs", [(5, 4), "p(5, 4)"], "F.cross_entropy(a, b)", None),
    ("cross_entropy_probs_smooth", [(5, 4), "p(5, 4)"], "F.cross_entropy(a, b, label_smoothing=0.2)", None),
    ("nll_loss_weight", [(5, 4), "t:5,4", "k(4,)"], "F.nll_loss(F.log_softmax(a, dim=1), b, weight=c)", None),
]
# the fused linear layer with each activation: PyTorch's linear then the activation
FUSED_ACTS = [("identity", "{}"), ("relu", "F.relu({})"), ("leaky_relu", "F.leaky_relu({}, 0.01)"),
              ("sigmoid", "T.sigmoid({})"), ("tanh", "T.tanh({})"), ("gelu", "F.gelu({})"),
              ("gelu_tanh", "F.gelu({}, approximate='tanh')"), ("silu", "F.silu({})"), ("softplus", "F.softplus({})"),
              ("elu", "F.elu({})"), ("selu", "F.selu({})"), ("mish", "F.mish({})"), ("hardswish", "F.hardswish({})"),
              ("hardsigmoid", "F.hardsigmoid({})"), ("relu6", "F.relu6({})"), ("hardtanh", "F.hardtanh({})"),
              ("logsigmoid", "F.logsigmoid({})"), ("sin", "T.sin({})")]
for _act, _t in FUSED_ACTS:
    GRADGRAD.append((f"fused_linear_{_act}", [(5, 3), (4, 3), (4,)], _t.format("F.linear(a, b, c)") + " * 1.0",
                     f"F.fused_linear(a, b, c, '{_act}') * 1.0"))
GRADGRAD.append(("fused_linear_tanh_3d", [(2, 3, 4), (5, 4)], "T.tanh(F.linear(a, b))",
                 "F.fused_linear(a, b, None, 'tanh')"))


def gradgrad_inputs(spec: list, rng) -> tuple[list, list]:
    """The input arrays of one GRADGRAD case and their kinds: "grad" (float64, requires grad), "const"
    (float64, no gradient), "f32" (float32, no gradient), "int" (integers or booleans)."""
    out, kinds = [], []
    for sp in spec:
        kind = "grad"
        if isinstance(sp, str) and sp.startswith("t:"):
            n, c = (int(v) for v in sp[2:].split(","))
            a, kind = rng.integers(0, c, size=n), "int"
        elif isinstance(sp, str) and sp.startswith("t2:"):  # a 2-D index: rows, columns, below
            n, m, c = (int(v) for v in sp[3:].split(","))
            a, kind = rng.integers(0, c, size=(n, m)), "int"
        elif isinstance(sp, str) and sp[0] in "pk":  # in [0.1, 0.9] (probabilities): p requires grad, k not
            a, kind = rng.uniform(0.1, 0.9, size=eval(sp[1:])), "grad" if sp[0] == "p" else "const"
        elif isinstance(sp, str) and sp.startswith("f32:"):
            a, kind = rng.uniform(-2.0, 2.0, size=eval(sp[4:])).astype(np.float32), "f32"
        elif isinstance(sp, str) and sp.startswith("i:"):
            a, kind = np.array([int(v) for v in sp[2:].split(",")]), "int"
        elif isinstance(sp, str) and sp.startswith("c:"):
            a, kind = rng.uniform(size=eval(sp[2:])) > 0.5, "int"
        elif isinstance(sp, str) and sp.startswith("+"):
            a = rng.uniform(0.5, 2.0, size=eval(sp[1:]))
        else:
            a = rng.uniform(-2.0, 2.0, size=sp)
            for k in (0.0, -0.5, 0.7):  # away from kinks
                near = np.abs(a - k) < 0.2
                a[near] = k + np.where(a[near] >= k, 0.4, -0.4)
        out.append(a)
        kinds.append(kind)
    return out, kinds


def _grad_list(gs) -> list:
    return [None if g is None else g.detach().numpy().tolist() for g in gs]


def _gradgrad(torch) -> list:
    """Per case: the inputs, the output's weights ``go``, PyTorch's first derivatives
    ``grad(f, inputs, go)``, the weights ``u`` of a scalar of them, and its gradients with respect to
    the inputs and ``go`` (second derivatives)."""
    rng = np.random.default_rng(5)
    cases = []
    for name, spec, expr, _ in GRADGRAD:
        arrays, kinds = gradgrad_inputs(spec, rng)
        ts = [torch.tensor(a, requires_grad=k == "grad") for a, k in zip(arrays, kinds)]
        ns = dict(zip("abcdef", ts), T=torch, F=torch.nn.functional)
        y = eval(expr, ns)
        go = rng.standard_normal(tuple(y.shape))
        gos = torch.tensor(go, requires_grad=True)
        diff = [t for t in ts if t.requires_grad]
        g1 = torch.autograd.grad(y, diff, gos, create_graph=True, allow_unused=True)
        u = [rng.standard_normal(tuple(t.shape)) for t in diff]
        terms = [(g * torch.from_numpy(w)).sum() for g, w in zip(g1, u) if g is not None and g.requires_grad]
        try:
            g2 = torch.autograd.grad(sum(terms), diff + [gos], allow_unused=True) if terms else [None] * (len(diff) + 1)
            second = _grad_list(g2)
        except RuntimeError as e:  # PyTorch 2.13 has no double backward for hardsigmoid (and a fused layer with it)
            second = f"PyTorch: {str(e).splitlines()[0]}"
        cases.append({"name": name, "inputs": [a.tolist() for a in arrays], "kinds": kinds,
                      "output": y.detach().numpy().tolist(),
                      "go": go.tolist(), "first": _grad_list(g1), "u": [w.tolist() for w in u], "second": second})
    return cases


def mlp_params(sizes: list, seed: int) -> list:
    """``[(W, b), ...]`` in float64, PyTorch's Linear layout and default init range, from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(n_in)
        out.append((rng.uniform(-bound, bound, (n_out, n_in)), rng.uniform(-bound, bound, n_out)))
    return out


def _torch_mlp(torch, params: list, act: str, act_kwargs: dict | None = None):
    ws = [(torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)) for w, b in params]
    fn = getattr(torch.nn.functional, act)

    def f(x):
        return fn(x, **(act_kwargs or {}))

    def net(x):
        for i, (w, b) in enumerate(ws):
            x = torch.nn.functional.linear(x, w, b)
            if i < len(ws) - 1:
                x = f(x)
        return x
    return net, [t for wb in ws for t in wb]


def param_signature(grads, seed: int = 11) -> list:
    """A small fingerprint of large parameter gradients (float64 arrays): per gradient its sum, sum of
    squares and dot with a fixed random array."""
    rng = np.random.default_rng(seed)
    return [[float(g.sum()), float((g * g).sum()), float((g * rng.standard_normal(g.shape)).sum())] for g in grads]


# The Eikonal loss of a signed-distance field, on a 4x256 softplus MLP (2-D points; beta = 100 as in IGR):
# a surface term (f = 0 on a circle of radius 0.5) plus the Eikonal term mean((|grad_x f| - 1)^2).
EIKONAL = {"sizes": [2, 256, 256, 256, 256, 1], "activation": "softplus", "activation_params": {"beta": 100.0},
           "seed": 21, "n": 128, "n_surface": 32, "weight": 0.1}


def eikonal_points(cfg: dict):
    rng = np.random.default_rng(cfg["seed"] + 1)
    x = rng.uniform(-1.0, 1.0, (cfg["n"], 2))
    a = rng.uniform(0.0, 2 * math.pi, cfg["n_surface"])
    return x, 0.5 * np.stack([np.cos(a), np.sin(a)], axis=1)


def _eikonal(torch) -> dict:
    cfg = EIKONAL
    net, params = _torch_mlp(torch, mlp_params(cfg["sizes"], cfg["seed"]), cfg["activation"], cfg["activation_params"])
    xs, surf = eikonal_points(cfg)
    x = torch.tensor(xs, requires_grad=True)
    f = net(x)
    (g,) = torch.autograd.grad(f.sum(), x, create_graph=True)
    eik = (((g * g).sum(dim=1).sqrt() - 1) ** 2).mean()
    s = (net(torch.tensor(surf)) ** 2).mean()
    loss = s + cfg["weight"] * eik
    loss.backward()
    grads = [p.grad.numpy() for p in params]
    return {**cfg, "loss": loss.item(), "eikonal": eik.item(), "surface": s.item(),
            "grad_x": g.detach().numpy().tolist(), "param_signature": param_signature(grads),
            "last_layer_grads": [grads[-2].tolist(), grads[-1].tolist()]}


# A 1-D Poisson PINN: u'' = f on [0, 1], u(0) = u(1) = 0, with u = sin(pi x), f = -pi^2 sin(pi x).
PINN = {"sizes": [1, 32, 32, 1], "activation": "tanh", "seed": 31, "n": 64}


def pinn_points(cfg: dict):
    x = (np.arange(cfg["n"]) + 0.5) / cfg["n"]
    return x.reshape(-1, 1), -math.pi ** 2 * np.sin(math.pi * x).reshape(-1, 1)


def _pinn(torch) -> dict:
    cfg = PINN
    net, params = _torch_mlp(torch, mlp_params(cfg["sizes"], cfg["seed"]), cfg["activation"])
    xs, fs = pinn_points(cfg)
    x = torch.tensor(xs, requires_grad=True)
    u = net(x)
    (ux,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (uxx,) = torch.autograd.grad(ux.sum(), x, create_graph=True)
    residual = ((uxx - torch.tensor(fs)) ** 2).mean()
    boundary = (net(torch.tensor([[0.0], [1.0]], dtype=torch.float64)) ** 2).mean()
    loss = residual + boundary
    loss.backward()
    return {**cfg, "loss": loss.item(), "residual": residual.item(), "u": u.detach().numpy().ravel().tolist(),
            "ux": ux.detach().numpy().ravel().tolist(), "uxx": uxx.detach().numpy().ravel().tolist(),
            "param_grads": [p.grad.numpy().tolist() for p in params]}


# The Hessian of a small MLP: with respect to its input, and of a loss with respect to its first weight;
# and a Hessian-vector product with that weight.
HESSIAN = {"sizes": [4, 8, 8, 1], "activation": "tanh", "seed": 41}


def _hessian(torch) -> dict:
    cfg = HESSIAN
    params = mlp_params(cfg["sizes"], cfg["seed"])
    rng = np.random.default_rng(cfg["seed"] + 1)
    x0, xb, v = rng.standard_normal(4), rng.standard_normal((8, 4)), rng.standard_normal((8, 4))
    net, ps = _torch_mlp(torch, params, cfg["activation"])
    TF = torch.autograd.functional
    h_x = TF.hessian(lambda x: net(x.reshape(1, 4)).sum(), torch.tensor(x0))
    rest = [p.detach() for p in ps[1:]]

    def loss_of_w1(w1):
        h = torch.tanh(torch.nn.functional.linear(torch.tensor(xb), w1, rest[0]))
        h = torch.tanh(torch.nn.functional.linear(h, rest[1], rest[2]))
        return (torch.nn.functional.linear(h, rest[3], rest[4]) ** 2).mean()
    w1 = torch.tensor(params[0][0])
    h_w = TF.hessian(loss_of_w1, w1)
    _, hv = TF.hvp(loss_of_w1, w1, torch.tensor(v))
    return {**cfg, "x0": x0.tolist(), "xb": xb.tolist(), "v": v.tolist(), "hessian_x": h_x.numpy().tolist(),
            "hessian_w1": h_w.numpy().tolist(), "hvp_w1": hv.numpy().tolist()}


def record_higher() -> dict:
    """PyTorch's higher-order references (needs torch): tests/test_higher_order.py."""
    import torch
    torch.set_num_threads(1)
    return {"torch_version": torch.__version__.split("+")[0], "recorded_by": "tests/reference/record_torch.py",
            "gradgrad": _gradgrad(torch), "eikonal": _eikonal(torch), "pinn": _pinn(torch),
            "hessian": _hessian(torch)}


def load_higher() -> dict:
    with open(PATH_HIGHER, encoding="utf-8") as f:
        return json.load(f)


def record() -> dict:
    """PyTorch's reference values (needs torch)."""
    import torch
    torch.set_num_threads(1)  # deterministic reductions
    return {"torch_version": torch.__version__.split("+")[0], "recorded_by": "tests/reference/record_torch.py",
            "optimizers": _optimizers(torch), "optimizer_states": _optimizer_states(torch), "schedulers": _schedulers(torch), "linear": _linear(torch),
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


def assert_same(a, b, rel=lambda path: 1e-12, skip: tuple = (), path: str = "$", abs_tol: float = 1e-15) -> None:
    """Two recordings agree: the same structure, equal strings and integers, floats to ``rel(path)`` (and
    ``abs_tol``; NaN equals NaN); keys in ``skip`` are not compared."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            if k not in skip:
                assert_same(a[k], b[k], rel, skip, f"{path}.{k}", abs_tol)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, rel, skip, f"{path}[{i}]", abs_tol)
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel(path), abs_tol=abs_tol), \
            (path, a, b)
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
        json.dump(data, f, indent=None, separators=(",", ":")) if path in (OPS_PATH, PATH_HIGHER) else \
            json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    print(f"wrote {path} ({os.path.getsize(path):,} bytes, torch {data['torch_version']})")


def main() -> int:
    _write(PATH, record())
    _write(OPS_PATH, record_ops())
    _write(PATH_HIGHER, record_higher())
    return 0


if __name__ == "__main__":
    sys.exit(main())
