"""``Optimizer``: param groups, per-parameter state, ``step``/``zero_grad``/``state_dict``."""
from __future__ import annotations

import copy
from typing import Any, Callable, Iterable

import numpy as np

from ..autograd.function import named_error
from ..autograd.grad_mode import enable_grad, no_grad
from ..tensor import Tensor, _make_result, clear_grads

__all__ = ["Optimizer", "required"]


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    """Base class. ``params`` is an iterable of Tensors or of dicts (param groups) such as
    ``[{'params': m.body.parameters()}, {'params': m.head.parameters(), 'lr': 1e-3}]``; options
    missing from a group take the optimizer's defaults. Subclasses implement ``_update(group, p, state)``.

    ``self.state[p]`` holds the per-parameter state (Tensors and ints), so ``state_dict()`` contains
    only arrays and plain numbers and can be written by ``gg.save`` without pickle."""

    def __init__(self, params: Iterable[Any], defaults: dict) -> None:
        self.defaults = dict(defaults)
        self.state: dict = {}
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise named_error(TypeError, f"{type(self).__name__}: params must be an iterable of Tensors or dicts, "
                              "got a single Tensor; pass [tensor] or model.parameters()")
        groups = list(params)
        if not groups:
            raise named_error(ValueError, f"{type(self).__name__}: got an empty parameter list (does the model "
                              "have parameters? a generator like model.parameters() can be consumed only once)")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own options (e.g. a different ``lr``)."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise named_error(TypeError, f"{name}: a param group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        ps = group.get("params")
        if ps is None:
            raise named_error(ValueError, f"{name}: param group has no 'params' entry")
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        for p in ps:
            if not isinstance(p, Tensor):
                raise named_error(TypeError, f"{name}: can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise named_error(ValueError, f"{name}: can't optimize a non-leaf Tensor (shape {tuple(p.shape)}); "
                                  "optimize the leaf parameters (e.g. model.parameters()) instead")
            if p.dtype.kind != "f":
                raise named_error(TypeError, f"{name}: can only optimize floating-point Tensors, got {p.dtype}")
        group["params"] = ps
        for k, v in self.defaults.items():
            if v is required and k not in group:
                raise named_error(ValueError, f"{name}: parameter group didn't specify a value of required option {k!r}")
            group.setdefault(k, v)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in ps}) != len(ps):
            raise named_error(ValueError, f"{name}: a parameter appears twice in one param group")
        if any(id(p) in seen for p in ps):
            raise named_error(ValueError, f"{name}: some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of all optimized parameters (``None`` by default, else zeros)."""
        clear_grads((p for g in self.param_groups for p in g["params"]), set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient. ``closure`` (optional) re-evaluates the model
        and returns the loss, which ``step`` returns."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad
                    if g.device != p.device or tuple(g.shape) != tuple(p.shape):
                        raise named_error(RuntimeError,
                            f"{type(self).__name__}.step: gradient of shape {tuple(g.shape)} on {g.device} does not "
                            f"match its parameter of shape {tuple(p.shape)} on {p.device}")
                    state = self.state.get(p)
                    if state is None:
                        state = self.state[p] = {}
                    else:
                        _match_state(state, p)
                    self._update(group, p, g.data, state)
                    p._vc[0] += 1
        return loss

    def _update(self, group: dict, p: Tensor, g: Any, state: dict) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _zeros_like(self, p: Tensor) -> Tensor:
        return _make_result(p._backend().xp.zeros_like(p.data), p.device, None, 0)

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict:
        """``{'state': {index: {name: Tensor | int}}, 'param_groups': [{options..., 'params': [index]}]}``
        (PyTorch's layout; parameters are numbered in group order). The state Tensors are shared,
        not copied: save them or ``copy.deepcopy`` the dict."""
        index: dict = {}
        groups = []
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            ids = []
            for p in g["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state:
                    state[index[id(p)]] = {k: (v.detach() if isinstance(v, Tensor) else v)
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore options and per-parameter state (copied, moved to each parameter's device and,
        for floating-point state, dtype). The groups must have the same sizes as when saved."""
        name = type(self).__name__
        try:
            saved_groups = state_dict["param_groups"]
            saved_state = state_dict["state"]
        except (KeyError, TypeError):
            raise named_error(ValueError, f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups' "
                              "(from optimizer.state_dict())") from None
        if len(saved_groups) != len(self.param_groups):
            raise named_error(ValueError, f"{name}.load_state_dict: the state dict has {len(saved_groups)} param "
                              f"groups, this optimizer has {len(self.param_groups)}")
        for i, (sg, g) in enumerate(zip(saved_groups, self.param_groups)):
            if len(sg["params"]) != len(g["params"]):
                raise named_error(ValueError, f"{name}.load_state_dict: param group {i} has {len(sg['params'])} "
                                  f"parameters in the state dict and {len(g['params'])} in this optimizer")
        id_map = {}
        for sg, g in zip(saved_groups, self.param_groups):
            for idx, p in zip(sg["params"], g["params"]):
                id_map[int(idx)] = p
        new_state: dict = {}
        for k, st in saved_state.items():
            p = id_map.get(int(k))
            if p is None:
                continue
            new_state[p] = {sk: _restore(sv, p, sk) for sk, sv in st.items()}
        self.state = new_state
        for sg, g in zip(saved_groups, self.param_groups):
            for k, v in sg.items():
                if k == "params":
                    continue
                if isinstance(v, list) and isinstance(self.defaults.get(k), tuple):
                    v = tuple(v)
                g[k] = copy.deepcopy(v)

    def __repr__(self) -> str:
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(k for k in g if k != "params"):
                lines.append(f"    {k}: {g[k]}")
        return "\n".join(lines) + "\n)"


def _restore(v: Any, p: Tensor, key: str) -> Any:
    """A copy of a saved state value on ``p``'s device (floating arrays cast to ``p``'s dtype)."""
    if key == "step":
        return int(float(v.item() if isinstance(v, Tensor) else np.asarray(v).item()))
    if isinstance(v, Tensor) or isinstance(v, np.ndarray) or hasattr(v, "__array__"):
        be = p._backend()
        host = v.numpy() if isinstance(v, Tensor) else np.asarray(v)
        if host.dtype.kind == "f":
            host = host.astype(p.dtype)
        if tuple(host.shape) != tuple(p.shape) and host.ndim != 0:
            raise named_error(ValueError, f"optimizer.load_state_dict: state {key!r} has shape {tuple(host.shape)}, "
                              f"its parameter has shape {tuple(p.shape)}")
        return _make_result(be.from_numpy(np.array(host, copy=True)), p.device, None, 0)
    return copy.deepcopy(v)


def _match_state(state: dict, p: Tensor) -> None:
    """Move state tensors to the parameter's device/dtype after ``model.to(...)``."""
    for k, v in state.items():
        if isinstance(v, Tensor) and (v.device != p.device or (v.dtype.kind == "f" and v.dtype != p.dtype)):
            state[k] = v.to(p.device, p.dtype if v.dtype.kind == "f" else v.dtype)
