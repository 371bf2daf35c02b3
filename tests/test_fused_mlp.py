"""The fully fused narrow MLP (gpugrad/experimental/: fused_mlp.cu, fused_mlp_kernels.py for the kernels,
fused_mlp.py for the autograd Function and Module) and the cuBLASLt-epilogue MLP: EXPERIMENTAL
and out of the public API (12x slower than PyTorch eager on an H200; see the module docstring). These
tests keep it correct as the base of a rebuild after tiny-cuda-nn's design.

Without a GPU this file checks, on CPU:
- that the CUDA C compiles warning-free with ``nvcc -arch=sm_90`` (object and PTX) when nvcc exists;
- the kernels' own logic: the .cu file is compiled as host C++ against a small emulation of the CUDA
  API (one OS thread per CUDA thread, real barriers for __syncthreads/__syncwarp, WMMA fragments as
  16x16 matrices with float32 accumulation, and the WMMA alignment/leading-dimension rules checked)
  and run against the NumPy reference on the same packed inputs (needs g++ with C++20);
- the NumPy reference of what the kernels compute, against the float64 MLP;
- the autograd plumbing (padding, loss scale, weight/bias/input gradients) by gradcheck in float64.
GPU-marked tests compare the real kernels with the float64 CPU reference."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

import gpugrad as gg
from gpugrad.experimental import fused_mlp_kernels as fm  # the kernels, their emulation, the launches
from gpugrad.experimental import epilogue_mlp as em
from gpugrad.experimental import fused_mlp as fmn  # the autograd Function and the Module
from gpugrad import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CU = os.path.join(ROOT, "gpugrad", "experimental", "fused_mlp.cu")
KERNEL_INCLUDE = "-I" + os.path.join(ROOT, "gpugrad", "kernels")  # activations.cuh


def _ref_mlp64(x, ws, bs, act):
    """The float64 MLP: the function the kernels approximate."""
    f = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
         "identity": lambda z: z}[act]
    h = np.asarray(x, np.float64)
    for w, b in zip(ws[:-1], bs[:-1]):
        h = f(h @ np.asarray(w, np.float64).T + np.asarray(b, np.float64))
    return h @ np.asarray(ws[-1], np.float64).T + np.asarray(bs[-1], np.float64)


def _params(rng, sizes):
    ws, bs = [], []
    for a, b in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(a)
        ws.append(rng.uniform(-bound, bound, (b, a)) * np.sqrt(6))  # keep activations O(1) through depth
        bs.append(rng.uniform(-bound, bound, b))
    return ws, bs


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# ---------------------------------------------------------------- nvcc
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("what", ["-c", "--ptx"])
def test_nvcc_compiles_warning_free(tmp_path, what):
    out = tmp_path / ("fused_mlp.o" if what == "-c" else "fused_mlp.ptx")
    r = subprocess.run(["nvcc", "-arch=sm_90", KERNEL_INCLUDE, what, CU, "-o", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "warning" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    if what == "--ptx":
        ptx = out.read_text()
        for k in (16, 32, 64, 128):
            assert f".entry fused_mlp_forward_w{k}" in ptx and f".entry fused_mlp_backward_w{k}" in ptx
        assert "wmma.mma.sync.aligned.row.col.m16n16k16.f32.f32" in ptx  # tensor cores, fp32 accumulate


# ---------------------------------------------------------------- host emulation of the CUDA C
_SHIM_RUNTIME = r"""
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local emu_dim3 threadIdx, blockIdx;
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }
struct EmuBlock { std::barrier<>* block; std::vector<std::unique_ptr<std::barrier<>>>* warps; };
inline EmuBlock* g_emu = nullptr;
inline std::atomic<int> g_emu_error{0};
inline void __syncthreads() { g_emu->block->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { (*g_emu->warps)[threadIdx.x / 32]->arrive_and_wait(); }
"""

_SHIM_FP16 = r"""
#pragma once
#include "emu_runtime.h"
struct __half {
  uint16_t bits;
  __half() = default;
  explicit __half(float f) { _Float16 h = (_Float16)f; std::memcpy(&bits, &h, 2); }
  operator float() const { _Float16 h; std::memcpy(&h, &bits, 2); return (float)h; }
};
struct alignas(4) __half2 { __half x, y; };
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__half(a), __half(b)}; }
inline float2 __half22float2(__half2 h) { return float2{float(h.x), float(h.y)}; }
"""

_SHIM_MMA = r"""
#pragma once
#include "cuda_fp16.h"
namespace nvcuda { namespace wmma {
struct row_major {}; struct col_major {}; struct matrix_a {}; struct matrix_b {}; struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment { float v[M * N]; };
// The emulation computes on lane 0 only (other lanes' fragments are never read), and checks the WMMA
// rules: 256-bit aligned pointer, ldm a multiple of 16 bytes.
inline bool emu_lane0() { return (threadIdx.x & 31u) == 0u; }
inline void emu_check(const void* p, unsigned ldm, unsigned elem) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) g_emu_error |= 1;
  if ((ldm * elem) % 16 != 0 || ldm < 16) g_emu_error |= 2;
}
template <class Use, class L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, __half, L>& f, const __half* p, unsigned ldm) {
  emu_check(p, ldm, 2);
  if (!emu_lane0()) return;
  constexpr bool row = std::is_same<L, row_major>::value;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.v[r * 16 + c] = float(row ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]);
}
template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, __half, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, __half, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  if (!emu_lane0()) return;
  float t[256];
  for (int r = 0; r < 16; ++r)
    for (int q = 0; q < 16; ++q) {
      float s = c.v[r * 16 + q];
      for (int k = 0; k < 16; ++k) s += a.v[r * 16 + k] * b.v[k * 16 + q];
      t[r * 16 + q] = s;
    }
  std::memcpy(d.v, t, sizeof(t));
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) { for (float& e : f.v) e = v; }
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  emu_check(p, ldm, 4);
  if (!emu_lane0()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      (layout == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r]) = f.v[r * 16 + c];
}
}}  // namespace nvcuda::wmma
"""

_HARNESS = r"""
#include "emu_runtime.h"
#include <type_traits>
#include "%(cu)s"
template <class F> static void emu_launch(int grid, int block, F&& f) {
  for (int b = 0; b < grid; ++b) {
    std::barrier<> bar(block);
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    for (int w = 0; w < block / 32; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
    EmuBlock eb{&bar, &warps};
    g_emu = &eb;
    std::vector<std::thread> ts;
    for (int t = 0; t < block; ++t) ts.emplace_back([&f, t, b] { threadIdx.x = t; blockIdx.x = b; f(); });
    for (auto& t : ts) t.join();
  }
}
#define EMU_CASE(W, KERNEL, ...) case W: emu_launch(grid, 2 * W, [&] { KERNEL##W(__VA_ARGS__); }); break;
extern "C" int emu_forward(int width, int grid, const void* x, const void* w, const float* b, float* out, void* acts,
                           int batch, int in_pad, int out_pad, int n_hidden, int act) {
  g_emu_error = 0;
  const __half* X = (const __half*)x; const __half* Wt = (const __half*)w; __half* A = (__half*)acts;
  switch (width) {
    EMU_CASE(16, fused_mlp_forward_w, X, Wt, b, out, A, batch, in_pad, out_pad, n_hidden, act)
    EMU_CASE(32, fused_mlp_forward_w, X, Wt, b, out, A, batch, in_pad, out_pad, n_hidden, act)
    EMU_CASE(64, fused_mlp_forward_w, X, Wt, b, out, A, batch, in_pad, out_pad, n_hidden, act)
    EMU_CASE(128, fused_mlp_forward_w, X, Wt, b, out, A, batch, in_pad, out_pad, n_hidden, act)
    default: return -1;
  }
  return g_emu_error;
}
extern "C" int emu_backward(int width, int grid, const void* dout, const void* w, const void* acts, void* dz,
                            float* dx, int batch, int in_pad, int out_pad, int n_hidden, int act) {
  g_emu_error = 0;
  const __half* D = (const __half*)dout; const __half* Wt = (const __half*)w; const __half* A = (const __half*)acts;
  __half* Z = (__half*)dz;
  switch (width) {
    EMU_CASE(16, fused_mlp_backward_w, D, Wt, A, Z, dx, batch, in_pad, out_pad, n_hidden, act)
    EMU_CASE(32, fused_mlp_backward_w, D, Wt, A, Z, dx, batch, in_pad, out_pad, n_hidden, act)
    EMU_CASE(64, fused_mlp_backward_w, D, Wt, A, Z, dx, batch, in_pad, out_pad, n_hidden, act)
    EMU_CASE(128, fused_mlp_backward_w, D, Wt, A, Z, dx, batch, in_pad, out_pad, n_hidden, act)
    default: return -1;
  }
  return g_emu_error;
}
"""


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """The CUDA C kernels compiled as host C++ against the emulation above (skip without g++ 10+)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not on PATH")
    d = tmp_path_factory.mktemp("fmlp_emu")
    (d / "emu_runtime.h").write_text(_SHIM_RUNTIME)
    (d / "cuda_fp16.h").write_text(_SHIM_FP16)
    (d / "mma.h").write_text(_SHIM_MMA)
    (d / "harness.cpp").write_text(_HARNESS % {"cu": CU})
    so = d / "fmlp_emu.so"
    r = subprocess.run([gxx, "-std=c++20", "-O2", "-fno-strict-aliasing", "-pthread", "-shared", "-fPIC",
                        f"-I{d}", KERNEL_INCLUDE, str(d / "harness.cpp"), "-o", str(so)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and ("_Float16" in r.stderr or "barrier" in r.stderr):
        pytest.skip(f"g++ lacks C++20 <barrier> or _Float16: {r.stderr[:300]}")
    assert r.returncode == 0, r.stderr
    lib = ctypes.CDLL(str(so))
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.emu_forward.argtypes = [I, I, P, P, P, P, P, I, I, I, I, I]
    lib.emu_backward.argtypes = [I, I, P, P, P, P, P, I, I, I, I, I]
    return lib


def _ptr(a):
    return None if a is None else a.ctypes.data


def _aligned(a, align: int = 256):
    """A copy of ``a`` whose data starts on an ``align``-byte boundary (as CUDA allocations do; NumPy
    only promises 16 bytes, and WMMA needs 32)."""
    a = np.ascontiguousarray(a)
    buf = np.empty(a.nbytes + align, np.uint8)
    off = (-buf.ctypes.data) % align
    out = buf[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _packed_case(rng, width, in_f, out_f, H, B):
    in_pad, out_pad = fm.pad16(in_f), fm.pad16(out_f)
    ws, bs = _params(rng, [in_f] + [width] * H + [out_f])
    wcat, bcat = fm.pack_params(np, ws, bs, width, in_pad, out_pad)
    x = np.zeros((B, in_pad), np.float16)
    x[:, :in_f] = rng.standard_normal((B, in_f))
    return ws, bs, _aligned(wcat), _aligned(bcat), _aligned(x), in_pad, out_pad


@pytest.mark.parametrize("width,in_f,out_f,H,act", [
    (16, 5, 3, 2, "relu"),
    (32, 48, 40, 3, "tanh"),     # input and output wider than the hidden width: column loops
    (64, 64, 16, 2, "sigmoid"),
    (128, 20, 10, 2, "relu"),
])
def test_cuda_c_kernels_match_reference_in_host_emulation(emu, width, in_f, out_f, H, act):
    rng = np.random.default_rng(width + H)
    B = 2 * fm.ROWS
    ws, bs, wcat, bcat, x, in_pad, out_pad = _packed_case(rng, width, in_f, out_f, H, B)
    a = fm.ACTIVATIONS[act]
    out = _aligned(np.empty((B, out_pad), np.float32))
    acts = _aligned(np.empty((H, B, width), np.float16))
    assert emu.emu_forward(width, B // fm.ROWS, _ptr(x), _ptr(wcat), _ptr(bcat), _ptr(out), _ptr(acts), B, in_pad,
                           out_pad, H, a) == 0, "WMMA alignment / leading-dimension rule broken"
    ref_out, ref_acts = fm.reference_forward(x, wcat, bcat, width, in_pad, out_pad, H, a)
    assert _rel(out, ref_out) < 2e-3 and _rel(acts, ref_acts) < 2e-3
    # forward without saving activations (inference) gives the same output
    out2 = _aligned(np.empty_like(out))
    assert emu.emu_forward(width, B // fm.ROWS, _ptr(x), _ptr(wcat), _ptr(bcat), _ptr(out2), None, B, in_pad,
                           out_pad, H, a) == 0
    np.testing.assert_array_equal(out2, out)
    # and it approximates the float64 network
    assert _rel(out[:, :out_f], _ref_mlp64(x[:, :in_f], ws, bs, act)) < 1e-2

    dout = _aligned((rng.standard_normal((B, out_pad)) * 100).astype(np.float16))
    dz = _aligned(np.empty((H, B, width), np.float16))
    dx = _aligned(np.empty((B, in_pad), np.float32))
    assert emu.emu_backward(width, B // fm.ROWS, _ptr(dout), _ptr(wcat), _ptr(acts), _ptr(dz), _ptr(dx), B, in_pad,
                            out_pad, H, a) == 0
    ref_dz, ref_dx = fm.reference_backward(dout, wcat, acts, width, in_pad, out_pad, H, a)
    assert _rel(dz, ref_dz) < 2e-3 and _rel(dx, ref_dx) < 2e-3
    dz2 = _aligned(np.empty_like(dz))
    assert emu.emu_backward(width, B // fm.ROWS, _ptr(dout), _ptr(wcat), _ptr(acts), _ptr(dz2), None, B, in_pad,
                            out_pad, H, a) == 0
    np.testing.assert_array_equal(dz2, dz)


def test_host_emulation_detects_a_misaligned_operand(emu):
    # the harness really checks the WMMA rules: an input pointer off by 2 bytes is reported
    rng = np.random.default_rng(0)
    B = fm.ROWS
    ws, bs, wcat, bcat, x, in_pad, out_pad = _packed_case(rng, 16, 16, 16, 1, B)
    buf = _aligned(np.zeros(x.size + 16, np.float16))
    xs = buf[1:1 + x.size]  # 2 bytes past a 256-byte boundary
    xs[:] = x.ravel()
    out = _aligned(np.empty((B, out_pad), np.float32))
    assert emu.emu_forward(16, 1, _ptr(xs), _ptr(wcat), _ptr(bcat), _ptr(out), None, B, in_pad, out_pad, 1, 1) & 1


# ---------------------------------------------------------------- the NumPy reference
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_reference_approximates_float64_mlp(act):
    rng = np.random.default_rng(1)
    width, in_f, out_f, H, B = 64, 30, 10, 4, 256
    ws, bs, wcat, bcat, x, in_pad, out_pad = _packed_case(rng, width, in_f, out_f, H, B)
    a = fm.ACTIVATIONS[act]
    out, acts = fm.reference_forward(x, wcat, bcat, width, in_pad, out_pad, H, a)
    assert out.dtype == np.float32 and acts.dtype == np.float16
    ref = _ref_mlp64(x[:, :in_f], ws, bs, act)
    assert _rel(out[:, :out_f], ref) < 1e-2
    # exact mode: the same algorithm without rounding equals the float64 network
    o64, _ = fm.reference_forward(x, wcat.astype(np.float64), bcat.astype(np.float64), width, in_pad, out_pad, H, a,
                                  exact=True)
    w64, b64 = fm.pack_params(np, ws, bs, width, in_pad, out_pad, np.float64, np.float64)
    o64, _ = fm.reference_forward(x.astype(np.float64), w64, b64, width, in_pad, out_pad, H, a, exact=True)
    np.testing.assert_allclose(o64[:, :out_f], _ref_mlp64(x[:, :in_f].astype(np.float64), ws, bs, act), rtol=1e-12,
                               atol=1e-12)


def test_reference_rounds_like_the_kernel():
    # one layer by hand: fp16 inputs and weights, fp32 sums, fp32 bias, fp16 activation
    x = np.array([[1.0009765625, -2.0] + [0.0] * 14], np.float16)  # 1 + 2**-10 is exact in fp16
    x = np.repeat(x, 1, 0)
    w0 = np.zeros((16, 16))
    w0[0, 0], w0[0, 1] = 3.0001, 0.5   # 3.0001 rounds to 3.0 in fp16
    wH = np.eye(16)
    wcat, bcat = fm.pack_params(np, [w0, wH], [np.full(16, 0.1), np.zeros(16)], 16, 16, 16)
    out, acts = fm.reference_forward(x, wcat, bcat, 16, 16, 16, 1, 1)
    z = np.float32(np.float32(1.0009765625) * np.float32(3.0) + np.float32(-2.0) * np.float32(0.5)) + np.float32(0.1)
    assert acts[0, 0, 0] == np.float16(z)
    assert out[0, 0] == np.float32(np.float16(z))


def test_grad_scale_is_a_power_of_two_bringing_max_near_256():
    for m in (3e-9, 1e-3, 0.7, 5.0, 1e4):
        g = np.array([[m, -m / 3]], np.float32)
        s = float(fm.grad_scale(np, g))
        assert np.log2(s) == int(np.log2(s))
        assert 128 < s * m <= 256
    assert float(fm.grad_scale(np, np.zeros((2, 2), np.float32))) == 2.0 ** 40


# ---------------------------------------------------------------- autograd plumbing
def _tensors(ws, bs, dtype, requires_grad=True):
    return ([gg.tensor(w, dtype=dtype, requires_grad=requires_grad) for w in ws],
            [gg.tensor(b, dtype=dtype, requires_grad=requires_grad) for b in bs])


def test_gradcheck_exact_mode():
    # padding (in 5 -> 16, out 3 -> 16, batch 7 -> 128), loss scale, dz chain, weight/bias/input grads
    rng = np.random.default_rng(2)
    ws, bs = _params(rng, [5, 16, 16, 3])
    wt, bt = _tensors(ws, bs, gg.float64)
    x = gg.tensor(rng.standard_normal((7, 5)), dtype=gg.float64, requires_grad=True)
    assert gg.autograd.gradcheck(lambda x, *p: fmn.fused_mlp(x, p[0::2], p[1::2], "tanh", impl="exact"),
                                 [x] + [t for pair in zip(wt, bt) for t in pair])


def test_reference_impl_gradients_match_float64_mlp():
    rng = np.random.default_rng(3)
    sizes = [20, 32, 32, 32, 10]
    ws, bs = _params(rng, sizes)
    xn = rng.standard_normal((300, 20))
    yn = rng.standard_normal((300, 10))
    # float64 autograd through the ordinary ops
    w64, b64 = _tensors(ws, bs, gg.float64)
    h = gg.tensor(xn, dtype=gg.float64, requires_grad=True)
    x64 = h
    for w, b in zip(w64[:-1], b64[:-1]):
        h = gg.nn.functional.fused_linear(h, w, b, "relu")
    out = gg.nn.functional.linear(h, w64[-1], b64[-1])
    gg.nn.functional.mse_loss(out, gg.tensor(yn, dtype=gg.float64)).backward()
    # the kernels' emulation (float16 rounding, mean loss over 300 rows: tiny gradients, scaled inside)
    w32, b32 = _tensors(ws, bs, gg.float32)
    x32 = gg.tensor(xn, dtype=gg.float32, requires_grad=True)
    o = fmn.fused_mlp(x32, w32, b32, "relu", impl="reference")
    assert o.dtype == gg.float32 and o.shape == (300, 10)
    assert _rel(o.numpy(), out.numpy()) < 1e-2
    gg.nn.functional.mse_loss(o, gg.tensor(yn, dtype=gg.float32)).backward()
    # Gradients lose more than the output: every layer's float16 rounding (weights, dz) is amplified by
    # the cancellation in the backward sums; ~1-3% for the first layers here (PyTorch autocast alike).
    for a, b in zip(w32 + b32 + [x32], w64 + b64 + [x64]):
        assert a.grad.dtype == gg.float32
        assert _rel(a.grad.numpy(), b.grad.numpy()) < 5e-2, (a.shape, _rel(a.grad.numpy(), b.grad.numpy()))
    # the output layer's gradients see one rounding only
    assert _rel(w32[-1].grad.numpy(), w64[-1].grad.numpy()) < 1e-2


def test_fused_mlp_module_matches_mlp_parameters_and_falls_back_on_cpu():
    gg.manual_seed(0)
    m = fmn.FusedMLP([10, 32, 32, 4])
    gg.manual_seed(0)
    ref = nn.MLP([10, 32, 32, 4])
    assert list(m.state_dict()) == list(ref.state_dict())
    for (k, a), (_, b) in zip(m.state_dict().items(), ref.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = gg.randn(6, 10)
    np.testing.assert_allclose(m(x).numpy(), ref(x).numpy(), rtol=1e-6)  # CPU: the normal path
    ws, bs = m.layers()
    out = fmn.fused_mlp(x, ws, bs, "relu")  # auto on CPU = reference emulation
    assert _rel(out.numpy(), ref(x).numpy()) < 1e-2


def test_errors():
    with pytest.raises(ValueError, match="hidden widths"):
        fmn.FusedMLP([10, 32, 64, 4])
    with pytest.raises(ValueError, match="one of"):
        fmn.FusedMLP([10, 48, 48, 4])
    with pytest.raises(ValueError, match="activation"):
        fmn.FusedMLP([10, 32, 4], activation="gelu")
    m = fmn.FusedMLP([10, 32, 4])
    ws, bs = m.layers()
    with pytest.raises(ValueError, match="does not match the first layer"):
        fmn.fused_mlp(gg.randn(3, 9), ws, bs)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        fmn.fused_mlp(gg.randn(3, 10), ws, bs, impl="cuda")


# ---------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@pytest.mark.parametrize("width", [16, 32, 64, 128])
def test_gpu_kernels_match_reference(width):
    import cupy
    rng = np.random.default_rng(width)
    H, in_f, out_f, B = 3, 24, 10, 4 * fm.ROWS
    ws, bs, wcat, bcat, x, in_pad, out_pad = _packed_case(rng, width, in_f, out_f, H, B)
    a = fm.ACTIVATIONS["relu"]
    out, acts = fm.cuda_forward(cupy.asarray(x), cupy.asarray(wcat), cupy.asarray(bcat), width, in_pad, out_pad, H,
                                 a, True)
    ref_out, ref_acts = fm.reference_forward(x, wcat, bcat, width, in_pad, out_pad, H, a)
    assert _rel(out.get(), ref_out) < 2e-3 and _rel(acts.get(), ref_acts) < 2e-3
    assert _rel(out.get()[:, :out_f], _ref_mlp64(x[:, :in_f], ws, bs, "relu")) < 1e-2
    dout = (rng.standard_normal((B, out_pad)) * 100).astype(np.float16)
    dz, dx = fm.cuda_backward(cupy.asarray(dout), cupy.asarray(wcat), acts, width, in_pad, out_pad, H, a, True)
    ref_dz, ref_dx = fm.reference_backward(dout, wcat, acts.get(), width, in_pad, out_pad, H, a)
    assert _rel(dz.get(), ref_dz) < 2e-3 and _rel(dx.get(), ref_dx) < 2e-3
    g = fm.gemm_tn_f32(dz[0], cupy.asarray(x))
    np.testing.assert_allclose(g.get(), dz[0].get().astype(np.float32).T @ x.astype(np.float32), rtol=1e-3, atol=1e-2)


@pytest.mark.gpu
def test_gpu_fused_mlp_module_gradients_match_float64_cpu():
    rng = np.random.default_rng(5)
    gg.manual_seed(0)
    m = fmn.FusedMLP([20, 64, 64, 64, 10]).to("cuda")
    ref = nn.MLP([20, 64, 64, 64, 10]).to(gg.float64)
    ref.load_state_dict({k: v.cpu().double() for k, v in m.state_dict().items()})
    emu = fmn.FusedMLP([20, 64, 64, 64, 10])
    emu.load_state_dict({k: v.cpu() for k, v in m.state_dict().items()})
    xn, yn = rng.standard_normal((1000, 20)), rng.standard_normal((1000, 10))
    out = m(gg.tensor(xn, dtype=gg.float32, device="cuda"))
    gg.nn.functional.mse_loss(out, gg.tensor(yn, dtype=gg.float32, device="cuda")).backward()
    o64 = ref(gg.tensor(xn, dtype=gg.float64))
    gg.nn.functional.mse_loss(o64, gg.tensor(yn, dtype=gg.float64)).backward()
    ws, bs = emu.layers()
    oe = fmn.fused_mlp(gg.tensor(xn, dtype=gg.float32), ws, bs, "relu", impl="reference")
    gg.nn.functional.mse_loss(oe, gg.tensor(yn, dtype=gg.float32)).backward()
    assert _rel(out.numpy(), o64.numpy()) < 1e-2
    assert _rel(out.numpy(), oe.numpy()) < 2e-3
    for (k, p), (_, q), (_, e) in zip(m.named_parameters(), ref.named_parameters(), emu.named_parameters()):
        assert _rel(p.grad.numpy(), e.grad.numpy()) < 5e-3, k   # the kernels do what the emulation does
        assert _rel(p.grad.numpy(), q.grad.numpy()) < 5e-2, k   # float16 chain vs float64 (see CPU test)


# ---------------------------------------------------------------- cuBLASLt epilogue path (emulated on CPU)
@pytest.mark.parametrize("act", ["relu", "gelu_tanh"])
def test_epilogue_mlp_gradcheck(act):
    rng = np.random.default_rng(7)
    ws, bs = _params(rng, [4, 6, 5, 3])
    wt, bt = _tensors(ws, bs, gg.float64)
    x = gg.tensor(rng.standard_normal((9, 4)), dtype=gg.float64, requires_grad=True)
    assert gg.autograd.gradcheck(lambda x, *p: em.epilogue_mlp(x, p[0::2], p[1::2], act),
                                 [x] + [t for pair in zip(wt, bt) for t in pair])


@pytest.mark.parametrize("act", ["relu", "gelu_tanh"])
def test_epilogue_mlp_matches_kernel_path(act):
    # the epilogue bookkeeping (feature-major GEMMs, cross-layer DRELU/DGELU_BGRAD, BGRADA) gives what
    # the ordinary fused_linear path gives
    rng = np.random.default_rng(8)
    sizes = [12, 16, 16, 16, 5]
    ws, bs = _params(rng, sizes)
    xn, yn = rng.standard_normal((40, 12)), rng.standard_normal((40, 5))
    res = []
    for use_epilogue in (True, False):
        wt, bt = _tensors(ws, bs, gg.float64)
        x = gg.tensor(xn, dtype=gg.float64, requires_grad=True)
        if use_epilogue:
            out = em.epilogue_mlp(x, wt, bt, act)
        else:
            h = x
            for w, b in zip(wt[:-1], bt[:-1]):
                h = gg.nn.functional.fused_linear(h, w, b, act)
            out = gg.nn.functional.linear(h, wt[-1], bt[-1])
        gg.nn.functional.mse_loss(out, gg.tensor(yn, dtype=gg.float64)).backward()
        res.append([out.numpy()] + [t.grad.numpy() for t in wt + bt + [x]])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_epilogue_mlp_is_opt_in_by_model():
    from gpugrad.experimental import EpilogueMLP
    m = nn.MLP([4, 8, 3])
    assert em.epilogue_mlp_forward(m, gg.randn(2, 4)) is None  # CPU: the normal path
    e = EpilogueMLP([4, 8, 3])
    e.load_state_dict(m.state_dict())
    x = gg.randn(5, 4)
    np.testing.assert_array_equal(e(x).numpy(), m(x).numpy())  # CPU: nn.MLP's path, same parameters
    with pytest.raises(ValueError, match="gelu_tanh"):
        em.epilogue_mlp(gg.randn(2, 4), [m.blocks[0].linear.weight, m.head.weight],
                        [m.blocks[0].linear.bias, m.head.bias], "gelu")


@pytest.mark.gpu
@pytest.mark.parametrize("act", ["relu", "gelu_tanh"])
def test_gpu_epilogue_mlp_matches_kernel_path(act):
    from gpugrad.experimental import epilogue_kernels as E
    if not E.available()[0]:
        pytest.skip(E.available()[1])
    rng = np.random.default_rng(9)
    sizes = [64, 256, 256, 256, 32]
    ws, bs = _params(rng, sizes)
    xn, yn = rng.standard_normal((512, 64)), rng.standard_normal((512, 32))
    res = []
    for use_epilogue in (True, False):
        wt = [gg.tensor(w, dtype=gg.float32, device="cuda", requires_grad=True) for w in ws]
        bt = [gg.tensor(b, dtype=gg.float32, device="cuda", requires_grad=True) for b in bs]
        x = gg.tensor(xn, dtype=gg.float32, device="cuda", requires_grad=True)
        if use_epilogue:
            out = em.epilogue_mlp(x, wt, bt, act)
        else:
            h = x
            for w, b in zip(wt[:-1], bt[:-1]):
                h = gg.nn.functional.fused_linear(h, w, b, act)
            out = gg.nn.functional.linear(h, wt[-1], bt[-1])
        gg.nn.functional.mse_loss(out, gg.tensor(yn, dtype=gg.float32, device="cuda")).backward()
        res.append([out.numpy()] + [t.grad.numpy() for t in wt + bt + [x]])
    for a, b in zip(*res):
        assert _rel(a, b) < 1e-4
    # and the per-layer fallback that unpacks cuBLASLt's aux agrees with the fused backward
    import cupy
    x = cupy.asarray(xn, dtype=cupy.float32)
    w = cupy.asarray(ws[0], dtype=cupy.float32)
    b = cupy.asarray(bs[0], dtype=cupy.float32)
    y, aux = E.linear_act_forward(x, w, b, act)
    dy = cupy.asarray(rng.standard_normal(y.shape), dtype=cupy.float32)
    dz, db = E.act_bias_backward(dy, aux, act, True)
    z = x @ w.T + b
    ref_dz = dy * (z > 0) if act == "relu" else None
    if ref_dz is not None:
        assert _rel(dz.get(), ref_dz.get()) < 1e-5 and _rel(db.get(), ref_dz.sum(0).get()) < 1e-5
