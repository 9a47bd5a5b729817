// See CDNNL.h. One engine for the process; per calling thread a stream, a user scratchpad and
// the OpenMP team size last set; a mutex-protected open-addressing table of matmul primitives.
#include "CDNNL.h"
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    long m, n, k, batch;
    long sa0, sa1, sa2, sb0, sb1, sb2, sc0, sc1, sc2;
    float alpha, beta;
    int threads, pad;
} gemm_key;

typedef struct {
    int used;
    gemm_key key;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, wei_md, dst_md, scratch_md;
    size_t scratch_bytes;
} gemm_entry;

#define CACHE_SLOTS 4096
static gemm_entry cache[CACHE_SLOTS];
static long cache_count = 0;
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static dnnl_engine_t engine = NULL;
static int init_status = -1;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

// OpenMP's team size for the calling thread, resolved from the libgomp that libdnnl loads.
static void (*omp_set_threads)(int) = NULL;

// libdnnl is opened at the first use (dlopen), not linked: libgomp, which it loads, reads
// OMP_WAIT_POLICY once when it is loaded, and its default (spin after every parallel region)
// keeps a core busy after each GEMM that our own kernels' threads then wait for (measured on the
// base step: 5.16 s spinning vs 4.53 s passive). So PASSIVE is set first unless the user set a
// policy. Processes that stay fp32 never load oneDNN or OpenMP at all.
static void *lib = NULL;
static char lib_error[256] = "";
static __typeof__(&dnnl_engine_create) p_dnnl_engine_create;
static __typeof__(&dnnl_get_effective_cpu_isa) p_dnnl_get_effective_cpu_isa;
static __typeof__(&dnnl_matmul_desc_init) p_dnnl_matmul_desc_init;
static __typeof__(&dnnl_memory_create) p_dnnl_memory_create;
static __typeof__(&dnnl_memory_desc_get_size) p_dnnl_memory_desc_get_size;
static __typeof__(&dnnl_memory_desc_init_by_strides) p_dnnl_memory_desc_init_by_strides;
static __typeof__(&dnnl_memory_destroy) p_dnnl_memory_destroy;
static __typeof__(&dnnl_post_ops_append_sum) p_dnnl_post_ops_append_sum;
static __typeof__(&dnnl_post_ops_create) p_dnnl_post_ops_create;
static __typeof__(&dnnl_post_ops_destroy) p_dnnl_post_ops_destroy;
static __typeof__(&dnnl_primitive_attr_create) p_dnnl_primitive_attr_create;
static __typeof__(&dnnl_primitive_attr_destroy) p_dnnl_primitive_attr_destroy;
static __typeof__(&dnnl_primitive_attr_set_output_scales) p_dnnl_primitive_attr_set_output_scales;
static __typeof__(&dnnl_primitive_attr_set_post_ops) p_dnnl_primitive_attr_set_post_ops;
static __typeof__(&dnnl_primitive_attr_set_scratchpad_mode) p_dnnl_primitive_attr_set_scratchpad_mode;
static __typeof__(&dnnl_primitive_create) p_dnnl_primitive_create;
static __typeof__(&dnnl_primitive_desc_create) p_dnnl_primitive_desc_create;
static __typeof__(&dnnl_primitive_desc_destroy) p_dnnl_primitive_desc_destroy;
static __typeof__(&dnnl_primitive_desc_query) p_dnnl_primitive_desc_query;
static __typeof__(&dnnl_primitive_desc_query_md) p_dnnl_primitive_desc_query_md;
static __typeof__(&dnnl_primitive_execute) p_dnnl_primitive_execute;
static __typeof__(&dnnl_status2str) p_dnnl_status2str;
static __typeof__(&dnnl_stream_create) p_dnnl_stream_create;
static __typeof__(&dnnl_stream_wait) p_dnnl_stream_wait;
static __typeof__(&dnnl_version) p_dnnl_version;

