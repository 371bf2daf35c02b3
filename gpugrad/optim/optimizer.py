"""``Optimizer``: param groups, per-parameter state, ``step``/``zero_grad``/``state_dict``."""
from __future__ import annotations

import copy
from operator import is_, itemgetter
from typing import Any, Callable, Iterable

import numpy as np

from ..autograd.function import named_error
from ..autograd.grad_mode import enable_grad, no_grad
from ..kernels.optim_rules import Rule
from ..tensor import Tensor, _make_result, clear_grads
from .flat import Bucket, _data, buckets_of, runs

__all__ = ["Optimizer", "required"]


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    """Base class. ``params`` is an iterable of Tensors or of dicts (param groups) such as
    ``[{'params': m.body.parameters()}, {'params': m.head.parameters(), 'lr': 1e-3}]``; options
    missing from a group take the optimizer's defaults. Subclasses set ``rule`` (the update rule in
    ``gpugrad/kernels/optim_rules.py``) and map their options to its names in ``_options``; the step is
    multi-tensor (see ``gpugrad/optim/flat.py``).

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
        self._step()
        return loss

    # Subclasses set the rule and may map group options to the rule's names (``_options``).
    rule: Rule | None = None
    has_step = True  # keeps a per-parameter ``state['step']`` (PyTorch's Adam, RMSprop)

    def _options(self, group: dict) -> dict:
        return group

    @property
    def graph_safe(self) -> bool:
        """True when a step reads nothing per step from the host that a CUDA graph would freeze: rules
        without step-dependent scalars (SGD, RMSprop), or every group ``capturable`` (Adam/AdamW keep
        the step count and bias corrections on the device). Skipped AMP steps need ``capturable``
        too (``GradScaler.step`` then passes its found-inf flag to the kernels)."""
        return self.rule is not None and all(self.rule.prologue is None or g.get("capturable", False)
                                             for g in self.param_groups)

    def _step(self, found_inf: dict | None = None) -> None:
        """The multi-tensor step: per bucket (group, device, dtype) one backend call per run of
        parameters with gradients and equal step counts (one in the usual case). ``found_inf``: per
        device, a one-element float32 array; a capturable step is skipped on the device where it is
        nonzero (``GradScaler.step`` passes it; it never reads it)."""
        with no_grad():
            for gi, group in enumerate(self.param_groups):
                for b in self._group_buckets(gi, group):
                    self._step_bucket(group, b, None if found_inf is None else found_inf.get(b.device))

    def _group_buckets(self, gi: int, group: dict) -> list[Bucket]:
        cache = self.__dict__.setdefault("_buckets", {})
        hit = cache.get(gi)
        ps = group["params"]
        if hit is not None and len(hit[0]) == len(ps) and all(map(is_, hit[0], ps)) and all(b.valid() for b in hit[1]):
            return hit[1]
        buckets = buckets_of(list(ps))
        cache[gi] = (list(ps), buckets)
        return buckets

    def _step_bucket(self, group: dict, b: Bucket, found_inf: Any) -> None:
        rule = self.rule
        present = b.gather_grads(f"{type(self).__name__}.step")
        if present is None:
            return
        opts = self._options(group)
        cap = bool(group.get("capturable", False))
        names = tuple(s for s, on in zip(rule.state, rule.present(opts)) if on)
        n = len(b.params)
        if cap and b.steps is None:
            b.steps = b.be.xp.zeros(n, np.float64 if b.dtype == np.float64 else np.float32)
            b.step_views = [b.steps[i:i + 1].reshape(()) for i in range(n)]
        if self._synced(b, names, cap, present):  # the usual step: nothing moved since the last one
            sts = b.st_dicts
            first = [False] * n
            counts = b.shadow if cap else (list(map(itemgetter("step"), sts)) if self.has_step else [0] * n)
        else:
            sts, first, counts = self._sync_state(b, names, cap, present)
        keys = list(zip(counts, first))
        arrays = {"p": b.flat, "g": b.grad}
        for s in names:
            arrays[s] = b.state[s]
        o = b.offsets
        for i0, i1 in runs(present, keys):
            seg_opts = dict(opts, first=first[i0]) if "first" in rule.flags else opts
            if cap:
                steps = b.steps[i0:i1]
                if found_inf is None:
                    steps += 1
                else:
                    steps += (1 - found_inf).astype(steps.dtype)
                flag = found_inf if found_inf is not None else _no_inf(b)
                b.be.optim_step(rule, arrays, o[i0], o[i1], seg_opts, step=b.steps[i0:i0 + 1], found_inf=flag)
            else:
                b.be.optim_step(rule, arrays, o[i0], o[i1], seg_opts, rule.derive(counts[i0] + 1, opts))
        for i, p in enumerate(b.params):
            if present[i]:
                if cap:
                    b.shadow[i] += 1
                elif self.has_step:
                    sts[i]["step"] += 1
                p._vc[0] += 1

    def _synced(self, b: Bucket, names: tuple, cap: bool, present: list) -> bool:
        """Identity checks only (no per-parameter Python call): every parameter has a gradient and its
        state dict and state Tensors are still the ones bound to this bucket's buffers."""
        sy = b.synced
        if sy is None or sy[0] is not self.state or sy[1] != names or sy[2] != cap or not all(present):
            return False
        try:
            for s in names + (("step",) if cap else ()):
                ts = b.st_tensors[s]
                if not all(map(is_, map(itemgetter(s), b.st_dicts), ts)):
                    return False
                if not all(map(is_, map(_data, ts), b.step_views if s == "step" else b.state_views[s])):
                    return False
        except KeyError:
            return False
        return True

    def _sync_state(self, b: Bucket, names: tuple, cap: bool, present: list) -> tuple:
        """Bind every stepped parameter's state to views of the bucket's buffers: new state starts at
        zero (``first``), state loaded or left on another device/dtype is copied in. Returns the
        per-parameter state dicts, ``first`` flags and step counts (host counts; capturable: the
        host shadow of the device counts)."""
        n = len(b.params)
        bufs = {s: b.state_buffer(s)[1] for s in names}
        sts: list = [None] * n
        first = [False] * n
        counts = [0] * n
        for i, p in enumerate(b.params):
            if not present[i]:
                continue
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = {"step": 0} if self.has_step else {}
            sts[i] = st
            for s in names:
                t = st.get(s)
                view = bufs[s][i]
                if t is None:
                    view[...] = 0
                    st[s] = _make_result(view, b.device, None, 0)
                    first[i] = True
                elif t.data is not view:
                    view[...] = t.data if t.device == b.device else b.be.from_numpy(t.numpy())
                    t.data, t._device = view, b.device
            if cap:
                t = st.get("step")
                if not (isinstance(t, Tensor) and t.data is b.step_views[i]):
                    k = int(float(t.item() if isinstance(t, Tensor) else (t or 0)))
                    b.step_views[i][...] = k
                    b.shadow[i] = k
                    st["step"] = _make_result(b.step_views[i], b.device, None, 0)
                counts[i] = b.shadow[i]
            elif self.has_step:
                st["step"] = int(st.get("step", 0))
                counts[i] = st["step"]
        if all(present):
            b.synced = (self.state, names, cap)
            b.st_dicts = sts
            b.st_tensors = {s: [st[s] for st in sts] for s in names + (("step",) if cap else ())}
        return sts, first, counts

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


def _no_inf(b: Bucket) -> Any:
    """A zero found-inf flag for capturable steps outside a GradScaler (allocated once per bucket)."""
    z = getattr(b, "no_inf", None)
    if z is None:
        z = b.no_inf = b.be.xp.zeros(1, np.float32)
    return z
