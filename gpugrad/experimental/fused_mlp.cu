// Fully fused MLP for narrow widths (after tiny-cuda-nn): one kernel runs the forward pass of every
// layer of an MLP, one kernel runs the backward pass (input gradients of every layer), with the
// activations of a 128-row tile kept in shared memory between layers and all products on tensor cores
// (nvcuda::wmma 16x16x16, float16 inputs, float32 accumulation).
//
// Network (PyTorch layout, weight (out, in)): h_0 = x (batch, IN), IN a multiple of 16;
//   z_j = h_{j-1} @ W_{j-1}^T + b_{j-1},  h_j = act(z_j)   for j = 1..H   (hidden width W)
//   out = h_H @ W_H^T + b_H                                 (OUT a multiple of 16, float32, no act)
// `weights` holds W_0 (W x IN), W_1..W_{H-1} (W x W), W_H (OUT x W) back to back, float16, row-major;
// `biases` holds b_0..b_{H-1} (W each) and b_H (OUT), float32.
//
// Activations (codes, forward, derivative from the output): the generated activations.cuh; the caller
// passes only those whose derivative needs no slope and comes from the output (activations.FUSED_MLP).
// Exactly what is computed (gpugrad/experimental/fused_mlp_kernels.py has a NumPy copy of it):
//   forward : z = sum_k fp16(h)[k] * fp16(W)[k] in fp32, + b (fp32); h = fp16(act(z)); out = fp32.
//   backward: dout is given in fp16 (already multiplied by a power-of-two loss scale);
//             dh_H = dout @ W_H (fp32 accumulation); dz_l = fp16(act_bwd(dh_l, h_l)) with act' taken
//             from the saved fp16 output h_l; dh_{l-1} = dz_l @ W_{l-1}; dx = dz_1 @ W_0 (fp32).
//   Weight and bias gradients (dz_l^T @ h_{l-1}, sums of dz_l) are GEMMs/reductions done by the caller.
//
// Launch: grid = batch / 128 blocks (the caller pads batch to a multiple of 128), block = 2*W threads
// (W/16 warps; warp w owns output columns [16w, 16w+16) of every hidden layer; output/input-gradient
// columns beyond W are looped over). Static shared memory: 128 x (W+8) halves + 1 KiB per warp.
// Width W is a template parameter: kernels fused_mlp_{forward,backward}_w{16,32,64,128}.
#include <cuda_fp16.h>
#include <mma.h>

#include "activations.cuh"  // gg_act::mlp_act_fwd / mlp_act_bwd and the activation codes, generated

namespace gg_fmlp {

using namespace nvcuda;

constexpr int ROWS = 128;             // batch rows per block
constexpr int N_ITERS = ROWS / 16;    // 16-row fragments per warp
constexpr int SKEW = 8;               // halves of padding per shared-memory row (bank conflicts)

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragAcc;

union Half8 {
  uint4 u;
  __half2 h2[4];
};

// acc[i] = A[16i:16i+16, :] @ B[:, cb-block] for the warp's 16 output columns.
// A: row-major, leading dimension lda (global or shared). B: k-block kb starts at b + kb * b_kstep
// with leading dimension ldb, in layout BLayout.
template <typename BLayout>
__device__ __forceinline__ void warp_gemm(FragAcc (&acc)[N_ITERS], const __half* a, unsigned lda,
                                          const __half* b, unsigned ldb, size_t b_kstep, int k_blocks) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, BLayout> fb;
#pragma unroll
  for (int i = 0; i < N_ITERS; ++i) wmma::fill_fragment(acc[i], 0.0f);
  for (int kb = 0; kb < k_blocks; ++kb) {
    wmma::load_matrix_sync(fb, b + kb * b_kstep, ldb);
#pragma unroll
    for (int i = 0; i < N_ITERS; ++i) {
      wmma::load_matrix_sync(fa, a + (size_t)i * 16 * lda + kb * 16, lda);
      wmma::mma_sync(acc[i], fa, fb, acc[i]);
    }
  }
}

// Hidden-layer epilogue: h = fp16(act(acc + bias)) into the shared tile and (if given) global memory.
// Lane l handles row l/2, columns 8*(l%2)..+8 of each 16x16 fragment (one 16-byte store each).
template <int W>
__device__ __forceinline__ void store_hidden(FragAcc (&acc)[N_ITERS], float* stage, int cb,
                                             const float* __restrict__ bias, int act, __half* tile,
                                             __half* __restrict__ acts_out) {
  constexpr int LDS = W + SKEW;
  const int lane = threadIdx.x & 31;
  const int r = lane >> 1, c0 = (lane & 1) * 8;
  const int col = cb * 16 + c0;
  float bv[8];
#pragma unroll
  for (int t = 0; t < 8; ++t) bv[t] = bias[col + t];
#pragma unroll
  for (int i = 0; i < N_ITERS; ++i) {
    wmma::store_matrix_sync(stage, acc[i], 16, wmma::mem_row_major);
    __syncwarp();
    const int row = i * 16 + r;
    Half8 h;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const float v0 = gg_act::mlp_act_fwd<float>(stage[r * 16 + c0 + 2 * t] + bv[2 * t], act);
      const float v1 = gg_act::mlp_act_fwd<float>(stage[r * 16 + c0 + 2 * t + 1] + bv[2 * t + 1], act);
      h.h2[t] = __floats2half2_rn(v0, v1);
    }
    *reinterpret_cast<uint4*>(tile + row * LDS + col) = h.u;
    if (acts_out != nullptr) *reinterpret_cast<uint4*>(acts_out + (size_t)row * W + col) = h.u;
    __syncwarp();
  }
}

