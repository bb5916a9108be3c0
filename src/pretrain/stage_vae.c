/* stage_vae.c: pretraining the autoencoder (AutoencoderKL, Kingma & Welling 2014; as in Rombach
 * et al. 2022 without the perceptual and adversarial terms): random crops of the training
 * images, reparameterized posterior sample, loss = L1 + MSE + kl_weight * KL(q(z|x) || N(0, I)),
 * all as means over elements. The export's scaling_factor is 1 / std of the latents, as LDM
 * chose 0.18215. */
#define _POSIX_C_SOURCE 200809L
#include "pretrain/pretrain_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/ops.h"
#include "likeness/vae.h"

#define KL_WEIGHT 1e-6f

typedef struct vae_stage {
    lk_vae_config cfg;
    lk_vae *vae;
    float *x;   /* batch images */
    float *eps; /* batch noise */
} vae_stage;

static lk_status vae_grad(lk__pt *p, float *loss, float *metric) {
    vae_stage *v = p->st;
    const int B = p->cfg.batch, C = p->cfg.vae_crop, f = 1 << (v->cfg.n_blocks - 1);
    const int h = C / f;
    const size_t per = (size_t)3 * C * C;
    int64_t pick[3];
    for (int b = 0; b < B; b++) {
        lk_status s = lk_rng_randint(&p->rng, 0, p->img.n, &pick[0], 1);
        if (s == LK_OK) s = lk_rng_randint(&p->rng, 0, LK_PT_IMAGE - C + 1, &pick[1], 2);
        if (s != LK_OK) return s;
        lk__pt_image_to_f32(p->img.pixels + (size_t)pick[0] * LK_PT_IMAGE * LK_PT_IMAGE * 3,
                            v->x + (size_t)b * per, 1, (int)pick[1], (int)pick[2], C);
    }
    const int lc = v->cfg.latent_channels;
    lk_rng_randn(&p->rng, v->eps, (size_t)B * lc * h * h);
    lk_ctx *ctx = p->ctx;
    lk_tensor *x = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, 3, C, C), v->x);
    lk_tensor *eps = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, lc, h, h), v->eps);
    lk_tensor *mean = NULL, *logvar = NULL;
    lk_status s = lk_vae_encode(ctx, v->vae, x, &mean, &logvar);
    if (s != LK_OK) return s;
    lk_tensor *std = lk_exp(ctx, lk_scale(ctx, logvar, 0.5f));
    lk_tensor *z = lk_add(ctx, mean, lk_mul(ctx, std, eps));
    lk_tensor *xr = lk_vae_decode(ctx, v->vae, z);
    lk_tensor *l1 = lk_l1_loss(ctx, xr, x);
    lk_tensor *l2 = lk_mse_loss(ctx, xr, x);
    /* KL per element: 0.5 * (mu^2 + var - 1 - logvar) */
    lk_tensor *kl = lk_add(ctx, lk_mul(ctx, mean, mean), lk_exp(ctx, logvar));
    kl = lk_sub(ctx, kl, logvar);
    kl = lk_scale(ctx, lk_add_scalar(ctx, lk_mean(ctx, kl), -1.0f), 0.5f);
    lk_tensor *total = lk_add(ctx, lk_add(ctx, l1, l2), lk_scale(ctx, kl, KL_WEIGHT));
    if (!total) return lk_ctx_status(ctx);
    *loss = *(const float *)total->data;
    *metric = *(const float *)l1->data * 127.5f;
    return lk_backward(ctx, total);
}

/* std of the latent means of up to 512 training images (evenly spaced), with the current
 * (EMA if kept) weights already in the parameters */
