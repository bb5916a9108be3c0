/* ops/concat.c: differentiable concatenation and split along any dim (the UNet's skip
 * connections concatenate channels; torch.cat / torch.split semantics). */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

#include <string.h>

/* floats per work item of the concat copy */
#define CAT_BLOCK 16384

static bool is_float(lk_dtype dt) { return dt == LK_F32 || dt == LK_F16 || dt == LK_BF16; }

static void contig_strides(int nd, const int64_t *shape, int64_t *st) {
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        st[i] = s;
        s *= shape[i];
    }
}

/* iarg[0] = dim */
static lk_status concat_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    const lk_tensor *y = nd->out;
    const int dim = (int)nd->iarg[0];
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < dim; i++) outer *= y->shape[i];
    for (int i = dim + 1; i < y->ndim; i++) inner *= y->shape[i];
    const int64_t T = y->shape[dim] * inner;
    int64_t off = 0;
    for (int k = 0; k < nd->n_in; k++) {
        const int64_t Dk = nd->in[k]->shape[dim];
        float *dx = lk__grad(ctx, nd->in[k]);
        if (!dx && lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
        if (dx) {
            const int64_t shape[3] = {outer, Dk, inner};
            const int64_t xs[3] = {Dk * inner, inner, 1};
            const int64_t gs[3] = {T, inner, 1};
            lk_binary_forward(LK_BIN_ADD, dx, dx, xs, dout + off, gs, 3, shape);
        }
        off += Dk * inner;
    }
    return LK_OK;
}

lk_tensor *lk_concat(lk_ctx *ctx, lk_tensor *const *xs, int n, int dim) {
    if (!ctx || lk_ctx_status(ctx) != LK_OK) return NULL;
    if (!xs || n < 1 || n > 4096)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "concat: needs 1 to 4096 inputs (got %d)", n);
    for (int k = 0; k < n; k++)
        if (!lk__check_inputs(ctx, "concat", 1, xs[k])) return NULL;
    const lk_tensor *x0 = xs[0];
    const int ndim = x0->ndim;
    if (dim < -ndim || dim >= ndim)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "concat: dim %d out of range for %d-D inputs", dim,
                           ndim);
    if (dim < 0) dim += ndim;
    int64_t shape[LK_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof(int64_t) * (size_t)ndim);
    shape[dim] = 0;
    for (int k = 0; k < n; k++) {
        const lk_tensor *x = xs[k];
        bool ok = x->ndim == ndim && is_float(x->dtype);
        for (int i = 0; ok && i < ndim; i++)
            if (i != dim && x->shape[i] != x0->shape[i]) ok = false;
        if (!ok) {
            char s0[160], sk[160];
            return lk_ctx_fail(ctx, LK_ERR_INVALID,
                               "concat: input %d (%s %s) does not match input 0 (%s %s) outside "
                               "dim %d",
                               k, lk_dtype_name(x->dtype), lk_shape_str(x, sk, sizeof sk),
                               lk_dtype_name(x0->dtype), lk_shape_str(x0, s0, sizeof s0), dim);
        }
        shape[dim] += x->shape[dim];
    }
    lk_tensor **in = lk__ctx_alloc(ctx, sizeof(lk_tensor *) * (size_t)n);
    if (!in) return lk_ctx_status(ctx) != LK_OK ? NULL : lk_ctx_fail(ctx, LK_ERR_NOMEM, "concat: out of memory");
    for (int k = 0; k < n; k++) {
        in[k] = lk_contiguous(ctx, xs[k]);
        if (!in[k]) return NULL;
    }
    lk_tensor *y = lk__new_f32(ctx, ndim, shape);
    if (!y) return NULL;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < dim; i++) outer *= shape[i];
    for (int i = dim + 1; i < ndim; i++) inner *= shape[i];
    const int64_t T = shape[dim] * inner;
    const int64_t nblk = (T + CAT_BLOCK - 1) / CAT_BLOCK;
    float *yd = y->data;
    /* each item is one block of one output row; it copies the pieces of the inputs it covers */
