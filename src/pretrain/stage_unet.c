/* stage_unet.c: pretraining the denoiser (Ho et al. 2020; latent diffusion, Rombach et al. 2022)
 * on the frozen autoencoder's latents, conditioned on the frozen text encoder: epsilon
 * prediction on SD's scaled-linear schedule, caption dropout for classifier-free guidance (Ho &
 * Salimans 2022), min-SNR-5 loss weighting (Hang et al. 2023). Latent distributions and caption
 * embeddings of the whole split are computed once at start. */
#define _POSIX_C_SOURCE 200809L
#include "pretrain/pretrain_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/clip_text.h"
#include "likeness/ops.h"
#include "likeness/sampler.h"
#include "likeness/tokenizer.h"
#include "likeness/unet.h"
#include "likeness/vae.h"
#include "core/sha256.h"

#define N_TRAIN_T 1000
#define MIN_SNR_GAMMA 5.0f

typedef struct unet_stage {
    lk_unet_config cfg;
    lk_unet *unet;
    int nv;              /* caption variants */
    int lc, lh;          /* latent channels, side */
    float scaling;       /* the VAE's scaling factor */
    float *lat;          /* per item: mean then logvar, 2 * lc*lh*lh */
    uint16_t *emb;       /* per item and variant: 77 x D, F16 */
    uint16_t *emb_empty; /* the empty caption */
    int D;
    float ac[N_TRAIN_T];
    float *x, *noise, *eps0, *ehs, *tsteps, *sqrtw;
} unet_stage;

/* ---- one-time caches ---- */

static lk_status load_part(lk_weights *w, const char *dir, const char *part, const char *file) {
    char p[4300];
    snprintf(p, sizeof p, "%s/%s/%s", dir, part, file);
    return lk_weights_load_safetensors(w, p, NULL, "", LK_F32);
}

static lk_status cache_latents(lk__pt *p, unet_stage *u, const char *vae_dir) {
    char path[4300];
    snprintf(path, sizeof path, "%s/vae/config.json", vae_dir);
    lk_vae_config vc;
    lk_status s = lk_vae_config_load(&vc, path);
    lk_weights *w = s == LK_OK ? lk_weights_new() : NULL;
    if (s == LK_OK && !w) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) s = load_part(w, vae_dir, "vae", "diffusion_pytorch_model.safetensors");
    static const char *const vae_files[] = {"vae/config.json", "vae/diffusion_pytorch_model.safetensors"};
    if (s == LK_OK) s = lk__pt_note_inputs(p, "vae", vae_dir, vae_files, 2);
    lk_vae *vae = NULL;
    if (s == LK_OK) s = lk_vae_new(&vae, &vc, w, "");
    if (s == LK_OK && (vc.latent_channels != u->cfg.in_channels || vc.n_blocks < 1))
        s = lk_fail(LK_ERR_INVALID, "%s: %d latent channels, the UNet takes %d", path,
                    vc.latent_channels, u->cfg.in_channels);
    if (s == LK_OK) {
        u->lc = vc.latent_channels;
        u->lh = LK_PT_IMAGE >> (vc.n_blocks - 1);
        u->scaling = vc.scaling_factor;
    }
    const size_t per = (size_t)u->lc * u->lh * u->lh, ip = (size_t)3 * LK_PT_IMAGE * LK_PT_IMAGE;
    const int B = 32;
    float *x = s == LK_OK ? malloc(sizeof(float) * ip * B) : NULL;
    u->lat = s == LK_OK ? malloc(sizeof(float) * 2 * per * (size_t)p->img.n) : NULL;
    if (s == LK_OK && (!x || !u->lat)) s = lk_fail(LK_ERR_NOMEM, "out of memory for the latents");
    lk_ctx *ctx = p->ctx;
    lk_set_grad_enabled(ctx, false);
    for (int i0 = 0; s == LK_OK && i0 < p->img.n; i0 += B) {
        const int nb = p->img.n - i0 < B ? p->img.n - i0 : B;
        for (int b = 0; b < nb; b++)
            lk__pt_image_to_f32(p->img.pixels + (size_t)(i0 + b) * LK_PT_IMAGE * LK_PT_IMAGE * 3,
                                x + (size_t)b * ip, 1, 0, 0, 0);
        lk_tensor *xt = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(nb, 3, LK_PT_IMAGE, LK_PT_IMAGE), x);
        lk_tensor *mean = NULL, *logvar = NULL;
        s = lk_vae_encode(ctx, vae, xt, &mean, &logvar);
        for (int b = 0; s == LK_OK && b < nb; b++) {
            float *dst = u->lat + (size_t)(i0 + b) * 2 * per;
            memcpy(dst, (const float *)mean->data + (size_t)b * per, sizeof(float) * per);
            memcpy(dst + per, (const float *)logvar->data + (size_t)b * per, sizeof(float) * per);
        }
        lk_ctx_reset(ctx);
    }
    lk_set_grad_enabled(ctx, true);
    free(x);
    lk_vae_free(vae);
    lk_weights_free(w);
    return s;
}

