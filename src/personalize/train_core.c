/* train_core.c: the training core of every personalization method, following diffusers 0.25's
 * textual_inversion.py / train_dreambooth_lora.py: DDPM noising (Ho et al. 2020) of cached VAE
 * latents, epsilon or v target (Salimans & Ho 2022), MSE with optional min-SNR-gamma weighting
 * (Hang et al. 2023) and noise offset, gradient accumulation, AdamW with a warm-up schedule and
 * clipping, deterministic for a seed, atomic checkpoints with exact resume. */
#define _POSIX_C_SOURCE 200809L
#include "personalize/train_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CKPT_FORMAT "likeness-train-checkpoint-1"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Contract: see train.h. */
void lk_train_config_default(lk_train_config *c) {
    memset(c, 0, sizeof *c);
    c->store = LK_F32;
    c->prediction = -1;
    c->resolution = 512;
    c->min_images = 3;
    c->captions = LK_CAPTION_OBJECT;
    c->steps = 500;
    c->batch = 1;
    c->grad_accum = 1;
    c->lr = 1e-4f;
    c->lr_schedule = LK_LR_CONSTANT;
    c->adam = lk_adamw_defaults();
    c->max_grad_norm = 1.0f;
}

/* ---- batches ---- */

/* Contract: see train.h. */
lk_status lk_train_batch_alloc(lk_train_batch *b, int B, int c, int h, int w, int n_ctx,
                               int ehs_len, int ehs_dim) {
    if (!b) return lk_fail(LK_ERR_INVALID, "train_batch_alloc: NULL batch");
    memset(b, 0, sizeof *b);
    if (B < 1 || B > 4096 || c < 1 || h < 1 || w < 1 || n_ctx < 0 || ehs_len < 0 || ehs_dim < 0 ||
        (ehs_len > 0) != (ehs_dim > 0) || (int64_t)c * h * w > (1LL << 28))
        return lk_fail(LK_ERR_INVALID, "train_batch_alloc: bad size B=%d latent (%d,%d,%d) ctx %d "
                       "ehs (%d,%d)", B, c, h, w, n_ctx, ehs_len, ehs_dim);
    const size_t n = (size_t)B * (size_t)c * (size_t)h * (size_t)w;
    b->B = B;
    b->c = c;
    b->h = h;
    b->w = w;
    b->n_ctx = n_ctx;
    b->x0 = malloc(n * sizeof(float));
    b->noise = malloc(n * sizeof(float));
    b->timesteps = calloc((size_t)B, sizeof(int64_t));
    b->loss_weight = malloc((size_t)B * sizeof(float));
    b->item = malloc((size_t)B * sizeof(int));
    bool ok = b->x0 && b->noise && b->timesteps && b->loss_weight && b->item;
    if (n_ctx > 0) {
        b->ids = calloc((size_t)B * (size_t)n_ctx, sizeof(int64_t));
        b->caption = calloc((size_t)B, sizeof *b->caption);
        ok = ok && b->ids && b->caption;
    }
    if (ehs_len > 0) {
        b->ehs_len = ehs_len;
        b->ehs_dim = ehs_dim;
        b->ehs = calloc((size_t)B * (size_t)ehs_len * (size_t)ehs_dim, sizeof(float));
        ok = ok && b->ehs;
    }
    if (!ok) {
        lk_train_batch_free(b);
        return lk_fail(LK_ERR_NOMEM, "out of memory for a batch of %d", B);
    }
    for (int i = 0; i < B; i++) {
        b->loss_weight[i] = 1.0f;
        b->item[i] = -1;
    }
    return LK_OK;
}

/* Contract: see train.h. */
void lk_train_batch_free(lk_train_batch *b) {
    if (!b) return;
    free(b->x0);
    free(b->noise);
    free(b->timesteps);
    free(b->ids);
    free(b->ehs);
    free(b->loss_weight);
    free(b->item);
    free(b->caption);
    memset(b, 0, sizeof *b);
}

/* ---- building a trainer ---- */

static lk_status check_config(const lk_train_config *c) {
    if (c->steps < 1 || c->steps > 100000000)
        return lk_fail(LK_ERR_INVALID, "train: steps %lld must be between 1 and 1e8", (long long)c->steps);
    if (c->batch < 1 || c->batch > 256)
        return lk_fail(LK_ERR_INVALID, "train: batch %d must be between 1 and 256", c->batch);
    if (c->grad_accum < 1 || c->grad_accum > 4096)
        return lk_fail(LK_ERR_INVALID, "train: grad-accum %d must be between 1 and 4096", c->grad_accum);
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return lk_fail(LK_ERR_INVALID, "train: learning rate %g must be positive", (double)c->lr);
    if (c->lr_warmup < 0) return lk_fail(LK_ERR_INVALID, "train: negative warm-up");
    if ((int)c->lr_schedule < LK_LR_CONSTANT || (int)c->lr_schedule > LK_LR_COSINE)
        return lk_fail(LK_ERR_INVALID, "train: unknown LR schedule %d", (int)c->lr_schedule);
    if (!(c->adam.beta1 >= 0.0f && c->adam.beta1 < 1.0f && c->adam.beta2 >= 0.0f &&
          c->adam.beta2 < 1.0f && c->adam.eps > 0.0f && c->adam.weight_decay >= 0.0f &&
          isfinite(c->adam.weight_decay)))
        return lk_fail(LK_ERR_INVALID, "train: AdamW betas must be in [0, 1), eps > 0, weight "
                       "decay >= 0");
    if (!isfinite(c->max_grad_norm) || !(c->noise_offset >= 0.0f) || !isfinite(c->noise_offset) ||
        !isfinite(c->min_snr_gamma))
        return lk_fail(LK_ERR_INVALID, "train: clipping, noise offset and min-SNR gamma must be "
                       "finite (noise offset >= 0)");
    if (c->resolution < 8 || c->resolution > 4096 || c->resolution % 8)
        return lk_fail(LK_ERR_INVALID, "train: resolution %d must be a multiple of 8 in [8, 4096]",
                       c->resolution);
    if (c->min_images < 1) return lk_fail(LK_ERR_INVALID, "train: min_images must be >= 1");
    if ((int)c->captions < LK_CAPTION_OBJECT || (int)c->captions > LK_CAPTION_INSTANCE)
        return lk_fail(LK_ERR_INVALID, "train: unknown caption mode %d", (int)c->captions);
    if (c->images && (!c->token || !c->token[0]))
        return lk_fail(LK_ERR_INVALID, "train: a token (e.g. \"<sks>\") is required");
    if (c->checkpoint_every < 0 || c->validate_every < 0)
        return lk_fail(LK_ERR_INVALID, "train: negative checkpoint / validation interval");
    if (c->resume && !c->checkpoint)
        return lk_fail(LK_ERR_INVALID, "train: resume needs a checkpoint path");
    if (c->store != LK_F32 && c->store != LK_F16 && c->store != LK_BF16)
        return lk_fail(LK_ERR_INVALID, "train: weights can be stored F32, F16 or BF16");
    if (!c->model) return lk_fail(LK_ERR_INVALID, "train: no model given");
    return LK_OK;
}

