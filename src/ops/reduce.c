/* ops/reduce.c: differentiable reductions (sum, mean, over everything or one dim, with keepdim)
 * the mean-squared-error loss of diffusion training (Ho et al. 2020, eq. 14) and the L1 loss
 * of autoencoder training (Rombach et al. 2022). Sums are
 * accumulated in double. */
#include <math.h>

#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

/* contiguous f32 version of x, or NULL (failure recorded) for non-float dtypes */
static lk_tensor *dense_f32(lk_ctx *ctx, const char *op, lk_tensor *x) {
    if (x->dtype != LK_F32 && x->dtype != LK_F16 && x->dtype != LK_BF16)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "%s: %s input; only float tensors", op,
                           lk_dtype_name(x->dtype));
    return lk_contiguous(ctx, x);
}

/* dx (contiguous, shape of x) += g everywhere */
static void add_const(float *dx, const lk_tensor *x, float g) {
    const int64_t zero[LK_MAX_DIMS] = {0};
    int64_t st[LK_MAX_DIMS], s = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        st[i] = s;
        s *= x->shape[i];
    }
    lk_binary_forward(LK_BIN_ADD, dx, dx, st, &g, zero, x->ndim, x->shape);
}

/* ---- sum / mean over everything: farg[0] = 1 (sum) or 1/n (mean) ---- */
static lk_status total_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    add_const(dx, nd->in[0], dout[0] * nd->farg[0]);
    return LK_OK;
}

static lk_tensor *total(lk_ctx *ctx, const char *name, lk_tensor *x, bool mean) {
    if (!lk__check_inputs(ctx, name, 1, x)) return NULL;
    x = dense_f32(ctx, name, x);
    if (!x) return NULL;
    lk_tensor *y = lk__new_f32(ctx, 0, NULL);
    if (!y) return NULL;
    int64_t n = lk_numel(x);
    double s = lk_sum_f32(x->data, (size_t)n);
    *(float *)y->data = (float)(mean ? s / (double)n : s);
    lk_node *nd = lk__record(ctx, name, total_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->farg[0] = mean ? (float)(1.0 / (double)n) : 1.0f;
    return y;
}

lk_tensor *lk_sum(lk_ctx *ctx, lk_tensor *x) { return total(ctx, "sum", x, false); }
lk_tensor *lk_mean(lk_ctx *ctx, lk_tensor *x) { return total(ctx, "mean", x, true); }

/* ---- sum / mean over one dim: iarg = outer, dim size, inner; farg[0] = 1 or 1/dim ---- */
static lk_status dim_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    const int64_t shape[3] = {nd->iarg[0], nd->iarg[1], nd->iarg[2]};
    const int64_t xs[3] = {shape[1] * shape[2], shape[2], 1};
    const int64_t ys[3] = {shape[2], 0, 1};
    const float *g = dout;
    float *tmp = NULL;
    if (nd->farg[0] != 1.0f) {
        /* scale the (smaller) upstream gradient once, then broadcast-add it */
        const int64_t n = shape[0] * shape[2];
        const int64_t one = 1, zero = 0;
        tmp = lk__scratch(ctx, (size_t)(n > 0 ? n : 1));
        if (!tmp) return lk_ctx_status(ctx) != LK_OK ? lk_ctx_status(ctx) : LK_ERR_NOMEM;
        lk_binary_forward(LK_BIN_MUL, tmp, dout, &one, &nd->farg[0], &zero, 1, &n);
        g = tmp;
    }
    lk_binary_forward(LK_BIN_ADD, dx, dx, xs, g, ys, 3, shape);
    if (tmp) lk__scratch_free(ctx, tmp);
    return LK_OK;
}

static lk_tensor *reduce_dim(lk_ctx *ctx, const char *name, lk_tensor *x, int dim, bool keepdim,
                             bool mean) {
    if (!lk__check_inputs(ctx, name, 1, x)) return NULL;
    int nd = x->ndim;
    if (dim < -nd || dim >= nd || nd == 0)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: dim %d out of range for a %d-D tensor", name,
                           dim, nd);
    if (dim < 0) dim += nd;
    x = dense_f32(ctx, name, x);
    if (!x) return NULL;
    int64_t outer = 1, inner = 1, D = x->shape[dim];
    for (int i = 0; i < dim; i++) outer *= x->shape[i];
    for (int i = dim + 1; i < nd; i++) inner *= x->shape[i];
    int64_t shape[LK_MAX_DIMS];
    int on = 0;
    for (int i = 0; i < nd; i++) {
        if (i != dim) shape[on++] = x->shape[i];
        else if (keepdim) shape[on++] = 1;
    }
    lk_tensor *y = lk__new_f32(ctx, on, shape);
    if (!y) return NULL;
    lk_sum_dim_forward(y->data, x->data, (size_t)outer, (size_t)D, (size_t)inner);
    float scale = mean ? (float)(1.0 / (double)D) : 1.0f;
    if (mean) {
        const int64_t n = outer * inner, one = 1, zero = 0;
        lk_binary_forward(LK_BIN_MUL, y->data, y->data, &one, &scale, &zero, 1, &n);
    }
    lk_node *node = lk__record(ctx, name, dim_backward, y, 1, &x);
    if (!node) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    node->iarg[0] = outer;
    node->iarg[1] = D;
    node->iarg[2] = inner;
    node->farg[0] = scale;
    return y;
}