static lk_status latent_std(lk__pt *p, vae_stage *v, float *std_out) {
    const int n = p->img.n < 512 ? p->img.n : 512, B = 32;
    const size_t per = (size_t)3 * LK_PT_IMAGE * LK_PT_IMAGE;
    float *x = malloc(sizeof(float) * per * B);
    if (!x) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_ctx *ctx = p->ctx;
    lk_set_grad_enabled(ctx, false);
    double s1 = 0.0, s2 = 0.0, cnt = 0.0;
    lk_status s = LK_OK;
    for (int i0 = 0; i0 < n && s == LK_OK; i0 += B) {
        const int nb = n - i0 < B ? n - i0 : B;
        for (int b = 0; b < nb; b++) {
            const size_t item = (size_t)(i0 + b) * (size_t)p->img.n / (size_t)n;
            lk__pt_image_to_f32(p->img.pixels + item * LK_PT_IMAGE * LK_PT_IMAGE * 3,
                                x + (size_t)b * per, 1, 0, 0, 0);
        }
        lk_tensor *xt = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(nb, 3, LK_PT_IMAGE, LK_PT_IMAGE), x);
        lk_tensor *mean = NULL, *logvar = NULL;
        s = lk_vae_encode(ctx, v->vae, xt, &mean, &logvar);
        if (s == LK_OK) {
            const float *m = mean->data;
            for (int64_t k = 0; k < lk_numel(mean); k++) {
                s1 += (double)m[k];
                s2 += (double)m[k] * (double)m[k];
                cnt += 1.0;
            }
        }
        lk_ctx_reset(ctx);
    }
    lk_set_grad_enabled(ctx, true);
    free(x);
    if (s != LK_OK) return s;
    const double mu = s1 / cnt, var = s2 / cnt - mu * mu;
    *std_out = (float)sqrt(var > 1e-12 ? var : 1e-12);
    return LK_OK;
}

static lk_status vae_export(lk__pt *p, const char *dir) {
    vae_stage *v = p->st;
    const int np = lk_paramset_count(p->ps);
    float **backup = calloc((size_t)np, sizeof *backup);
    if (!backup) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = LK_OK;
    if (p->ema) { /* measure the latents of the EMA weights: swap them in, then back */
        for (int i = 0; i < np && s == LK_OK; i++) {
            lk_tensor *t = lk_paramset_get(p->ps, i);
            const size_t nb = sizeof(float) * (size_t)lk_numel(t);
            if (!(backup[i] = malloc(nb))) s = lk_fail(LK_ERR_NOMEM, "out of memory");
            else memcpy(backup[i], t->data, nb);
        }
        if (s == LK_OK) s = lk_ema_copy_to_params(p->ema);
    }
    float sd = 1.0f;
    if (s == LK_OK) s = latent_std(p, v, &sd);
    for (int i = 0; p->ema && i < np; i++) {
        lk_tensor *t = lk_paramset_get(p->ps, i);
        if (backup[i]) memcpy(t->data, backup[i], sizeof(float) * (size_t)lk_numel(t));
        free(backup[i]);
    }
    free(backup);
    lk_vae_config cfg = v->cfg;
    cfg.scaling_factor = 1.0f / sd;
    if (s == LK_OK)
        s = lk__pt_export_part(p, dir, "vae", lk__pt_vae_config_json(&cfg),
                               "diffusion_pytorch_model.safetensors", NULL);
    return s;
}

static void vae_free(lk__pt *p) {
    vae_stage *v = p->st;
    if (!v) return;
    lk_vae_free(v->vae);
    free(v->x);
    free(v->eps);
    free(v);
    p->st = NULL;
}

lk_status lk__pt_vae_setup(lk__pt *p) {
    snprintf(p->name, sizeof p->name, "vae");
    vae_stage *v = calloc(1, sizeof *v);
    if (!v) return lk_fail(LK_ERR_NOMEM, "out of memory");
    p->st = v;
    p->grad = vae_grad;
    p->export_to = vae_export;
    p->free_stage = vae_free;
    v->cfg = lk__pt_vae_config();
    const int C = p->cfg.vae_crop, f = 1 << (v->cfg.n_blocks - 1);
    if (C < f || C > LK_PT_IMAGE || C % f)
        return lk_fail(LK_ERR_INVALID, "pretrain vae: crop %d must be a multiple of %d in %d..%d",
                       C, f, f, LK_PT_IMAGE);
    snprintf(p->inputs, sizeof p->inputs, "crop=%d", C);
    lk_status s = lk__pt_init_from(p, "vae", "diffusion_pytorch_model.safetensors");
    if (s == LK_OK) s = lk_vae_init_weights(p->w, &v->cfg, "", LK_F32, p->cfg.seed);
    if (s == LK_OK) s = lk_vae_new(&v->vae, &v->cfg, p->w, "");
    for (int i = 0; s == LK_OK && i < lk_weights_count(p->w); i++) {
        lk_tensor *t = lk_weights_at(p->w, i);
        s = lk_set_requires_grad(t, true);
        if (s == LK_OK) s = lk_paramset_add(p->ps, t);
    }
    const int B = p->cfg.batch, h = C / f;
    v->x = malloc(sizeof(float) * (size_t)B * 3 * C * C);
    v->eps = malloc(sizeof(float) * (size_t)B * v->cfg.latent_channels * h * h);
    if (s == LK_OK && (!v->x || !v->eps)) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    return s;
}
