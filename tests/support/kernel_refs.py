"""NumPy references for the ``extern "C"`` entry points of ``gpugrad/kernels/fused.cu``, of the generated optimizer kernels and of
the generated layer-norm kernels, registered with the strict
CuPy stand-in so that a ``RawKernel`` launch there computes what the CUDA kernel computes.

Each reference takes the kernel's C parameters by name (flat NumPy views of the device arrays, NumPy
scalars), the grid and the block, and writes its outputs in place, following the CUDA source line by
line: the compute type ``C`` (float32 for float16/float32 storage, float64 for float64), which
arguments are read and written, and the launch geometry where the result depends on it (the per-row-
block partial sums of ``act_bias_grad``). Activation formulas come from the one definition in
``gpugrad.kernels.activations``."""
from __future__ import annotations

import numpy as np

from gpugrad.kernels import layernorm, optim_codegen as cg

from . import optim_examples as ox
from gpugrad.kernels.activations import CODES, act_backward_ref, act_forward_ref
from gpugrad.kernels.optim_rules import RULES

_NAMES = {v: k for k, v in CODES.items()}
_STORAGE = {"f32": np.float32, "f64": np.float64, "f16": np.float16}


def _c(suffix: str):
    return np.float64 if suffix == "f64" else np.float32


def _load(a, suffix):
    """Storage -> compute values (float16 storage may arrive as float16 or as its uint16 bits)."""
    if suffix == "f16" and a.dtype == np.uint16:
        a = a.view(np.float16)
    return a.astype(_c(suffix))


def _store(dst, values, suffix) -> None:
    if suffix == "f16" and dst.dtype == np.uint16:
        dst = dst.view(np.float16)
    dst[...] = values.astype(dst.dtype)


def _bias_act(suffix):
    def ref(a, grid, block):
        M, N = int(a["M"]), int(a["N"])
        v = _load(a["z"], suffix).reshape(M, N)
        if a["has_bias"]:
            v = v + _load(a["b"], suffix)[:N]
        y = act_forward_ref(v, _NAMES[int(a["code"])], float(a["slope"])).astype(_c(suffix))
        if a["write_z"]:
            _store(a["z"], v.reshape(-1), suffix)
        _store(a["y"], y.reshape(-1), suffix)
    return ref


def _act_bwd(suffix):
    def ref(a, grid, block):
        n = int(a["M"]) * int(a["N"])
        g = act_backward_ref(_load(a["dy"], suffix)[:n], _load(a["s"], suffix)[:n], _NAMES[int(a["code"])],
                             float(a["slope"]))
        _store(a["dz"], g.astype(_c(suffix)), suffix)
    return ref


def _act_bias_grad(suffix):
    def ref(a, grid, block):
        M, N, rpb = int(a["M"]), int(a["N"]), int(a["rows_per_block"])
        g = act_backward_ref(_load(a["dy"], suffix)[:M * N], _load(a["s"], suffix)[:M * N],
                             _NAMES[int(a["code"])], float(a["slope"])).astype(_c(suffix)).reshape(M, N)
        if a["write_dz"]:
            _store(a["dz"][:M * N], g.reshape(-1), suffix)
        if a["do_bias"]:
            row_blocks = grid[1]
            part = a["partial"].reshape(-1)
            for r in range(row_blocks):
                part[r * N:(r + 1) * N] = g[r * rpb:min((r + 1) * rpb, M)].sum(axis=0)
    return ref


def _colsum(suffix):
    def ref(a, grid, block):
        R, N = int(a["R"]), int(a["N"])
        _store(a["out"][:N], a["partial"][:R * N].reshape(R, N).sum(axis=0), suffix)
    return ref


def _softmax_fwd(suffix):
    def ref(a, grid, block):
        M, C = int(a["M"]), int(a["Cn"])
        x = _load(a["x"], suffix)[:M * C].reshape(M, C)
        m = x.max(axis=1, keepdims=True)
        e = np.exp(x - m)
        tot = e.sum(axis=1, keepdims=True)
        _store(a["probs"][:M * C], (e / tot).reshape(-1), suffix)
        t = a["t"][:M]
        bad = (t == int(a["ignore"])) | (t < 0) | (t >= C)
        safe = np.where(bad, 0, t)
        loss = np.log(tot[:, 0]) - (x[np.arange(M), safe] - m[:, 0])
        _store(a["loss"][:M], np.where(bad, 0, loss).astype(_c(suffix)), suffix)
        out_of_range = (t != int(a["ignore"])) & ((t < 0) | (t >= C))
        if int(a["check"]) and out_of_range.any():  # the lazy error record [min bad, max bad]
            err = a["err"]
            err[0] = min(int(err[0]), int(t[out_of_range].min()))
            err[1] = max(int(err[1]), int(t[out_of_range].max()))
    return ref


