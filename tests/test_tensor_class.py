"""Tensor's methods live where Tensor is defined: every method and operator is declared in the class
body of gpugrad/tensor.py with a signature and a one-line docstring, nothing else binds attributes
onto Tensor, and the hottest operators are their Function's ``apply`` itself (one frame per op)."""
from __future__ import annotations

import ast
import inspect
import os

import pytest

import gpugrad as gg
from gpugrad import ops as F
from gpugrad.ops import elementwise as E
from gpugrad.tensor import Tensor, _binds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENSOR_PY = os.path.join(ROOT, "gpugrad", "tensor.py")

# What Python itself puts in a class's __dict__ (the __slots__' member descriptors; copy/copyreg
# caches __slotnames__ on the class the first time a tensor is copied).
_AUTOMATIC = {"__module__", "__qualname__", "__doc__", "__slots__", "__weakref__", "__annotations__",
              "__firstlineno__", "__static_attributes__", "__slotnames__"} | set(Tensor.__slots__)


def _class_body_names() -> set[str]:
    tree = ast.parse(open(TENSOR_PY, encoding="utf-8").read())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Tensor"]
    names = set()
    for n in cls.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(n.name)
        elif isinstance(n, ast.Assign):
            names.update(t.id for t in n.targets if isinstance(t, ast.Name))
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
    return names


def _members() -> dict:
    return {k: v for k, v in Tensor.__dict__.items() if k not in _AUTOMATIC}


def test_every_method_is_declared_in_the_class_body():
    declared = _class_body_names()
    assert len(_members()) > 120  # the ops' methods and operators are here too
    undeclared = sorted(set(_members()) - declared)
    assert not undeclared, f"Tensor attributes bound outside its class body in gpugrad/tensor.py: {undeclared}"


def test_nothing_binds_attributes_onto_tensor_from_outside():
    """No ``setattr(Tensor, ...)`` and no ``Tensor.x = ...`` anywhere in gpugrad/ (the late binding
    gpugrad/_tensor_methods.py did): one place per method."""
    bad = []
    for dirpath, dirs, files in os.walk(os.path.join(ROOT, "gpugrad")):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            for n in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                targets = n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(
                    n, (ast.AugAssign, ast.AnnAssign)) else []
                for t in targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "Tensor":
                        bad.append(f"{os.path.relpath(path, ROOT)}:{n.lineno} Tensor.{t.attr} = ...")
                if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "setattr"
                        and n.args and isinstance(n.args[0], ast.Name) and n.args[0].id == "Tensor"):
                    bad.append(f"{os.path.relpath(path, ROOT)}:{n.lineno} setattr(Tensor, ...)")
    assert not bad, "declare Tensor's methods in its class body (gpugrad/tensor.py):\n  " + "\n  ".join(bad)


def test_every_method_has_a_signature_and_a_one_line_docstring():
    missing = []
    for name, v in _members().items():
        if isinstance(v, property):
            fn = v.fget
        elif isinstance(v, (staticmethod, classmethod)):
            fn = v.__func__
        elif callable(v):
            fn = v
        else:
            continue  # __array_priority__, __hash__ = None would land here
        doc = (fn.__doc__ or "").strip()
        if not doc or len(doc.splitlines()[0]) < 8:
            missing.append(name)
        params = list(inspect.signature(fn).parameters)
        if not isinstance(v, staticmethod):
            assert params and params[0] == "self", f"Tensor.{name}{inspect.signature(fn)}"
    assert not missing, f"give these Tensor methods a one-line docstring: {sorted(missing)}"


@pytest.mark.parametrize("name, fn", [
    ("__add__", E.Add), ("__radd__", E.Add), ("__sub__", E.Sub), ("__mul__", E.Mul), ("__rmul__", E.Mul),
    ("__truediv__", E.Div), ("__neg__", E.Neg), ("add", E.Add), ("sub", E.Sub), ("mul", E.Mul), ("div", E.Div)])
def test_the_hottest_operators_are_their_functions_apply(name, fn):
    """``x * w`` runs ``Mul.apply``'s code directly: no wrapper frame between the operator and apply."""
    m = getattr(Tensor, name)
    assert m.__code__ is fn.apply.__code__
    assert [c.cell_contents for c in m.__closure__] == [c.cell_contents for c in fn.apply.__closure__]
    assert m.__doc__ and list(inspect.signature(m).parameters)[0] == "self"  # the declared signature


def test_declared_methods_run_the_op_function():
    assert Tensor.sum.__code__ is F.sum.__code__ and Tensor.view.__code__ is F.reshape.__code__
    assert Tensor.sum.__doc__ != F.sum.__doc__ and str(inspect.signature(Tensor.sum)).startswith("(self, dim")
    x = gg.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert x.sum(1).tolist() == [3.0, 7.0] and x.view(4).shape == (4,) and (x == x).all().item()


def test_binds_refuses_a_declaration_that_differs_from_the_op():
    with pytest.raises(TypeError, match=r"Tensor.sum declares .*keepdim.* but gpugrad.ops.sum takes"):
        @_binds(F.sum)
        def sum(self, dim=None, keepdim=True):  # noqa: A001 - the default differs
            """Sum."""
    with pytest.raises(TypeError, match=r"Tensor.clamp declares"):
        @_binds(F.clamp)
        def clamp(self, lo=None, hi=None):
            """Clip."""


def test_the_layers_below_know_tensor_by_its_registered_class():
    """autograd, ops and creation never import tensor.py: they tell tensors by TensorBase and build
    them through the class tensor.py registered."""
    from gpugrad.autograd import function
    assert function._Tensor is Tensor and issubclass(Tensor, function.TensorBase)
    assert Tensor.__mro__[1] is function.TensorBase and function.TensorBase.__slots__ == ()
    assert type(function._make_result(gg.tensor(1.0).data, None, None, 0)) is Tensor
    with pytest.raises(TypeError, match="not a subclass of TensorBase"):
        function.register_tensor_class(object)
