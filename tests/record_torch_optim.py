"""Records PyTorch's optimizer results for tests/test_optim_rules.py::test_torch_reference_values
(the default test run has no torch). Run from the repository root with torch installed:

    python3 tests/record_torch_optim.py        # writes tests/data/optim_torch_ref.json
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.99), weight_decay=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True, capturable=False)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, amsgrad=True, maximize=True)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.4, centered=True, momentum=0.5, weight_decay=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, maximize=True)),
]
STEPS = 6


def main() -> None:
    rng = np.random.default_rng(7)
    shapes = [(4, 3), (4,), (2, 2)]
    p0 = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(STEPS)]
    out = {"torch": torch.__version__, "p0": [p.tolist() for p in p0], "grads": [[g.tolist() for g in gs] for gs in grads],
           "cases": []}
    for name, kw in CASES:
        ps = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in p0]
        opt = getattr(torch.optim, name)(ps, **kw)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = torch.tensor(g, dtype=torch.float64)
            opt.step()
        out["cases"].append({"optimizer": name, "kwargs": {k: (list(v) if isinstance(v, tuple) else v)
                                                           for k, v in kw.items() if k != "capturable"},
                             "final": [p.detach().numpy().tolist() for p in ps]})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "optim_torch_ref.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, path)
    print("wrote", path, len(out["cases"]), "cases")


if __name__ == "__main__":
    main()
