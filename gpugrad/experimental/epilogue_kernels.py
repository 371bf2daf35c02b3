"""EXPERIMENTAL cuBLASLt epilogues for the linear layer, through nvmath-python (optional: used only
when ``import nvmath`` works and the model is an ``EpilogueMLP``): bias, activation and bias gradient ride inside the
GEMMs instead of separate elementwise passes.

Status: opt-in, off by default, and kept so because it has not yet won anywhere. The one measurement
(H200, issue 10): 127.8 ms against the kernel path's 125.6 ms per forward + backward at batch 8192,
8 x 4096 FP32 - a shape where the 24 GEMMs are ~97% of the time, so removing the elementwise passes
cannot show. Where it could pay (mid-size layers, where the bias/activation passes are a larger
share) it is unmeasured; ``benchmarks/mlp_gpu_fast.py --cases epilogues`` measures it. It stays
because it is small, exactly emulated and tested on CPU, and is the route to fusing bias and
activation into captured GEMMs later; nothing turns it on by default.

Opt-in by model: ``gpugrad.experimental.EpilogueMLP`` (an ``nn.MLP`` whose CUDA forward takes this
path; ``gg.nn`` never does). Activations: ``relu`` (RELU_AUX_BIAS / DRELU_BGRAD: the aux is a
1-bit mask) and ``gelu_tanh`` (GELU_AUX_BIAS / DGELU_BGRAD: the aux is the pre-activation; cuBLASLt's
GELU is the tanh approximation, so exact-erf ``gelu`` is not fused).

cuBLASLt adds the bias along the rows of D and reduces the bias gradient over its columns, so a layer
``y = act(x @ w.T + b)`` (x: (N, in), w: (out, in)) is computed feature-major:
``D = w @ x.T`` (out x N, column-major), ``y = D.T`` (a C-contiguous (N, out) view, no copy).

- forward  ``linear_act_forward(x, w, b, act) -> (y, aux)``: one GEMM, epilogue ``*_AUX_BIAS``.
- backward through two layers at once: ``dgrad_act_bgrad(dz_next, w_next, aux, act) -> (dz, db)``:
  the GEMM that propagates layer L+1's gradient to its input (``w_next.T @ dz_next.T``) applies layer
  L's activation derivative from ``aux`` and reduces layer L's bias gradient (``D*_BGRAD``): no pass
  over the activations at all.
- ``wgrad(dz, x, with_bias) -> (dw, db)``: ``dw = dz.T @ x``; with ``with_bias`` the bias gradient
  of the A operand rides along (``BGRADA``) - for the output layer, which has no activation.
- ``act_bias_backward(dy, aux, act, with_bias)``: the plain elementwise fallback for a lone layer.

Every function also runs on NumPy arrays with an exact emulation of the epilogue semantics (masks as
booleans), which the CPU tests use to check the bookkeeping; only the CUDA path calls nvmath."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..backends.cuda.state import runtime
from ..kernels import activations as _acts

__all__ = ["available", "supports", "gemm",
           "linear_act_forward", "dgrad_act_bgrad", "wgrad", "act_bias_backward", "FORWARD", "BACKWARD"]

# the selection table comes from the activation definitions (``Activation.cublaslt``)
FORWARD = {a.name: a.cublaslt[0] for a in _acts.ALL if a.cublaslt}
BACKWARD = {a.name: a.cublaslt[1] for a in _acts.ALL if a.cublaslt}
_AUX_NAME = {a.name: a.cublaslt[2] for a in _acts.ALL if a.cublaslt}
_BY_EPILOG = {a.cublaslt[i]: a.name for a in _acts.ALL if a.cublaslt for i in (0, 1)}

def _cache(name: str) -> dict:
    """This path's caches live in the CUDA runtime state (they go with it): ``available``, ``plans``
    (``Matmul`` objects per device and shapes), ``unsupported`` (epilogues cuBLASLt refused)."""
    return runtime().cache("epilogue." + name)


def available() -> tuple[bool, str]:
    """``(True, "")`` if nvmath-python imports, else ``(False, reason)``. Never raises."""
    c = _cache("available")
    if not c:
        try:
            import nvmath.linalg.advanced  # noqa: F401
            c["result"] = (True, "")
        except Exception as e:  # ImportError, or a broken CUDA library setup
            c["result"] = (False, f"nvmath-python is not usable ({type(e).__name__}: {e})")
    return c["result"]


def supports(act: str, dtype) -> bool:
    """Whether ``act`` in ``dtype`` has a fused epilogue (relu / gelu_tanh; float16/float32/float64)."""
    return act in FORWARD and np.dtype(dtype) in (np.float16, np.float32, np.float64)


# ---------------------------------------------------------------------------------------- GEMM
def _is_numpy(*arrays) -> bool:
    return all(a is None or isinstance(a, np.ndarray) for a in arrays)


def _act(xp, act: str, z):
    """The activation on an array (the generated array code, in ``z``'s dtype)."""
    return _acts.xp_functions(act)[0](xp, None, z, 0.0)


def _act_grad(xp, act: str, dy, z):
    """``dy * act'(z)`` from the pre-activation ``z`` (what the GELU aux holds)."""
    return _acts.xp_functions(act, reuse=False)[1](xp, None, dy, z, 0.0)


def _emulate(a, b, epilog: str | None, bias, aux):
    """NumPy: exactly what cuBLASLt computes for ``D = epilog(a @ b)`` (bias: length M, added along
    rows; bias gradients: sums over columns)."""
    d = a @ b
    extras: dict = {}
    if epilog in ("RELU_AUX_BIAS", "GELU_AUX_BIAS"):
        d = d + bias[:, None]
        if epilog == "RELU_AUX_BIAS":
            extras["relu_aux"] = d > 0
        else:
            extras["gelu_aux"] = d.copy()
        d = _act(np, _BY_EPILOG[epilog], d)
    elif epilog == "DRELU_BGRAD":
        d = d * aux
        extras["drelu_bgrad"] = d.sum(axis=1)
    elif epilog == "DGELU_BGRAD":
        d = _act_grad(np, _BY_EPILOG[epilog], d, aux)
        extras["dgelu_bgrad"] = d.sum(axis=1)
    elif epilog == "BGRADA":
        extras["bgrada"] = a.sum(axis=1)
    elif epilog is not None:
        raise ValueError(f"cuBLASLt epilogue: unknown epilog {epilog!r}")
    return d, extras


def _compute_type(dtype):
    """TF32 for float32 when gpugrad's TF32 switch is on, else the library default."""
    if np.dtype(dtype) != np.float32:
        return None
    try:
        from ..backends import cuda as _bc
        if _bc.get_tf32():
            import nvmath.linalg
            return nvmath.linalg.ComputeType.COMPUTE_32F_FAST_TF32
    except Exception:  # pragma: no cover
        pass
    return None


def _nvmath_gemm(a, b, epilog: str | None, bias, aux, act: str | None):  # pragma: no cover - needs a GPU
    """The same on CuPy arrays through a cached ``nvmath.linalg.advanced.Matmul`` (planned once per
    shapes/strides/dtype/epilog; then only operands are reset), on CuPy's current stream."""
    import cupy
    from nvmath.linalg.advanced import Matmul, MatmulEpilog
    stream = cupy.cuda.get_current_stream()
    inputs: dict = {}
    if bias is not None:
        inputs["bias"] = bias
    if aux is not None:
        inputs[_AUX_NAME[act]] = aux
    ep = getattr(MatmulEpilog, epilog) if epilog is not None else None
    ct = _compute_type(a.dtype)
    key = (cupy.cuda.runtime.getDevice(), a.shape, a.strides, b.shape, b.strides, str(a.dtype), epilog, ct,
           tuple((k, v.shape, v.strides, str(v.dtype)) for k, v in sorted(inputs.items())))
    plans = _cache("plans")
    mm = plans.get(key)
    if mm is None:
        options = {"compute_type": ct} if ct is not None else None
        mm = Matmul(a, b, options=options, stream=stream)
        mm.plan(epilog=ep, epilog_inputs=inputs or None, stream=stream)
        plans[key] = mm
    else:
        mm.reset_operands(a=a, b=b, epilog_inputs=inputs or None, stream=stream)
    res = mm.execute(stream=stream)
    if hasattr(mm, "release_operands"):
        mm.release_operands()  # do not keep this step's activations alive inside the plan cache
    if isinstance(res, tuple):
        return res[0], res[1]
    return res, {}


def gemm(a, b, epilog: str | None = None, bias=None, aux=None, act: str | None = None):
    """``D = epilog(a @ b)`` and the epilogue's extra outputs as a dict (``relu_aux``, ``gelu_aux``,
    ``drelu_bgrad``, ``dgelu_bgrad``, ``bgrada``). NumPy arrays: emulation; CuPy arrays: nvmath."""
    if _is_numpy(a, b, bias):
        return _emulate(a, b, epilog, bias, aux)
    return _nvmath_gemm(a, b, epilog, bias, aux, act)


# ---------------------------------------------------------------------------------------- layers
def linear_act_forward(x, w, b, act: str):
    """``y = act(x @ w.T + b)`` in one GEMM with the ``*_AUX_BIAS`` epilogue. Returns ``(y, aux)``:
    ``y`` (N, out) is a transposed view of the column-major result; ``aux`` is what
    ``dgrad_act_bgrad``/``act_bias_backward`` need (opaque)."""
    if act not in FORWARD:
        raise ValueError(f"cuBLASLt epilogue: no fused epilogue for activation {act!r} (have {tuple(FORWARD)})")
    if b is None:
        b = (np.zeros if _is_numpy(x) else _xp(x).zeros)((w.shape[0],), dtype=w.dtype)
    d, ex = gemm(w, x.T, FORWARD[act], bias=b, act=act)
    return d.T, ex[_AUX_NAME[act]]


def dgrad_act_bgrad(dz_next, w_next, aux, act: str):
    """Layer L's ``(dz_L, db_L)`` from layer L+1's ``dz`` (N, out_{L+1}) and weight (out_{L+1}, out_L),
    with layer L's activation derivative from ``aux`` applied and its bias gradient reduced, all in
    the GEMM ``w_next.T @ dz_next.T``. ``dz_L`` is an (N, out_L) view."""
    d, ex = gemm(w_next.T, dz_next.T, BACKWARD[act], aux=aux, act=act)
    return d.T, ex[BACKWARD[act].lower()]


def wgrad(dz, x, with_bias: bool):
    """``(dw, db)`` with ``dw = dz.T @ x`` (out, in); with ``with_bias`` the bias gradient
    ``dz.sum(0)`` comes out of the same GEMM (``BGRADA``), else ``db`` is None."""
    if not with_bias:
        return gemm(dz.T, x)[0], None
    key = ("BGRADA", str(dz.dtype))
    unsupported = _cache("unsupported")  # (epilog, dtype) -> why cuBLASLt refused it (then the unfused path)
    if key not in unsupported:
        try:
            d, ex = gemm(dz.T, x, "BGRADA")
            return d, ex["bgrada"]
        except Exception as e:  # pragma: no cover - a cuBLASLt build/layout without BGRADA support
            if _is_numpy(dz):
                raise
            unsupported[key] = f"{type(e).__name__}: {e}"
    return gemm(dz.T, x)[0], dz.sum(axis=0)


def act_bias_backward(dy, aux, act: str, with_bias: bool):
    """Elementwise fallback for one layer: ``dz = dy * act'(aux)``, ``db = dz.sum(0)``. ``aux`` from
    ``linear_act_forward`` (on CUDA the relu aux is cuBLASLt's packed bitmask; it is unpacked here)."""
    xp = np if _is_numpy(dy) else _xp(dy)
    if act == "relu":
        mask = aux.T if _is_numpy(dy) else _unpack_relu_mask(xp, aux, dy.shape[1], dy.shape[0])
        dz = dy * mask
    elif act == "gelu_tanh":
        dz = _act_grad(xp, act, dy, aux[:dy.shape[1], :dy.shape[0]].T)
    else:
        raise ValueError(f"cuBLASLt epilogue: no fused epilogue for activation {act!r}")
    return dz, (dz.sum(axis=0) if with_bias else None)


def _unpack_relu_mask(xp, aux, m: int, n: int):  # pragma: no cover - needs a GPU
    """cuBLASLt's RELU aux: one bit per element of the column-major (M, N) result, the M axis padded
    to a multiple of 128 bits, stored as uint8 of shape (ceil(M/8) rounded up to 16, N), column-major.
    Returns the (N, M) boolean mask (the orientation of ``y``)."""
    t = xp.ascontiguousarray(aux.T)  # (N, M bytes): row n holds the bits of column n of D
    bits = xp.unpackbits(t.reshape(-1), bitorder="little").reshape(t.shape[0], -1)
    return bits[:n, :m].astype(bool)


def _xp(a) -> Any:
    import cupy
    return cupy