// Output-layer epilogue: out = acc + bias, float32, straight to global memory (leading dim ld).
__device__ __forceinline__ void store_output(FragAcc (&acc)[N_ITERS], float* stage, int cb,
                                             const float* __restrict__ bias, float* __restrict__ out,
                                             int ld) {
  const int lane = threadIdx.x & 31;
  const int r = lane >> 1, c0 = (lane & 1) * 8;
  const int col = cb * 16 + c0;
  float bv[8];
#pragma unroll
  for (int t = 0; t < 8; ++t) bv[t] = bias[col + t];
#pragma unroll
  for (int i = 0; i < N_ITERS; ++i) {
    wmma::store_matrix_sync(stage, acc[i], 16, wmma::mem_row_major);
    __syncwarp();
    const float* s = stage + r * 16 + c0;
    float4* dst = reinterpret_cast<float4*>(out + (size_t)(i * 16 + r) * ld + col);
    dst[0] = make_float4(s[0] + bv[0], s[1] + bv[1], s[2] + bv[2], s[3] + bv[3]);
    dst[1] = make_float4(s[4] + bv[4], s[5] + bv[5], s[6] + bv[6], s[7] + bv[7]);
    __syncwarp();
  }
}

// Backward epilogue: dz = fp16(acc * act'(h)) into the shared tile and global memory.
template <int W>
__device__ __forceinline__ void store_grad(FragAcc (&acc)[N_ITERS], float* stage, int cb, int act,
                                           const __half* __restrict__ h_in, __half* tile,
                                           __half* __restrict__ dz_out) {
  constexpr int LDS = W + SKEW;
  const int lane = threadIdx.x & 31;
  const int r = lane >> 1, c0 = (lane & 1) * 8;
  const int col = cb * 16 + c0;
#pragma unroll
  for (int i = 0; i < N_ITERS; ++i) {
    wmma::store_matrix_sync(stage, acc[i], 16, wmma::mem_row_major);
    __syncwarp();
    const int row = i * 16 + r;
    Half8 y, h;
    y.u = *reinterpret_cast<const uint4*>(h_in + (size_t)row * W + col);
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      const float2 yf = __half22float2(y.h2[t]);
      const float v0 = gg_act::mlp_act_bwd<float>(stage[r * 16 + c0 + 2 * t], yf.x, act);
      const float v1 = gg_act::mlp_act_bwd<float>(stage[r * 16 + c0 + 2 * t + 1], yf.y, act);
      h.h2[t] = __floats2half2_rn(v0, v1);
    }
    *reinterpret_cast<uint4*>(tile + row * LDS + col) = h.u;
    *reinterpret_cast<uint4*>(dz_out + (size_t)row * W + col) = h.u;
    __syncwarp();
  }
}

template <int W>
__device__ __forceinline__ void forward_impl(__half* tile, float* stage_all, const __half* __restrict__ x,
                                             const __half* __restrict__ weights, const float* __restrict__ biases,
                                             float* __restrict__ out, __half* __restrict__ acts, int batch,
                                             int in_pad, int out_pad, int n_hidden, int act) {
  constexpr int NWARPS = W / 16;
  constexpr int LDS = W + SKEW;
  const int warp = threadIdx.x >> 5;
  float* stage = stage_all + warp * 256;
  const size_t row0 = (size_t)blockIdx.x * ROWS;
  FragAcc acc[N_ITERS];

  // layer 0: A straight from global memory (any input width that is a multiple of 16)
  const __half* w = weights;
  warp_gemm<wmma::col_major>(acc, x + row0 * in_pad, in_pad, w + (size_t)warp * 16 * in_pad, in_pad, 16,
                             in_pad / 16);
  store_hidden<W>(acc, stage, warp, biases, act, tile, acts != nullptr ? acts + row0 * W : nullptr);
  __syncthreads();
  w += (size_t)W * in_pad;

  // hidden layers 1..H-1: A from the shared tile, overwritten in place after a barrier
  for (int j = 1; j < n_hidden; ++j) {
    warp_gemm<wmma::col_major>(acc, tile, LDS, w + (size_t)warp * 16 * W, W, 16, NWARPS);
    __syncthreads();
    store_hidden<W>(acc, stage, warp, biases + (size_t)j * W, act, tile,
                    acts != nullptr ? acts + ((size_t)j * batch + row0) * W : nullptr);
    __syncthreads();
    w += (size_t)W * W;
  }

  // output layer: OUT/16 column blocks shared among the warps
  const float* bout = biases + (size_t)n_hidden * W;
  for (int cb = warp; cb < out_pad / 16; cb += NWARPS) {
    warp_gemm<wmma::col_major>(acc, tile, LDS, w + (size_t)cb * 16 * W, W, 16, NWARPS);
    store_output(acc, stage, cb, bout, out + row0 * out_pad, out_pad);
  }
}

