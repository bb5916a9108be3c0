/* tape.c: the define-by-run autograd tape. Ops append nodes in execution order, so running the
 * tape backwards visits every node after all of its consumers (a topological order for free).
 * Each node keeps alive only the data its backward needs and drops it right after running. */
#include "autograd/ctx_internal.h"
#include "kernels/kernels.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

bool lk__check_inputs(lk_ctx *ctx, const char *op, int n, ...) {
    if (!ctx) return false;
    if (ctx->status != LK_OK) return false;
    va_list ap;
    va_start(ap, n);
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        const lk_tensor *t = va_arg(ap, const lk_tensor *);
        if (!t) {
            lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: input %d is NULL", op, i);
            ok = false;
        } else if (!t->data) {
            lk_ctx_fail(ctx, LK_ERR_STATE, "%s: input %d was released (its data is gone)", op, i);
            ok = false;
        }
    }
    va_end(ap);
    return ok;
}

lk_tensor *lk__new_f32(lk_ctx *ctx, int ndim, const int64_t *shape) {
    lk_tensor *t = lk_tensor_new(ctx, LK_F32, ndim, shape);
    if (t) t->is_leaf = false;
    return t;
}

lk_tensor *lk__new_like(lk_ctx *ctx, const lk_tensor *x) { return lk__new_f32(ctx, x->ndim, x->shape); }

bool lk__needs_grad(const lk_tensor *t) { return t && t->requires_grad; }

lk_node *lk__record(lk_ctx *ctx, const char *op, lk_backward_fn bw, lk_tensor *out, int n_in,
                    lk_tensor *const *in) {
    if (!ctx || !ctx->grad_enabled || !out || ctx->status != LK_OK) return NULL;
    bool any = false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) any = true;
    if (!any) return NULL;
    lk_node *nd = lk__ctx_alloc(ctx, sizeof *nd);
    lk_tensor **ins = nd ? lk__ctx_alloc(ctx, sizeof(lk_tensor *) * (size_t)(n_in > 0 ? n_in : 1)) : NULL;
    if (!ins) return NULL;
    if (ctx->tape_n == ctx->tape_cap) {
        int nc = ctx->tape_cap ? 2 * ctx->tape_cap : 256;
        lk_node **nt = realloc(ctx->tape, sizeof *nt * (size_t)nc);
        if (!nt) {
            lk_ctx_fail(ctx, LK_ERR_NOMEM, "out of memory growing the tape");
            return NULL;
        }
        ctx->tape = nt;
        ctx->tape_cap = nc;
    }
    for (int i = 0; i < n_in; i++) ins[i] = in[i];
    nd->op = op;
    nd->backward = bw;
    nd->out = out;
    nd->n_in = n_in;
    nd->in = ins;
    out->requires_grad = true;
    out->is_leaf = false;
    out->grad_fn = nd;
    ctx->tape[ctx->tape_n++] = nd;
    return nd;
}

int lk__save(lk_ctx *ctx, lk_node *nd, lk_tensor *t) {
    if (!nd || !t || !t->data || nd->n_saved >= LK_NODE_MAX_SAVED) {
        lk_ctx_fail(ctx, LK_ERR_STATE, "%s: cannot save a tensor for backward", nd ? nd->op : "?");
        return 0;
    }
    int i = nd->n_saved++;
    nd->saved[i] = t->data;
    nd->saved_st[i] = t->storage;
    lk__storage_retain(t->storage);
    return i + 1;
}

float *lk__node_buffer(lk_ctx *ctx, lk_node *nd, size_t nfloats) {
    if (!nd || nd->n_saved >= LK_NODE_MAX_SAVED) {
        lk_ctx_fail(ctx, LK_ERR_STATE, "node buffer: too many saved slots");
        return NULL;
    }
    size_t nb;
    if (lk_mul_overflow(nfloats, sizeof(float), &nb)) {
        lk_ctx_fail(ctx, LK_ERR_NOMEM, "node buffer overflows");
        return NULL;
    }
    lk_storage *st = lk__storage_new(ctx, nb, false);
    if (!st) return NULL;
    int i = nd->n_saved++;
    nd->saved[i] = st->data;
    nd->saved_st[i] = st;
    return st->data;
}

