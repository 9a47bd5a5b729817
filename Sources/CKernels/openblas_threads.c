// OpenBLAS's idle server threads (Debian's pthread build): how long they spin before sleeping.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include "CKernels.h"

int ck_openblas_set_thread_timeout(int log2_cycles) {
    if (getenv("OPENBLAS_THREAD_TIMEOUT")) return 0;  // the user's setting, read at OpenBLAS's load
    // Looked up, not linked: an OpenBLAS without them (an OpenMP build) keeps its own policy.
    void (*read_env)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "openblas_read_env");
    int (*shutdown)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
    if (!read_env || !shutdown) return -1;
    char value[16];
    snprintf(value, sizeof value, "%d", log2_cycles);
    if (setenv("OPENBLAS_THREAD_TIMEOUT", value, 0) != 0) return -1;
    read_env();
    // The server threads started at load time with the default timeout; stopped here, they are
    // started again (reading the new value) by the next threaded BLAS call.
    shutdown();
    return 1;
}
