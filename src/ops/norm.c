/* ops/norm.c: differentiable GroupNorm (Wu & He 2018; optionally fused with SiLU) over
 * (B, C, ...) of any spatial rank, and LayerNorm (Ba et al. 2016) over the last dimension.
 * Kernels in kernels/cpu/groupnorm.c and layernorm.c; statistics saved for backward. */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

#include <limits.h>
#include <math.h>

/* An optional affine parameter: NULL stays NULL, else 1-D of c elements, made contiguous f32.
 * *ok false (ctx failure set) on a bad one. */
static lk_tensor *affine_param(lk_ctx *ctx, const char *op, const char *what, lk_tensor *p,
                               int64_t c, bool *ok) {
    *ok = true;
    if (!p) return NULL;
    if (!lk__check_inputs(ctx, op, 1, p)) {
        *ok = false;
        return NULL;
    }
    if (lk_numel(p) != c || p->ndim != 1) {
        char b[160];
        lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: %s has shape %s, expected [%lld]", op, what,
                    lk_shape_str(p, b, sizeof b), (long long)c);
        *ok = false;
        return NULL;
    }
    p = lk_contiguous(ctx, p);
    if (!p) *ok = false;
    return p;
}

static bool bad_eps(lk_ctx *ctx, const char *op, float eps) {
    if (eps >= 0.0f && isfinite(eps)) return false;
    lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: eps %g must be finite and >= 0", op, (double)eps);
    return true;
}

/* ---------------- GroupNorm ---------------- */

/* iarg: 0 B, 1 C, 2 HW, 3 G, 4 act. saved: 0 mean|rstd (2*B*G), 1 x, then w, b if given */
static lk_status gn_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    int B = (int)nd->iarg[0], C = (int)nd->iarg[1], HW = (int)nd->iarg[2], G = (int)nd->iarg[3];
    int act = (int)nd->iarg[4];
    lk_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->in[2];
    const float *stats = nd->saved[0], *xd = nd->saved[1];
    int k = 2;
    const float *wd = w ? nd->saved[k++] : NULL;
    const float *bd = b ? nd->saved[k++] : NULL;
    float *dx = lk__grad(ctx, x);
    float *dw = w ? lk__grad(ctx, w) : NULL;
    float *db = b ? lk__grad(ctx, b) : NULL;
    if (lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    size_t bg = (size_t)B * (size_t)G;
    return lk_groupnorm_backward(dx, dw, db, dout, xd, stats, stats + bg, wd, bd, B, C, HW, G,
                                 act);
}

static lk_tensor *gn_op(lk_ctx *ctx, const char *op, lk_tensor *x, lk_tensor *w, lk_tensor *b,
                        int groups, float eps, int act) {
    if (!lk__check_inputs(ctx, op, 1, x)) return NULL;
    char sb[160];
    if (x->ndim < 2)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: input %s must be (B, C, ...)", op,
                           lk_shape_str(x, sb, sizeof sb));
    int64_t B = x->shape[0], C = x->shape[1], HW = 1;
    for (int i = 2; i < x->ndim; i++) HW *= x->shape[i];
    if (groups < 1 || C % groups != 0)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: %lld channels (input %s) not divisible into %d groups",
                           op, (long long)C, lk_shape_str(x, sb, sizeof sb), groups);
    if (B > INT_MAX || C > INT_MAX || HW > INT_MAX || B * C > INT_MAX)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "%s: input %s too large", op,
                           lk_shape_str(x, sb, sizeof sb));
    if (bad_eps(ctx, op, eps)) return NULL;
    bool ok;
    w = affine_param(ctx, op, "weight", w, C, &ok);
    if (!ok) return NULL;
    b = affine_param(ctx, op, "bias", b, C, &ok);
    if (!ok) return NULL;
    x = lk_contiguous(ctx, x);
    if (!x) return NULL;
    lk_tensor *y = lk__new_like(ctx, x);
    if (!y) return NULL;
    lk_tensor *in[3] = {x, w, b};
    lk_node *nd = lk__record(ctx, op, gn_backward, y, 3, in);
    if (!nd && lk_ctx_status(ctx) != LK_OK) return NULL;
    float *stats = NULL;
    size_t bg = (size_t)B * (size_t)groups;
    if (nd) {
        nd->iarg[0] = B;
        nd->iarg[1] = C;
        nd->iarg[2] = HW;
        nd->iarg[3] = groups;
        nd->iarg[4] = act;
        stats = lk__node_buffer(ctx, nd, 2 * bg);
        if (!stats || !lk__save(ctx, nd, x) || (w && !lk__save(ctx, nd, w)) ||
            (b && !lk__save(ctx, nd, b)))
            return NULL;
    }
    lk_status s = lk_groupnorm_forward(y->data, stats, stats ? stats + bg : NULL, x->data,
                                       w ? w->data : NULL, b ? b->data : NULL, (int)B, (int)C,
                                       (int)HW, groups, eps, act);
    if (s != LK_OK) return lk_ctx_fail(ctx, s, "%s", lk_last_error());
    return y;
}

