"""``gg.nn``: modules, layers, containers and losses with PyTorch's names and semantics."""
from . import functional, init, utils  # parallel: imported by gpugrad/__init__.py (it sits above nn)
from .layers import (ELU, GELU, MLP, SELU, SIREN, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Embedding,
                     Flatten, Hardsigmoid, Hardswish, Hardtanh, HuberLoss, Identity, L1Loss, LayerNorm, LeakyReLU, Linear,
                     LogSigmoid, LogSoftmax, Mish, MLPBlock, ModuleList, MSELoss, NLLLoss, ReLU, ReLU6, Sequential,
                     Sigmoid, SiLU, Sine, SmoothL1Loss, Softmax, Softplus, Tanh, Unflatten)
from .module import IncompatibleKeys, Module, Parameter

__all__ = ["functional", "init", "parallel", "utils", "Module", "Parameter", "IncompatibleKeys", "Linear", "Identity", "ReLU",
           "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Softplus", "ELU", "SELU", "Mish", "Hardswish", "Hardsigmoid",
           "ReLU6", "Hardtanh", "LogSigmoid", "Sine", "Softmax", "LogSoftmax", "Dropout", "Flatten", "Unflatten",
           "Sequential", "ModuleList", "MLP", "MLPBlock", "SIREN", "LayerNorm", "Embedding", "MSELoss", "L1Loss",
           "SmoothL1Loss", "HuberLoss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss"]
