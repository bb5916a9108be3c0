/* likeness/train.h: personalization by optimization (Textual Inversion, Gal et al. 2022; LoRA,
 * Hu et al. 2021; DreamBooth and Custom Diffusion plug in the same way): one training core
 * (dataset of cached VAE latents, caption templates, DDPM noising, denoising loss, AdamW with a
 * warm-up schedule, gradient accumulation and clipping, exact checkpoints and resume) driving a
 * method object that says which parameters train, what the loss of a batch is and what files
 * come out. Follows the diffusers 0.25 training scripts (textual_inversion.py,
 * train_dreambooth_lora.py) step for step. */
#ifndef LIKENESS_TRAIN_H
#define LIKENESS_TRAIN_H

#include <signal.h>

#include "likeness/clip_text.h"
#include "likeness/optim.h"
#include "likeness/sd_model.h"
#include "likeness/unet.h"
#include "likeness/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_trainer lk_trainer;

/* ---- captions ---- */
typedef enum lk_caption_mode {
    LK_CAPTION_OBJECT = 0,   /* Textual Inversion's object templates ("a photo of a {}", ...) */
    LK_CAPTION_STYLE = 1,    /* Textual Inversion's style templates ("a painting in the style of {}") */
    LK_CAPTION_INSTANCE = 2, /* one prompt: DreamBooth's "a [V] [class]" (or cfg.prompt) */
} lk_caption_mode;

/* Number of templates of a mode (27 object, 19 style, 1 instance) and template i (static; "{}"
 * stands for the token). NULL when out of range. */
int lk_train_template_count(lk_caption_mode mode);
const char *lk_train_template(lk_caption_mode mode, int i);

/* ---- a micro-batch ---- */
#define LK_TRAIN_MAX_CAPTION 512
typedef struct lk_train_batch {
    int B;                     /* samples */
    int c, h, w;               /* latent shape of one sample */
    float *x0;                 /* (B, c, h, w) scaled latents (VAE sample * scaling_factor) */
    float *noise;              /* (B, c, h, w) the noise added (noise offset included) */
    int64_t *timesteps;        /* (B) in [0, num_train_timesteps) */
    int64_t *ids;              /* (B, n_ctx) token ids of the captions, or NULL when ehs is set */
    int n_ctx;                 /* ids per caption (77) */
    float *ehs;                /* (B, ehs_len, ehs_dim) fixed conditioning instead of ids, or NULL */
    int ehs_len, ehs_dim;
    float *loss_weight;        /* (B) per-sample loss multipliers (prior preservation), or NULL */
    int *item;                 /* (B) dataset image of each sample (-1: not from the dataset) */
    char (*caption)[LK_TRAIN_MAX_CAPTION]; /* (B) the caption texts, or NULL */
} lk_train_batch;

/* Allocate the arrays of a batch for B samples of latent (c, h, w) with n_ctx ids each (0: no
 * ids / captions) and an ehs of (ehs_len, ehs_dim) (0: none); loss_weight and item are
 * allocated (weights 1, items -1). *b is overwritten. LK_ERR_INVALID / LK_ERR_NOMEM (then *b is
 * zeroed and nothing leaks). */
lk_status lk_train_batch_alloc(lk_train_batch *b, int B, int c, int h, int w, int n_ctx,
                               int ehs_len, int ehs_dim);
void lk_train_batch_free(lk_train_batch *b); /* frees the arrays, zeroes *b; accepts NULL */

/* ---- the method interface ----
 * A method is an object with these entries (NULL entries take the core's default). The trainer
 * calls, in order: prepare (the networks and tokenizer exist, nothing trains yet: add tokens,
 * install layer hooks, create adapter weights; draws from lk_trainer_rng are deterministic),
 * collect (add every trainable F32 leaf to ps; names must be unique and stable: checkpoints
 * store parameters by name), then for every micro-batch loss, after every optimizer update
 * after_update, and save once training is done. free releases the object. */
