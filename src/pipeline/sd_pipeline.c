/* sd_pipeline.c: Stable Diffusion text-to-image / image-to-image, step for step as diffusers 0.25's
 * StableDiffusionPipeline and StableDiffusionImg2ImgPipeline (prepare_latents, the guided
 * denoising loop, vae.decode(latents / scaling_factor)), plus LoRA and embedding loading. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "likeness/embedding_file.h"
#include "likeness/lora_file.h"
#include "likeness/pipeline.h"
#include "likeness/train_methods.h"

struct lk_sd_pipeline {
    lk_sd_model *model;        /* owns weights, configs, tokenizer */
    lk_clip_text *te;
    lk_unet *unet;
    lk_vae *vae;
    lk_schedule_config sched;
    lk_ctx *ctx;               /* activations of the current call */
    lk_lora **loras;
    int n_loras;
    int vae_factor;            /* 2^(vae blocks - 1) */
    int unet_factor;           /* 2^(unet blocks - 1) */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Drop every activation and go back to no-grad (lk_ctx_reset re-enables recording). */
static void fresh(lk_ctx *ctx) {
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, false);
}

/* ---- loading ---- */

/* Contract: see pipeline.h. */
void lk_sd_pipeline_opts_default(lk_sd_pipeline_opts *o) {
    o->store = LK_F32;
    o->tokenizer_dir = NULL;
    o->prediction = -1;
    o->custom = NULL;
    o->n_custom = 0;
}

static const char *part_label(int part, char *buf, size_t n) {
    snprintf(buf, n, "%s/config.json", lk_sd_part_name((lk_sd_part_id)part));
    return buf;
}