/* ---- the caption cache: RUN/caption_cache.bin, valid for one text encoder, tokenizer and
 * split (a SHA-256 over them), so a resumed run skips encoding every caption again ---- */

#define CACHE_MAGIC "likeness-caption-cache-1"

static lk_status hash_file(lk_sha256 *h, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot read", path);
    char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) lk_sha256_update(h, buf, k);
    const bool bad = ferror(f);
    fclose(f);
    return bad ? lk_fail(LK_ERR_IO, "%s: read error", path) : LK_OK;
}

static lk_status cache_key(const lk__pt *p, const unet_stage *u, const char *text_dir,
                           const char *tok_dir, uint8_t key[32]) {
    lk_sha256 h;
    lk_sha256_init(&h);
    char path[4400];
    snprintf(path, sizeof path, "%s/text_encoder/model.safetensors", text_dir);
    lk_status s = hash_file(&h, path);
    snprintf(path, sizeof path, "%s/vocab.json", tok_dir);
    if (s == LK_OK) s = hash_file(&h, path);
    snprintf(path, sizeof path, "%s/merges.txt", tok_dir);
    if (s == LK_OK) s = hash_file(&h, path);
    lk_sha256_update(&h, p->img.concept, sizeof(int) * (size_t)p->img.n);
    lk_sha256_update(&h, p->img.style, sizeof(int) * (size_t)p->img.n);
    lk_sha256_update(&h, &u->nv, sizeof u->nv);
    lk_sha256_final(&h, key);
    return s;
}

/* true when RUN/caption_cache.bin holds n x per halves for key (read into emb) */
static bool cache_read(const char *run_dir, const uint8_t key[32], size_t n, size_t per,
                       uint16_t *emb) {
    char path[4300];
    snprintf(path, sizeof path, "%s/caption_cache.bin", run_dir);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[32];
    uint8_t k[32];
    uint64_t dims[2];
    bool ok = fread(magic, 1, 32, f) == 32 && !memcmp(magic, CACHE_MAGIC, sizeof CACHE_MAGIC) &&
              fread(k, 1, 32, f) == 32 && !memcmp(k, key, 32) && fread(dims, 8, 2, f) == 2 &&
              dims[0] == n && dims[1] == per && fread(emb, sizeof(uint16_t) * per, n, f) == n;
    fclose(f);
    return ok;
}

