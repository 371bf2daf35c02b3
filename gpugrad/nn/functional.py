"""``gg.nn.functional``: stateless layers and losses (PyTorch's names)."""
from ..ops import (cross_entropy, dropout, fused_linear, gelu, leaky_relu, linear, log_softmax, mse_loss,
                   nll_loss, relu, sigmoid, softmax, tanh)

__all__ = ["cross_entropy", "dropout", "fused_linear", "gelu", "leaky_relu", "linear", "log_softmax", "mse_loss",
           "nll_loss", "relu", "sigmoid", "softmax", "tanh"]
