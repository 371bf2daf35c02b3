"""Float16 mixed-precision training: dynamic loss scaling (``GradScaler``, PyTorch's API) and
float32 master weights for a float16 model (``MasterWeights``).

Design (the simplest correct one, with no hook inside the ops): the *model* is converted to float16
(``model.half()``), so every GEMM and fused pass runs in float16 (tensor cores on a GPU); a
``MasterWeights`` object keeps a float32 copy of every parameter, the optimizer updates those
copies, and the result is copied back (rounded) into the float16 model after each step. Small
updates that float16 would round away accumulate in the float32 masters. ``GradScaler``
multiplies the loss by a large factor before ``backward`` so that small float16 gradients do not
flush to zero, divides the gradients by it again (``unscale_``), skips the step when any gradient
is inf/NaN (halving the scale), and doubles the scale after ``growth_interval`` good steps::

    model = gg.nn.MLP([784, 256, 256, 10]).to("cuda").half()
    master = gg.amp.MasterWeights(model.parameters())       # float32 copies
    opt = gg.optim.SGD(master.parameters(), lr=0.1, momentum=0.9)
    scaler = gg.amp.GradScaler()
    for x, y in batches:
        logits = model(x.half())
        loss = F.cross_entropy(logits.float(), y)           # loss in float32 (see below)
        model.zero_grad()
        scaler.scale(loss).backward()
        master.step(opt, scaler)   # fp16 grads -> fp32 masters, unscale, step unless inf/NaN, copy back
        scaler.update()

Compute the loss in float32 (``logits.float()``): the gradient of the scaled loss with respect to
a float16 loss would be the scale itself, which does not fit in float16 above 65504. The gradient
that reaches the float16 logits is ``scale * dloss/dlogits``, small enough for float16.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from . import _dtype
from .autograd.function import named_error
from .autograd.grad_mode import no_grad
from .tensor import Tensor, _make_result, clear_grads

__all__ = ["GradScaler", "MasterWeights"]

_READY, _UNSCALED, _STEPPED = 0, 1, 2


def _optimizer_params(optimizer: Any) -> list[Tensor]:
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        raise named_error(TypeError,
            f"GradScaler: expected an optimizer with .param_groups (gg.optim.SGD, Adam...), got "
            f"{type(optimizer).__name__}")
    return [p for g in groups for p in g["params"]]


class GradScaler:
    """Dynamic loss scaling (PyTorch's ``torch.amp.GradScaler`` API and semantics).

    ``scale(loss)`` multiplies by the current scale; ``unscale_(optimizer)`` divides the optimizer's
    gradients by it in place and records whether any is inf/NaN; ``step(optimizer)`` unscales (if
    not done yet) and calls ``optimizer.step()`` only when all gradients are finite; ``update()``
    halves the scale (``backoff_factor``) after a skipped step, or multiplies it by
    ``growth_factor`` after ``growth_interval`` consecutive good steps. ``device`` is accepted for
    PyTorch compatibility; the scaler works on the gradients' own device.

    Host reads: ``unscale_`` is one multi-tensor pass per flat gradient buffer (backend
    ``unscale_check_``) and leaves the found-inf flag on the device. ``step`` hands that flag to a
    capturable optimizer (``Adam(..., capturable=True)``), whose kernels skip the update on the device:
    no read. For other optimizers it does PyTorch's one read of the flag to decide. ``update`` reads
    the flags once (the scale lives on the host, as a Python float)."""

    def __init__(self, device: str = "cuda", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True) -> None:
        if not init_scale > 0:
            raise ValueError(f"GradScaler: init_scale must be > 0, got {init_scale}")
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1.0, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must be in (0, 1), got {backoff_factor}")
        if int(growth_interval) <= 0:
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval}")
        self.device = device
        self._enabled = bool(enabled)
        self._scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._states: dict[int, dict] = {}

    # ------------------------------------------------------------------ scaling
    def scale(self, outputs: Any) -> Any:
        """``outputs * scale`` (a Tensor, or a list/tuple of them). Float16 outputs are first cast to
        float32 (the scale itself, 65536 by default, overflows float16)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if outputs.dtype.kind != "f":
                raise named_error(TypeError, f"GradScaler.scale: expected a floating-point loss, got {outputs.dtype}")
            if outputs.dtype == _dtype.float16:
                outputs = outputs.float()
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise named_error(TypeError, f"GradScaler.scale: expected a Tensor or a list/tuple of Tensors, got "
                          f"{type(outputs).__name__}")

    def _state(self, optimizer: Any) -> dict:
        st = self._states.get(id(optimizer))
        if st is None:
            st = self._states[id(optimizer)] = {"stage": _READY, "found_inf": None, "optimizer": optimizer}
        return st

    def unscale_(self, optimizer: Any) -> None:
        """Divide the optimizer's gradients by the scale, in place, and record inf/NaN. Call it
        before gradient clipping; ``step`` then does not unscale again."""
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] == _UNSCALED:
            raise named_error(RuntimeError, "GradScaler.unscale_: unscale_() has already been called on this "
                              "optimizer since the last update()")
        if st["stage"] == _STEPPED:
            raise named_error(RuntimeError, "GradScaler.unscale_: unscale_() is being called after step(); call "
                              "update() first")
        inv = 1.0 / self._scale
        found: dict = {}  # device -> one-element float32 flag, left on the device
        n = 0
        where = "GradScaler.unscale_"
        params = _optimizer_params(optimizer)
        for p in params:
            if p.grad is not None and p.grad.dtype == _dtype.float16:
                raise named_error(ValueError,
                    f"GradScaler.unscale_: attempting to unscale float16 gradients (parameter of shape "
                    f"{tuple(p.shape)}): unscaling in float16 loses the small values loss scaling protects. "
                    "Fix: keep float32 master weights (gg.amp.MasterWeights) and give their parameters to "
                    "the optimizer.")
        for be, g, start, end, dev in _grad_ranges(optimizer, params, where):
            f = found.get(dev)
            if f is None:
                f = found[dev] = be.xp.zeros(1, np.float32)
            be.unscale_check_(g, start, end, inv, f)
            n += 1
        st["found_inf"] = found
        st["n_checked"] = n
        st["stage"] = _UNSCALED

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """Unscale (unless ``unscale_`` was called) and run ``optimizer.step()`` if every gradient
        is finite; otherwise skip it. Returns what ``optimizer.step`` returned (``None`` if skipped)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs or args:
            raise named_error(RuntimeError, "GradScaler.step: closures are not supported with loss scaling; "
                              "compute the loss, scale(loss).backward(), then step(optimizer)")
        st = self._state(optimizer)
        if st["stage"] == _STEPPED:
            raise named_error(RuntimeError, "GradScaler.step: step() has already been called since the last "
                              "update()")
        if st["stage"] == _READY:
            self.unscale_(optimizer)
        if not st.get("n_checked"):
            raise named_error(RuntimeError, "GradScaler.step: no inf checks were recorded for this optimizer: no "
                              "parameter has a gradient. Call scaler.scale(loss).backward() before step().")
        st["stage"] = _STEPPED
        if _capturable(optimizer):  # the flag goes to the kernels: no host read in step()
            optimizer._step(found_inf=st["found_inf"])
            return None
        skip = _any_found(st["found_inf"])  # PyTorch's one device-to-host read for non-capturable steps
        st["skipped"] = skip
        return None if skip else optimizer.step()

    def update(self, new_scale: "float | Tensor | None" = None) -> None:
        """Adjust the scale after this iteration's ``step`` calls: back off if any step was skipped,
        else count a good step and grow every ``growth_interval``. ``new_scale`` sets it directly."""
        if not self._enabled:
            return
        if new_scale is not None:
            v = float(new_scale.item() if isinstance(new_scale, Tensor) else new_scale)
            if not (v > 0 and math.isfinite(v)):
                raise named_error(ValueError, f"GradScaler.update: new_scale must be finite and > 0, got {v}")
            self._scale = v
        else:
            checked = [st for st in self._states.values() if st["stage"] != _READY and st.get("n_checked")]
            if not checked:
                raise named_error(RuntimeError, "GradScaler.update: no inf checks were recorded prior to update(); "
                                  "call scaler.step(optimizer) (or unscale_) first")
            if any(st["skipped"] if "skipped" in st else _any_found(st["found_inf"]) for st in checked):
                self._scale *= self._backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    self._scale *= self._growth_factor
                    self._growth_tracker = 0
        self._states = {}

    # ------------------------------------------------------------------ accessors
    def get_scale(self) -> float:
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = int(new_interval)

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict:
        """``{'scale', 'growth_factor', 'backoff_factor', 'growth_interval', '_growth_tracker'}``
        (empty when disabled), as PyTorch."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise named_error(RuntimeError, "GradScaler.load_state_dict: the source state dict is empty, possibly "
                              "because it was saved from a disabled instance of GradScaler")
        missing = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"} - set(state_dict)
        if missing:
            raise named_error(KeyError, f"GradScaler.load_state_dict: missing keys {sorted(missing)}")
        self._scale = float(state_dict["scale"])
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])

    def __repr__(self) -> str:
        return (f"GradScaler(scale={self.get_scale()}, growth_factor={self._growth_factor}, "
                f"backoff_factor={self._backoff_factor}, growth_interval={self._growth_interval}, "
                f"enabled={self._enabled})")