typedef struct lk_train_method lk_train_method;
struct lk_train_method {
    const char *name;         /* "textual_inversion", "lora", ...: metadata and checkpoints */
    bool text_encoder_grad;   /* the default loss runs the text encoder with gradient */
    void *self;               /* the method's state */
    lk_status (*prepare)(lk_train_method *m, lk_trainer *tr);
    lk_status (*collect)(lk_train_method *m, lk_trainer *tr, lk_paramset *ps);
    /* The scalar loss of a micro-batch in ctx (NULL on failure, sticky in ctx). NULL entry:
     * lk_train_default_loss. */
    lk_tensor *(*loss)(lk_train_method *m, lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b);
    lk_status (*after_update)(lk_train_method *m, lk_trainer *tr);
    /* Write the outputs for the path the user gave (see each method for the files). */
    lk_status (*save)(lk_train_method *m, lk_trainer *tr, const char *path);
    void (*free)(lk_train_method *m);
    /* Optional: the learning-rate multiplier of a collected parameter (1 when NULL). */
    float (*lr_scale)(lk_train_method *m, lk_trainer *tr, const lk_tensor *param);
};

/* ---- configuration ---- */
typedef struct lk_train_stats {
    int64_t step;      /* optimizer updates done (1-based after the first) */
    int64_t steps;     /* total planned */
    float loss;        /* mean of the micro-batch losses of this update */
    float lr;          /* learning rate used for it */
    float grad_norm;   /* global gradient norm before clipping (-1 when clipping is off) */
    double seconds;    /* wall time of this update */
} lk_train_stats;

/* Called after every update; a non-OK return stops the run (a checkpoint is written first when
 * a checkpoint path is set) with that status. */
typedef lk_status (*lk_train_progress_fn)(void *ud, const lk_train_stats *st);
/* Called every validate_every updates (e.g. to sample images with lk_trainer_sample). */
typedef lk_status (*lk_train_validate_fn)(void *ud, lk_trainer *tr, int64_t step);

typedef struct lk_train_config {
    /* model (strings are copied) */
    const char *model;          /* diffusers folder or single-file checkpoint */
    const char *tokenizer_dir;  /* for single files (see lk_sd_load_opts) */
    lk_dtype store;             /* frozen weights: LK_F32, or LK_F16 / LK_BF16 (half memory) */
    int prediction;             /* -1: as the model says; LK_PREDICT_EPSILON / LK_PREDICT_V */
    /* data */
    const char *images;         /* folder of PNG / JPEG / WebP (+ NAME.txt captions); NULL: no
                                 * dataset (batches are given by the caller) */
    int resolution;             /* square training size in pixels (multiple of 8 * the UNet's) */
    int min_images;             /* fewer images is an error */
    bool upscale_small;         /* allow images smaller than the resolution (upscaled) */
    bool flip;                  /* random horizontal flips (both orientations are cached) */
    lk_caption_mode captions;
    const char *token;          /* the placeholder ("<sks>"); required with a dataset */
    const char *class_word;     /* "dog" or NULL */
    const char *prompt;         /* instance prompt ({token}, {class}); NULL: "a {token} {class}" */
    /* optimization */
    int64_t steps;              /* optimizer updates */
    int batch;                  /* images per micro-batch */
    int grad_accum;             /* micro-batches per update (loss divided by it) */
    float lr;
    lk_lr_kind lr_schedule;
    int64_t lr_warmup;          /* warm-up updates */
    lk_adamw_config adam;       /* beta1, beta2, eps, weight_decay (lr is cfg.lr) */
    float max_grad_norm;        /* global-norm clipping; <= 0: off */
    float noise_offset;         /* noise += offset * randn(B, C, 1, 1); 0: off */
    float min_snr_gamma;        /* Min-SNR-gamma loss weighting (Hang et al. 2023); <= 0: off */
    bool gradient_checkpointing;
    uint64_t seed;
    /* run */
    int64_t checkpoint_every;   /* updates between checkpoints; 0: only on interruption */
    const char *checkpoint;     /* checkpoint file; NULL: no checkpoints */
    bool resume;                /* continue from the checkpoint file (it must exist) */
    const char *log;            /* JSON-lines log of every update; NULL: none */
    int64_t validate_every;     /* 0: never */
    lk_train_validate_fn validate;
    void *validate_ud;
    lk_train_progress_fn progress;
    void *progress_ud;
    const volatile sig_atomic_t *cancel; /* non-zero: checkpoint and stop (Ctrl-C) */
} lk_train_config;

