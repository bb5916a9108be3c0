/* evaluator.c: EmojiBench's evaluator over a CLIP-style model: unit image and text embeddings,
 * cosine similarity and retrieval rank. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/evaluator.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/clip_model.h"
#include "likeness/tokenizer.h"

#define EVAL_BATCH 32

struct lk_evaluator {
    lk_clip_model_config cfg;
    lk_weights *w;
    lk_clip_model *model;
    lk_tokenizer *tok;
    lk_ctx *ctx;
};

void lk_evaluator_free(lk_evaluator *e) {
    if (!e) return;
    lk_clip_model_free(e->model);
    lk_weights_free(e->w);
    lk_tokenizer_free(e->tok);
    lk_ctx_free(e->ctx);
    free(e);
}

lk_status lk_evaluator_load(lk_evaluator **out, const char *dir) {
    if (!out || !dir) return lk_fail(LK_ERR_INVALID, "evaluator_load: NULL argument");
    *out = NULL;
    lk_evaluator *e = calloc(1, sizeof *e);
    if (!e) return lk_fail(LK_ERR_NOMEM, "out of memory");
    char p[4300];
    snprintf(p, sizeof p, "%s/clip/config.json", dir);
    lk_status s = lk_clip_model_config_load(&e->cfg, p);
    if (s == LK_OK && !(e->w = lk_weights_new())) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    snprintf(p, sizeof p, "%s/clip/model.safetensors", dir);
    if (s == LK_OK) s = lk_weights_load_safetensors(e->w, p, NULL, "", LK_F32);
    if (s == LK_OK) s = lk_clip_model_new(&e->model, &e->cfg, e->w, "");
    snprintf(p, sizeof p, "%s/tokenizer", dir);
    if (s == LK_OK) s = lk_tokenizer_load(&e->tok, p);
    if (s == LK_OK && !(e->ctx = lk_ctx_new())) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) lk_set_grad_enabled(e->ctx, false);
    if (s != LK_OK) {
        lk_evaluator_free(e);
        return s;
    }
    *out = e;
    return LK_OK;
}

int lk_evaluator_dim(const lk_evaluator *e) { return e ? e->cfg.embed_dim : 0; }

static void unit_rows(float *x, int n, int E) {
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int k = 0; k < E; k++) s += (double)x[(size_t)i * E + k] * (double)x[(size_t)i * E + k];
        const float inv = s > 0.0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (int k = 0; k < E; k++) x[(size_t)i * E + k] *= inv;
    }
}

/* planar [-1,1] images of the model's size, n <= EVAL_BATCH */
static lk_status embed_batch(lk_evaluator *e, const float *x, int n, float *out) {
    const int S = e->cfg.image_size, E = e->cfg.embed_dim;
    lk_tensor *t = lk_tensor_wrap(e->ctx, LK_F32, LK_DIMS(n, 3, S, S), (void *)x);
    lk_tensor *y = t ? lk_clip_model_encode_image(e->ctx, e->model, t) : NULL;
    lk_status s = y ? LK_OK : lk_ctx_status(e->ctx);
    if (s == LK_OK) {
        memcpy(out, y->data, sizeof(float) * (size_t)n * E);
        unit_rows(out, n, E);
    }
    lk_ctx_reset(e->ctx);
    return s;
}

/* box-average side -> S; src(c, y, x) reads the source */
typedef float (*pix_fn)(const void *src, int i, int c, int y, int x, int side);

static float pix_rgb(const void *src, int i, int c, int y, int x, int side) {
    const uint8_t *p = src;
    return (float)p[(((size_t)i * side + y) * side + x) * 3 + c] / 127.5f - 1.0f;
}

static float pix_chw(const void *src, int i, int c, int y, int x, int side) {
    const float v = ((const float *)src)[(((size_t)i * 3 + c) * side + y) * side + x];
    return v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
}

