"""NumPy references for the ``extern "C"`` entry points of ``gpugrad/kernels/fused.cu``, of the generated optimizer kernels and of
the generated layer-norm kernels, registered with the strict
CuPy stand-in so that a ``RawKernel`` launch there computes what the CUDA kernel computes.

Each reference takes the kernel's C parameters by name (flat NumPy views of the device arrays, NumPy
scalars), the grid and the block, and writes its outputs in place, following the CUDA source line by
line: the compute type ``C`` (float32 for float16/float32 storage, float64 for float64), which
arguments are read and written, and the launch geometry where the result depends on it (the per-row-
block partial sums of ``act_bias_grad``). Activation formulas come from the one definition in
``gpugrad.kernels.activations``.

Each reference first checks that the launch geometry covers every element the way the CUDA source
walks them (a column tile per thread: ``grid.x * block.x >= N``; ``act_bias_grad``'s fixed (32, 8) blocks
and row blocks; ``softmax_xent_fwd``'s power-of-two block of at most 256 threads, which its shared-memory
reduction needs; one block row per gathered array; the layer-norm row kernels' blocks of exactly 256
threads), raising ``LaunchGeometryError`` otherwise: a launch
that would leave elements unwritten, or overrun ``sm_m[256]``, fails here instead of on a GPU."""
from __future__ import annotations

import numpy as np

from gpugrad.kernels import layernorm, optim_codegen as cg

from . import optim_examples as ox
from gpugrad.kernels.activations import CODES, NPARAMS, act_backward_ref, act_forward_ref, get
from gpugrad.kernels.optim_rules import RULES

_NAMES = {v: k for k, v in CODES.items()}


class LaunchGeometryError(ValueError):
    """A launch whose grid and block do not cover the elements as the CUDA source walks them."""


def _covers(kernel: str, what: str, have: int, need: int) -> None:
    if have < need:
        raise LaunchGeometryError(f"kernel {kernel}: the launch covers {have} {what}, the data has {need}")


def _columns(kernel: str, grid, block, n: int) -> None:
    """The column-tile layout (``bias_act``, ``act_bwd``, ``colsum``, ``softmax_xent_bwd``): thread
    ``blockIdx.x * blockDim.x + threadIdx.x`` owns one column; rows are strided over ``gridDim.y``."""
    if block[1] != 1 or block[2] != 1:
        raise LaunchGeometryError(f"kernel {kernel}: 1-D blocks only, got {block}")
    _covers(kernel, "columns", grid[0] * block[0], n)
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


def _prm(a) -> tuple:
    """The activation parameters ``p0, p1, ...`` (``GG_ACT_PARAMS``) of a launch."""
    return tuple(float(a[f"p{i}"]) for i in range(NPARAMS))


def _act(a) -> str:
    return _NAMES[int(a["code"])]


def _nparams(a) -> int:
    return len(get(_act(a)).params)


def _bias_act(suffix):
    def ref(a, grid, block):
        M, N = int(a["M"]), int(a["N"])
        _columns(f"bias_act_{suffix}", grid, block, N)
        v = _load(a["z"], suffix).reshape(M, N)
        if a["has_bias"]:
            v = v + _load(a["b"], suffix)[:N]
        y = act_forward_ref(v, _act(a), _prm(a)[:_nparams(a)]).astype(_c(suffix))
        if a["write_z"]:
            _store(a["z"], v.reshape(-1), suffix)
        _store(a["y"], y.reshape(-1), suffix)
    return ref


def _act_bwd(suffix):
    def ref(a, grid, block):
        _columns(f"act_bwd_{suffix}", grid, block, int(a["N"]))
        n = int(a["M"]) * int(a["N"])
        g = act_backward_ref(_load(a["dy"], suffix)[:n], _load(a["s"], suffix)[:n], _act(a), _prm(a)[:_nparams(a)],
                             int(a["order"]))
        _store(a["dz"], g.astype(_c(suffix)), suffix)
    return ref