/* Contract: the common defaults (batch 1, grad_accum 1, lr 1e-4 constant without warm-up,
 * AdamW 0.9/0.999/1e-8/1e-2, clipping 1.0, resolution 512, min_images 3, 500 steps, seed 0,
 * store F32, object captions, no checkpoints). Method defaults (TI: 3000 steps at 5e-3, grad
 * accumulation 4, no clipping) are applied by the CLI. Cannot fail. */
void lk_train_config_default(lk_train_config *cfg);

/* ---- the trainer ---- */

/* Build a trainer: check the image folder (count, every file decodable, none smaller than the
 * resolution unless upscale_small; captions), load the model, build the networks, let the
 * method prepare and collect its parameters, encode every image once with the VAE (mean and
 * log-variance cached; flipped copies too with cfg.flip), set up AdamW and the schedule, seed
 * the generator, and with cfg.resume restore the checkpoint. Takes ownership of method (freed
 * on failure too). Errors name the file at fault: LK_ERR_INVALID for too few images, an image
 * smaller than the resolution, a token already in the vocabulary, a bad option; LK_ERR_FORMAT
 * for an unreadable or truncated image; the loader's errors. *out is NULL on failure. */
lk_status lk_trainer_new(lk_trainer **out, const lk_train_config *cfg, lk_train_method *method);
void lk_trainer_free(lk_trainer *tr); /* accepts NULL; frees the method too */

/* Train until cfg.steps updates are done (from the current step), logging each update,
 * checkpointing every checkpoint_every updates, validating every validate_every. When cancel
 * becomes non-zero (checked before every update) or progress returns non-OK, a checkpoint is
 * written (if a path is set) and the run stops with LK_ERR_INTERRUPTED / that status. */
lk_status lk_trainer_run(lk_trainer *tr);

/* The step-level API (lk_trainer_run is built from it). */
/* Draw the next micro-batch from the dataset: images in a fresh random order every epoch,
 * captions (template or per-image), flips, posterior samples of the cached latents, noise,
 * noise offset and timesteps, all from the trainer's generator in a fixed order. The batch is
 * owned by the trainer and valid until the next call. LK_ERR_STATE without a dataset. */
lk_status lk_trainer_next_batch(lk_trainer *tr, const lk_train_batch **b);
/* Forward and backward of one micro-batch: gradients of the trainable parameters accumulate
 * (the loss is divided by grad_accum first). *loss (optional) receives the undivided loss.
 * LK_ERR_INVALID for a batch of the wrong shape; LK_ERR_STATE for a non-finite loss. */
lk_status lk_trainer_accumulate(lk_trainer *tr, const lk_train_batch *b, float *loss);
/* One optimizer update from the accumulated gradients: clip (if on), AdamW at the scheduled
 * learning rate, method after_update, zero the gradients, step + 1. *st (optional) receives
 * step, lr and grad_norm (loss left as is). */
lk_status lk_trainer_update(lk_trainer *tr, lk_train_stats *st);
/* grad_accum x (next_batch + accumulate), then update. *st (optional) gets the stats. */
lk_status lk_trainer_step(lk_trainer *tr, lk_train_stats *st);

