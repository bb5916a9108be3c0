/* tensor.c: tensor handles (in a ctx or persistent parameters), creation, queries, requires-grad
 * bookkeeping. Every handle holds one reference to its storage. */
#include "autograd/ctx_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lk__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

static bool shape_ok(int ndim, const int64_t *shape, size_t esz, size_t *nbytes) {
    if (ndim < 0 || ndim > LK_MAX_DIMS) return false;
    size_t n = esz;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return false;
        if (lk_mul_overflow(n, (size_t)shape[i], &n)) return false;
    }
    if (n > ((size_t)1 << 56)) return false;
    *nbytes = n;
    return true;
}

static bool push_handle(lk_ctx *ctx, lk_tensor *t) {
    if (ctx->n_handles == ctx->cap_handles) {
        size_t nc = ctx->cap_handles ? 2 * ctx->cap_handles : 256;
        lk_tensor **nh = realloc(ctx->handles, nc * sizeof *nh);
        if (!nh) return false;
        ctx->handles = nh;
        ctx->cap_handles = nc;
    }
    ctx->handles[ctx->n_handles++] = t;
    return true;
}

lk_tensor *lk__handle_new(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape) {
    size_t nb;
    if (!ctx) return NULL;
    if (ctx->status != LK_OK) return NULL;
    if ((unsigned)dt >= LK_DTYPE_COUNT || !shape_ok(ndim, shape, lk_dtype_size(dt), &nb))
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "tensor: invalid dtype or shape (ndim %d)", ndim);
    lk_tensor *t = lk__ctx_alloc(ctx, sizeof *t);
    if (!t) return NULL;
    if (!push_handle(ctx, t)) return lk_ctx_fail(ctx, LK_ERR_NOMEM, "out of memory");
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    lk__contiguous_strides(ndim, t->shape, t->stride);
    t->ctx = ctx;
    t->grad_row_lo = 0;
    t->grad_row_hi = ndim > 0 ? shape[0] : 1;
    return t;
}

static lk_tensor *new_in_ctx(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape, bool zero) {
    lk_tensor *t = lk__handle_new(ctx, dt, ndim, shape);
    if (!t) return NULL;
    t->storage = lk__storage_new(ctx, lk_nbytes(t), zero);
    if (!t->storage) return NULL;
    t->data = t->storage->data;
    t->is_leaf = true;
    return t;
}

lk_tensor *lk_tensor_new(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape) {
    return new_in_ctx(ctx, dt, ndim, shape, false);
}

lk_tensor *lk_tensor_zeros(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape) {
    return new_in_ctx(ctx, dt, ndim, shape, true);
}

lk_tensor *lk_tensor_full(lk_ctx *ctx, float value, int ndim, const int64_t *shape) {
    lk_tensor *t = new_in_ctx(ctx, LK_F32, ndim, shape, false);
    if (!t) return NULL;
    float *d = t->data;
    int64_t n = lk_numel(t);
    for (int64_t i = 0; i < n; i++) d[i] = value;
    return t;
}

lk_tensor *lk_tensor_from(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape, const void *data) {
    lk_tensor *t = new_in_ctx(ctx, dt, ndim, shape, false);
    if (t && data) memcpy(t->data, data, lk_nbytes(t));
    return t;
}

lk_tensor *lk_tensor_wrap(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape, void *data) {
    lk_tensor *t = lk__handle_new(ctx, dt, ndim, shape);
    if (!t) return NULL;
    t->storage = malloc(sizeof *t->storage);
    if (!t->storage) return lk_ctx_fail(ctx, LK_ERR_NOMEM, "out of memory");
    t->storage->refcount = 1;
    t->storage->data = data;
    t->storage->nbytes = lk_nbytes(t);
    t->storage->ctx = NULL;
    t->storage->external = true;
    t->data = data;
    t->is_leaf = true;
    return t;
}

void lk_release(lk_tensor *t) {
    if (!t || !t->storage) {
        if (t) t->data = NULL;
        return;
    }
    lk__storage_release(t->storage);
    t->storage = NULL;
    t->data = NULL;
}

