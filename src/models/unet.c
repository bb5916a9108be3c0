/* unet.c: UNet2DConditionModel of Stable Diffusion 1.x/2.x (Rombach et al. 2022), as diffusers
 * 0.25 builds it from its config: time embedding, down blocks with skip outputs, cross-attention
 * mid block, up blocks concatenating the skips in reverse order, output head. */
#include "likeness/unet.h"

#include "models/unet_blocks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct unet_down {
    int n_layers;
    bool attn, has_down;
    lk__resnet res[LK_UNET_MAX_LAYERS];
    lk__transformer tr[LK_UNET_MAX_LAYERS];
    lk__lin down; /* downsamplers.0.conv */
} unet_down;

typedef struct unet_up {
    int n_layers; /* layers_per_block + 1 */
    bool attn, has_up;
    lk__resnet res[LK_UNET_MAX_LAYERS + 1];
    lk__transformer tr[LK_UNET_MAX_LAYERS + 1];
    lk__lin up; /* upsamplers.0.conv */
} unet_up;

struct lk_unet {
    lk__net net;
    lk_unet_config cfg;
    lk__lin conv_in, time1, time2, conv_out;
    lk__norm norm_out;
    unet_down down[LK_UNET_MAX_BLOCKS];
    lk__resnet mid_res[2];
    lk__transformer mid_tr;
    unet_up up[LK_UNET_MAX_BLOCKS];
};

void lk_unet_free(lk_unet *u) {
    if (!u) return;
    for (int i = 0; i < LK_UNET_MAX_BLOCKS; i++) {
        for (int j = 0; j < LK_UNET_MAX_LAYERS; j++) lk__transformer_free(&u->down[i].tr[j]);
        for (int j = 0; j < LK_UNET_MAX_LAYERS + 1; j++) lk__transformer_free(&u->up[i].tr[j]);
    }
    lk__transformer_free(&u->mid_tr);
    lk__net_release(&u->net);
    free(u);
}

static bool cfg_ok(const lk_unet_config *c) {
    if (c->n_blocks < 1 || c->n_blocks > LK_UNET_MAX_BLOCKS || c->layers_per_block < 1 ||
        c->layers_per_block > LK_UNET_MAX_LAYERS || c->in_channels < 1 || c->out_channels < 1 ||
        c->norm_num_groups < 1 || c->cross_attention_dim < 1 || c->time_embed_dim < 1)
        return false;
    for (int i = 0; i < c->n_blocks; i++) {
        int ch = c->block_out_channels[i];
        if (ch < 1 || ch % c->norm_num_groups || c->heads[i] < 1 || c->transformer_layers[i] < 1)
            return false;
        if ((c->down_attn[i] || c->up_attn[c->n_blocks - 1 - i] || i == c->n_blocks - 1) &&
            ch % c->heads[i])
            return false;
    }
    return true;
}

