/* likeness/pretrain.h: pretraining likeness's own emoji model from scratch on the EmojiBench
 * data set (emoji_set.h), in stages, each a resumable run in chunks:
 *   - tokenizer: a BPE vocabulary learned from the training captions (lk_bpe_learn);
 *   - text: a CLIP-style text + image model (clip_model.h) trained contrastively; its text tower
 *     is the generator's frozen text encoder (generator split), or, with evaluator set, the
 *     EmojiBench evaluator (all concepts, all styles);
 *   - vae: an AutoencoderKL (64x64 RGB -> 4x16x16 latents), L1 + MSE reconstruction + KL;
 *   - unet: a UNet2DConditionModel denoiser on the frozen autoencoder's latents, conditioned on
 *     the frozen text encoder, epsilon prediction, classifier-free-guidance caption dropout,
 *     min-SNR weighting, EMA weights.
 * The generator split never contains a held-out concept nor a style outside the manifest's
 * generator_training_styles. Each run keeps RUN/checkpoint.safetensors (weights, optimizer, EMA,
 * RNG, step: resuming continues bit-identically) and RUN/log.jsonl, and exports its model under
 * RUN/export/ in diffusers layout (text_encoder/ + tokenizer/ + clip/, vae/, unet/). */
#ifndef LIKENESS_PRETRAIN_H
#define LIKENESS_PRETRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "likeness/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lk_pretrain_stage {
    LK_PRETRAIN_TEXT = 0,
    LK_PRETRAIN_VAE = 1,
    LK_PRETRAIN_UNET = 2,
} lk_pretrain_stage;

typedef struct lk_pretrain_stats {
    int64_t step, steps;
    float loss;
    float metric;   /* text: in-batch retrieval accuracy; vae: L1 in [0,255] units; unet: plain MSE */
    float lr, grad_norm;
    double seconds; /* of this step */
} lk_pretrain_stats;

typedef lk_status (*lk_pretrain_progress_fn)(void *ud, const lk_pretrain_stats *st);

typedef struct lk_pretrain_config {
    lk_pretrain_stage stage;
    const char *data_dir;      /* the EmojiBench data set (manifest.json) */
    const char *run_dir;       /* created if absent */
    const char *tokenizer_dir; /* text, unet: vocab.json + merges.txt */
    const char *text_dir;      /* unet: a text run's export folder (text_encoder/) */
    const char *vae_dir;       /* unet: a vae run's export folder (vae/) */
    bool evaluator;            /* text: all concepts and styles (the EmojiBench evaluator) */
    int64_t steps;             /* total updates of the run (a resumed run may raise it) */
    int batch;
    float lr;                  /* AdamW, constant after a linear warm-up */
    int64_t warmup;
    float weight_decay;
    float max_grad_norm;       /* <= 0: no clipping */
    float ema_decay;           /* <= 0: no EMA (the export then holds the raw weights) */
    uint64_t seed;
    int64_t checkpoint_every;  /* updates between checkpoints and exports */
    bool resume;               /* continue from RUN/checkpoint.safetensors */
    const char *init_dir;      /* start from the weights of a model folder instead of random
                                * ones (fresh optimizer): a diffusers folder with unet/ or vae/
                                * (e.g. models/emoji), or a text export with clip/; for when a
                                * run's checkpoint is lost but its committed weights are not */
    int vae_crop;              /* vae: square training crop of the 64x64 images (default 32) */
    float cfg_dropout;         /* unet: probability of the empty caption (default 0.1) */
    volatile sig_atomic_t *cancel; /* set by a signal handler: checkpoint and stop */
    lk_pretrain_progress_fn progress;
    void *progress_ud;
} lk_pretrain_config;

/* The defaults of a stage (batch, learning rate, steps ...; paths NULL). */
lk_pretrain_config lk_pretrain_defaults(lk_pretrain_stage stage);

/* Run (or resume) a stage until cfg->steps, checkpointing every checkpoint_every updates and at
 * the end (and on cancel, then LK_ERR_INTERRUPTED). Exports the model at every checkpoint.
 * A resume needs the checkpoint's data, batch, seed and inputs (tokenizer, frozen text encoder
 * and VAE, VAE crop), else LK_ERR_INVALID naming both; lr, warmup and steps may change. */
lk_status lk_pretrain_run(const lk_pretrain_config *cfg);

/* Learn the BPE vocabulary from the generator split's captions (every caption variant of every
 * concept and training style) into out_dir/vocab.json + merges.txt (+ the tokenizer config
 * files of a diffusers tokenizer folder). */
lk_status lk_pretrain_tokenizer(const char *data_dir, const char *out_dir, int vocab_size);

/* Assemble the final diffusers folder out_dir (model_index.json, scheduler/, tokenizer/,
 * text_encoder/, vae/, unet/) from the exports of the runs, tensors stored as F16. */
lk_status lk_pretrain_assemble(const char *tokenizer_dir, const char *text_dir,
                               const char *vae_dir, const char *unet_dir, const char *out_dir);

/* The evaluator's folder out_dir (clip/ with F16 weights, tokenizer/) from a text run's export
 * (`likeness pretrain text --evaluator`), as lk_evaluator_load reads it. */
lk_status lk_pretrain_assemble_evaluator(const char *text_export, const char *out_dir);

#ifdef __cplusplus
}
#endif
#endif
