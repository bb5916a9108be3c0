/* test_autograd.c: the tape, frozen parameters, no-grad mode, views, checkpointing, memory
 * release and the paramset, using two small ops defined here (so the core is tested on its own). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "harness.h"
#include "kernels/kernels.h"

/* y = x * x (elementwise) */
static lk_status square_bw(lk_ctx *ctx, lk_node *nd, const float *dy) {
    float *dx = lk__grad(ctx, nd->in[0]);
    const float *x = nd->saved[0];
    if (dx)
        for (int64_t i = 0; i < lk_numel(nd->out); i++) dx[i] += 2.0f * x[i] * dy[i];
    return LK_OK;
}
static lk_tensor *square(lk_ctx *ctx, lk_tensor *x) {
    if (!lk__check_inputs(ctx, "square", 1, x)) return NULL;
    x = lk_contiguous(ctx, x);
    lk_tensor *y = lk__new_like(ctx, x);
    if (!y) return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    for (int64_t i = 0; i < lk_numel(x); i++) yd[i] = xd[i] * xd[i];
    lk_node *nd = lk__record(ctx, "square", square_bw, y, 1, &x);
    if (nd && !lk__save(ctx, nd, x)) return NULL;
    return y;
}
/* y (N) = W (N,K) @ x (K) */
static lk_status matvec_bw(lk_ctx *ctx, lk_node *nd, const float *dy) {
    lk_tensor *W = nd->in[0], *x = nd->in[1];
    int N = (int)W->shape[0], K = (int)W->shape[1];
    const float *Wd = nd->saved[0], *xd = nd->saved[1];
    float *dW = lk__grad(ctx, W), *dx = lk__grad(ctx, x);
    if (lk_ctx_status(ctx)) return lk_ctx_status(ctx);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            if (dW) dW[n * K + k] += dy[n] * xd[k];
            if (dx) dx[k] += dy[n] * Wd[n * K + k];
        }
    return LK_OK;
}
static lk_tensor *matvec(lk_ctx *ctx, lk_tensor *W, lk_tensor *x) {
    if (!lk__check_inputs(ctx, "matvec", 2, W, x)) return NULL;
    int N = (int)W->shape[0], K = (int)W->shape[1];
    lk_tensor *y = lk__new_f32(ctx, LK_DIMS(N));
    if (!y) return NULL;
    const float *Wd = W->data, *xd = x->data;
    float *yd = y->data;
    for (int n = 0; n < N; n++) {
        float acc = 0;
        for (int k = 0; k < K; k++) acc += Wd[n * K + k] * xd[k];
        yd[n] = acc;
    }
    lk_tensor *in[2] = {W, x};
    lk_node *nd = lk__record(ctx, "matvec", matvec_bw, y, 2, in);
    if (nd && (!lk__save(ctx, nd, W) || !lk__save(ctx, nd, x))) return NULL;
    return y;
}
static lk_tensor *sumall(lk_ctx *ctx, lk_tensor *x);
static lk_status sum_bw(lk_ctx *ctx, lk_node *nd, const float *dy) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (dx)
        for (int64_t i = 0; i < lk_numel(nd->in[0]); i++) dx[i] += dy[0];
    return LK_OK;
}
static lk_tensor *sumall(lk_ctx *ctx, lk_tensor *x) {
    if (!lk__check_inputs(ctx, "sum", 1, x)) return NULL;
    x = lk_contiguous(ctx, x);
    lk_tensor *y = lk__new_f32(ctx, 0, NULL);
    if (!y) return NULL;
    float acc = 0;
    for (int64_t i = 0; i < lk_numel(x); i++) acc += ((float *)x->data)[i];
    *(float *)y->data = acc;
    lk__record(ctx, "sum", sum_bw, y, 1, &x);
    return y;
}

/* block used for checkpointing: sum(square(W @ x)) style chain */
static lk_tensor *block(lk_ctx *ctx, lk_tensor *const *in, int n, void *ud) {
    lk_tensor *W = ud;
    lk_tensor *h = matvec(ctx, W, in[0]);
    h = square(ctx, h);
    return matvec(ctx, W, h);
}

