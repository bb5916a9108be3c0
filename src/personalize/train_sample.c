/* train_sample.c: validation images during training (as diffusers' log_validation): text-to-
 * image with the networks being trained, classifier-free guidance (Ho & Salimans 2022) and
 * DPM-Solver++ 2M, without gradient. */
#include "personalize/train_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct sample_run {
    lk_trainer *tr;
    const float *ehs;  /* (nb, L, D): uncond then cond when guided */
    int nb, L, D;
    int c, h, w;
    float scale;
    float *tmp;        /* (nb, c, h, w) */
} sample_run;

static lk_status denoise(void *ud, const float *x_in, float t, float *out) {
    sample_run *r = ud;
    lk_ctx *ctx = r->tr->ctx;
    const size_t n = (size_t)r->c * (size_t)r->h * (size_t)r->w;
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, false);
    lk_tensor *x = lk_tensor_new(ctx, LK_F32, LK_DIMS(r->nb, r->c, r->h, r->w));
    lk_tensor *ts = lk_tensor_full(ctx, t, LK_DIMS(1));
    lk_tensor *e = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(r->nb, r->L, r->D), (void *)r->ehs);
    if (x)
        for (int b = 0; b < r->nb; b++) memcpy((float *)x->data + (size_t)b * n, x_in, n * sizeof(float));
    lk_tensor *y = lk_contiguous(ctx, lk_unet_forward(ctx, r->tr->unet, x, ts, e));
    lk_status s = lk_ctx_status(ctx);
    if (s == LK_OK && (!y || (size_t)lk_numel(y) != (size_t)r->nb * n))
        s = lk_fail(LK_ERR_STATE, "sample: unexpected UNet output");
    if (s == LK_OK) {
        const float *yd = y->data;
        if (r->nb == 2) lk_cfg_combine(out, yd, yd + n, n, r->scale);
        else memcpy(out, yd, n * sizeof(float));
    }
    lk_ctx_reset(ctx);
    return s;
}

/* Contract: see train.h. */
lk_status lk_trainer_sample(lk_trainer *tr, const char *prompt, const char *negative, uint64_t seed,
                            int steps, float cfg_scale, int width, int height, float *image) {
    if (!tr || !prompt || !image) return lk_fail(LK_ERR_INVALID, "trainer_sample: NULL argument");
    const int mult = tr->vae_factor * tr->unet_factor;
    if (width < mult || height < mult || width % mult || height % mult || width > 4096 || height > 4096)
        return lk_fail(LK_ERR_INVALID, "sample: %dx%d must be positive multiples of %d (at most 4096)",
                       width, height, mult);
    if (steps < 1 || steps > tr->n_train)
        return lk_fail(LK_ERR_INVALID, "sample: steps %d outside [1, %d]", steps, tr->n_train);
    const bool guided = cfg_scale > 1.0f;
    const int nb = guided ? 2 : 1, L = tr->n_ctx;
    int64_t *ids = calloc((size_t)nb * (size_t)L, sizeof *ids);
    if (!ids) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_tokenizer *tok = tr->model->tokenizer;
    lk_status s = LK_OK;
    if (guided) s = lk_tokenizer_encode(tok, negative ? negative : "", ids, L, tr->model->pad, NULL);
    if (s == LK_OK)
        s = lk_tokenizer_encode(tok, prompt, ids + (size_t)(nb - 1) * (size_t)L, L, tr->model->pad, NULL);
    lk_ctx *ctx = tr->ctx;
    const bool was = lk_grad_enabled(ctx);
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, false);
    float *ehs = NULL;
    int D = 0;
    if (s == LK_OK) {
        lk_tensor *idt = lk_tensor_wrap(ctx, LK_I64, LK_DIMS(nb, L), ids);
        lk_tensor *e = lk_contiguous(ctx, lk_clip_text_forward(ctx, tr->te, idt, 1, true));
        s = lk_ctx_status(ctx);
        if (s == LK_OK) {
            D = (int)e->shape[2];
            ehs = malloc(sizeof(float) * (size_t)lk_numel(e));
            if (!ehs) s = lk_fail(LK_ERR_NOMEM, "out of memory");
            else memcpy(ehs, e->data, sizeof(float) * (size_t)lk_numel(e));
        }
    }
    lk_ctx_reset(ctx);
    free(ids);
    const int h = height / tr->vae_factor, w = width / tr->vae_factor;
    const size_t n = (size_t)tr->lc * (size_t)h * (size_t)w;
    float *x = malloc(n * sizeof(float));
    lk_sampler *smp = NULL;
    if (s == LK_OK && !x) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) s = lk_sampler_new(&smp, &tr->sched, LK_SAMPLER_DPMPP_2M, steps, 1.0);
    lk_rng rng;
    lk_rng_seed(&rng, seed);
    if (s == LK_OK) s = lk_sampler_init_latent(smp, x, n, &rng);
    sample_run r = {tr, ehs, nb, L, D, tr->lc, h, w, cfg_scale, NULL};
    if (s == LK_OK) s = lk_sampler_run(smp, x, n, denoise, &r, &rng, NULL, NULL, NULL);
    lk_sampler_free(smp);
    free(ehs);
    if (s == LK_OK) {
        lk_set_grad_enabled(ctx, false);
        lk_tensor *z = lk_tensor_new(ctx, LK_F32, LK_DIMS(1, tr->lc, h, w));
        if (z)
            for (size_t i = 0; i < n; i++) ((float *)z->data)[i] = x[i] / tr->scaling;
        lk_tensor *img = lk_contiguous(ctx, lk_vae_decode(ctx, tr->vae, z));
        s = lk_ctx_status(ctx);
        if (s == LK_OK && (!img || lk_numel(img) != (int64_t)3 * width * height))
            s = lk_fail(LK_ERR_UNSUPPORTED, "sample: the VAE does not decode to RGB");
        if (s == LK_OK) memcpy(image, img->data, sizeof(float) * (size_t)3 * (size_t)width * (size_t)height);
    }
    free(x);
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, was);
    return s;
}