static int load_symbols(void) {
    if (!(p_dnnl_engine_create = (__typeof__(&dnnl_engine_create))dlsym(lib, "dnnl_engine_create"))) return 0;
    if (!(p_dnnl_get_effective_cpu_isa = (__typeof__(&dnnl_get_effective_cpu_isa))dlsym(lib, "dnnl_get_effective_cpu_isa"))) return 0;
    if (!(p_dnnl_matmul_desc_init = (__typeof__(&dnnl_matmul_desc_init))dlsym(lib, "dnnl_matmul_desc_init"))) return 0;
    if (!(p_dnnl_memory_create = (__typeof__(&dnnl_memory_create))dlsym(lib, "dnnl_memory_create"))) return 0;
    if (!(p_dnnl_memory_desc_get_size = (__typeof__(&dnnl_memory_desc_get_size))dlsym(lib, "dnnl_memory_desc_get_size"))) return 0;
    if (!(p_dnnl_memory_desc_init_by_strides = (__typeof__(&dnnl_memory_desc_init_by_strides))dlsym(lib, "dnnl_memory_desc_init_by_strides"))) return 0;
    if (!(p_dnnl_memory_destroy = (__typeof__(&dnnl_memory_destroy))dlsym(lib, "dnnl_memory_destroy"))) return 0;
    if (!(p_dnnl_post_ops_append_sum = (__typeof__(&dnnl_post_ops_append_sum))dlsym(lib, "dnnl_post_ops_append_sum"))) return 0;
    if (!(p_dnnl_post_ops_create = (__typeof__(&dnnl_post_ops_create))dlsym(lib, "dnnl_post_ops_create"))) return 0;
    if (!(p_dnnl_post_ops_destroy = (__typeof__(&dnnl_post_ops_destroy))dlsym(lib, "dnnl_post_ops_destroy"))) return 0;
    if (!(p_dnnl_primitive_attr_create = (__typeof__(&dnnl_primitive_attr_create))dlsym(lib, "dnnl_primitive_attr_create"))) return 0;
    if (!(p_dnnl_primitive_attr_destroy = (__typeof__(&dnnl_primitive_attr_destroy))dlsym(lib, "dnnl_primitive_attr_destroy"))) return 0;
    if (!(p_dnnl_primitive_attr_set_output_scales = (__typeof__(&dnnl_primitive_attr_set_output_scales))dlsym(lib, "dnnl_primitive_attr_set_output_scales"))) return 0;
    if (!(p_dnnl_primitive_attr_set_post_ops = (__typeof__(&dnnl_primitive_attr_set_post_ops))dlsym(lib, "dnnl_primitive_attr_set_post_ops"))) return 0;
    if (!(p_dnnl_primitive_attr_set_scratchpad_mode = (__typeof__(&dnnl_primitive_attr_set_scratchpad_mode))dlsym(lib, "dnnl_primitive_attr_set_scratchpad_mode"))) return 0;
    if (!(p_dnnl_primitive_create = (__typeof__(&dnnl_primitive_create))dlsym(lib, "dnnl_primitive_create"))) return 0;
    if (!(p_dnnl_primitive_desc_create = (__typeof__(&dnnl_primitive_desc_create))dlsym(lib, "dnnl_primitive_desc_create"))) return 0;
    if (!(p_dnnl_primitive_desc_destroy = (__typeof__(&dnnl_primitive_desc_destroy))dlsym(lib, "dnnl_primitive_desc_destroy"))) return 0;
    if (!(p_dnnl_primitive_desc_query = (__typeof__(&dnnl_primitive_desc_query))dlsym(lib, "dnnl_primitive_desc_query"))) return 0;
    if (!(p_dnnl_primitive_desc_query_md = (__typeof__(&dnnl_primitive_desc_query_md))dlsym(lib, "dnnl_primitive_desc_query_md"))) return 0;
    if (!(p_dnnl_primitive_execute = (__typeof__(&dnnl_primitive_execute))dlsym(lib, "dnnl_primitive_execute"))) return 0;
    if (!(p_dnnl_status2str = (__typeof__(&dnnl_status2str))dlsym(lib, "dnnl_status2str"))) return 0;
    if (!(p_dnnl_stream_create = (__typeof__(&dnnl_stream_create))dlsym(lib, "dnnl_stream_create"))) return 0;
    if (!(p_dnnl_stream_wait = (__typeof__(&dnnl_stream_wait))dlsym(lib, "dnnl_stream_wait"))) return 0;
    if (!(p_dnnl_version = (__typeof__(&dnnl_version))dlsym(lib, "dnnl_version"))) return 0;
    return 1;
}

