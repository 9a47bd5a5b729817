// glibc malloc's statistics for the memory breakdown of `bench-step` (see CKernels.h).
#include "CKernels.h"
#include <stdlib.h>  // defines __GLIBC__ where glibc is the C library
#if defined(__GLIBC__)
#include <malloc.h>
#endif
void ck_malloc_stats(size_t *in_use, size_t *mmapped, size_t *free_in_heap) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 m = mallinfo2();
    *in_use = m.uordblks; *mmapped = m.hblkhd; *free_in_heap = m.fordblks;
#else
    *in_use = 0; *mmapped = 0; *free_in_heap = 0;
#endif
}
