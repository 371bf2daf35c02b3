"""Layers: ``Linear`` (fused activation), activations, ``Dropout``, containers (``Sequential`` with
automatic Linear+activation fusion, ``ModuleList``), losses and ``MLP``."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Iterable, Iterator

from .. import _dtype, ops
from .._device import as_device
from ..autograd.function import named_error
from ..autograd.grad_mode import is_grad_enabled, no_grad
from ..backends import get_backend
from ..kernels import activations as _A
from ..kernels.activations import ACTIVATIONS
from ..ops.linalg import FusedLinear as _FusedLinear
from ..tensor import Tensor, _make_result
from . import init
from .module import Module, Parameter, _not_a_tensor

__all__ = ["Linear", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU", "Softplus", "ELU", "SELU",
           "Mish", "Hardswish", "Hardsigmoid", "ReLU6", "Hardtanh", "LogSigmoid", "Sine", "Dropout", "Flatten",
           "Unflatten", "Sequential", "ModuleList", "MLP", "MLPBlock", "SIREN", "MSELoss", "L1Loss", "SmoothL1Loss",
           "HuberLoss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss", "LayerNorm", "Embedding",
           "Softmax", "LogSoftmax"]

_ACT_NAMES = tuple(a for a in ACTIVATIONS if a != "identity")


def _empty_param(shape: tuple, device, dtype, op: str = "Linear") -> Parameter:
    dev = as_device(device)
    dt = _dtype.as_dtype(dtype) or _dtype.get_default_dtype()
    if dt.kind != "f":
        raise named_error(TypeError, f"{op}: parameters must be floating point, got dtype {dt}")
    arr = get_backend(dev).xp.empty(shape, dt)
    return Parameter(_make_result(arr, dev, None, 0))


def _check_activation(op: str, activation: str | None) -> str:
    act = "identity" if activation in (None, "none", "identity", "linear") else activation
    if act not in ACTIVATIONS:
        raise named_error(ValueError, f"{op}: unknown activation {activation!r}; expected None or one of "
                          f"{_ACT_NAMES}")
    return act


def _activation_params(op: str, act: str, given: dict | None, negative_slope: float) -> tuple:
    """The activation's parameters (a tuple in the record's order) from ``activation_params`` (a dict
    by PyTorch's names) and the older ``negative_slope`` argument (leaky_relu's)."""
    given = dict(given or {})
    if act == "leaky_relu":
        given.setdefault("negative_slope", negative_slope)
    try:
        return _A.params(act, given)
    except TypeError as e:
        raise named_error(TypeError, f"{op}: {e}") from None


# ---------------------------------------------------------------------------------------- Linear
class Linear(Module):
    """``y = activation(x @ weight.T + bias)`` with ``weight`` of shape ``(out_features, in_features)``
    and PyTorch's default init (U(-1/sqrt(in), 1/sqrt(in)) for weight and bias, from the seeded
    generator). With ``activation`` (any name of ``gpugrad/kernels/activations.py``: 'relu', 'gelu',
    'silu', 'softplus', ...) the whole layer is one ``fused_linear`` op: one GEMM plus one fused
    bias+activation pass. ``activation_params``: the activation's parameters by PyTorch's names (e.g.
    ``{"beta": 2.0}`` for softplus); ``negative_slope`` is leaky_relu's."""

    _tensor_inputs = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None,
                 device: Any = None, dtype: Any = None, negative_slope: float = 0.01,
                 activation_params: dict | None = None) -> None:
        super().__init__()
        if int(in_features) < 0 or int(out_features) < 0:
            raise ValueError(f"Linear: feature sizes must be non-negative, got in_features={in_features}, "
                             f"out_features={out_features}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = _check_activation("Linear", activation)
        self._negative_slope = float(negative_slope)
        self.activation_params = _activation_params("Linear", self.activation, activation_params, self._negative_slope)
        self.weight = _empty_param((self.out_features, self.in_features), device, dtype)
        if bias:
            self.bias = _empty_param((self.out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def negative_slope(self) -> float:
        """leaky_relu's slope: the one ``forward`` uses (``activation_params``); setting it changes it."""
        return self.activation_params[0] if self.activation == "leaky_relu" else self._negative_slope

    @negative_slope.setter
    def negative_slope(self, value: float) -> None:
        self._negative_slope = float(value)
        if self.activation == "leaky_relu":
            self.activation_params = _activation_params("Linear", "leaky_relu", None, self._negative_slope)

    def reset_parameters(self) -> None:
        """PyTorch's default: kaiming_uniform_(a=sqrt(5)) for weight, U(-1/sqrt(fan_in), ..) for bias."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        p = self._parameters
        try:  # the registered parameters, without Module.__getattr__'s search (this runs per layer per step)
            w, b = p["weight"], p["bias"]
        except KeyError:  # weight or bias replaced by a buffer or a plain attribute
            w, b = self.weight, self.bias
        return _FusedLinear.apply(x, w, b, activation=self.activation, params=self.activation_params)

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        if self.activation != "identity":
            s += f", activation={self.activation!r}"
            for (name, _), v in zip(_A.get(self.activation).params, self.activation_params):
                s += f", {name}={v}"
        return s


# ---------------------------------------------------------------------------------------- activations
class Identity(Module):
    """Returns its input."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x


class _Activation(Module):
    """An elementwise activation; ``fused_activation()`` tells ``Sequential`` which ``fused_linear``
    activation it equals (``None``: not fusable)."""

    _tensor_inputs = True

    def fused_activation(self) -> tuple[str, tuple] | None:
        return None


class _Act(_Activation):
    """An activation of ``gpugrad/kernels/activations.py`` (``act``) as a module: forward is the op,
    fusion is the record, the parameters are attributes under their PyTorch names."""

    act = "identity"

    def __init__(self, inplace: bool = False) -> None:  # PyTorch's inplace: accepted, the result is new
        super().__init__()

    def _params(self) -> tuple:
        return _A.params(self.act, {n: getattr(self, n) for n, _ in _A.get(self.act).params})

    def forward(self, x: Tensor) -> Tensor:
        return ops.activation(x, self.act, self._params())

    def fused_activation(self) -> tuple[str, tuple] | None:
        return (self.act, self._params())

    def extra_repr(self) -> str:
        return ", ".join(f"{n}={getattr(self, n)}" for n, _ in _A.get(self.act).params)


class ReLU(_Act):
    act = "relu"

    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class LeakyReLU(_Act):
    act = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return ops.leaky_relu(x, self.negative_slope)


class Sigmoid(_Act):
    act = "sigmoid"

    def forward(self, x: Tensor) -> Tensor:
        return ops.sigmoid(x)


class Tanh(_Act):
    act = "tanh"

    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class GELU(_Activation):
    """GELU, exact (``approximate='none'``) or the tanh approximation (``'tanh'``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return ops.gelu(x, self.approximate)

    def fused_activation(self) -> tuple[str, tuple] | None:
        return ("gelu" if self.approximate == "none" else "gelu_tanh", ())

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Act):
    """``x * sigmoid(x)``."""
    act = "silu"


class Softplus(_Act):
    """``log(1 + exp(beta x)) / beta``; linear where ``beta x > threshold``."""
    act = "softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta, self.threshold = float(beta), float(threshold)


class ELU(_Act):
    """``x`` for ``x > 0``, else ``alpha (exp(x) - 1)``."""
    act = "elu"

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = float(alpha)


class SELU(_Act):
    """``scale * elu(x, alpha)`` with PyTorch's constants."""
    act = "selu"


class Mish(_Act):
    """``x * tanh(softplus(x))``."""
    act = "mish"


class Hardswish(_Act):
    """``x * relu6(x + 3) / 6``."""
    act = "hardswish"


class Hardsigmoid(_Act):
    """``relu6(x + 3) / 6``."""
    act = "hardsigmoid"


class ReLU6(_Act):
    """``min(max(x, 0), 6)``."""
    act = "relu6"


class Hardtanh(_Act):
    """``min(max(x, min_val), max_val)``."""
    act = "hardtanh"

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        if min_val > max_val:
            raise ValueError(f"Hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
        self.min_val, self.max_val = float(min_val), float(max_val)


class LogSigmoid(_Act):
    """``log(sigmoid(x))``."""
    act = "logsigmoid"


class Sine(_Act):
    """``sin(x)``: SIREN's activation (its ``omega_0`` is folded into the weights, see ``nn.SIREN`` and
    ``nn.init.siren_uniform_``)."""
    act = "sin"


class Softmax(Module):
    _tensor_inputs = True

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return ops.softmax(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x: Tensor) -> Tensor:
        return ops.log_softmax(x, self.dim)


class Dropout(Module):
    """Inverted dropout with probability ``p`` while training; identity in ``eval()`` mode."""

    _tensor_inputs = True

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return ops.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Flatten(Module):
    _tensor_inputs = True

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        return ops.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """``x.unflatten(dim, unflattened_size)``."""

    _tensor_inputs = True

    def __init__(self, dim: int, unflattened_size: tuple) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, x: Tensor) -> Tensor:
        return ops.unflatten(x, self.dim, self.unflattened_size)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


# ---------------------------------------------------------------------------------------- losses
class _Loss(Module):
    """A loss module: ``reduction`` ('mean', 'sum', 'none') and, for the weighted ones, ``weight`` as a
    buffer (it follows ``.to(device)``, as in PyTorch)."""

    _tensor_inputs = True

    def __init__(self, reduction: str = "mean", weight: Tensor | None = None) -> None:
        super().__init__()
        self.reduction = reduction
        if weight is not None and not isinstance(weight, Tensor):
            raise named_error(TypeError, f"{type(self).__name__}: weight must be a Tensor or None, got "
                              f"{type(weight).__name__}")
        self.register_buffer("weight", weight)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class MSELoss(_Loss):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return ops.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return ops.l1_loss(input, target, self.reduction)


class SmoothL1Loss(_Loss):
    def __init__(self, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = float(beta)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return ops.smooth_l1_loss(input, target, self.reduction, self.beta)


class HuberLoss(_Loss):
    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = float(delta)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return ops.huber_loss(input, target, self.reduction, self.delta)


class CrossEntropyLoss(_Loss):
    """``F.cross_entropy`` as a module; ``weight`` (one per class) first, as in PyTorch."""

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction, weight)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return ops.cross_entropy(input, target, self.weight, reduction=self.reduction, ignore_index=self.ignore_index,
                                 label_smoothing=self.label_smoothing)


class NLLLoss(_Loss):
    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction, weight)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return ops.nll_loss(input, target, self.weight, reduction=self.reduction, ignore_index=self.ignore_index)


class BCELoss(_Loss):
    def __init__(self, weight: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction, weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return ops.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight: Tensor | None = None, reduction: str = "mean", pos_weight: Tensor | None = None) -> None:
        super().__init__(reduction, weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002
        return ops.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                    pos_weight=self.pos_weight)


# ---------------------------------------------------------------------------------------- normalisation, embedding
class LayerNorm(Module):
    """``F.layer_norm`` over the trailing ``normalized_shape``, with learnable ``weight`` (ones) and
    ``bias`` (zeros) when ``elementwise_affine`` (``bias=False`` drops the bias, as in PyTorch 2.1+)."""

    _tensor_inputs = True

    def __init__(self, normalized_shape: "int | tuple", eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        shape = (int(normalized_shape),) if not isinstance(normalized_shape, (tuple, list)) else \
            tuple(int(s) for s in normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, float(eps), bool(elementwise_affine)
        if elementwise_affine:
            self.weight = _empty_param(shape, device, dtype, "LayerNorm")
            if bias:
                self.bias = _empty_param(shape, device, dtype, "LayerNorm")
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return ops.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Embedding(Module):
    """A lookup table of ``num_embeddings`` vectors of ``embedding_dim`` (init N(0, 1), the
    ``padding_idx`` row zero and without gradient), indexed by integer tensors of any shape."""

    _tensor_inputs = True

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        if padding_idx is not None:
            n = self.num_embeddings
            if not -n <= padding_idx < n:
                raise named_error(ValueError, f"Embedding: padding_idx {padding_idx} must be within [{-n}, {n - 1}]")
            padding_idx %= n
        self.padding_idx = padding_idx
        self.weight = _empty_param((self.num_embeddings, self.embedding_dim), device, dtype, "Embedding")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0

    def forward(self, x: Tensor) -> Tensor:
        return ops.embedding(x, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}" + (
            f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


# ---------------------------------------------------------------------------------------- containers
def _fusable_linear(m: Module) -> bool:
    """A plain ``Linear`` without its own activation (its forward not overridden)."""
    return isinstance(m, Linear) and m.activation == "identity" and type(m).forward is Linear.forward


class Sequential(Module):
    """Modules called in order; ``Sequential(a, b, c)`` or ``Sequential(OrderedDict(name=module))``.

    Automatic fusion: a ``Linear`` (no activation) directly followed by an activation module (``ReLU``,
    ``LeakyReLU``, ``Sigmoid``, ``Tanh``, ``GELU``, ``SiLU``, ``Softplus``, ... ``Sine``: every record of
    ``gpugrad/kernels/activations.py``) runs as ONE ``fused_linear`` call with the same
    parameters and bit-identical results (fewer graph nodes, one fewer pass over the activations).
    Turn it off for every Sequential with ``gg.nn.Sequential.fuse = False`` or for one with
    ``Sequential(..., fuse=False)``."""

    fuse: bool = True

    def __init__(self, *modules: Any, fuse: bool | None = None) -> None:
        super().__init__()
        if fuse is not None:
            self.fuse = bool(fuse)
        if len(modules) == 1 and isinstance(modules[0], (dict, OrderedDict)):
            for name, m in modules[0].items():
                self.add_module(str(name), m)
        else:
            for i, m in enumerate(modules):
                if not isinstance(m, Module):
                    raise TypeError(f"Sequential: argument {i} is a {type(m).__name__}, not a Module")
                self.add_module(str(i), m)

    def _plan(self) -> list:
        """Steps of forward: ``(module, None)`` or ``(linear, (activation, slope))`` for a fused pair."""
        mods = [m for m in self._modules.values() if m is not None]
        steps = []
        i = 0
        fuse = self.fuse
        while i < len(mods):
            m = mods[i]
            if fuse and i + 1 < len(mods) and _fusable_linear(m) and isinstance(mods[i + 1], _Activation):
                act = mods[i + 1].fused_activation()
                if act is not None:
                    steps.append((m, act))
                    i += 2
                    continue
            steps.append((m, None))
            i += 1
        return steps

    def forward(self, x: Any) -> Any:
        for m, act in self._plan():
            if act is None:
                x = m(x)
            else:
                if not isinstance(x, Tensor):  # the fused pair skips Linear.__call__: its input rule here
                    raise _not_a_tensor(self, x)
                x = _FusedLinear.apply(x, m.weight, m.bias, activation=act[0], params=act[1])
        return x

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def _key(self, idx: int) -> str:
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"Sequential: index {idx} is out of range for {n} modules")
        return list(self._modules)[idx % n]

    def __getitem__(self, idx: int | slice) -> Any:
        if isinstance(idx, slice):
            items = list(self._modules.items())[idx]
            out = Sequential(OrderedDict(items))
            if "fuse" in self.__dict__:
                out.fuse = self.fuse
            return out
        return self._modules[self._key(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        self.add_module(self._key(idx), module)

    def __delitem__(self, idx: int | slice) -> None:
        keys = list(self._modules)
        for k in (keys[idx] if isinstance(idx, slice) else [self._key(idx)]):
            del self._modules[k]
        # renumber like PyTorch
        items = list(self._modules.items())
        self._modules.clear()
        for i, (k, m) in enumerate(items):
            self._modules[str(i) if k.isdigit() else k] = m

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> "Sequential":
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> "Sequential":
        mods = list(self._modules.values())
        n = len(mods)
        if not -n <= index <= n:
            raise IndexError(f"Sequential.insert: index {index} out of range for {n} modules")
        mods.insert(index if index >= 0 else n + index, module)
        self._modules.clear()
        for i, m in enumerate(mods):
            self.add_module(str(i), m)
        return self

    def extra_repr(self) -> str:
        return "fuse=False" if not self.fuse else ""


class ModuleList(Module):
    """A list of modules whose parameters are registered (names '0', '1', ...)."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, idx: int | slice) -> Any:
        mods = list(self._modules.values())
        if isinstance(idx, slice):
            return ModuleList(mods[idx])
        return mods[idx]

    def __setitem__(self, idx: int, module: Module) -> None:
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"ModuleList: index {idx} out of range for {n} modules")
        self.add_module(str(idx % n), module)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("ModuleList has no forward: iterate over it in your module's forward")


# ---------------------------------------------------------------------------------------- MLP
class MLPBlock(Module):
    """One hidden layer of an ``MLP``: fused ``Linear(activation)``, then dropout, then ``x + f(x)``
    when ``residual`` (only built when in == out)."""

    _tensor_inputs = True

    def __init__(self, in_features: int, out_features: int, activation: str | None = "relu",
                 dropout: float = 0.0, residual: bool = False, bias: bool = True, device: Any = None,
                 dtype: Any = None, activation_params: dict | None = None) -> None:
        super().__init__()
        self.linear = Linear(in_features, out_features, bias=bias, activation=activation, device=device, dtype=dtype,
                             activation_params=activation_params)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.residual = bool(residual) and in_features == out_features

    def forward(self, x: Tensor) -> Tensor:
        lin = self._modules.get("linear") or self.linear
        h = lin(x)
        if self.dropout > 0.0:
            h = ops.dropout(h, self.dropout, self.training)
        return x + h if self.residual else h

    def extra_repr(self) -> str:
        parts = []
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        if self.residual:
            parts.append("residual=True")
        return ", ".join(parts)


class MLP(Module):
    """A multilayer perceptron: ``MLP([784, 1024, 1024, 10], activation='relu')``.

    Hidden layers are ``MLPBlock``s in ``self.blocks`` (fused Linear+activation, optional dropout,
    optional residual ``x + f(x)`` where in == out width); the output layer ``self.head`` is a plain
    Linear. ``activation`` is any name of ``gpugrad/kernels/activations.py``, ``activation_params`` its
    parameters by PyTorch's names. ``checkpoint`` (None, "none", "sqrt", an int number of segments, True
    for "sqrt", or a ``gg.checkpoint.CheckpointPlan``) recomputes the blocks in backward via
    ``gg.checkpoint.checkpoint_sequential`` to save memory."""

    _tensor_inputs = True

    def __init__(self, sizes: Iterable[int], activation: str | None = "relu", residual: bool = False,
                 dropout: float = 0.0, bias: bool = True, device: Any = None, dtype: Any = None,
                 checkpoint: Any = None, activation_params: dict | None = None) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP: sizes needs at least input and output widths, got {sizes}")
        act = _check_activation("MLP", activation)
        _activation_params("MLP", act, activation_params, 0.01)  # unknown names fail here, naming MLP
        if checkpoint is True:
            checkpoint = "sqrt"
        if checkpoint is False:
            checkpoint = None
        if (isinstance(checkpoint, str) and checkpoint not in ("none", "sqrt")) or \
                (isinstance(checkpoint, int) and checkpoint < 1):
            raise ValueError(f"MLP: checkpoint must be None, 'none', 'sqrt', a positive int or a "
                             f"gg.checkpoint.CheckpointPlan, got {checkpoint!r}")
        self.sizes = sizes
        self.checkpoint = checkpoint
        self.blocks = ModuleList(
            MLPBlock(a, b, act, dropout, residual, bias, device, dtype, activation_params)
            for a, b in zip(sizes[:-2], sizes[1:-1]))
        self.head = Linear(sizes[-2], sizes[-1], bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        blocks = list(self.blocks)
        seg = self.checkpoint
        if blocks and seg is not None and seg != "none" and is_grad_enabled():
            from ..checkpoint import checkpoint_sequential  # lazy: optional module
            x = checkpoint_sequential(blocks, seg, x)
        else:
            for b in blocks:
                x = b(x)
        return self.head(x)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}" + (f", checkpoint={self.checkpoint!r}" if self.checkpoint not in (None, "none") else "")


class SIREN(MLP):
    """A sinusoidal representation network (Sitzmann et al. 2020): an ``MLP`` whose hidden layers are
    fused ``Linear`` + ``sin`` and whose head is linear, initialised as the paper does with ``omega_0``
    folded into the weights and biases (``sin(omega_0 (W x + b))`` computed as ``sin(W' x + b')``):
    the first layer's weights ``U(-omega_0/in, omega_0/in)`` (``first_omega_0``), later layers'
    ``U(-sqrt(6/in), sqrt(6/in))`` (``nn.init.siren_uniform_``), biases ``omega_0 U(-1/sqrt(in),
    1/sqrt(in))``; the head ``U(-sqrt(6/in)/omega_0, sqrt(6/in)/omega_0)`` and PyTorch's default bias."""

    def __init__(self, sizes: Iterable[int], omega_0: float = 30.0, first_omega_0: float | None = None,
                 bias: bool = True, device: Any = None, dtype: Any = None, checkpoint: Any = None) -> None:
        super().__init__(sizes, activation="sin", bias=bias, device=device, dtype=dtype, checkpoint=checkpoint)
        self.omega_0 = float(omega_0)
        self.first_omega_0 = float(omega_0 if first_omega_0 is None else first_omega_0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for i, blk in enumerate(self.blocks):
            lin = blk.linear
            w0 = self.first_omega_0 if i == 0 else self.omega_0
            init.siren_uniform_(lin.weight, omega_0=w0, is_first=i == 0)
            if lin.bias is not None:
                bound = w0 / math.sqrt(lin.in_features) if lin.in_features > 0 else 0.0
                init.uniform_(lin.bias, -bound, bound)
        fan_in = self.head.in_features
        bound = math.sqrt(6.0 / fan_in) / self.omega_0 if fan_in > 0 else 0.0
        init.uniform_(self.head.weight, -bound, bound)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", omega_0={self.omega_0}" + (
            f", first_omega_0={self.first_omega_0}" if self.first_omega_0 != self.omega_0 else "")