static int load_library(void) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    lib = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libdnnl.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *e = dlerror();
        snprintf(lib_error, sizeof lib_error, "cannot load oneDNN (%s); install libdnnl-dev (scripts/setup)", e ? e : "libdnnl.so.2 not found");
        return CDNNL_ERR_NO_LIBRARY;
    }
    if (!load_symbols()) {
        snprintf(lib_error, sizeof lib_error, "libdnnl lacks a function this build calls (needs oneDNN 2.x)");
        return CDNNL_ERR_NO_LIBRARY;
    }
    omp_set_threads = (void (*)(int))dlsym(lib, "omp_set_num_threads");
    return 0;
}

static _Thread_local dnnl_stream_t tl_stream = NULL;
static _Thread_local void *tl_scratch = NULL;
static _Thread_local size_t tl_scratch_bytes = 0;
static _Thread_local int tl_threads = 0;

static void do_init(void) {
    if ((init_status = load_library())) return;
    dnnl_cpu_isa_t isa = p_dnnl_get_effective_cpu_isa();
    if (((int)isa & (int)dnnl_cpu_isa_avx512_core_bf16) != (int)dnnl_cpu_isa_avx512_core_bf16) {
        init_status = CDNNL_ERR_NO_BF16_ISA;
        return;
    }
    // The user scratchpad keeps concurrent executions from different threads apart.
    init_status = (int)p_dnnl_engine_create(&engine, dnnl_cpu, 0);
}

int CDNNL_init(void) {
    pthread_once(&init_once, do_init);
    return init_status;
}

int CDNNL_effective_isa(void) {
    pthread_once(&init_once, do_init);
    return lib ? (int)p_dnnl_get_effective_cpu_isa() : 0;
}

int CDNNL_version(void) {
    pthread_once(&init_once, do_init);
    if (!lib) return 0;
    const dnnl_version_t *v = p_dnnl_version();
    return v->major * 10000 + v->minor * 100 + v->patch;
}

const char *CDNNL_status_string(int status) {
    switch (status) {
    case CDNNL_ERR_NO_BF16_ISA: return "this CPU has no bf16 instructions oneDNN uses (needs avx512_bf16 or AMX)";
    case CDNNL_ERR_CACHE_FULL: return "oneDNN primitive cache full (too many distinct GEMM shapes)";
    case CDNNL_ERR_OUT_OF_MEMORY: return "out of memory";
    case CDNNL_ERR_BAD_ARGUMENT: return "bad GEMM argument";
    case CDNNL_ERR_NO_LIBRARY: return lib_error[0] ? lib_error : "oneDNN is not loaded";
    default: return lib ? p_dnnl_status2str((dnnl_status_t)status) : "oneDNN is not loaded";
    }
}

long CDNNL_primitive_count(void) {
    pthread_mutex_lock(&cache_lock);
    long n = cache_count;
    pthread_mutex_unlock(&cache_lock);
    return n;
}

long CDNNL_thread_scratchpad_bytes(void) { return (long)tl_scratch_bytes; }

static void set_threads(int threads) {
    if (threads < 1) threads = 1;
    if (tl_threads != threads && omp_set_threads) omp_set_threads(threads);
    tl_threads = threads;
}