static lk_status build_networks(lk_sd_pipeline *p) {
    lk_sd_model *m = p->model;
    char label[64];
    const lk_sd_part *pt = &m->part[LK_SD_TEXT_ENCODER];
    lk_clip_text_config tc;
    lk_status s = lk_clip_text_config_parse(&tc, pt->config_json, strlen(pt->config_json),
                                            part_label(LK_SD_TEXT_ENCODER, label, sizeof label));
    if (s == LK_OK) s = lk_clip_text_new(&p->te, &tc, pt->weights, NULL);
    if (s != LK_OK) return s;
    pt = &m->part[LK_SD_UNET];
    lk_unet_config uc;
    s = lk_unet_config_parse(&uc, pt->config_json, strlen(pt->config_json),
                             part_label(LK_SD_UNET, label, sizeof label));
    if (s == LK_OK) s = lk_unet_new(&p->unet, &uc, pt->weights, NULL);
    if (s != LK_OK) return s;
    pt = &m->part[LK_SD_VAE];
    lk_vae_config vc;
    s = lk_vae_config_parse(&vc, pt->config_json, strlen(pt->config_json),
                            part_label(LK_SD_VAE, label, sizeof label));
    if (s == LK_OK) s = lk_vae_new(&p->vae, &vc, pt->weights, NULL);
    if (s != LK_OK) return s;
    if (vc.latent_channels != uc.in_channels || uc.out_channels != uc.in_channels)
        return lk_fail(LK_ERR_FORMAT, "%s: the VAE has %d latent channels, the UNet takes %d and "
                       "returns %d", m->path, vc.latent_channels, uc.in_channels, uc.out_channels);
    if (uc.cross_attention_dim != tc.hidden_size)
        return lk_fail(LK_ERR_FORMAT, "%s: the UNet's cross_attention_dim is %d, the text encoder "
                       "width %d", m->path, uc.cross_attention_dim, tc.hidden_size);
    if (vc.n_blocks > 8 || uc.n_blocks > 8)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: %d VAE / %d UNet blocks", m->path, vc.n_blocks,
                       uc.n_blocks);
    p->vae_factor = 1 << (vc.n_blocks - 1);
    p->unet_factor = 1 << (uc.n_blocks - 1);
    return LK_OK;
}

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_load(lk_sd_pipeline **out, const char *path,
                              const lk_sd_pipeline_opts *opts) {
    if (!out) return lk_fail(LK_ERR_INVALID, "sd_pipeline_load: NULL output");
    *out = NULL;
    if (!path) return lk_fail(LK_ERR_INVALID, "sd_pipeline_load: NULL path");
    lk_sd_pipeline_opts o;
    if (opts) o = *opts;
    else lk_sd_pipeline_opts_default(&o);
    lk_sd_pipeline *p = calloc(1, sizeof *p);
    if (!p) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_sd_load_opts lo;
    lk_sd_load_opts_default(&lo);
    lo.store = o.store;
    lo.tokenizer_dir = o.tokenizer_dir;
    lo.prediction = o.prediction;
    lk_status s = lk_sd_model_load(&p->model, path, &lo);
    if (s == LK_OK && !p->model->tokenizer)
        s = lk_fail(LK_ERR_INVALID, "%s: no tokenizer loaded", path);
    if (s == LK_OK) {
        const char *js = p->model->scheduler_json ? p->model->scheduler_json : "";
        s = lk_schedule_config_parse(&p->sched, js, strlen(js), "scheduler/scheduler_config.json");
        if (s != LK_OK) lk_fail_prefix(s, "%s: ", path);
    }
    /* Custom Diffusion: weights replaced before the networks are built; token rows after */
    float *cd_rows = NULL;
    int cd_n = 0, cd_dim = 0;
    for (int i = 0; s == LK_OK && i < o.n_custom; i++) {
        float *rows = NULL;
        int n = 0, dim = 0;
        s = o.custom && o.custom[i] ? lk_custom_diffusion_apply(p->model, o.custom[i], &rows, &n, &dim)
                                    : lk_fail(LK_ERR_INVALID, "sd_pipeline_load: NULL custom file");
        if (s == LK_OK && n > 0) {
            float *grown = realloc(cd_rows, sizeof(float) * (size_t)(cd_n + n) * (size_t)dim);
            if (!grown) s = lk_fail(LK_ERR_NOMEM, "out of memory");
            else {
                memcpy(grown + (size_t)cd_n * (size_t)dim, rows, sizeof(float) * (size_t)n * (size_t)dim);
                cd_rows = grown;
                cd_n += n;
                cd_dim = dim;
            }
        }
        free(rows);
    }
    if (s == LK_OK) {
        p->sched.prediction_type = p->model->prediction;
        s = build_networks(p);
    }
    if (s == LK_OK && cd_n > 0) {
        if (lk_clip_text_config_of(p->te)->hidden_size != cd_dim)
            s = lk_fail(LK_ERR_FORMAT, "custom diffusion: %d-dim token rows, the text encoder "
                        "expects %d", cd_dim, lk_clip_text_config_of(p->te)->hidden_size);
        else s = lk_clip_text_add_tokens(p->te, cd_n, cd_rows, NULL);
        if (s == LK_OK && lk_tokenizer_vocab_size(p->model->tokenizer) != lk_clip_text_vocab_size(p->te))
            s = lk_fail(LK_ERR_STATE, "custom diffusion: tokenizer has %lld ids but the text "
                        "encoder table %lld rows",
                        (long long)lk_tokenizer_vocab_size(p->model->tokenizer),
                        (long long)lk_clip_text_vocab_size(p->te));
    }
    free(cd_rows);
    if (s == LK_OK) {
        p->ctx = lk_ctx_new();
        if (!p->ctx) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    if (s != LK_OK) {
        lk_sd_pipeline_free(p);
        return s;
    }
    *out = p;
    return LK_OK;
}

/* Contract: see pipeline.h. */
void lk_sd_pipeline_free(lk_sd_pipeline *p) {
    if (!p) return;
    for (int i = 0; i < p->n_loras; i++) lk_lora_free(p->loras[i]);
    free(p->loras);
    lk_ctx_free(p->ctx);
    lk_clip_text_free(p->te);
    lk_unet_free(p->unet);
    lk_vae_free(p->vae);
    lk_sd_model_free(p->model);
    free(p);
}

lk_sd_model *lk_sd_pipeline_model(lk_sd_pipeline *p) { return p ? p->model : NULL; }
const lk_unet *lk_sd_pipeline_unet(const lk_sd_pipeline *p) { return p ? p->unet : NULL; }
const lk_vae *lk_sd_pipeline_vae(const lk_sd_pipeline *p) { return p ? p->vae : NULL; }
const lk_clip_text *lk_sd_pipeline_text_encoder(const lk_sd_pipeline *p) { return p ? p->te : NULL; }
const lk_tokenizer *lk_sd_pipeline_tokenizer(const lk_sd_pipeline *p) {
    return p ? p->model->tokenizer : NULL;
}
const lk_schedule_config *lk_sd_pipeline_schedule(const lk_sd_pipeline *p) {
    return p ? &p->sched : NULL;
}

/* Contract: see pipeline.h. */
void lk_sd_pipeline_geometry(const lk_sd_pipeline *p, int *multiple, int *w, int *h) {
    if (!p) return;
    if (multiple) *multiple = p->vae_factor * p->unet_factor;
    int ss = lk_unet_config_of(p->unet)->sample_size;
    if (ss <= 0) ss = 64;
    if (w) *w = ss * p->vae_factor;
    if (h) *h = ss * p->vae_factor;
}

#define MAX_SIDE 16384

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_latent_shape(const lk_sd_pipeline *p, int width, int height, int *c,
                                      int *lh, int *lw) {
    if (!p) return lk_fail(LK_ERR_INVALID, "sd_pipeline_latent_shape: NULL pipeline");
    const int mult = p->vae_factor * p->unet_factor;
    const int sides[2] = {width, height};
    const char *names[2] = {"width", "height"};
    for (int i = 0; i < 2; i++) {
        if (sides[i] <= 0 || sides[i] > MAX_SIDE)
            return lk_fail(LK_ERR_INVALID, "%s %d: must be between 8 and %d", names[i], sides[i],
                           MAX_SIDE);
        if (sides[i] % 8)
            return lk_fail(LK_ERR_INVALID, "%s %d is not divisible by 8", names[i], sides[i]);
        if (sides[i] % mult)
            return lk_fail(LK_ERR_INVALID, "%s %d: this model needs a multiple of %d (VAE factor "
                           "%d times UNet factor %d)", names[i], sides[i], mult, p->vae_factor,
                           p->unet_factor);
    }
    if (c) *c = lk_unet_config_of(p->unet)->in_channels;
    if (lh) *lh = height / p->vae_factor;
    if (lw) *lw = width / p->vae_factor;
    return LK_OK;
}

/* ---- LoRA and embeddings ---- */

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_add_lora(lk_sd_pipeline *p, const char *path, float multiplier) {
    if (!p || !path) return lk_fail(LK_ERR_INVALID, "sd_pipeline_add_lora: NULL argument");
    if (!isfinite(multiplier))
        return lk_fail(LK_ERR_INVALID, "%s: LoRA multiplier is not finite", path);
    lk_lora **grown = realloc(p->loras, (size_t)(p->n_loras + 1) * sizeof *grown);
    if (!grown) return lk_fail(LK_ERR_NOMEM, "out of memory");
    p->loras = grown;
    lk_lora *l = NULL;
    lk_status s = lk_lora_open(&l, path, p->model->part[LK_SD_UNET].weights,
                               p->model->part[LK_SD_TEXT_ENCODER].weights);
    if (s == LK_OK) {
        s = lk_lora_merge(l, multiplier);
        if (s != LK_OK) lk_fail_prefix(s, "%s: ", path);
    }
    if (s != LK_OK) {
        lk_lora_free(l);
        return s;
    }
    p->loras[p->n_loras++] = l;
    return LK_OK;
}

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_clear_loras(lk_sd_pipeline *p) {
    if (!p) return lk_fail(LK_ERR_INVALID, "sd_pipeline_clear_loras: NULL pipeline");
    lk_status first = LK_OK;
    for (int i = p->n_loras - 1; i >= 0; i--) {
        lk_status s = lk_lora_unmerge(p->loras[i]);
        if (s != LK_OK && first == LK_OK) first = s;
        lk_lora_free(p->loras[i]);
    }
    p->n_loras = 0;
    return first;
}

int lk_sd_pipeline_lora_count(const lk_sd_pipeline *p) { return p ? p->n_loras : 0; }

static lk_status append_text(char **acc, const char *t) {
    size_t a = *acc ? strlen(*acc) : 0, n = strlen(t);
    char *r = realloc(*acc, a + n + 3);
    if (!r) return lk_fail(LK_ERR_NOMEM, "out of memory");
    if (a) {
        memcpy(r + a, ", ", 2);
        a += 2;
    }
    memcpy(r + a, t, n + 1);
    *acc = r;
    return LK_OK;
}

/* Add one token of the file (text `text`, vectors rows) to tokenizer and table; the ids line up
 * because both grow from the same size (checked). */
static lk_status add_token_rows(lk_sd_pipeline *p, const char *text, int nv, const float *rows) {
    int64_t first = -1, row0 = -1;
    if (lk_tokenizer_vocab_size(p->model->tokenizer) != lk_clip_text_vocab_size(p->te))
        return lk_fail(LK_ERR_STATE, "tokenizer has %lld ids but the text encoder table %lld rows",
                       (long long)lk_tokenizer_vocab_size(p->model->tokenizer),
                       (long long)lk_clip_text_vocab_size(p->te));
    lk_status s = lk_tokenizer_add_token_n(p->model->tokenizer, text, nv, &first);
    if (s != LK_OK) return s;
    s = lk_clip_text_add_tokens(p->te, nv, rows, &row0);
    if (s == LK_OK && row0 != first)
        s = lk_fail(LK_ERR_STATE, "embedding '%s': token id %lld but table row %lld", text,
                    (long long)first, (long long)row0);
    return s;
}

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_add_embedding(lk_sd_pipeline *p, const char *path, const char *token,
                                       char **added) {
    if (added) *added = NULL;
    if (!p || !path) return lk_fail(LK_ERR_INVALID, "sd_pipeline_add_embedding: NULL argument");
    lk_embedding_file *e = NULL;
    const int dim = lk_clip_text_config_of(p->te)->hidden_size;
    lk_status s = lk_embedding_file_load(&e, path, token, dim);
    if (s != LK_OK) return s;
    char *names = NULL;
    for (int i = 0; i < e->n_tokens && s == LK_OK; i++) {
        const lk_embedding_file_token *t = &e->tokens[i];
        s = add_token_rows(p, t->token, t->n_vectors, t->vectors);
        if (s == LK_OK) s = append_text(&names, t->token);
        if (s == LK_OK && t->token[0] != '<') {
            size_t n = strlen(t->token);
            char *alias = malloc(n + 3);
            if (!alias) {
                s = lk_fail(LK_ERR_NOMEM, "out of memory");
                break;
            }
            alias[0] = '<';
            memcpy(alias + 1, t->token, n);
            alias[n + 1] = '>';
            alias[n + 2] = '\0';
            /* an alias that is already taken is only a convenience lost, not an error */
            if (lk_tokenizer_token_id(p->model->tokenizer, alias) < 0) {
                s = add_token_rows(p, alias, t->n_vectors, t->vectors);
                if (s == LK_OK) s = append_text(&names, alias);
            }
            free(alias);
        }
    }
    if (s != LK_OK) lk_fail_prefix(s, "%s: ", path);
    lk_embedding_file_free(e);
    if (s == LK_OK && added) *added = names;
    else free(names);
    return s;
}

/* ---- conditioning ---- */

/* Contract: see pipeline.h. */
void lk_sd_gen_params_default(lk_sd_gen_params *g) {
    memset(g, 0, sizeof *g);
    g->prompt = "";
    g->steps = LK_SD_DEFAULT_STEPS;
    g->cfg_scale = LK_SD_DEFAULT_CFG;
    g->sampler = LK_SD_DEFAULT_SAMPLER;
    g->clip_skip = 1;
    g->cfg_mode = LK_CFG_BATCHED;
    g->strength = LK_SD_DEFAULT_STRENGTH;
}

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_encode(lk_sd_pipeline *p, const char *prompt, const char *negative,
                                int clip_skip, bool emphasis, lk_prompt_cond *cond,
                                lk_prompt_cond *uncond) {
    if (cond) memset(cond, 0, sizeof *cond);
    if (uncond) memset(uncond, 0, sizeof *uncond);
    if (!p || !prompt || !cond) return lk_fail(LK_ERR_INVALID, "sd_pipeline_encode: NULL argument");
    lk_prompt_cond_opts o;
    lk_prompt_cond_opts_default(&o);
    o.prompt.pad = p->model->pad;
    o.prompt.emphasis = emphasis;
    o.clip_skip = clip_skip > 0 ? clip_skip : 1;
    fresh(p->ctx);
    lk_status s = lk_prompt_cond_encode(cond, p->ctx, p->te, p->model->tokenizer, prompt, &o);
    if (s != LK_OK) return lk_fail_prefix(s, "prompt: ");
    if (!uncond) return LK_OK;
    s = lk_prompt_cond_encode(uncond, p->ctx, p->te, p->model->tokenizer, negative ? negative : "", &o);
    if (s != LK_OK) lk_fail_prefix(s, "negative prompt: ");
    if (s == LK_OK && cond->n_chunks != uncond->n_chunks) {
        lk_prompt_cond empty;
        s = lk_prompt_cond_encode(&empty, p->ctx, p->te, p->model->tokenizer, "", &o);
        if (s == LK_OK) {
            s = lk_prompt_cond_pad(cond, uncond->n_chunks, &empty);
            if (s == LK_OK) s = lk_prompt_cond_pad(uncond, cond->n_chunks, &empty);
        }
        lk_prompt_cond_free(&empty);
    }
    fresh(p->ctx);
    if (s != LK_OK) {
        lk_prompt_cond_free(cond);
        lk_prompt_cond_free(uncond);
    }
    return s;
}

/* ---- the denoising loop ---- */

typedef struct denoise_run {
    lk_sd_pipeline *p;
    const lk_prompt_cond *cond, *uncond; /* uncond NULL: no guidance */
    float *ehs2;                         /* [uncond; cond] for the batched call, or NULL */
    float *tmp;                          /* 2n scratch: batched input / outputs */
    int c, lh, lw;
    size_t n;
    float scale;
} denoise_run;

/* UNet on (B, c, lh, lw) x with encoder states ehs (B, L, dim) at timestep t, into out. */
static lk_status unet_call(denoise_run *r, const float *x, int B, const float *ehs, int L,
                           float t, float *out) {
    lk_ctx *ctx = r->p->ctx;
    fresh(ctx);
    const int dim = r->cond->dim;
    lk_tensor *xs = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, r->c, r->lh, r->lw), (void *)x);
    lk_tensor *ts = lk_tensor_from(ctx, LK_F32, 1, (const int64_t[]){1}, &t);
    lk_tensor *es = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, L, dim), (void *)ehs);
    lk_tensor *y = lk_contiguous(ctx, lk_unet_forward(ctx, r->p->unet, xs, ts, es));
    lk_status s = lk_ctx_status(ctx);
    if (s == LK_OK && (!y || lk_numel(y) != (int64_t)B * (int64_t)r->n))
        s = lk_fail(LK_ERR_STATE, "unet: unexpected output shape");
    if (s == LK_OK) memcpy(out, y->data, (size_t)B * r->n * sizeof *out);
    fresh(ctx);
    return s;
}