/* GroupNorm of x (B, C, ...) with `groups` groups of consecutive channels; w, b (C) or NULL. */
lk_tensor *lk_groupnorm(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *b, int groups,
                        float eps) {
    return gn_op(ctx, "groupnorm", x, w, b, groups, eps, 0);
}

/* silu(groupnorm(x)) in one pass (backward recomputes the pre-activation). */
lk_tensor *lk_groupnorm_silu(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *b, int groups,
                             float eps) {
    return gn_op(ctx, "groupnorm_silu", x, w, b, groups, eps, 1);
}

/* ---------------- LayerNorm ---------------- */

/* iarg: 0 N, 1 C. saved: 0 mean|rstd (2*N), 1 x, 2 w if given */
static lk_status ln_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    int N = (int)nd->iarg[0], C = (int)nd->iarg[1];
    lk_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->in[2];
    const float *stats = nd->saved[0], *xd = nd->saved[1];
    const float *wd = w ? nd->saved[2] : NULL;
    float *dx = lk__grad(ctx, x);
    float *dw = w ? lk__grad(ctx, w) : NULL;
    float *db = b ? lk__grad(ctx, b) : NULL;
    if (lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    return lk_layernorm_backward(dx, dw, db, dout, xd, stats, stats + N, wd, N, C);
}

/* LayerNorm of x (..., C) over the last dim; w, b (C) or NULL. */
lk_tensor *lk_layernorm(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *b, float eps) {
    const char *op = "layernorm";
    if (!lk__check_inputs(ctx, op, 1, x)) return NULL;
    char sb[160];
    if (x->ndim < 1 || x->shape[x->ndim - 1] < 1)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: input %s needs a non-empty last dimension",
                           op, lk_shape_str(x, sb, sizeof sb));
    int64_t C = x->shape[x->ndim - 1], N = lk_numel(x) / C;
    if (N > INT_MAX || C > INT_MAX)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "%s: input %s too large", op,
                           lk_shape_str(x, sb, sizeof sb));
    if (bad_eps(ctx, op, eps)) return NULL;
    bool ok;
    w = affine_param(ctx, op, "weight", w, C, &ok);
    if (!ok) return NULL;
    b = affine_param(ctx, op, "bias", b, C, &ok);
    if (!ok) return NULL;
    x = lk_contiguous(ctx, x);
    if (!x) return NULL;
    lk_tensor *y = lk__new_like(ctx, x);
    if (!y) return NULL;
    lk_tensor *in[3] = {x, w, b};
    lk_node *nd = lk__record(ctx, op, ln_backward, y, 3, in);
    if (!nd && lk_ctx_status(ctx) != LK_OK) return NULL;
    float *stats = NULL;
    if (nd) {
        nd->iarg[0] = N;
        nd->iarg[1] = C;
        stats = lk__node_buffer(ctx, nd, 2 * (size_t)N);
        if (!stats || !lk__save(ctx, nd, x) || (w && !lk__save(ctx, nd, w))) return NULL;
    }
    lk_status s = lk_layernorm_forward(y->data, stats, stats ? stats + N : NULL, x->data,
                                       w ? w->data : NULL, b ? b->data : NULL, (int)N, (int)C, eps);
    if (s != LK_OK) return lk_ctx_fail(ctx, s, "%s", lk_last_error());
    return y;
}