void lk__node_release(lk_ctx *ctx, lk_node *nd) {
    if (!nd || nd->done) return;
    for (int i = 0; i < nd->n_saved; i++) {
        lk__storage_release(nd->saved_st[i]);
        nd->saved_st[i] = NULL;
        nd->saved[i] = NULL;
    }
    nd->n_saved = 0;
    if (nd->release_extra) nd->release_extra(nd);
    nd->done = true;
    (void)ctx;
}

static float *grad_alloc(lk_ctx *ctx, lk_tensor *t, size_t n) {
    if (t->ctx) {
        t->grad = lk__pool_alloc(t->ctx, n * sizeof(float), true);
    } else {
        t->grad = lk_aligned_calloc(n * sizeof(float));
        if (!t->grad) lk_ctx_fail(ctx, LK_ERR_NOMEM, "out of memory for the gradient of '%s'", t->name);
    }
    if (t->grad) t->grad_owned_ = true;
    return t->grad;
}

float *lk__grad(lk_ctx *ctx, lk_tensor *t) {
    if (!t || !t->requires_grad) return NULL;
    if (t->is_leaf && t->ndim == 2 && (t->grad_row_lo != 0 || t->grad_row_hi != t->shape[0])) {
        lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED,
                    "'%s' trains only rows [%lld,%lld); only the embedding op supports that", t->name,
                    (long long)t->grad_row_lo, (long long)t->grad_row_hi);
        return NULL;
    }
    if (t->grad) return t->grad;
    return grad_alloc(ctx, t, (size_t)lk_numel(t));
}

/* dst = src, split over the threads for large buffers */
static void copy_par(float *dst, const float *src, size_t n) {
    if (n < ((size_t)1 << 18)) {
        memcpy(dst, src, n * sizeof(float));
        return;
    }
    const size_t chunk = (size_t)1 << 16;
    long nc = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static)
    for (long c = 0; c < nc; c++) {
        size_t o = (size_t)c * chunk, len = n - o < chunk ? n - o : chunk;
        memcpy(dst + o, src + o, len * sizeof(float));
    }
}

lk_status lk__grad_add(lk_ctx *ctx, lk_tensor *t, const float *src) {
    if (!t || !t->requires_grad) return LK_OK;
    size_t n = (size_t)lk_numel(t);
    bool plain = !(t->is_leaf && t->ndim == 2 && (t->grad_row_lo != 0 || t->grad_row_hi != t->shape[0]));
    if (!t->grad && t->ctx && plain) {
        /* fresh buffer: fill by copy instead of zeroing and adding */
        t->grad = lk__pool_alloc(t->ctx, n * sizeof(float), false);
        if (!t->grad) return ctx->status ? ctx->status : LK_ERR_NOMEM;
        t->grad_owned_ = true;
        copy_par(t->grad, src, n);
        return LK_OK;
    }
    float *g = lk__grad(ctx, t);
    if (!g) return ctx->status ? ctx->status : LK_ERR_NOMEM;
    lk_axpy(g, 1.0f, src, n);
    return LK_OK;
}

float *lk__grad_rows(lk_ctx *ctx, lk_tensor *t, int64_t *lo, int64_t *hi) {
    if (!t || !t->requires_grad) return NULL;
    if (t->is_leaf && t->ndim == 2) {
        *lo = t->grad_row_lo;
        *hi = t->grad_row_hi;
    } else {
        *lo = 0;
        *hi = t->ndim > 0 ? t->shape[0] : 1;
    }
    if (t->grad) return t->grad;
    return grad_alloc(ctx, t, (size_t)lk_grad_numel(t));
}

int lk_tape_size(const lk_ctx *ctx) { return ctx ? ctx->tape_n : 0; }

static void free_grad(lk_ctx *ctx, lk_tensor *t) {
    if (t->is_leaf || t->retain_grad || !t->grad) return;
    if (t->grad_owned_) {
        if (t->ctx) lk__pool_free(t->ctx, t->grad);
        else lk_aligned_free(t->grad);
    }
    t->grad = NULL;
    t->grad_owned_ = false;
    (void)ctx;
}