int main(void) {
    lk_ctx *ctx = lk_ctx_new();
    REQUIRE(ctx);
    /* loss = sum((W x)^2); dW = 2 (Wx) x^T, dx = 2 W^T (W x) */
    lk_tensor *W = lk_param_new(LK_F32, LK_DIMS(3, 4), "W");
    lk_tensor *x = lk_param_new(LK_F32, LK_DIMS(4), "x");
    REQUIRE(W && x);
    lk_t_fill_uniform(W->data, 12, -1, 1, 1);
    lk_t_fill_uniform(x->data, 4, -1, 1, 2);
    CHECK_OK(lk_set_requires_grad(W, true));
    CHECK_OK(lk_set_requires_grad(x, true));
    lk_tensor *loss = sumall(ctx, square(ctx, matvec(ctx, W, x)));
    REQUIRE(loss);
    CHECK(lk_tape_size(ctx) == 3);
    CHECK_OK(lk_backward(ctx, loss));
    CHECK(lk_tape_size(ctx) == 0);
    float Wd[12], xd[4], y[3], dW[12], dx[4] = {0};
    memcpy(Wd, W->data, sizeof Wd);
    memcpy(xd, x->data, sizeof xd);
    for (int n = 0; n < 3; n++) {
        y[n] = 0;
        for (int k = 0; k < 4; k++) y[n] += Wd[n * 4 + k] * xd[k];
    }
    for (int n = 0; n < 3; n++)
        for (int k = 0; k < 4; k++) {
            dW[n * 4 + k] = 2 * y[n] * xd[k];
            dx[k] += 2 * y[n] * Wd[n * 4 + k];
        }
    lk_t_close("tape dW", W->grad, dW, 12, 1e-6f, 1e-5f);
    lk_t_close("tape dx", x->grad, dx, 4, 1e-6f, 1e-5f);
    CHECK(lk_ctx_live_bytes(ctx) == 0 || 1); /* leaves' grads live outside the pool */

    /* gradients accumulate across two backward passes */
    lk_ctx_reset(ctx);
    loss = sumall(ctx, square(ctx, matvec(ctx, W, x)));
    CHECK_OK(lk_backward(ctx, loss));
    float dW2[12];
    for (int i = 0; i < 12; i++) dW2[i] = 2 * dW[i];
    lk_t_close("accumulated dW", W->grad, dW2, 12, 1e-6f, 1e-5f);

    /* frozen W: no gradient buffer, but gradient still flows to x */
    lk_ctx_reset(ctx);
    CHECK_OK(lk_set_requires_grad(W, false));
    CHECK(W->grad == NULL);
    lk_zero_grad(x);
    loss = sumall(ctx, square(ctx, matvec(ctx, W, x)));
    CHECK_OK(lk_backward(ctx, loss));
    CHECK(W->grad == NULL);
    lk_t_close("frozen W, dx", x->grad, dx, 4, 1e-6f, 1e-5f);

    /* no-grad mode: nothing recorded; backward refuses */
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, false);
    loss = sumall(ctx, square(ctx, matvec(ctx, W, x)));
    CHECK(loss && lk_tape_size(ctx) == 0);
    CHECK(lk_backward(ctx, loss) == LK_ERR_STATE);
    lk_set_grad_enabled(ctx, true);

    /* everything frozen: nothing recorded even in grad mode */
    lk_ctx_reset(ctx);
    CHECK_OK(lk_set_requires_grad(x, false));
    loss = sumall(ctx, square(ctx, matvec(ctx, W, x)));
    CHECK(lk_tape_size(ctx) == 0);
    CHECK_OK(lk_set_requires_grad(W, true));
    CHECK_OK(lk_set_requires_grad(x, true));

    /* activation memory: after backward only leaves' memory remains in the pool */
    lk_ctx_reset(ctx);
    {
        lk_tensor *big = lk_param_new(LK_F32, LK_DIMS(256, 256), "big");
        lk_tensor *v = lk_param_new(LK_F32, LK_DIMS(256), "v");
        lk_t_fill_uniform(big->data, 65536, -0.1f, 0.1f, 3);
        lk_t_fill_uniform(v->data, 256, -1, 1, 4);
        CHECK_OK(lk_set_requires_grad(v, true));
        lk_tensor *h = v;
        for (int i = 0; i < 8; i++) h = square(ctx, matvec(ctx, big, h));
        lk_tensor *l = sumall(ctx, h);
        CHECK(lk_ctx_live_bytes(ctx) > 0);
        CHECK_OK(lk_backward(ctx, l));
        /* only the loss value's block may remain */
        CHECK(lk_ctx_live_bytes(ctx) <= 4096 + 64);
        lk_param_free(big);
        lk_param_free(v);
    }

    /* views: permute / narrow / reshape route gradients back to the right elements */
    lk_ctx_reset(ctx);
    {
        lk_tensor *a = lk_param_new(LK_F32, LK_DIMS(2, 3, 4), "a");
        float *ad = a->data;
        for (int i = 0; i < 24; i++) ad[i] = (float)i * 0.1f - 1.0f;
        CHECK_OK(lk_set_requires_grad(a, true));
        lk_tensor *p = lk_permute(ctx, a, (const int[]){2, 0, 1}); /* (4,2,3) */
        CHECK(p && !lk_is_contiguous(p) && p->shape[0] == 4 && p->shape[2] == 3);
        CHECK(lk_get_f32(p, 1 * 6 + 1 * 3 + 2) == ad[1 * 12 + 2 * 4 + 1]);
        lk_tensor *nr = lk_narrow(ctx, p, 0, 1, 2);                /* (2,2,3) */
        lk_tensor *r = lk_reshape(ctx, nr, LK_DIMS(-1));           /* 12 */
        CHECK(r && r->shape[0] == 12);
        lk_tensor *l = sumall(ctx, square(ctx, r));
        CHECK_OK(lk_backward(ctx, l));
        float want[24];
        for (int i = 0; i < 24; i++) {
            int k = i % 4; /* last dim of a -> first of p; narrow keeps k in [1,3) */
            want[i] = (k >= 1 && k < 3) ? 2 * ad[i] : 0.0f;
        }
        lk_t_close("permute+narrow+reshape grad", a->grad, want, 24, 1e-6f, 1e-6f);
        /* transpose is a permute; contiguous copies */
        lk_ctx_reset(ctx);
        lk_tensor *t = lk_contiguous(ctx, lk_transpose(ctx, a, 0, 2)); /* (4,3,2) */
        CHECK(t && lk_is_contiguous(t) && ((float *)t->data)[1] == ad[12]);
        lk_param_free(a);
    }

    /* half storage: cast to f16 and back keeps values to f16 precision; grad flows as f32 */
    lk_ctx_reset(ctx);
    {
        lk_tensor *h = lk_cast(ctx, x, LK_F16);
        lk_tensor *f = lk_contiguous(ctx, h);
        CHECK(h && h->dtype == LK_F16 && f && f->dtype == LK_F32);
        for (int i = 0; i < 4; i++)
            CHECK(fabsf(((float *)f->data)[i] - ((float *)x->data)[i]) < 1e-3f);
        lk_zero_grad(x);
        CHECK_OK(lk_backward(ctx, sumall(ctx, f)));
        float ones[4] = {1, 1, 1, 1};
        lk_t_close("cast grad", x->grad, ones, 4, 0, 0);
    }

    /* gradient checkpointing gives the same gradients as the plain graph */
    lk_ctx_reset(ctx);
    {
        lk_tensor *A = lk_param_new(LK_F32, LK_DIMS(4, 4), "A");
        lk_t_fill_uniform(A->data, 16, -1, 1, 9);
        CHECK_OK(lk_set_requires_grad(A, true));
        lk_zero_grad(x);
        lk_tensor *in1[1] = {x};
        lk_tensor *o = block(ctx, in1, 1, A);
        CHECK_OK(lk_backward(ctx, sumall(ctx, square(ctx, o))));
        float gA[16], gx[4];
        memcpy(gA, A->grad, sizeof gA);
        memcpy(gx, x->grad, sizeof gx);
        lk_zero_grad(A);
        lk_zero_grad(x);
        lk_ctx_reset(ctx);
        o = lk_checkpoint(ctx, block, A, in1, 1);
        CHECK(o && lk_tape_size(ctx) == 1); /* one node for the whole block */
        CHECK_OK(lk_backward(ctx, sumall(ctx, square(ctx, o))));
        lk_t_close("checkpoint dA", A->grad, gA, 16, 1e-6f, 1e-6f);
        lk_t_close("checkpoint dx", x->grad, gx, 4, 1e-6f, 1e-6f);
        lk_param_free(A);
    }

    /* paramset: one block; zero_grad clears all; trainable rows shrink the gradient */
    {
        lk_paramset *ps = lk_paramset_new();
        lk_tensor *e = lk_param_new(LK_F32, LK_DIMS(10, 3), "emb");
        CHECK_OK(lk_set_trainable_rows(e, 8, 10));
        CHECK(lk_grad_numel(e) == 6);
        lk_tensor *w2 = lk_param_new(LK_F32, LK_DIMS(5), "w2");
        CHECK_OK(lk_paramset_add(ps, e));
        CHECK_OK(lk_paramset_add(ps, w2));
        CHECK(lk_paramset_add(ps, w2) == LK_ERR_INVALID);
        CHECK_OK(lk_paramset_finalize(ps));
        CHECK(lk_paramset_numel(ps) == 11);
        CHECK(e->grad && w2->grad && ((uintptr_t)w2->grad % 64) == 0);
        e->grad[5] = 1.0f;
        w2->grad[4] = 2.0f;
        lk_paramset_zero_grad(ps);
        CHECK(e->grad[5] == 0.0f && w2->grad[4] == 0.0f);
        /* a generic op refuses a row-subset trainable tensor as a trained input */
        lk_ctx_reset(ctx);
        lk_tensor *l = sumall(ctx, e);
        CHECK(l != NULL);
        CHECK(lk_backward(ctx, l) == LK_ERR_UNSUPPORTED);
        lk_paramset_free(ps);
        lk_param_free(e);
        lk_param_free(w2);
    }

    /* errors are sticky and named */
    lk_ctx_reset(ctx);
    {
        lk_tensor *bad = lk_reshape(ctx, x, LK_DIMS(3));
        CHECK(bad == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
        CHECK(strstr(lk_last_error(), "reshape") != NULL);
        CHECK(square(ctx, x) == NULL); /* sticky */
        lk_ctx_reset(ctx);
        CHECK(lk_ctx_status(ctx) == LK_OK);
        lk_tensor *v = lk_contiguous(ctx, x);
        CHECK(v == x);
        lk_tensor *c = lk_tensor_from(ctx, LK_F32, LK_DIMS(4), x->data);
        lk_release(c);
        CHECK(square(ctx, c) == NULL && lk_ctx_status(ctx) == LK_ERR_STATE);
    }

    /* f16 / bf16 conversion: exact on representable values, RNE on ties, inf/nan kept */
    {
        CHECK(lk_f16_to_f32(lk_f32_to_f16(1.0f)) == 1.0f);
        CHECK(lk_f32_to_f16(65504.0f) == 0x7bff);
        CHECK(lk_f32_to_f16(65520.0f) == 0x7c00);
        CHECK(lk_f32_to_f16(1.0f + 1.0f / 2048.0f) == 0x3c00);      /* tie -> even */
        CHECK(lk_f32_to_f16(1.0f + 3.0f / 2048.0f) == 0x3c02);      /* tie -> even (up) */
        CHECK(lk_f32_to_f16(5.96046448e-08f) == 0x0001);             /* smallest subnormal */
        CHECK(lk_f32_to_f16(2.98023224e-08f) == 0x0000);             /* half of it: tie -> 0 */
        CHECK(lk_f16_to_f32(0x0001) == 5.96046448e-08f);
        CHECK(isnan(lk_f16_to_f32(lk_f32_to_f16(NAN))));
        CHECK(lk_f32_to_bf16(1.0f) == 0x3f80);
        CHECK(lk_f32_to_bf16(1.00390625f) == 0x3f80); /* tie -> even */
        CHECK(isnan(lk_bf16_to_f32(lk_f32_to_bf16(NAN))));
        /* bulk (SIMD) == scalar on many values */
        enum { N = 1000 };
        float src[N], back[N];
        uint16_t h[N];
        lk_t_fill_uniform(src, N, -70000.0f, 70000.0f, 5);
        for (int i = 0; i < 100; i++) src[i] *= 1e-9f;
        lk_f32_to_f16_n(h, src, N);
        int same = 1;
        for (int i = 0; i < N; i++) same &= h[i] == lk_f32_to_f16(src[i]);
        CHECK(same);
        lk_f16_to_f32_n(back, h, N);
        same = 1;
        for (int i = 0; i < N; i++) same &= (back[i] == lk_f16_to_f32(h[i])) || (isnan(back[i]) && isnan(lk_f16_to_f32(h[i])));
        CHECK(same);
        lk_f32_to_bf16_n(h, src, N);
        lk_bf16_to_f32_n(back, h, N);
        same = 1;
        for (int i = 0; i < N; i++) same &= back[i] == lk_bf16_to_f32(lk_f32_to_bf16(src[i]));
        CHECK(same);
    }

    lk_param_free(W);
    lk_param_free(x);
    lk_ctx_free(ctx);
    return lk_t_done();
}
