// gpugrad fused kernels in CUDA C: the same algorithms as the Numba kernels in gpugrad/kernels/*.py
// (bias_act.py, act_bias_grad.py, softmax_xent.py), for the "cuda_c" kernel set. The optimizer
// kernels are generated from gpugrad/kernels/optim_rules.py (optim_codegen.py), not written here.
// Loaded at run time with cupy.RawModule (NVRTC; activations.cuh is spliced into the text, so NVRTC needs
// no include path), compiled with `nvcc -arch=sm_90 -c` by tests/test_nvcc.py when nvcc is on PATH.
// Entry points are extern "C" and suffixed by the storage type: _f32, _f64, _f16.
// Activation codes and formulas come from the generated activations.cuh (gpugrad/kernels/activations.py).
// float16 data is stored as unsigned short and computed in float32.

typedef unsigned short f16_t;
typedef long long i64;

__device__ __forceinline__ float h2f(f16_t h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ f16_t f2h(float f) {
    f16_t h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}

template <typename T> struct Num;
template <> struct Num<float> {
    typedef float C;
    static __device__ __forceinline__ float load(float x) { return x; }
    static __device__ __forceinline__ float store(float x) { return x; }
};
template <> struct Num<double> {
    typedef double C;
    static __device__ __forceinline__ double load(double x) { return x; }
    static __device__ __forceinline__ double store(double x) { return x; }
};
template <> struct Num<f16_t> {
    typedef float C;
    static __device__ __forceinline__ float load(f16_t x) { return h2f(x); }
    static __device__ __forceinline__ f16_t store(float x) { return f2h(x); }
};

__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float neg_inf(float) { return __int_as_float(0xff800000); }
__device__ __forceinline__ double neg_inf(double) { return __longlong_as_double(0xfff0000000000000ULL); }

#include "activations.cuh"  // act_fwd / act_deriv, the activation codes and GG_ACT_PARAMS, generated
using gg_act::act_deriv;
using gg_act::act_fwd;

// ------------------------------------------------------------------ bias + activation forward
// Layout of the elementwise kernels: grid (ceil(N / blockDim.x), gy), 1-D blocks; a thread owns column
// c = blockIdx.x * blockDim.x + threadIdx.x (coalesced) and strides over rows by gridDim.y (the bias
// stays in a register).
template <typename T>
__device__ void bias_act_impl(T* z, const T* b, T* y, i64 M, i64 N, int has_bias, int write_z, int code,
                              GG_ACT_PARAMS(typename Num<T>::C)) {
    typedef typename Num<T>::C C;
    const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= N) return;
    const C bc = has_bias ? Num<T>::load(b[c]) : C(0);
    for (i64 r = blockIdx.y; r < M; r += gridDim.y) {
        const i64 i = r * N + c;
        C v = Num<T>::load(z[i]);
        if (has_bias) v += bc;
        if (write_z) z[i] = Num<T>::store(v);
        y[i] = Num<T>::store(act_fwd<C>(v, code, GG_ACT_ARGS));
    }
}

template <typename T>
__device__ void act_bwd_impl(const T* dy, const T* s, T* dz, i64 M, i64 N, int code, int order,
                             GG_ACT_PARAMS(typename Num<T>::C)) {
    typedef typename Num<T>::C C;
    const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= N) return;
    for (i64 r = blockIdx.y; r < M; r += gridDim.y) {
        const i64 i = r * N + c;
        dz[i] = Num<T>::store(act_deriv<C>(Num<T>::load(dy[i]), Num<T>::load(s[i]), code, order, GG_ACT_ARGS));
    }
}

// ------------------------------------------------------------------ activation backward + bias gradient
// blockDim = (ABG_TX, ABG_TY); grid = (ceil(N / ABG_TX), row_blocks); block y walks rows
// [blockIdx.y * rows_per_block, +rows_per_block) and writes partial[blockIdx.y, col]. No atomics.
#define ABG_TX 32
#define ABG_TY 8