/* lk_denoise_fn: classifier-free guidance around the UNet, as diffusers:
 * noise_pred = uncond + scale * (cond - uncond), uncond first in the batch. */
static lk_status denoise(void *ud, const float *x_in, float t, float *model_out) {
    denoise_run *r = ud;
    const lk_prompt_cond *c = r->cond, *u = r->uncond;
    if (!u) return unet_call(r, x_in, 1, c->hidden, c->n_tokens, t, model_out);
    lk_status s;
    if (r->ehs2) {
        memcpy(r->tmp, x_in, r->n * sizeof *r->tmp);
        memcpy(r->tmp + r->n, x_in, r->n * sizeof *r->tmp);
        s = unet_call(r, r->tmp, 2, r->ehs2, c->n_tokens, t, r->tmp);
    } else {
        s = unet_call(r, x_in, 1, u->hidden, u->n_tokens, t, r->tmp);
        if (s == LK_OK) s = unet_call(r, x_in, 1, c->hidden, c->n_tokens, t, r->tmp + r->n);
    }
    if (s == LK_OK) lk_cfg_combine(model_out, r->tmp, r->tmp + r->n, r->n, r->scale);
    return s;
}

static lk_status check_params(const lk_sd_pipeline *p, const lk_sd_gen_params *g) {
    if (g->steps < 1 || g->steps > p->sched.num_train_timesteps)
        return lk_fail(LK_ERR_INVALID, "steps %d: must be between 1 and %d", g->steps,
                       p->sched.num_train_timesteps);
    if (!isfinite(g->cfg_scale))
        return lk_fail(LK_ERR_INVALID, "CFG scale is not finite");
    if ((int)g->sampler < 0 || g->sampler >= LK_SAMPLER_KIND_COUNT)
        return lk_fail(LK_ERR_INVALID, "unknown sampler kind %d", (int)g->sampler);
    if (!(g->eta >= 0.0f) || !isfinite(g->eta))
        return lk_fail(LK_ERR_INVALID, "eta %g: must be finite and >= 0", (double)g->eta);
    if (g->eta > 0.0f && g->sampler != LK_SAMPLER_DDIM)
        return lk_fail(LK_ERR_INVALID, "eta is a DDIM setting (sampler %s)",
                       lk_sampler_name(g->sampler));
    if (g->init_image && !(g->strength > 0.0 && g->strength <= 1.0))
        return lk_fail(LK_ERR_INVALID, "strength %g: must be in (0, 1]", g->strength);
    if (g->cfg_mode != LK_CFG_BATCHED && g->cfg_mode != LK_CFG_SEPARATE)
        return lk_fail(LK_ERR_INVALID, "unknown CFG mode %d", (int)g->cfg_mode);
    return LK_OK;
}

