// oneDNN (Debian libdnnl-dev 2.6) bf16 matrix multiply behind a few C functions, libdnnl opened
// with dlopen at the first call (after setting OMP_WAIT_POLICY=PASSIVE unless set; see shim.c); primitives are
// created once per shape and cached, errors come back as status codes (0 = success; otherwise a
// dnnl_status_t value or one of the CDNNL_ERR_* codes below), turned into Swift errors in one
// place (Sources/Tensor/Kernels/OneDNN.swift). Nothing else in the project includes dnnl.h.
#ifndef CDNNL_H
#define CDNNL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The CPU has no bf16 ISA oneDNN would use (its effective ISA is below avx512_core_bf16).
#define CDNNL_ERR_NO_BF16_ISA 100
/// The primitive cache is full (more distinct GEMM shapes than it holds).
#define CDNNL_ERR_CACHE_FULL 101
/// An allocation failed.
#define CDNNL_ERR_OUT_OF_MEMORY 102
/// A dimension or leading dimension is out of range.
#define CDNNL_ERR_BAD_ARGUMENT 103
/// libdnnl.so.2 could not be opened (or lacks a function); the message says which.
#define CDNNL_ERR_NO_LIBRARY 104

/// Loads libdnnl and creates the CPU engine (once; later calls return the first result). 0 when
/// bf16 matmul is usable on this CPU, CDNNL_ERR_NO_LIBRARY without libdnnl, CDNNL_ERR_NO_BF16_ISA
/// when oneDNN reports no bf16 ISA.
int CDNNL_init(void);

/// oneDNN's effective ISA (dnnl_cpu_isa_t as an int, e.g. 0xe7 avx512_core_bf16, 0x3e7 AMX).
int CDNNL_effective_isa(void);

/// oneDNN's version as major·10000 + minor·100 + patch.
int CDNNL_version(void);

/// A readable message for a status code of this header.
const char *CDNNL_status_string(int status);

/// Row-major batched GEMM with bf16 inputs, fp32 accumulation and an fp32 result:
///   for b in 0..<batch:  C_b[M,N] = alpha · op(A_b) · op(B_b) + beta · C_b
/// A_b = a + b·stride_a is [M,K] with leading dimension lda (trans_a: stored [K,M], lda ≥ M);
/// B_b = b + b·stride_b is [K,N] with ldb (trans_b: stored [N,K], ldb ≥ K); C_b = c + b·stride_c
/// is [M,N] with ldc. `a` and `b` hold bf16 bit patterns. beta is applied as oneDNN's sum
/// post-op (beta = 0: C is only written). `threads` is the OpenMP team size oneDNN uses on the
/// calling thread (1 inside our own parallel loops); primitives are cached per (shape, strides,
/// alpha, beta, threads). Thread-safe: each calling thread has its own stream and scratchpad.
int CDNNL_gemm_bf16(int trans_a, int trans_b, long m, long n, long k, float alpha,
                    const uint16_t *a, long lda, long stride_a,
                    const uint16_t *b, long ldb, long stride_b,
                    float beta, float *c, long ldc, long stride_c, long batch, int threads);

/// The oneDNN implementation that `CDNNL_gemm_bf16` with these arguments runs (e.g.
/// "brg:avx512_core_bf16"), written into `name` (NUL-terminated, at most `len` bytes).
int CDNNL_gemm_bf16_implementation(int trans_a, int trans_b, long m, long n, long k, float alpha,
                                   long lda, long stride_a, long ldb, long stride_b,
                                   float beta, long ldc, long stride_c, long batch, int threads,
                                   char *name, size_t len);

/// Number of primitives created so far (each distinct GEMM configuration once).
long CDNNL_primitive_count(void);

/// Bytes of the calling thread's user scratchpad (the largest any of its GEMMs asked for).
long CDNNL_thread_scratchpad_bytes(void);

#ifdef __cplusplus
}
#endif
#endif
