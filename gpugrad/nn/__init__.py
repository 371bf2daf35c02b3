"""``gg.nn``: modules, layers, containers and losses with PyTorch's names and semantics."""
from . import functional, init, parallel, utils
from .layers import (GELU, MLP, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Embedding, Flatten, HuberLoss,
                     Identity, L1Loss, LayerNorm, LeakyReLU, Linear, LogSoftmax, MLPBlock, ModuleList, MSELoss, NLLLoss,
                     ReLU, Sequential, Sigmoid, SmoothL1Loss, Softmax, Tanh, Unflatten)
from .module import IncompatibleKeys, Module, Parameter

__all__ = ["functional", "init", "parallel", "utils", "Module", "Parameter", "IncompatibleKeys", "Linear", "Identity", "ReLU",
           "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "Dropout", "Flatten", "Sequential",
           "ModuleList", "MLP", "MLPBlock", "MSELoss", "CrossEntropyLoss", "NLLLoss", "L1Loss", "SmoothL1Loss",
           "HuberLoss", "BCELoss", "BCEWithLogitsLoss", "LayerNorm", "Embedding", "Unflatten"]
