// Runtime-dispatched bandwidth-bound kernels; see CKernels.h.
#include "CKernels.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

typedef float v16f __attribute__((vector_size(64)));
typedef int v16i __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int v4i __attribute__((vector_size(16)));

#if defined(__x86_64__) || defined(__i386__)
#define CK_HAVE_AVX2 1
#define CK_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#define CK_NAME(n) n##_avx512
#define VF v16f
#define VI v16i
#define VW 16
#include "kernels_impl.h"
#undef CK_TARGET
#undef CK_NAME
#undef VF
#undef VI
#undef VW
#define CK_TARGET __attribute__((target("avx2,fma")))
#define CK_NAME(n) n##_avx2
#define VF v8f
#define VI v8i
#define VW 8
#include "kernels_impl.h"
#undef CK_TARGET
#undef CK_NAME
#undef VF
#undef VI
#undef VW
#endif

// Portable: 4-lane vectors (SSE2 on x86-64, NEON on arm64) so no call passes a 32-byte vector
// without AVX.
#define CK_TARGET
#define CK_NAME(n) n##_portable
#define VF v4f
#define VI v4i
#define VW 4
#include "kernels_impl.h"
#undef CK_TARGET
#undef CK_NAME
#undef VF
#undef VI
#undef VW

static int simd_limit = 3;

int ck_simd_level(void) {
#ifdef CK_HAVE_AVX2
    static int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        level = (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 2 : 0;
        if (level == 2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")) level = 3;
    }
    return level < simd_limit ? level : simd_limit;
#else
    return 0;
#endif
}

void ck_limit_simd_level(int max) { simd_limit = max; }
void ck_force_portable(int on) { simd_limit = on ? 0 : 3; }

#ifdef CK_HAVE_AVX2
#define DISPATCH(name, ...) do { int l_ = ck_simd_level(); \
    if (l_ == 3) name##_avx512(__VA_ARGS__); else if (l_ == 2) name##_avx2(__VA_ARGS__); else name##_portable(__VA_ARGS__); } while (0)
#else
#define DISPATCH(name, ...) name##_portable(__VA_ARGS__)
#endif

void ck_gelu_forward(float *out, const float *inp, long lo, long hi) { DISPATCH(gelu_forward, out, inp, lo, hi); }
void ck_gelu_backward(float *dinp, const float *dout, const float *inp, long lo, long hi) {
    DISPATCH(gelu_backward, dinp, dout, inp, lo, hi);
}
void ck_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                          const float *bias, long lo, long hi, long cols, float eps) {
    DISPATCH(layernorm_forward, out, mean, rstd, inp, weight, bias, lo, hi, cols, eps);
}
void ck_layernorm_backward(float *dinp, float *dw_part, float *db_part, const float *dout, const float *inp,
                           const float *weight, const float *mean, const float *rstd, long lo, long hi, long cols) {
    DISPATCH(layernorm_backward, dinp, dw_part, db_part, dout, inp, weight, mean, rstd, lo, hi, cols);
}
void ck_add_block_sums(float *out, const float *parts, long blocks, long cols, long lo, long hi) {
    for (long b = 0; b < blocks; b++) {
        const float *p = parts + b * cols;
        for (long c = lo; c < hi; c++) out[c] += p[c];  // vectorised by the compiler (restrict-free: no overlap)
    }
}
void ck_softmax_forward(float *out, const float *inp, long lo, long hi, long cols) {
    DISPATCH(softmax_forward, out, inp, lo, hi, cols);
}
void ck_softmax_backward(float *dinp, const float *dout, const float *out, long lo, long hi, long cols) {
    DISPATCH(softmax_backward, dinp, dout, out, lo, hi, cols);
}

