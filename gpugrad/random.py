"""Random state per device. Generators are counter-based (splitmix64 of seed and offset), so a state
is two integers, drawing the same numbers on CPU and CUDA, and cheap to save and restore."""
from __future__ import annotations

from typing import Any, Callable

from ._device import as_device
from .backends import get_backend
from .creation import seed_value

_MASK64 = 0xFFFFFFFFFFFFFFFF


def get_rng_state(device="cpu") -> tuple[int, int]:
    """``(seed, offset)`` of the device's generator."""
    return get_backend(as_device(device)).get_rng_state()


def set_rng_state(state, device="cpu") -> None:
    get_backend(as_device(device)).set_rng_state(state)


def initial_seed(device="cpu") -> int:
    return get_backend(as_device(device)).get_rng_state()[0]



class Generator:
    """A random generator of its own (``torch.Generator``): counter-based like the device generators, a
    state of two integers; what it draws (``gg.randperm(n, generator=g)``, a ``DataLoader``'s shuffle)
    leaves the global stream that ``gg.manual_seed`` seeds untouched."""

    def __init__(self, device: Any = "cpu") -> None:
        self.device = as_device(device)
        self._state = (67280421310721, 0)  # PyTorch's default initial seed, as the device generators

    def manual_seed(self, seed: Any) -> "Generator":
        self._state = (seed_value(seed, "Generator.manual_seed") & _MASK64, 0)
        return self

    def initial_seed(self) -> int:
        return self._state[0]

    def get_state(self) -> tuple[int, int]:
        return self._state

    def set_state(self, state) -> "Generator":
        self._state = (int(state[0]), int(state[1]))
        return self

    def draw(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(backend)`` drawing from this generator's stream (the device backend's generator code, its
        state swapped in for the call)."""
        be = get_backend(self.device)
        saved = be.get_rng_state()
        be.set_rng_state(self._state)
        try:
            return fn(be)
        finally:
            self._state = be.get_rng_state()
            be.set_rng_state(saved)