def _grad_ranges(optimizer: Any, params: list[Tensor], where: str):
    """``(backend, flat_grad, start, end, device)`` for every gradient of the optimizer (``params``, its
    parameters): ranges of its flat gradient buffers (gathered first) when it is a gpugrad optimizer,
    else each gradient alone."""
    from .optim.flat import grad_segments
    segs = None
    if hasattr(optimizer, "_step"):
        segs = grad_segments(params, where)  # None at the first parameter when no buckets exist yet
        if segs is None:
            for gi, group in enumerate(optimizer.param_groups):  # build the buckets now (first step)
                optimizer._group_buckets(gi, group)
            segs = grad_segments(params, where)
    if segs is not None:
        return [(b.be, b.grad, s, e, b.device) for b, s, e in segs]
    out = []
    for p in params:
        if p.grad is not None:
            if not p.grad.data.flags.c_contiguous:
                p.grad.data = p.grad.data.copy()
            g = p.grad.data.reshape(-1)
            out.append((p.grad._backend(), g, 0, g.shape[0], p.grad.device))
            p.grad._vc[0] += 1
    return out


def _capturable(optimizer: Any) -> bool:
    groups = getattr(optimizer, "param_groups", ())
    return hasattr(optimizer, "_step") and bool(groups) and all(g.get("capturable", False) for g in groups)


