/* likeness/safetensors.h: strict reader (mmap, zero-copy) and atomic writer of the
 * safetensors format (8-byte little-endian header length, JSON header, raw data). */
#ifndef LIKENESS_SAFETENSORS_H
#define LIKENESS_SAFETENSORS_H

#include "likeness/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)

typedef struct lk_st_tensor {
    const char *name;
    lk_dtype dtype;
    int ndim;                    /* 0 for a scalar */
    int64_t shape[LK_MAX_DIMS];
    const void *data;            /* into the mapping; may be unaligned for its dtype */
    size_t nbytes;
} lk_st_tensor;

typedef struct lk_safetensors lk_safetensors;

/* Open and validate a file (mmap). Every malformation gives LK_ERR_FORMAT (or LK_ERR_UNSUPPORTED
 * for a dtype likeness does not read) with a one-line message naming the file and the problem:
 * header length vs file size and the 100 MB cap, JSON must be an object, duplicate names,
 * offsets sorted/contiguous/no gaps/no overlap/ending exactly at end of file, byte size =
 * product(shape) * dtype size (overflow-checked), __metadata__ string->string only. */
lk_status lk_safetensors_open(lk_safetensors **out, const char *path);
/* The same checks on a buffer (borrowed; must outlive the handle). label names it in errors. */
lk_status lk_safetensors_open_memory(lk_safetensors **out, const void *buf, size_t len,
                                     const char *label);
void lk_safetensors_close(lk_safetensors *st); /* accepts NULL */
const char *lk_safetensors_path(const lk_safetensors *st);
/* Hint that bytes [data, data+nbytes) of the file will not be read again soon: for a mapped
 * file their whole pages leave this process's resident memory (they are read back from the
 * file if touched again, so the data stays valid). Lets a loader that copies tensors out keep
 * its peak memory near one copy of the weights. No-op for in-memory data. */
void lk_safetensors_evict(const lk_safetensors *st, const void *data, size_t nbytes);
int lk_safetensors_count(const lk_safetensors *st);
const lk_st_tensor *lk_safetensors_at(const lk_safetensors *st, int i); /* file (offset) order */
const lk_st_tensor *lk_safetensors_find(const lk_safetensors *st, const char *name);
/* Metadata value for key, or NULL. */
const char *lk_safetensors_meta(const lk_safetensors *st, const char *key);
int lk_safetensors_meta_count(const lk_safetensors *st);
void lk_safetensors_meta_at(const lk_safetensors *st, int i, const char **key, const char **val);
/* Copy a float tensor (F32/F16/BF16) widened to f32 into dst (numel floats). */
lk_status lk_st_tensor_to_f32(const lk_st_tensor *t, float *dst, size_t numel);
int64_t lk_st_tensor_numel(const lk_st_tensor *t);

/* ---- writer ---- */
typedef struct lk_st_writer lk_st_writer;
lk_st_writer *lk_st_writer_new(void);
void lk_st_writer_free(lk_st_writer *w); /* accepts NULL */
/* Add a tensor. The data is copied (the caller may free it at once). Names must be unique. */
lk_status lk_st_writer_add(lk_st_writer *w, const char *name, lk_dtype dt, int ndim,
                           const int64_t *shape, const void *data);
lk_status lk_st_writer_meta(lk_st_writer *w, const char *key, const char *value);
/* Write atomically: to PATH.tmp.<pid>, fsync, rename over path. Names sorted, header padded
 * with spaces to a multiple of 8 bytes. */
lk_status lk_st_writer_save(lk_st_writer *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif
