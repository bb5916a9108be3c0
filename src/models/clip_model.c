/* clip_model.c: a CLIP-style text + image model (Radford et al. 2021, "Learning Transferable
 * Visual Models From Natural Language Supervision"): the CLIP text transformer with an
 * EOS-pooled projection, a small ResNet image tower with a pooled projection, and the symmetric
 * InfoNCE loss with a learned temperature. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/clip_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/clip_text.h"
#include "models/layers.h"
#include "models/unet_blocks.h"

#define VISION_EPS 1e-5f

struct lk_clip_model {
    lk__net net;
    lk_clip_model_config cfg;
    lk_clip_text *text;
    lk__lin conv_in;
    lk__resnet res[LK_CLIP_VISION_MAX_STAGES];
    lk__lin down[LK_CLIP_VISION_MAX_STAGES];
    lk__norm norm_out;
    lk_tensor *text_proj, *visual_proj, *logit_scale;
};

void lk_clip_model_free(lk_clip_model *m) {
    if (!m) return;
    lk_clip_text_free(m->text);
    lk__net_release(&m->net);
    free(m);
}

const lk_clip_model_config *lk_clip_model_config_of(const lk_clip_model *m) {
    return m ? &m->cfg : NULL;
}

lk_clip_text *lk_clip_model_text(const lk_clip_model *m) { return m ? m->text : NULL; }

lk_tensor *lk_clip_model_logit_scale_param(const lk_clip_model *m) {
    return m ? m->logit_scale : NULL;
}

float lk_clip_model_logit_scale(const lk_clip_model *m) {
    if (!m || !m->logit_scale) return 1.0f;
    const float s = expf(lk_get_f32(m->logit_scale, 0));
    return s > 100.0f ? 100.0f : s;
}

static lk_status check_config(const lk_clip_model_config *c) {
    if (c->n_stages < 1 || c->n_stages > LK_CLIP_VISION_MAX_STAGES || c->norm_groups < 1 ||
        c->embed_dim < 1 || c->image_size < 1 || c->image_size % (1 << (c->n_stages - 1)))
        return lk_fail(LK_ERR_INVALID, "clip_model: inconsistent configuration (%d stages, image "
                       "size %d, %d groups, embedding %d)", c->n_stages, c->image_size,
                       c->norm_groups, c->embed_dim);
    for (int i = 0; i < c->n_stages; i++)
        if (c->channels[i] < 1 || c->channels[i] % c->norm_groups)
            return lk_fail(LK_ERR_INVALID, "clip_model: stage %d has %d channels, not a multiple "
                           "of %d groups", i, c->channels[i], c->norm_groups);
    return LK_OK;
}

lk_status lk_clip_model_new(lk_clip_model **out, const lk_clip_model_config *cfg,
                            const lk_weights *w, const char *prefix) {
    if (!out) return lk_fail(LK_ERR_INVALID, "clip_model_new: NULL out");
    *out = NULL;
    if (!cfg || !w) return lk_fail(LK_ERR_INVALID, "clip_model_new: NULL config or weights");
    lk_status s = check_config(cfg);
    if (s != LK_OK) return s;
    lk_clip_model *m = calloc(1, sizeof *m);
    if (!m) return lk_fail(LK_ERR_NOMEM, "clip_model: out of memory");
    m->cfg = *cfg;
    s = lk_clip_text_new(&m->text, &cfg->text, w, prefix);
    if (s != LK_OK) {
        free(m);
        return s;
    }
    lk__net *n = &m->net;
    lk__net_init(n, "clip_model", w, prefix);
    const int G = cfg->norm_groups;
    lk__lin_conv(n, &m->conv_in, "vision_model.conv_in", cfg->channels[0], 3, 3);
    char base[LK__NAME_MAX];
    int prev = cfg->channels[0];
    for (int i = 0; i < cfg->n_stages && n->st == LK_OK; i++) {
        const int c = cfg->channels[i];
        snprintf(base, sizeof base, "vision_model.stages.%d.resnet", i);
        lk__resnet_init(n, &m->res[i], base, prev, c, 0, G, VISION_EPS);
        if (i + 1 < cfg->n_stages) {
            snprintf(base, sizeof base, "vision_model.stages.%d.downsample", i);
            lk__lin_conv(n, &m->down[i], base, c, c, 3);
        }
        prev = c;
    }
    lk__norm_init(n, &m->norm_out, "vision_model.norm_out", prev);
    const int64_t E = cfg->embed_dim;
    m->text_proj = lk__net_param(n, "text_projection.weight", LK_DIMS(E, cfg->text.hidden_size));
    m->visual_proj = lk__net_param(n, "visual_projection.weight", LK_DIMS(E, prev));
    m->logit_scale = lk__net_param(n, "logit_scale", LK_DIMS(1));
    s = n->st;
    n->w = NULL;
    n->prefix = NULL;
    if (s != LK_OK) {
        lk_clip_model_free(m);
        return s;
    }
    *out = m;
    return LK_OK;
}

lk_status lk_clip_model_init_weights(lk_weights *w, const lk_clip_model_config *cfg,
                                     const char *prefix, lk_dtype store, uint64_t seed) {
    if (!w || !cfg) return lk_fail(LK_ERR_INVALID, "clip_model_init_weights: NULL argument");
    if (store != LK_F32 && store != LK_F16 && store != LK_BF16)
        return lk_fail(LK_ERR_INVALID, "clip_model_init_weights: storage must be F32, F16 or BF16");
    char key[LK__NAME_MAX + 64];
    snprintf(key, sizeof key, "%slogit_scale", prefix ? prefix : "");
    const bool had_scale = lk_weights_get(w, key) != NULL;
    lk_rng rng;
    lk_rng_seed(&rng, seed);
    lk__init_req req = {w, store, &rng};
    lk__net_set_init_request(&req);
    lk_clip_model *m = NULL;
    lk_status s = lk_clip_model_new(&m, cfg, w, prefix);
    lk__net_set_init_request(NULL);
    lk_clip_model_free(m);
    if (s == LK_OK && !had_scale) {
        lk_tensor *t = lk_weights_get(w, key);
        const float v = logf(1.0f / 0.07f);
        if (t && t->dtype == LK_F32) *(float *)t->data = v;
        else if (t && t->dtype == LK_F16) lk_f32_to_f16_n(t->data, &v, 1);
        else if (t) lk_f32_to_bf16_n(t->data, &v, 1);
    }
    return s;
}

lk_tensor *lk_clip_model_encode_text(lk_ctx *ctx, const lk_clip_model *m, lk_tensor *ids,
                                     const int *eos_pos) {
    if (!m || !ids || !eos_pos || ids->ndim != 2)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "clip_model_encode_text: bad arguments");
    const int64_t B = ids->shape[0], N = ids->shape[1];
    for (int64_t b = 0; b < B; b++)
        if (eos_pos[b] < 0 || eos_pos[b] >= N)
            return lk_ctx_fail(ctx, LK_ERR_INVALID, "clip_model_encode_text: row %lld: EOS "
                               "position %d outside 0..%lld", (long long)b, eos_pos[b],
                               (long long)N - 1);
    lk_tensor *h = lk_clip_text_forward(ctx, m->text, ids, 1, true);
    if (!h) return NULL;
    lk_tensor **rows = malloc(sizeof *rows * (size_t)B);
    if (!rows) return lk_ctx_fail(ctx, LK_ERR_NOMEM, "out of memory");
    for (int64_t b = 0; b < B; b++) {
        lk_tensor *r = lk_narrow(ctx, h, 0, b, 1);
        r = lk_narrow(ctx, r, 1, eos_pos[b], 1);
        rows[b] = lk_reshape(ctx, r, LK_DIMS(1, h->shape[2]));
    }
    lk_tensor *pooled = lk_concat(ctx, rows, (int)B, 0);
    free(rows);
    return lk_linear(ctx, pooled, m->text_proj, NULL);
}

lk_tensor *lk_clip_model_encode_image(lk_ctx *ctx, const lk_clip_model *m, lk_tensor *images) {
    if (!m || !images)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "clip_model_encode_image: NULL argument");
    const int S = m->cfg.image_size;
    if (images->ndim != 4 || images->shape[1] != 3 || images->shape[2] != S || images->shape[3] != S) {
        char sh[160];
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "clip_model_encode_image: images %s, expected "
                           "[B,3,%d,%d]", lk_shape_str(images, sh, sizeof sh), S, S);
    }
    const lk__net *n = &m->net;
    lk_tensor *h = lk__conv(ctx, n, &m->conv_in, images, 1, 1);
    for (int i = 0; i < m->cfg.n_stages && h; i++) {
        h = lk__resnet_forward(ctx, &m->res[i], h, NULL);
        if (h && i + 1 < m->cfg.n_stages) h = lk__conv(ctx, n, &m->down[i], h, 2, 1);
    }
    if (!h) return NULL;
    h = lk_groupnorm_silu(ctx, h, m->norm_out.w, m->norm_out.b, m->cfg.norm_groups, VISION_EPS);
    if (!h) return NULL;
    const int64_t B = h->shape[0], C = h->shape[1];
    h = lk_reshape(ctx, h, LK_DIMS(B, C, h->shape[2] * h->shape[3]));
    h = lk_mean_dim(ctx, h, 2, false);
    return lk_linear(ctx, h, m->visual_proj, NULL);
}

/* ---- contrastive loss ---- */

