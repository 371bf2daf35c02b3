"""Global autograd switches: grad recording and anomaly detection."""
from __future__ import annotations

import functools
from typing import Any, Callable


from .._mode import STATE  # noqa: F401  (the flags live below the backends; this module sets them)


def is_grad_enabled() -> bool:
    """True when operations are recorded for backward."""
    return STATE.grad_enabled


class _GradModeContext:
    _mode: bool

    def __enter__(self) -> None:
        self._prev = STATE.grad_enabled
        STATE.grad_enabled = self._mode

    def __exit__(self, *exc: Any) -> None:
        STATE.grad_enabled = self._prev

    def __call__(self, fn: Callable) -> Callable:
        mode = self._mode

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradModeContext):  # noqa: N801
    """Context manager / decorator: do not record operations (inference, optimizer steps)."""

    _mode = False


class enable_grad(_GradModeContext):  # noqa: N801
    """Context manager / decorator: record operations even inside ``no_grad``."""

    _mode = True


class set_grad_enabled(_GradModeContext):  # noqa: N801
    """Context manager / decorator that sets grad recording to ``mode``."""

    def __init__(self, mode: bool) -> None:
        self._mode = bool(mode)


class detect_anomaly:  # noqa: N801
    """Within this context, the first op whose forward output or backward gradient holds NaN/inf
    raises ``FloatingPointError`` naming that op (slow: checks every array)."""

    def __init__(self, check_nan: bool = True) -> None:
        self._mode = bool(check_nan)

    def __enter__(self) -> None:
        self._prev = STATE.anomaly
        STATE.anomaly = self._mode

    def __exit__(self, *exc: Any) -> None:
        STATE.anomaly = self._prev


def set_detect_anomaly(mode: bool) -> None:
    """Turn anomaly detection on or off globally."""
    STATE.anomaly = bool(mode)
