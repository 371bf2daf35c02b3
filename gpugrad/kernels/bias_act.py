"""Fused bias + activation forward, and the elementwise activation backward.

``bias_act``: one pass over ``z`` (M, N): ``v = z + b``, optionally ``z = v`` (kept for GELU's backward),
``y = act(v)``. With ``y`` being ``z`` itself the output is written in place: each element is read once
and written once. ``act_backward``: ``dz = dy * act'(saved)`` elementwise (no bias reduction; see
:mod:`act_bias_grad` for the fused version with ``db``). Layout: threads of a block take consecutive
columns (coalesced), blocks in y stride over rows, so the bias is read once per thread.

Arrays may be NumPy (simulator, or auto-transferred on a real GPU) or device arrays (Numba device
arrays, or anything with ``__cuda_array_interface__``); they must be 2-D. Compute happens in float32
for float16/float32 data and float64 for float64 data.
"""
from __future__ import annotations

import numpy as np

from . import _numba

cuda = None  # numba.cuda, bound when the first kernel is built (keeps imports free of CUDA)
from .activations import act_backward_ref, act_code, act_forward_ref, device_functions, kernel_params


# ---------------------------------------------------------------------------------------- references
def bias_act_ref(z, b, act: str, params=None):
    """Float64 reference: returns ``(y, z + b)``."""
    v = np.asarray(z, dtype=np.float64)
    if b is not None:
        v = v + np.asarray(b, dtype=np.float64)
    return act_forward_ref(v, act, params), v


def act_backward_elementwise_ref(dy, saved, act: str, params=None, order: int = 1):
    return act_backward_ref(dy, saved, act, params, order)


# ---------------------------------------------------------------------------------------- kernels
def _bias_act_kernel(cdt):
    def build():
        _numba.nb_cuda(globals())
        F = _numba.nb_type(cdt)
        ZERO = np.dtype(cdt).type(0.0)
        act_fwd, _ = device_functions(cdt)

        @cuda.jit
        def bias_act_kernel(z, b, y, has_bias, write_z, code, prm):
            c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
            if c < z.shape[1]:
                bc = ZERO
                if has_bias:  # (without bias, b is a stand-in that is never read)
                    bc = F(b[c])
                for r in range(cuda.blockIdx.y, z.shape[0], cuda.gridDim.y):
                    v = F(z[r, c])
                    if has_bias:
                        v += bc
                    if write_z:
                        z[r, c] = v
                    y[r, c] = act_fwd(v, code, prm)
        return bias_act_kernel
    return _numba.cached(("bias_act", np.dtype(cdt).str), build)


def _act_bwd_kernel(cdt):
    def build():
        _numba.nb_cuda(globals())
        F = _numba.nb_type(cdt)
        _, act_deriv = device_functions(cdt)

        @cuda.jit
        def act_bwd_kernel(dy, s, dz, code, order, prm):
            c = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
            if c < dy.shape[1]:
                for r in range(cuda.blockIdx.y, dy.shape[0], cuda.gridDim.y):
                    dz[r, c] = act_deriv(F(dy[r, c]), F(s[r, c]), code, order, prm)
        return act_bwd_kernel
    return _numba.cached(("act_bwd", np.dtype(cdt).str), build)


# ---------------------------------------------------------------------------------------- launchers
def bias_act(z, b, y, act: str, params=None, write_z: bool = False, *, stream=None,
             block: int = 256, max_blocks: int | None = None) -> None:
    """``y = act(z + b)`` in one pass (``y`` may be ``z``); with ``write_z`` also ``z = z + b``.
    ``b`` is a (N,) array or None."""
    M, N = z.shape
    if M * N == 0:
        return
    if _numba.is_host(z) and np.shares_memory(y, z):  # host arrays are copied per argument
        if not _numba.same_memory(y, z):
            raise ValueError("bias_act: y must be z itself or not overlap it")
        tmp = np.empty_like(z)
        bias_act(z, b, tmp, act, params, write_z, stream=stream, block=block, max_blocks=max_blocks)
        z[...] = tmp
        return
    cdt = _numba.compute_dtype(z.dtype)
    k = _bias_act_kernel(cdt)
    has_bias = b is not None
    bb = b if has_bias else _numba.stand_in(z, 1)  # never read
    grid, bx = _numba.grid_2d(M, N, block, max_blocks)
    _numba.launch(k, grid, bx, stream, z, bb, y, has_bias, bool(write_z), act_code(act),
                  kernel_params(act, params, cdt))


def act_backward(dy, saved, dz, act: str, params=None, order: int = 1, *, stream=None, block: int = 256,
                 max_blocks: int | None = None) -> None:
    """``dz = dy * d^order act (saved)`` elementwise over 2-D arrays (order 1 or 2; ``saved``: ``y`` or
    ``z`` as for :func:`bias_act`; for identity pass ``dy``)."""
    M, N = dy.shape
    if M * N == 0:
        return
    cdt = _numba.compute_dtype(dy.dtype)
    k = _act_bwd_kernel(cdt)
    grid, bx = _numba.grid_2d(M, N, block, max_blocks)
    _numba.launch(k, grid, bx, stream, dy, saved, dz, act_code(act), int(order), kernel_params(act, params, cdt))
