/* ctx.c: the activation context: a caching pool for large buffers (so a training step reuses
 * the previous step's memory instead of faulting in fresh pages), a small-object arena for
 * handles and tape nodes, and the sticky error of straight-line model code. */
#include "autograd/ctx_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LK_POOL_HDR 64
#define LK_CHUNK_BYTES (256u * 1024u)

lk_ctx *lk_ctx_new(void) {
    lk_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        lk_fail(LK_ERR_NOMEM, "out of memory creating a ctx");
        return NULL;
    }
    ctx->grad_enabled = true;
    return ctx;
}

static void chunks_free(lk_chunk *c) {
    while (c) {
        lk_chunk *n = c->next;
        free(c);
        c = n;
    }
}

void lk_ctx_trim(lk_ctx *ctx) {
    if (!ctx) return;
    for (size_t i = 0; i < ctx->n_free; i++) lk_aligned_free(ctx->free_blocks[i].p);
    ctx->n_free = 0;
    ctx->cached_bytes = 0;
}

void lk_ctx_reset(lk_ctx *ctx) {
    if (!ctx) return;
    for (int i = ctx->tape_n - 1; i >= 0; i--) lk__node_release(ctx, ctx->tape[i]);
    ctx->tape_n = 0;
    for (size_t i = 0; i < ctx->n_handles; i++) {
        lk_tensor *t = ctx->handles[i];
        lk_release(t);
        if (t->grad && t->grad_owned_) lk__pool_free(ctx, t->grad);
        t->grad = NULL;
    }
    ctx->n_handles = 0;
    if (ctx->chunks) { /* keep the first (newest) chunk for reuse */
        chunks_free(ctx->chunks->next);
        ctx->chunks->next = NULL;
        ctx->chunks->used = 0;
    }
    ctx->status = LK_OK;
    ctx->grad_enabled = true;
}

void lk_ctx_free(lk_ctx *ctx) {
    if (!ctx) return;
    lk_ctx_reset(ctx);
    lk_ctx_trim(ctx);
    chunks_free(ctx->chunks);
    free(ctx->tape);
    free(ctx->handles);
    free(ctx->free_blocks);
    free(ctx);
}

lk_status lk_ctx_status(const lk_ctx *ctx) { return ctx ? ctx->status : LK_ERR_INVALID; }
void lk_ctx_clear_status(lk_ctx *ctx) {
    if (ctx) ctx->status = LK_OK;
}

lk_tensor *lk_ctx_fail(lk_ctx *ctx, lk_status s, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lk_fail(s, "%s", buf);
    if (ctx && ctx->status == LK_OK) ctx->status = s;
    return NULL;
}

size_t lk_ctx_live_bytes(const lk_ctx *ctx) { return ctx ? ctx->live_bytes : 0; }
size_t lk_ctx_peak_bytes(const lk_ctx *ctx) { return ctx ? ctx->peak_bytes : 0; }
void lk_ctx_reset_peak(lk_ctx *ctx) {
    if (ctx) ctx->peak_bytes = ctx->live_bytes;
}

void lk_set_grad_enabled(lk_ctx *ctx, bool enabled) {
    if (ctx) ctx->grad_enabled = enabled;
}
bool lk_grad_enabled(const lk_ctx *ctx) { return ctx && ctx->grad_enabled; }

void *lk__ctx_alloc(lk_ctx *ctx, size_t nbytes) {
    nbytes = (nbytes + 15u) & ~(size_t)15u;
    lk_chunk *c = ctx->chunks;
    if (!c || c->cap - c->used < nbytes) {
        size_t cap = nbytes > LK_CHUNK_BYTES ? nbytes : LK_CHUNK_BYTES;
        lk_chunk *n = malloc(sizeof *n + cap);
        if (!n) {
            lk_ctx_fail(ctx, LK_ERR_NOMEM, "out of memory (%zu bytes of ctx arena)", nbytes);
            return NULL;
        }
        n->cap = cap;
        n->used = 0;
        n->next = c;
        ctx->chunks = c = n;
    }
    void *p = c->mem + c->used;
    c->used += nbytes;
    memset(p, 0, nbytes);
    return p;
}

/* Pool: blocks are rounded up to a size class (1/8-octave steps above 64 KiB) so that a block
 * freed by one step fits the same request in the next; a request takes the smallest cached
 * block that is large enough and at most 2x the request. */
static size_t size_class(size_t n) {
    if (n <= 65536) return (n + 4095u) & ~(size_t)4095u;
    size_t p = 65536;
    while (p < n && p < ((size_t)1 << 62)) p <<= 1; /* p/2 < n <= p */
    size_t step = p / 16;
    return (n + step - 1) / step * step;
}

