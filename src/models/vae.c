/* vae.c: AutoencoderKL of Stable Diffusion (Rombach et al. 2022; Kingma & Welling 2014) as
 * diffusers 0.25 builds it: Encoder -> quant_conv -> diagonal Gaussian (mean, clamped logvar);
 * post_quant_conv -> Decoder. Mid blocks hold one single-head spatial self-attention. */
#include "likeness/vae.h"

#include "models/unet_blocks.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VAE_EPS 1e-6f

/* The mid block's Attention: GroupNorm, to_q/to_k/to_v/to_out.0 with bias, one head over all
 * channels, residual added, output scale 1. */
typedef struct vae_attn {
    lk__norm norm;
    lk__lin q, k, v, out;
} vae_attn;

typedef struct vae_mid {
    lk__resnet res[2];
    vae_attn attn;
} vae_mid;

typedef struct vae_level {
    int n_layers;
    bool has_resample;
    lk__resnet res[LK_UNET_MAX_LAYERS + 1];
    lk__lin resample; /* downsamplers.0.conv / upsamplers.0.conv */
} vae_level;

struct lk_vae {
    lk__net net;
    lk_vae_config cfg;
    /* encoder */
    lk__lin enc_in, enc_out, quant;
    vae_level enc[LK_VAE_MAX_BLOCKS];
    vae_mid enc_mid;
    lk__norm enc_norm;
    /* decoder */
    lk__lin post_quant, dec_in, dec_out;
    vae_mid dec_mid;
    vae_level dec[LK_VAE_MAX_BLOCKS];
    lk__norm dec_norm;
};

void lk_vae_free(lk_vae *v) {
    if (!v) return;
    lk__net_release(&v->net);
    free(v);
}

static void mid_init(lk__net *n, vae_mid *m, const char *base, int c, int G) {
    char nm[LK__NAME_MAX], ab[LK__NAME_MAX];
    lk__resnet_init(n, &m->res[0], lk__name(n, nm, base, ".resnets.0"), c, c, 0, G, VAE_EPS);
    lk__name(n, ab, base, ".attentions.0");
    lk__norm_init(n, &m->attn.norm, lk__name(n, nm, ab, ".group_norm"), c);
    lk__lin_linear(n, &m->attn.q, lk__name(n, nm, ab, ".to_q"), c, c, true);
    lk__lin_linear(n, &m->attn.k, lk__name(n, nm, ab, ".to_k"), c, c, true);
    lk__lin_linear(n, &m->attn.v, lk__name(n, nm, ab, ".to_v"), c, c, true);
    lk__lin_linear(n, &m->attn.out, lk__name(n, nm, ab, ".to_out.0"), c, c, true);
    lk__resnet_init(n, &m->res[1], lk__name(n, nm, base, ".resnets.1"), c, c, 0, G, VAE_EPS);
}