lk_status lk__run_backward(lk_ctx *ctx) {
    lk_status s = LK_OK;
    for (int i = ctx->tape_n - 1; i >= 0; i--) {
        lk_node *nd = ctx->tape[i];
        if (nd->done) continue;
        if (s == LK_OK && nd->out->grad) {
            s = nd->backward(ctx, nd, nd->out->grad);
            if (s == LK_OK && ctx->status != LK_OK) s = ctx->status;
            if (s != LK_OK) lk_fail_prefix(s, "backward of %s: ", nd->op);
        }
        lk__node_release(ctx, nd);
        free_grad(ctx, nd->out);
    }
    ctx->tape_n = 0;
    return s;
}

static lk_status seed(lk_ctx *ctx, lk_tensor *out, const float *dout) {
    if (!ctx || !out) return lk_fail(LK_ERR_INVALID, "backward: NULL ctx or output");
    if (ctx->status != LK_OK)
        return lk_fail(ctx->status, "backward: an earlier op failed: %s", lk_last_error());
    if (!out->requires_grad)
        return lk_fail(LK_ERR_STATE, "backward: the output does not require grad (nothing to train,"
                                     " or it was computed in no-grad mode)");
    if (dout) {
        lk_status s = lk__grad_add(ctx, out, dout);
        if (s != LK_OK) return s;
    } else {
        float *g = lk__grad(ctx, out);
        if (!g) return ctx->status ? ctx->status : LK_ERR_NOMEM;
        int64_t n = lk_numel(out);
        for (int64_t i = 0; i < n; i++) g[i] += 1.0f;
    }
    /* drop the handle references of activations so their memory goes once backward is done
     * with it (the tape holds its own references to what it needs) */
    for (size_t i = 0; i < ctx->n_handles; i++) {
        lk_tensor *t = ctx->handles[i];
        if (t != out && !t->is_leaf && !t->retain_grad) lk_release(t);
    }
    return LK_OK;
}

lk_status lk_backward(lk_ctx *ctx, lk_tensor *loss) {
    if (loss && lk_numel(loss) != 1)
        return lk_fail(LK_ERR_INVALID, "backward: loss must have one element (use lk_backward_from)");
    lk_status s = seed(ctx, loss, NULL);
    return s != LK_OK ? s : lk__run_backward(ctx);
}

lk_status lk_backward_from(lk_ctx *ctx, lk_tensor *out, const float *dout) {
    if (!dout) return lk_fail(LK_ERR_INVALID, "backward_from: NULL upstream gradient");
    lk_status s = seed(ctx, out, dout);
    return s != LK_OK ? s : lk__run_backward(ctx);
}

/* ---- gradient checkpointing ---- */
typedef struct ckpt_extra {
    lk_checkpoint_fn fn;
    void *ud;
} ckpt_extra;