/* The default loss of a micro-batch: the text encoder on b->ids (with gradient when the method
 * says so; b->ehs instead when set), x_t = sqrt(ac[t]) x0 + sqrt(1 - ac[t]) noise, the UNet's
 * prediction against the noise (epsilon models) or the velocity (v models), mean squared error;
 * with min-SNR or loss weights the per-sample means are weighted and averaged. */
lk_tensor *lk_train_default_loss(lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b);
/* Its two halves, for methods with their own loss: the conditioning of a batch ((B, L, D)), and
 * the weighted denoising loss given it. */
lk_tensor *lk_train_encode_text(lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b, bool grad);
lk_tensor *lk_train_denoise_loss(lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b,
                                 lk_tensor *ehs);

/* Write / read a checkpoint: every trainable parameter by name (the trainable rows of a
 * row-subset table), the AdamW state, the generator state, the step, the epoch order and
 * position, and the settings a resume must keep (method, seed, batch, grad_accum, resolution,
 * images). Written atomically (temporary file + rename). Loading checks everything before
 * changing anything: LK_ERR_INVALID when the checkpoint belongs to another run (the message
 * names the setting), LK_ERR_FORMAT for a damaged file. */
lk_status lk_trainer_save_checkpoint(lk_trainer *tr, const char *path);
lk_status lk_trainer_load_checkpoint(lk_trainer *tr, const char *path);

/* Write the method's outputs for path (method->save). */
lk_status lk_trainer_save(lk_trainer *tr, const char *path);
/* Add the metadata every output records: likeness.method, likeness.base_model (file name),
 * likeness.base_model_hash (sha256 of the model file; computed once), likeness.token,
 * likeness.class, likeness.steps, likeness.resolution, likeness.seed, likeness.num_images,
 * likeness.prediction. Never the images. */
lk_status lk_trainer_add_metadata(lk_trainer *tr, lk_st_writer *w);

/* Generate one image with the model as it is being trained (LoRA hooks and new tokens active):
 * the prompt and negative (NULL = "") through the text encoder, DPM-Solver++ 2M with steps
 * steps, classifier-free guidance cfg_scale, initial noise torch.randn with seed, VAE decode.
 * image receives (3, height, width) floats in [-1, 1]. For validation; no gradient. */
lk_status lk_trainer_sample(lk_trainer *tr, const char *prompt, const char *negative, uint64_t seed,
                            int steps, float cfg_scale, int width, int height, float *image);

/* ---- accessors (borrowed; valid while tr lives) ---- */
const lk_train_config *lk_trainer_config(const lk_trainer *tr);
lk_sd_model *lk_trainer_model(lk_trainer *tr);
lk_tokenizer *lk_trainer_tokenizer(lk_trainer *tr);
lk_clip_text *lk_trainer_text_encoder(lk_trainer *tr);
lk_unet *lk_trainer_unet(lk_trainer *tr);
lk_vae *lk_trainer_vae(lk_trainer *tr);
lk_rng *lk_trainer_rng(lk_trainer *tr);
lk_paramset *lk_trainer_params(lk_trainer *tr);
/* The trainable parameter with this name, or NULL. */
lk_tensor *lk_trainer_param(lk_trainer *tr, const char *name);
int64_t lk_trainer_step_count(const lk_trainer *tr);
int lk_trainer_num_images(const lk_trainer *tr);
/* alphas_cumprod of the training schedule (n entries = num_train_timesteps). */
const float *lk_trainer_alphas_cumprod(const lk_trainer *tr, int *n);
lk_prediction_type lk_trainer_prediction(const lk_trainer *tr);
/* Latent shape (c, h, w) of one training image. */
void lk_trainer_latent_shape(const lk_trainer *tr, int *c, int *h, int *w);