lk_status lk_vae_new(lk_vae **out, const lk_vae_config *cfg, const lk_weights *w,
                     const char *prefix) {
    if (!out) return lk_fail(LK_ERR_INVALID, "vae_new: NULL out");
    *out = NULL;
    if (!cfg || !w) return lk_fail(LK_ERR_INVALID, "vae_new: NULL config or weights");
    bool ok = cfg->n_blocks >= 1 && cfg->n_blocks <= LK_VAE_MAX_BLOCKS &&
              cfg->layers_per_block >= 1 && cfg->layers_per_block <= LK_UNET_MAX_LAYERS &&
              cfg->norm_num_groups >= 1 && cfg->in_channels >= 1 && cfg->out_channels >= 1 &&
              cfg->latent_channels >= 1;
    for (int i = 0; ok && i < cfg->n_blocks; i++)
        ok = cfg->block_out_channels[i] >= 1 &&
             cfg->block_out_channels[i] % cfg->norm_num_groups == 0;
    if (!ok)
        return lk_fail(LK_ERR_INVALID, "vae_new: inconsistent configuration (parse it with "
                       "lk_vae_config_parse)");
    lk_vae *v = calloc(1, sizeof *v);
    if (!v) return lk_fail(LK_ERR_NOMEM, "vae: out of memory");
    v->cfg = *cfg;
    lk__net *n = &v->net;
    lk__net_init(n, "vae", w, prefix);
    const lk_vae_config *c = &v->cfg;
    const int nb = c->n_blocks, L = c->layers_per_block, G = c->norm_num_groups;
    const int *ch = c->block_out_channels, Z = c->latent_channels;
    char base[LK__NAME_MAX];

    /* encoder */
    lk__lin_conv(n, &v->enc_in, "encoder.conv_in", ch[0], c->in_channels, 3);
    int out_ch = ch[0];
    for (int i = 0; i < nb; i++) {
        vae_level *e = &v->enc[i];
        int in_ch = out_ch;
        out_ch = ch[i];
        e->n_layers = L;
        e->has_resample = i < nb - 1;
        for (int j = 0; j < L; j++) {
            snprintf(base, sizeof base, "encoder.down_blocks.%d.resnets.%d", i, j);
            lk__resnet_init(n, &e->res[j], base, j == 0 ? in_ch : out_ch, out_ch, 0, G, VAE_EPS);
        }
        if (e->has_resample) {
            snprintf(base, sizeof base, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            lk__lin_conv(n, &e->resample, base, out_ch, out_ch, 3);
        }
    }
    mid_init(n, &v->enc_mid, "encoder.mid_block", ch[nb - 1], G);
    lk__norm_init(n, &v->enc_norm, "encoder.conv_norm_out", ch[nb - 1]);
    lk__lin_conv(n, &v->enc_out, "encoder.conv_out", 2 * Z, ch[nb - 1], 3);
    lk__lin_conv(n, &v->quant, "quant_conv", 2 * Z, 2 * Z, 1);

    /* decoder */
    lk__lin_conv(n, &v->post_quant, "post_quant_conv", Z, Z, 1);
    lk__lin_conv(n, &v->dec_in, "decoder.conv_in", ch[nb - 1], Z, 3);
    mid_init(n, &v->dec_mid, "decoder.mid_block", ch[nb - 1], G);
    out_ch = ch[nb - 1];
    for (int i = 0; i < nb; i++) {
        vae_level *d = &v->dec[i];
        int prev_ch = out_ch;
        out_ch = ch[nb - 1 - i];
        d->n_layers = L + 1;
        d->has_resample = i < nb - 1;
        for (int j = 0; j <= L; j++) {
            snprintf(base, sizeof base, "decoder.up_blocks.%d.resnets.%d", i, j);
            lk__resnet_init(n, &d->res[j], base, j == 0 ? prev_ch : out_ch, out_ch, 0, G, VAE_EPS);
        }
        if (d->has_resample) {
            snprintf(base, sizeof base, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            lk__lin_conv(n, &d->resample, base, out_ch, out_ch, 3);
        }
    }
    lk__norm_init(n, &v->dec_norm, "decoder.conv_norm_out", ch[0]);
    lk__lin_conv(n, &v->dec_out, "decoder.conv_out", c->out_channels, ch[0], 3);

    lk_status s = n->st;
    n->w = NULL;
    n->prefix = NULL;
    if (s != LK_OK) {
        lk_vae_free(v);
        return s;
    }
    *out = v;
    return LK_OK;
}

const lk_vae_config *lk_vae_config_of(const lk_vae *v) { return v ? &v->cfg : NULL; }

void lk_vae_set_checkpointing(lk_vae *v, bool on) {
    if (v) v->net.checkpointing = on;
}

void lk_vae_set_layer_hook(lk_vae *v, lk_layer_hook fn, void *ud) {
    if (!v) return;
    v->net.hook = fn;
    v->net.hook_ud = fn ? ud : NULL;
}

/* x (B, C, H, W) -> x + to_out(attention(norm(x))) over the H*W positions, one head. */
static lk_tensor *attn_forward(lk_ctx *ctx, const lk_vae *v, const vae_attn *a, lk_tensor *x) {
    const lk__net *n = &v->net;
    if (!x) return NULL;
    size_t mark = lk_ctx_mark(ctx);
    const int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    static const int to_nhwc[4] = {0, 2, 3, 1}, to_nchw[4] = {0, 3, 1, 2};
    lk_tensor *h = lk_groupnorm(ctx, x, a->norm.w, a->norm.b, v->cfg.norm_num_groups, VAE_EPS);
    h = lk_reshape(ctx, lk_permute(ctx, h, to_nhwc), LK_DIMS(B, H * W, C));
    lk_tensor *q = lk__linear(ctx, n, &a->q, h);
    lk_tensor *k = lk__linear(ctx, n, &a->k, h);
    lk_tensor *val = lk__linear(ctx, n, &a->v, h);
    h = lk_attention(ctx, q, k, val, 1, 0.0f);
    h = lk__linear(ctx, n, &a->out, h);
    h = lk_permute(ctx, lk_reshape(ctx, h, LK_DIMS(B, H, W, C)), to_nchw);
    return lk__scope_end(ctx, mark, lk_add(ctx, h, x));
}

static lk_tensor *mid_forward(lk_ctx *ctx, const lk_vae *v, const vae_mid *m, lk_tensor *x) {
    lk_tensor *a = lk__resnet_forward(ctx, &m->res[0], x, NULL);
    lk_tensor *b = attn_forward(ctx, v, &m->attn, a);
    lk_release(a);
    lk_tensor *c = lk__resnet_forward(ctx, &m->res[1], b, NULL);
    lk_release(b);
    return c;
}

/* y = f(x) with x released afterwards (x is always an intermediate here). */
static lk_tensor *then_release(lk_tensor *y, lk_tensor *x) {
    lk_release(x);
    return y;
}

lk_status lk_vae_encode(lk_ctx *ctx, const lk_vae *v, lk_tensor *image, lk_tensor **mean,
                        lk_tensor **logvar) {
    if (mean) *mean = NULL;
    if (logvar) *logvar = NULL;
    if (!ctx || !mean || !logvar) return lk_fail(LK_ERR_INVALID, "vae_encode: NULL argument");
    if (lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    if (!v || !image) {
        lk_ctx_fail(ctx, LK_ERR_INVALID, "vae_encode: NULL model or image");
        return lk_ctx_status(ctx);
    }
    const lk_vae_config *c = &v->cfg;
    const lk__net *n = &v->net;
    const int64_t f = (int64_t)1 << (c->n_blocks - 1);
    if (image->ndim != 4 || image->shape[1] != c->in_channels || image->shape[2] % f ||
        image->shape[3] % f || image->shape[0] < 1 || image->shape[2] < 1 || image->shape[3] < 1) {
        char b[160];
        lk_ctx_fail(ctx, LK_ERR_INVALID, "vae_encode: image %s must be (B, %d, H, W) with H and "
                    "W multiples of %lld", lk_shape_str(image, b, sizeof b), c->in_channels,
                    (long long)f);
        return lk_ctx_status(ctx);
    }
    lk_tensor *h = lk__conv(ctx, n, &v->enc_in, image, 1, 1);
    for (int i = 0; i < c->n_blocks; i++) {
        const vae_level *e = &v->enc[i];
        for (int j = 0; j < e->n_layers; j++)
            h = then_release(lk__resnet_forward(ctx, &e->res[j], h, NULL), h);
        if (e->has_resample) h = then_release(lk__downsample(ctx, n, &e->resample, h, true), h);
    }
    h = then_release(mid_forward(ctx, v, &v->enc_mid, h), h);
    size_t mark = lk_ctx_mark(ctx);
    lk_tensor *o = lk_groupnorm_silu(ctx, h, v->enc_norm.w, v->enc_norm.b, c->norm_num_groups,
                                     VAE_EPS);
    o = lk__conv(ctx, n, &v->enc_out, o, 1, 1);
    o = lk__scope_end(ctx, mark, lk__conv(ctx, n, &v->quant, o, 1, 0));
    lk_release(h);
    const int Z = c->latent_channels;
    lk_tensor *mu = lk_contiguous(ctx, lk_narrow(ctx, o, 1, 0, Z));
    lk_tensor *lv = lk__clamp(ctx, lk_narrow(ctx, o, 1, Z, Z), -30.0f, 20.0f);
    if (lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    *mean = mu;
    *logvar = lv;
    return LK_OK;
}

lk_tensor *lk_vae_sample(lk_ctx *ctx, lk_tensor *mean, lk_tensor *logvar, lk_rng *rng) {
    if (!ctx || lk_ctx_status(ctx) != LK_OK) return NULL;
    if (!mean || !logvar || !rng || !mean->data || !logvar->data || !lk_same_shape(mean, logvar))
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "vae_sample: mean and logvar of one shape and "
                           "an rng are needed");
    const int64_t N = lk_numel(mean);
    lk_tensor *z = lk_tensor_new(ctx, LK_F32, mean->ndim, mean->shape);
    if (!z) return NULL;
    float *zd = z->data;
    lk_rng_randn(rng, zd, (size_t)N);
    for (int64_t i = 0; i < N; i++)
        zd[i] = lk_get_f32(mean, i) + expf(0.5f * lk_get_f32(logvar, i)) * zd[i];
    return z;
}

lk_tensor *lk_vae_decode(lk_ctx *ctx, const lk_vae *v, lk_tensor *z) {
    if (!ctx || lk_ctx_status(ctx) != LK_OK) return NULL;
    if (!v || !z) return lk_ctx_fail(ctx, LK_ERR_INVALID, "vae_decode: NULL model or latents");
    const lk_vae_config *c = &v->cfg;
    const lk__net *n = &v->net;
    if (z->ndim != 4 || z->shape[1] != c->latent_channels || z->shape[0] < 1 ||
        z->shape[2] < 1 || z->shape[3] < 1) {
        char b[160];
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "vae_decode: latents %s must be (B, %d, h, w)",
                           lk_shape_str(z, b, sizeof b), c->latent_channels);
    }
    lk_tensor *h = lk__conv(ctx, n, &v->post_quant, z, 1, 0);
    h = then_release(lk__conv(ctx, n, &v->dec_in, h, 1, 1), h);
    h = then_release(mid_forward(ctx, v, &v->dec_mid, h), h);
    for (int i = 0; i < c->n_blocks; i++) {
        const vae_level *d = &v->dec[i];
        for (int j = 0; j < d->n_layers; j++)
            h = then_release(lk__resnet_forward(ctx, &d->res[j], h, NULL), h);
        if (d->has_resample) h = then_release(lk__upsample(ctx, n, &d->resample, h), h);
    }
    size_t mark = lk_ctx_mark(ctx);
    lk_tensor *o = lk_groupnorm_silu(ctx, h, v->dec_norm.w, v->dec_norm.b, c->norm_num_groups,
                                     VAE_EPS);
    o = lk__scope_end(ctx, mark, lk__conv(ctx, n, &v->dec_out, o, 1, 1));
    lk_release(h);
    return o;
}