/* The img2img start: x0 = scaling * (mean + std * randn) from the VAE encoder, noised to the
 * first timestep of the truncated schedule with the next randn draw (diffusers' prepare_latents). */
static lk_status img2img_start(lk_sd_pipeline *p, const lk_sampler *smp, const float *image,
                               int width, int height, float *x, size_t n, lk_rng *rng) {
    lk_ctx *ctx = p->ctx;
    fresh(ctx);
    lk_tensor *img = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(1, 3, height, width), (void *)image);
    lk_tensor *mean = NULL, *logvar = NULL;
    lk_status s = lk_vae_encode(ctx, p->vae, img, &mean, &logvar);
    lk_tensor *z = s == LK_OK ? lk_contiguous(ctx, lk_vae_sample(ctx, mean, logvar, rng)) : NULL;
    if (s == LK_OK) s = lk_ctx_status(ctx);
    if (s == LK_OK && (!z || (size_t)lk_numel(z) != n))
        s = lk_fail(LK_ERR_STATE, "vae: latent of an unexpected size");
    if (s == LK_OK) {
        const float sf = lk_vae_config_of(p->vae)->scaling_factor;
        const float *zd = z->data;
        for (size_t i = 0; i < n; i++) x[i] = sf * zd[i];
    }
    fresh(ctx);
    if (s != LK_OK) return s;
    float *noise = malloc(n * sizeof *noise);
    if (!noise) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_rng_randn(rng, noise, n);
    s = lk_sampler_add_noise(smp, x, x, noise, n);
    free(noise);
    return s;
}

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_sample(lk_sd_pipeline *p, const lk_sd_gen_params *g,
                                const lk_prompt_cond *cond, const lk_prompt_cond *uncond,
                                float *latent, float *init_latent) {
    if (!p || !g || !cond || !cond->hidden || !latent)
        return lk_fail(LK_ERR_INVALID, "sd_pipeline_sample: NULL argument");
    lk_status s = check_params(p, g);
    if (s != LK_OK) return s;
    int width = g->width, height = g->height;
    if (width <= 0 || height <= 0) {
        int dw, dh;
        lk_sd_pipeline_geometry(p, NULL, &dw, &dh);
        if (width <= 0) width = dw;
        if (height <= 0) height = dh;
    }
    int c, lh, lw;
    s = lk_sd_pipeline_latent_shape(p, width, height, &c, &lh, &lw);
    if (s != LK_OK) return s;
    const int dim = lk_unet_config_of(p->unet)->cross_attention_dim;
    if (cond->dim != dim || (uncond && uncond->dim != dim))
        return lk_fail(LK_ERR_INVALID, "conditioning width %d, the UNet expects %d", cond->dim, dim);

    denoise_run r = {.p = p, .cond = cond, .c = c, .lh = lh, .lw = lw,
                     .n = (size_t)c * (size_t)lh * (size_t)lw, .scale = g->cfg_scale};
    if (uncond && uncond->hidden && g->cfg_scale > 1.0f) r.uncond = uncond;
    lk_sampler *smp = NULL;
    const double strength = g->init_image ? g->strength : 1.0;
    s = lk_sampler_new(&smp, &p->sched, g->sampler, g->steps, strength);
    if (s == LK_OK && g->eta > 0.0f) s = lk_sampler_set_eta(smp, g->eta);
    if (s == LK_OK && r.uncond) {
        r.tmp = malloc(2 * r.n * sizeof *r.tmp);
        if (!r.tmp) s = lk_fail(LK_ERR_NOMEM, "out of memory");
        if (s == LK_OK && g->cfg_mode == LK_CFG_BATCHED && uncond->n_tokens == cond->n_tokens) {
            size_t half = (size_t)cond->n_tokens * (size_t)dim;
            r.ehs2 = malloc(2 * half * sizeof *r.ehs2);
            if (!r.ehs2) s = lk_fail(LK_ERR_NOMEM, "out of memory");
            else {
                memcpy(r.ehs2, uncond->hidden, half * sizeof *r.ehs2);
                memcpy(r.ehs2 + half, cond->hidden, half * sizeof *r.ehs2);
            }
        }
    }
    lk_rng rng;
    lk_rng_seed(&rng, g->seed);
    if (s == LK_OK) {
        if (!g->init_image || strength >= 1.0)
            s = lk_sampler_init_latent(smp, latent, r.n, &rng);
        else
            s = img2img_start(p, smp, g->init_image, width, height, latent, r.n, &rng);
    }
    if (s == LK_OK && init_latent) memcpy(init_latent, latent, r.n * sizeof *latent);
    if (s == LK_OK)
        s = lk_sampler_run(smp, latent, r.n, denoise, &r, &rng, g->progress, g->progress_ud,
                           g->cancel);
    lk_sampler_free(smp);
    free(r.tmp);
    free(r.ehs2);
    return s;
}

