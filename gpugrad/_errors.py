"""Errors that already name the op (the lowest layer: backends and autograd both raise them).

The classes are those PyTorch raises for the same misuse, so that user code written for PyTorch catches
them: a shape that does not fit (matmul, reshape, permute, broadcasting, cat/stack...) is a
``RuntimeError`` in PyTorch, and here a :class:`ShapeError`, which is also a ``ValueError`` (what gpugrad
raised before, so ``except ValueError`` keeps working); a dtype mismatch PyTorch reports as
``RuntimeError`` is a :class:`DtypeError`, also a ``TypeError``; a dimension out of range is an
``IndexError``, as in PyTorch; an index outside its dimension an :class:`IndexRangeError` (both)."""
from __future__ import annotations


class ShapeError(RuntimeError, ValueError):
    """Shapes that do not fit the op (PyTorch: ``RuntimeError``; also a ``ValueError``)."""


class DtypeError(RuntimeError, TypeError):
    """Dtypes that do not fit the op where PyTorch raises ``RuntimeError`` (also a ``TypeError``)."""


class IndexRangeError(IndexError, RuntimeError):
    """An index outside its dimension (``gather``: PyTorch's ``RuntimeError``; ``embedding``: its
    ``IndexError``): both classes."""


def named_error(exc_type: type, message: str) -> BaseException:
    """An exception whose message already names the op (``Function.apply`` passes it through)."""
    e = exc_type(message)
    e._gg_named = True  # type: ignore[attr-defined]
    return e

