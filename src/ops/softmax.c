/* ops/softmax.c: differentiable softmax over the last dimension of any tensor (rows of the
 * trailing dim); kernels in kernels/cpu/softmax.c. Backward uses the saved output y. */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

/* iarg[0] = rows M, iarg[1] = row length N; saved[0] = y */
static lk_status softmax_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    lk_softmax_backward(dx, dout, nd->saved[0], (size_t)nd->iarg[0], (size_t)nd->iarg[1]);
    return LK_OK;
}

/* y = exp(x - max) / sum(exp(x - max)) along the last dim; same shape as x (a 0-d tensor is one
 * row of one element). Strided or half inputs are made contiguous f32 first. NULL on failure
 * (sticky in ctx). */
lk_tensor *lk_softmax(lk_ctx *ctx, lk_tensor *x) {
    if (!lk__check_inputs(ctx, "softmax", 1, x)) return NULL;
    x = lk_contiguous(ctx, x);
    if (!x) return NULL;
    lk_tensor *y = lk__new_like(ctx, x);
    if (!y) return NULL;
    const int64_t N = x->ndim > 0 ? x->shape[x->ndim - 1] : 1;
    const int64_t M = N > 0 ? lk_numel(x) / N : 0;
    lk_softmax_forward(y->data, x->data, (size_t)M, (size_t)N);
    lk_node *nd = lk__record(ctx, "softmax", softmax_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->iarg[0] = M;
    nd->iarg[1] = N;
    if (!lk__save(ctx, nd, y)) return NULL;
    return y;
}
