"""Reverse-mode automatic differentiation: ``Function``, ``backward``, ``grad``, ``gradcheck``;
``graph``: nodes built by hand and backward inside a backward (what checkpointing uses);
``functional``: vjp, jvp, jacobian, hessian, hvp, vhp (gradients of gradients: ``create_graph``)."""
from . import functional, graph
from .engine import backward, grad
from .function import Context, Function, GradError
from .gradcheck import gradcheck, gradcheck_directional, gradgradcheck
from .grad_mode import (detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_detect_anomaly,
                        set_grad_enabled)
from .saved import peak_saved_bytes, reset_peak_saved_bytes, saved_bytes

__all__ = ["functional", "graph", "Context", "Function", "GradError", "backward", "grad", "gradcheck",
           "gradcheck_directional", "gradgradcheck", "detect_anomaly", "enable_grad", "is_grad_enabled", "no_grad",
           "set_detect_anomaly", "set_grad_enabled", "saved_bytes", "peak_saved_bytes", "reset_peak_saved_bytes"]
