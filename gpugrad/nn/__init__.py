"""``gg.nn``: modules, layers, containers and losses with PyTorch's names and semantics."""
from . import functional, init, utils  # parallel: imported by gpugrad/__init__.py (it sits above nn)
from .layers import (GELU, MLP, CrossEntropyLoss, Dropout, Flatten, Identity, LeakyReLU, Linear, LogSoftmax,
                     MLPBlock, ModuleList, MSELoss, NLLLoss, ReLU, Sequential, Sigmoid, Softmax, Tanh)
from .module import IncompatibleKeys, Module, Parameter

__all__ = ["functional", "init", "parallel", "utils", "Module", "Parameter", "IncompatibleKeys", "Linear", "Identity", "ReLU",
           "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "Dropout", "Flatten", "Sequential",
           "ModuleList", "MLP", "MLPBlock", "MSELoss", "CrossEntropyLoss", "NLLLoss"]