def _softmax_bwd(suffix):
    def ref(a, grid, block):
        M, C = int(a["M"]), int(a["Cn"])
        p = _load(a["p"], suffix)[:M * C].reshape(M, C)
        t = a["t"][:M]
        g = _load(a["g"], suffix)
        gr = g[np.arange(M) * int(a["g_stride"])]
        v = p - a["eps_over_c"]
        valid = t != int(a["ignore"])
        rows = np.nonzero(valid & (t >= 0) & (t < C))[0]
        v[rows, t[rows]] -= a["one_minus_eps"]
        d = v * (gr * a["mul"])[:, None]
        d[~valid] = 0
        _store(a["d"][:M * C], d.astype(_c(suffix)).reshape(-1), suffix)
    return ref


def _optim(rule, suffix):
    """Reference of a generated optimizer entry point (``gpugrad/kernels/optim_codegen.py``): the rule itself, run by
    ``optim_codegen.xp_update`` on compute-type copies of the buffers, then stored back."""
    def ref(a, grid, block):
        start, end = int(a["start"]), int(a["end"])
        arrays = {"p": _load(a["P"], suffix), "g": _load(a["G"], suffix)}
        arrays.update({s: _load(a["S_" + s], suffix) for s in rule.state if "S_" + s in a})
        options = {h: a[h] for h in rule.hyper}
        options.update({f: bool(a[f]) for f in rule.flags})
        if "STEP" in a:
            cg.xp_update(rule, np, arrays, start, end, options, step=a["STEP"].astype(_c(suffix)),
                         found_inf=a["FOUND"])
        else:
            cg.xp_update(rule, np, arrays, start, end, options, tuple(a[d] for d in rule.derived))
        _store(a["P"][start:end], arrays["p"][start:end], suffix)
        for s in rule.state:
            if "S_" + s in a:
                _store(a["S_" + s][start:end], arrays[s][start:end], suffix)
    return ref


def _layer_norm(kind):
    """References of the CUDA C generated by ``gpugrad/kernels/layernorm.py``: its array code in the
    kernel's compute type (float32 or float64, the storage type)."""
    def ref(a, grid, block):
        m, n = int(a["m"]), int(a["n"])
        x = a["x"][:m * n].reshape(m, n)
        if kind == "fwd":
            y, mean, rstd = layernorm.xp_forward(np, x, a["w"][:n], a["b"][:n], float(a["eps"]))
            a["out_y"][:m * n] = y.reshape(-1)
            a["out_mean"][:m], a["out_rstd"][:m] = mean, rstd
            return
        dx, dw, db = layernorm.xp_backward(np, a["dy"][:m * n].reshape(m, n), x, a["w"][:n] if "w" in a else
                                           np.ones(n, x.dtype), a["mean_"][:m], a["rstd_"][:m])
        if kind == "bwd_dx":
            a["out_dx"][:m * n] = dx.reshape(-1)
        else:
            a["out_dw"][:n], a["out_db"][:n] = dw, db
    return ref


REFERENCES = {"bias_act": _bias_act, "act_bwd": _act_bwd, "act_bias_grad": _act_bias_grad, "colsum": _colsum,
              "softmax_xent_fwd": _softmax_fwd, "softmax_xent_bwd": _softmax_bwd}


def register(strict_cupy) -> None:
    """Register every fused.cu entry point (``<name>_f16/_f32/_f64``) and every generated optimizer entry
    point with the stand-in module."""
    for base, make in REFERENCES.items():
        for suffix in _STORAGE:
            strict_cupy.register_kernel(f"{base}_{suffix}", make(suffix))
    for kind in ("fwd", "bwd_dx", "bwd_params"):
        for suffix in ("f32", "f64"):
            strict_cupy.register_kernel(f"layer_norm_{kind}_{suffix}", _layer_norm(kind))
    for rule in RULES.values():
        for mask in ox.masks(rule):
            for cap in (False, True):
                for suffix in _STORAGE:
                    strict_cupy.register_kernel(cg.entry_name(rule, mask, cap, suffix), _optim(rule, suffix))