/* ---- VAE ---- */

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_encode_image(lk_sd_pipeline *p, const float *image, int width, int height,
                                      float *latent) {
    if (!p || !image || !latent) return lk_fail(LK_ERR_INVALID, "sd_pipeline_encode_image: NULL argument");
    int c, lh, lw;
    lk_status s = lk_sd_pipeline_latent_shape(p, width, height, &c, &lh, &lw);
    if (s != LK_OK) return s;
    lk_ctx *ctx = p->ctx;
    fresh(ctx);
    lk_tensor *img = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(1, 3, height, width), (void *)image);
    lk_tensor *mean = NULL, *logvar = NULL;
    s = lk_vae_encode(ctx, p->vae, img, &mean, &logvar);
    mean = s == LK_OK ? lk_contiguous(ctx, mean) : NULL;
    const size_t n = (size_t)c * (size_t)lh * (size_t)lw;
    if (s == LK_OK) s = lk_ctx_status(ctx);
    if (s == LK_OK && (!mean || (size_t)lk_numel(mean) != n))
        s = lk_fail(LK_ERR_STATE, "vae: latent of an unexpected size");
    if (s == LK_OK) {
        const float sf = lk_vae_config_of(p->vae)->scaling_factor;
        const float *m = mean->data;
        for (size_t i = 0; i < n; i++) latent[i] = sf * m[i];
    }
    fresh(ctx);
    return s;
}

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_decode(lk_sd_pipeline *p, const float *latent, int lh, int lw,
                                float *image) {
    if (!p || !latent || !image) return lk_fail(LK_ERR_INVALID, "sd_pipeline_decode: NULL argument");
    if (lh <= 0 || lw <= 0 || lh > MAX_SIDE / p->vae_factor || lw > MAX_SIDE / p->vae_factor)
        return lk_fail(LK_ERR_INVALID, "sd_pipeline_decode: latent size %dx%d", lw, lh);
    const lk_vae_config *vc = lk_vae_config_of(p->vae);
    const int c = vc->latent_channels;
    lk_ctx *ctx = p->ctx;
    fresh(ctx);
    lk_tensor *z = lk_tensor_new(ctx, LK_F32, LK_DIMS(1, c, lh, lw));
    if (z) {
        /* latents / scaling_factor in float32, as torch divides a float tensor by a scalar */
        float *zd = z->data;
        const float sf = vc->scaling_factor;
        for (size_t i = 0, n = (size_t)c * (size_t)lh * (size_t)lw; i < n; i++) zd[i] = latent[i] / sf;
    }
    lk_tensor *img = lk_contiguous(ctx, lk_vae_decode(ctx, p->vae, z));
    lk_status s = lk_ctx_status(ctx);
    const size_t n = (size_t)vc->out_channels * (size_t)(lh * p->vae_factor) * (size_t)(lw * p->vae_factor);
    if (s == LK_OK && vc->out_channels != 3)
        s = lk_fail(LK_ERR_UNSUPPORTED, "vae: %d output channels, images need 3", vc->out_channels);
    if (s == LK_OK && (!img || (size_t)lk_numel(img) != n))
        s = lk_fail(LK_ERR_STATE, "vae: image of an unexpected size");
    if (s == LK_OK) memcpy(image, img->data, n * sizeof *image);
    fresh(ctx);
    return s;
}

