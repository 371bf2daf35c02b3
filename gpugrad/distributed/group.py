"""The process-group interface the backends implement, the ``Work`` handle of non-blocking
collectives, reduction names and the bounded wait used everywhere (no collective waits forever)."""
from __future__ import annotations

import os
import time
from typing import Any, Callable

REDUCE_OPS = ("sum", "avg", "max", "min")
DEFAULT_TIMEOUT_S = 300.0  # override with init_process_group(timeout=...) or GPUGRAD_DIST_TIMEOUT


class DistributedError(RuntimeError):
    """A distributed set-up or communication failure (missing backend, wrong launcher, timeout)."""


class DistributedTimeout(DistributedError):
    """A collective did not complete within the process group's timeout (a rank died or diverged)."""


def default_timeout() -> float:
    v = os.environ.get("GPUGRAD_DIST_TIMEOUT")
    if not v:
        return DEFAULT_TIMEOUT_S
    try:
        t = float(v)
    except ValueError:
        raise DistributedError(f"GPUGRAD_DIST_TIMEOUT={v!r} is not a number of seconds") from None
    if t <= 0:
        raise DistributedError(f"GPUGRAD_DIST_TIMEOUT={v!r} must be > 0 seconds")
    return t


def check_op(op: str, where: str) -> str:
    name = getattr(op, "value", op)
    if not isinstance(name, str) or name.lower() not in REDUCE_OPS:
        raise ValueError(f"{where}: unknown reduction op {op!r}; expected one of {', '.join(REDUCE_OPS)}")
    return name.lower()


def wait_until(test: Callable[[], bool], timeout: float, what: str, rank: int, size: int) -> None:
    """Poll ``test()`` until it is true: spin briefly (latency), then sleep with a growing pause (so
    oversubscribed ranks leave the cores to the others); past ``timeout`` seconds raise
    :class:`DistributedTimeout` naming the collective."""
    if test():
        return
    start = time.perf_counter()
    spin_until = start + 2e-4
    pause = 1e-5
    while not test():
        now = time.perf_counter()
        if now > spin_until:
            if now - start > timeout:
                raise DistributedTimeout(
                    f"gpugrad.distributed: rank {rank}/{size}: {what} did not complete within {timeout:g} s. "
                    "Another rank has probably died, raised or called a different collective (all ranks "
                    "must run the same collectives in the same order). Raise the limit with "
                    "init_process_group(timeout=...) or GPUGRAD_DIST_TIMEOUT if a step is legitimately "
                    "that slow.")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)


class Work:
    """Handle of a non-blocking collective (PyTorch's ``Work``): ``wait()`` blocks until the result
    is in the tensor (bounded by the group's timeout); ``is_completed()`` polls without blocking."""

    def __init__(self, test: Callable[[], bool], finish: Callable[[], None] | None, timeout: float,
                 what: str, rank: int, size: int) -> None:
        self._test, self._finish = test, finish
        self._timeout, self._what, self._rank, self._size = timeout, what, rank, size
        self._done = False

    def is_completed(self) -> bool:
        return self._done or bool(self._test())

    def wait(self) -> bool:
        if not self._done:
            wait_until(self._test, self._timeout, self._what, self._rank, self._size)
            if self._finish is not None:
                self._finish()
            self._done = True
        return True


class ProcessGroup:
    """What a backend provides. Collectives work on raw arrays of a tensor's backend, in place."""

    name = "abstract"
    rank: int
    size: int
    timeout: float

    def all_reduce_array(self, arr: Any, be: Any, op: str = "sum", async_op: bool = False) -> Work | None:
        raise NotImplementedError

    def broadcast_array(self, arr: Any, be: Any, src: int = 0, async_op: bool = False) -> Work | None:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def allgather_object(self, obj: Any) -> list:
        raise NotImplementedError

    def reduce_dtype(self, dtype: Any) -> Any:
        """The dtype a flat gradient bucket of ``dtype`` is reduced in."""
        return dtype

    def destroy(self) -> None:
        pass
