/* unet_blocks.c: ResnetBlock2D, Transformer2DModel / BasicTransformerBlock, Downsample2D and
 * Upsample2D as diffusers 0.25 defines them (Rombach et al. 2022, "High-Resolution Image
 * Synthesis with Latent Diffusion Models"), built from the differentiable ops. */
#include "models/unet_blocks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- ResnetBlock2D ---------------- */

void lk__resnet_init(lk__net *n, lk__resnet *r, const char *base, int cin, int cout, int temb_dim,
                     int groups, float eps) {
    char nm[LK__NAME_MAX];
    memset(r, 0, sizeof *r);
    r->net = n;
    r->groups = groups;
    r->eps = eps;
    r->has_temb = temb_dim > 0;
    r->has_shortcut = cin != cout;
    lk__norm_init(n, &r->norm1, lk__name(n, nm, base, ".norm1"), cin);
    lk__lin_conv(n, &r->conv1, lk__name(n, nm, base, ".conv1"), cout, cin, 3);
    if (r->has_temb)
        lk__lin_linear(n, &r->time_emb_proj, lk__name(n, nm, base, ".time_emb_proj"), cout,
                       temb_dim, true);
    lk__norm_init(n, &r->norm2, lk__name(n, nm, base, ".norm2"), cout);
    lk__lin_conv(n, &r->conv2, lk__name(n, nm, base, ".conv2"), cout, cout, 3);
    if (r->has_shortcut)
        lk__lin_conv(n, &r->conv_shortcut, lk__name(n, nm, base, ".conv_shortcut"), cout, cin, 1);
}

static lk_tensor *resnet_body(lk_ctx *ctx, const lk__resnet *r, lk_tensor *x, lk_tensor *temb_act) {
    const lk__net *n = r->net;
    lk_tensor *h = lk_groupnorm_silu(ctx, x, r->norm1.w, r->norm1.b, r->groups, r->eps);
    h = lk__conv(ctx, n, &r->conv1, h, 1, 1);
    if (r->has_temb) {
        if (!temb_act)
            return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: resnet needs a time embedding", n->model);
        lk_tensor *t = lk__linear(ctx, n, &r->time_emb_proj, temb_act); /* (B, cout) */
        if (t) t = lk_reshape(ctx, t, LK_DIMS(t->shape[0], t->shape[1], 1, 1));
        h = lk_add(ctx, h, t);
    }
    h = lk_groupnorm_silu(ctx, h, r->norm2.w, r->norm2.b, r->groups, r->eps);
    h = lk__conv(ctx, n, &r->conv2, h, 1, 1);
    lk_tensor *sc = r->has_shortcut ? lk__conv(ctx, n, &r->conv_shortcut, x, 1, 0) : x;
    return lk_add(ctx, sc, h);
}

static lk_tensor *resnet_ckpt(lk_ctx *ctx, lk_tensor *const *in, int n_in, void *ud) {
    return resnet_body(ctx, ud, in[0], n_in > 1 ? in[1] : NULL);
}

lk_tensor *lk__resnet_forward(lk_ctx *ctx, const lk__resnet *r, lk_tensor *x, lk_tensor *temb_act) {
    if (r->net->checkpointing && lk_grad_enabled(ctx) && x) {
        lk_tensor *in[2] = {x, temb_act};
        return lk_checkpoint(ctx, resnet_ckpt, (void *)r, in, temb_act ? 2 : 1);
    }
    size_t mark = lk_ctx_mark(ctx);
    return lk__scope_end(ctx, mark, resnet_body(ctx, r, x, temb_act));
}

/* ---------------- Transformer2DModel ---------------- */

static void xattn_init(lk__net *n, lk__xattn *a, const char *base, int c, int kv_dim, int heads) {
    char nm[LK__NAME_MAX];
    a->heads = heads;
    lk__lin_linear(n, &a->q, lk__name(n, nm, base, ".to_q"), c, c, false);
    lk__lin_linear(n, &a->k, lk__name(n, nm, base, ".to_k"), c, kv_dim, false);
    lk__lin_linear(n, &a->v, lk__name(n, nm, base, ".to_v"), c, kv_dim, false);
    lk__lin_linear(n, &a->out, lk__name(n, nm, base, ".to_out.0"), c, c, true);
}