lk_tensor *lk_sum_dim(lk_ctx *ctx, lk_tensor *x, int dim, bool keepdim) {
    return reduce_dim(ctx, "sum_dim", x, dim, keepdim, false);
}

lk_tensor *lk_mean_dim(lk_ctx *ctx, lk_tensor *x, int dim, bool keepdim) {
    return reduce_dim(ctx, "mean_dim", x, dim, keepdim, true);
}

/* ---- MSE loss ---- */
static lk_status mse_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *da = lk__grad(ctx, nd->in[0]);
    if (!da && lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    float *db = lk__grad(ctx, nd->in[1]);
    if (!db && lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    size_t n = (size_t)lk_numel(nd->in[0]);
    if (da && da == db) return LK_OK; /* mse(x, x): the two contributions cancel */
    lk_mse_backward(da, db, nd->saved[0], nd->saved[1], n, dout[0]);
    return LK_OK;
}

lk_tensor *lk_mse_loss(lk_ctx *ctx, lk_tensor *a, lk_tensor *b) {
    if (!lk__check_inputs(ctx, "mse_loss", 2, a, b)) return NULL;
    if (!lk_same_shape(a, b)) {
        char sa[160], sb[160];
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "mse_loss: shapes %s and %s differ",
                           lk_shape_str(a, sa, sizeof sa), lk_shape_str(b, sb, sizeof sb));
    }
    a = dense_f32(ctx, "mse_loss", a);
    b = a ? dense_f32(ctx, "mse_loss", b) : NULL;
    if (!a || !b) return NULL;
    lk_tensor *y = lk__new_f32(ctx, 0, NULL);
    if (!y) return NULL;
    *(float *)y->data = lk_mse_forward(a->data, b->data, (size_t)lk_numel(a));
    lk_tensor *in[2] = {a, b};
    lk_node *nd = lk__record(ctx, "mse_loss", mse_backward, y, 2, in);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    if (!lk__save(ctx, nd, a) || !lk__save(ctx, nd, b)) return NULL;
    return y;
}

static lk_status l1_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *da = lk__grad(ctx, nd->in[0]), *db = lk__grad(ctx, nd->in[1]);
    if (lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    if (da && da == db) return LK_OK; /* l1(x, x): the two contributions cancel */
    const float *a = nd->saved[0], *b = nd->saved[1];
    const int64_t n = lk_numel(nd->in[0]);
    const float g = dout[0] / (float)n;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        const float d = a[i] - b[i];
        const float s = d > 0.0f ? g : (d < 0.0f ? -g : 0.0f);
        if (da) da[i] += s;
        if (db) db[i] -= s;
    }
    return LK_OK;
}

lk_tensor *lk_l1_loss(lk_ctx *ctx, lk_tensor *a, lk_tensor *b) {
    if (!lk__check_inputs(ctx, "l1_loss", 2, a, b)) return NULL;
    if (!lk_same_shape(a, b)) {
        char sa[160], sb[160];
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "l1_loss: shapes %s and %s differ",
                           lk_shape_str(a, sa, sizeof sa), lk_shape_str(b, sb, sizeof sb));
    }
    a = dense_f32(ctx, "l1_loss", a);
    b = a ? dense_f32(ctx, "l1_loss", b) : NULL;
    if (!a || !b) return NULL;
    lk_tensor *y = lk__new_f32(ctx, 0, NULL);
    if (!y) return NULL;
    const float *ad = a->data, *bd = b->data;
    const int64_t n = lk_numel(a);
    double acc = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : acc) if (n > 65536)
    for (int64_t i = 0; i < n; i++) acc += fabs((double)ad[i] - (double)bd[i]);
    *(float *)y->data = (float)(acc / (double)n);
    lk_tensor *in[2] = {a, b};
    lk_node *nd = lk__record(ctx, "l1_loss", l1_backward, y, 2, in);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    if (!lk__save(ctx, nd, a) || !lk__save(ctx, nd, b)) return NULL;
    return y;
}
