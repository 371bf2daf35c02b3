"""``gg.nn.functional``: stateless layers and losses (PyTorch's names)."""
from ..ops import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, dropout, elu, embedding,
                   fused_linear, gelu, hardsigmoid, hardswish, hardtanh, huber_loss, l1_loss, layer_norm, leaky_relu,
                   linear, log_softmax, logsigmoid, mish, mse_loss, nll_loss, one_hot, pad, relu, relu6, selu, sigmoid,
                   silu, sin, smooth_l1_loss, softmax, softplus, tanh)

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "dropout", "elu", "embedding",
           "fused_linear", "gelu", "hardsigmoid", "hardswish", "hardtanh", "huber_loss", "l1_loss", "layer_norm",
           "leaky_relu", "linear", "log_softmax", "logsigmoid", "mish", "mse_loss", "nll_loss", "one_hot", "pad", "relu",
           "relu6", "selu", "sigmoid", "silu", "sin", "smooth_l1_loss", "softmax", "softplus", "tanh"]