void lk__transformer_init(lk__net *n, lk__transformer *t, const char *base, int channels,
                          int heads, int n_layers, int cross_dim, int groups, bool linear_proj) {
    char nm[LK__NAME_MAX], bb[LK__NAME_MAX];
    memset(t, 0, sizeof *t);
    t->net = n;
    t->linear_proj = linear_proj;
    t->groups = groups;
    t->channels = channels;
    const int c = channels;
    lk__norm_init(n, &t->norm, lk__name(n, nm, base, ".norm"), c);
    if (linear_proj) {
        lk__lin_linear(n, &t->proj_in, lk__name(n, nm, base, ".proj_in"), c, c, true);
        lk__lin_linear(n, &t->proj_out, lk__name(n, nm, base, ".proj_out"), c, c, true);
    } else {
        lk__lin_conv(n, &t->proj_in, lk__name(n, nm, base, ".proj_in"), c, c, 1);
        lk__lin_conv(n, &t->proj_out, lk__name(n, nm, base, ".proj_out"), c, c, 1);
    }
    if (n->st != LK_OK) return;
    t->blocks = calloc((size_t)n_layers, sizeof *t->blocks);
    if (!t->blocks) {
        n->st = lk_fail(LK_ERR_NOMEM, "%s: out of memory", n->model);
        return;
    }
    t->n_blocks = n_layers;
    for (int i = 0; i < n_layers && n->st == LK_OK; i++) {
        lk__tblock *b = &t->blocks[i];
        char suf[48];
        snprintf(suf, sizeof suf, ".transformer_blocks.%d", i);
        lk__name(n, bb, base, suf);
        lk__norm_init(n, &b->norm1, lk__name(n, nm, bb, ".norm1"), c);
        xattn_init(n, &b->attn1, lk__name(n, nm, bb, ".attn1"), c, c, heads);
        lk__norm_init(n, &b->norm2, lk__name(n, nm, bb, ".norm2"), c);
        xattn_init(n, &b->attn2, lk__name(n, nm, bb, ".attn2"), c, cross_dim, heads);
        lk__norm_init(n, &b->norm3, lk__name(n, nm, bb, ".norm3"), c);
        lk__lin_linear(n, &b->ff_in, lk__name(n, nm, bb, ".ff.net.0.proj"), 8 * (int64_t)c, c, true);
        lk__lin_linear(n, &b->ff_out, lk__name(n, nm, bb, ".ff.net.2"), c, 4 * (int64_t)c, true);
    }
}

void lk__transformer_free(lk__transformer *t) {
    if (!t) return;
    free(t->blocks);
    t->blocks = NULL;
    t->n_blocks = 0;
}

/* h (B, N, C); kv (B, L, kv_dim) (h itself for self-attention) -> (B, N, C) */
static lk_tensor *xattn(lk_ctx *ctx, const lk__net *n, const lk__xattn *a, lk_tensor *h,
                        lk_tensor *kv) {
    lk_tensor *q = lk__linear(ctx, n, &a->q, h);
    lk_tensor *k = lk__linear(ctx, n, &a->k, kv);
    lk_tensor *v = lk__linear(ctx, n, &a->v, kv);
    lk_tensor *o = lk_attention(ctx, q, k, v, a->heads, 0.0f);
    return lk__linear(ctx, n, &a->out, o);
}