static lk_status cache_write(const char *run_dir, const uint8_t key[32], size_t n, size_t per,
                             const uint16_t *emb) {
    char path[4300], tmp[4400];
    snprintf(path, sizeof path, "%s/caption_cache.bin", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot write", tmp);
    char magic[32] = {0};
    memcpy(magic, CACHE_MAGIC, sizeof CACHE_MAGIC);
    const uint64_t dims[2] = {n, per};
    bool ok = fwrite(magic, 1, 32, f) == 32 && fwrite(key, 1, 32, f) == 32 &&
              fwrite(dims, 8, 2, f) == 2 && fwrite(emb, sizeof(uint16_t) * per, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return lk_fail(LK_ERR_IO, "%s: cannot write", path);
    }
    return LK_OK;
}

static lk_status cache_text(lk__pt *p, unet_stage *u, const char *text_dir, const char *tok_dir) {
    char path[4300];
    snprintf(path, sizeof path, "%s/text_encoder/config.json", text_dir);
    lk_clip_text_config tc;
    lk_status s = lk_clip_text_config_load(&tc, path);
    lk_tokenizer *tok = NULL;
    if (s == LK_OK) s = lk_tokenizer_load(&tok, tok_dir);
    lk_weights *w = s == LK_OK ? lk_weights_new() : NULL;
    if (s == LK_OK && !w) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) s = load_part(w, text_dir, "text_encoder", "model.safetensors");
    lk_clip_text *te = NULL;
    if (s == LK_OK) s = lk_clip_text_new(&te, &tc, w, "");
    if (s == LK_OK && tc.hidden_size != u->cfg.cross_attention_dim)
        s = lk_fail(LK_ERR_INVALID, "%s: hidden size %d, the UNet cross-attends to %d", path,
                    tc.hidden_size, u->cfg.cross_attention_dim);
    const int D = tc.hidden_size, L = LK_CLIP_CONTEXT, B = 32;
    const size_t per = (size_t)L * D;
    const size_t n = (size_t)p->img.n * (size_t)u->nv + 1; /* + the empty caption, last */
    u->D = D;
    u->emb = s == LK_OK ? malloc(sizeof(uint16_t) * per * n) : NULL;
    int64_t *ids = s == LK_OK ? malloc(sizeof(int64_t) * (size_t)L * B) : NULL;
    if (s == LK_OK && (!u->emb || !ids)) s = lk_fail(LK_ERR_NOMEM, "out of memory for the captions");
    uint8_t key[32];
    if (s == LK_OK) s = cache_key(p, u, text_dir, tok_dir, key);
    /* the key covers the text encoder, the tokenizer and the captions */
    if (s == LK_OK) lk__pt_note_digest(p, "text+tokenizer", key);
    const bool cached = s == LK_OK && cache_read(p->cfg.run_dir, key, n, per, u->emb);
    lk_ctx *ctx = p->ctx;
    lk_set_grad_enabled(ctx, false);
    for (size_t k0 = 0; s == LK_OK && !cached && k0 < n; k0 += B) {
        const int nb = n - k0 < (size_t)B ? (int)(n - k0) : B;
        for (int b = 0; s == LK_OK && b < nb; b++) {
            const size_t k = k0 + (size_t)b;
            char cap[512] = "";
            if (k + 1 < n) {
                const int item = (int)(k / (size_t)u->nv), v = (int)(k % (size_t)u->nv);
                lk_emoji_caption(p->set, p->img.concept[item], p->img.style[item], v, cap, sizeof cap);
            }
            s = lk_tokenizer_encode(tok, cap, ids + (size_t)b * L, L, LK_PAD_EOS, NULL);
        }
        lk_tensor *it = s == LK_OK ? lk_tensor_wrap(ctx, LK_I64, LK_DIMS(nb, L), ids) : NULL;
        lk_tensor *h = it ? lk_clip_text_forward(ctx, te, it, 1, true) : NULL;
        if (s == LK_OK && !h) s = lk_ctx_status(ctx);
        if (s == LK_OK) lk_f32_to_f16_n(u->emb + k0 * per, h->data, per * (size_t)nb);
        lk_ctx_reset(ctx);
    }
    lk_set_grad_enabled(ctx, true);
    if (s == LK_OK && !cached) s = cache_write(p->cfg.run_dir, key, n, per, u->emb);
    if (s == LK_OK) u->emb_empty = u->emb + (n - 1) * per;
    free(ids);
    lk_clip_text_free(te);
    lk_weights_free(w);
    lk_tokenizer_free(tok);
    return s;
}

/* ---- one update ---- */

static lk_status unet_grad(lk__pt *p, float *loss, float *metric) {
    unet_stage *u = p->st;
    const int B = p->cfg.batch, L = LK_CLIP_CONTEXT;
    const size_t per = (size_t)u->lc * u->lh * u->lh, eper = (size_t)L * u->D;
    lk_rng_randn(&p->rng, u->eps0, per * (size_t)B);
    lk_rng_randn(&p->rng, u->noise, per * (size_t)B);
    float drop[1024];
    for (int b = 0; b < B; b++) {
        int64_t pick[3];
        lk_status s = lk_rng_randint(&p->rng, 0, p->img.n, &pick[0], 1);
        if (s == LK_OK) s = lk_rng_randint(&p->rng, 0, u->nv, &pick[1], 1);
        if (s == LK_OK) s = lk_rng_randint(&p->rng, 0, N_TRAIN_T, &pick[2], 1);
        if (s != LK_OK) return s;
        lk_rng_rand(&p->rng, drop, 1);
        const float *lat = u->lat + (size_t)pick[0] * 2 * per;
        const float a = u->ac[pick[2]], sa = sqrtf(a), sb = sqrtf(1.0f - a);
        float *x = u->x + (size_t)b * per;
        const float *e0 = u->eps0 + (size_t)b * per, *nz = u->noise + (size_t)b * per;
        for (size_t k = 0; k < per; k++) {
            const float z0 = (lat[k] + expf(0.5f * lat[per + k]) * e0[k]) * u->scaling;
            x[k] = sa * z0 + sb * nz[k];
        }
        const uint16_t *e = drop[0] < p->cfg.cfg_dropout
                                ? u->emb_empty
                                : u->emb + ((size_t)pick[0] * (size_t)u->nv + (size_t)pick[1]) * eper;
        lk_f16_to_f32_n(u->ehs + (size_t)b * eper, e, eper);
        u->tsteps[b] = (float)pick[2];
        const float snr = a / (1.0f - a);
        u->sqrtw[b] = sqrtf((snr < MIN_SNR_GAMMA ? snr : MIN_SNR_GAMMA) / snr);
    }
    lk_ctx *ctx = p->ctx;
    lk_tensor *x = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, u->lc, u->lh, u->lh), u->x);
    lk_tensor *nz = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, u->lc, u->lh, u->lh), u->noise);
    lk_tensor *t = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B), u->tsteps);
    lk_tensor *ehs = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, L, u->D), u->ehs);
    lk_tensor *w = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, 1, 1, 1), u->sqrtw);
    lk_tensor *pred = lk_unet_forward(ctx, u->unet, x, t, ehs);
    lk_tensor *d = lk_mul(ctx, lk_sub(ctx, pred, nz), w);
    lk_tensor *l = lk_mean(ctx, lk_mul(ctx, d, d));
    if (!l) return lk_ctx_status(ctx);
    *loss = *(const float *)l->data;
    double se = 0.0;
    const float *pd = pred->data;
    for (size_t k = 0; k < per * (size_t)B; k++) {
        const double e = (double)pd[k] - (double)u->noise[k];
        se += e * e;
    }
    *metric = (float)(se / (double)(per * (size_t)B));
    return lk_backward(ctx, l);
}

