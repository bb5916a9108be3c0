/* ops/elementwise.c: differentiable add / sub / mul with numpy broadcasting (trailing dims
 * aligned, size-1 dims stretch), and the scalar ops scale and add_scalar. F32 strided views are
 * read in place; half inputs are widened first. */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

#include <stdio.h>

static const char *binop_name(lk_binop op) {
    return op == LK_BIN_ADD ? "add" : op == LK_BIN_SUB ? "sub" : "mul";
}

static bool is_float(lk_dtype dt) { return dt == LK_F32 || dt == LK_F16 || dt == LK_BF16; }

/* F32 (any strides) stays as is; F16/BF16 become contiguous f32; integers are refused. */
static lk_tensor *as_f32(lk_ctx *ctx, const char *op, lk_tensor *x) {
    if (!is_float(x->dtype))
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "%s: %s input; only float tensors", op,
                           lk_dtype_name(x->dtype));
    return x->dtype == LK_F32 ? x : lk_contiguous(ctx, x);
}

/* Strides of x over an nd-dim broadcast shape: 0 on dims x lacks or stretches. With
 * use_data the view's own strides (to read x), otherwise x's contiguous strides (its grad). */
static void bcast_strides(const lk_tensor *x, int nd, const int64_t *shape, bool use_data,
                          int64_t *st) {
    int64_t cs[LK_MAX_DIMS];
    int64_t s = 1;
    for (int j = x->ndim - 1; j >= 0; j--) {
        cs[j] = s;
        s *= x->shape[j];
    }
    for (int i = 0; i < nd; i++) {
        int j = i - (nd - x->ndim);
        if (j < 0 || (x->shape[j] == 1 && shape[i] != 1)) st[i] = 0;
        else st[i] = use_data ? x->stride[j] : cs[j];
    }
}

/* out shape of broadcasting a with b; false (ctx failure naming both shapes) if they clash */
static bool bcast_shape(lk_ctx *ctx, const char *op, const lk_tensor *a, const lk_tensor *b,
                        int *nd, int64_t *shape) {
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char ba[160], bb[160];
            lk_ctx_fail(ctx, LK_ERR_INVALID,
                        "%s: shapes %s and %s cannot be broadcast together (dim %d: %lld vs %lld)",
                        op, lk_shape_str(a, ba, sizeof ba), lk_shape_str(b, bb, sizeof bb),
                        i - n, (long long)sa, (long long)sb);
            return false;
        }
        shape[i] = sa == 1 ? sb : sa;
    }
    *nd = n;
    return true;
}

/* iarg[0] = op, iarg[1] = saved slot of a's data (+1, 0 none), iarg[2] = same for b */
static lk_status binary_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    lk_binop op = (lk_binop)nd->iarg[0];
    lk_tensor *a = nd->in[0], *b = nd->in[1], *y = nd->out;
    const float *ad = nd->iarg[1] ? nd->saved[nd->iarg[1] - 1] : NULL;
    const float *bd = nd->iarg[2] ? nd->saved[nd->iarg[2] - 1] : NULL;
    int64_t ag[LK_MAX_DIMS], bg[LK_MAX_DIMS], adt[LK_MAX_DIMS], bdt[LK_MAX_DIMS];
    bcast_strides(a, y->ndim, y->shape, false, ag);
    bcast_strides(b, y->ndim, y->shape, false, bg);
    bcast_strides(a, y->ndim, y->shape, true, adt);
    bcast_strides(b, y->ndim, y->shape, true, bdt);
    float *da = lk__grad(ctx, a);
    if (!da && lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    if (da) lk_binary_backward(op, da, NULL, dout, ad, ag, bd, bdt, y->ndim, y->shape);
    float *db = lk__grad(ctx, b);
    if (!db && lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    if (db) lk_binary_backward(op, NULL, db, dout, ad, adt, bd, bg, y->ndim, y->shape);
    return LK_OK;
}

static lk_tensor *binary(lk_ctx *ctx, lk_binop op, lk_tensor *a, lk_tensor *b) {
    const char *name = binop_name(op);
    if (!lk__check_inputs(ctx, name, 2, a, b)) return NULL;
    a = as_f32(ctx, name, a);
    b = a ? as_f32(ctx, name, b) : NULL;
    if (!a || !b) return NULL;
    int nd;
    int64_t shape[LK_MAX_DIMS], as[LK_MAX_DIMS], bs[LK_MAX_DIMS];
    if (!bcast_shape(ctx, name, a, b, &nd, shape)) return NULL;
    lk_tensor *y = lk__new_f32(ctx, nd, shape);
    if (!y) return NULL;
    bcast_strides(a, nd, shape, true, as);
    bcast_strides(b, nd, shape, true, bs);
    lk_binary_forward(op, y->data, a->data, as, b->data, bs, nd, shape);
    lk_tensor *in[2] = {a, b};
    lk_node *node = lk__record(ctx, name, binary_backward, y, 2, in);
    if (!node) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    node->iarg[0] = op;
    if (op == LK_BIN_MUL) {
        /* da needs b's data, db needs a's */
        if (lk__needs_grad(b) && !(node->iarg[1] = lk__save(ctx, node, a))) return NULL;
        if (lk__needs_grad(a) && !(node->iarg[2] = lk__save(ctx, node, b))) return NULL;
    }
    return y;
}

lk_tensor *lk_add(lk_ctx *ctx, lk_tensor *a, lk_tensor *b) { return binary(ctx, LK_BIN_ADD, a, b); }
lk_tensor *lk_sub(lk_ctx *ctx, lk_tensor *a, lk_tensor *b) { return binary(ctx, LK_BIN_SUB, a, b); }
lk_tensor *lk_mul(lk_ctx *ctx, lk_tensor *a, lk_tensor *b) { return binary(ctx, LK_BIN_MUL, a, b); }

/* farg[0] = the multiplier of the upstream gradient (s for scale, 1 for add_scalar) */
static lk_status scalar_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    lk_axpy(dx, nd->farg[0], dout, (size_t)lk_numel(nd->out));
    return LK_OK;
}

static lk_tensor *scalar_op(lk_ctx *ctx, const char *name, lk_binop op, lk_tensor *x, float s) {
    if (!lk__check_inputs(ctx, name, 1, x)) return NULL;
    x = as_f32(ctx, name, x);
    if (!x) return NULL;
    lk_tensor *y = lk__new_like(ctx, x);
    if (!y) return NULL;
    const int64_t zero[LK_MAX_DIMS] = {0};
    lk_binary_forward(op, y->data, x->data, x->stride, &s, zero, x->ndim, x->shape);
    lk_node *node = lk__record(ctx, name, scalar_backward, y, 1, &x);
    if (!node) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    node->farg[0] = op == LK_BIN_MUL ? s : 1.0f;
    return y;
}

lk_tensor *lk_scale(lk_ctx *ctx, lk_tensor *x, float s) {
    return scalar_op(ctx, "scale", LK_BIN_MUL, x, s);
}

lk_tensor *lk_add_scalar(lk_ctx *ctx, lk_tensor *x, float s) {
    return scalar_op(ctx, "add_scalar", LK_BIN_ADD, x, s);
}