static lk_status copy_strings(lk_trainer *tr) {
    const char **f[] = {&tr->cfg.model, &tr->cfg.tokenizer_dir, &tr->cfg.images, &tr->cfg.token,
                        &tr->cfg.class_word, &tr->cfg.prompt, &tr->cfg.checkpoint, &tr->cfg.log};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (!*f[i]) continue;
        tr->own_str[i] = strdup(*f[i]);
        if (!tr->own_str[i]) return lk_fail(LK_ERR_NOMEM, "out of memory");
        *f[i] = tr->own_str[i];
    }
    return LK_OK;
}

static lk_status build_networks(lk_trainer *tr) {
    lk_sd_model *m = tr->model;
    const lk_sd_part *pt = &m->part[LK_SD_TEXT_ENCODER];
    lk_clip_text_config tc;
    lk_status s = lk_clip_text_config_parse(&tc, pt->config_json, strlen(pt->config_json),
                                            "text_encoder/config.json");
    if (s == LK_OK) s = lk_clip_text_new(&tr->te, &tc, pt->weights, NULL);
    if (s != LK_OK) return s;
    pt = &m->part[LK_SD_UNET];
    lk_unet_config uc;
    s = lk_unet_config_parse(&uc, pt->config_json, strlen(pt->config_json), "unet/config.json");
    if (s == LK_OK) s = lk_unet_new(&tr->unet, &uc, pt->weights, NULL);
    if (s != LK_OK) return s;
    pt = &m->part[LK_SD_VAE];
    lk_vae_config vc;
    s = lk_vae_config_parse(&vc, pt->config_json, strlen(pt->config_json), "vae/config.json");
    if (s == LK_OK) s = lk_vae_new(&tr->vae, &vc, pt->weights, NULL);
    if (s != LK_OK) return s;
    if (vc.latent_channels != uc.in_channels || uc.out_channels != uc.in_channels)
        return lk_fail(LK_ERR_FORMAT, "%s: the VAE has %d latent channels, the UNet takes %d and "
                       "returns %d", m->path, vc.latent_channels, uc.in_channels, uc.out_channels);
    if (uc.cross_attention_dim != tc.hidden_size)
        return lk_fail(LK_ERR_FORMAT, "%s: the UNet's cross_attention_dim is %d, the text encoder "
                       "width %d", m->path, uc.cross_attention_dim, tc.hidden_size);
    if (vc.n_blocks < 1 || vc.n_blocks > 8 || uc.n_blocks < 1 || uc.n_blocks > 8)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: %d VAE / %d UNet blocks", m->path, vc.n_blocks,
                       uc.n_blocks);
    tr->vae_factor = 1 << (vc.n_blocks - 1);
    tr->unet_factor = 1 << (uc.n_blocks - 1);
    tr->scaling = vc.scaling_factor;
    tr->lc = uc.in_channels;
    tr->n_ctx = tc.max_position_embeddings;
    lk_unet_set_checkpointing(tr->unet, tr->cfg.gradient_checkpointing);
    lk_clip_text_set_checkpointing(tr->te, tr->cfg.gradient_checkpointing);
    return LK_OK;
}

static lk_status load_model(lk_trainer *tr) {
    lk_sd_load_opts lo;
    lk_sd_load_opts_default(&lo);
    lo.store = tr->cfg.store;
    lo.tokenizer_dir = tr->cfg.tokenizer_dir;
    lo.prediction = tr->cfg.prediction;
    lk_status s = lk_sd_model_load(&tr->model, tr->cfg.model, &lo);
    if (s == LK_OK && !tr->model->tokenizer)
        s = lk_fail(LK_ERR_INVALID, "%s: no tokenizer loaded", tr->cfg.model);
    if (s == LK_OK) {
        const char *js = tr->model->scheduler_json ? tr->model->scheduler_json : "";
        s = lk_schedule_config_parse(&tr->sched, js, strlen(js), "scheduler/scheduler_config.json");
        if (s != LK_OK) lk_fail_prefix(s, "%s: ", tr->cfg.model);
    }
    if (s != LK_OK) return s;
    tr->pred = tr->model->prediction;
    tr->sched.prediction_type = tr->pred;
    tr->n_train = tr->sched.num_train_timesteps;
    tr->ac = malloc(sizeof(float) * (size_t)tr->n_train);
    if (!tr->ac) return lk_fail(LK_ERR_NOMEM, "out of memory");
    s = lk_schedule_alphas_cumprod(&tr->sched, tr->ac, tr->n_train);
    if (s == LK_OK) s = build_networks(tr);
    if (s != LK_OK) return s;
    const int mult = tr->vae_factor * tr->unet_factor;
    if (tr->cfg.resolution % mult)
        return lk_fail(LK_ERR_INVALID, "train: resolution %d must be a multiple of %d for this model",
                       tr->cfg.resolution, mult);
    tr->lh = tr->lw = tr->cfg.resolution / tr->vae_factor;
    return LK_OK;
}

