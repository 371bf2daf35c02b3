"""Errors that already name the op (the lowest layer: backends and autograd both raise them)."""
from __future__ import annotations


def named_error(exc_type: type, message: str) -> BaseException:
    """An exception whose message already names the op (``Function.apply`` passes it through)."""
    e = exc_type(message)
    e._gg_named = True  # type: ignore[attr-defined]
    return e