/* BasicTransformerBlock: LN -> self-attn -> +; LN -> cross-attn -> +; LN -> GEGLU FF -> +. */
static lk_tensor *tblock(lk_ctx *ctx, const lk__net *n, const lk__tblock *b, lk_tensor *x,
                         lk_tensor *ehs) {
    const float eps = 1e-5f;
    lk_tensor *h = lk_layernorm(ctx, x, b->norm1.w, b->norm1.b, eps);
    x = lk_add(ctx, xattn(ctx, n, &b->attn1, h, h), x);
    h = lk_layernorm(ctx, x, b->norm2.w, b->norm2.b, eps);
    x = lk_add(ctx, xattn(ctx, n, &b->attn2, h, ehs), x);
    h = lk_layernorm(ctx, x, b->norm3.w, b->norm3.b, eps);
    h = lk__linear(ctx, n, &b->ff_in, h);
    h = lk_geglu(ctx, h);
    h = lk__linear(ctx, n, &b->ff_out, h);
    return lk_add(ctx, h, x);
}

static lk_tensor *transformer_body(lk_ctx *ctx, const lk__transformer *t, lk_tensor *x,
                                   lk_tensor *ehs) {
    const lk__net *n = t->net;
    if (!x || !ehs) return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: transformer input is NULL", n->model);
    if (x->ndim != 4 || x->shape[1] != t->channels) {
        char b[160];
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: transformer input %s, expected %d channels",
                           n->model, lk_shape_str(x, b, sizeof b), t->channels);
    }
    const int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    static const int to_nhwc[4] = {0, 2, 3, 1}, to_nchw[4] = {0, 3, 1, 2};
    lk_tensor *h = lk_groupnorm(ctx, x, t->norm.w, t->norm.b, t->groups, 1e-6f);
    if (!t->linear_proj) h = lk__conv(ctx, n, &t->proj_in, h, 1, 0);
    h = lk_reshape(ctx, lk_permute(ctx, h, to_nhwc), LK_DIMS(B, H * W, C));
    if (t->linear_proj) h = lk__linear(ctx, n, &t->proj_in, h);
    for (int i = 0; i < t->n_blocks; i++) h = tblock(ctx, n, &t->blocks[i], h, ehs);
    if (t->linear_proj) h = lk__linear(ctx, n, &t->proj_out, h);
    h = lk_permute(ctx, lk_reshape(ctx, h, LK_DIMS(B, H, W, C)), to_nchw);
    if (!t->linear_proj) h = lk__conv(ctx, n, &t->proj_out, h, 1, 0);
    return lk_add(ctx, h, x);
}

static lk_tensor *transformer_ckpt(lk_ctx *ctx, lk_tensor *const *in, int n_in, void *ud) {
    return transformer_body(ctx, ud, in[0], n_in > 1 ? in[1] : NULL);
}

lk_tensor *lk__transformer_forward(lk_ctx *ctx, const lk__transformer *t, lk_tensor *x,
                                   lk_tensor *ehs) {
    if (t->net->checkpointing && lk_grad_enabled(ctx) && x && ehs) {
        lk_tensor *in[2] = {x, ehs};
        return lk_checkpoint(ctx, transformer_ckpt, (void *)t, in, 2);
    }
    size_t mark = lk_ctx_mark(ctx);
    return lk__scope_end(ctx, mark, transformer_body(ctx, t, x, ehs));
}

/* ---------------- Downsample2D / Upsample2D ---------------- */

lk_tensor *lk__downsample(lk_ctx *ctx, const lk__net *n, const lk__lin *conv, lk_tensor *x,
                          bool vae_pad) {
    if (!vae_pad) return lk__conv(ctx, n, conv, x, 2, 1);
    size_t mark = lk_ctx_mark(ctx);
    lk_tensor *p = lk__pad2d(ctx, x, 0, 1, 0, 1);
    return lk__scope_end(ctx, mark, lk__conv(ctx, n, conv, p, 2, 0));
}

lk_tensor *lk__upsample(lk_ctx *ctx, const lk__net *n, const lk__lin *conv, lk_tensor *x) {
    size_t mark = lk_ctx_mark(ctx);
    lk_tensor *u = lk_upsample_nearest2x(ctx, x);
    return lk__scope_end(ctx, mark, lk__conv(ctx, n, conv, u, 1, 1));
}
