/* ops/dropout.c: differentiable inverted dropout (Srivastava et al. 2014), masks drawn from an
 * lk_rng exactly as torch.nn.functional.dropout draws them on CPU; kernel in kernels/cpu/dropout.c. */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"


/* saved[0] = mask (scale or 0 per element) */
static lk_status dropout_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    lk_dropout_backward(dx, dout, nd->saved[0], (size_t)lk_numel(nd->out));
    return LK_OK;
}

/* y = x * mask / (1-p), mask ~ Bernoulli(1-p) drawn from rng (advances it by two 32-bit draws
 * per element when 0 < p < 1, not at all for p == 0 or p == 1). p == 0 returns x itself.
 * p outside [0, 1] or a NULL rng: NULL with LK_ERR_INVALID (sticky in ctx). */
lk_tensor *lk_dropout(lk_ctx *ctx, lk_tensor *x, float p, lk_rng *rng) {
    if (!lk__check_inputs(ctx, "dropout", 1, x)) return NULL;
    if (!(p >= 0.0f && p <= 1.0f))
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "dropout: p = %g is not in [0, 1]", (double)p);
    if (p == 0.0f) return x;
    if (!rng) return lk_ctx_fail(ctx, LK_ERR_INVALID, "dropout: rng is NULL");
    x = lk_contiguous(ctx, x);
    if (!x) return NULL;
    lk_tensor *y = lk__new_like(ctx, x);
    if (!y) return NULL;
    size_t n = (size_t)lk_numel(x);
    lk_node *nd = lk__record(ctx, "dropout", dropout_backward, y, 1, &x);
    if (!nd && lk_ctx_status(ctx) != LK_OK) return NULL;
    float *mask = nd ? lk__node_buffer(ctx, nd, n) : lk__scratch(ctx, n);
    if (!mask) return NULL;
    lk_dropout_forward(y->data, mask, x->data, n, p, rng);
    if (!nd) lk__scratch_free(ctx, mask);
    return y;
}
