"""The process-wide autograd switches (grad recording, anomaly detection) as one flags object.

It sits in the foundation layer, below the backends, so a backend can read ``STATE.anomaly`` without
importing autograd; ``gpugrad.autograd.grad_mode`` holds the public API that sets the flags."""
from __future__ import annotations


class _State:
    __slots__ = ("grad_enabled", "anomaly")

    def __init__(self) -> None:
        self.grad_enabled = True
        self.anomaly = False


STATE = _State()
