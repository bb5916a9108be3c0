/* mem.c: aligned allocation and overflow-checked size arithmetic. */
#include "likeness/core.h"

#include <stdlib.h>
#include <string.h>

bool lk_mul_overflow(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }
bool lk_add_overflow(size_t a, size_t b, size_t *out) { return __builtin_add_overflow(a, b, out); }

void *lk_aligned_alloc(size_t nbytes) {
    size_t n;
    if (nbytes == 0) nbytes = 1;
    if (lk_add_overflow(nbytes, LK_ALIGN - 1, &n)) {
        lk_fail(LK_ERR_NOMEM, "allocation of %zu bytes overflows", nbytes);
        return NULL;
    }
    n -= n % LK_ALIGN;
    void *p = aligned_alloc(LK_ALIGN, n);
    if (!p) lk_fail(LK_ERR_NOMEM, "out of memory allocating %zu bytes", nbytes);
    return p;
}

void *lk_aligned_calloc(size_t nbytes) {
    void *p = lk_aligned_alloc(nbytes);
    if (p) memset(p, 0, nbytes ? nbytes : 1);
    return p;
}

void lk_aligned_free(void *p) { free(p); }
