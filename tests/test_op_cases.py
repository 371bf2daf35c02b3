"""Tinygrad-style op cases (tests/reference/op_cases.py: op, inputs, one lambda for gpugrad and PyTorch)
against PyTorch 2.13: outputs (values and dtypes) and input gradients recorded in
tests/reference/torch_ops.json, checked on the CPU and on device "cuda" over the strict CuPy stand-in;
with torch installed, also against a live run. The misuse cases check that gpugrad raises an instance of
the exception class PyTorch raises for the same misuse (issue 17, item 7)."""
from __future__ import annotations

import builtins
import importlib.util
import json
import os
import warnings

import numpy as np
import pytest

import gpugrad as gg

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")
_spec = importlib.util.spec_from_file_location("record_torch", os.path.join(HERE, "record_torch.py"))
record_torch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record_torch)
op_cases = record_torch.op_cases
REF = record_torch.load_ops()
RECORDED = {c["name"]: c for c in REF["cases"]}
def _inputs(rec: dict, dev: str) -> list:
    xs = []
    for d in rec["inputs"]:
        t = gg.tensor(op_cases.as_array(d), device=dev)
        xs.append(t.requires_grad_() if d["grad"] else t)
    return xs


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


@pytest.mark.parametrize("name", list(op_cases.CASES))
def test_op_case_matches_recorded_torch(name, cpu_or_strict_cuda):
    device = cpu_or_strict_cuda
    case, rec = op_cases.CASES[name], RECORDED[name]
    xs = _inputs(rec, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # var without degrees of freedom warns, as in PyTorch
        outs = _outputs(case.fn(gg, gg.nn.functional, *xs))
    assert len(outs) == len(rec["outputs"]), name
    total = None
    for o, want, w in zip(outs, rec["outputs"], rec["output_weights"]):
        assert str(o.dtype) == want["dtype"], f"{name}: dtype {o.dtype}, PyTorch {want['dtype']}"
        assert list(o.shape) == want["shape"], f"{name}: shape {o.shape}, PyTorch {want['shape']}"
        expected = np.array(want["values"], dtype=np.float64 if want["dtype"] != "bool" else bool)
        np.testing.assert_allclose(o.numpy().reshape(-1).astype(expected.dtype), expected, rtol=case.rtol,
                                   atol=case.atol, err_msg=name)
        if w is not None:
            assert o.requires_grad, f"{name}: PyTorch's output is differentiable, gpugrad's is not"
            term = (o * gg.tensor(np.reshape(w["values"], w["shape"]), dtype=o.dtype, device=device)).sum()
            total = term if total is None else total + term
    if total is not None:
        total.backward()
    for x, d, g in zip(xs, rec["inputs"], rec["grads"]):
        if not d["grad"]:
            continue
        got = None if x.grad is None else x.grad.numpy().astype(np.float64).reshape(-1)
        if g is None:
            assert got is None or not np.any(got), f"{name}: PyTorch gives no gradient here"
            continue
        assert got is not None, f"{name}: no gradient reached an input PyTorch differentiates"
        np.testing.assert_allclose(got, np.array(g), rtol=max(case.rtol, 1e-9), atol=max(case.atol, 1e-11),
                                   err_msg=f"{name} gradient")


@pytest.mark.parametrize("name", list(op_cases.ERROR_CASES))
def test_misuse_raises_the_class_pytorch_raises(name):
    want = getattr(builtins, REF["errors"][name]["class"])
    with pytest.raises(want) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            op_cases.ERROR_CASES[name](gg, gg.nn.functional)
    msg = str(info.value)
    assert len(msg) > 20 and ":" in msg, f"{name}: the message should name the op and what is wrong: {msg!r}"


def test_recorded_file_is_complete():
    assert REF["torch_version"] == "2.13.0"
    assert list(RECORDED) == list(op_cases.CASES)
    assert set(REF["errors"]) == set(op_cases.ERROR_CASES)
    for c in op_cases.C:  # the stored inputs are the table's (the generator did not change; NaN-safe)
        assert json.dumps(RECORDED[c.name]["inputs"]) == json.dumps(op_cases.make_inputs(c)), c.name


def test_recorded_file_matches_live_torch():
    torch = pytest.importorskip("torch")
    if torch.__version__.split("+")[0] != REF["torch_version"]:
        pytest.skip(f"recorded with torch {REF['torch_version']}, installed {torch.__version__}")
    record_torch.assert_same(REF, record_torch.record_ops(), skip=("message",))  # the messages may be reworded