/* memset, split over the threads for large buffers (zeroed gradients are on the hot path) */
static void zero_fill(void *p, size_t nbytes) {
    if (nbytes < ((size_t)1 << 20)) {
        memset(p, 0, nbytes);
        return;
    }
    const size_t chunk = (size_t)1 << 18;
    long nchunks = (long)((nbytes + chunk - 1) / chunk);
#pragma omp parallel for schedule(static)
    for (long c = 0; c < nchunks; c++) {
        size_t off = (size_t)c * chunk;
        size_t len = nbytes - off < chunk ? nbytes - off : chunk;
        memset((char *)p + off, 0, len);
    }
}

void *lk__pool_alloc(lk_ctx *ctx, size_t nbytes, bool zero) {
    size_t need;
    if (lk_add_overflow(nbytes, LK_POOL_HDR, &need)) {
        lk_ctx_fail(ctx, LK_ERR_NOMEM, "allocation of %zu bytes overflows", nbytes);
        return NULL;
    }
    need = size_class(need);
    size_t best = (size_t)-1;
    for (size_t i = 0; i < ctx->n_free; i++) {
        size_t cap = ctx->free_blocks[i].cap;
        if (cap >= need && cap <= 2 * need && (best == (size_t)-1 || cap < ctx->free_blocks[best].cap))
            best = i;
    }
    unsigned char *blk;
    size_t cap;
    if (best != (size_t)-1) {
        blk = ctx->free_blocks[best].p;
        cap = ctx->free_blocks[best].cap;
        ctx->free_blocks[best] = ctx->free_blocks[--ctx->n_free];
        ctx->cached_bytes -= cap;
    } else {
        blk = lk_aligned_alloc(need);
        if (!blk) {
            lk_ctx_trim(ctx); /* retry after returning cached memory */
            blk = lk_aligned_alloc(need);
            if (!blk) {
                lk_ctx_fail(ctx, LK_ERR_NOMEM, "out of memory allocating %zu bytes of activations",
                            nbytes);
                return NULL;
            }
        }
        cap = need;
    }
    memcpy(blk, &cap, sizeof cap);
    ctx->live_bytes += cap;
    if (ctx->live_bytes > ctx->peak_bytes) ctx->peak_bytes = ctx->live_bytes;
    void *p = blk + LK_POOL_HDR;
    if (zero) zero_fill(p, nbytes);
    return p;
}

void lk__pool_free(lk_ctx *ctx, void *p) {
    if (!p) return;
    unsigned char *blk = (unsigned char *)p - LK_POOL_HDR;
    size_t cap;
    memcpy(&cap, blk, sizeof cap);
    ctx->live_bytes -= cap;
    if (ctx->n_free == ctx->cap_free) {
        size_t nc = ctx->cap_free ? 2 * ctx->cap_free : 64;
        lk_pool_block *nb = realloc(ctx->free_blocks, nc * sizeof *nb);
        if (!nb) {
            lk_aligned_free(blk);
            return;
        }
        ctx->free_blocks = nb;
        ctx->cap_free = nc;
    }
    ctx->free_blocks[ctx->n_free].p = blk;
    ctx->free_blocks[ctx->n_free].cap = cap;
    ctx->n_free++;
    ctx->cached_bytes += cap;
}

float *lk__scratch(lk_ctx *ctx, size_t nfloats) {
    size_t nb;
    if (lk_mul_overflow(nfloats, sizeof(float), &nb)) {
        lk_ctx_fail(ctx, LK_ERR_NOMEM, "scratch of %zu floats overflows", nfloats);
        return NULL;
    }
    return lk__pool_alloc(ctx, nb, false);
}

void lk__scratch_free(lk_ctx *ctx, float *p) { lk__pool_free(ctx, p); }

lk_storage *lk__storage_new(lk_ctx *ctx, size_t nbytes, bool zero) {
    lk_storage *st = malloc(sizeof *st);
    if (!st) {
        if (ctx) lk_ctx_fail(ctx, LK_ERR_NOMEM, "out of memory");
        else lk_fail(LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    st->refcount = 1;
    st->nbytes = nbytes;
    st->external = false;
    st->ctx = ctx;
    st->data = ctx ? lk__pool_alloc(ctx, nbytes, zero)
                   : (zero ? lk_aligned_calloc(nbytes) : lk_aligned_alloc(nbytes));
    if (!st->data) {
        free(st);
        return NULL;
    }
    return st;
}

void lk__storage_retain(lk_storage *st) {
    if (st) st->refcount++;
}

void lk__storage_release(lk_storage *st) {
    if (!st || --st->refcount > 0) return;
    if (!st->external) {
        if (st->ctx) lk__pool_free(st->ctx, st->data);
        else lk_aligned_free(st->data);
    }
    free(st);
}

size_t lk_ctx_mark(const lk_ctx *ctx) { return ctx ? ctx->n_handles : 0; }

void lk_ctx_release_since(lk_ctx *ctx, size_t mark, lk_tensor *const *keep, int n_keep) {
    if (!ctx) return;
    for (size_t i = mark; i < ctx->n_handles; i++) {
        lk_tensor *t = ctx->handles[i];
        bool kept = false;
        for (int k = 0; k < n_keep; k++)
            if (keep[k] == t) kept = true;
        if (!kept) lk_release(t);
    }
}
