// Generated from gpugrad/kernels/activations.py (the one definition of every activation): do not edit.
// Regenerate with `python -m gpugrad.kernels.activations`; tests/test_activations.py checks it is current.
#ifndef GPUGRAD_ACTIVATIONS_CUH
#define GPUGRAD_ACTIVATIONS_CUH
namespace gg_act {

enum Code { IDENTITY = 0, RELU = 1, LEAKY_RELU = 2, SIGMOID = 3, TANH = 4, GELU = 5, GELU_TANH = 6 };

__host__ __device__ __forceinline__ float exp_(float x) { return expf(x); }
__host__ __device__ __forceinline__ double exp_(double x) { return exp(x); }
__host__ __device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__host__ __device__ __forceinline__ double tanh_(double x) { return tanh(x); }
__host__ __device__ __forceinline__ float erf_(float x) { return erff(x); }
__host__ __device__ __forceinline__ double erf_(double x) { return erf(x); }

template <typename C>
__host__ __device__ __forceinline__ C fwd_identity(C v, C slope) {
    return v;
}
template <typename C>
__host__ __device__ __forceinline__ C bwd_identity(C dy, C s, C slope) {
    return dy;
}

template <typename C>
__host__ __device__ __forceinline__ C fwd_relu(C v, C slope) {
    return ((v < C(0.0)) ? C(0.0) : v);
}
template <typename C>
__host__ __device__ __forceinline__ C bwd_relu(C dy, C s, C slope) {
    return ((s > C(0.0)) ? dy : C(0.0));
}

template <typename C>
__host__ __device__ __forceinline__ C fwd_leaky_relu(C v, C slope) {
    return ((v > C(0.0)) ? v : (v * slope));
}
template <typename C>
__host__ __device__ __forceinline__ C bwd_leaky_relu(C dy, C s, C slope) {
    return ((s > C(0.0)) ? dy : (dy * slope));
}

template <typename C>
__host__ __device__ __forceinline__ C fwd_sigmoid(C v, C slope) {
    return (C(1.0) / (C(1.0) + exp_((-v))));
}
template <typename C>
__host__ __device__ __forceinline__ C bwd_sigmoid(C dy, C s, C slope) {
    return ((dy * s) * (C(1.0) - s));
}

template <typename C>
__host__ __device__ __forceinline__ C fwd_tanh(C v, C slope) {
    return tanh_(v);
}
template <typename C>
__host__ __device__ __forceinline__ C bwd_tanh(C dy, C s, C slope) {
    return (dy * (C(1.0) - (s * s)));
}

template <typename C>
__host__ __device__ __forceinline__ C fwd_gelu(C v, C slope) {
    return ((C(0.5) * v) * (C(1.0) + erf_((v * C(0.7071067811865475)))));
}
template <typename C>
__host__ __device__ __forceinline__ C bwd_gelu(C dy, C s, C slope) {
    return (dy * ((C(0.5) * (C(1.0) + erf_((s * C(0.7071067811865475))))) + (s * (exp_(((C(-0.5) * s) * s)) * C(0.3989422804014327)))));
}

template <typename C>
__host__ __device__ __forceinline__ C fwd_gelu_tanh(C v, C slope) {
    return ((C(0.5) * v) * (C(1.0) + tanh_((C(0.7978845608028654) * (v + (((C(0.044715) * v) * v) * v))))));
}
template <typename C>
__host__ __device__ __forceinline__ C bwd_gelu_tanh(C dy, C s, C slope) {
    const C t0 = tanh_((C(0.7978845608028654) * (s + (((C(0.044715) * s) * s) * s))));
    return (dy * ((C(0.5) * (C(1.0) + t0)) + ((((C(0.5) * s) * (C(1.0) - (t0 * t0))) * C(0.7978845608028654)) * (C(1.0) + ((C(0.134145) * s) * s)))));
}

template <typename C>
__host__ __device__ __forceinline__ C act_fwd(C v, int code, C slope) {
    switch (code) {
    case RELU: return fwd_relu<C>(v, slope);
    case LEAKY_RELU: return fwd_leaky_relu<C>(v, slope);
    case SIGMOID: return fwd_sigmoid<C>(v, slope);
    case TANH: return fwd_tanh<C>(v, slope);
    case GELU: return fwd_gelu<C>(v, slope);
    case GELU_TANH: return fwd_gelu_tanh<C>(v, slope);
    default: return fwd_identity<C>(v, slope);
    }
}

template <typename C>
__host__ __device__ __forceinline__ C act_bwd(C dy, C s, int code, C slope) {
    switch (code) {
    case RELU: return bwd_relu<C>(dy, s, slope);
    case LEAKY_RELU: return bwd_leaky_relu<C>(dy, s, slope);
    case SIGMOID: return bwd_sigmoid<C>(dy, s, slope);
    case TANH: return bwd_tanh<C>(dy, s, slope);
    case GELU: return bwd_gelu<C>(dy, s, slope);
    case GELU_TANH: return bwd_gelu_tanh<C>(dy, s, slope);
    default: return bwd_identity<C>(dy, s, slope);
    }
}

template <typename C>
__host__ __device__ __forceinline__ C mlp_act_fwd(C v, int code) {
    switch (code) {
    case RELU: return fwd_relu<C>(v, C(0));
    case SIGMOID: return fwd_sigmoid<C>(v, C(0));
    case TANH: return fwd_tanh<C>(v, C(0));
    default: return fwd_identity<C>(v, C(0));
    }
}

template <typename C>
__host__ __device__ __forceinline__ C mlp_act_bwd(C dy, C y, int code) {
    switch (code) {
    case RELU: return dy * bwd_relu<C>(C(1), y, C(0));
    case SIGMOID: return dy * bwd_sigmoid<C>(C(1), y, C(0));
    case TANH: return dy * bwd_tanh<C>(C(1), y, C(0));
    default: return dy * bwd_identity<C>(C(1), y, C(0));
    }
}

}  // namespace gg_act
#endif  // GPUGRAD_ACTIVATIONS_CUH
