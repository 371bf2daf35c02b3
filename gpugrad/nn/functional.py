"""``gg.nn.functional``: stateless layers and losses (PyTorch's names)."""
from ..ops import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, dropout, embedding,
                   fused_linear, gelu, huber_loss, l1_loss, layer_norm, leaky_relu, linear, log_softmax, mse_loss,
                   nll_loss, one_hot, pad, relu, sigmoid, smooth_l1_loss, softmax, tanh)

__all__ = ["binary_cross_entropy", "binary_cross_entropy_with_logits", "cross_entropy", "dropout", "embedding",
           "fused_linear", "gelu", "huber_loss", "l1_loss", "layer_norm", "leaky_relu", "linear", "log_softmax",
           "mse_loss", "nll_loss", "one_hot", "pad", "relu", "sigmoid", "smooth_l1_loss", "softmax", "tanh"]
