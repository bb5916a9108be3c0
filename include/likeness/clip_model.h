/* likeness/clip_model.h: a CLIP-style pair of towers (Radford et al. 2021) for likeness's own
 * models: the CLIP text transformer of clip_text.h with a text projection, and a small
 * convolutional image tower (ResnetBlock2D stages, global average pooling) with a visual
 * projection, trained contrastively. The text tower of one such model is the emoji generator's
 * frozen text encoder; another one is EmojiBench's evaluator (image-image and image-text
 * similarity, concept retrieval).
 *
 * Weight names: the text tower under "text_model." exactly as Hugging Face CLIPTextModel, then
 * "text_projection.weight" (E, D), "visual_projection.weight" (E, C), "logit_scale" (1), and the
 * image tower "vision_model.conv_in", "vision_model.stages.<i>.resnet.{norm1,conv1,norm2,conv2,
 * conv_shortcut}", "vision_model.stages.<i>.downsample" (stride-2 3x3, all stages but the last),
 * "vision_model.norm_out". */
#ifndef LIKENESS_CLIP_MODEL_H
#define LIKENESS_CLIP_MODEL_H

#include "likeness/clip_text.h"
#include "likeness/model_config.h"
#include "likeness/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_CLIP_VISION_MAX_STAGES 6

typedef struct lk_clip_model_config {
    lk_clip_text_config text;
    int image_size;                          /* square input side, a multiple of 2^(stages-1) */
    int n_stages;                            /* 1..LK_CLIP_VISION_MAX_STAGES */
    int channels[LK_CLIP_VISION_MAX_STAGES]; /* stage widths, multiples of norm_groups */
    int norm_groups;
    int embed_dim;                           /* E: the shared embedding size */
} lk_clip_model_config;

/* Parse / write the configuration JSON ({"text_config": {...CLIPTextConfig...}, "vision_config":
 * {"image_size", "channels": [...], "norm_groups"}, "projection_dim"}). Parse is strict: a
 * missing or out-of-range key fails with LK_ERR_FORMAT naming it (label names the source). */
lk_status lk_clip_model_config_parse(lk_clip_model_config *cfg, const char *json, size_t len,
                                     const char *label);
lk_status lk_clip_model_config_load(lk_clip_model_config *cfg, const char *path);
/* Write cfg as JSON to path atomically (temporary file + rename). */
lk_status lk_clip_model_config_save(const lk_clip_model_config *cfg, const char *path);

typedef struct lk_clip_model lk_clip_model;

/* Build the model over the tensors of w (names above, under prefix); validation and ownership
 * as lk_unet_new: w is borrowed and must outlive the model. */
lk_status lk_clip_model_new(lk_clip_model **out, const lk_clip_model_config *cfg,
                            const lk_weights *w, const char *prefix);
void lk_clip_model_free(lk_clip_model *m); /* accepts NULL */
const lk_clip_model_config *lk_clip_model_config_of(const lk_clip_model *m);
/* The text tower (borrowed from m). */
lk_clip_text *lk_clip_model_text(const lk_clip_model *m);
/* Fresh weights for cfg (PyTorch default initialization; logit_scale = log(1/0.07) as CLIP). */
lk_status lk_clip_model_init_weights(lk_weights *w, const lk_clip_model_config *cfg,
                                     const char *prefix, lk_dtype store, uint64_t seed);

/* Text embeddings (B, E), not normalized: the final-layer-normed hidden state at each row's
 * end-of-text position eos_pos[b] (0 <= eos_pos[b] < N), projected. ids (B, N) as
 * lk_clip_text_forward. Since the transformer is causal, ids after the EOS do not change the
 * result: callers may pass N = max(eos_pos) + 1. Differentiable. NULL on failure (sticky). */
lk_tensor *lk_clip_model_encode_text(lk_ctx *ctx, const lk_clip_model *m, lk_tensor *ids,
                                     const int *eos_pos);
/* Image embeddings (B, E), not normalized, of images (B, 3, S, S) in [-1, 1], S = image_size.
 * Differentiable. NULL on failure (sticky). */
lk_tensor *lk_clip_model_encode_image(lk_ctx *ctx, const lk_clip_model *m, lk_tensor *images);
/* exp(logit_scale) clamped to at most 100, as CLIP. */
float lk_clip_model_logit_scale(const lk_clip_model *m);
/* The logit_scale parameter (1 element), e.g. for a trainer's parameter set. */
lk_tensor *lk_clip_model_logit_scale_param(const lk_clip_model *m);

/* Contrastive loss of CLIP for B matched pairs: img and txt (B, E) embeddings (any values),
 * L = (CE(s * norm(img) norm(txt)^T, diag) + CE over columns) / 2 with s = exp(logit_scale) <= 100.
 * Returns L; when grad_img / grad_txt (B*E floats each) are non-NULL they receive dL/dimg and
 * dL/dtxt, and *grad_logit_scale (optional) dL/dlogit_scale (0 when clamped). *acc (optional)
 * receives the fraction of rows and columns whose best match is the diagonal. Pure function. */
float lk_clip_contrastive_loss(const float *img, const float *txt, int B, int E,
                               float logit_scale, float *grad_img, float *grad_txt,
                               float *grad_logit_scale, float *acc);

#ifdef __cplusplus
}
#endif
#endif
