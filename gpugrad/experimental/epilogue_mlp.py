"""EXPERIMENTAL: the cuBLASLt-epilogue MLP, ``nn.MLP`` on CUDA with bias, activation and bias gradient
inside the GEMMs. Opt in by building an :class:`EpilogueMLP` (``gg.nn.MLP`` never takes this path).
The autograd Function is here; the GEMM plans and their NumPy emulation are in
``gpugrad/experimental/epilogue_kernels.py``."""
from __future__ import annotations

from typing import Any, Sequence

from ..autograd.function import Context, Function, named_error
from ..install_hints import hint
from ..nn.layers import MLP
from ..tensor import Tensor
from . import epilogue_kernels as E

__all__ = ["EpilogueMLP", "EpilogueMLPFunction", "epilogue_mlp", "epilogue_mlp_forward"]

class EpilogueMLPFunction(Function):
    """A whole MLP whose bias, activation and bias gradient ride inside cuBLASLt GEMMs
    (``gpugrad.experimental.epilogue_kernels``): forward, one ``*_AUX_BIAS`` GEMM per hidden layer; backward,
    each input-gradient GEMM applies the previous layer's activation derivative and reduces its bias
    gradient (``D*_BGRAD``), the output layer's bias gradient comes out of its weight-gradient GEMM
    (``BGRADA``). No elementwise pass over the activations remains. Inputs: ``x, w_0, b_0, ..., w_H,
    b_H``. On NumPy arrays the epilogues are emulated exactly (tests)."""

    name = "epilogue_mlp"

    @staticmethod
    def forward(ctx: Context, x, *params, activation: str = "relu"):
        ws, bs = list(params[0::2]), list(params[1::2])
        xp = ctx.backend.xp
        h = x
        hs, auxes = [x], []
        for w, b in zip(ws[:-1], bs[:-1]):
            h, aux = E.linear_act_forward(h, w, b, activation)
            hs.append(h)
            auxes.append(aux)
        out = xp.matmul(h, ws[-1].T)
        if bs[-1] is not None:
            out += bs[-1]
        ctx.act = activation
        ctx.nlayers = len(ws)
        ctx.has_b = [b is not None for b in bs]
        ctx.save_for_backward(*hs, *auxes, *ws)
        return out

    @staticmethod
    def backward(ctx: Context, g):
        L = ctx.nlayers
        saved = ctx.saved_tensors
        hs, auxes, ws = saved[:L], saved[L:2 * L - 1], saved[2 * L - 1:]
        needs = ctx.needs_input_grad
        grads: list = [None] * (1 + 2 * L)
        dz = g
        db = None
        for j in range(L - 1, -1, -1):
            if j == L - 1:
                dw, db = E.wgrad(dz, hs[j], ctx.has_b[j] and needs[2 + 2 * j])
            else:
                dw = E.wgrad(dz, hs[j], False)[0] if needs[1 + 2 * j] else None
            grads[1 + 2 * j] = dw if needs[1 + 2 * j] else None
            grads[2 + 2 * j] = db if (ctx.has_b[j] and needs[2 + 2 * j]) else None
            if j > 0:
                dz, db = E.dgrad_act_bgrad(dz, ws[j], auxes[j - 1], ctx.act)
            elif needs[0]:
                grads[0] = ctx.backend.xp.matmul(dz, ws[0])
        return tuple(grads)


def epilogue_mlp(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None],
                 activation: str = "relu") -> Tensor:
    """``MLP`` forward/backward with cuBLASLt epilogues (relu or gelu_tanh hidden layers, plain
    output layer). On CUDA it needs nvmath-python; on CPU it runs the exact NumPy emulation."""
    ws, bs = list(weights), list(biases)
    if activation not in E.FORWARD:
        raise named_error(ValueError, f"epilogue_mlp: activation must be one of {tuple(E.FORWARD)} (cuBLASLt's "
                          f"GELU is the tanh form), got {activation!r}")
    if len(ws) < 1 or len(bs) != len(ws):
        raise named_error(ValueError, f"epilogue_mlp: need one bias (or None) per weight, got {len(ws)} weights "
                          f"and {len(bs)} biases")
    if x.ndim != 2 or x.shape[1] != ws[0].shape[1]:
        raise named_error(ValueError, f"epilogue_mlp: input of shape {tuple(x.shape)} does not match the first "
                          f"layer's weight {tuple(ws[0].shape)}")
    for j in range(1, len(ws)):
        if ws[j].shape[1] != ws[j - 1].shape[0]:
            raise named_error(ValueError, f"epilogue_mlp: layer {j} weight {tuple(ws[j].shape)} does not follow "
                              f"layer {j - 1} weight {tuple(ws[j - 1].shape)}")
    if x.device.type == "cuda" and not E.available()[0]:
        raise named_error(RuntimeError, f"epilogue_mlp: {E.available()[1]}. Fix: {hint('nvmath')}, or "
                          "use gg.nn.MLP (the fused-kernel path)")
    params: list = []
    for w, b in zip(ws, bs):
        params += [w, b]
    return EpilogueMLPFunction.apply(x, *params, activation=activation)


def epilogue_mlp_forward(mlp: Any, x: Tensor) -> "Tensor | None":
    """``mlp(x)`` through :func:`epilogue_mlp` when nvmath-python is there and the model qualifies
    (CUDA, relu/gelu_tanh hidden layers, no dropout/residual/checkpointing, 2-D input); ``None``
    otherwise so the caller runs its normal path (``mlp``: an ``nn.MLP``)."""
    if x.device.type != "cuda" or x.ndim != 2 or not E.available()[0]:
        return None
    blocks = list(mlp.blocks)
    if not blocks or mlp.checkpoint not in (None, "none"):
        return None
    act = blocks[0].linear.activation
    if act not in E.FORWARD or not E.supports(act, x.dtype):
        return None
    if any(b.dropout > 0 or b.residual or b.linear.activation != act for b in blocks):
        return None
    lins = [b.linear for b in blocks] + [mlp.head]
    return epilogue_mlp(x, [m.weight for m in lins], [m.bias for m in lins], act)


class EpilogueMLP(MLP):
    """``gg.nn.MLP`` (same constructor, parameters and state_dict) whose forward on CUDA runs through
    cuBLASLt epilogues when nvmath-python is installed and the model qualifies (relu or gelu_tanh
    hidden layers, no dropout, residual or checkpointing, 2-D input); otherwise ``nn.MLP``'s path."""

    def forward(self, x: Tensor) -> Tensor:
        out = epilogue_mlp_forward(self, x)
        return super().forward(x) if out is None else out