static lk_status open_log(lk_trainer *tr) {
    if (!tr->cfg.log) return LK_OK;
    tr->log = fopen(tr->cfg.log, tr->cfg.resume ? "a" : "w");
    if (!tr->log) return lk_fail(LK_ERR_IO, "%s: cannot open the log: %s", tr->cfg.log, strerror(errno));
    return LK_OK;
}

/* Contract: see train.h. */
lk_status lk_trainer_new(lk_trainer **out, const lk_train_config *cfg, lk_train_method *method) {
    if (out) *out = NULL;
    if (!out || !cfg || !method) {
        if (method && method->free) method->free(method);
        return lk_fail(LK_ERR_INVALID, "trainer_new: NULL argument");
    }
    lk_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) {
        if (method->free) method->free(method);
        return lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    tr->method = method;
    tr->cfg = *cfg;
    lk_status s = check_config(cfg);
    if (s == LK_OK) s = copy_strings(tr);
    if (s == LK_OK && tr->cfg.images) s = lk__train_data_scan(&tr->data, &tr->cfg);
    if (s == LK_OK) s = load_model(tr);
    if (s == LK_OK) {
        tr->ctx = lk_ctx_new();
        if (!tr->ctx) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    lk_rng_seed(&tr->rng, cfg->seed);
    if (s == LK_OK && method->prepare) s = method->prepare(method, tr);
    if (s == LK_OK && tr->data.n)
        s = lk__train_data_encode(&tr->data, tr->ctx, tr->vae, tr->cfg.resolution, tr->lc, tr->lh,
                                  tr->lw);
    /* the VAE's full-resolution activations are cached in the pool and no training step reuses
     * their sizes: give them back */
    lk_ctx_reset(tr->ctx);
    lk_ctx_trim(tr->ctx);
    if (s == LK_OK) {
        tr->ps = lk_paramset_new();
        if (!tr->ps) s = LK_ERR_NOMEM;
    }
    if (s == LK_OK) {
        s = method->collect ? method->collect(method, tr, tr->ps)
                            : lk_fail(LK_ERR_INVALID, "train: method %s collects no parameters",
                                      method->name ? method->name : "?");
    }
    if (s == LK_OK && lk_paramset_count(tr->ps) == 0)
        s = lk_fail(LK_ERR_INVALID, "train: method %s has no trainable parameters", method->name);
    for (int i = 0; s == LK_OK && i < lk_paramset_count(tr->ps); i++)
        for (int j = 0; s == LK_OK && j < i; j++)
            if (!strcmp(lk_paramset_get(tr->ps, i)->name, lk_paramset_get(tr->ps, j)->name))
                s = lk_fail(LK_ERR_INVALID, "train: two trainable parameters named '%s'",
                            lk_paramset_get(tr->ps, i)->name);
    if (s == LK_OK) s = lk_paramset_finalize(tr->ps);
    if (s == LK_OK) {
        lk_adamw_config ac = tr->cfg.adam;
        ac.lr = tr->cfg.lr;
        tr->opt = lk_adamw_new(tr->ps, ac);
        if (!tr->opt) s = LK_ERR_NOMEM; /* message set by lk_adamw_new */
        for (int i = 0; s == LK_OK && method->lr_scale && i < lk_paramset_count(tr->ps); i++)
            s = lk_adamw_set_lr_scale(tr->opt, i, method->lr_scale(method, tr, lk_paramset_get(tr->ps, i)));
    }
    tr->lrs = (lk_lr_schedule){tr->cfg.lr_schedule, tr->cfg.lr, tr->cfg.lr_warmup, tr->cfg.steps};
    if (s == LK_OK && tr->data.n)
        s = lk_train_batch_alloc(&tr->batch, tr->cfg.batch, tr->lc, tr->lh, tr->lw, tr->n_ctx, 0, 0);
    if (s == LK_OK && tr->cfg.resume) s = lk_trainer_load_checkpoint(tr, tr->cfg.checkpoint);
    if (s == LK_OK) s = open_log(tr);
    if (s != LK_OK) {
        lk_trainer_free(tr);
        return s;
    }
    *out = tr;
    return LK_OK;
}

/* Contract: see train.h. */
void lk_trainer_free(lk_trainer *tr) {
    if (!tr) return;
    lk_adamw_free(tr->opt);
    lk_paramset_free(tr->ps);
    if (tr->unet) lk_unet_set_layer_hook(tr->unet, NULL, NULL);
    if (tr->te) lk_clip_text_set_layer_hook(tr->te, NULL, NULL);
    if (tr->method && tr->method->free) tr->method->free(tr->method);
    lk_clip_text_free(tr->te);
    lk_unet_free(tr->unet);
    lk_vae_free(tr->vae);
    lk_sd_model_free(tr->model);
    lk__train_data_free(&tr->data);
    lk_train_batch_free(&tr->batch);
    lk_ctx_free(tr->ctx);
    free(tr->ac);
    if (tr->log) fclose(tr->log);
    for (size_t i = 0; i < sizeof tr->own_str / sizeof tr->own_str[0]; i++) free(tr->own_str[i]);
    free(tr);
}

/* ---- batches from the dataset ---- */

/* Contract: see train.h. */
lk_status lk_trainer_next_batch(lk_trainer *tr, const lk_train_batch **out) {
    if (!tr || !out) return lk_fail(LK_ERR_INVALID, "trainer_next_batch: NULL argument");
    *out = NULL;
    if (!tr->data.n) return lk_fail(LK_ERR_STATE, "train: no dataset (no image folder given)");
    lk_train_batch *b = &tr->batch;
    lk__train_data *d = &tr->data;
    const int B = b->B;
    const size_t per = d->per;
    int var[256];
    lk_status s = LK_OK;
    for (int i = 0; s == LK_OK && i < B; i++) {
        int img = (int)lk__train_data_next(d, &tr->rng);
        var[i] = 0;
        if (d->n_var == 2) {
            float u;
            lk_rng_rand(&tr->rng, &u, 1);
            var[i] = u < 0.5f;
        }
        b->item[i] = img;
        b->loss_weight[i] = 1.0f;
        s = lk__train_caption(tr, img, &tr->rng, b->caption[i], sizeof b->caption[i]);
        if (s == LK_OK)
            s = lk_tokenizer_encode(tr->model->tokenizer, b->caption[i], b->ids + (size_t)i * (size_t)b->n_ctx,
                                    b->n_ctx, tr->model->pad, NULL);
    }
    if (s != LK_OK) return s;
    /* posterior sample (DiagonalGaussianDistribution.sample: one randn over the batch) */
    lk_rng_randn(&tr->rng, b->x0, (size_t)B * per);
    for (int i = 0; i < B; i++) {
        const size_t o = ((size_t)b->item[i] * (size_t)d->n_var + (size_t)var[i]) * per;
        const float *mu = d->mean + o, *lv = d->logvar + o;
        float *x = b->x0 + (size_t)i * per;
        for (size_t k = 0; k < per; k++) {
            float std = expf(0.5f * lv[k]);
            float z = mu[k] + std * x[k];
            x[k] = z * tr->scaling;
        }
    }
    lk_rng_randn(&tr->rng, b->noise, (size_t)B * per);
    if (tr->cfg.noise_offset > 0.0f) {
        const size_t hw = (size_t)b->h * (size_t)b->w;
        float off[256 * 16];
        const size_t nc = (size_t)B * (size_t)b->c;
        float *o = nc <= sizeof off / sizeof off[0] ? off : malloc(nc * sizeof(float));
        if (!o) return lk_fail(LK_ERR_NOMEM, "out of memory");
        lk_rng_randn(&tr->rng, o, nc);
        for (size_t k = 0; k < nc; k++) {
            const float a = tr->cfg.noise_offset * o[k];
            float *x = b->noise + k * hw;
            for (size_t j = 0; j < hw; j++) x[j] += a;
        }
        if (o != off) free(o);
    }
    s = lk_rng_randint(&tr->rng, 0, tr->n_train, b->timesteps, (size_t)B);
    if (s == LK_OK) *out = b;
    return s;
}

/* ---- the loss ---- */

/* Contract: see train.h. */
lk_tensor *lk_train_encode_text(lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b, bool grad) {
    if (!ctx || lk_ctx_status(ctx) != LK_OK) return NULL;
    if (!tr || !b) return lk_ctx_fail(ctx, LK_ERR_INVALID, "train_encode_text: NULL argument");
    if (b->ehs)
        return lk_tensor_wrap(ctx, LK_F32, LK_DIMS(b->B, b->ehs_len, b->ehs_dim), b->ehs);
    if (!b->ids || b->n_ctx < 1)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "train: a batch needs token ids or an ehs");
    lk_tensor *ids = lk_tensor_wrap(ctx, LK_I64, LK_DIMS(b->B, b->n_ctx), b->ids);
    const bool was = lk_grad_enabled(ctx);
    if (!grad) lk_set_grad_enabled(ctx, false);
    lk_tensor *y = lk_clip_text_forward(ctx, tr->te, ids, 1, true);
    lk_set_grad_enabled(ctx, was);
    return y;
}