static lk_status checkpoint_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    ckpt_extra *ex = nd->extra;
    int n = nd->n_in;
    lk_tensor **det = lk__ctx_alloc(ctx, sizeof(lk_tensor *) * (size_t)n);
    if (!det) return ctx->status;
    /* fresh leaves over the saved input data (the original handles may have been released) */
    for (int i = 0; i < n; i++) {
        lk_tensor *src = nd->in[i];
        lk_tensor *d = lk__handle_new(ctx, src->dtype, src->ndim, src->shape);
        if (!d) return ctx->status;
        memcpy(d->stride, src->stride, sizeof d->stride);
        d->storage = nd->saved_st[i];
        lk__storage_retain(d->storage);
        d->data = (void *)nd->saved[i];
        d->is_leaf = true;
        d->requires_grad = src->requires_grad;
        det[i] = d;
    }
    /* record the recomputation on a private tape */
    lk_node **saved_tape = ctx->tape;
    int saved_n = ctx->tape_n, saved_cap = ctx->tape_cap;
    ctx->tape = NULL;
    ctx->tape_n = ctx->tape_cap = 0;
    bool ge = ctx->grad_enabled;
    ctx->grad_enabled = true;
    size_t mark = ctx->n_handles;
    lk_tensor *out = ex->fn(ctx, det, n, ex->ud);
    lk_status s = ctx->status;
    if (s == LK_OK && !out) s = lk_fail(LK_ERR_STATE, "checkpoint: recomputation returned NULL");
    if (s == LK_OK && !lk_same_shape(out, nd->out))
        s = lk_fail(LK_ERR_STATE, "checkpoint: recomputation changed the output shape");
    if (s == LK_OK && out->requires_grad) {
        s = lk__grad_add(ctx, out, dout);
        if (s == LK_OK) {
            for (size_t i = mark; i < ctx->n_handles; i++) {
                lk_tensor *t = ctx->handles[i];
                if (t != out && !t->is_leaf) lk_release(t);
            }
            s = lk__run_backward(ctx);
        }
    } else {
        for (int i = ctx->tape_n - 1; i >= 0; i--) lk__node_release(ctx, ctx->tape[i]);
        ctx->tape_n = 0;
    }
    free(ctx->tape);
    ctx->tape = saved_tape;
    ctx->tape_n = saved_n;
    ctx->tape_cap = saved_cap;
    ctx->grad_enabled = ge;
    if (out) {
        lk_release(out);
        if (out->grad && out->grad_owned_) lk__pool_free(ctx, out->grad);
        out->grad = NULL;
    }
    /* route the detached inputs' gradients to the real inputs */
    for (int i = 0; i < n && s == LK_OK; i++) {
        if (!det[i]->grad) continue;
        float *g = lk__grad(ctx, nd->in[i]);
        if (!g) {
            s = ctx->status;
            break;
        }
        lk_axpy(g, 1.0f, det[i]->grad, (size_t)lk_numel(det[i]));
    }
    for (int i = 0; i < n; i++) {
        lk_release(det[i]);
        if (det[i]->grad && det[i]->grad_owned_) lk__pool_free(ctx, det[i]->grad);
        det[i]->grad = NULL;
    }
    return s;
}

lk_tensor *lk_checkpoint(lk_ctx *ctx, lk_checkpoint_fn fn, void *ud, lk_tensor *const *inputs,
                         int n_inputs) {
    if (!ctx || !fn || ctx->status != LK_OK) return NULL;
    for (int i = 0; i < n_inputs; i++)
        if (!inputs[i] || !inputs[i]->data)
            return lk_ctx_fail(ctx, LK_ERR_INVALID, "checkpoint: input %d is NULL or released", i);
    bool any = false;
    for (int i = 0; i < n_inputs; i++) any = any || inputs[i]->requires_grad;
    if (!ctx->grad_enabled || !any) return fn(ctx, inputs, n_inputs, ud);
    size_t mark = ctx->n_handles;
    ctx->grad_enabled = false;
    lk_tensor *out = fn(ctx, inputs, n_inputs, ud);
    ctx->grad_enabled = true;
    if (!out) return NULL;
    /* everything the block made except its output is garbage now */
    for (size_t i = mark; i < ctx->n_handles; i++) {
        lk_tensor *t = ctx->handles[i];
        bool is_input = false;
        for (int k = 0; k < n_inputs; k++) is_input = is_input || inputs[k] == t;
        if (t != out && !is_input) lk_release(t);
    }
    lk_node *nd = lk__record(ctx, "checkpoint", checkpoint_backward, out, n_inputs, inputs);
    if (!nd) return ctx->status == LK_OK ? out : NULL;
    ckpt_extra *ex = lk__ctx_alloc(ctx, sizeof *ex);
    if (!ex) return NULL;
    ex->fn = fn;
    ex->ud = ud;
    nd->extra = ex;
    if (n_inputs > LK_NODE_MAX_SAVED)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "checkpoint: at most %d inputs", LK_NODE_MAX_SAVED);
    for (int i = 0; i < n_inputs; i++)
        if (!lk__save(ctx, nd, inputs[i])) return NULL;
    return out;
}
