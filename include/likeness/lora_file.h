/* likeness/lora_file.h: LoRA files in the kohya-ss / AUTOMATIC1111 format (Hu et al. 2021,
 * "LoRA"): lora_unet_<path>.lora_down.weight / .lora_up.weight / .alpha, lora_te_<path>... for the
 * text encoder, on linear and convolution (1x1, 3x3) layers; merged into and out of a model's
 * weights: W += multiplier * (alpha / rank) * up @ down. */
#ifndef LIKENESS_LORA_FILE_H
#define LIKENESS_LORA_FILE_H

#include "likeness/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_lora lk_lora;

/* One module of a LoRA file, resolved against the model. */
typedef struct lk_lora_module_info {
    const char *name;   /* the file's module name ("lora_unet_down_blocks_0_..._to_q") */
    lk_tensor *target;  /* the model weight it changes (borrowed from the lk_weights) */
    bool text_encoder;  /* target is in the text encoder (else the UNet) */
    int rank;
    float alpha;        /* the file's alpha (rank when the file has none) */
} lk_lora_module_info;

/* Open a LoRA file and resolve every module against the model's weights (unet and text_encoder
 * borrowed, either may be NULL; they must outlive the lk_lora). Underscored module paths are
 * matched against the underscored form of every "<key>.weight" of the model, so
 * "lora_unet_down_blocks_0_attentions_0_proj_in" finds "down_blocks.0.attentions.0.proj_in.weight".
 * Refused with a message naming the key:
 *   - LK_ERR_UNSUPPORTED: LyCORIS modules (LoHa hada_*, LoKr lokr_*, lora_mid, OFT, DoRA, diff),
 *     SDXL LoRAs (lora_te1_/lora_te2_), diffusers/PEFT-format keys, text-encoder modules with
 *     no text encoder given;
 *   - LK_ERR_INVALID: a module with no weight of that name in the model, or whose delta shape
 *     does not fit it (a LoRA for another architecture: the message gives both shapes);
 *   - LK_ERR_FORMAT: lora_down without lora_up (or the reverse), ranks that differ, a non-scalar
 *     alpha, non-float tensors, anything else.
 * The file stays mapped until lk_lora_free. *out is NULL on failure. */
lk_status lk_lora_open(lk_lora **out, const char *path, lk_weights *unet, lk_weights *text_encoder);
/* Close; accepts NULL. Does NOT unmerge: the model keeps whatever is merged. */
void lk_lora_free(lk_lora *l);

int lk_lora_count(const lk_lora *l);
/* Module i (0 <= i < count); LK_ERR_INVALID out of range. */
lk_status lk_lora_module(const lk_lora *l, int i, lk_lora_module_info *info);

/* Add multiplier * (alpha / rank) * up @ down to every target (accumulated in f32, then stored
 * in the target's dtype: F32, F16 or BF16). Calls add up; several files merge independently,
 * each with its own multiplier. Scratch is allocated before any weight changes, so a failure
 * (LK_ERR_NOMEM) leaves the weights untouched. */
lk_status lk_lora_merge(lk_lora *l, float multiplier);
/* Subtract everything this file merged (order-independent with other files). The delta is
 * recomputed bit-identically, so F32 weights come back to within one rounding of the original
 * (|error| <= ulp); F16/BF16 weights to within one half-precision rounding. No-op when nothing is
 * merged. */
lk_status lk_lora_unmerge(lk_lora *l);
/* Sum of the multipliers merged so far (0 after unmerge). */
float lk_lora_merged(const lk_lora *l);
/* multiplier * (alpha / rank) * up @ down of module i, in f32, target-shaped, into dst (numel of
 * the target). For trainers and tests. */
lk_status lk_lora_delta(const lk_lora *l, int i, float multiplier, float *dst);

#ifdef __cplusplus
}
#endif
#endif