template <int W>
__device__ __forceinline__ void backward_impl(__half* tile, float* stage_all, const __half* __restrict__ dout,
                                              const __half* __restrict__ weights, const __half* __restrict__ acts,
                                              __half* __restrict__ dz, float* __restrict__ dx, int batch,
                                              int in_pad, int out_pad, int n_hidden, int act) {
  constexpr int NWARPS = W / 16;
  constexpr int LDS = W + SKEW;
  const int warp = threadIdx.x >> 5;
  float* stage = stage_all + warp * 256;
  const size_t row0 = (size_t)blockIdx.x * ROWS;
  const size_t layer = (size_t)batch * W;  // elements per layer in acts / dz
  FragAcc acc[N_ITERS];

  // W_l for l >= 1 starts at W*IN + (l-1)*W*W; W_H (OUT x W) is the last one.
  const __half* w_out = weights + (size_t)W * in_pad + (size_t)(n_hidden - 1) * W * W;

  // dh_H = dout @ W_H: A from global (OUT wide), B = W_H row-major (OUT x W), ld W
  warp_gemm<wmma::row_major>(acc, dout + row0 * out_pad, out_pad, w_out + warp * 16, W, (size_t)16 * W,
                             out_pad / 16);
  store_grad<W>(acc, stage, warp, act, acts + (size_t)(n_hidden - 1) * layer + row0 * W, tile,
                dz + (size_t)(n_hidden - 1) * layer + row0 * W);
  __syncthreads();

  // dh_l = dz_{l+1} @ W_l for l = H-1 .. 1, then dz_l = dh_l * act'(h_l)
  for (int l = n_hidden - 1; l >= 1; --l) {
    const __half* wl = weights + (size_t)W * in_pad + (size_t)(l - 1) * W * W;
    warp_gemm<wmma::row_major>(acc, tile, LDS, wl + warp * 16, W, (size_t)16 * W, NWARPS);
    __syncthreads();
    store_grad<W>(acc, stage, warp, act, acts + (size_t)(l - 1) * layer + row0 * W, tile,
                  dz + (size_t)(l - 1) * layer + row0 * W);
    __syncthreads();
  }

  // dx = dz_1 @ W_0 (W x IN, row-major, ld IN), float32, stored directly
  if (dx != nullptr) {
    for (int cb = warp; cb < in_pad / 16; cb += NWARPS) {
      warp_gemm<wmma::row_major>(acc, tile, LDS, weights + cb * 16, in_pad, (size_t)16 * in_pad, NWARPS);
#pragma unroll
      for (int i = 0; i < N_ITERS; ++i)
        wmma::store_matrix_sync(dx + (row0 + i * 16) * in_pad + cb * 16, acc[i], in_pad, wmma::mem_row_major);
    }
  }
}

}  // namespace gg_fmlp

#define GG_FUSED_MLP_KERNELS(W)                                                                              \
  extern "C" __global__ void __launch_bounds__(2 * W)                                                        \
      fused_mlp_forward_w##W(const __half* __restrict__ x, const __half* __restrict__ weights,              \
                             const float* __restrict__ biases, float* __restrict__ out,                     \
                             __half* __restrict__ acts, int batch, int in_pad, int out_pad, int n_hidden,   \
                             int act) {                                                                      \
    __shared__ __align__(128) __half tile[gg_fmlp::ROWS * (W + gg_fmlp::SKEW)];                              \
    __shared__ __align__(128) float stage[(W / 16) * 256];                                                   \
    gg_fmlp::forward_impl<W>(tile, stage, x, weights, biases, out, acts, batch, in_pad, out_pad, n_hidden,  \
                             act);                                                                           \
  }                                                                                                          \
  extern "C" __global__ void __launch_bounds__(2 * W)                                                        \
      fused_mlp_backward_w##W(const __half* __restrict__ dout, const __half* __restrict__ weights,          \
                              const __half* __restrict__ acts, __half* __restrict__ dz,                     \
                              float* __restrict__ dx, int batch, int in_pad, int out_pad, int n_hidden,     \
                              int act) {                                                                     \
    __shared__ __align__(128) __half tile[gg_fmlp::ROWS * (W + gg_fmlp::SKEW)];                              \
    __shared__ __align__(128) float stage[(W / 16) * 256];                                                   \
    gg_fmlp::backward_impl<W>(tile, stage, dout, weights, acts, dz, dx, batch, in_pad, out_pad, n_hidden,   \
                              act);                                                                          \
  }

GG_FUSED_MLP_KERNELS(16)
GG_FUSED_MLP_KERNELS(32)
GG_FUSED_MLP_KERNELS(64)
GG_FUSED_MLP_KERNELS(128)
