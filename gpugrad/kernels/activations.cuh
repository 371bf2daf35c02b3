// Generated from gpugrad/kernels/activations.py (the one definition of every activation): do not edit.
// Regenerate with `python -m gpugrad.kernels.activations`; tests/test_activations.py checks it is current.
#ifndef GPUGRAD_ACTIVATIONS_CUH
#define GPUGRAD_ACTIVATIONS_CUH
#ifndef GG_EXPR_PRELUDE
#define GG_EXPR_PRELUDE
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GG_FN __host__ __device__ __forceinline__
#else
#define GG_FN inline
#endif
GG_FN float gg_pow(float x0, float x1) { return powf(x0, x1); }
GG_FN double gg_pow(double x0, double x1) { return pow(x0, x1); }
GG_FN float gg_exp(float x0) { return expf(x0); }
GG_FN double gg_exp(double x0) { return exp(x0); }
GG_FN float gg_expm1(float x0) { return expm1f(x0); }
GG_FN double gg_expm1(double x0) { return expm1(x0); }
GG_FN float gg_log(float x0) { return logf(x0); }
GG_FN double gg_log(double x0) { return log(x0); }
GG_FN float gg_log1p(float x0) { return log1pf(x0); }
GG_FN double gg_log1p(double x0) { return log1p(x0); }
GG_FN float gg_tanh(float x0) { return tanhf(x0); }
GG_FN double gg_tanh(double x0) { return tanh(x0); }
GG_FN float gg_erf(float x0) { return erff(x0); }
GG_FN double gg_erf(double x0) { return erf(x0); }
GG_FN float gg_sin(float x0) { return sinf(x0); }
GG_FN double gg_sin(double x0) { return sin(x0); }
GG_FN float gg_cos(float x0) { return cosf(x0); }
GG_FN double gg_cos(double x0) { return cos(x0); }
GG_FN float gg_sqrt(float x0) { return sqrtf(x0); }
GG_FN double gg_sqrt(double x0) { return sqrt(x0); }
GG_FN float gg_abs(float x0) { return fabsf(x0); }
GG_FN double gg_abs(double x0) { return fabs(x0); }
template <typename C> GG_FN C gg_max(C x0, C x1) { return ((x0 < x1) ? x1 : x0); }
template <typename C> GG_FN C gg_min(C x0, C x1) { return ((x1 < x0) ? x1 : x0); }
template <typename C> GG_FN C gg_lerp(C x0, C x1, C x2) { return ((x2 < C(0.5)) ? (x0 + (x2 * (x1 - x0))) : (x1 - ((x1 - x0) * (C(1.0) - x2)))); }
#endif  // GG_EXPR_PRELUDE
#define GG_ACT_PARAMS(C) C p0, C p1
#define GG_ACT_ARGS p0, p1
namespace gg_act {

enum Code { IDENTITY = 0, RELU = 1, LEAKY_RELU = 2, SIGMOID = 3, TANH = 4, GELU = 5, GELU_TANH = 6, SILU = 7, SOFTPLUS = 8, ELU = 9, SELU = 10, MISH = 11, HARDSWISH = 12, HARDSIGMOID = 13, RELU6 = 14, HARDTANH = 15, LOGSIGMOID = 16, SIN = 17 };

template <typename C>
GG_FN C fwd_identity(C z, C p0, C p1) {
    return z;
}
template <typename C>
GG_FN C bwd_identity(C dy, C s, C p0, C p1) {
    return dy;
}
template <typename C>
GG_FN C d2_identity(C dy, C s, C p0, C p1) {
    return (dy * C(0.0));
}

template <typename C>
GG_FN C fwd_relu(C z, C p0, C p1) {
    return gg_max(z, C(0.0));
}
template <typename C>
GG_FN C bwd_relu(C dy, C s, C p0, C p1) {
    return ((s > C(0.0)) ? dy : C(0.0));
}
template <typename C>
GG_FN C d2_relu(C dy, C s, C p0, C p1) {
    return (dy * C(0.0));
}

template <typename C>
GG_FN C fwd_leaky_relu(C z, C p0, C p1) {
    return ((z > C(0.0)) ? z : (z * p0));
}
template <typename C>
GG_FN C bwd_leaky_relu(C dy, C s, C p0, C p1) {
    return ((s > C(0.0)) ? dy : (dy * p0));
}
template <typename C>
GG_FN C d2_leaky_relu(C dy, C s, C p0, C p1) {
    return (dy * C(0.0));
}

template <typename C>
GG_FN C fwd_sigmoid(C z, C p0, C p1) {
    return (C(1.0) / (C(1.0) + gg_exp((-z))));
}
template <typename C>
GG_FN C bwd_sigmoid(C dy, C s, C p0, C p1) {
    return ((dy * s) * (C(1.0) - s));
}
template <typename C>
GG_FN C d2_sigmoid(C dy, C s, C p0, C p1) {
    const C t0 = (C(1.0) - s);
    return (dy * ((t0 + (-s)) * (s * t0)));
}

template <typename C>
GG_FN C fwd_tanh(C z, C p0, C p1) {
    return gg_tanh(z);
}
template <typename C>
GG_FN C bwd_tanh(C dy, C s, C p0, C p1) {
    return (dy * (C(1.0) - (s * s)));
}
template <typename C>
GG_FN C d2_tanh(C dy, C s, C p0, C p1) {
    return (dy * ((-(s + s)) * (C(1.0) - (s * s))));
}

template <typename C>
GG_FN C fwd_gelu(C z, C p0, C p1) {
    return ((C(0.5) * z) * (C(1.0) + gg_erf((z * C(0.7071067811865475)))));
}
template <typename C>
GG_FN C bwd_gelu(C dy, C s, C p0, C p1) {
    return (dy * ((C(0.5) * (C(1.0) + gg_erf((s * C(0.7071067811865475))))) + (s * (gg_exp(((C(-0.5) * s) * s)) * C(0.3989422804014327)))));
}
template <typename C>
GG_FN C d2_gelu(C dy, C s, C p0, C p1) {
    const C t0 = (s * C(0.7071067811865475));
    const C t1 = (C(-0.5) * s);
    const C t2 = gg_exp((t1 * s));
    return (dy * ((C(0.5) * ((C(1.1283791670955126) * gg_exp((-(t0 * t0)))) * C(0.7071067811865475))) + ((t2 * C(0.3989422804014327)) + (s * ((t2 * (t1 + t1)) * C(0.3989422804014327))))));
}

template <typename C>
GG_FN C fwd_gelu_tanh(C z, C p0, C p1) {
    return ((C(0.5) * z) * (C(1.0) + gg_tanh((C(0.7978845608028654) * (z + (((C(0.044715) * z) * z) * z))))));
}
template <typename C>
GG_FN C bwd_gelu_tanh(C dy, C s, C p0, C p1) {
    const C t0 = gg_tanh((C(0.7978845608028654) * (s + (((C(0.044715) * s) * s) * s))));
    return (dy * ((C(0.5) * (C(1.0) + t0)) + ((((C(0.5) * s) * (C(1.0) - (t0 * t0))) * C(0.7978845608028654)) * (C(1.0) + ((C(0.134145) * s) * s)))));
}
template <typename C>
GG_FN C d2_gelu_tanh(C dy, C s, C p0, C p1) {
    const C t0 = (C(0.044715) * s);
    const C t1 = (t0 * s);
    const C t2 = gg_tanh((C(0.7978845608028654) * (s + (t1 * s))));
    const C t3 = (C(1.0) - (t2 * t2));
    const C t4 = (t3 * (C(0.7978845608028654) * (C(1.0) + (((t0 + t0) * s) + t1))));
    const C t5 = (C(0.5) * s);
    const C t6 = (C(0.134145) * s);
    return (dy * ((C(0.5) * t4) + (((((C(0.5) * t3) + (t5 * (-((t4 * t2) + (t2 * t4))))) * C(0.7978845608028654)) * (C(1.0) + (t6 * s))) + (((t5 * t3) * C(0.7978845608028654)) * (t6 + t6)))));
}

template <typename C>
GG_FN C fwd_silu(C z, C p0, C p1) {
    return (z / (C(1.0) + gg_exp((-z))));
}
template <typename C>
GG_FN C bwd_silu(C dy, C s, C p0, C p1) {
    const C t0 = (C(1.0) / (C(1.0) + gg_exp((-s))));
    return ((dy * t0) * (C(1.0) + (s * (C(1.0) - t0))));
}
template <typename C>
GG_FN C d2_silu(C dy, C s, C p0, C p1) {
    const C t0 = (C(1.0) / (C(1.0) + gg_exp((-s))));
    const C t1 = (C(1.0) - t0);
    const C t2 = (t0 * t1);
    return (dy * ((t2 * (C(1.0) + (s * t1))) + (t0 * (t1 + (s * (-t2))))));
}

template <typename C>
GG_FN C fwd_softplus(C z, C p0, C p1) {
    const C t0 = (z * p0);
    return ((t0 > p1) ? z : (gg_log1p(gg_exp(t0)) / p0));
}
template <typename C>
GG_FN C bwd_softplus(C dy, C s, C p0, C p1) {
    const C t0 = (s * p0);
    const C t1 = gg_exp(t0);
    return ((t0 > p1) ? dy : ((dy * t1) / (t1 + C(1.0))));
}
template <typename C>
GG_FN C d2_softplus(C dy, C s, C p0, C p1) {
    const C t0 = (s * p0);
    const C t1 = (C(1.0) / (C(1.0) + gg_exp((-t0))));
    return (dy * ((t0 < p1) ? ((p0 * t1) * (C(1.0) - t1)) : C(0.0)));
}

template <typename C>
GG_FN C fwd_elu(C z, C p0, C p1) {
    return ((z <= C(0.0)) ? ((gg_exp(z) - C(1.0)) * p0) : z);
}
template <typename C>
GG_FN C bwd_elu(C dy, C s, C p0, C p1) {
    return ((s <= C(0.0)) ? ((dy * p0) * gg_exp(s)) : dy);
}
template <typename C>
GG_FN C d2_elu(C dy, C s, C p0, C p1) {
    return (dy * ((s < C(0.0)) ? (p0 * gg_exp(s)) : C(0.0)));
}

template <typename C>
GG_FN C fwd_selu(C z, C p0, C p1) {
    return ((z <= C(0.0)) ? ((gg_exp(z) - C(1.0)) * C(1.7580993408473766)) : (z * C(1.0507009873554805)));
}
template <typename C>
GG_FN C bwd_selu(C dy, C s, C p0, C p1) {
    return ((s <= C(0.0)) ? ((dy * C(1.7580993408473766)) * gg_exp(s)) : (dy * C(1.0507009873554805)));
}
template <typename C>
GG_FN C d2_selu(C dy, C s, C p0, C p1) {
    return (dy * ((s < C(0.0)) ? (C(1.7580993408473766) * gg_exp(s)) : C(0.0)));
}

template <typename C>
GG_FN C fwd_mish(C z, C p0, C p1) {
    return (z * gg_tanh(gg_log1p(gg_exp(z))));
}
template <typename C>
GG_FN C bwd_mish(C dy, C s, C p0, C p1) {
    const C t0 = gg_tanh(gg_log1p(gg_exp(s)));
    return (dy * (t0 + ((s * (C(1.0) / (C(1.0) + gg_exp((-s))))) * (C(1.0) - (t0 * t0)))));
}
template <typename C>
GG_FN C d2_mish(C dy, C s, C p0, C p1) {
    const C t0 = gg_tanh(gg_log1p(gg_exp(s)));
    const C t1 = (C(1.0) - (t0 * t0));
    const C t2 = (C(1.0) / (C(1.0) + gg_exp((-s))));
    const C t3 = (t1 * t2);
    return (dy * (t3 + (((t2 + (s * (t2 * (C(1.0) - t2)))) * t1) + ((s * t2) * (-((t3 * t0) + (t0 * t3)))))));
}

template <typename C>
GG_FN C fwd_hardswish(C z, C p0, C p1) {
    return ((z * gg_min(gg_max((z + C(3.0)), C(0.0)), C(6.0))) / C(6.0));
}
template <typename C>
GG_FN C bwd_hardswish(C dy, C s, C p0, C p1) {
    return ((s <= C(-3.0)) ? C(0.0) : ((s < C(3.0)) ? (dy * ((s / C(3.0)) + C(0.5))) : dy));
}
template <typename C>
GG_FN C d2_hardswish(C dy, C s, C p0, C p1) {
    return (dy * ((s <= C(-3.0)) ? C(0.0) : ((s < C(3.0)) ? C(0.3333333333333333) : C(0.0))));
}

template <typename C>
GG_FN C fwd_hardsigmoid(C z, C p0, C p1) {
    return (gg_min(gg_max((z + C(3.0)), C(0.0)), C(6.0)) / C(6.0));
}
template <typename C>
GG_FN C bwd_hardsigmoid(C dy, C s, C p0, C p1) {
    return ((s > C(-3.0)) ? ((s < C(3.0)) ? (dy * C(0.16666666666666666)) : C(0.0)) : C(0.0));
}
template <typename C>
GG_FN C d2_hardsigmoid(C dy, C s, C p0, C p1) {
    return (dy * C(0.0));
}

template <typename C>
GG_FN C fwd_relu6(C z, C p0, C p1) {
    return gg_min(gg_max(z, C(0.0)), C(6.0));
}
template <typename C>
GG_FN C bwd_relu6(C dy, C s, C p0, C p1) {
    return ((s <= C(0.0)) ? C(0.0) : ((s >= C(6.0)) ? C(0.0) : dy));
}
template <typename C>
GG_FN C d2_relu6(C dy, C s, C p0, C p1) {
    return (dy * C(0.0));
}

template <typename C>
GG_FN C fwd_hardtanh(C z, C p0, C p1) {
    return gg_min(gg_max(z, p0), p1);
}
template <typename C>
GG_FN C bwd_hardtanh(C dy, C s, C p0, C p1) {
    return ((s <= p0) ? C(0.0) : ((s >= p1) ? C(0.0) : dy));
}
template <typename C>
GG_FN C d2_hardtanh(C dy, C s, C p0, C p1) {
    return (dy * C(0.0));
}

template <typename C>
GG_FN C fwd_logsigmoid(C z, C p0, C p1) {
    return (gg_min(z, C(0.0)) - gg_log1p(gg_exp((-gg_abs(z)))));
}
template <typename C>
GG_FN C bwd_logsigmoid(C dy, C s, C p0, C p1) {
    return (dy * (-gg_expm1(s)));
}
template <typename C>
GG_FN C d2_logsigmoid(C dy, C s, C p0, C p1) {
    return (dy * ((-gg_exp(s)) * (-gg_expm1(s))));
}

template <typename C>
GG_FN C fwd_sin(C z, C p0, C p1) {
    return gg_sin(z);
}
template <typename C>
GG_FN C bwd_sin(C dy, C s, C p0, C p1) {
    return (dy * gg_cos(s));
}
template <typename C>
GG_FN C d2_sin(C dy, C s, C p0, C p1) {
    return (dy * (-gg_sin(s)));
}

template <typename C>
GG_FN C act_fwd(C z, int code, C p0, C p1) {
    switch (code) {
    case RELU: return fwd_relu<C>(z, p0, p1);
    case LEAKY_RELU: return fwd_leaky_relu<C>(z, p0, p1);
    case SIGMOID: return fwd_sigmoid<C>(z, p0, p1);
    case TANH: return fwd_tanh<C>(z, p0, p1);
    case GELU: return fwd_gelu<C>(z, p0, p1);
    case GELU_TANH: return fwd_gelu_tanh<C>(z, p0, p1);
    case SILU: return fwd_silu<C>(z, p0, p1);
    case SOFTPLUS: return fwd_softplus<C>(z, p0, p1);
    case ELU: return fwd_elu<C>(z, p0, p1);
    case SELU: return fwd_selu<C>(z, p0, p1);
    case MISH: return fwd_mish<C>(z, p0, p1);
    case HARDSWISH: return fwd_hardswish<C>(z, p0, p1);
    case HARDSIGMOID: return fwd_hardsigmoid<C>(z, p0, p1);
    case RELU6: return fwd_relu6<C>(z, p0, p1);
    case HARDTANH: return fwd_hardtanh<C>(z, p0, p1);
    case LOGSIGMOID: return fwd_logsigmoid<C>(z, p0, p1);
    case SIN: return fwd_sin<C>(z, p0, p1);
    default: return fwd_identity<C>(z, p0, p1);
    }
}

template <typename C>
GG_FN C act_bwd(C dy, C s, int code, C p0, C p1) {
    switch (code) {
    case RELU: return bwd_relu<C>(dy, s, p0, p1);
    case LEAKY_RELU: return bwd_leaky_relu<C>(dy, s, p0, p1);
    case SIGMOID: return bwd_sigmoid<C>(dy, s, p0, p1);
    case TANH: return bwd_tanh<C>(dy, s, p0, p1);
    case GELU: return bwd_gelu<C>(dy, s, p0, p1);
    case GELU_TANH: return bwd_gelu_tanh<C>(dy, s, p0, p1);
    case SILU: return bwd_silu<C>(dy, s, p0, p1);
    case SOFTPLUS: return bwd_softplus<C>(dy, s, p0, p1);
    case ELU: return bwd_elu<C>(dy, s, p0, p1);
    case SELU: return bwd_selu<C>(dy, s, p0, p1);
    case MISH: return bwd_mish<C>(dy, s, p0, p1);
    case HARDSWISH: return bwd_hardswish<C>(dy, s, p0, p1);
    case HARDSIGMOID: return bwd_hardsigmoid<C>(dy, s, p0, p1);
    case RELU6: return bwd_relu6<C>(dy, s, p0, p1);
    case HARDTANH: return bwd_hardtanh<C>(dy, s, p0, p1);
    case LOGSIGMOID: return bwd_logsigmoid<C>(dy, s, p0, p1);
    case SIN: return bwd_sin<C>(dy, s, p0, p1);
    default: return bwd_identity<C>(dy, s, p0, p1);
    }
}

template <typename C>
GG_FN C act_d2(C dy, C s, int code, C p0, C p1) {
    switch (code) {
    case RELU: return d2_relu<C>(dy, s, p0, p1);
    case LEAKY_RELU: return d2_leaky_relu<C>(dy, s, p0, p1);
    case SIGMOID: return d2_sigmoid<C>(dy, s, p0, p1);
    case TANH: return d2_tanh<C>(dy, s, p0, p1);
    case GELU: return d2_gelu<C>(dy, s, p0, p1);
    case GELU_TANH: return d2_gelu_tanh<C>(dy, s, p0, p1);
    case SILU: return d2_silu<C>(dy, s, p0, p1);
    case SOFTPLUS: return d2_softplus<C>(dy, s, p0, p1);
    case ELU: return d2_elu<C>(dy, s, p0, p1);
    case SELU: return d2_selu<C>(dy, s, p0, p1);
    case MISH: return d2_mish<C>(dy, s, p0, p1);
    case HARDSWISH: return d2_hardswish<C>(dy, s, p0, p1);
    case HARDSIGMOID: return d2_hardsigmoid<C>(dy, s, p0, p1);
    case RELU6: return d2_relu6<C>(dy, s, p0, p1);
    case HARDTANH: return d2_hardtanh<C>(dy, s, p0, p1);
    case LOGSIGMOID: return d2_logsigmoid<C>(dy, s, p0, p1);
    case SIN: return d2_sin<C>(dy, s, p0, p1);
    default: return d2_identity<C>(dy, s, p0, p1);
    }
}

// dy * d^order act / dz^order for order in KERNEL_ORDERS (order 1 otherwise)
template <typename C>
GG_FN C act_deriv(C dy, C s, int code, int order, C p0, C p1) {
    if (order == 2) return act_d2<C>(dy, s, code, p0, p1);
    return act_bwd<C>(dy, s, code, p0, p1);
}

template <typename C>
GG_FN C mlp_act_fwd(C v, int code) {
    switch (code) {
    case RELU: return fwd_relu<C>(v, C(0), C(0));
    case SIGMOID: return fwd_sigmoid<C>(v, C(0), C(0));
    case TANH: return fwd_tanh<C>(v, C(0), C(0));
    case RELU6: return fwd_relu6<C>(v, C(0), C(0));
    case LOGSIGMOID: return fwd_logsigmoid<C>(v, C(0), C(0));
    default: return fwd_identity<C>(v, C(0), C(0));
    }
}

template <typename C>
GG_FN C mlp_act_bwd(C dy, C y, int code) {
    switch (code) {
    case RELU: return dy * bwd_relu<C>(C(1), y, C(0), C(0));
    case SIGMOID: return dy * bwd_sigmoid<C>(C(1), y, C(0), C(0));
    case TANH: return dy * bwd_tanh<C>(C(1), y, C(0), C(0));
    case RELU6: return dy * bwd_relu6<C>(C(1), y, C(0), C(0));
    case LOGSIGMOID: return dy * bwd_logsigmoid<C>(C(1), y, C(0), C(0));
    default: return dy * bwd_identity<C>(C(1), y, C(0), C(0));
    }
}

}  // namespace gg_act
#endif  // GPUGRAD_ACTIVATIONS_CUH