/* Contract: see train.h. */
lk_tensor *lk_train_denoise_loss(lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b,
                                 lk_tensor *ehs) {
    if (!ctx || lk_ctx_status(ctx) != LK_OK || !ehs) return NULL;
    if (!tr || !b) return lk_ctx_fail(ctx, LK_ERR_INVALID, "train_denoise_loss: NULL argument");
    const int B = b->B;
    const size_t per = (size_t)b->c * (size_t)b->h * (size_t)b->w;
    lk_tensor *xt = lk_tensor_new(ctx, LK_F32, LK_DIMS(B, b->c, b->h, b->w));
    lk_tensor *target = tr->pred == LK_PREDICT_V
                            ? lk_tensor_new(ctx, LK_F32, LK_DIMS(B, b->c, b->h, b->w))
                            : lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, b->c, b->h, b->w), b->noise);
    if (!xt || !target) return NULL;
    for (int i = 0; i < B; i++) {
        const size_t o = (size_t)i * per;
        lk_status s = lk_ddpm_add_noise((float *)xt->data + o, b->x0 + o, b->noise + o, per, tr->ac,
                                        tr->n_train, b->timesteps[i]);
        if (s == LK_OK && tr->pred == LK_PREDICT_V)
            s = lk_ddpm_velocity((float *)target->data + o, b->x0 + o, b->noise + o, per, tr->ac,
                                 tr->n_train, b->timesteps[i]);
        if (s != LK_OK) return lk_ctx_fail(ctx, s, "train: %s", lk_last_error());
    }
    lk_tensor *ts = lk_tensor_wrap(ctx, LK_I64, LK_DIMS(B), b->timesteps);
    lk_tensor *pred = lk_unet_forward(ctx, tr->unet, xt, ts, ehs);
    lk_release(xt);
    const bool snr = tr->cfg.min_snr_gamma > 0.0f;
    bool weighted = snr;
    for (int i = 0; b->loss_weight && i < B; i++) weighted |= b->loss_weight[i] != 1.0f;
    if (!weighted) return lk_mse_loss(ctx, pred, target);
    lk_tensor *w = lk_tensor_new(ctx, LK_F32, LK_DIMS(B));
    if (!w) return NULL;
    float *wd = w->data;
    for (int i = 0; i < B; i++) {
        float wi = 1.0f;
        if (snr) {
            float r = lk_ddpm_snr(tr->ac, tr->n_train, b->timesteps[i]);
            wi = lk_min_snr_weight(r, tr->cfg.min_snr_gamma, tr->pred);
        }
        wd[i] = b->loss_weight ? wi * b->loss_weight[i] : wi;
    }
    lk_tensor *d = lk_sub(ctx, pred, target);
    lk_tensor *sq = lk_reshape(ctx, lk_mul(ctx, d, d), LK_DIMS(B, -1));
    lk_tensor *ps = lk_mean_dim(ctx, sq, 1, false);
    return lk_mean(ctx, lk_mul(ctx, ps, w));
}

