/* ops/attention.c: differentiable multi-head scaled-dot-product attention, fused and tiled
 * (FlashAttention, Dao et al. 2022); kernels in kernels/cpu/attention.c. Memory O(N): the
 * saved state is q, k, v, the output and one logsumexp per (batch, head, query). */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* iarg: B, H, Nq, Nk, D; farg[0] = scale; saved: q, k, v, out, lse (B, H, Nq).
 * The same tensor passed as two of q, k, v has one gradient buffer; the kernel needs distinct
 * ones, so a repeated buffer is replaced by a zeroed scratch that is added back afterwards. */
static lk_status attention_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *g[3], *use[3];
    const size_t B = (size_t)nd->iarg[0], C = (size_t)(nd->iarg[1] * nd->iarg[4]);
    const size_t n[3] = {B * (size_t)nd->iarg[2] * C, B * (size_t)nd->iarg[3] * C,
                         B * (size_t)nd->iarg[3] * C};
    for (int i = 0; i < 3; i++) use[i] = g[i] = lk__grad(ctx, nd->in[i]);
    lk_status s = lk_ctx_status(ctx);
    for (int i = 1; i < 3 && s == LK_OK; i++)
        if (g[i] && (g[i] == g[0] || g[i] == g[i - 1])) {
            use[i] = lk__scratch(ctx, n[i]);
            if (!use[i]) s = lk_ctx_status(ctx);
            else memset(use[i], 0, sizeof(float) * n[i]);
        }
    if (s == LK_OK) {
        s = lk_attention_backward(use[0], use[1], use[2], dout, nd->saved[0], nd->saved[1],
                                  nd->saved[2], nd->saved[3], nd->saved[4], (int)nd->iarg[0],
                                  (int)nd->iarg[1], (int)nd->iarg[2], (int)nd->iarg[3],
                                  (int)nd->iarg[4], nd->farg[0]);
        if (s != LK_OK) lk_ctx_fail(ctx, s, "attention backward: %s", lk_last_error());
    }
    for (int i = 1; i < 3; i++)
        if (use[i] && use[i] != g[i]) {
            if (s == LK_OK) lk_axpy(g[i], 1.0f, use[i], n[i]);
            lk__scratch_free(ctx, use[i]);
        }
    return s;
}

/* q (B, Nq, H*D), k and v (B, Nk, H*D) -> (B, Nq, H*D); head h uses columns [h*D, (h+1)*D).
 * scale <= 0 means 1/sqrt(D). Inputs may be strided or F16/BF16 (made contiguous f32 first).
 * Fails (NULL, sticky in ctx) on rank or shape mismatch, heads not dividing the channels,
 * Nk == 0, sizes beyond int range, a non-finite scale, or out of memory. */
lk_tensor *lk_attention(lk_ctx *ctx, lk_tensor *q, lk_tensor *k, lk_tensor *v, int heads,
                        float scale) {
    if (!lk__check_inputs(ctx, "attention", 3, q, k, v)) return NULL;
    char bq[160], bk[160], bv[160];
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || q->shape[0] != k->shape[0] ||
        k->shape[0] != v->shape[0] || k->shape[1] != v->shape[1] ||
        q->shape[2] != k->shape[2] || k->shape[2] != v->shape[2])
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "attention: q %s, k %s, v %s must be (B, Nq, C), (B, Nk, C), (B, Nk, C)",
                           lk_shape_str(q, bq, sizeof bq), lk_shape_str(k, bk, sizeof bk),
                           lk_shape_str(v, bv, sizeof bv));
    const int64_t B = q->shape[0], Nq = q->shape[1], Nk = k->shape[1], C = q->shape[2];
    if (heads < 1 || C % heads != 0 || C == 0)
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "attention: %lld channels do not split into %d heads", (long long)C,
                           heads);
    if (Nk == 0 && Nq > 0)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "attention: no keys (k %s)",
                           lk_shape_str(k, bk, sizeof bk));
    if (B > INT_MAX || Nq > INT_MAX || Nk > INT_MAX || C > INT_MAX / 64 ||
        B * (int64_t)heads > INT_MAX)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "attention: q %s too large",
                           lk_shape_str(q, bq, sizeof bq));
    const int H = heads, D = (int)(C / heads);
    if (!isfinite(scale))
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "attention: scale %g is not finite", (double)scale);
    if (scale <= 0.0f) scale = 1.0f / sqrtf((float)D);

    q = lk_contiguous(ctx, q);
    k = lk_contiguous(ctx, k);
    v = lk_contiguous(ctx, v);
    if (!q || !k || !v) return NULL;
    lk_tensor *y = lk__new_f32(ctx, 3, q->shape);
    if (!y) return NULL;
    lk_tensor *in[3] = {q, k, v};
    lk_node *nd = lk__record(ctx, "attention", attention_backward, y, 3, in);
    if (!nd && lk_ctx_status(ctx) != LK_OK) return NULL;
    float *lse = NULL;
    if (nd) {
        if (!lk__save(ctx, nd, q) || !lk__save(ctx, nd, k) || !lk__save(ctx, nd, v) ||
            !lk__save(ctx, nd, y))
            return NULL;
        lse = lk__node_buffer(ctx, nd, (size_t)B * (size_t)H * (size_t)(Nq > 0 ? Nq : 1));
        if (!lse) return NULL;
        nd->iarg[0] = B;
        nd->iarg[1] = H;
        nd->iarg[2] = Nq;
        nd->iarg[3] = Nk;
        nd->iarg[4] = D;
        nd->farg[0] = scale;
    }
    lk_status s = lk_attention_forward(y->data, lse, q->data, k->data, v->data, (int)B, H,
                                       (int)Nq, (int)Nk, D, scale);
    if (s != LK_OK) return lk_ctx_fail(ctx, s, "attention: %s", lk_last_error());
    return y;
}
