"""``gg.nn.functional``: stateless layers and losses (PyTorch's names)."""
from ..ops import (cross_entropy, dropout, elu, fused_linear, gelu, hardsigmoid, hardswish, hardtanh, leaky_relu,
                   linear, log_softmax, logsigmoid, mish, mse_loss, nll_loss, relu, relu6, selu, sigmoid, silu, sin,
                   softmax, softplus, tanh)

__all__ = ["cross_entropy", "dropout", "elu", "fused_linear", "gelu", "hardsigmoid", "hardswish", "hardtanh",
           "leaky_relu", "linear", "log_softmax", "logsigmoid", "mish", "mse_loss", "nll_loss", "relu", "relu6", "selu",
           "sigmoid", "silu", "sin", "softmax", "softplus", "tanh"]