/* Contract: see train.h. */
lk_tensor *lk_train_default_loss(lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b) {
    if (!tr) return ctx ? lk_ctx_fail(ctx, LK_ERR_INVALID, "train_default_loss: NULL trainer") : NULL;
    lk_tensor *ehs = lk_train_encode_text(tr, ctx, b, tr->method->text_encoder_grad);
    return lk_train_denoise_loss(tr, ctx, b, ehs);
}

/* ---- steps ---- */

/* Contract: see train.h. */
lk_status lk_trainer_accumulate(lk_trainer *tr, const lk_train_batch *b, float *loss) {
    if (!tr || !b) return lk_fail(LK_ERR_INVALID, "trainer_accumulate: NULL argument");
    if (b->B < 1 || !b->x0 || !b->noise || !b->timesteps || b->c != tr->lc || b->h < 1 ||
        b->w < 1 || b->h % tr->unet_factor || b->w % tr->unet_factor)
        return lk_fail(LK_ERR_INVALID, "train: batch of %d latents (%d,%d,%d); the UNet takes %d "
                       "channels and sizes divisible by %d", b->B, b->c, b->h, b->w, tr->lc,
                       tr->unet_factor);
    for (int i = 0; i < b->B; i++)
        if (b->timesteps[i] < 0 || b->timesteps[i] >= tr->n_train)
            return lk_fail(LK_ERR_INVALID, "train: timestep %lld outside [0, %d)",
                           (long long)b->timesteps[i], tr->n_train);
    lk_ctx *ctx = tr->ctx;
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, true);
    lk_train_method *m = tr->method;
    lk_tensor *l = m->loss ? m->loss(m, tr, ctx, b) : lk_train_default_loss(tr, ctx, b);
    lk_status s = lk_ctx_status(ctx);
    if (s == LK_OK && (!l || lk_numel(l) != 1 || l->dtype != LK_F32))
        s = lk_fail(LK_ERR_STATE, "train: method %s gave no scalar loss", m->name);
    float lv = s == LK_OK ? lk_get_f32(l, 0) : NAN;
    if (s == LK_OK && !isfinite(lv))
        s = lk_fail(LK_ERR_STATE, "train: the loss is %g at step %lld (diverged: lower the learning "
                    "rate)", (double)lv, (long long)tr->step + 1);
    if (s == LK_OK) {
        lk_tensor *scaled = tr->cfg.grad_accum > 1 ? lk_scale(ctx, l, 1.0f / (float)tr->cfg.grad_accum) : l;
        s = scaled ? lk_backward(ctx, scaled) : lk_ctx_status(ctx);
    }
    lk_ctx_reset(ctx);
    if (s == LK_OK && loss) *loss = lv;
    return s;
}

/* Contract: see train.h. */
lk_status lk_trainer_update(lk_trainer *tr, lk_train_stats *st) {
    if (!tr) return lk_fail(LK_ERR_INVALID, "trainer_update: NULL trainer");
    float gn = -1.0f;
    if (tr->cfg.max_grad_norm > 0.0f) {
        gn = lk_clip_grad_norm(tr->ps, tr->cfg.max_grad_norm);
        if (gn < 0.0f) return lk_fail_prefix(LK_ERR_INVALID, "train: ");
        if (!isfinite(gn))
            return lk_fail(LK_ERR_STATE, "train: gradient norm %g at step %lld (diverged)",
                           (double)gn, (long long)tr->step + 1);
    }
    const float lr = lk_lr_at(&tr->lrs, tr->step);
    lk_status s = lk_adamw_step(tr->opt, lr);
    if (s == LK_OK && tr->method->after_update) s = tr->method->after_update(tr->method, tr);
    lk_paramset_zero_grad(tr->ps);
    if (s != LK_OK) return s;
    tr->step++;
    if (st) {
        st->step = tr->step;
        st->steps = tr->cfg.steps;
        st->lr = lr;
        st->grad_norm = gn;
    }
    return LK_OK;
}