lk_status lk_unet_new(lk_unet **out, const lk_unet_config *cfg, const lk_weights *w,
                      const char *prefix) {
    if (!out) return lk_fail(LK_ERR_INVALID, "unet_new: NULL out");
    *out = NULL;
    if (!cfg || !w) return lk_fail(LK_ERR_INVALID, "unet_new: NULL config or weights");
    if (!cfg_ok(cfg))
        return lk_fail(LK_ERR_INVALID, "unet_new: inconsistent configuration (parse it with "
                       "lk_unet_config_parse)");
    lk_unet *u = calloc(1, sizeof *u);
    if (!u) return lk_fail(LK_ERR_NOMEM, "unet: out of memory");
    u->cfg = *cfg;
    lk__net *n = &u->net;
    lk__net_init(n, "unet", w, prefix);
    const lk_unet_config *c = &u->cfg;
    const int nb = c->n_blocks, L = c->layers_per_block, G = c->norm_num_groups;
    const int C0 = c->block_out_channels[0], T = c->time_embed_dim, X = c->cross_attention_dim;
    const float eps = c->norm_eps;
    char base[LK__NAME_MAX];

    lk__lin_linear(n, &u->time1, "time_embedding.linear_1", T, C0, true);
    lk__lin_linear(n, &u->time2, "time_embedding.linear_2", T, T, true);
    lk__lin_conv(n, &u->conv_in, "conv_in", C0, c->in_channels, 3);

    int out_ch = C0;
    for (int i = 0; i < nb; i++) {
        unet_down *d = &u->down[i];
        int in_ch = out_ch;
        out_ch = c->block_out_channels[i];
        d->n_layers = L;
        d->attn = c->down_attn[i];
        d->has_down = i < nb - 1;
        for (int j = 0; j < L; j++) {
            snprintf(base, sizeof base, "down_blocks.%d.resnets.%d", i, j);
            lk__resnet_init(n, &d->res[j], base, j == 0 ? in_ch : out_ch, out_ch, T, G, eps);
            if (d->attn) {
                snprintf(base, sizeof base, "down_blocks.%d.attentions.%d", i, j);
                lk__transformer_init(n, &d->tr[j], base, out_ch, c->heads[i],
                                     c->transformer_layers[i], X, G, c->use_linear_projection);
            }
        }
        if (d->has_down) {
            snprintf(base, sizeof base, "down_blocks.%d.downsamplers.0.conv", i);
            lk__lin_conv(n, &d->down, base, out_ch, out_ch, 3);
        }
    }

    const int Cm = c->block_out_channels[nb - 1];
    lk__resnet_init(n, &u->mid_res[0], "mid_block.resnets.0", Cm, Cm, T, G, eps);
    lk__transformer_init(n, &u->mid_tr, "mid_block.attentions.0", Cm, c->heads[nb - 1],
                         c->transformer_layers[nb - 1], X, G, c->use_linear_projection);
    lk__resnet_init(n, &u->mid_res[1], "mid_block.resnets.1", Cm, Cm, T, G, eps);

    out_ch = Cm;
    for (int i = 0; i < nb; i++) {
        unet_up *p = &u->up[i];
        const int r = nb - 1 - i; /* the down block with the same resolution */
        int prev_ch = out_ch;
        out_ch = c->block_out_channels[r];
        int in_ch = c->block_out_channels[r > 0 ? r - 1 : 0];
        p->n_layers = L + 1;
        p->attn = c->up_attn[i];
        p->has_up = i < nb - 1;
        for (int j = 0; j <= L; j++) {
            int skip_ch = j == L ? in_ch : out_ch;
            int res_in = j == 0 ? prev_ch : out_ch;
            snprintf(base, sizeof base, "up_blocks.%d.resnets.%d", i, j);
            lk__resnet_init(n, &p->res[j], base, res_in + skip_ch, out_ch, T, G, eps);
            if (p->attn) {
                snprintf(base, sizeof base, "up_blocks.%d.attentions.%d", i, j);
                lk__transformer_init(n, &p->tr[j], base, out_ch, c->heads[r],
                                     c->transformer_layers[r], X, G, c->use_linear_projection);
            }
        }
        if (p->has_up) {
            snprintf(base, sizeof base, "up_blocks.%d.upsamplers.0.conv", i);
            lk__lin_conv(n, &p->up, base, out_ch, out_ch, 3);
        }
    }

    lk__norm_init(n, &u->norm_out, "conv_norm_out", C0);
    lk__lin_conv(n, &u->conv_out, "conv_out", c->out_channels, C0, 3);

    lk_status s = n->st;
    n->w = NULL;
    n->prefix = NULL;
    if (s != LK_OK) {
        lk_unet_free(u);
        return s;
    }
    *out = u;
    return LK_OK;
}

const lk_unet_config *lk_unet_config_of(const lk_unet *u) { return u ? &u->cfg : NULL; }

void lk_unet_set_checkpointing(lk_unet *u, bool on) {
    if (u) u->net.checkpointing = on;
}

void lk_unet_set_layer_hook(lk_unet *u, lk_layer_hook fn, void *ud) {
    if (!u) return;
    u->net.hook = fn;
    u->net.hook_ud = fn ? ud : NULL;
}

/* The time embedding silu(linear_2(silu(linear_1(sinusoids(t))))) the resnets take. */
static lk_tensor *time_embedding(lk_ctx *ctx, const lk_unet *u, lk_tensor *t, int64_t B) {
    const lk_unet_config *c = &u->cfg;
    size_t mark = lk_ctx_mark(ctx);
    if (lk_numel(t) == 1 && B > 1) { /* one timestep for the whole batch */
        lk_tensor *tb = lk_tensor_full(ctx, lk_get_f32(t, 0), 1, &B);
        t = tb;
    }
    lk_tensor *e = lk_timestep_embedding(ctx, t, c->block_out_channels[0], c->flip_sin_to_cos,
                                         c->freq_shift, 10000.0f);
    e = lk__linear(ctx, &u->net, &u->time1, e);
    e = lk_silu(ctx, e);
    e = lk__linear(ctx, &u->net, &u->time2, e);
    return lk__scope_end(ctx, mark, lk_silu(ctx, e));
}