#pragma omp parallel for schedule(static) if (outer * T >= 65536 && outer * nblk > 1)
    for (int64_t w = 0; w < outer * nblk; w++) {
        const int64_t o = w / nblk, c0 = (w % nblk) * CAT_BLOCK;
        const int64_t c1 = c0 + CAT_BLOCK < T ? c0 + CAT_BLOCK : T;
        int64_t seg = 0;
        for (int k = 0; k < n && seg < c1; k++) {
            const int64_t L = in[k]->shape[dim] * inner;
            const int64_t s0 = seg > c0 ? seg : c0, s1 = seg + L < c1 ? seg + L : c1;
            if (s1 > s0)
                memcpy(yd + o * T + s0, (const float *)in[k]->data + o * L + (s0 - seg),
                       sizeof(float) * (size_t)(s1 - s0));
            seg += L;
        }
    }
    lk_node *nd = lk__record(ctx, "concat", concat_backward, y, n, in);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->iarg[0] = dim;
    return y;
}

/* one node per part: iarg[0] = dim, iarg[1] = first index of the part along dim */
static lk_status split_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    lk_tensor *x = nd->in[0];
    float *dx = lk__grad(ctx, x);
    if (!dx) return lk_ctx_status(ctx);
    int64_t xs[LK_MAX_DIMS];
    contig_strides(x->ndim, x->shape, xs);
    const int dim = (int)nd->iarg[0];
    lk_add_strided(dx + nd->iarg[1] * xs[dim], xs, dout, nd->out->ndim, nd->out->shape);
    return LK_OK;
}

lk_status lk_split(lk_ctx *ctx, lk_tensor *x, int dim, int n, const int64_t *sizes,
                   lk_tensor **outs) {
    if (outs)
        for (int k = 0; k < n; k++) outs[k] = NULL;
    if (!lk__check_inputs(ctx, "split", 1, x)) return ctx ? lk_ctx_status(ctx) : LK_ERR_INVALID;
    if (n < 1 || !sizes || !outs) {
        lk_ctx_fail(ctx, LK_ERR_INVALID, "split: needs n >= 1 sizes and outputs (got n=%d)", n);
        return lk_ctx_status(ctx);
    }
    const int ndim = x->ndim;
    if (dim < -ndim || dim >= ndim) {
        lk_ctx_fail(ctx, LK_ERR_INVALID, "split: dim %d out of range for a %d-D tensor", dim, ndim);
        return lk_ctx_status(ctx);
    }
    if (dim < 0) dim += ndim;
    if (!is_float(x->dtype)) {
        lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "split: %s input; only float tensors",
                    lk_dtype_name(x->dtype));
        return lk_ctx_status(ctx);
    }
    int64_t total = 0;
    for (int k = 0; k < n; k++) {
        if (sizes[k] < 0 || sizes[k] > x->shape[dim]) total = -1;
        if (total < 0) break;
        total += sizes[k];
    }
    if (total != x->shape[dim]) {
        char sx[160];
        lk_ctx_fail(ctx, LK_ERR_INVALID,
                    "split: the %d sizes must be >= 0 and sum to %lld (dim %d of %s)", n,
                    (long long)x->shape[dim], dim, lk_shape_str(x, sx, sizeof sx));
        return lk_ctx_status(ctx);
    }
    if (x->dtype != LK_F32) x = lk_contiguous(ctx, x);
    if (!x) return lk_ctx_status(ctx);
    int64_t start = 0;
    for (int k = 0; k < n; k++) {
        int64_t shape[LK_MAX_DIMS];
        memcpy(shape, x->shape, sizeof(int64_t) * (size_t)ndim);
        shape[dim] = sizes[k];
        lk_tensor *y = lk__new_f32(ctx, ndim, shape);
        if (!y) break;
        lk_copy_strided(y->data, (const float *)x->data + start * x->stride[dim], ndim, shape,
                        x->stride);
        lk_node *nd = lk__record(ctx, "split", split_backward, y, 1, &x);
        if (nd) {
            nd->iarg[0] = dim;
            nd->iarg[1] = start;
        } else if (lk_ctx_status(ctx) != LK_OK) {
            break;
        }
        outs[k] = y;
        start += sizes[k];
    }
    if (lk_ctx_status(ctx) != LK_OK)
        for (int k = 0; k < n; k++) outs[k] = NULL;
    return lk_ctx_status(ctx);
}
