/* unet_blocks.h (internal): the blocks of diffusers' UNet2DConditionModel and AutoencoderKL:
 * ResnetBlock2D, Transformer2DModel (BasicTransformerBlock: self-attention, cross-attention,
 * GEGLU feed-forward), Downsample2D and Upsample2D. Parameters are taken by their diffusers
 * names below a module path ("down_blocks.0.resnets.1"). */
#ifndef LK_MODELS_UNET_BLOCKS_H
#define LK_MODELS_UNET_BLOCKS_H

#include "models/layers.h"

/* ResnetBlock2D (time-embedding shift "default", output scale 1, dropout 0). */
typedef struct lk__resnet {
    const lk__net *net;
    lk__norm norm1, norm2;
    lk__lin conv1, conv2, time_emb_proj, conv_shortcut;
    bool has_temb, has_shortcut;
    int groups;
    float eps;
} lk__resnet;

/* temb_dim 0: no time embedding (the VAE's resnets). A 1x1 conv_shortcut exists when
 * cin != cout. Failures go to n->st. */
void lk__resnet_init(lk__net *n, lk__resnet *r, const char *base, int cin, int cout, int temb_dim,
                     int groups, float eps);
/* x (B, cin, H, W), temb_act = silu(temb) (B, temb_dim) or NULL -> (B, cout, H, W). Gradient-
 * checkpointed when the net asks for it and the ctx records; activations made inside are
 * released at the end. */
lk_tensor *lk__resnet_forward(lk_ctx *ctx, const lk__resnet *r, lk_tensor *x, lk_tensor *temb_act);

/* Attention of a BasicTransformerBlock: to_q/to_k/to_v without bias, to_out.0 with bias. */
typedef struct lk__xattn {
    lk__lin q, k, v, out;
    int heads;
} lk__xattn;

typedef struct lk__tblock {
    lk__norm norm1, norm2, norm3;
    lk__xattn attn1, attn2;
    lk__lin ff_in, ff_out; /* ff.net.0.proj (GEGLU, 8C x C), ff.net.2 (C x 4C) */
} lk__tblock;

/* Transformer2DModel with continuous input (GroupNorm eps 1e-6, proj_in/proj_out as 1x1
 * convolutions, or linear layers when linear_proj as in SD-2). */
typedef struct lk__transformer {
    const lk__net *net;
    lk__norm norm;
    lk__lin proj_in, proj_out;
    bool linear_proj;
    int groups, channels, n_blocks;
    lk__tblock *blocks; /* owned */
} lk__transformer;

void lk__transformer_init(lk__net *n, lk__transformer *t, const char *base, int channels,
                          int heads, int n_layers, int cross_dim, int groups, bool linear_proj);
void lk__transformer_free(lk__transformer *t);
/* x (B, C, H, W), ehs (B, L, cross_dim) -> (B, C, H, W). Checkpointed/released as resnets. */
lk_tensor *lk__transformer_forward(lk_ctx *ctx, const lk__transformer *t, lk_tensor *x,
                                   lk_tensor *ehs);

/* Downsample2D with a convolution: stride 2, padding 1 (UNet); vae_pad: zero padding
 * (0, 1, 0, 1) then padding 0 (the VAE encoder). */
lk_tensor *lk__downsample(lk_ctx *ctx, const lk__net *n, const lk__lin *conv, lk_tensor *x,
                          bool vae_pad);
/* Upsample2D: nearest 2x, then a 3x3 convolution with padding 1. */
lk_tensor *lk__upsample(lk_ctx *ctx, const lk__net *n, const lk__lin *conv, lk_tensor *x);

#endif