static gemm_key make_key(int ta, int tb, long m, long n, long k, float alpha, long lda, long sa, long ldb, long sb,
                         float beta, long ldc, long sc, long batch, int threads) {
    gemm_key key;
    memset(&key, 0, sizeof key);
    key.m = m; key.n = n; key.k = k; key.batch = batch;
    // Strides of the logical [batch, M, K], [batch, K, N], [batch, M, N] tensors.
    key.sa0 = sa; key.sa1 = ta ? 1 : lda; key.sa2 = ta ? lda : 1;
    key.sb0 = sb; key.sb1 = tb ? 1 : ldb; key.sb2 = tb ? ldb : 1;
    key.sc0 = sc; key.sc1 = ldc; key.sc2 = 1;
    key.alpha = alpha; key.beta = beta; key.threads = threads;
    return key;
}

static unsigned long hash_key(const gemm_key *key) {
    const unsigned char *p = (const unsigned char *)key;
    unsigned long h = 1469598103934665603ul;
    for (size_t i = 0; i < sizeof *key; i++) h = (h ^ p[i]) * 1099511628211ul;
    return h;
}

static int md_init(dnnl_memory_desc_t *md, long batch, long d0, long d1, long s_b, long s0, long s1, dnnl_data_type_t dt) {
    if (batch > 1) {
        dnnl_dims_t dims = {batch, d0, d1}, strides = {s_b, s0, s1};
        return (int)p_dnnl_memory_desc_init_by_strides(md, 3, dims, dt, strides);
    }
    dnnl_dims_t dims = {d0, d1}, strides = {s0, s1};
    return (int)p_dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
}

// Creates the entry's primitive (cache lock held).
static int create_entry(gemm_entry *e, const gemm_key *key) {
    int st;
    memset(e, 0, sizeof *e);
    e->key = *key;
    if ((st = md_init(&e->src_md, key->batch, key->m, key->k, key->sa0, key->sa1, key->sa2, dnnl_bf16))) return st;
    if ((st = md_init(&e->wei_md, key->batch, key->k, key->n, key->sb0, key->sb1, key->sb2, dnnl_bf16))) return st;
    if ((st = md_init(&e->dst_md, key->batch, key->m, key->n, key->sc0, key->sc1, key->sc2, dnnl_f32))) return st;
    dnnl_matmul_desc_t desc;
    if ((st = (int)p_dnnl_matmul_desc_init(&desc, &e->src_md, &e->wei_md, NULL, &e->dst_md))) return st;
    dnnl_primitive_attr_t attr;
    if ((st = (int)p_dnnl_primitive_attr_create(&attr))) return st;
    st = (int)p_dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (!st && key->alpha != 1.0f) st = (int)p_dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha);
    if (!st && key->beta != 0.0f) {
        dnnl_post_ops_t po;
        st = (int)p_dnnl_post_ops_create(&po);
        if (!st) st = (int)p_dnnl_post_ops_append_sum(po, key->beta);
        if (!st) st = (int)p_dnnl_primitive_attr_set_post_ops(attr, po);
        p_dnnl_post_ops_destroy(po);
    }
    if (!st) st = (int)p_dnnl_primitive_desc_create(&e->pd, &desc, attr, engine, NULL);
    p_dnnl_primitive_attr_destroy(attr);
    if (st) return st;
    if ((st = (int)p_dnnl_primitive_create(&e->prim, e->pd))) { p_dnnl_primitive_desc_destroy(e->pd); return st; }
    const dnnl_memory_desc_t *smd = p_dnnl_primitive_desc_query_md(e->pd, dnnl_query_scratchpad_md, 0);
    if (smd) { e->scratch_md = *smd; e->scratch_bytes = p_dnnl_memory_desc_get_size(smd); }
    e->used = 1;
    return 0;
}

