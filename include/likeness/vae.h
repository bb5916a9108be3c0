/* likeness/vae.h: the Stable Diffusion image autoencoder, diffusers' AutoencoderKL (Encoder with
 * DownEncoderBlock2D, Decoder with UpDecoderBlock2D, one single-head attention in each mid
 * block, quant_conv / post_quant_conv), over weights named as in diffusers' state_dict. */
#ifndef LIKENESS_VAE_H
#define LIKENESS_VAE_H

#include "likeness/model_config.h"
#include "likeness/rng.h"
#include "likeness/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_vae lk_vae;
/* Encode and decode do not modify the VAE: threads may share one for no-grad runs, each with
 * its own ctx. */

/* Build the autoencoder for cfg (copied) over the tensors of w named prefix + diffusers key
 * ("encoder.conv_in.weight", "decoder.mid_block.attentions.0.to_q.weight", ...). Validation,
 * dtypes and ownership as lk_unet_new: the first missing or misshapen tensor fails with
 * LK_ERR_FORMAT naming it; w is borrowed and must outlive the VAE. *out owns the result (free
 * with lk_vae_free); NULL on failure. */
lk_status lk_vae_new(lk_vae **out, const lk_vae_config *cfg, const lk_weights *w,
                     const char *prefix);
void lk_vae_free(lk_vae *v); /* accepts NULL */
const lk_vae_config *lk_vae_config_of(const lk_vae *v);

/* Encode image (B, in_channels, H, W), values in [-1, 1], H and W multiples of
 * 2^(n_blocks-1), into the latent distribution: *mean and *logvar (B, latent_channels,
 * H/2^(n_blocks-1), W/2^(n_blocks-1)), logvar clamped to [-30, 20] as diffusers'
 * DiagonalGaussianDistribution. The latents are NOT scaled: the caller multiplies by
 * cfg.scaling_factor before the UNet (and divides before lk_vae_decode). Differentiable.
 * Returns LK_OK, or the ctx's failure (then *mean = *logvar = NULL). */
lk_status lk_vae_encode(lk_ctx *ctx, const lk_vae *v, lk_tensor *image, lk_tensor **mean,
                        lk_tensor **logvar);
/* A sample of the distribution: mean + exp(0.5 * logvar) * randn, the noise drawn from rng in
 * row-major order as torch.randn(mean.shape, generator=g) (so a torch-seeded run matches).
 * Not differentiable (the latents of a frozen VAE are data). NULL on failure (sticky in ctx). */
lk_tensor *lk_vae_sample(lk_ctx *ctx, lk_tensor *mean, lk_tensor *logvar, lk_rng *rng);
/* Decode unscaled latents z (B, latent_channels, h, w) into an image (B, out_channels,
 * h*2^(n_blocks-1), w*2^(n_blocks-1)), nominally in [-1, 1] (not clamped). Differentiable.
 * NULL on failure (sticky in ctx). */
lk_tensor *lk_vae_decode(lk_ctx *ctx, const lk_vae *v, lk_tensor *z);

/* Gradient checkpointing of every ResnetBlock2D (default off). */
void lk_vae_set_checkpointing(lk_vae *v, bool on);
/* Install (fn non-NULL) or remove a layer hook (see model_config.h); ud is borrowed. */
void lk_vae_set_layer_hook(lk_vae *v, lk_layer_hook fn, void *ud);

/* Add freshly initialized parameters for every tensor the network of cfg needs that w lacks
 * (PyTorch default init: linear/conv weights U(+-1/sqrt(fan_in)), embeddings U(+-0.0346), norm
 * scales 1, biases 0; from a torch-compatible generator seeded with seed), under prefix, stored
 * as store (F32, F16 or BF16). Tensors already in w are kept (and checked). */
lk_status lk_vae_init_weights(lk_weights *w, const lk_vae_config *cfg, const char *prefix, lk_dtype store, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