/* rows of x (B, E) scaled to unit length into u; norms into nr */
static void normalize_rows(const float *x, float *u, float *nr, int B, int E) {
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int e = 0; e < E; e++) s += (double)x[(size_t)b * E + e] * (double)x[(size_t)b * E + e];
        nr[b] = (float)sqrt(s) + 1e-12f;
        for (int e = 0; e < E; e++) u[(size_t)b * E + e] = x[(size_t)b * E + e] / nr[b];
    }
}

/* gradient through u = x / |x|: dx = (du - u (u . du)) / |x| */
static void normalize_backward(const float *u, const float *du, const float *nr, float *dx, int B,
                               int E) {
    for (int b = 0; b < B; b++) {
        double d = 0.0;
        for (int e = 0; e < E; e++) d += (double)u[(size_t)b * E + e] * (double)du[(size_t)b * E + e];
        for (int e = 0; e < E; e++)
            dx[(size_t)b * E + e] = (du[(size_t)b * E + e] - u[(size_t)b * E + e] * (float)d) / nr[b];
    }
}

float lk_clip_contrastive_loss(const float *img, const float *txt, int B, int E,
                               float logit_scale, float *grad_img, float *grad_txt,
                               float *grad_logit_scale, float *acc) {
    if (!img || !txt || B < 1 || E < 1) return NAN;
    const size_t BE = (size_t)B * E, BB = (size_t)B * B;
    float *ui = malloc(sizeof(float) * BE), *ut = malloc(sizeof(float) * BE);
    float *ni = malloc(sizeof(float) * B), *nt = malloc(sizeof(float) * B);
    float *cos = malloc(sizeof(float) * BB), *g = calloc(BB, sizeof(float));
    float *dui = calloc(BE, sizeof(float)), *dut = calloc(BE, sizeof(float));
    float loss = NAN;
    if (!ui || !ut || !ni || !nt || !cos || !g || !dui || !dut) goto done;
    normalize_rows(img, ui, ni, B, E);
    normalize_rows(txt, ut, nt, B, E);
    const bool clamped = expf(logit_scale) > 100.0f;
    const float s = clamped ? 100.0f : expf(logit_scale);
    for (int i = 0; i < B; i++)
        for (int j = 0; j < B; j++) {
            double d = 0.0;
            for (int e = 0; e < E; e++) d += (double)ui[(size_t)i * E + e] * (double)ut[(size_t)j * E + e];
            cos[(size_t)i * B + j] = (float)d;
        }
    /* softmax cross-entropy over rows (image -> text) and columns (text -> image); g = dL/dlogit */
    double total = 0.0;
    int hits = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < B; i++) {
            double mx = -INFINITY;
            int arg = 0;
            for (int j = 0; j < B; j++) {
                const double l = (double)s * (double)cos[pass ? (size_t)j * B + i : (size_t)i * B + j];
                if (l > mx) {
                    mx = l;
                    arg = j;
                }
            }
            hits += arg == i;
            double z = 0.0;
            for (int j = 0; j < B; j++)
                z += exp((double)s * (double)cos[pass ? (size_t)j * B + i : (size_t)i * B + j] - mx);
            const double lse = mx + log(z);
            total += lse - (double)s * (double)cos[(size_t)i * B + i];
            for (int j = 0; j < B; j++) {
                const size_t k = pass ? (size_t)j * B + i : (size_t)i * B + j;
                const double p = exp((double)s * (double)cos[k] - lse);
                g[k] += (float)((p - (j == i ? 1.0 : 0.0)) / (2.0 * B));
            }
        }
    loss = (float)(total / (2.0 * B));
    if (acc) *acc = (float)hits / (float)(2 * B);
    if (grad_logit_scale) {
        double d = 0.0;
        for (size_t k = 0; k < BB; k++) d += (double)g[k] * (double)cos[k];
        *grad_logit_scale = clamped ? 0.0f : (float)(d * (double)s);
    }
    if (grad_img || grad_txt) {
        for (int i = 0; i < B; i++)
            for (int j = 0; j < B; j++) {
                const float gs = g[(size_t)i * B + j] * s;
                for (int e = 0; e < E; e++) {
                    dui[(size_t)i * E + e] += gs * ut[(size_t)j * E + e];
                    dut[(size_t)j * E + e] += gs * ui[(size_t)i * E + e];
                }
            }
        if (grad_img) normalize_backward(ui, dui, ni, grad_img, B, E);
        if (grad_txt) normalize_backward(ut, dut, nt, grad_txt, B, E);
    }
done:
    free(ui);
    free(ut);
    free(ni);
    free(nt);
    free(cos);
    free(g);
    free(dui);
    free(dut);
    return loss;
}