/* Contract: see train.h. */
lk_status lk_trainer_step(lk_trainer *tr, lk_train_stats *st) {
    if (!tr) return lk_fail(LK_ERR_INVALID, "trainer_step: NULL trainer");
    const double t0 = now_s();
    double sum = 0.0;
    lk_status s = LK_OK;
    for (int k = 0; s == LK_OK && k < tr->cfg.grad_accum; k++) {
        const lk_train_batch *b = NULL;
        float l = 0.0f;
        s = lk_trainer_next_batch(tr, &b);
        if (s == LK_OK) s = lk_trainer_accumulate(tr, b, &l);
        sum += (double)l;
    }
    if (s != LK_OK) {
        lk_paramset_zero_grad(tr->ps);
        return s;
    }
    lk_train_stats local;
    lk_train_stats *o = st ? st : &local;
    s = lk_trainer_update(tr, o);
    if (s != LK_OK) return s;
    o->loss = (float)(sum / (double)tr->cfg.grad_accum);
    o->seconds = now_s() - t0;
    return LK_OK;
}

static lk_status checkpoint_now(lk_trainer *tr) {
    return tr->cfg.checkpoint ? lk_trainer_save_checkpoint(tr, tr->cfg.checkpoint) : LK_OK;
}

/* Contract: see train.h. */
lk_status lk_trainer_run(lk_trainer *tr) {
    if (!tr) return lk_fail(LK_ERR_INVALID, "trainer_run: NULL trainer");
    const lk_train_config *c = &tr->cfg;
    while (tr->step < c->steps) {
        if (c->cancel && *c->cancel) {
            lk_status s = checkpoint_now(tr);
            if (s != LK_OK) return s;
            if (c->checkpoint)
                return lk_fail(LK_ERR_INTERRUPTED, "interrupted after step %lld; checkpoint saved to "
                               "%s", (long long)tr->step, c->checkpoint);
            return lk_fail(LK_ERR_INTERRUPTED, "interrupted after step %lld (no checkpoint path)",
                           (long long)tr->step);
        }
        lk_train_stats st = {0};
        lk_status s = lk_trainer_step(tr, &st);
        if (s != LK_OK) return s;
        if (tr->log) {
            fprintf(tr->log, "{\"step\": %lld, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, "
                    "\"epoch\": %lld, \"seconds\": %.4f}\n", (long long)st.step, (double)st.loss,
                    (double)st.lr, (double)st.grad_norm, (long long)tr->data.epoch, st.seconds);
            fflush(tr->log);
        }
        if (c->checkpoint_every > 0 && tr->step % c->checkpoint_every == 0) {
            s = checkpoint_now(tr);
            if (s != LK_OK) return s;
        }
        if (c->validate && c->validate_every > 0 && tr->step % c->validate_every == 0) {
            s = c->validate(c->validate_ud, tr, tr->step);
            if (s != LK_OK) return s;
        }
        if (c->progress) {
            s = c->progress(c->progress_ud, &st);
            if (s != LK_OK) {
                lk_status s2 = checkpoint_now(tr);
                return s2 != LK_OK ? s2 : s;
            }
        }
    }
    return LK_OK;
}

/* ---- checkpoints ---- */

static float *param_slice(const lk_tensor *p) {
    int64_t off = p->ndim == 2 ? p->grad_row_lo * p->shape[1] : 0;
    return (float *)p->data + off;
}

static void param_shape(const lk_tensor *p, int *nd, int64_t *shape) {
    *nd = p->ndim;
    for (int i = 0; i < p->ndim; i++) shape[i] = p->shape[i];
    if (p->ndim == 2) shape[0] = p->grad_row_hi - p->grad_row_lo;
}

static const char *u64s(uint64_t v, char *buf, size_t n) {
    snprintf(buf, n, "%llu", (unsigned long long)v);
    return buf;
}

/* the settings a resume must keep, as metadata pairs */
static lk_status ckpt_settings(const lk_trainer *tr, char keys[8][32], char vals[8][96], int *n) {
    const lk_train_config *c = &tr->cfg;
    int k = 0;
#define KV(key, ...)                                               \
    do {                                                           \
        snprintf(keys[k], sizeof keys[k], "%s", key);              \
        snprintf(vals[k], sizeof vals[k], __VA_ARGS__);            \
        k++;                                                       \
    } while (0)
    KV("method", "%s", tr->method->name ? tr->method->name : "?");
    KV("seed", "%llu", (unsigned long long)c->seed);
    KV("batch", "%d", c->batch);
    KV("grad_accum", "%d", c->grad_accum);
    KV("resolution", "%d", c->resolution);
    KV("num_images", "%d", tr->data.n);
    KV("dataset", "%016llx", (unsigned long long)tr->data.fingerprint);
    KV("flip", "%d", (int)c->flip);
#undef KV
    *n = k;
    return LK_OK;
}

