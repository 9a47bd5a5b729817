// See CDNNL.h. One engine for the process; per calling thread a stream, a user scratchpad and
// the OpenMP team size last set; a mutex-protected open-addressing table of matmul primitives.
#include "CDNNL.h"
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <dlfcn.h>
#include <pthread.h>
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

static _Thread_local dnnl_stream_t tl_stream = NULL;
static _Thread_local void *tl_scratch = NULL;
static _Thread_local size_t tl_scratch_bytes = 0;
static _Thread_local int tl_threads = 0;

static void do_init(void) {
    omp_set_threads = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    if (((int)isa & (int)dnnl_cpu_isa_avx512_core_bf16) != (int)dnnl_cpu_isa_avx512_core_bf16) {
        init_status = CDNNL_ERR_NO_BF16_ISA;
        return;
    }
    // The user scratchpad keeps concurrent executions from different threads apart.
    init_status = (int)dnnl_engine_create(&engine, dnnl_cpu, 0);
}

int CDNNL_init(void) {
    pthread_once(&init_once, do_init);
    return init_status;
}

int CDNNL_effective_isa(void) { return (int)dnnl_get_effective_cpu_isa(); }

int CDNNL_version(void) {
    const dnnl_version_t *v = dnnl_version();
    return v->major * 10000 + v->minor * 100 + v->patch;
}

const char *CDNNL_status_string(int status) {
    switch (status) {
    case CDNNL_ERR_NO_BF16_ISA: return "this CPU has no bf16 instructions oneDNN uses (needs avx512_bf16 or AMX)";
    case CDNNL_ERR_CACHE_FULL: return "oneDNN primitive cache full (too many distinct GEMM shapes)";
    case CDNNL_ERR_OUT_OF_MEMORY: return "out of memory";
    case CDNNL_ERR_BAD_ARGUMENT: return "bad GEMM argument";
    default: return dnnl_status2str((dnnl_status_t)status);
    }
}

long CDNNL_primitive_count(void) {
    pthread_mutex_lock(&cache_lock);
    long n = cache_count;
    pthread_mutex_unlock(&cache_lock);
    return n;
}

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
        return (int)dnnl_memory_desc_init_by_strides(md, 3, dims, dt, strides);
    }
    dnnl_dims_t dims = {d0, d1}, strides = {s0, s1};
    return (int)dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
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
    if ((st = (int)dnnl_matmul_desc_init(&desc, &e->src_md, &e->wei_md, NULL, &e->dst_md))) return st;
    dnnl_primitive_attr_t attr;
    if ((st = (int)dnnl_primitive_attr_create(&attr))) return st;
    st = (int)dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (!st && key->alpha != 1.0f) st = (int)dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha);
    if (!st && key->beta != 0.0f) {
        dnnl_post_ops_t po;
        st = (int)dnnl_post_ops_create(&po);
        if (!st) st = (int)dnnl_post_ops_append_sum(po, key->beta);
        if (!st) st = (int)dnnl_primitive_attr_set_post_ops(attr, po);
        dnnl_post_ops_destroy(po);
    }
    if (!st) st = (int)dnnl_primitive_desc_create(&e->pd, &desc, attr, engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (st) return st;
    if ((st = (int)dnnl_primitive_create(&e->prim, e->pd))) { dnnl_primitive_desc_destroy(e->pd); return st; }
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(e->pd, dnnl_query_scratchpad_md, 0);
    if (smd) { e->scratch_md = *smd; e->scratch_bytes = dnnl_memory_desc_get_size(smd); }
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
    if ((st = (int)dnnl_primitive_desc_query(e->pd, dnnl_query_impl_info_str, 0, &impl))) return st;
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
    if (!tl_stream && (st = (int)dnnl_stream_create(&tl_stream, engine, dnnl_stream_default_flags))) { tl_stream = NULL; return st; }
    if (e->scratch_bytes > tl_scratch_bytes) {
        free(tl_scratch);
        size_t bytes = (e->scratch_bytes + 4095) & ~(size_t)4095;
        tl_scratch = aligned_alloc(64, bytes);
        tl_scratch_bytes = tl_scratch ? bytes : 0;
        if (!tl_scratch) return CDNNL_ERR_OUT_OF_MEMORY;
    }
    dnnl_memory_t ms = NULL, mw = NULL, md = NULL, mp = NULL;
    st = (int)dnnl_memory_create(&ms, &e->src_md, engine, (void *)a);
    if (!st) st = (int)dnnl_memory_create(&mw, &e->wei_md, engine, (void *)b);
    if (!st) st = (int)dnnl_memory_create(&md, &e->dst_md, engine, c);
    if (!st && e->scratch_bytes) st = (int)dnnl_memory_create(&mp, &e->scratch_md, engine, tl_scratch);
    if (!st) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}, {DNNL_ARG_SCRATCHPAD, mp}};
        st = (int)dnnl_primitive_execute(e->prim, tl_stream, e->scratch_bytes ? 4 : 3, args);
        if (!st) st = (int)dnnl_stream_wait(tl_stream);
    }
    if (mp) dnnl_memory_destroy(mp);
    if (md) dnnl_memory_destroy(md);
    if (mw) dnnl_memory_destroy(mw);
    if (ms) dnnl_memory_destroy(ms);
    return st;
}