/* ---- Textual Inversion (Gal et al. 2022), src/personalize/textual_inversion.c ---- */
typedef struct lk_ti_options {
    int n_vectors;          /* vectors per token (1..75), default 1 */
    const char *init_word;  /* a single-token word initializing every vector; NULL: the class
                             * word, else "object" ("style" with style captions), whose pieces'
                             * mean is used where the vocabulary splits it */
} lk_ti_options;
/* Contract: defaults above. Cannot fail. */
void lk_ti_options_default(lk_ti_options *o);
/* A Textual Inversion method: the token (cfg.token) is added to the tokenizer with n_vectors new
 * ids and the text encoder's table gets as many rows, copies of the init word's row; only those
 * rows train (lk_set_trainable_rows), everything else is frozen. Refuses (at prepare) a token
 * already in the vocabulary and an init word that is not exactly one token. save(path) writes
 * the A1111 embedding to path ({"emb_params": (n, dim)}; A1111 names it by the file name) and the
 * diffusers one to lk_train_diffusers_path(path) ({token: (n, dim)}, learned_embeds layout).
 * *out owns the method (give it to lk_trainer_new). */
lk_status lk_ti_method_new(lk_train_method **out, const lk_ti_options *o);
/* The trained vectors ((n, dim) f32, borrowed from the table; valid until the trainer is freed)
 * and their first token id. NULL before prepare. */
const float *lk_ti_vectors(const lk_train_method *m, int *n, int *dim, int64_t *first_id);

/* ---- LoRA (Hu et al. 2021), src/personalize/lora.c ---- */
enum {
    LK_LORA_ATTN = 1,   /* UNet attention to_q, to_k, to_v, to_out.0 */
    LK_LORA_FF = 2,     /* UNet feed-forward ff.net.0.proj, ff.net.2 (text encoder mlp fc1/fc2) */
    LK_LORA_PROJ = 4,   /* UNet transformer proj_in, proj_out (linear or 1x1 conv) */
    LK_LORA_TEXT = 8,   /* text encoder q/k/v/out_proj (and fc1/fc2 with LK_LORA_FF) */
};
typedef struct lk_lora_options {
    int rank;           /* default 4 */
    float alpha;        /* default = rank (scale alpha / rank = 1) */
    int targets;        /* LK_LORA_* bits, default LK_LORA_ATTN */
} lk_lora_options;
/* Contract: defaults above. Cannot fail. */
void lk_lora_options_default(lk_lora_options *o);
/* A LoRA method: every targeted layer W (linear, or 1x1 convolution) gets y += (alpha / rank) *
 * up(down(x)) through the network's layer hook; down (rank, in) is kaiming-uniform(a = sqrt(5))
 * (bound 1/sqrt(in)) from the trainer's generator, up (out, rank) zero, as kohya and PEFT
 * initialize them; base weights stay frozen (and may be stored half). Parameters are named
 * "<module>.lora_down.weight" / "<module>.lora_up.weight" with the module path of the layer
 * ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
 * "text_model.encoder.layers.0.self_attn.q_proj"). save(path) writes the kohya/A1111 file to
 * path (lora_unet_* / lora_te_* .lora_down.weight, .lora_up.weight, .alpha, ss_* metadata) and
 * the diffusers/PEFT layout to lk_train_diffusers_path(path) ("unet.<module>.lora_A.weight",
 * "unet.<module>.lora_B.weight", "text_encoder.<module>...", with alpha / rank folded into
 * lora_B so that loaders assuming alpha = rank get the same delta). */
lk_status lk_lora_method_new(lk_train_method **out, const lk_lora_options *o);
/* Number of adapted layers (0 before prepare). */
int lk_lora_method_count(const lk_train_method *m);

/* The sibling file for the diffusers layout: "x.safetensors" -> "x.diffusers.safetensors"
 * (other names get ".diffusers.safetensors" appended). malloc'd; NULL on allocation failure. */
char *lk_train_diffusers_path(const char *path);

#ifdef __cplusplus
}
#endif
#endif