static lk_status unet_export(lk__pt *p, const char *dir) {
    const unet_stage *u = p->st;
    return lk__pt_export_part(p, dir, "unet", lk__pt_unet_config_json(&u->cfg),
                              "diffusion_pytorch_model.safetensors", NULL);
}

static void unet_free(lk__pt *p) {
    unet_stage *u = p->st;
    if (!u) return;
    lk_unet_free(u->unet);
    free(u->lat);
    free(u->emb);
    free(u->x);
    free(u->noise);
    free(u->eps0);
    free(u->ehs);
    free(u->tsteps);
    free(u->sqrtw);
    free(u);
    p->st = NULL;
}

lk_status lk__pt_unet_setup(lk__pt *p) {
    snprintf(p->name, sizeof p->name, "unet");
    const lk_pretrain_config *c = &p->cfg;
    if (!c->text_dir || !c->vae_dir)
        return lk_fail(LK_ERR_INVALID, "pretrain unet: --text DIR and --vae DIR (the exports of "
                       "the text and vae runs) are required");
    if (c->batch > 1024) return lk_fail(LK_ERR_INVALID, "pretrain unet: batch above 1024");
    unet_stage *u = calloc(1, sizeof *u);
    if (!u) return lk_fail(LK_ERR_NOMEM, "out of memory");
    p->st = u;
    p->grad = unet_grad;
    p->export_to = unet_export;
    p->free_stage = unet_free;
    u->nv = lk_emoji_caption_variants();
    char tok[4300];
    if (c->tokenizer_dir) snprintf(tok, sizeof tok, "%s", c->tokenizer_dir);
    else snprintf(tok, sizeof tok, "%s/tokenizer", c->text_dir);
    char path[4300];
    snprintf(path, sizeof path, "%s/text_encoder/config.json", c->text_dir);
    lk_clip_text_config tc;
    lk_status s = lk_clip_text_config_load(&tc, path);
    if (s == LK_OK) {
        u->cfg = lk__pt_unet_config(tc.hidden_size);
        s = cache_latents(p, u, c->vae_dir);
    }
    if (s == LK_OK) s = cache_text(p, u, c->text_dir, tok);
    lk_schedule_config sc;
    lk_schedule_config_default(&sc);
    if (s == LK_OK) s = lk_schedule_alphas_cumprod(&sc, u->ac, N_TRAIN_T);
    if (s == LK_OK) s = lk__pt_init_from(p, "unet", "diffusion_pytorch_model.safetensors");
    if (s == LK_OK) s = lk_unet_init_weights(p->w, &u->cfg, "", LK_F32, c->seed);
    if (s == LK_OK) s = lk_unet_new(&u->unet, &u->cfg, p->w, "");
    for (int i = 0; s == LK_OK && i < lk_weights_count(p->w); i++) {
        lk_tensor *t = lk_weights_at(p->w, i);
        s = lk_set_requires_grad(t, true);
        if (s == LK_OK) s = lk_paramset_add(p->ps, t);
    }
    const size_t B = (size_t)c->batch, per = (size_t)u->lc * u->lh * u->lh;
    u->x = malloc(sizeof(float) * per * B);
    u->noise = malloc(sizeof(float) * per * B);
    u->eps0 = malloc(sizeof(float) * per * B);
    u->ehs = malloc(sizeof(float) * B * LK_CLIP_CONTEXT * (size_t)(u->D ? u->D : 1));
    u->tsteps = malloc(sizeof(float) * B);
    u->sqrtw = malloc(sizeof(float) * B);
    if (s == LK_OK && (!u->x || !u->noise || !u->eps0 || !u->ehs || !u->tsteps || !u->sqrtw))
        s = lk_fail(LK_ERR_NOMEM, "out of memory");
    return s;
}