static lk_status embed_any(lk_evaluator *e, const void *src, pix_fn fn, int n, int side, float *out) {
    if (!e || !src || !out || n < 0) return lk_fail(LK_ERR_INVALID, "evaluator: NULL argument");
    const int S = e->cfg.image_size, E = e->cfg.embed_dim;
    if (side < S || side % S)
        return lk_fail(LK_ERR_INVALID, "evaluator: image side %d is not a multiple of %d", side, S);
    const int f = side / S;
    float *x = malloc(sizeof(float) * EVAL_BATCH * 3 * (size_t)S * S);
    if (!x) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = LK_OK;
    for (int i0 = 0; i0 < n && s == LK_OK; i0 += EVAL_BATCH) {
        const int nb = n - i0 < EVAL_BATCH ? n - i0 : EVAL_BATCH;
        for (int b = 0; b < nb; b++)
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < S; y++)
                    for (int xx = 0; xx < S; xx++) {
                        float acc = 0.0f;
                        for (int dy = 0; dy < f; dy++)
                            for (int dx = 0; dx < f; dx++)
                                acc += fn(src, i0 + b, c, y * f + dy, xx * f + dx, side);
                        x[(((size_t)b * 3 + c) * S + y) * S + xx] = acc / (float)(f * f);
                    }
        s = embed_batch(e, x, nb, out + (size_t)i0 * E);
    }
    free(x);
    return s;
}

lk_status lk_evaluator_embed_images(lk_evaluator *e, const uint8_t *rgb, int n, int side,
                                    float *out) {
    return embed_any(e, rgb, pix_rgb, n, side, out);
}

lk_status lk_evaluator_embed_chw(lk_evaluator *e, const float *chw, int n, int side, float *out) {
    return embed_any(e, chw, pix_chw, n, side, out);
}

lk_status lk_evaluator_embed_texts(lk_evaluator *e, const char *const *texts, int n, float *out) {
    if (!e || !texts || !out || n < 0) return lk_fail(LK_ERR_INVALID, "evaluator: NULL argument");
    const int E = e->cfg.embed_dim, L = LK_CLIP_CONTEXT;
    int64_t *ids = malloc(sizeof(int64_t) * EVAL_BATCH * L), *idn = malloc(sizeof(int64_t) * EVAL_BATCH * L);
    int eos[EVAL_BATCH];
    lk_status s = ids && idn ? LK_OK : lk_fail(LK_ERR_NOMEM, "out of memory");
    for (int i0 = 0; i0 < n && s == LK_OK; i0 += EVAL_BATCH) {
        const int nb = n - i0 < EVAL_BATCH ? n - i0 : EVAL_BATCH;
        int N = 1;
        for (int b = 0; b < nb && s == LK_OK; b++) {
            int nc = 0;
            s = lk_tokenizer_encode(e->tok, texts[i0 + b] ? texts[i0 + b] : "", ids + (size_t)b * L,
                                    L, LK_PAD_EOS, &nc);
            eos[b] = (nc < LK_CLIP_CHUNK ? nc : LK_CLIP_CHUNK) + 1;
            if (eos[b] + 1 > N) N = eos[b] + 1;
        }
        if (s != LK_OK) break;
        for (int b = 0; b < nb; b++) memcpy(idn + (size_t)b * N, ids + (size_t)b * L, sizeof(int64_t) * (size_t)N);
        lk_tensor *t = lk_tensor_wrap(e->ctx, LK_I64, LK_DIMS(nb, N), idn);
        lk_tensor *y = t ? lk_clip_model_encode_text(e->ctx, e->model, t, eos) : NULL;
        s = y ? LK_OK : lk_ctx_status(e->ctx);
        if (s == LK_OK) {
            memcpy(out + (size_t)i0 * E, y->data, sizeof(float) * (size_t)nb * E);
            unit_rows(out + (size_t)i0 * E, nb, E);
        }
        lk_ctx_reset(e->ctx);
    }
    free(ids);
    free(idn);
    return s;
}

float lk_eval_cosine(const float *a, const float *b, int E) {
    double s = 0.0;
    for (int k = 0; k < E; k++) s += (double)a[k] * (double)b[k];
    return (float)s;
}

int lk_eval_rank(const float *q, const float *keys, int n, int E, int correct) {
    if (!q || !keys || correct < 0 || correct >= n) return -1;
    const float c = lk_eval_cosine(q, keys + (size_t)correct * E, E);
    int r = 0;
    for (int i = 0; i < n; i++)
        if (i != correct && lk_eval_cosine(q, keys + (size_t)i * E, E) >= c) r++;
    return r;
}
