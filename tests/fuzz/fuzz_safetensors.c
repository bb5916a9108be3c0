/* fuzz_safetensors.c: libFuzzer target for the safetensors reader (lk_safetensors_open_memory):
 * any input must be accepted consistently or refused with a message, never crash or overread. */
#include "likeness/safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exact-size copy so ASan sees any read past the end */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open_memory(&st, buf, size, "fuzz");
    if (s == LK_OK) {
        int n = lk_safetensors_count(st);
        size_t expect = 0;
        const uint8_t *base = NULL;
        for (int i = 0; i < n; i++) {
            const lk_st_tensor *t = lk_safetensors_at(st, i);
            if (lk_safetensors_find(st, t->name) != t) abort();
            const uint8_t *p = t->data;
            if (p < buf || p + t->nbytes > buf + size) abort();
            if (!base) base = p;
            if ((size_t)(p - base) != expect) abort();
            expect += t->nbytes;
            if ((size_t)lk_st_tensor_numel(t) * lk_dtype_size(t->dtype) != t->nbytes) abort();
            if (t->dtype == LK_F32 || t->dtype == LK_F16 || t->dtype == LK_BF16) {
                size_t ne = (size_t)lk_st_tensor_numel(t);
                float *f = malloc(ne ? ne * sizeof(float) : 1);
                if (f && lk_st_tensor_to_f32(t, f, ne) != LK_OK) abort();
                free(f);
            }
        }
        if (n && base + expect != buf + size) abort();
        for (int i = 0; i < lk_safetensors_meta_count(st); i++) {
            const char *k, *v;
            lk_safetensors_meta_at(st, i, &k, &v);
            if (lk_safetensors_meta(st, k) != v) abort();
        }
        lk_safetensors_close(st);
    } else {
        if (st != NULL || strncmp(lk_last_error(), "fuzz", 4) != 0) abort();
    }
    free(buf);
    return 0;
}
