"""Fused optimizer steps: one kernel updates a whole parameter (and its state) in one pass.

Formulas are PyTorch's (and the CPU backend's), element by element in the same order:

SGD:  g = -g if maximize; g += wd * p; buf = g (first step) or momentum * buf + (1 - dampening) * g;
      g = g + momentum * buf (nesterov) or buf; p -= lr * g
Adam: g = -g if maximize; p *= 1 - lr * wd (AdamW) or g += wd * p (Adam); m.lerp_(g, 1 - b1);
      v = b2 v + ((1 - b2) g) g; vmax = max(vmax, v) (amsgrad); p += (-lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)

All arrays are 1-D views of contiguous parameters and states, of one dtype (float16 data computes in
float32).
"""
from __future__ import annotations

import math

import numpy as np

from . import _numba

cuda = None  # numba.cuda, bound when the first kernel is built (keeps imports free of CUDA)


# ---------------------------------------------------------------------------------------- references
def sgd_ref(p, g, buf, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0, maximize=False):
    """Float64 reference: returns ``(p_new, buf_new)`` (``buf`` None on the first step)."""
    p = np.asarray(p, np.float64)
    g = np.asarray(g, np.float64)
    if maximize:
        g = -g
    if weight_decay:
        g = g + weight_decay * p
    newbuf = None
    if momentum:
        newbuf = g.copy() if buf is None else momentum * np.asarray(buf, np.float64) + (1 - dampening) * g
        g = g + momentum * newbuf if nesterov else newbuf
    return p - lr * g, newbuf


def adam_ref(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False,
             vmax=None, maximize=False):
    """Float64 reference: returns ``(p, m, v, vmax)``."""
    p, g, m, v = (np.asarray(a, np.float64) for a in (p, g, m, v))
    if maximize:
        g = -g
    if weight_decay:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    vv = v
    if vmax is not None:
        vmax = np.maximum(np.asarray(vmax, np.float64), v)
        vv = vmax
    denom = np.sqrt(vv) / math.sqrt(1 - beta2 ** step) + eps
    p = p - (lr / (1 - beta1 ** step)) * m / denom
    return p, m, v, vmax


# ---------------------------------------------------------------------------------------- kernels
def _sgd_kernel(cdt):
    def build():
        _numba.nb_cuda(globals())
        F = _numba.nb_type(cdt)
        ZERO = np.dtype(cdt).type(0.0)

        @cuda.jit
        def sgd_kernel(p, g, buf, lr, momentum, one_minus_dampening, wd, nesterov, maximize, first,
                       has_momentum):
            start = cuda.grid(1)
            stride = cuda.gridsize(1)
            for i in range(start, p.shape[0], stride):
                gi = F(g[i])
                if maximize:
                    gi = -gi
                pi = F(p[i])
                if wd != ZERO:
                    gi = gi + wd * pi
                if has_momentum:
                    if first:
                        bi = gi
                    else:
                        bi = momentum * F(buf[i]) + one_minus_dampening * gi
                    buf[i] = bi
                    if nesterov:
                        gi = gi + momentum * bi
                    else:
                        gi = bi
                p[i] = pi - lr * gi
        return sgd_kernel
    return _numba.cached(("sgd", np.dtype(cdt).str), build)


def _adam_kernel(cdt):
    def build():
        _numba.nb_cuda(globals())
        F = _numba.nb_type(cdt)
        ZERO = np.dtype(cdt).type(0.0)
        HALF = np.dtype(cdt).type(0.5)

        @cuda.jit
        def adam_kernel(p, g, m, v, vmax, b1, one_minus_b1, b2, one_minus_b2, eps, wd, decay, decoupled,
                        maximize, amsgrad, step_size, sqrt_bc2):
            start = cuda.grid(1)
            stride = cuda.gridsize(1)
            for i in range(start, p.shape[0], stride):
                gi = F(g[i])
                if maximize:
                    gi = -gi
                pi = F(p[i])
                if wd != ZERO:
                    if decoupled:
                        pi = pi * decay
                    else:
                        gi = gi + wd * pi
                mo = F(m[i])
                dm = gi - mo
                if one_minus_b1 < HALF:  # m.lerp_(g, 1 - beta1), PyTorch's two-branch formula
                    mi = mo + one_minus_b1 * dm
                else:
                    mi = gi - dm * b1
                vi = b2 * F(v[i]) + (one_minus_b2 * gi) * gi
                m[i] = mi
                v[i] = vi
                vv = vi
                if amsgrad:
                    vm = F(vmax[i])
                    vv = vm if vm > vi else vi
                    vmax[i] = vv
                denom = math.sqrt(vv) / sqrt_bc2 + eps
                p[i] = pi + (-step_size * mi) / denom
        return adam_kernel
    return _numba.cached(("adam", np.dtype(cdt).str), build)


# ---------------------------------------------------------------------------------------- launchers
def sgd_step(p, g, buf, lr: float, momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
             weight_decay: float = 0.0, maximize: bool = False, first: bool = False, *, stream=None,
             block: int = 256, max_blocks: int | None = None) -> None:
    """In place on ``p`` (and ``buf`` when ``momentum``; ``first``: fill ``buf`` instead of reading it)."""
    n = p.shape[0]
    if n == 0:
        return
    c = _numba.compute_dtype(p.dtype)
    k = _sgd_kernel(c)
    t = c.type
    has_m = bool(momentum)
    _numba.launch(k, _numba.blocks_for(n, block, max_blocks), block, stream, p, g,
                  buf if has_m else _numba.stand_in(p, 1),
                  t(lr), t(momentum), t(1.0 - dampening), t(weight_decay), bool(nesterov), bool(maximize),
                  bool(first), has_m)


def adam_step(p, g, m, v, step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, decoupled: bool = False, vmax=None, maximize: bool = False, *,
              stream=None, block: int = 256, max_blocks: int | None = None) -> None:
    """In place on ``p``, ``m``, ``v`` (and ``vmax`` for AMSGrad). ``step`` counts from 1."""
    n = p.shape[0]
    if n == 0:
        return
    c = _numba.compute_dtype(p.dtype)
    k = _adam_kernel(c)
    t = c.type
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    _numba.launch(k, _numba.blocks_for(n, block, max_blocks), block, stream, p, g, m, v,
                  vmax if vmax is not None else _numba.stand_in(v, 1), t(beta1), t(1.0 - beta1), t(beta2),
                  t(1.0 - beta2), t(eps),
                  t(weight_decay), t(1.0 - lr * weight_decay), bool(decoupled), bool(maximize), vmax is not None,
                  t(lr / bc1), t(math.sqrt(bc2)))