/* ---- parameters ---- */
static lk_tensor *param_handle(lk_dtype dt, int ndim, const int64_t *shape, const char *name, size_t *nb) {
    if ((unsigned)dt >= LK_DTYPE_COUNT || !shape_ok(ndim, shape, lk_dtype_size(dt), nb)) {
        lk_fail(LK_ERR_INVALID, "parameter '%s': invalid dtype or shape", name ? name : "");
        return NULL;
    }
    lk_tensor *p = calloc(1, sizeof *p);
    if (!p) {
        lk_fail(LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    p->dtype = dt;
    p->ndim = ndim;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i];
    lk__contiguous_strides(ndim, p->shape, p->stride);
    p->is_leaf = true;
    p->grad_row_lo = 0;
    p->grad_row_hi = ndim > 0 ? shape[0] : 1;
    if (name) snprintf(p->name, sizeof p->name, "%s", name);
    return p;
}

lk_tensor *lk_param_new(lk_dtype dt, int ndim, const int64_t *shape, const char *name) {
    size_t nb;
    lk_tensor *p = param_handle(dt, ndim, shape, name, &nb);
    if (!p) return NULL;
    p->data = lk_aligned_calloc(nb);
    if (!p->data) {
        free(p);
        return NULL;
    }
    p->data_owned_ = true;
    return p;
}

lk_tensor *lk_param_wrap(lk_dtype dt, int ndim, const int64_t *shape, void *data, const char *name) {
    size_t nb;
    lk_tensor *p = param_handle(dt, ndim, shape, name, &nb);
    if (p) p->data = data;
    return p;
}

void lk_param_free(lk_tensor *p) {
    if (!p) return;
    if (p->data_owned_) lk_aligned_free(p->data);
    if (p->grad_owned_) lk_aligned_free(p->grad);
    free(p);
}

lk_status lk_set_requires_grad(lk_tensor *t, bool requires_grad) {
    if (!t) return lk_fail(LK_ERR_INVALID, "set_requires_grad: NULL tensor");
    if (!t->is_leaf) return lk_fail(LK_ERR_INVALID, "set_requires_grad: only leaves can be (un)frozen");
    if (requires_grad && t->dtype != LK_F32)
        return lk_fail(LK_ERR_INVALID, "set_requires_grad: '%s' is %s; only F32 tensors can train",
                       t->name, lk_dtype_name(t->dtype));
    t->requires_grad = requires_grad;
    if (!requires_grad && t->grad && t->grad_owned_) {
        if (t->ctx) lk__pool_free(t->ctx, t->grad);
        else lk_aligned_free(t->grad);
        t->grad = NULL;
        t->grad_owned_ = false;
    }
    return LK_OK;
}

lk_status lk_set_trainable_rows(lk_tensor *t, int64_t lo, int64_t hi) {
    if (!t || t->ndim != 2) return lk_fail(LK_ERR_INVALID, "set_trainable_rows: needs a 2-D tensor");
    if (lo < 0 || hi > t->shape[0] || lo >= hi)
        return lk_fail(LK_ERR_INVALID, "set_trainable_rows: rows [%lld,%lld) outside [0,%lld)",
                       (long long)lo, (long long)hi, (long long)t->shape[0]);
    if (t->grad) return lk_fail(LK_ERR_STATE, "set_trainable_rows: '%s' already has a gradient", t->name);
    t->grad_row_lo = lo;
    t->grad_row_hi = hi;
    return lk_set_requires_grad(t, true);
}

int64_t lk_grad_numel(const lk_tensor *t) {
    if (!t) return 0;
    if (t->ndim == 2) return (t->grad_row_hi - t->grad_row_lo) * t->shape[1];
    return lk_numel(t);
}

void lk_zero_grad(lk_tensor *t) {
    if (t && t->grad) memset(t->grad, 0, sizeof(float) * (size_t)lk_grad_numel(t));
}

/* ---- queries ---- */
int64_t lk_numel(const lk_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t lk_nbytes(const lk_tensor *t) { return (size_t)lk_numel(t) * lk_dtype_size(t->dtype); }

bool lk_is_contiguous(const lk_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return false;
        s *= t->shape[i];
    }
    return true;
}

bool lk_same_shape(const lk_tensor *a, const lk_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *lk_shape_str(const lk_tensor *t, char *buf, size_t len) {
    size_t o = 0;
    if (!len) return buf;
    buf[0] = '\0';
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

float lk_get_f32(const lk_tensor *t, int64_t i) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t idx = i % t->shape[d];
        i /= t->shape[d];
        off += idx * t->stride[d];
    }
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case LK_F32: { float v; memcpy(&v, p + 4 * off, 4); return v; }
    case LK_F16: { uint16_t h; memcpy(&h, p + 2 * off, 2); return lk_f16_to_f32(h); }
    case LK_BF16: { uint16_t h; memcpy(&h, p + 2 * off, 2); return lk_bf16_to_f32(h); }
    case LK_I64: { int64_t v; memcpy(&v, p + 8 * off, 8); return (float)v; }
    case LK_I32: { int32_t v; memcpy(&v, p + 4 * off, 4); return (float)v; }
    case LK_U8: return (float)p[off];
    default: return 0.0f;
    }
}