/* ---- all together ---- */

/* Contract: see pipeline.h. */
void lk_sd_result_free(lk_sd_result *r) {
    if (!r) return;
    free(r->image);
    free(r->init_latent);
    free(r->final_latent);
    memset(r, 0, sizeof *r);
}

/* Contract: see pipeline.h. */
lk_status lk_sd_pipeline_generate(lk_sd_pipeline *p, const lk_sd_gen_params *g, lk_sd_result *r) {
    if (!r) return lk_fail(LK_ERR_INVALID, "sd_pipeline_generate: NULL result");
    memset(r, 0, sizeof *r);
    if (!p || !g || !g->prompt) return lk_fail(LK_ERR_INVALID, "sd_pipeline_generate: NULL argument");
    lk_status s = check_params(p, g);
    if (s != LK_OK) return s;
    int width = g->width, height = g->height, dw, dh;
    lk_sd_pipeline_geometry(p, NULL, &dw, &dh);
    if (width <= 0) width = dw;
    if (height <= 0) height = dh;
    int c, lh, lw;
    s = lk_sd_pipeline_latent_shape(p, width, height, &c, &lh, &lw);
    if (s != LK_OK) return s;
    const size_t nl = (size_t)c * (size_t)lh * (size_t)lw, ni = 3 * (size_t)width * (size_t)height;
    r->width = width;
    r->height = height;
    r->latent_c = c;
    r->latent_h = lh;
    r->latent_w = lw;
    r->image = malloc(ni * sizeof *r->image);
    r->init_latent = malloc(nl * sizeof *r->init_latent);
    r->final_latent = malloc(nl * sizeof *r->final_latent);
    if (!r->image || !r->init_latent || !r->final_latent) {
        lk_sd_result_free(r);
        return lk_fail(LK_ERR_NOMEM, "out of memory for a %dx%d image", width, height);
    }
    lk_prompt_cond cond, uncond;
    const bool guided = g->cfg_scale > 1.0f;
    double t0 = now_s();
    s = lk_sd_pipeline_encode(p, g->prompt, g->negative_prompt, g->clip_skip, !g->no_emphasis,
                              &cond, guided ? &uncond : NULL);
    if (!guided) memset(&uncond, 0, sizeof uncond);
    double t1 = now_s();
    lk_sd_gen_params gg = *g;
    gg.width = width;
    gg.height = height;
    if (s == LK_OK)
        s = lk_sd_pipeline_sample(p, &gg, &cond, guided ? &uncond : NULL, r->final_latent,
                                  r->init_latent);
    double t2 = now_s();
    if (s == LK_OK && g->cancel && *g->cancel)
        s = lk_fail(LK_ERR_INTERRUPTED, "interrupted before decoding");
    if (s == LK_OK) s = lk_sd_pipeline_decode(p, r->final_latent, lh, lw, r->image);
    double t3 = now_s();
    r->cond_chunks = cond.n_chunks;
    lk_prompt_cond_free(&cond);
    lk_prompt_cond_free(&uncond);
    if (s != LK_OK) {
        lk_sd_result_free(r);
        return s;
    }
    r->t_encode = t1 - t0;
    r->t_sample = t2 - t1;
    r->t_decode = t3 - t2;
    return LK_OK;
}
