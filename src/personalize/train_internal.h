/* train_internal.h (internal): the trainer's state, shared by the training core
 * (train_core.c), its dataset (train_data.c) and its validation sampler (train_sample.c). */
#ifndef LK_PERSONALIZE_TRAIN_INTERNAL_H
#define LK_PERSONALIZE_TRAIN_INTERNAL_H

#include "likeness/image.h"
#include "likeness/ops.h"
#include "likeness/sampler.h"
#include "likeness/tokenizer.h"
#include "likeness/train.h"

#include <stdio.h>

/* The images of a run: file list, captions, and the VAE posterior of each (and of its mirror
 * image with flips), cached once; the epoch order lives here too (it is checkpointed). */
typedef struct lk__train_data {
    int n;                /* images */
    char **paths;         /* (n) owned */
    char **captions;      /* (n) owned per-image caption (NAME.txt) or NULL */
    float **pixels;       /* (n) prepared (3, res, res) [-1, 1] images until encoded, then NULL */
    float **pixels_flip;  /* (n) the same mirrored (flip only) */
    int n_var;            /* latents per image: 1, or 2 with flips (0: plain, 1: mirrored) */
    size_t per;           /* floats per latent (c * h * w) */
    float *mean, *logvar; /* (n * n_var, per) unscaled posterior */
    int64_t *order;       /* (n) the current epoch's permutation */
    int64_t pos;          /* next index into order; n: a new epoch starts at the next draw */
    int64_t epoch;        /* epochs started */
    uint64_t fingerprint; /* FNV-1a of the file names, sizes and captions */
} lk__train_data;

struct lk_trainer {
    lk_train_config cfg;       /* strings point at owned copies below */
    char *own_str[8];
    lk_train_method *method;
    lk_sd_model *model;
    lk_clip_text *te;
    lk_unet *unet;
    lk_vae *vae;
    lk_schedule_config sched;
    float *ac;                 /* alphas_cumprod (n_train) */
    int n_train;
    lk_prediction_type pred;
    int vae_factor, unet_factor;
    int lc, lh, lw;            /* latent shape of a training image */
    int n_ctx;                 /* token ids per caption */
    float scaling;             /* VAE scaling factor */
    lk__train_data data;
    lk_paramset *ps;
    lk_adamw *opt;
    lk_lr_schedule lrs;
    lk_rng rng;
    int64_t step;              /* updates done */
    lk_ctx *ctx;
    lk_train_batch batch;      /* the micro-batch next_batch fills */
    FILE *log;
};

/* ---- train_data.c ---- */
/* List cfg->images (PNG / JPEG / WebP by extension, sorted by name), decode and check every
 * image (count >= min_images, size >= resolution unless upscale_small), read NAME.txt captions,
 * and keep the prepared (center-cropped) pixels for encoding. Messages name the file. */
lk_status lk__train_data_scan(lk__train_data *d, const lk_train_config *cfg);
/* Encode the kept (3, res, res) pixels with the VAE (no gradient) into latents (c, h, w),
 * caching mean and log-variance; frees the pixels. */
lk_status lk__train_data_encode(lk__train_data *d, lk_ctx *ctx, const lk_vae *vae, int res,
                                int c, int h, int w);
void lk__train_data_free(lk__train_data *d);
/* Next image index of the epoch order, starting a new shuffled epoch when one ends (Fisher-Yates
 * with randint from rng). */
int64_t lk__train_data_next(lk__train_data *d, lk_rng *rng);
/* The caption for image i: its NAME.txt, else a template of the mode (chosen with randint from
 * rng when there are several), with the placeholders substituted; written to out (cap bytes). */
lk_status lk__train_caption(const lk_trainer *tr, int i, lk_rng *rng, char *out, size_t cap);
/* Substitute {token} / {} / [V] and {class} / [class] in text; when the token does not occur
 * afterwards, prefix it ("<tok>, text"). Collapses the spaces an empty class leaves. */
lk_status lk__train_fill_caption(const char *text, const char *token, const char *class_word,
                                 char *out, size_t cap);

/* ---- new tokens (new_token.c), shared by Textual Inversion and Custom Diffusion ---- */

/* LK_ERR_INVALID, the message starting with who ("textual inversion"), when token is empty or
 * over 200 bytes, contains white space, or is already a word of the vocabulary as the tokenizer
 * sees it (as written, lower-cased, or as a word end "tok</w>"). */
lk_status lk__check_new_token(const lk_tokenizer *tok, const char *who, const char *token);
/* The embedding (table->shape[1] floats, into row) a new token starts from: the table row of
 * word when it is one token. A word of several tokens is refused (LK_ERR_INVALID, "single
 * token") unless is_default (the method's own default such as "object", which a learned
 * vocabulary may split): then the mean of its tokens' rows. */
lk_status lk__new_token_row(const lk_tokenizer *tok, const lk_tensor *table, const char *who,
                            const char *word, bool is_default, float *row);

#endif
