"""Random state per device. Generators are counter-based (splitmix64 of seed and offset), so a state
is two integers, drawing the same numbers on CPU and CUDA, and cheap to save and restore."""
from __future__ import annotations

from ._device import as_device
from .backends import get_backend

def get_rng_state(device="cpu") -> tuple[int, int]:
    """``(seed, offset)`` of the device's generator."""
    return get_backend(as_device(device)).get_rng_state()


def set_rng_state(state, device="cpu") -> None:
    get_backend(as_device(device)).set_rng_state(state)


def initial_seed(device="cpu") -> int:
    return get_backend(as_device(device)).get_rng_state()[0]

