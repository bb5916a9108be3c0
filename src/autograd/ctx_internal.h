/* ctx_internal.h (internal): the ctx, its caching memory pool and refcounted storage. */
#ifndef LK_CTX_INTERNAL_H
#define LK_CTX_INTERNAL_H

#include "autograd/autograd.h"

struct lk_storage {
    int refcount;
    void *data;       /* pool block (ctx != NULL), aligned heap block, or external memory */
    size_t nbytes;
    lk_ctx *ctx;      /* pool owner; NULL for heap/external */
    bool external;    /* not freed */
};

typedef struct lk_pool_block {
    void *p;
    size_t cap;
} lk_pool_block;

typedef struct lk_chunk {
    struct lk_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
} lk_chunk;

struct lk_ctx {
    lk_status status;
    bool grad_enabled;
    /* tape */
    lk_node **tape;
    int tape_n, tape_cap;
    /* handles created in this ctx (released at reset) */
    lk_tensor **handles;
    size_t n_handles, cap_handles;
    /* small-object arena (handles, nodes, arrays) */
    lk_chunk *chunks;
    /* caching pool of large blocks */
    lk_pool_block *free_blocks;
    size_t n_free, cap_free;
    size_t live_bytes, peak_bytes, cached_bytes;
};

/* pool: blocks carry a hidden header; lk__pool_free returns them to the free list */
void *lk__pool_alloc(lk_ctx *ctx, size_t nbytes, bool zero);
void lk__pool_free(lk_ctx *ctx, void *p);
lk_storage *lk__storage_new(lk_ctx *ctx, size_t nbytes, bool zero);
void lk__storage_retain(lk_storage *st);
void lk__storage_release(lk_storage *st);
/* new handle in ctx with given dtype/shape (contiguous strides), no storage */
lk_tensor *lk__handle_new(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape);
void lk__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
/* run the tape backward from out with its grad already seeded */
lk_status lk__run_backward(lk_ctx *ctx);
void lk__node_release(lk_ctx *ctx, lk_node *nd);

#endif
