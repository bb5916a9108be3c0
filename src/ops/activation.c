/* ops/activation.c: differentiable SiLU, GELU (exact or tanh), QuickGELU and GEGLU (diffusers'
 * GEGLU: the projection's last dim split in halves, hidden * gelu(gate)); kernels in
 * kernels/cpu/activations.c. Any shape; strided or half inputs are made contiguous f32 first. */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

/* iarg[0] = lk_act; saved[0] = x */
static lk_status act_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    lk_act_backward((lk_act)nd->iarg[0], dx, dout, nd->saved[0], (size_t)lk_numel(nd->out));
    return LK_OK;
}

static lk_tensor *act_op(lk_ctx *ctx, const char *name, lk_act a, lk_tensor *x) {
    if (!lk__check_inputs(ctx, name, 1, x)) return NULL;
    x = lk_contiguous(ctx, x);
    if (!x) return NULL;
    lk_tensor *y = lk__new_like(ctx, x);
    if (!y) return NULL;
    lk_act_forward(a, y->data, x->data, (size_t)lk_numel(x));
    lk_node *nd = lk__record(ctx, name, act_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->iarg[0] = a;
    if (!lk__save(ctx, nd, x)) return NULL;
    return y;
}

/* y = x * sigmoid(x), same shape as x. NULL on failure (sticky in ctx). */
lk_tensor *lk_silu(lk_ctx *ctx, lk_tensor *x) { return act_op(ctx, "silu", LK_ACT_SILU, x); }

/* y = x * Phi(x) (exact, erf), or the tanh approximation when tanh_approx. */
lk_tensor *lk_gelu(lk_ctx *ctx, lk_tensor *x, bool tanh_approx) {
    return tanh_approx ? act_op(ctx, "gelu_tanh", LK_ACT_GELU_TANH, x)
                       : act_op(ctx, "gelu", LK_ACT_GELU, x);
}

/* y = x * sigmoid(1.702 x) (CLIP's QuickGELU). */
lk_tensor *lk_quick_gelu(lk_ctx *ctx, lk_tensor *x) {
    return act_op(ctx, "quick_gelu", LK_ACT_QUICK_GELU, x);
}

/* iarg[0] = rows M, iarg[1] = D; saved[0] = x (M, 2D) */
static lk_status geglu_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    lk_geglu_backward(dx, dout, nd->saved[0], (size_t)nd->iarg[0], (size_t)nd->iarg[1]);
    return LK_OK;
}

/* x (..., 2D) -> (..., D) = x[..., :D] * gelu(x[..., D:]). The last dim must be even. */
lk_tensor *lk_geglu(lk_ctx *ctx, lk_tensor *x) {
    if (!lk__check_inputs(ctx, "geglu", 1, x)) return NULL;
    if (x->ndim < 1 || x->shape[x->ndim - 1] % 2 != 0) {
        char b[160];
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "geglu: input %s needs a last dimension of even size (hidden | gate)",
                           lk_shape_str(x, b, sizeof b));
    }
    x = lk_contiguous(ctx, x);
    if (!x) return NULL;
    int64_t shape[LK_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    int64_t D = shape[x->ndim - 1] / 2;
    shape[x->ndim - 1] = D;
    lk_tensor *y = lk__new_f32(ctx, x->ndim, shape);
    if (!y) return NULL;
    int64_t M = D > 0 ? lk_numel(y) / D : 0;
    lk_geglu_forward(y->data, x->data, (size_t)M, (size_t)D);
    lk_node *nd = lk__record(ctx, "geglu", geglu_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->iarg[0] = M;
    nd->iarg[1] = D;
    if (!lk__save(ctx, nd, x)) return NULL;
    return y;
}