def _act_bias_grad(suffix):
    def ref(a, grid, block):
        M, N, rpb = int(a["M"]), int(a["N"]), int(a["rows_per_block"])
        k = f"act_bias_grad_{suffix}"
        if tuple(block) != (32, 8, 1):  # ABG_TX x ABG_TY: the shared tile sm[ABG_TY][ABG_TX] assumes it
            raise LaunchGeometryError(f"kernel {k}: block must be (32, 8), got {block}")
        _covers(k, "columns", grid[0] * 32, N)
        _covers(k, "rows", grid[1] * rpb, M)
        g = act_backward_ref(_load(a["dy"], suffix)[:M * N], _load(a["s"], suffix)[:M * N], _act(a),
                             _prm(a)[:_nparams(a)], int(a["order"])).astype(_c(suffix)).reshape(M, N)
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
        _columns(f"colsum_{suffix}", grid, block, N)
        _store(a["out"][:N], a["partial"][:R * N].reshape(R, N).sum(axis=0), suffix)
    return ref


def _softmax_fwd(suffix):
    def ref(a, grid, block):
        M, C = int(a["M"]), int(a["Cn"])
        bx = block[0]  # one block per row (grid-stride): any grid; the reduction halves the block in sm_m[256]
        if block[1:] != (1, 1) or bx > 256 or bx & (bx - 1):
            raise LaunchGeometryError(f"kernel softmax_xent_fwd_{suffix}: block must be a power of two of at "
                                      f"most 256 threads (its shared-memory reduction), got {block}")
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
        _columns(f"softmax_xent_bwd_{suffix}", grid, block, C)
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
        if block[1:] != (1, 1) or grid[1:] != (1, 1):  # a 1-D grid-stride loop over [start, end)
            raise LaunchGeometryError(f"optimizer kernel: 1-D grid and block only, got {grid}, {block}")
        start, end = int(a["start"]), int(a["end"])
        arrays = {"p": _load(a["P"], suffix), "g": _load(a["G"], suffix)}
        arrays.update({s: _load(a["S_" + s], suffix) for s in rule.state if "S_" + s in a})
        options = {h: a[h] for h in rule.hyper}
        options.update({f: bool(a[f]) for f in rule.flags})
        host = tuple(a[h] for h in cg.host_scalars(rule))  # as the kernel got them (float64 on the host, then cast)
        if "STEP" in a:
            cg.xp_update(rule, np, arrays, start, end, options, step=a["STEP"].astype(_c(suffix)),
                         found_inf=a["FOUND"], host=host)
        else:
            cg.xp_update(rule, np, arrays, start, end, options, tuple(a[d] for d in rule.derived), host=host)
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
        if kind != "bwd_params" and tuple(block) != (layernorm._BLOCK, 1, 1):  # block_sum's tree over sh[256]
            raise LaunchGeometryError(f"kernel layer_norm_{kind}: blocks of exactly ({layernorm._BLOCK}, 1, 1) "
                                      f"threads (its shared-memory reduction), got {block}")
        if kind == "bwd_params" and (block[1] != 1 or block[2] != 1):  # grid-stride over the columns
            raise LaunchGeometryError(f"kernel layer_norm_{kind}: 1-D blocks only, got {block}")
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


def _gather(suffix, strict_cupy):
    """``gather``: block row ``y`` copies array ``y`` of the table (passed by value) into
    ``out[start[y]:start[y + 1]]``; the source pointers must point into live device arrays."""
    dt = _STORAGE[suffix]

    def ref(a, grid, block):
        t, out = a["table"], a["out"]
        n = grid[1]
        start = t["start"]
        if block[1:] != (1, 1):
            raise LaunchGeometryError(f"kernel gather_{suffix}: 1-D blocks only, got {block}")
        _covers(f"gather_{suffix}", "destination elements", int(start[n]), int(out.size))
        for y in range(n):
            s0, s1 = int(start[y]), int(start[y + 1])
            if s1 > s0:
                src = strict_cupy.array_at(int(t["src"][y]), (s1 - s0) * np.dtype(dt).itemsize, out.dtype)
                out[s0:s1] = src
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
    for suffix in _STORAGE:
        strict_cupy.register_kernel(f"gather_{suffix}", _gather(suffix, strict_cupy))
    for rule in RULES.values():
        for mask in ox.masks(rule):
            for cap in (False, True):
                for suffix in _STORAGE:
                    strict_cupy.register_kernel(cg.entry_name(rule, mask, cap, suffix), _optim(rule, suffix))
