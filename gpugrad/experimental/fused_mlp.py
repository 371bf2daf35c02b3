"""EXPERIMENTAL, NOT PUBLIC (not exported by ``gg.nn``): the fully fused narrow MLP as an autograd
Function and a Module. ``FusedMLP(sizes, activation='relu')`` has exactly the parameters of
``nn.MLP(sizes, activation)``; on CUDA its forward is one kernel over all layers and its backward one
kernel over all layers. The kernels, their NumPy emulation and why the path is slow (12x behind
PyTorch eager on an H200) are in ``gpugrad/experimental/fused_mlp_kernels.py``."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from ..autograd.function import Context, Function, named_error
from . import fused_mlp_kernels as K
from ..tensor import Tensor
from ..nn.layers import MLP

__all__ = ["FusedMLP", "FusedMLPFunction", "fused_mlp"]

IMPLS = ("cuda", "reference", "exact")


class FusedMLPFunction(Function):
    """All layers of a narrow MLP in one forward and one backward kernel. Inputs: ``x``, then
    ``w_0, b_0, ..., w_H, b_H`` (biases may be None)."""

    name = "fused_mlp"

    @staticmethod
    def forward(ctx: Context, x, *params, activation: str = "relu", impl: str = "cuda"):
        ws, bs = list(params[0::2]), list(params[1::2])
        H = len(ws) - 1
        width = ws[0].shape[0]
        in_f, out_f = ws[0].shape[1], ws[-1].shape[0]
        in_pad, out_pad = K.pad16(in_f), K.pad16(out_f)
        act = K.ACTIVATIONS[activation]
        be = ctx.backend
        xp = be.xp
        B = x.shape[0]
        Bp = -(-B // K.ROWS) * K.ROWS
        exact = impl == "exact"
        lo = np.float64 if exact else np.float16
        wcat, bcat = K.pack_params(xp, ws, bs, width, in_pad, out_pad, lo, np.float64 if exact else np.float32)
        if B == Bp and in_f == in_pad and x.flags.c_contiguous:
            x16 = x.astype(lo, copy=False)
        else:
            x16 = xp.zeros((Bp, in_pad), dtype=lo)
            x16[:B, :in_f] = x
        save = any(ctx.needs_input_grad)
        if impl == "cuda":
            out, acts = K.cuda_forward(x16, wcat, bcat, width, in_pad, out_pad, H, act, save)
        else:
            out, acts = K.reference_forward(x16, wcat, bcat, width, in_pad, out_pad, H, act, exact=exact)
        ctx.meta = (B, in_f, out_f, width, in_pad, out_pad, H, act, impl, x.dtype,
                    [b is not None for b in bs], [w.dtype for w in ws])
        ctx.save_for_backward(x16 if save else None, wcat if save else None, acts if save else None)
        res = out[:B, :out_f] if (B != Bp or out_f != out_pad) else out
        return xp.ascontiguousarray(res).astype(ws[0].dtype, copy=False)

    @staticmethod
    def backward(ctx: Context, g):
        x16, wcat, acts = ctx.saved_tensors
        B, in_f, out_f, width, in_pad, out_pad, H, act, impl, xdt, has_b, wdts = ctx.meta
        be = ctx.backend
        xp = be.xp
        exact = impl == "exact"
        lo = np.float64 if exact else np.float16
        hi = np.float64 if exact else np.float32
        Bp = x16.shape[0]
        gp = g.astype(hi, copy=False)
        if gp.shape != (Bp, out_pad):
            full = xp.zeros((Bp, out_pad), dtype=hi)
            full[:B, :out_f] = gp
            gp = full
        s = K.grad_scale(xp, gp).astype(hi)
        dout = (gp * s).astype(lo)
        need_dx = ctx.needs_input_grad[0]
        if impl == "cuda":
            dz, dx = K.cuda_backward(dout, wcat, acts, width, in_pad, out_pad, H, act, need_dx)
            mm = K.gemm_tn_f32
        else:
            dz, dx = K.reference_backward(dout, wcat, acts, width, in_pad, out_pad, H, act, need_dx, exact=exact)

            def mm(a, b):
                return a.astype(hi).T @ b.astype(hi)
        inv = (1.0 / s).astype(hi)
        grads: list = [None]
        needs = ctx.needs_input_grad[1:]
        for j in range(H + 1):
            d = dout if j == H else dz[j]                      # dL/dz_{j+1} (scaled)
            h = x16 if j == 0 else acts[j - 1]                 # input of layer j
            rows = out_f if j == H else width
            cols = in_f if j == 0 else width
            gw = gb = None
            if needs[2 * j]:
                gw = mm(d, h)
                gw *= inv
                gw = gw[:rows, :cols].astype(wdts[j])
            if has_b[j] and needs[2 * j + 1]:
                gb = d.sum(axis=0, dtype=hi)
                gb *= inv
                gb = gb[:rows].astype(wdts[j])
            grads += [gw, gb]
        if need_dx:
            dx = dx * inv
            grads[0] = xp.ascontiguousarray(dx[:B, :in_f]).astype(xdt)
        return tuple(grads)


def fused_mlp(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None], activation: str = "relu",
              impl: str = "auto") -> Tensor:
    """``out = W_H act(... act(x W_0^T + b_0) ...)^T + b_H`` in one fused forward and backward.

    ``weights``: ``[W_0 (width, in), W_1..W_{H-1} (width, width), W_H (out, width)]`` (PyTorch layout),
    ``width`` in (16, 32, 64, 128); ``x``: (batch, in). ``impl``: ``"cuda"`` (the kernels; needs CUDA
    tensors), ``"reference"`` (the NumPy emulation of the kernels, float16 rounding included, any
    device), ``"exact"`` (same algorithm in float64 without rounding: for gradient checks), ``"auto"``
    (``"cuda"`` on a CUDA device, else ``"reference"``)."""
    ws, bs = list(weights), list(biases)
    _check(x, ws, bs, activation)
    if impl == "auto":
        impl = "cuda" if x.device.type == "cuda" else "reference"
    if impl not in IMPLS:
        raise named_error(ValueError, f"fused_mlp: impl must be one of {IMPLS + ('auto',)}, got {impl!r}")
    if impl == "cuda" and x.device.type != "cuda":
        raise named_error(RuntimeError,
            f"fused_mlp: impl='cuda' needs CUDA tensors, got x on {x.device}. Fix: move the model and the data "
            "with .to('cuda'), or use impl='reference' (NumPy emulation of the kernels) on CPU.")
    params: list = []
    for w, b in zip(ws, bs):
        params += [w, b]
    return FusedMLPFunction.apply(x, *params, activation=activation, impl=impl)


def _check(x, ws: list, bs: list, activation: str) -> None:
    if activation not in K.ACTIVATIONS:
        raise named_error(ValueError, f"fused_mlp: activation must be one of {tuple(K.ACTIVATIONS)} (the kernels "
                          f"derive the gradient from the output), got {activation!r}; use gg.nn.MLP for others")
    if len(ws) < 2 or len(bs) != len(ws):
        raise named_error(ValueError, f"fused_mlp: need at least 2 layers and one bias (or None) per weight, got "
                          f"{len(ws)} weights and {len(bs)} biases")
    width = ws[0].shape[0]
    if width not in K.WIDTHS:
        raise named_error(ValueError, f"fused_mlp: hidden width {width} is not supported by the fused kernels "
                          f"(widths {K.WIDTHS}); use gg.nn.MLP")
    for j, w in enumerate(ws):
        exp_in = ws[0].shape[1] if j == 0 else width
        if w.ndim != 2 or (j < len(ws) - 1 and w.shape[0] != width) or w.shape[1] != exp_in:
            raise named_error(ValueError, f"fused_mlp: layer {j} weight has shape {tuple(w.shape)}; all hidden "
                              f"widths must equal {width} (weights are (out, in))")
        b = bs[j]
        if b is not None and tuple(b.shape) != (w.shape[0],):
            raise named_error(ValueError, f"fused_mlp: layer {j} bias has shape {tuple(b.shape)}, expected "
                              f"({w.shape[0]},)")
    if x.ndim != 2 or x.shape[1] != ws[0].shape[1]:
        raise named_error(ValueError, f"fused_mlp: input of shape {tuple(x.shape)} does not match the first layer "
                          f"(in_features={ws[0].shape[1]}); expected (batch, {ws[0].shape[1]})")
    if x.dtype.kind != "f":
        raise named_error(TypeError, f"fused_mlp: input must be floating point, got {x.dtype}")


class FusedMLP(MLP):
    """``nn.MLP`` with the same parameters whose forward/backward run the fully fused kernels on CUDA.

    ``FusedMLP(sizes, activation='relu', bias=True, device=None, dtype=None)``: ``sizes`` such as
    ``[32, 64, 64, 64, 16]`` with all hidden widths equal to one of 16, 32, 64, 128 (input and output
    widths are free: they are padded to 16 inside). Activations: relu, sigmoid, tanh, identity.
    On CPU (or with ``use_kernels=False``) the forward is ``nn.MLP``'s: the fused path is CUDA-only and
    the CPU falls back to the normal ops (same function, no float16 rounding)."""

    def __init__(self, sizes: Iterable[int], activation: str | None = "relu", bias: bool = True,
                 device: Any = None, dtype: Any = None, use_kernels: bool = True) -> None:
        sizes = [int(s) for s in sizes]
        act = "identity" if activation in (None, "none", "identity", "linear") else activation
        if act not in K.ACTIVATIONS:
            raise named_error(ValueError, f"FusedMLP: activation must be one of {tuple(K.ACTIVATIONS)}, got "
                              f"{activation!r}; use gg.nn.MLP for other activations")
        hidden = sizes[1:-1]
        if len(sizes) < 3 or len(set(hidden)) != 1 or hidden[0] not in K.WIDTHS:
            raise named_error(ValueError, f"FusedMLP: sizes {sizes} need at least one hidden layer and all hidden "
                              f"widths equal to one of {K.WIDTHS}; use gg.nn.MLP otherwise")
        super().__init__(sizes, activation=act, bias=bias, device=device, dtype=dtype)
        self.fused_activation_name = act
        self.use_kernels = bool(use_kernels)

    def layers(self) -> tuple[list, list]:
        """``([W_0, ..., W_H], [b_0, ..., b_H])`` (biases None without bias)."""
        lins = [b.linear for b in self.blocks] + [self.head]
        return [m.weight for m in lins], [m.bias for m in lins]

    def forward(self, x: Tensor) -> Tensor:
        if not (self.use_kernels and x.device.type == "cuda"):
            return super().forward(x)
        shape = x.shape
        if x.ndim != 2:
            x = x.reshape(-1, shape[-1])
        ws, bs = self.layers()
        out = fused_mlp(x, ws, bs, self.fused_activation_name, impl="cuda")
        return out if len(shape) == 2 else out.reshape(shape[:-1] + (out.shape[-1],))

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, activation={self.fused_activation_name!r}, fused={self.use_kernels}"
