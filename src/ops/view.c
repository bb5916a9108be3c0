/* view.c: reshape, permute/transpose, narrow (views sharing storage, no copies), contiguous,
 * cast and detach. Gradients are always contiguous in the logical shape of the tensor they
 * belong to, so a view's backward scatters the upstream gradient with the view's strides. */
#include "autograd/ctx_internal.h"
#include "kernels/kernels.h"

#include <string.h>

static lk_tensor *view_of(lk_ctx *ctx, lk_tensor *x, int ndim, const int64_t *shape,
                          const int64_t *stride, int64_t offset) {
    lk_tensor *v = lk__handle_new(ctx, x->dtype, ndim, shape);
    if (!v) return NULL;
    if (stride) memcpy(v->stride, stride, sizeof(int64_t) * (size_t)ndim);
    v->storage = x->storage;
    lk__storage_retain(v->storage);
    v->data = (unsigned char *)x->data + offset * (int64_t)lk_dtype_size(x->dtype);
    v->is_leaf = false;
    return v;
}

/* dx += dout, both contiguous with the same numel */
static lk_status same_layout_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    return lk__grad_add(ctx, nd->in[0], dout);
}

lk_tensor *lk_contiguous(lk_ctx *ctx, lk_tensor *x) {
    if (!lk__check_inputs(ctx, "contiguous", 1, x)) return NULL;
    bool contig = lk_is_contiguous(x);
    if (x->dtype == LK_F32 && contig) return x;
    if (x->dtype != LK_F32 && x->dtype != LK_F16 && x->dtype != LK_BF16)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "contiguous: %s tensor is not a float tensor",
                           lk_dtype_name(x->dtype));
    lk_tensor *y = lk__new_f32(ctx, x->ndim, x->shape);
    if (!y) return NULL;
    int64_t n = lk_numel(x);
    if (contig) lk_widen_f32(y->data, x->data, x->dtype, (size_t)n);
    else if (x->dtype == LK_F32) lk_copy_strided(y->data, x->data, x->ndim, x->shape, x->stride);
    else {
        float *d = y->data;
        for (int64_t i = 0; i < n; i++) d[i] = lk_get_f32(x, i);
    }
    lk__record(ctx, "contiguous", same_layout_backward, y, 1, &x);
    return y;
}

lk_tensor *lk_reshape(lk_ctx *ctx, lk_tensor *x, int ndim, const int64_t *shape) {
    if (!lk__check_inputs(ctx, "reshape", 1, x)) return NULL;
    if (ndim < 0 || ndim > LK_MAX_DIMS)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "reshape: %d dims (max %d)", ndim, LK_MAX_DIMS);
    int64_t sh[LK_MAX_DIMS], known = 1, n = lk_numel(x);
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        sh[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0) return lk_ctx_fail(ctx, LK_ERR_INVALID, "reshape: more than one -1");
            infer = i;
        } else if (shape[i] < 0) {
            return lk_ctx_fail(ctx, LK_ERR_INVALID, "reshape: negative size %lld", (long long)shape[i]);
        } else {
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || n % known)
            return lk_ctx_fail(ctx, LK_ERR_INVALID, "reshape: cannot infer -1 for %lld elements",
                               (long long)n);
        sh[infer] = n / known;
        known *= sh[infer];
    }
    char b[128];
    if (known != n)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "reshape: %s has %lld elements, new shape has %lld",
                           lk_shape_str(x, b, sizeof b), (long long)n, (long long)known);
    lk_tensor *src = lk_is_contiguous(x) ? x : lk_contiguous(ctx, x);
    if (!src) return NULL;
    lk_tensor *y = view_of(ctx, src, ndim, sh, NULL, 0);
    if (!y) return NULL;
    lk__record(ctx, "reshape", same_layout_backward, y, 1, &src);
    return y;
}

static lk_status permute_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    lk_tensor *x = nd->in[0], *y = nd->out;
    float *dx = lk__grad(ctx, x);
    if (!dx) return ctx->status;
    int64_t xs[LK_MAX_DIMS], st[LK_MAX_DIMS];
    lk__contiguous_strides(x->ndim, x->shape, xs);
    for (int i = 0; i < y->ndim; i++) st[i] = xs[nd->iarg[i]];
    lk_add_strided(dx, st, dout, y->ndim, y->shape);
    return LK_OK;
}