/* Contract: see train.h. */
lk_status lk_trainer_save_checkpoint(lk_trainer *tr, const char *path) {
    if (!tr || !path) return lk_fail(LK_ERR_INVALID, "trainer_save_checkpoint: NULL argument");
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = lk_st_writer_meta(w, "format", CKPT_FORMAT);
    char keys[8][32], vals[8][96], buf[64];
    int nk = 0;
    ckpt_settings(tr, keys, vals, &nk);
    for (int i = 0; s == LK_OK && i < nk; i++) s = lk_st_writer_meta(w, keys[i], vals[i]);
    for (int i = 0; s == LK_OK && i < lk_paramset_count(tr->ps); i++) {
        const lk_tensor *p = lk_paramset_get(tr->ps, i);
        char name[160];
        int64_t shape[LK_MAX_DIMS];
        int nd;
        param_shape(p, &nd, shape);
        snprintf(name, sizeof name, "param.%s", p->name);
        s = lk_st_writer_add(w, name, LK_F32, nd, shape, param_slice(p));
    }
    if (s == LK_OK) s = lk_adamw_save(tr->opt, w, "adamw.");
    uint8_t rs[LK_RNG_STATE_BYTES];
    lk_rng_get_state(&tr->rng, rs);
    const int64_t rn = LK_RNG_STATE_BYTES, one = 1;
    if (s == LK_OK) s = lk_st_writer_add(w, "rng", LK_U8, 1, &rn, rs);
    int64_t v[3] = {tr->step, tr->data.pos, tr->data.epoch};
    if (s == LK_OK) s = lk_st_writer_add(w, "step", LK_I64, 1, &one, &v[0]);
    if (s == LK_OK) s = lk_st_writer_add(w, "data.pos", LK_I64, 1, &one, &v[1]);
    if (s == LK_OK) s = lk_st_writer_add(w, "data.epoch", LK_I64, 1, &one, &v[2]);
    const int64_t nn = tr->data.n;
    if (s == LK_OK && nn) s = lk_st_writer_add(w, "data.order", LK_I64, 1, &nn, tr->data.order);
    if (s == LK_OK) s = lk_st_writer_meta(w, "step", u64s((uint64_t)tr->step, buf, sizeof buf));
    if (s == LK_OK) s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    return s;
}

static const lk_st_tensor *want_tensor(const lk_safetensors *st, const char *path, const char *name,
                                       lk_dtype dt, int64_t numel, lk_status *s) {
    if (*s != LK_OK) return NULL;
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t) *s = lk_fail(LK_ERR_FORMAT, "%s: checkpoint tensor '%s' is missing", path, name);
    else if (t->dtype != dt || lk_st_tensor_numel(t) != numel)
        *s = lk_fail(LK_ERR_FORMAT, "%s: checkpoint tensor '%s' is %s with %lld elements, expected "
                     "%s with %lld", path, name, lk_dtype_name(t->dtype),
                     (long long)lk_st_tensor_numel(t), lk_dtype_name(dt), (long long)numel);
    return *s == LK_OK ? t : NULL;
}

/* Contract: see train.h. */
lk_status lk_trainer_load_checkpoint(lk_trainer *tr, const char *path) {
    if (!tr || !path) return lk_fail(LK_ERR_INVALID, "trainer_load_checkpoint: NULL argument");
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open(&st, path);
    if (s != LK_OK) return lk_fail_prefix(s, "resume: ");
    const char *fmt = lk_safetensors_meta(st, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT))
        s = lk_fail(LK_ERR_FORMAT, "%s: not a likeness training checkpoint", path);
    char keys[8][32], vals[8][96];
    int nk = 0;
    ckpt_settings(tr, keys, vals, &nk);
    for (int i = 0; s == LK_OK && i < nk; i++) {
        const char *have = lk_safetensors_meta(st, keys[i]);
        if (!have || strcmp(have, vals[i]))
            s = lk_fail(LK_ERR_INVALID, "%s: the checkpoint was made with %s %s, this run has %s "
                        "(resume needs the same settings and images)", path, keys[i],
                        have ? have : "(none)", vals[i]);
    }
    const int np = lk_paramset_count(tr->ps);
    const lk_st_tensor *pt[4096];
    if (s == LK_OK && np > 4096) s = lk_fail(LK_ERR_UNSUPPORTED, "resume: more than 4096 parameters");
    for (int i = 0; s == LK_OK && i < np; i++) {
        const lk_tensor *p = lk_paramset_get(tr->ps, i);
        char name[160];
        snprintf(name, sizeof name, "param.%s", p->name);
        pt[i] = want_tensor(st, path, name, LK_F32, lk_grad_numel(p), &s);
    }
    const lk_st_tensor *trng = want_tensor(st, path, "rng", LK_U8, LK_RNG_STATE_BYTES, &s);
    const lk_st_tensor *tstep = want_tensor(st, path, "step", LK_I64, 1, &s);
    const lk_st_tensor *tpos = want_tensor(st, path, "data.pos", LK_I64, 1, &s);
    const lk_st_tensor *tep = want_tensor(st, path, "data.epoch", LK_I64, 1, &s);
    const lk_st_tensor *tord = tr->data.n ? want_tensor(st, path, "data.order", LK_I64, tr->data.n, &s) : NULL;
    int64_t step = 0, pos = 0, epoch = 0;
    int64_t *order = NULL;
    if (s == LK_OK) {
        memcpy(&step, tstep->data, 8);
        memcpy(&pos, tpos->data, 8);
        memcpy(&epoch, tep->data, 8);
        if (step < 0 || step > tr->cfg.steps || pos < 0 || pos > tr->data.n || epoch < 0)
            s = lk_fail(LK_ERR_FORMAT, "%s: step %lld / data position %lld out of range (this run "
                        "has %lld steps)", path, (long long)step, (long long)pos, (long long)tr->cfg.steps);
    }
    if (s == LK_OK && tord) {
        order = malloc(sizeof *order * (size_t)tr->data.n);
        bool *seen = calloc((size_t)tr->data.n, 1);
        if (!order || !seen) s = lk_fail(LK_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; s == LK_OK && i < tr->data.n; i++) {
            memcpy(&order[i], (const char *)tord->data + 8 * i, 8);
            if (order[i] < 0 || order[i] >= tr->data.n || seen[order[i]])
                s = lk_fail(LK_ERR_FORMAT, "%s: data.order is not a permutation", path);
            else seen[order[i]] = true;
        }
        free(seen);
    }
    lk_rng rng;
    if (s == LK_OK) s = lk_rng_set_state(&rng, trng->data);
    if (s == LK_OK) s = lk_adamw_load(tr->opt, st, "adamw.");
    if (s == LK_OK && lk_adamw_step_count(tr->opt) != step)
        s = lk_fail(LK_ERR_FORMAT, "%s: optimizer step %lld differs from step %lld", path,
                    (long long)lk_adamw_step_count(tr->opt), (long long)step);
    if (s == LK_OK) {
        for (int i = 0; i < np; i++) {
            lk_tensor *p = lk_paramset_get(tr->ps, i);
            memcpy(param_slice(p), pt[i]->data, sizeof(float) * (size_t)lk_grad_numel(p));
        }
        tr->rng = rng;
        tr->step = step;
        tr->data.pos = pos;
        tr->data.epoch = epoch;
        if (order) memcpy(tr->data.order, order, sizeof *order * (size_t)tr->data.n);
        lk_paramset_zero_grad(tr->ps);
    }
    free(order);
    lk_safetensors_close(st);
    return s;
}

