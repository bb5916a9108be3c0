/* likeness/weights.h: a named set of model weights (name -> parameter tensor), as a checkpoint
 * holds them. Networks look their parameters up by the diffusers/HF key names; loaders fill
 * the set from safetensors files (a diffusers folder, or a single-file checkpoint whose keys
 * they rename). The set owns its tensors. */
#ifndef LIKENESS_WEIGHTS_H
#define LIKENESS_WEIGHTS_H

#include "likeness/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_weights lk_weights;

lk_weights *lk_weights_new(void);
void lk_weights_free(lk_weights *w); /* accepts NULL; frees every tensor */
/* Add a parameter (takes ownership; its name is the key; replaces nothing: a duplicate name is
 * LK_ERR_INVALID and the tensor is freed). */
lk_status lk_weights_add(lk_weights *w, lk_tensor *p);
/* Lookup by exact name; NULL if absent. */
lk_tensor *lk_weights_get(const lk_weights *w, const char *name);
/* Lookup that must succeed with the given shape (ndim/shape, or ndim < 0 for any): on failure a
 * message names the key and the expected and found shapes, and NULL is returned. */
lk_tensor *lk_weights_require(const lk_weights *w, const char *name, int ndim, const int64_t *shape);
int lk_weights_count(const lk_weights *w);
lk_tensor *lk_weights_at(const lk_weights *w, int i);
int64_t lk_weights_numel(const lk_weights *w);
size_t lk_weights_nbytes(const lk_weights *w);

/* Load every tensor of a safetensors file whose name starts with strip_prefix (NULL or "" for
 * all), renamed to add_prefix + rest. Float tensors are stored as `store` (LK_F32 widens; F16 /
 * BF16 keep or convert to half-size storage); integer tensors are skipped. */
lk_status lk_weights_load_safetensors(lk_weights *w, const char *path, const char *strip_prefix,
                                      const char *add_prefix, lk_dtype store);

#ifdef __cplusplus
}
#endif
#endif
