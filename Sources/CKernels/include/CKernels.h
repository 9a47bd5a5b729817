// Bandwidth-bound float32 kernels (GELU, layer norm, softmax) in C, built three times: for
// AVX-512, for AVX2+FMA and for the baseline x86-64 / any other target, chosen at run time
// (`ck_simd_level`). Every function works on a half-open range so Swift splits the work across
// threads; reductions inside a row use one partial sum per vector lane, combined in a fixed order, so results do
// not depend on the thread split or on timing.
#ifndef CKERNELS_H
#define CKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The code path that runs: 3 AVX-512 (F, VL, DQ, BW), 2 AVX2+FMA, 0 portable.
/// `ck_limit_simd_level(n)` caps it at n (tests and benchmarks compare the paths);
/// `ck_force_portable(1)` is `ck_limit_simd_level(0)`, `ck_force_portable(0)` lifts the cap.
int ck_simd_level(void);
void ck_limit_simd_level(int max);
void ck_force_portable(int on);

/// y[i] = ½·x·(1 + erf(x/√2)) for i in [lo, hi).
void ck_gelu_forward(float *out, const float *inp, long lo, long hi);
/// dx[i] += dy·(Φ(x) + x·φ(x)) for i in [lo, hi).
void ck_gelu_backward(float *dinp, const float *dout, const float *inp, long lo, long hi);

/// Layer norm rows [lo, hi) of a [rows, cols] matrix; writes mean and 1/σ per row.
void ck_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, long lo, long hi, long cols, float eps);
/// Layer norm backward for rows [lo, hi): dx += r·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w
/// (skipped when dinp is NULL); when dw_part/db_part are given they are OVERWRITTEN with this
/// row block's Σ dy·x̂ and Σ dy (the caller sums blocks in a fixed order).
void ck_layernorm_backward(float *dinp, float *dw_part, float *db_part, const float *dout,
                           const float *inp, const float *weight, const float *mean, const float *rstd,
                           long lo, long hi, long cols);

/// out[c] += Σ_b parts[b·cols + c] for c in [lo, hi), the blocks b = 0..<blocks added in order
/// (the layer-norm weight-gradient partials; the order does not depend on the thread split).
void ck_add_block_sums(float *out, const float *parts, long blocks, long cols, long lo, long hi);

/// Row softmax for rows [lo, hi) of [rows, cols] (out may alias inp).
void ck_softmax_forward(float *out, const float *inp, long lo, long hi, long cols);
/// dx += y ⊙ (dy − Σ dy·y) for rows [lo, hi).
void ck_softmax_backward(float *dinp, const float *dout, const float *out, long lo, long hi, long cols);

/// bfloat16 (bit patterns in uint16_t) conversions, AVX-512 with a portable fallback; every
/// path gives the same bits. fp32 → bf16 rounds to nearest even (NaN stays NaN, quieted;
/// ±Inf and overflow to ±Inf as IEEE rounding gives); bf16 → fp32 is exact (bits << 16).
/// dst[i] = bf16(src[i]) for i in [lo, hi).
void ck_f32_to_bf16(unsigned short *dst, const float *src, long lo, long hi);
/// Rows [lo, hi) of a strided [rows, cols] matrix: dst[r·ldd + c] = bf16(src[r·lds + c]).
void ck_f32_to_bf16_rows(unsigned short *dst, long ldd, const float *src, long lds, long cols, long lo, long hi);
/// dst[i] = float(src[i]) for i in [lo, hi).
void ck_bf16_to_f32(float *dst, const unsigned short *src, long lo, long hi);
/// A [rows, cols] fp32 matrix split in place, rows [lo, hi): each row of `cols` floats becomes
/// `cols` bf16 values (the high halves, rounded half up on the bit pattern: the top 16 bits of
/// u + 0x8000) followed by `cols` int16 low halves (u − (high << 16)), so the row is a bf16 row
/// with leading dimension 2·cols and `ck_bf16_join_rows` restores every bit. `tmp` holds `cols`
/// floats. The high half is round-to-nearest except at exact ties (away from zero, where
/// `ck_f32_to_bf16` rounds to even); a NaN whose payload is only in its low 16 bits reads as ±Inf.
void ck_bf16_split_rows(float *w, long cols, long lo, long hi, float *tmp);
/// Inverse of `ck_bf16_split_rows` (bit-exact).
void ck_bf16_join_rows(float *w, long cols, long lo, long hi, float *tmp);
/// What the CPU reports (CPUID, with the OS's AVX-512 / AMX state enabled in XCR0):
/// AVX512_BF16 (vdpbf16ps) and AMX-BF16 (tile matmul).
int ck_cpu_has_avx512_bf16(void);
int ck_cpu_has_amx_bf16(void);

/// glibc malloc's view (mallinfo2): bytes in use from its heaps, in mmapped chunks, and free in
/// its heaps. Zeros where unavailable.
void ck_malloc_stats(size_t *in_use, size_t *mmapped, size_t *free_in_heap);

/// Sets how long OpenBLAS's idle server threads spin (calling sched_yield) before they sleep:
/// 2^log2_cycles cycles (OpenBLAS's OPENBLAS_THREAD_TIMEOUT, 4…30; its default 28 is ~0.1 s, so
/// between GEMMs a rank's BLAS thread never sleeps and takes CPU from the rank's other threads).
/// Sets the variable, has OpenBLAS re-read it and restarts its server threads. Returns 1 when
/// set, 0 when the environment already sets it (left alone), -1 when this OpenBLAS lacks the
/// entry points. Call before other threads use BLAS.
int ck_openblas_set_thread_timeout(int log2_cycles);

#ifdef __cplusplus
}
#endif
#endif
