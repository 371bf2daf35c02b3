"""gpugrad: a reverse-mode autodiff engine for MLP training on CPU (NumPy) and NVIDIA GPUs (CuPy +
custom CUDA kernels), with PyTorch's names."""
from __future__ import annotations

__version__ = "0.1.0"

from ._threads import limit_rank_threads as _limit_rank_threads

_limit_rank_threads()  # under mpiexec: cores // local ranks BLAS threads per rank, set before NumPy loads

from ._device import device  # noqa: E402 (the imports below load NumPy)
from ._dtype import (bool_, double, float16, float32, float64, get_default_dtype, half, int32, int64, long,
                     set_default_dtype, uint8)
from .tensor import Tensor
from .creation import (arange, as_tensor, empty, eye, from_dlpack, from_numpy, full, full_like, linspace,
                       manual_seed, ones, ones_like, rand, randint, randn, randn_like, randperm, tensor, zeros,
                       zeros_like)
from .autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .ops import (abs, add, all, amax, amin, any, argmax, argmin, cat, chunk, clamp, clip, concatenate, cos, div,
                  eq, erf, exp, exp2, expand, flatten, flip, gather, ge, gt, isfinite, isinf, isnan, le, lerp, log,
                  log10, log2, log_softmax, logsumexp, lt, masked_fill, matmul, max, maximum, mean, min, minimum, mul,
                  ne, neg, permute, pow, prod, relu, reshape, rsqrt, sigmoid, sign, sin, softmax, split, sqrt, squeeze,
                  stack, std, sub, sum, tanh, transpose, tril, triu, unflatten, unsqueeze, var, where)
from . import autograd, random  # noqa: E402
from . import nn, optim  # noqa: E402
from . import checkpoint, memory  # noqa: E402
from . import cuda  # noqa: E402
from . import amp  # noqa: E402
from .io import load, save  # noqa: E402
from . import data, utils, viz  # noqa: E402
from .random import Generator  # noqa: E402
from . import distributed  # noqa: E402  (imports mpi4py only when used)
from .nn import parallel as _nn_parallel  # noqa: E402,F401  (gg.nn.parallel: DDP, above nn)

__all__ = [n for n in dir() if not n.startswith("_")]
