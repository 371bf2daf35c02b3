"""Reverse-mode automatic differentiation: ``Function``, ``backward``, ``grad``, ``gradcheck``."""
from .engine import backward, grad
from .function import Context, Function, GradError
from .gradcheck import gradcheck, gradcheck_directional
from .grad_mode import (detect_anomaly, enable_grad, is_grad_enabled, no_grad, set_detect_anomaly,
                        set_grad_enabled)
from .saved import peak_saved_bytes, reset_peak_saved_bytes, saved_bytes

__all__ = ["Context", "Function", "GradError", "backward", "grad", "gradcheck", "gradcheck_directional",
           "detect_anomaly", "enable_grad", "is_grad_enabled", "no_grad", "set_detect_anomaly",
           "set_grad_enabled", "saved_bytes", "peak_saved_bytes", "reset_peak_saved_bytes"]
