/* likeness/unet.h: the Stable Diffusion 1.x/2.x denoiser, diffusers' UNet2DConditionModel
 * (CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D / CrossAttnUpBlock2D),
 * built from the differentiable ops over weights named as in diffusers' state_dict. */
#ifndef LIKENESS_UNET_H
#define LIKENESS_UNET_H

#include "likeness/model_config.h"
#include "likeness/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_unet lk_unet;

/* Build a UNet for cfg (copied) over the tensors of w named prefix + diffusers key
 * ("conv_in.weight", ...; prefix NULL or "" for none). Every expected tensor is checked up front
 * for presence, shape and a float dtype: the first problem fails with LK_ERR_FORMAT and a
 * message such as "unet: tensor 'conv_in.weight' has shape [320,4,3,3], config expects
 * [32,4,3,3]". Tensors the UNet does not use are ignored. Weights may be F32, F16 or BF16
 * (half matrices are widened inside the kernels; half vectors are copied to f32 here).
 * The UNet BORROWS the weight tensors: w must outlive it (and a trainer may set requires_grad
 * on F32 ones). On success *out owns the new UNet (free with lk_unet_free); else *out = NULL. */
lk_status lk_unet_new(lk_unet **out, const lk_unet_config *cfg, const lk_weights *w,
                      const char *prefix);
void lk_unet_free(lk_unet *u); /* accepts NULL */
const lk_unet_config *lk_unet_config_of(const lk_unet *u);

/* Noise prediction (epsilon or v, as the weights were trained):
 *   sample (B, in_channels, h, w) latents (already scaled by the VAE scaling factor and by the
 *   scheduler's input scaling), h and w divisible by 2^(n_blocks-1);
 *   timesteps: B values, or 1 broadcast to all (any float or integer dtype);
 *   ehs: encoder hidden states (B, L, cross_attention_dim).
 * -> (B, out_channels, h, w). Differentiable; when the ctx records and checkpointing is on,
 * every resnet and transformer is gradient-checkpointed. Activations of finished blocks are
 * released as the forward goes, so inference memory stays bounded by a few blocks plus the skip
 * connections. u is not modified: several threads may run no-grad forwards of one UNet, each
 * with its own ctx (a hook must then be thread-safe). NULL on failure (sticky in ctx). */
lk_tensor *lk_unet_forward(lk_ctx *ctx, const lk_unet *u, lk_tensor *sample,
                           lk_tensor *timesteps, lk_tensor *ehs);

/* Gradient checkpointing of every ResnetBlock2D and Transformer2DModel (default off). */
void lk_unet_set_checkpointing(lk_unet *u, bool on);
/* Install (fn non-NULL) or remove a layer hook (see model_config.h); ud is borrowed. */
void lk_unet_set_layer_hook(lk_unet *u, lk_layer_hook fn, void *ud);

/* Add freshly initialized parameters for every tensor the network of cfg needs that w lacks
 * (PyTorch default init: linear/conv weights U(+-1/sqrt(fan_in)), embeddings U(+-0.0346), norm
 * scales 1, biases 0; from a torch-compatible generator seeded with seed), under prefix, stored
 * as store (F32, F16 or BF16). Tensors already in w are kept (and checked). */
lk_status lk_unet_init_weights(lk_weights *w, const lk_unet_config *cfg, const char *prefix, lk_dtype store, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
