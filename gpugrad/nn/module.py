"""``Module`` and ``Parameter``: attribute-registered parameters, buffers and submodules, with
PyTorch's names (``parameters``, ``named_parameters``, ``state_dict``, ``load_state_dict``, ``to``...)."""
from __future__ import annotations

from collections import OrderedDict, namedtuple
from typing import Any, Callable, Iterator

import numpy as np

from .._device import as_device, device as _device_t
from .. import _dtype
from ..autograd.function import named_error
from ..autograd.grad_mode import no_grad
from ..tensor import Tensor, clear_grads

__all__ = ["Parameter", "Module", "IncompatibleKeys"]


class Parameter(Tensor):
    """A Tensor that a ``Module`` registers as a learnable parameter when assigned as an attribute.

    ``Parameter(t)`` shares ``t``'s data (a Tensor, a NumPy/CuPy array or nested lists) and requires
    grad unless ``requires_grad=False`` (frozen)."""

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            data = np.empty((0,), dtype=_dtype.get_default_dtype())
        if isinstance(data, Tensor):
            self.data = data.data
            self._device = data._device
        else:
            Tensor.__init__(self, data)
        self.grad = None
        self._requires_grad = False
        self._grad_fn = None
        self._out_idx = 0
        self._vc = [0]
        self._hooks = None
        if requires_grad:
            self.requires_grad = True

    def __repr__(self) -> str:
        return "Parameter containing:\n" + Tensor.__repr__(self)

    def __deepcopy__(self, memo: dict) -> "Parameter":
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(Tensor._wrap(self.data.copy(), self._device), requires_grad=self._requires_grad)
        if self.grad is not None:
            p.grad = Tensor._wrap(self.grad.data.copy(), self._device)
        memo[id(self)] = p
        return p


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _addindent(s: str, n: int) -> str:
    lines = s.split("\n")
    if len(lines) == 1:
        return s
    return lines[0] + "\n" + "\n".join(" " * n + line for line in lines[1:])


