"""The process-wide autograd switches (grad recording, anomaly detection, the backward formula being
recorded) as one flags object.

It sits in the foundation layer, below the backends, so a backend can read ``STATE.anomaly`` without
importing autograd; ``gpugrad.autograd.grad_mode`` holds the public API that sets the flags."""
from __future__ import annotations


class _State:
    __slots__ = ("grad_enabled", "anomaly", "recording")

    def __init__(self) -> None:
        self.grad_enabled = True
        self.anomaly = False
        self.recording = None  # the op whose backward formula runs on Tensors (create_graph), else None


STATE = _State()
