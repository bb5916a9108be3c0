/* likeness/model_config.h: the configurations of the Stable Diffusion 1.x/2.x networks, parsed
 * from diffusers / Hugging Face config.json text (UNet2DConditionModel, AutoencoderKL,
 * CLIPTextModel), and the layer hook the three networks share. */
#ifndef LIKENESS_MODEL_CONFIG_H
#define LIKENESS_MODEL_CONFIG_H

#include "likeness/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_UNET_MAX_BLOCKS 8
#define LK_UNET_MAX_LAYERS 8  /* layers_per_block */
#define LK_VAE_MAX_BLOCKS 8

/* UNet2DConditionModel with the SD-1.x/2.x structure: CrossAttnDownBlock2D / DownBlock2D,
 * UNetMidBlock2DCrossAttn, UpBlock2D / CrossAttnUpBlock2D. */
typedef struct lk_unet_config {
    int in_channels, out_channels;
    int n_blocks;                                /* len(block_out_channels) */
    int block_out_channels[LK_UNET_MAX_BLOCKS];
    bool down_attn[LK_UNET_MAX_BLOCKS];          /* down block i is CrossAttnDownBlock2D */
    bool up_attn[LK_UNET_MAX_BLOCKS];            /* up block i (up order) is CrossAttnUpBlock2D */
    int layers_per_block;
    /* attention heads of the transformers of down block i (num_attention_heads, or diffusers'
     * misnamed attention_head_dim); up block i uses heads[n_blocks-1-i], the mid block
     * heads[n_blocks-1]. Head dim = channels / heads. */
    int heads[LK_UNET_MAX_BLOCKS];
    int transformer_layers[LK_UNET_MAX_BLOCKS];  /* BasicTransformerBlocks per Transformer2DModel */
    int cross_attention_dim;
    bool use_linear_projection;                  /* SD-2: proj_in/proj_out are linear */
    int norm_num_groups;
    float norm_eps;
    bool flip_sin_to_cos;
    float freq_shift;
    int time_embed_dim;                          /* 4 * block_out_channels[0] unless given */
    bool center_input_sample;                    /* sample = 2 * sample - 1 first */
    bool upcast_attention;                       /* parsed; no effect (attention runs in f32) */
    int sample_size;                             /* informational (0 if absent) */
} lk_unet_config;

/* AutoencoderKL: DownEncoderBlock2D encoder, UpDecoderBlock2D decoder, one mid attention. */
typedef struct lk_vae_config {
    int in_channels, out_channels, latent_channels;
    int n_blocks;
    int block_out_channels[LK_VAE_MAX_BLOCKS];
    int layers_per_block;
    int norm_num_groups;
    float scaling_factor; /* latents given to the UNet are mean/sample * scaling_factor */
    int sample_size;      /* informational (0 if absent) */
} lk_vae_config;

typedef enum lk_clip_act {
    LK_CLIP_QUICK_GELU = 0, /* "quick_gelu": OpenAI CLIP (SD-1.x) */
    LK_CLIP_GELU = 1,       /* "gelu": exact erf GELU, OpenCLIP ViT-H (SD-2.x) */
} lk_clip_act;

/* CLIPTextModel (the text half of CLIPTextConfig). */
typedef struct lk_clip_text_config {
    int hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
    int max_position_embeddings, vocab_size;
    lk_clip_act hidden_act;
    float layer_norm_eps;
} lk_clip_text_config;

/* ---- parsing ----
 * Each parser reads config.json TEXT (json: len bytes, need not be NUL-terminated), so a loader
 * can synthesize the JSON for a single-file checkpoint; label names the source in messages
 * ("unet/config.json"; NULL gives a generic name). On success *cfg is filled and LK_OK
 * returned; on failure *cfg is zeroed and a one-line message names the key:
 *   - LK_ERR_FORMAT: not JSON / not an object, a required key missing, a key of the wrong type
 *     or out of range, inconsistent list lengths;
 *   - LK_ERR_UNSUPPORTED: a valid diffusers option this implementation does not run
 *     (class/addition embeddings, dual or only cross attention, other block types, ...).
 * Required keys are the structural ones every diffusers config has; keys diffusers itself
 * defaults (norm_eps, flip_sin_to_cos, ...) take diffusers' defaults when absent; unknown keys
 * are ignored. */

/* Required: in_channels, out_channels, block_out_channels, layers_per_block, down_block_types,
 * up_block_types, cross_attention_dim, and attention_head_dim or num_attention_heads (an int,
 * or a list with one entry per down block; num_attention_heads wins when not null). Keys that
 * must be null/false/default: only_cross_attention, dual_cross_attention, class_embed_type,
 * num_class_embeds, addition_embed_type, addition_time_embed_dim, time_cond_proj_dim,
 * encoder_hid_dim(_type), projection_class_embeddings_input_dim, class_embeddings_concat,
 * cross_attention_norm, timestep_post_act, time_embedding_act_fn, resnet_skip_time_act,
 * mid_block_only_cross_attention, reverse_transformer_layers_per_block; act_fn "silu",
 * time_embedding_type "positional", resnet_time_scale_shift "default", attention_type
 * "default", mid_block_type "UNetMidBlock2DCrossAttn", conv_in/out_kernel 3,
 * downsample_padding 1, mid_block_scale_factor 1, resnet_out_scale_factor 1, dropout 0. */
lk_status lk_unet_config_parse(lk_unet_config *cfg, const char *json, size_t len,
                               const char *label);
/* Required: block_out_channels, layers_per_block, latent_channels (in/out_channels default 3,
 * norm_num_groups 32, scaling_factor 0.18215). down/up_block_types, when given, must be all
 * DownEncoderBlock2D / UpDecoderBlock2D, one per block; act_fn "silu"; use_quant_conv,
 * use_post_quant_conv, mid_block_add_attention true; shift_factor, latents_mean/std null. */
lk_status lk_vae_config_parse(lk_vae_config *cfg, const char *json, size_t len, const char *label);
/* Required: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads (defaults:
 * max_position_embeddings 77, vocab_size 49408, hidden_act "quick_gelu", layer_norm_eps 1e-5).
 * A full CLIPConfig is accepted too: its "text_config" object is read. */
lk_status lk_clip_text_config_parse(lk_clip_text_config *cfg, const char *json, size_t len,
                                    const char *label);

/* The same, reading the file at path (LK_ERR_IO if it cannot be read; messages name the path). */
lk_status lk_unet_config_load(lk_unet_config *cfg, const char *path);
lk_status lk_vae_config_load(lk_vae_config *cfg, const char *path);
lk_status lk_clip_text_config_load(lk_clip_text_config *cfg, const char *path);

/* ---- layer hook (LoRA and other adapters) ----
 * A network with a hook calls it after every linear and convolution layer it runs, with the
 * layer's module path as in the checkpoint, without any weights prefix
 * ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "conv_in",
 * "text_model.encoder.layers.0.mlp.fc1"), the layer's input x and its output y. It returns the
 * tensor to continue with: y itself, or a tensor of y's shape made from ops (e.g.
 * y + s * up(down(x)) for a LoRA), so gradients flow through it. NULL means failure (the hook
 * sets the ctx error). Under gradient checkpointing a block's hooks run again in backward, so
 * a hook must be deterministic. */
typedef lk_tensor *(*lk_layer_hook)(lk_ctx *ctx, const char *name, lk_tensor *x, lk_tensor *y,
                                    void *ud);

#ifdef __cplusplus
}
#endif
#endif
