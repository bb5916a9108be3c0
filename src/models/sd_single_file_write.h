/* sd_single_file_write.h: diffusers / transformers key names -> CompVis / A1111 single-file
 * key names (the inverse of sd_single_file.c), for writing single-file checkpoints. Not a
 * public interface. */
#ifndef LK_MODELS_SD_SINGLE_FILE_WRITE_H
#define LK_MODELS_SD_SINGLE_FILE_WRITE_H

#include "likeness/sd_model.h"

/* Layout facts the inverse renaming needs, read once from the model's weights. */
typedef struct lk__sd_single_layout {
    int unet_layers_per_block; /* resnets per UNet down block */
    int vae_up_blocks;         /* VAE decoder up blocks (ldm numbers them from the bottom) */
} lk__sd_single_layout;

/* Fill *lay from an SD-1.x model's UNet and VAE weights. LK_ERR_FORMAT when they are not of the
 * SD layout (no down_blocks.0.resnets.0, no decoder.up_blocks.0). */
lk_status lk__sd_single_layout_of(const lk_sd_model *m, lk__sd_single_layout *lay);

/* The CompVis name of tensor `name` of part `part` (an SD-1.x model: OpenAI CLIP text encoder)
 * into out (cap bytes). *to_conv is set when the tensor is a VAE mid-block attention projection
 * weight that diffusers stores as a linear (C, C) and CompVis as a 1x1 convolution (C, C, 1, 1).
 * LK_ERR_FORMAT naming the part and key when the name has no CompVis counterpart;
 * LK_ERR_UNSUPPORTED when the result would not fit cap. */
lk_status lk__sd_single_name(const lk_sd_model *m, const lk__sd_single_layout *lay, lk_sd_part_id part,
                             const char *name, char *out, size_t cap, bool *to_conv);

#endif