def _any_found(found: dict) -> bool:
    """Reads the found-inf flags (one device-to-host read per device)."""
    return any(bool(f[0]) for f in found.values())


class MasterWeights:
    """Float32 master copies of a low-precision (float16) model's parameters.

    ``MasterWeights(model.parameters())`` copies each parameter to ``master_dtype``; build the
    optimizer over ``master.parameters()``. After ``backward`` on the float16 model,
    ``step(optimizer, scaler=None)`` copies the float16 gradients into the masters' ``.grad``
    (float32), steps (through ``scaler.step`` when a scaler is given, which unscales and skips on
    inf/NaN), and rounds the masters back into the model. The pieces are also public:
    ``grads_to_master()``, ``master_to_model()``."""

    def __init__(self, params: Iterable[Tensor], master_dtype: Any = _dtype.float32) -> None:
        self.model_params = list(params)
        if not self.model_params:
            raise named_error(ValueError, "MasterWeights: got an empty parameter list (a generator such as "
                              "model.parameters() can be consumed only once)")
        mdt = np.dtype(master_dtype)
        if mdt.kind != "f":
            raise named_error(TypeError, f"MasterWeights: master_dtype must be floating point, got {mdt}")
        self.master_dtype = mdt
        self.master_params: list[Tensor] = []
        for i, p in enumerate(self.model_params):
            if not isinstance(p, Tensor) or p.dtype.kind != "f":
                raise named_error(TypeError, f"MasterWeights: parameter {i} is not a floating-point Tensor "
                                  f"({type(p).__name__})")
            if not p.is_leaf:
                raise named_error(ValueError, f"MasterWeights: parameter {i} (shape {tuple(p.shape)}) is not a leaf")
            m = _make_result(p.data.astype(mdt, copy=True), p.device, None, 0)
            m.requires_grad = p.requires_grad
            self.master_params.append(m)

    def parameters(self) -> list[Tensor]:
        """The master (float32) parameters, to give to the optimizer."""
        return list(self.master_params)

    def grads_to_master(self) -> None:
        """``master.grad = float32(model.grad)`` for every parameter (``None`` stays ``None``)."""
        for p, m in zip(self.model_params, self.master_params):
            if p.grad is None:
                m.grad = None
                continue
            if p.grad.device != m.device or tuple(p.grad.shape) != tuple(m.shape):
                raise named_error(RuntimeError,
                    f"MasterWeights: gradient of shape {tuple(p.grad.shape)} on {p.grad.device} does not match "
                    f"its master of shape {tuple(m.shape)} on {m.device} (was the model moved after "
                    "MasterWeights was built? build it after model.to(...))")
            g = p.grad.data
            if m.grad is not None and m.grad.shape == m.shape and m.grad.dtype == self.master_dtype:
                m.grad.data[...] = g
                m.grad._vc[0] += 1
            else:
                m.grad = _make_result(g.astype(self.master_dtype), m.device, None, 0)

    def master_to_model(self) -> None:
        """Round the masters into the model's parameters, in place (the model keeps its dtype)."""
        with no_grad():
            for p, m in zip(self.model_params, self.master_params):
                p.data[...] = m.data
                p._vc[0] += 1

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of the model and of the masters."""
        clear_grads(self.model_params + self.master_params, set_to_none)

    def step(self, optimizer: Any, scaler: "GradScaler | None" = None) -> Any:
        """Gradients to the masters, ``scaler.step(optimizer)`` (or ``optimizer.step()``), masters
        back to the model. With a scaler, call ``scaler.update()`` afterwards as usual."""
        self.grads_to_master()
        out = scaler.step(optimizer) if scaler is not None else optimizer.step()
        self.master_to_model()
        return out

    def state_dict(self) -> dict:
        """``{'master.<i>': Tensor}``: the master weights (to checkpoint them at full precision)."""
        return {f"master.{i}": m.detach() for i, m in enumerate(self.master_params)}

    def load_state_dict(self, state_dict: dict) -> None:
        for i, m in enumerate(self.master_params):
            key = f"master.{i}"
            if key not in state_dict:
                raise named_error(KeyError, f"MasterWeights.load_state_dict: missing {key!r}")
            v = state_dict[key]
            arr = v.numpy() if isinstance(v, Tensor) else np.asarray(v)
            if tuple(arr.shape) != tuple(m.shape):
                raise named_error(ValueError, f"MasterWeights.load_state_dict: {key} has shape {tuple(arr.shape)}, "
                                  f"expected {tuple(m.shape)}")
            m.data[...] = m._backend().from_numpy(np.ascontiguousarray(arr, dtype=self.master_dtype))
            m._vc[0] += 1
        self.master_to_model()