// Finds or creates the primitive for `key` (the OpenMP team size must already be set).
static int lookup(const gemm_key *key, gemm_entry **out) {
    unsigned long h = hash_key(key);
    pthread_mutex_lock(&cache_lock);
    for (unsigned long i = 0; i < CACHE_SLOTS; i++) {
        gemm_entry *e = &cache[(h + i) % CACHE_SLOTS];
        if (e->used && memcmp(&e->key, key, sizeof *key) == 0) { *out = e; pthread_mutex_unlock(&cache_lock); return 0; }
        if (!e->used) {
            if (cache_count >= CACHE_SLOTS * 3 / 4) { pthread_mutex_unlock(&cache_lock); return CDNNL_ERR_CACHE_FULL; }
            int st = create_entry(e, key);
            if (st) { memset(e, 0, sizeof *e); pthread_mutex_unlock(&cache_lock); return st; }
            cache_count++;
            *out = e;
            pthread_mutex_unlock(&cache_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return CDNNL_ERR_CACHE_FULL;
}

static int check_args(long m, long n, long k, long batch) {
    return (m < 1 || n < 1 || k < 1 || batch < 1) ? CDNNL_ERR_BAD_ARGUMENT : 0;
}

int CDNNL_gemm_bf16_implementation(int ta, int tb, long m, long n, long k, float alpha, long lda, long sa,
                                   long ldb, long sb, float beta, long ldc, long sc, long batch, int threads,
                                   char *name, size_t len) {
    int st = CDNNL_init();
    if (st) return st;
    if ((st = check_args(m, n, k, batch))) return st;
    set_threads(threads);
    gemm_key key = make_key(ta, tb, m, n, k, alpha, lda, sa, ldb, sb, beta, ldc, sc, batch, threads);
    gemm_entry *e;
    if ((st = lookup(&key, &e))) return st;
    const char *impl = NULL;
    if ((st = (int)p_dnnl_primitive_desc_query(e->pd, dnnl_query_impl_info_str, 0, &impl))) return st;
    if (len > 0) { strncpy(name, impl ? impl : "?", len - 1); name[len - 1] = 0; }
    return 0;
}

int CDNNL_gemm_bf16(int ta, int tb, long m, long n, long k, float alpha,
                    const uint16_t *a, long lda, long sa, const uint16_t *b, long ldb, long sb,
                    float beta, float *c, long ldc, long sc, long batch, int threads) {
    int st = CDNNL_init();
    if (st) return st;
    if ((st = check_args(m, n, k, batch))) return st;
    set_threads(threads);
    gemm_key key = make_key(ta, tb, m, n, k, alpha, lda, sa, ldb, sb, beta, ldc, sc, batch, threads);
    gemm_entry *e;
    if ((st = lookup(&key, &e))) return st;
    if (!tl_stream && (st = (int)p_dnnl_stream_create(&tl_stream, engine, dnnl_stream_default_flags))) { tl_stream = NULL; return st; }
    if (e->scratch_bytes > tl_scratch_bytes) {
        free(tl_scratch);
        size_t bytes = (e->scratch_bytes + 4095) & ~(size_t)4095;
        tl_scratch = aligned_alloc(64, bytes);
        tl_scratch_bytes = tl_scratch ? bytes : 0;
        if (!tl_scratch) return CDNNL_ERR_OUT_OF_MEMORY;
    }
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mp = NULL;
    st = (int)p_dnnl_memory_create(&ms, &e->src_md, engine, (void *)a);
    if (!st) st = (int)p_dnnl_memory_create(&mw, &e->wei_md, engine, (void *)b);
    if (!st) st = (int)p_dnnl_memory_create(&md, &e->dst_md, engine, c);
    if (!st && e->scratch_bytes) st = (int)p_dnnl_memory_create(&mp, &e->scratch_md, engine, tl_scratch);
    if (!st) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}, {DNNL_ARG_SCRATCHPAD, mp}};
        st = (int)p_dnnl_primitive_execute(e->prim, tl_stream, e->scratch_bytes ? 4 : 3, args);
        if (!st) st = (int)p_dnnl_stream_wait(tl_stream);
    }
    if (mp) p_dnnl_memory_destroy(mp);
    if (md) p_dnnl_memory_destroy(md);
    if (mw) p_dnnl_memory_destroy(mw);
    if (ms) p_dnnl_memory_destroy(ms);
    return st;
}