lk_tensor *lk_permute(lk_ctx *ctx, lk_tensor *x, const int *perm) {
    if (!lk__check_inputs(ctx, "permute", 1, x)) return NULL;
    int seen = 0;
    int64_t sh[LK_MAX_DIMS], st[LK_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || (seen >> perm[i]) & 1)
            return lk_ctx_fail(ctx, LK_ERR_INVALID, "permute: not a permutation of %d dims", x->ndim);
        seen |= 1 << perm[i];
        sh[i] = x->shape[perm[i]];
        st[i] = x->stride[perm[i]];
    }
    lk_tensor *y = view_of(ctx, x, x->ndim, sh, st, 0);
    if (!y) return NULL;
    lk_node *nd = lk__record(ctx, "permute", permute_backward, y, 1, &x);
    if (nd)
        for (int i = 0; i < x->ndim; i++) nd->iarg[i] = perm[i];
    return y;
}

lk_tensor *lk_transpose(lk_ctx *ctx, lk_tensor *x, int d0, int d1) {
    if (!lk__check_inputs(ctx, "transpose", 1, x)) return NULL;
    if (d0 < 0) d0 += x->ndim;
    if (d1 < 0) d1 += x->ndim;
    if (d0 < 0 || d1 < 0 || d0 >= x->ndim || d1 >= x->ndim)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "transpose: dims out of range for %d-D tensor", x->ndim);
    int perm[LK_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return lk_permute(ctx, x, perm);
}

static lk_status narrow_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    lk_tensor *x = nd->in[0], *y = nd->out;
    float *dx = lk__grad(ctx, x);
    if (!dx) return ctx->status;
    int64_t xs[LK_MAX_DIMS];
    lk__contiguous_strides(x->ndim, x->shape, xs);
    lk_add_strided(dx + nd->iarg[1] * xs[nd->iarg[0]], xs, dout, y->ndim, y->shape);
    return LK_OK;
}

lk_tensor *lk_narrow(lk_ctx *ctx, lk_tensor *x, int dim, int64_t start, int64_t len) {
    if (!lk__check_inputs(ctx, "narrow", 1, x)) return NULL;
    if (dim < 0) dim += x->ndim;
    if (dim < 0 || dim >= x->ndim || start < 0 || len < 0 || start + len > x->shape[dim])
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "narrow: [%lld, %lld) outside dim %d of size %lld",
                           (long long)start, (long long)(start + len), dim,
                           (long long)(dim >= 0 && dim < x->ndim ? x->shape[dim] : 0));
    int64_t sh[LK_MAX_DIMS];
    memcpy(sh, x->shape, sizeof sh);
    sh[dim] = len;
    lk_tensor *y = view_of(ctx, x, x->ndim, sh, x->stride, start * x->stride[dim]);
    if (!y) return NULL;
    lk_node *nd = lk__record(ctx, "narrow", narrow_backward, y, 1, &x);
    if (nd) {
        nd->iarg[0] = dim;
        nd->iarg[1] = start;
    }
    return y;
}

lk_tensor *lk_cast(lk_ctx *ctx, lk_tensor *x, lk_dtype dt) {
    if (!lk__check_inputs(ctx, "cast", 1, x)) return NULL;
    if (dt == LK_F32) return lk_contiguous(ctx, x);
    if (dt != LK_F16 && dt != LK_BF16)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "cast: to %s not supported", lk_dtype_name(dt));
    lk_tensor *xc = lk_contiguous(ctx, x);
    if (!xc) return NULL;
    lk_tensor *y = lk_tensor_new(ctx, dt, x->ndim, x->shape);
    if (!y) return NULL;
    y->is_leaf = false;
    size_t n = (size_t)lk_numel(x);
    if (dt == LK_F16) lk_f32_to_f16_n(y->data, xc->data, n);
    else lk_f32_to_bf16_n(y->data, xc->data, n);
    lk__record(ctx, "cast", same_layout_backward, y, 1, &xc);
    return y;
}

lk_tensor *lk_detach(lk_ctx *ctx, lk_tensor *x) {
    if (!lk__check_inputs(ctx, "detach", 1, x)) return NULL;
    lk_tensor *y = view_of(ctx, x, x->ndim, x->shape, x->stride, 0);
    if (!y) return NULL;
    y->is_leaf = true;
    y->requires_grad = false;
    return y;
}