template <typename T>
__device__ void act_bias_grad_impl(const T* dy, const T* s, T* dz, typename Num<T>::C* partial, i64 M, i64 N,
                                   i64 rows_per_block, int write_dz, int do_bias, int code, int order,
                                   GG_ACT_PARAMS(typename Num<T>::C)) {
    typedef typename Num<T>::C C;
    __shared__ C sm[ABG_TY][ABG_TX];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const i64 col = (i64)blockIdx.x * ABG_TX + tx;
    const i64 r0 = (i64)blockIdx.y * rows_per_block;
    i64 r1 = r0 + rows_per_block;
    if (r1 > M) r1 = M;
    C acc = C(0);
    if (col < N) {
        for (i64 r = r0 + ty; r < r1; r += ABG_TY) {
            const i64 i = r * N + col;
            C g = act_deriv<C>(Num<T>::load(dy[i]), Num<T>::load(s[i]), code, order, GG_ACT_ARGS);
            if (write_dz) dz[i] = Num<T>::store(g);
            acc += g;
        }
    }
    if (do_bias) {
        sm[ty][tx] = acc;
        __syncthreads();
        if (ty == 0 && col < N) {
            C tot = C(0);
#pragma unroll
            for (int j = 0; j < ABG_TY; ++j) tot += sm[j][tx];
            partial[(i64)blockIdx.y * N + col] = tot;
        }
    }
}

template <typename T>
__device__ void colsum_impl(const typename Num<T>::C* partial, T* out, i64 R, i64 N) {
    typedef typename Num<T>::C C;
    const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (c < N) {
        C t = C(0);
        for (i64 j = 0; j < R; ++j) t += partial[j * N + c];
        out[c] = Num<T>::store(t);
    }
}

// ------------------------------------------------------------------ softmax + cross-entropy
// One block per row (grid-stride), blockDim.x a power of two <= 256: the reduction below halves the block and
// holds one partial result per thread in sm_m[256] / sm_s[256] (cuda_c.py checks the block it launches).
template <typename T>
__device__ void softmax_xent_fwd_impl(const T* x, const i64* t, T* loss, T* probs, i64 M, i64 Cn, i64 ignore,
                                      i64* err, int check) {
    typedef typename Num<T>::C C;
    __shared__ C sm_m[256];
    __shared__ C sm_s[256];
    const int tid = threadIdx.x, bs = blockDim.x;
    const C NEG_INF = neg_inf(C(0)), ZERO = C(0), ONE = C(1);
    for (i64 r = blockIdx.x; r < M; r += gridDim.x) {
        const T* row = x + r * Cn;
        C m = NEG_INF, s = ZERO;
        for (i64 j = tid; j < Cn; j += bs) {
            C v = Num<T>::load(row[j]);
            if (v > m) { s = s * m_exp(m - v) + ONE; m = v; }
            else if (m > NEG_INF || v != v) s += m_exp(v - m);
        }
        sm_m[tid] = m;
        sm_s[tid] = s;
        __syncthreads();
        for (int step = bs / 2; step > 0; step /= 2) {
            if (tid < step) {
                C m1 = sm_m[tid], m2 = sm_m[tid + step];
                C mm = m1 > m2 ? m1 : m2;
                if (mm > NEG_INF) sm_s[tid] = sm_s[tid] * m_exp(m1 - mm) + sm_s[tid + step] * m_exp(m2 - mm);
                else sm_s[tid] = sm_s[tid] + sm_s[tid + step];
                sm_m[tid] = mm;
            }
            __syncthreads();
        }
        const C mx = sm_m[0], tot = sm_s[0];
        const C inv = ONE / tot;
        T* prow = probs + r * Cn;
        for (i64 j = tid; j < Cn; j += bs) prow[j] = Num<T>::store(m_exp(Num<T>::load(row[j]) - mx) * inv);
        if (tid == 0) {
            const i64 tt = t[r];
            if (tt == ignore || tt < 0 || tt >= Cn) {
                loss[r] = Num<T>::store(ZERO);
                // out-of-range target: fold it into the lazy error record [min bad, max bad]
                if (check && tt != ignore) { atomicMin(&err[0], tt); atomicMax(&err[1], tt); }
            }
            else loss[r] = Num<T>::store(m_log(tot) - (Num<T>::load(row[tt]) - mx));
        }
        __syncthreads();
    }
}

