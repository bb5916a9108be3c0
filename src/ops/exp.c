/* exp.c: the elementwise exponential y = exp(x) (torch.exp), differentiable: dx += dy * y. Used
 * by the autoencoder's reparameterized posterior sample, std = exp(0.5 * logvar). */
#include <math.h>

#include "autograd/autograd.h"
#include "likeness/ops.h"

static lk_status exp_backward(lk_ctx *ctx, lk_node *nd, const float *dy) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    const float *y = nd->saved[0];
    const int64_t n = lk_numel(nd->out);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * y[i];
    return LK_OK;
}

lk_tensor *lk_exp(lk_ctx *ctx, lk_tensor *x) {
    if (!lk__check_inputs(ctx, "exp", 1, x)) return NULL;
    x = lk_contiguous(ctx, x);
    lk_tensor *y = x ? lk__new_like(ctx, x) : NULL;
    if (!y) return NULL;
    const int64_t n = lk_numel(x);
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) yd[i] = expf(xd[i]);
    lk_node *nd = lk__record(ctx, "exp", exp_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    if (!lk__save(ctx, nd, y)) return NULL;
    return y;
}
