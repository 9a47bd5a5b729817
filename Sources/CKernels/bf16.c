// bfloat16 conversions (see CKernels.h): the AVX-512 path does the same integer rounding as the
// scalar code 16 lanes at a time, so both give identical bits; `ck_simd_level()` picks the path.
#include "CKernels.h"
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define CK_BF16_X86 1
#endif

/// Round-to-nearest-even fp32 → bf16: add 0x7FFF plus the lowest kept bit, keep the top half.
/// NaN is kept a (quiet) NaN instead of rounding into Inf.
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void f32_to_bf16_portable(uint16_t *dst, const float *src, long n) {
    for (long i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

#ifdef CK_BF16_X86
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

__attribute__((target("avx512f,avx512bw,avx512vl")))
static void f32_to_bf16_avx512(uint16_t *dst, const float *src, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        v16u u;
        memcpy(&u, src + i, 64);
        v16u nan = (v16u)((u & 0x7fffffffu) > 0x7f800000u);   // all ones where NaN
        v16u rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        v16u quiet = (u >> 16) | 0x40u;
        v16u r = (nan & quiet) | (~nan & rounded);
        v16h h = __builtin_convertvector(r, v16h);
        memcpy(dst + i, &h, 32);
    }
    for (; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}
#endif

static void convert(uint16_t *dst, const float *src, long n) {
#ifdef CK_BF16_X86
    if (ck_simd_level() >= 3) { f32_to_bf16_avx512(dst, src, n); return; }
#endif
    f32_to_bf16_portable(dst, src, n);
}

void ck_f32_to_bf16(unsigned short *dst, const float *src, long lo, long hi) {
    if (hi > lo) convert(dst + lo, src + lo, hi - lo);
}

void ck_f32_to_bf16_rows(unsigned short *dst, long ldd, const float *src, long lds, long cols, long lo, long hi) {
    for (long r = lo; r < hi; r++) convert(dst + r * ldd, src + r * lds, cols);
}

void ck_bf16_to_f32(float *dst, const unsigned short *src, long lo, long hi) {
    for (long i = lo; i < hi; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, 4);
    }
}

#ifdef CK_BF16_X86
/// XCR0 (the state components the OS saves), 0 without OSXSAVE.
static uint64_t xcr0(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

int ck_cpu_has_avx512_bf16(void) {
#ifdef CK_BF16_X86
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 16))) return 0;                         // AVX512F
    if ((xcr0() & 0xe6) != 0xe6) return 0;                   // SSE, AVX, opmask, ZMM state
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1;                                     // AVX512_BF16
#else
    return 0;
#endif
}

int ck_cpu_has_amx_bf16(void) {
#ifdef CK_BF16_X86
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((d >> 22) & 1) || !((d >> 24) & 1)) return 0;      // AMX-BF16, AMX-TILE
    return (xcr0() & (3ull << 17)) == (3ull << 17);          // XTILECFG, XTILEDATA
#else
    return 0;
#endif
}

// Weights split in place (see CKernels.h): hi = top half of (u + 0x8000), lo = u − (hi << 16),
// which lies in [−0x8000, 0x7fff] and so fits an int16; u = (hi << 16) + lo exactly.
void ck_bf16_split_rows(float *w, long cols, long lo, long hi, float *tmp) {
    for (long r = lo; r < hi; r++) {
        float *row = w + r * cols;
        memcpy(tmp, row, (size_t)cols * 4);
        const uint32_t *u = (const uint32_t *)tmp;
        uint16_t *h = (uint16_t *)row, *l = h + cols;
        for (long j = 0; j < cols; j++) {
            uint32_t top = (u[j] + 0x8000u) >> 16;
            h[j] = (uint16_t)top;
            l[j] = (uint16_t)(u[j] - (top << 16));
        }
    }
}

void ck_bf16_join_rows(float *w, long cols, long lo, long hi, float *tmp) {
    for (long r = lo; r < hi; r++) {
        float *row = w + r * cols;
        const uint16_t *h = (const uint16_t *)row, *l = h + cols;
        uint32_t *u = (uint32_t *)tmp;
        for (long j = 0; j < cols; j++) u[j] = ((uint32_t)h[j] << 16) + (uint32_t)(int32_t)(int16_t)l[j];
        memcpy(row, tmp, (size_t)cols * 4);
    }
}