template <typename T>
__device__ void softmax_xent_bwd_impl(const T* p, const i64* t, const T* g, i64 g_stride,
                                      typename Num<T>::C mul, i64 ignore, typename Num<T>::C eps_over_c,
                                      typename Num<T>::C one_minus_eps, T* d, i64 M, i64 Cn) {
    typedef typename Num<T>::C C;
    const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;  // same layout as bias_act
    if (j >= Cn) return;
    for (i64 r = blockIdx.y; r < M; r += gridDim.y) {
        const i64 i = r * Cn + j;
        const i64 tt = t[r];
        if (tt == ignore) { d[i] = Num<T>::store(C(0)); continue; }
        C v = Num<T>::load(p[i]) - eps_over_c;
        if (j == tt) v -= one_minus_eps;
        d[i] = Num<T>::store(v * (Num<T>::load(g[r * g_stride]) * mul));
    }
}

// ------------------------------------------------------------------ gather (multi-tensor copy)
// Copies up to GG_GATHER_MAX arrays into consecutive ranges of one flat buffer in one launch (the
// optimizers' gradient gather). The table of source pointers and destination offsets is a kernel argument,
// passed by value (as PyTorch's multi_tensor_apply passes its TensorListMetadata): no device-side table,
// so no host-to-device copy per call, and a captured CUDA graph keeps the table of its capture.
// grid = (gx, n): block row y copies array y (grid-stride in x), any gx >= 1; 1-D blocks of any size.
#define GG_GATHER_MAX 128
struct GatherTable {
    const void* src[GG_GATHER_MAX];
    i64 start[GG_GATHER_MAX + 1];  // array y goes to out[start[y], start[y + 1])
};

template <typename T>
__device__ void gather_impl(const GatherTable& t, T* out) {
    const int a = blockIdx.y;
    const T* src = static_cast<const T*>(t.src[a]);
    const i64 s = t.start[a], n = t.start[a + 1] - s;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
        out[s + i] = src[i];
}

// ------------------------------------------------------------------ extern "C" entry points
#define GG_ENTRY_POINTS(SUF, T, C)                                                                            \
extern "C" __global__ void bias_act_##SUF(T* z, const T* b, T* y, i64 M, i64 N, int has_bias, int write_z,    \
                                          int code, GG_ACT_PARAMS(C)) {                                       \
    bias_act_impl<T>(z, b, y, M, N, has_bias, write_z, code, GG_ACT_ARGS); }                                  \
extern "C" __global__ void act_bwd_##SUF(const T* dy, const T* s, T* dz, i64 M, i64 N, int code, int order,   \
                                         GG_ACT_PARAMS(C)) {                                                  \
    act_bwd_impl<T>(dy, s, dz, M, N, code, order, GG_ACT_ARGS); }                                            \
extern "C" __global__ void act_bias_grad_##SUF(const T* dy, const T* s, T* dz, C* partial, i64 M, i64 N,      \
                                               i64 rows_per_block, int write_dz, int do_bias, int code,       \
                                               int order, GG_ACT_PARAMS(C)) {                                 \
    act_bias_grad_impl<T>(dy, s, dz, partial, M, N, rows_per_block, write_dz, do_bias, code, order,           \
                          GG_ACT_ARGS); }                                                                     \
extern "C" __global__ void colsum_##SUF(const C* partial, T* out, i64 R, i64 N) {                             \
    colsum_impl<T>(partial, out, R, N); }                                                                     \
extern "C" __global__ void softmax_xent_fwd_##SUF(const T* x, const i64* t, T* loss, T* probs, i64 M, i64 Cn, \
                                                  i64 ignore, i64* err, int check) {                          \
    softmax_xent_fwd_impl<T>(x, t, loss, probs, M, Cn, ignore, err, check); }                                 \
extern "C" __global__ void softmax_xent_bwd_##SUF(const T* p, const i64* t, const T* g, i64 g_stride, C mul,  \
                                                  i64 ignore, C eps_over_c, C one_minus_eps, T* d, i64 M,     \
                                                  i64 Cn) {                                                   \
    softmax_xent_bwd_impl<T>(p, t, g, g_stride, mul, ignore, eps_over_c, one_minus_eps, d, M, Cn); }        \
extern "C" __global__ void gather_##SUF(GatherTable table, T* out) { gather_impl<T>(table, out); }

GG_ENTRY_POINTS(f32, float, float)
GG_ENTRY_POINTS(f64, double, double)
GG_ENTRY_POINTS(f16, f16_t, float)
