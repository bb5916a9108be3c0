/* emoji_arch.c: the architectures of likeness's own emoji model, Stable Diffusion's three
 * networks scaled down for 64x64 images on a CPU: a 4-layer CLIP text transformer (width 256),
 * an AutoencoderKL with 4x down-sampling (64x64x3 -> 16x16x4), and a 3-level
 * UNet2DConditionModel (64, 128, 192 channels) with cross-attention at its two inner levels. */
#include "pretrain/pretrain_internal.h"

#include <string.h>

lk_clip_model_config lk__pt_clip_config(int vocab_size) {
    lk_clip_model_config c;
    memset(&c, 0, sizeof c);
    c.text.hidden_size = 256;
    c.text.intermediate_size = 1024;
    c.text.num_hidden_layers = 4;
    c.text.num_attention_heads = 4;
    c.text.max_position_embeddings = 77; /* the pipeline's context length */
    c.text.vocab_size = vocab_size;
    c.text.hidden_act = LK_CLIP_GELU;
    c.text.layer_norm_eps = 1e-5f;
    c.image_size = 32; /* the 64x64 images, 2x2-averaged */
    c.n_stages = 4;
    const int ch[4] = {32, 64, 128, 256};
    memcpy(c.channels, ch, sizeof ch);
    c.norm_groups = 8;
    c.embed_dim = 256;
    return c;
}

lk_vae_config lk__pt_vae_config(void) {
    lk_vae_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = c.out_channels = 3;
    c.latent_channels = 4;
    c.n_blocks = 3;
    c.block_out_channels[0] = 32;
    c.block_out_channels[1] = 64;
    c.block_out_channels[2] = 64;
    c.layers_per_block = 1;
    c.norm_num_groups = 16;
    c.scaling_factor = 1.0f; /* set from the latents' standard deviation at export */
    c.sample_size = 64;
    return c;
}

lk_unet_config lk__pt_unet_config(int cross_attention_dim) {
    lk_unet_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = c.out_channels = 4;
    c.n_blocks = 3;
    const int ch[3] = {64, 128, 192};
    for (int i = 0; i < 3; i++) {
        c.block_out_channels[i] = ch[i];
        /* cross-attention at 8x8 and 4x4; the 16x16 level is convolutional (as SD's deepest
         * level is, mirrored: here the widest attention would cost the most) */
        c.down_attn[i] = i > 0;
        c.up_attn[2 - i] = i > 0;
        c.heads[i] = ch[i] / 32; /* head dim 32 */
        c.transformer_layers[i] = 1;
    }
    c.layers_per_block = 1;
    c.cross_attention_dim = cross_attention_dim;
    c.use_linear_projection = false;
    c.norm_num_groups = 32;
    c.norm_eps = 1e-5f;
    c.flip_sin_to_cos = true;
    c.freq_shift = 0.0f;
    c.time_embed_dim = 4 * ch[0];
    c.sample_size = 16;
    return c;
}
