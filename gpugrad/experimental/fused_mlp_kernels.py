"""EXPERIMENTAL, NOT PUBLIC: the kernel side of the fully fused MLP for narrow widths (16, 32, 64,
128), after tiny-cuda-nn: packing, the NumPy emulation of the kernels, run-time compilation of
``fused_mlp.cu`` (beside this file), the launches and the float16 weight-gradient GEMM. No autograd here: the
autograd Function and the ``FusedMLP`` module that use these are in ``fused_mlp.py`` beside it.

Status: measured on an H200 it LOSES to PyTorch eager by 12x (41.2 vs 3.42 ms per training step at
batch 2**18, 8 x 64; 49.6 vs 8.05 ms at 8 x 128; issue 10), so it is out of the public API and the
README until a rebuild wins (target: 2x faster than PyTorch eager at those shapes). It stays here,
with its simulator/host-emulation tests, as the starting point of that rebuild and for the profile
below; ``benchmarks/mlp_gpu_fast.py --cases fused`` still times it.

Why it is slow - read against tiny-cuda-nn's ``fully_fused_mlp.cu`` (one block per 128-row tile,
warps owning 16 output columns, weights held in registers per layer, activations kept in shared
memory with a skewed row stride, WMMA 16x16x16). Ranked by the traffic/launches they cost; to be
confirmed with the ``ncu`` run below (not yet profiled):
1. Bias gradients: ``d.sum(axis=0)`` per layer is a CuPy column reduction over (2**18, W) float16 -
   CuPy gives each of the W output columns one thread block (64 or 128 blocks on 132 SMs) reading with
   a W-element stride: 9 slow, uncoalesced passes over 32-64 MB per step. tiny-cuda-nn has no biases
   (a constant input feature instead); PyTorch uses a tuned reduction or cuBLASLt's BGRADB epilogue.
2. Weight gradients: 9 serial cuBLAS GEMMs ``dz_l^T @ h_{l-1}`` of shape (W x 2**18) @ (2**18 x W):
   tall-skinny, a handful of output tiles, so they live or die by split-K; each followed by 3-4 more
   small kernels (scale by 1/s, slice, cast). tiny-cuda-nn runs them with CUTLASS split-K on several
   streams, overlapped with the backward kernel.
3. Layer 0 reads its A operand (the input, IN halves per row) with ``wmma::load_matrix_sync`` straight
   from global memory, and each of the W/16 warps of a block re-reads the same 128 x IN tile (4-8x
   redundant global traffic). tiny-cuda-nn copies the input tile into shared memory once, with
   coalesced 16-byte loads, before the first layer.
4. Every epilogue round-trips through a float staging buffer in shared memory (``store_matrix_sync``
   to ``stage``, ``__syncwarp``, read back, bias, activation, convert, store to the tile and to global
   memory, ``__syncwarp``): per 16x16 fragment 2 KiB of extra shared traffic and two warp barriers,
   because the bias is per column and a WMMA fragment's element-to-column map is opaque. tiny-cuda-nn
   applies the activation on the accumulator fragment in registers and stores the half fragment
   straight into the tile (no bias). Fix: start the accumulator from a bias tile
   (``load_matrix_sync`` from 16 rows of bias in shared memory) instead of ``fill_fragment(0)``.
5. Host glue per step: all weights re-packed and cast to float16 (a concatenate), the input copied
   into a zero-padded float16 buffer, the loss scale computed with ~6 tiny kernels, the output sliced
   and cast: ~15 launches and several full passes over the batch beside the two fused kernels.
6. Unchecked: occupancy (block = 2W threads, 8 float accumulator fragments per warp = 64 registers
   per thread for the accumulators alone; static shared memory 18-34 KiB per block) and shared-memory
   bank conflicts of the 16-byte epilogue stores at the W+8 skew.

Profile on the next GPU session (Firecracker machines read counters; gVisor ones do not)::

    ncu --clock-control none --target-processes all -k regex:fused_mlp -c 4 \
        --section SpeedOfLight --section Occupancy --section MemoryWorkloadAnalysis \
        --section ComputeWorkloadAnalysis --section SchedulerStats \
        --metrics l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active \
        -o $OUT/fused_mlp python3 benchmarks/mlp_gpu_fast.py --cases fused --quick --repeats 3 --warmup 1
    ncu --import $OUT/fused_mlp.ncu-rep --page details --csv > $OUT/fused_mlp_details.csv
    # where the whole step's time goes (items 1, 2, 5): every kernel of a few steps, duration only
    ncu --clock-control none --target-processes all -c 300 --section SpeedOfLight --csv \
        python3 benchmarks/mlp_gpu_fast.py --cases fused --quick --repeats 1 --warmup 1 > $OUT/fused_mlp_step.csv

What it computes: ``FusedMLP(sizes, activation='relu')`` has exactly the parameters of
``nn.MLP(sizes, activation)`` (same names, init and ``state_dict``; all hidden widths equal). On a CUDA
device its forward is ONE kernel over all layers and its backward ONE kernel over all layers
(``fused_mlp.cu``): a tile of 128 rows stays in shared memory from layer to layer and every
product runs on tensor cores (``nvcuda::wmma`` 16x16x16, float16 inputs, float32 accumulation). Weight
and bias gradients are then one cuBLAS GEMM (float16 in, float32 out) and one reduction per layer.
Parameters stay float32 (they are the master weights); they are rounded to float16 for each forward.
Input and output widths are padded to multiples of 16 internally; the batch to a multiple of 128.

Numerics (see ``reference_forward``/``reference_backward``, a NumPy copy of the kernels): inputs,
weights and hidden activations are float16; sums are float32; the output is float32. Backward starts
from the float32 ``dL/dout``, multiplied by a power of two chosen on the device so that its largest
entry is about 256 (so tiny gradients of a mean loss over 2**18 rows do not flush to zero in
float16); the scale is divided out of every gradient in float32. Expect ~1e-3 relative error.

On CPU, ``FusedMLP`` runs the normal ``nn.MLP`` path (float32/float64 NumPy) - the same function,
without float16 rounding. ``fused_mlp(..., impl="reference")`` runs the NumPy emulation of the kernels
instead (used by the tests)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .._errors import named_error
from ..backends.cuda.state import runtime
from ..kernels import activations as _acts

__all__ = ["reference_forward", "reference_backward", "pack_params", "grad_scale", "cuda_forward",
           "cuda_backward", "gemm_tn_f32", "pad16", "WIDTHS", "ACTIVATIONS", "ROWS"]

WIDTHS = (16, 32, 64, 128)
# the activations the kernels run (derivative from the saved output, no slope), with their shared codes
ACTIVATIONS = {name: _acts.CODES[name] for name in _acts.FUSED_MLP}
ROWS = 128           # rows per thread block (the batch is padded to a multiple)
GRAD_TARGET = 256.0  # the backward scale brings max|dL/dout| to within [128, 256]


def pad16(n: int) -> int:
    return -(-int(n) // 16) * 16


# ---------------------------------------------------------------------------------------- packing
def pack_params(xp, weights: Sequence, biases: Sequence, width: int, in_pad: int, out_pad: int,
                wdtype=np.float16, bdtype=np.float32):
    """Concatenate the layers as the kernels read them: ``W_0`` (width x in_pad), ``W_1..W_{H-1}``
    (width x width), ``W_H`` (out_pad x width), row-major, zero-padded; biases ``b_0..b_{H-1}`` (width)
    and ``b_H`` (out_pad). ``biases`` entries may be None (zeros)."""
    H = len(weights) - 1
    blocks, bblocks = [], []
    for j, w in enumerate(weights):
        rows = out_pad if j == H else width
        cols = in_pad if j == 0 else width
        if tuple(w.shape) == (rows, cols):
            blocks.append(w.astype(wdtype, copy=False).reshape(-1))
        else:
            p = xp.zeros((rows, cols), dtype=wdtype)
            p[:w.shape[0], :w.shape[1]] = w
            blocks.append(p.reshape(-1))
        b = biases[j]
        if b is None:
            bblocks.append(xp.zeros((rows,), dtype=bdtype))
        elif b.shape[0] == rows:
            bblocks.append(b.astype(bdtype, copy=False))
        else:
            p = xp.zeros((rows,), dtype=bdtype)
            p[:b.shape[0]] = b
            bblocks.append(p)
    return xp.concatenate(blocks), xp.concatenate(bblocks)


def _layer_views(wcat, width: int, in_pad: int, out_pad: int, H: int) -> list:
    """The per-layer (rows, cols) views of a packed weight vector."""
    views, off = [], 0
    for j in range(H + 1):
        rows = out_pad if j == H else width
        cols = in_pad if j == 0 else width
        views.append(wcat[off:off + rows * cols].reshape(rows, cols))
        off += rows * cols
    return views


def _bias_views(bcat, width: int, out_pad: int, H: int) -> list:
    return [bcat[j * width:(j + 1) * width] for j in range(H)] + [bcat[H * width:H * width + out_pad]]


def grad_scale(xp, g):
    """The power of two ``s`` (a 0-d float32 array on ``g``'s device, no host sync) with
    ``128 < s * max|g| <= 256``; ``2**40`` when ``g`` is all zero. Clipped to [2**-24, 2**40]."""
    m = xp.abs(g).max().astype(np.float64)
    e = xp.floor(xp.log2(GRAD_TARGET / xp.maximum(m, 1e-300)))
    return xp.exp2(xp.clip(e, -24.0, 40.0)).astype(np.float32)


# ---------------------------------------------------------------------------------------- reference
def _act_np(z, act: int):
    """The activation with code ``act`` on a NumPy array, in its dtype (the generated array code)."""
    return _acts.xp_functions(_acts.BY_CODE[act].name)[0](np, None, z, 0.0)


def _act_bwd_np(dh, y, act: int):
    """``dh * act'(y)`` from the activation's output ``y``: the derivative at ``dy = 1``, then one
    multiply by ``dh``, as the kernel rounds it (``mlp_act_bwd`` in the generated header)."""
    return dh * _acts.xp_functions(_acts.BY_CODE[act].name)[1](np, None, np.ones_like(y), y, 0.0)


def reference_forward(x, wcat, bcat, width: int, in_pad: int, out_pad: int, n_hidden: int, act: int,
                      exact: bool = False):
    """NumPy copy of ``fused_mlp_forward_w{width}``: ``x`` (B, in_pad) float16, packed ``wcat``
    (float16) and ``bcat`` (float32). Returns ``(out float32 (B, out_pad), acts float16 (H, B, width))``.
    Per layer: float32 sum of float16 products, + float32 bias, activation in float32, rounded to
    float16. ``exact=True``: the same algorithm in float64 without any rounding (gradient checks)."""
    if exact:
        lo = hi = np.float64
    else:
        lo, hi = np.float16, np.float32
    ws = _layer_views(wcat, width, in_pad, out_pad, n_hidden)
    bs = _bias_views(bcat, width, out_pad, n_hidden)
    h = np.asarray(x).astype(lo)
    acts = np.empty((n_hidden, h.shape[0], width), dtype=lo)
    with np.errstate(over="ignore"):
        for j in range(n_hidden):
            z = h.astype(hi) @ ws[j].astype(lo).astype(hi).T + bs[j].astype(hi)
            h = _act_np(z, act).astype(lo)
            acts[j] = h
        out = h.astype(hi) @ ws[n_hidden].astype(lo).astype(hi).T + bs[n_hidden].astype(hi)
    return out, acts


def reference_backward(dout, wcat, acts, width: int, in_pad: int, out_pad: int, n_hidden: int, act: int,
                       need_dx: bool = True, exact: bool = False):
    """NumPy copy of ``fused_mlp_backward_w{width}``: ``dout`` (B, out_pad) float16 (already scaled),
    ``acts`` from the forward. Returns ``(dz float16 (H, B, width), dx float32 (B, in_pad) or None)``:
    ``dh_H = dout @ W_H``; ``dz_l = fp16(dh_l * act'(h_l))``; ``dh_{l-1} = dz_l @ W_{l-1}``;
    ``dx = dz_1 @ W_0``, all sums in float32."""
    if exact:
        lo = hi = np.float64
    else:
        lo, hi = np.float16, np.float32
    ws = _layer_views(wcat, width, in_pad, out_pad, n_hidden)
    dz = np.empty_like(acts, dtype=lo)
    with np.errstate(over="ignore", invalid="ignore"):
        dh = np.asarray(dout).astype(lo).astype(hi) @ ws[n_hidden].astype(lo).astype(hi)
        for l in range(n_hidden, 0, -1):
            d = _act_bwd_np(dh, acts[l - 1].astype(hi), act).astype(lo)
            dz[l - 1] = d
            if l > 1:
                dh = d.astype(hi) @ ws[l - 1].astype(lo).astype(hi)
        dx = dz[0].astype(hi) @ ws[0].astype(lo).astype(hi) if need_dx else None
    return dz, dx


# ---------------------------------------------------------------------------------------- CUDA launch
def _module():
    """``fused_mlp.cu`` (beside this file) compiled for the current device: NVRTC (CuPy passes the CUDA include
    directory it finds), else nvcc; a clear error naming both failures otherwise."""
    import cupy
    dev = cupy.cuda.runtime.getDevice()
    modules = runtime().cache("fused_mlp.modules")  # by device, in the CUDA runtime state (they go with it)
    mod = modules.get(dev)
    if mod is not None:
        return mod
    src = _acts.cuda_source(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused_mlp.cu"))
    errors = []
    opts = ["--std=c++17"]
    try:
        inc = cupy.cuda.get_cuda_path()
        if inc:
            opts.append(f"-I{inc}/include")
    except Exception:
        pass
    for backend in ("nvrtc", "nvcc"):
        try:
            m = cupy.RawModule(code=src, options=tuple(opts) if backend == "nvrtc" else ("-std=c++17",),
                               backend=backend)
            m.get_function("fused_mlp_forward_w16")  # compiles now, so failures surface here
            modules[dev] = m
            return m
        except Exception as e:  # pragma: no cover - needs a GPU
            errors.append(f"{backend}: {type(e).__name__}: {str(e)[:400]}")
    raise named_error(RuntimeError,  # pragma: no cover - needs a GPU
        "fused_mlp: could not compile gpugrad/experimental/fused_mlp.cu (it includes <mma.h> and <cuda_fp16.h>). "
        + " | ".join(errors) + ". Fix: install the CUDA toolkit headers (the CUDA toolkit, or "
        "`pip install \"cupy-cuda13x[ctk]\"`) or put nvcc on PATH; or use gg.nn.MLP.")


def gemm_tn_f32(a, b):
    """``a.T @ b`` in float32 for float16 ``a`` (K, M) and ``b`` (K, N), both C-contiguous: one
    cuBLAS ``gemmEx`` (float16 inputs, float32 output and accumulation) on CuPy's current stream."""
    import cupy
    from cupy_backends.cuda.libs import cublas
    K, M = a.shape
    N = b.shape[1]
    c = cupy.empty((M, N), dtype=np.float32)
    if K == 0:
        c[...] = 0
        return c
    handle = cupy.cuda.device.get_cublas_handle()
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    one = np.array(1.0, dtype=np.float32)
    zero = np.array(0.0, dtype=np.float32)
    r16 = getattr(cupy.cuda.runtime, "CUDA_R_16F", 2)
    r32 = getattr(cupy.cuda.runtime, "CUDA_R_32F", 0)
    # column-major view: C^T (N x M) = B^T (N x K, b as stored) @ A (K x M, a as stored, transposed)
    mode = cublas.getPointerMode(handle)
    cublas.setPointerMode(handle, cublas.CUBLAS_POINTER_MODE_HOST)
    try:
        cublas.gemmEx(handle, cublas.CUBLAS_OP_N, cublas.CUBLAS_OP_T, N, M, K,
                      one.ctypes.data, b.data.ptr, r16, N, a.data.ptr, r16, M,
                      zero.ctypes.data, c.data.ptr, r32, N,
                      getattr(cublas, "CUBLAS_COMPUTE_32F", 68), getattr(cublas, "CUBLAS_GEMM_DEFAULT", -1))
    finally:
        cublas.setPointerMode(handle, mode)
    return c


def cuda_forward(x16, wcat, bcat, width, in_pad, out_pad, H, act, save: bool):
    import cupy
    B = x16.shape[0]
    out = cupy.empty((B, out_pad), dtype=np.float32)
    acts = cupy.empty((H, B, width), dtype=np.float16) if save else None
    f = _module().get_function(f"fused_mlp_forward_w{width}")
    f((B // ROWS,), (2 * width,),
      (x16, wcat, bcat, out, acts if acts is not None else np.uint64(0), np.int32(B), np.int32(in_pad),
       np.int32(out_pad), np.int32(H), np.int32(act)))
    return out, acts


def cuda_backward(dout16, wcat, acts, width, in_pad, out_pad, H, act, need_dx: bool):
    import cupy
    B = dout16.shape[0]
    dz = cupy.empty((H, B, width), dtype=np.float16)
    dx = cupy.empty((B, in_pad), dtype=np.float32) if need_dx else None
    f = _module().get_function(f"fused_mlp_backward_w{width}")
    f((B // ROWS,), (2 * width,),
      (dout16, wcat, acts, dz, dx if dx is not None else np.uint64(0), np.int32(B), np.int32(in_pad),
       np.int32(out_pad), np.int32(H), np.int32(act)))
    return dz, dx