static bool check_inputs(lk_ctx *ctx, const lk_unet *u, lk_tensor *x, lk_tensor *t,
                         lk_tensor *ehs) {
    const lk_unet_config *c = &u->cfg;
    char b1[160], b2[160];
    if (!x || !t || !ehs) {
        lk_ctx_fail(ctx, LK_ERR_INVALID, "unet: NULL input");
        return false;
    }
    lk_shape_str(x, b1, sizeof b1);
    const int64_t f = (int64_t)1 << (c->n_blocks - 1);
    if (x->ndim != 4 || x->shape[1] != c->in_channels || x->shape[0] < 1 ||
        x->shape[2] < 1 || x->shape[3] < 1 || x->shape[2] % f || x->shape[3] % f) {
        lk_ctx_fail(ctx, LK_ERR_INVALID, "unet: sample %s must be (B, %d, h, w) with h and w "
                    "multiples of %lld", b1, c->in_channels, (long long)f);
        return false;
    }
    const int64_t B = x->shape[0];
    if (ehs->ndim != 3 || ehs->shape[0] != B || ehs->shape[2] != c->cross_attention_dim ||
        ehs->shape[1] < 1) {
        lk_ctx_fail(ctx, LK_ERR_INVALID, "unet: encoder_hidden_states %s must be (%lld, L, %d) "
                    "for sample %s", lk_shape_str(ehs, b2, sizeof b2), (long long)B,
                    c->cross_attention_dim, b1);
        return false;
    }
    if (t->ndim > 1 || (lk_numel(t) != 1 && lk_numel(t) != B)) {
        lk_ctx_fail(ctx, LK_ERR_INVALID, "unet: timesteps %s must hold 1 or %lld values",
                    lk_shape_str(t, b2, sizeof b2), (long long)B);
        return false;
    }
    return true;
}

lk_tensor *lk_unet_forward(lk_ctx *ctx, const lk_unet *u, lk_tensor *sample,
                           lk_tensor *timesteps, lk_tensor *ehs) {
    if (!ctx) return NULL;
    if (lk_ctx_status(ctx) != LK_OK) return NULL;
    if (!u) return lk_ctx_fail(ctx, LK_ERR_INVALID, "unet: NULL model");
    if (!check_inputs(ctx, u, sample, timesteps, ehs)) return NULL;
    const lk_unet_config *c = &u->cfg;
    const lk__net *n = &u->net;
    const int nb = c->n_blocks;

    lk_tensor *temb = time_embedding(ctx, u, timesteps, sample->shape[0]);
    lk_tensor *h = sample;
    if (c->center_input_sample) h = lk_add_scalar(ctx, lk_scale(ctx, h, 2.0f), -1.0f);
    h = lk__conv(ctx, n, &u->conv_in, h, 1, 1);

    /* skip outputs: conv_in, then every resnet/attention layer and downsampler */
    lk_tensor *skips[1 + LK_UNET_MAX_BLOCKS * (LK_UNET_MAX_LAYERS + 1)];
    int ns = 0;
    skips[ns++] = h;
    for (int i = 0; i < nb; i++) {
        const unet_down *d = &u->down[i];
        for (int j = 0; j < d->n_layers; j++) {
            h = lk__resnet_forward(ctx, &d->res[j], h, temb);
            if (d->attn) {
                lk_tensor *a = lk__transformer_forward(ctx, &d->tr[j], h, ehs);
                lk_release(h);
                h = a;
            }
            skips[ns++] = h;
        }
        if (d->has_down) {
            h = lk__downsample(ctx, n, &d->down, h, false);
            skips[ns++] = h;
        }
    }

    lk_tensor *m = lk__resnet_forward(ctx, &u->mid_res[0], h, temb);
    lk_tensor *a = lk__transformer_forward(ctx, &u->mid_tr, m, ehs);
    lk_release(m);
    h = lk__resnet_forward(ctx, &u->mid_res[1], a, temb);
    lk_release(a);

    for (int i = 0; i < nb; i++) {
        const unet_up *p = &u->up[i];
        for (int j = 0; j < p->n_layers; j++) {
            lk_tensor *s = skips[--ns];
            lk_tensor *cat_in[2] = {h, s};
            lk_tensor *cat = lk_concat(ctx, cat_in, 2, 1);
            lk_release(h);
            lk_release(s);
            h = lk__resnet_forward(ctx, &p->res[j], cat, temb);
            lk_release(cat);
            if (p->attn) {
                a = lk__transformer_forward(ctx, &p->tr[j], h, ehs);
                lk_release(h);
                h = a;
            }
        }
        if (p->has_up) {
            lk_tensor *up = lk__upsample(ctx, n, &p->up, h);
            lk_release(h);
            h = up;
        }
    }
    lk_release(temb);

    size_t mark = lk_ctx_mark(ctx);
    lk_tensor *o = lk_groupnorm_silu(ctx, h, u->norm_out.w, u->norm_out.b, c->norm_num_groups,
                                     c->norm_eps);
    o = lk__scope_end(ctx, mark, lk__conv(ctx, n, &u->conv_out, o, 1, 1));
    lk_release(h);
    return o;
}