class Module:
    """Base class of layers and models. Assign ``Parameter``s, ``Module``s and buffers
    (``register_buffer``) as attributes and they are found by ``parameters()``, ``state_dict()``,
    ``to()``...; define ``forward`` and call the module."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        params = d.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError(f"cannot assign parameter {name!r} before Module.__init__() is called: "
                                     f"call super().__init__() first in {type(self).__name__}.__init__")
            self._drop(name)
            params[name] = value
            return
        if params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} of "
                                f"{type(self).__name__} (a Parameter or None is required); wrap it: nn.Parameter(t)")
            params[name] = None
            return
        modules = d.get("_modules")
        if isinstance(value, Module):
            if modules is None:
                raise AttributeError(f"cannot assign module {name!r} before Module.__init__() is called: "
                                     f"call super().__init__() first in {type(self).__name__}.__init__")
            self._drop(name)
            modules[name] = value
            return
        if modules is not None and name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r} of "
                                f"{type(self).__name__} (a Module or None is required)")
            modules[name] = None
            return
        buffers = d.get("_buffers")
        if buffers is not None and name in buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} as buffer {name!r} of "
                                f"{type(self).__name__} (a Tensor or None is required)")
            buffers[name] = value
            return
        object.__setattr__(self, name, value)

    def _drop(self, name: str) -> None:
        d = self.__dict__
        d.pop(name, None)
        for key in ("_parameters", "_buffers", "_modules"):
            d[key].pop(name, None)
        d["_non_persistent"].discard(name)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            store = d.get(key)
            if store is not None and name in store:
                return store[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        for key in ("_parameters", "_buffers", "_modules"):
            if name in d.get(key, ()):
                del d[key][name]
                d["_non_persistent"].discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list:
        keys = list(super().__dir__())
        for key in ("_parameters", "_buffers", "_modules"):
            keys += list(self.__dict__.get(key, {}))
        return sorted(set(keys))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a ``None`` placeholder, e.g. an absent bias) under ``name``."""
        self._check_name("register_parameter", name)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter: {name!r} must be a Parameter or None, got {type(param).__name__}")
        self._drop(name)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """Add a non-learnable tensor (running statistics, masks) that ``to()`` moves and, when
        ``persistent``, ``state_dict()`` includes."""
        self._check_name("register_buffer", name)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name!r} must be a Tensor or None, got {type(tensor).__name__}")
        self._drop(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: "Module | None") -> None:
        """Add a child module under ``name`` (as attribute assignment does)."""
        self._check_name("add_module", name)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, got {type(module).__name__}")
        self._drop(name)
        self._modules[name] = module

    register_module = add_module

    def _check_name(self, op: str, name: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{op}: call super().__init__() first in {type(self).__name__}.__init__")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{op}: name must be a non-empty string without '.', got {name!r}")

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo: set | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, "Module"]]:
        """``(dotted_name, module)`` for this module (name ``""``) and every descendant."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is None:
                continue
            yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        seen: set = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def _named_members(self, store: str, prefix: str, recurse: bool,
                       remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        seen: set = set()
        mods = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for mod_prefix, m in mods:
            for name, t in m.__dict__[store].items():
                if t is None:
                    continue
                if remove_duplicate:
                    if id(t) in seen:
                        continue
                    seen.add(id(t))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), t

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(dotted_name, parameter)`` pairs, e.g. ``('0.weight', p)``; shared parameters once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)  # type: ignore[return-value]

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> "Module":
        """The descendant at dotted path ``target`` (``""`` is this module)."""
        m: Module = self
        if target == "":
            return m
        for part in target.split("."):
            child = m._modules.get(part)
            if child is None:
                raise AttributeError(f"get_submodule: {type(m).__name__} has no submodule {part!r} (path {target!r})")
            m = child
        return m

    def get_parameter(self, target: str) -> Parameter:
        mod, _, name = target.rpartition(".")
        m = self.get_submodule(mod)
        p = m._parameters.get(name)
        if p is None:
            raise AttributeError(f"get_parameter: {type(m).__name__} has no parameter {name!r} (path {target!r})")
        return p

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Total number of parameter elements (only those requiring grad with ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def apply(self, fn: Callable[["Module"], Any]) -> "Module":
        """Call ``fn`` on every submodule (children first) and then on this module; returns self."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> "Module":
        """Set training mode (dropout active) on this module and all descendants."""
        if not isinstance(mode, bool):
            raise TypeError(f"train: mode must be a bool, got {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode (dropout off): ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (to ``None`` by default, else to zeros in place)."""
        clear_grads(self.parameters(), set_to_none)

    # ------------------------------------------------------------------ device / dtype
    def to(self, *args: Any, **kwargs: Any) -> "Module":
        """Move/cast parameters and buffers in place: ``m.to("cuda")``, ``m.to(gg.float64)``,
        ``m.to("cpu", gg.float32)``. The Parameter objects stay the same (optimizers stay valid);
        only floating-point tensors change dtype."""
        dev = kwargs.pop("device", None)
        dt = kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"Module.to: unexpected arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, (str, _device_t)):
                dev = a
            elif isinstance(a, Tensor):
                dev, dt = a.device, a.dtype
            else:
                dt = a
        dev = as_device(dev) if dev is not None else None
        dt = _dtype.as_dtype(dt)
        if dt is not None and dt.kind != "f":
            raise TypeError(f"Module.to: dtype must be floating point (float16/float32/float64), got {dt}")
        return self._apply_tensors(lambda t: _converted(t, dev, dt))

    def _apply_tensors(self, convert: Callable[[Tensor], "tuple | None"]) -> "Module":
        done: set = set()
        with no_grad():
            for m in self.modules():
                for store in (m._parameters, m._buffers):
                    for t in store.values():
                        if t is None or id(t) in done:
                            continue
                        done.add(id(t))
                        new = convert(t)
                        if new is not None:
                            t.data, t._device = new
                            t._vc[0] += 1
                        if t.grad is not None:
                            g = convert(t.grad)
                            if g is not None:
                                t.grad.data, t.grad._device = g
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self, index: int = 0) -> "Module":
        return self.to(_device_t("cuda", index))

    def float(self) -> "Module":
        return self.to(_dtype.float32)

    def double(self) -> "Module":
        return self.to(_dtype.float64)

    def half(self) -> "Module":
        return self.to(_dtype.float16)

    # ------------------------------------------------------------------ state dict
    def state_dict(self, destination: dict | None = None, prefix: str = "",
                   keep_vars: bool = False) -> "OrderedDict[str, Tensor]":
        """Dotted name -> Tensor for every parameter and persistent buffer. The tensors share memory
        with the module (detached unless ``keep_vars``); ``gg.save`` writes them."""
        out: OrderedDict = OrderedDict() if destination is None else destination  # type: ignore[assignment]
        for mod_prefix, m in self.named_modules(prefix=prefix.rstrip(".")):
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mod_prefix}.{name}" if mod_prefix else name] = p if keep_vars else p.detach()
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent:
                    out[f"{mod_prefix}.{name}" if mod_prefix else name] = b if keep_vars else b.detach()
        return out

    def _state_targets(self) -> "OrderedDict[str, Tensor]":
        return self.state_dict(keep_vars=True)

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy values from ``state_dict`` (name -> Tensor or array) into this module's parameters
        and buffers, in place. Shape mismatches are always an error; with ``strict`` (default),
        missing or unexpected keys and dtype mismatches are errors too, all listed by name in one
        message. Without ``strict``, values are cast to the parameter's dtype and the key lists are
        returned as ``(missing_keys, unexpected_keys)``."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"load_state_dict: expected a dict of name -> Tensor, got {type(state_dict).__name__}")
        targets = self._state_targets()
        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        problems = []
        pairs = []
        for k, t in targets.items():
            if k not in state_dict:
                continue
            v = state_dict[k]
            if isinstance(v, Tensor):
                arr_shape, arr_dtype = tuple(v.shape), v.dtype
            else:
                try:
                    v = np.asarray(v)
                except Exception:
                    problems.append(f"{k}: value of type {type(v).__name__} is not a Tensor or array")
                    continue
                arr_shape, arr_dtype = tuple(v.shape), v.dtype
            if arr_shape != tuple(t.shape):
                problems.append(f"{k}: shape {arr_shape} in the state dict, {tuple(t.shape)} in the model")
                continue
            if arr_dtype != t.dtype and strict:
                problems.append(f"{k}: dtype {arr_dtype} in the state dict, {t.dtype} in the model "
                                f"(convert the model with .to({arr_dtype}) first, or pass strict=False to cast)")
                continue
            pairs.append((t, v))
        if strict:
            if missing:
                problems.insert(0, "missing keys: " + ", ".join(repr(k) for k in missing))
            if unexpected:
                problems.insert(1 if missing else 0, "unexpected keys: " + ", ".join(repr(k) for k in unexpected))
        if problems:
            raise named_error(RuntimeError, f"load_state_dict: error(s) loading state dict into "
                              f"{type(self).__name__}:\n  " + "\n  ".join(problems))
        with no_grad():
            for t, v in pairs:
                if isinstance(v, Tensor):
                    if v.device != t.device or v.dtype != t.dtype:
                        v = v.detach().to(t.device, t.dtype)
                    arr = v.data
                else:
                    arr = t._backend().from_numpy(np.asarray(v, order="C")).astype(t.dtype, copy=False)
                if arr is not t.data:
                    t.data[...] = arr
                t._vc[0] += 1
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ calling and printing
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward is not defined: subclasses of nn.Module "
                                  "must implement forward(self, ...)")

    # gpugrad's own layers take Tensors only, as PyTorch's do (one rule for every built-in module, checked
    # here): a NumPy array or a list is refused with the fix, instead of failing somewhere inside forward.
    _tensor_inputs = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._tensor_inputs:
            for a in args:
                if not isinstance(a, Tensor):
                    raise _not_a_tensor(self, a)
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """Extra text inside this module's ``repr`` parentheses (override in layers)."""
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, m in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(m), 2))
        main = type(self).__name__ + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


def _not_a_tensor(module: "Module", a: Any) -> TypeError:
    name = type(module).__name__
    what = type(a).__name__
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        what += f" of shape {tuple(a.shape)} and dtype {a.dtype}"
    return named_error(TypeError,
        f"{name}: expected a gpugrad Tensor as input, got {what} (gpugrad's layers take Tensors, as PyTorch's "
        "do). Fix: wrap it first, gg.tensor(x, device=...) (floats from NumPy stay float64: add "
        "dtype=gg.float32 to meet float32 weights)")


def _converted(t: Tensor, dev, dt) -> "tuple | None":
    """``(new_array, device)`` for ``t`` moved to ``dev`` / cast to ``dt`` (floating only), or None."""
    tgt_dev = dev if dev is not None else t._device
    tgt_dt = dt if (dt is not None and t.dtype.kind == "f") else t.dtype
    if tgt_dev == t._device and tgt_dt == t.dtype:
        return None
    new = Tensor._wrap(t.data, t._device).to(tgt_dev, tgt_dt)
    return new.data, tgt_dev