/* ---- outputs ---- */

/* Contract: see train.h. */
lk_status lk_trainer_save(lk_trainer *tr, const char *path) {
    if (!tr || !path) return lk_fail(LK_ERR_INVALID, "trainer_save: NULL argument");
    if (!tr->method->save)
        return lk_fail(LK_ERR_UNSUPPORTED, "train: method %s writes no outputs", tr->method->name);
    return tr->method->save(tr->method, tr, path);
}

/* Contract: see train.h. */
lk_status lk_trainer_add_metadata(lk_trainer *tr, lk_st_writer *w) {
    if (!tr || !w) return lk_fail(LK_ERR_INVALID, "trainer_add_metadata: NULL argument");
    char hash[11] = "", buf[64];
    lk_status s = lk_sd_model_hash(tr->model, hash);
    const char *base = strrchr(tr->cfg.model, '/');
    base = base && base[1] ? base + 1 : tr->cfg.model;
    const lk_train_config *c = &tr->cfg;
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.method", tr->method->name);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.base_model", base);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.base_model_hash", hash);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.base_model_sha256", tr->model->sha256);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.base_model_arch", lk_sd_arch_name(tr->model->arch));
    if (s == LK_OK && c->token) s = lk_st_writer_meta(w, "likeness.token", c->token);
    if (s == LK_OK && c->class_word) s = lk_st_writer_meta(w, "likeness.class", c->class_word);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.steps", u64s((uint64_t)tr->step, buf, sizeof buf));
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.resolution", u64s((uint64_t)c->resolution, buf, sizeof buf));
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.seed", u64s(c->seed, buf, sizeof buf));
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.num_images", u64s((uint64_t)tr->data.n, buf, sizeof buf));
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.prediction", tr->pred == LK_PREDICT_V ? "v" : "epsilon");
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.version", lk_version());
    return s;
}

/* Contract: see train.h. */
char *lk_train_diffusers_path(const char *path) {
    if (!path) return NULL;
    size_t n = strlen(path);
    const char *ext = ".safetensors";
    size_t e = strlen(ext);
    size_t stem = n >= e && !strcmp(path + n - e, ext) ? n - e : n;
    char *p = malloc(stem + 32);
    if (!p) {
        lk_fail(LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memcpy(p, path, stem);
    strcpy(p + stem, ".diffusers.safetensors");
    return p;
}

/* ---- accessors ---- */

const lk_train_config *lk_trainer_config(const lk_trainer *tr) { return tr ? &tr->cfg : NULL; }
lk_sd_model *lk_trainer_model(lk_trainer *tr) { return tr ? tr->model : NULL; }
lk_tokenizer *lk_trainer_tokenizer(lk_trainer *tr) { return tr && tr->model ? tr->model->tokenizer : NULL; }
lk_clip_text *lk_trainer_text_encoder(lk_trainer *tr) { return tr ? tr->te : NULL; }
lk_unet *lk_trainer_unet(lk_trainer *tr) { return tr ? tr->unet : NULL; }
lk_vae *lk_trainer_vae(lk_trainer *tr) { return tr ? tr->vae : NULL; }
lk_rng *lk_trainer_rng(lk_trainer *tr) { return tr ? &tr->rng : NULL; }
lk_paramset *lk_trainer_params(lk_trainer *tr) { return tr ? tr->ps : NULL; }
int64_t lk_trainer_step_count(const lk_trainer *tr) { return tr ? tr->step : 0; }
int lk_trainer_num_images(const lk_trainer *tr) { return tr ? tr->data.n : 0; }
lk_prediction_type lk_trainer_prediction(const lk_trainer *tr) { return tr ? tr->pred : LK_PREDICT_EPSILON; }

lk_tensor *lk_trainer_param(lk_trainer *tr, const char *name) {
    if (!tr || !name) return NULL;
    for (int i = 0; i < lk_paramset_count(tr->ps); i++) {
        lk_tensor *p = lk_paramset_get(tr->ps, i);
        if (!strcmp(p->name, name)) return p;
    }
    return NULL;
}

const float *lk_trainer_alphas_cumprod(const lk_trainer *tr, int *n) {
    if (n) *n = tr ? tr->n_train : 0;
    return tr ? tr->ac : NULL;
}

void lk_trainer_latent_shape(const lk_trainer *tr, int *c, int *h, int *w) {
    if (c) *c = tr ? tr->lc : 0;
    if (h) *h = tr ? tr->lh : 0;
    if (w) *w = tr ? tr->lw : 0;
}
