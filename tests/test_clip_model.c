/* test_clip_model.c: the CLIP-style text + image model (clip_model.h): the contrastive loss
 * against PyTorch (tests/ref/clip_model.py: loss, gradients, accuracy, clamped temperature) and
 * by finite differences; a tiny model's weights, EOS pooling, causality, image embeddings and
 * gradients through both towers; the configuration's parse / save round trip and its refusals. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "likeness/clip_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------- contrastive loss vs PyTorch ---------------- */

/* Tolerances (float32 loss against a float64 reference): the cosines are rounded to f32 (1e-7
 * relative) and multiplied by s <= 100, so logits carry up to ~1e-5 absolute error; the loss
 * gets 2e-5 * max(1, |L|). The gradients are f32 sums of B terms of size s / (B |x|): checked
 * at 2e-5 * max|want| absolute + 1e-4 relative. Measured errors are printed. */
static void loss_case(const lk_safetensors *st, const char *name) {
    char k[128];
    int64_t n_img = 0, n_txt = 0;
    snprintf(k, sizeof k, "%s.img", name);
    float *img = lk_t_load(st, k, &n_img);
    snprintf(k, sizeof k, "%s.txt", name);
    float *txt = lk_t_load(st, k, &n_txt);
    snprintf(k, sizeof k, "%s.logit_scale", name);
    float *ls = lk_t_load(st, k, NULL);
    snprintf(k, sizeof k, "%s.loss", name);
    float *want_loss = lk_t_load(st, k, NULL);
    snprintf(k, sizeof k, "%s.dimg", name);
    float *want_dimg = lk_t_load(st, k, NULL);
    snprintf(k, sizeof k, "%s.dtxt", name);
    float *want_dtxt = lk_t_load(st, k, NULL);
    snprintf(k, sizeof k, "%s.dlogit_scale", name);
    float *want_dls = lk_t_load(st, k, NULL);
    snprintf(k, sizeof k, "%s.acc", name);
    float *want_acc = lk_t_load(st, k, NULL);
    const lk_st_tensor *ti = NULL;
    snprintf(k, sizeof k, "%s.img", name);
    ti = lk_safetensors_find(st, k);
    if (!img || !txt || !ls || !want_loss || !want_dimg || !want_dtxt || !want_dls || !want_acc ||
        !ti || ti->ndim != 2 || n_img != n_txt) {
        lk_t_checks++;
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: reference data missing\n", name);
        goto out;
    }
    const int B = (int)ti->shape[0], E = (int)ti->shape[1];
    const size_t BE = (size_t)B * E;
    float *dimg = malloc(sizeof(float) * BE), *dtxt = malloc(sizeof(float) * BE);
    if (!dimg || !dtxt) {
        free(dimg);
        free(dtxt);
        lk_t_checks++;
        lk_t_failures++;
        goto out;
    }
    float dls = 12345.0f, acc = -1.0f;
    const float L = lk_clip_contrastive_loss(img, txt, B, E, ls[0], dimg, dtxt, &dls, &acc);
    char what[160];
    snprintf(what, sizeof what, "%s loss (B=%d E=%d s=%.3g)", name, B, E, (double)expf(ls[0]));
    lk_t_close(what, &L, want_loss, 1, 2e-5f * fmaxf(1.0f, fabsf(want_loss[0])), 0.0f);
    float mx = 1e-3f;
    for (size_t i = 0; i < BE; i++) mx = fmaxf(mx, fmaxf(fabsf(want_dimg[i]), fabsf(want_dtxt[i])));
    snprintf(what, sizeof what, "%s dL/dimg", name);
    lk_t_close(what, dimg, want_dimg, BE, 2e-5f * mx, 1e-4f);
    snprintf(what, sizeof what, "%s dL/dtxt", name);
    lk_t_close(what, dtxt, want_dtxt, BE, 2e-5f * mx, 1e-4f);
    snprintf(what, sizeof what, "%s dL/dlogit_scale", name);
    lk_t_close(what, &dls, want_dls, 1, 2e-5f * fmaxf(1.0f, fabsf(want_dls[0])), 1e-4f);
    if (expf(ls[0]) > 100.0f) CHECK(dls == 0.0f && want_dls[0] == 0.0f); /* clamped */
    snprintf(what, sizeof what, "%s accuracy", name);
    lk_t_close(what, &acc, want_acc, 1, 1e-6f, 0.0f);
    /* optional outputs: the loss alone is the same number */
    const float L2 = lk_clip_contrastive_loss(img, txt, B, E, ls[0], NULL, NULL, NULL, NULL);
    CHECK(L2 == L);
    float *only_img = malloc(sizeof(float) * BE);
    if (only_img) {
        const float L3 = lk_clip_contrastive_loss(img, txt, B, E, ls[0], only_img, NULL, NULL, NULL);
        CHECK(L3 == L && memcmp(only_img, dimg, sizeof(float) * BE) == 0);
    }
    free(only_img);
    free(dimg);
    free(dtxt);
out:
    free(img);
    free(txt);
    free(ls);
    free(want_loss);
    free(want_dimg);
    free(want_dtxt);
    free(want_dls);
    free(want_acc);
}

static void test_loss_vs_torch(void) {
    lk_safetensors *st = lk_t_ref("clip_model");
    CHECK(st != NULL);
    if (!st) {
        fprintf(stderr, "  %s\n", lk_last_error());
        return;
    }
    const char *cases = lk_safetensors_meta(st, "cases");
    CHECK(cases != NULL);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", cases ? cases : "");
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        loss_case(st, tok);
        n++;
    }
    CHECK(n >= 12);
    lk_safetensors_close(st);
}

/* Finite differences of the loss itself (no PyTorch): central differences in float with step
 * 1e-2 on inputs of size ~1; the loss is a float (1e-7 relative), so the numeric derivative is
 * good to ~1e-4; checked at 3e-3 * max(1, |d|). */
static void test_loss_fd(void) {
    const int B = 5, E = 7;
    float img[35], txt[35], dimg[35], dtxt[35];
    lk_t_fill_uniform(img, 35, -1.0f, 1.0f, 3);
    lk_t_fill_uniform(txt, 35, -1.0f, 1.0f, 4);
    for (int pass = 0; pass < 2; pass++) {
        const float ls = pass ? logf(1.0f / 0.07f) : 0.7f;
        float dls = 0.0f, acc = 0.0f;
        const float L = lk_clip_contrastive_loss(img, txt, B, E, ls, dimg, dtxt, &dls, &acc);
        CHECK(isfinite(L) && L > 0.0f && acc >= 0.0f && acc <= 1.0f);
        const float h = 1e-2f;
        double worst = 0.0;
        for (int j = 0; j < 2 * B * E + 1; j++) {
            float *x = j < B * E ? &img[j] : j < 2 * B * E ? &txt[j - B * E] : NULL;
            const float ana = j < B * E ? dimg[j] : j < 2 * B * E ? dtxt[j - B * E] : dls;
            float lp, lm;
            if (x) {
                const float old = *x;
                *x = old + h;
                lp = lk_clip_contrastive_loss(img, txt, B, E, ls, NULL, NULL, NULL, NULL);
                *x = old - h;
                lm = lk_clip_contrastive_loss(img, txt, B, E, ls, NULL, NULL, NULL, NULL);
                *x = old;
            } else {
                lp = lk_clip_contrastive_loss(img, txt, B, E, ls + h, NULL, NULL, NULL, NULL);
                lm = lk_clip_contrastive_loss(img, txt, B, E, ls - h, NULL, NULL, NULL, NULL);
            }
            const double num = ((double)lp - (double)lm) / (2.0 * (double)h);
            const double err = fabs(num - (double)ana) / fmax(1.0, fabs(num));
            if (err > worst) worst = err;
        }
        lk_t_checks++;
        if (!(worst <= 3e-3)) lk_t_failures++;
        printf("%s contrastive loss finite differences (logit_scale %.3f): worst %.2e\n",
               worst <= 3e-3 ? "ok  " : "FAIL", (double)ls, worst);
    }
    /* scale invariance: rows are normalized, so scaling an embedding changes nothing */
    float img2[35];
    for (int i = 0; i < 35; i++) img2[i] = img[i] * (i < 7 ? 3.0f : 1.0f);
    const float a = lk_clip_contrastive_loss(img, txt, B, E, 1.0f, NULL, NULL, NULL, NULL);
    const float b = lk_clip_contrastive_loss(img2, txt, B, E, 1.0f, NULL, NULL, NULL, NULL);
    CHECK(fabsf(a - b) <= 1e-6f * fmaxf(1.0f, fabsf(a)));
    /* refusals: NaN, outputs untouched */
    float acc = -2.0f;
    CHECK(isnan(lk_clip_contrastive_loss(NULL, txt, B, E, 1.0f, NULL, NULL, NULL, &acc)));
    CHECK(isnan(lk_clip_contrastive_loss(img, NULL, B, E, 1.0f, NULL, NULL, NULL, &acc)));
    CHECK(isnan(lk_clip_contrastive_loss(img, txt, 0, E, 1.0f, NULL, NULL, NULL, &acc)));
    CHECK(isnan(lk_clip_contrastive_loss(img, txt, B, 0, 1.0f, NULL, NULL, NULL, &acc)));
    CHECK(acc == -2.0f);
}

/* ---------------- the model ---------------- */

static lk_clip_model_config tiny_config(void) {
    lk_clip_model_config c;
    memset(&c, 0, sizeof c);
    c.text.hidden_size = 16;
    c.text.intermediate_size = 32;
    c.text.num_hidden_layers = 2;
    c.text.num_attention_heads = 2;
    c.text.max_position_embeddings = 77;
    c.text.vocab_size = 600;
    c.text.hidden_act = LK_CLIP_GELU;
    c.text.layer_norm_eps = 1e-5f;
    c.image_size = 8;
    c.n_stages = 2;
    c.channels[0] = 8;
    c.channels[1] = 16;
    c.norm_groups = 4;
    c.embed_dim = 12;
    return c;
}

static void check_shape(const lk_weights *w, const char *name, int ndim, const int64_t *shape) {
    const lk_tensor *t = lk_weights_get(w, name);
    bool ok = t && t->ndim == ndim && t->dtype == LK_F32;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    lk_t_checks++;
    if (!ok) {
        lk_t_failures++;
        fprintf(stderr, "FAIL weight '%s' missing or of the wrong shape/dtype\n", name);
    }
}

static void test_init(void) {
    const lk_clip_model_config cfg = tiny_config();
    lk_weights *w = lk_weights_new();
    if (!w) {
        CHECK(w != NULL);
        return;
    }
    CHECK_OK(lk_clip_model_init_weights(w, &cfg, "", LK_F32, 42));
    check_shape(w, "text_projection.weight", LK_DIMS(12, 16));
    check_shape(w, "visual_projection.weight", LK_DIMS(12, 16));
    check_shape(w, "logit_scale", LK_DIMS(1));
    check_shape(w, "text_model.embeddings.token_embedding.weight", LK_DIMS(600, 16));
    check_shape(w, "text_model.embeddings.position_embedding.weight", LK_DIMS(77, 16));
    check_shape(w, "text_model.encoder.layers.1.mlp.fc1.weight", LK_DIMS(32, 16));
    check_shape(w, "text_model.final_layer_norm.weight", LK_DIMS(16));
    check_shape(w, "vision_model.conv_in.weight", LK_DIMS(8, 3, 3, 3));
    check_shape(w, "vision_model.conv_in.bias", LK_DIMS(8));
    check_shape(w, "vision_model.stages.0.resnet.norm1.weight", LK_DIMS(8));
    check_shape(w, "vision_model.stages.0.resnet.conv1.weight", LK_DIMS(8, 8, 3, 3));
    check_shape(w, "vision_model.stages.0.downsample.weight", LK_DIMS(8, 8, 3, 3));
    check_shape(w, "vision_model.stages.1.resnet.conv1.weight", LK_DIMS(16, 8, 3, 3));
    check_shape(w, "vision_model.stages.1.resnet.conv2.weight", LK_DIMS(16, 16, 3, 3));
    check_shape(w, "vision_model.stages.1.resnet.conv_shortcut.weight", LK_DIMS(16, 8, 1, 1));
    check_shape(w, "vision_model.norm_out.weight", LK_DIMS(16));
    check_shape(w, "vision_model.norm_out.bias", LK_DIMS(16));
    /* 8 -> 8 needs no shortcut; the last stage has no downsample */
    CHECK(lk_weights_get(w, "vision_model.stages.0.resnet.conv_shortcut.weight") == NULL);
    CHECK(lk_weights_get(w, "vision_model.stages.1.downsample.weight") == NULL);
    const lk_tensor *ls = lk_weights_get(w, "logit_scale");
    CHECK(ls && lk_get_f32(ls, 0) == logf(1.0f / 0.07f));
    /* projections: PyTorch's default Linear init, U(+-1/sqrt(fan_in)), not all zero */
    const lk_tensor *tp = lk_weights_get(w, "text_projection.weight");
    if (tp) {
        float mx = 0.0f;
        for (int64_t i = 0; i < lk_numel(tp); i++) mx = fmaxf(mx, fabsf(lk_get_f32(tp, i)));
        CHECK(mx > 0.05f && mx <= 0.25f);
    }
    /* the same seed gives the same weights; tensors already present are kept */
    lk_weights *w2 = lk_weights_new();
    if (w2) {
        CHECK_OK(lk_clip_model_init_weights(w2, &cfg, "", LK_F32, 42));
        CHECK(lk_weights_count(w2) == lk_weights_count(w));
        bool same = true;
        for (int i = 0; i < lk_weights_count(w); i++) {
            const lk_tensor *a = lk_weights_at(w, i), *b = lk_weights_get(w2, a->name);
            same = same && b && lk_nbytes(a) == lk_nbytes(b) && !memcmp(a->data, b->data, lk_nbytes(a));
        }
        CHECK(same);
        lk_tensor *l2 = lk_weights_get(w2, "logit_scale");
        if (l2) *(float *)l2->data = 1.25f;
        CHECK_OK(lk_clip_model_init_weights(w2, &cfg, "", LK_F32, 7));
        CHECK(l2 && lk_get_f32(l2, 0) == 1.25f);
        lk_weights_free(w2);
    }
    /* a prefix and half storage */
    lk_weights *w3 = lk_weights_new();
    if (w3) {
        CHECK_OK(lk_clip_model_init_weights(w3, &cfg, "clip.", LK_F16, 1));
        const lk_tensor *l3 = lk_weights_get(w3, "clip.logit_scale");
        CHECK(l3 && l3->dtype == LK_F16 && fabsf(lk_get_f32(l3, 0) - logf(1.0f / 0.07f)) < 2e-3f);
        CHECK(lk_weights_get(w3, "clip.vision_model.conv_in.weight") != NULL);
        CHECK(lk_weights_get(w3, "logit_scale") == NULL);
        lk_clip_model *m = NULL;
        CHECK_OK(lk_clip_model_new(&m, &cfg, w3, "clip."));
        CHECK(m && fabsf(lk_clip_model_logit_scale(m) - 1.0f / 0.07f) < 0.03f);
        lk_clip_model_free(m);
        lk_weights_free(w3);
    }
    CHECK(lk_clip_model_init_weights(w, &cfg, "", LK_I64, 1) == LK_ERR_INVALID);
    CHECK(lk_clip_model_init_weights(NULL, &cfg, "", LK_F32, 1) == LK_ERR_INVALID);

    /* building: a bad configuration, a missing tensor, a tensor of the wrong shape */
    lk_clip_model *m = (lk_clip_model *)(void *)w;
    lk_clip_model_config bad = cfg;
    bad.channels[1] = 18;
    CHECK(lk_clip_model_new(&m, &bad, w, "") == LK_ERR_INVALID && m == NULL);
    CHECK(strstr(lk_last_error(), "stage 1") != NULL);
    bad = cfg;
    bad.image_size = 9;
    CHECK(lk_clip_model_new(&m, &bad, w, "") == LK_ERR_INVALID && m == NULL);
    bad = cfg;
    bad.n_stages = LK_CLIP_VISION_MAX_STAGES + 1;
    CHECK(lk_clip_model_new(&m, &bad, w, "") == LK_ERR_INVALID && m == NULL);
    bad = cfg;
    bad.embed_dim = 13;
    lk_status s = lk_clip_model_new(&m, &bad, w, "");
    CHECK(s != LK_OK && m == NULL);
    CHECK(strstr(lk_last_error(), "projection") != NULL);
    lk_weights *partial = lk_weights_new();
    if (partial) {
        for (int i = 0; i < lk_weights_count(w); i++) {
            const lk_tensor *t = lk_weights_at(w, i);
            if (!strcmp(t->name, "visual_projection.weight")) continue;
            lk_tensor *c = lk_param_new(t->dtype, t->ndim, t->shape, t->name);
            if (c) {
                memcpy(c->data, t->data, lk_nbytes(t));
                if (lk_weights_add(partial, c) != LK_OK) lk_param_free(c);
            }
        }
        s = lk_clip_model_new(&m, &cfg, partial, "");
        CHECK(s != LK_OK && m == NULL);
        CHECK(strstr(lk_last_error(), "visual_projection.weight") != NULL);
        lk_weights_free(partial);
    }
    CHECK(lk_clip_model_new(NULL, &cfg, w, "") == LK_ERR_INVALID);
    CHECK(lk_clip_model_new(&m, NULL, w, "") == LK_ERR_INVALID && m == NULL);
    lk_clip_model_free(NULL);
    CHECK(lk_clip_model_config_of(NULL) == NULL && lk_clip_model_text(NULL) == NULL &&
          lk_clip_model_logit_scale_param(NULL) == NULL);
    lk_weights_free(w);
}

typedef struct model_fx {
    lk_clip_model_config cfg;
    lk_weights *w;
    lk_clip_model *m;
    lk_tensor *ids;   /* (3, 10) I64 param */
    int eos[3];
    lk_tensor *images; /* (2, 3, 8, 8) */
} model_fx;

/* the text embeddings by hand: final-normed hidden states at eos, times text_projection^T */
static void test_text_pooling(model_fx *f) {
    lk_ctx *ctx = lk_ctx_new();
    if (!ctx) return;
    lk_set_grad_enabled(ctx, false);
    const int B = 3, N = 10, D = 16, E = 12;
    lk_tensor *te = lk_clip_model_encode_text(ctx, f->m, f->ids, f->eos);
    CHECK(te && te->ndim == 2 && te->shape[0] == B && te->shape[1] == E);
    lk_tensor *h = lk_clip_text_forward(ctx, lk_clip_model_text(f->m), f->ids, 1, true);
    CHECK(h && h->ndim == 3 && h->shape[0] == B && h->shape[1] == N && h->shape[2] == D);
    const lk_tensor *W = lk_weights_get(f->w, "text_projection.weight");
    if (te && h && W) {
        float want[36], got[36];
        const float *hd = h->data;
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++) {
                double acc = 0.0;
                for (int d = 0; d < D; d++)
                    acc += (double)lk_get_f32(W, (int64_t)e * D + d) *
                           (double)hd[((size_t)b * N + (size_t)f->eos[b]) * D + (size_t)d];
                want[b * E + e] = (float)acc;
                got[b * E + e] = lk_get_f32(te, b * E + e);
            }
        lk_t_close("encode_text = proj(final-normed hidden at eos_pos)", got, want, 36, 1e-5f, 1e-5f);
        /* causal: other ids after each row's EOS change nothing */
        int64_t ids2[30];
        memcpy(ids2, f->ids->data, sizeof ids2);
        for (int b = 0; b < B; b++)
            for (int n = f->eos[b] + 1; n < N; n++) ids2[b * N + n] = (ids2[b * N + n] * 7 + 13) % 600;
        CHECK(memcmp(ids2, f->ids->data, sizeof ids2) != 0);
        lk_tensor *i2 = lk_tensor_wrap(ctx, LK_I64, LK_DIMS(B, N), ids2);
        lk_tensor *te2 = lk_clip_model_encode_text(ctx, f->m, i2, f->eos);
        float got2[36];
        for (int i = 0; te2 && i < 36; i++) got2[i] = lk_get_f32(te2, i);
        CHECK(te2 != NULL);
        if (te2) lk_t_close("encode_text: ids after the EOS do not matter", got2, got, 36, 1e-6f, 1e-6f);
        /* ... so N = max(eos_pos) + 1 gives the same embeddings */
        int mx = 0;
        for (int b = 0; b < B; b++) mx = f->eos[b] > mx ? f->eos[b] : mx;
        int64_t ids3[30];
        for (int b = 0; b < B; b++)
            for (int n = 0; n <= mx; n++) ids3[b * (mx + 1) + n] = ((const int64_t *)f->ids->data)[b * N + n];
        lk_tensor *i3 = lk_tensor_wrap(ctx, LK_I64, LK_DIMS(B, mx + 1), ids3);
        lk_tensor *te3 = lk_clip_model_encode_text(ctx, f->m, i3, f->eos);
        float got3[36];
        for (int i = 0; te3 && i < 36; i++) got3[i] = lk_get_f32(te3, i);
        CHECK(te3 != NULL && mx + 1 < N);
        if (te3) lk_t_close("encode_text: N = max(eos_pos) + 1", got3, got, 36, 1e-5f, 1e-5f);
        /* a different EOS position does change it */
        int eos4[3] = {f->eos[0], f->eos[1], f->eos[2] + 1};
        lk_tensor *te4 = lk_clip_model_encode_text(ctx, f->m, f->ids, eos4);
        CHECK(te4 && lk_get_f32(te4, 2 * E) != got[2 * E]);
        CHECK(te4 && lk_get_f32(te4, 0) == got[0]);
    }
    lk_ctx_reset(ctx);
    /* refusals: EOS outside the row, bad ids */
    int bad[3] = {0, 10, 1};
    CHECK(lk_clip_model_encode_text(ctx, f->m, f->ids, bad) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID && strstr(lk_last_error(), "EOS position 10"));
    lk_ctx_reset(ctx);
    bad[1] = -1;
    CHECK(lk_clip_model_encode_text(ctx, f->m, f->ids, bad) == NULL);
    lk_ctx_reset(ctx);
    CHECK(lk_clip_model_encode_text(ctx, f->m, f->ids, NULL) == NULL);
    lk_ctx_reset(ctx);
    int64_t row[4] = {1, 2, 3, 4};
    lk_tensor *r1 = lk_tensor_wrap(ctx, LK_I64, LK_DIMS(4), row);
    CHECK(lk_clip_model_encode_text(ctx, f->m, r1, f->eos) == NULL);
    lk_ctx_reset(ctx);
    lk_ctx_free(ctx);
}

static void test_image_embed(model_fx *f) {
    lk_ctx *ctx = lk_ctx_new();
    if (!ctx) return;
    lk_set_grad_enabled(ctx, false);
    lk_tensor *ie = lk_clip_model_encode_image(ctx, f->m, f->images);
    CHECK(ie && ie->ndim == 2 && ie->shape[0] == 2 && ie->shape[1] == 12);
    bool finite = ie != NULL, differ = false;
    for (int i = 0; ie && i < 24; i++) {
        finite = finite && isfinite(lk_get_f32(ie, i));
        differ = differ || lk_get_f32(ie, i) != lk_get_f32(ie, 12 + i % 12);
    }
    CHECK(finite && differ);
    /* one image alone gives its row of the batch */
    if (ie) {
        lk_tensor *one = lk_narrow(ctx, f->images, 0, 1, 1);
        lk_tensor *ie1 = lk_clip_model_encode_image(ctx, f->m, lk_contiguous(ctx, one));
        float a[12], b[12];
        for (int i = 0; ie1 && i < 12; i++) {
            a[i] = lk_get_f32(ie1, i);
            b[i] = lk_get_f32(ie, 12 + i);
        }
        CHECK(ie1 != NULL);
        if (ie1) lk_t_close("encode_image: batch of 1 = row of the batch", a, b, 12, 1e-5f, 1e-5f);
    }
    lk_ctx_reset(ctx);
    float big[3 * 16 * 16] = {0};
    lk_tensor *x16 = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(1, 3, 16, 16), big);
    CHECK(lk_clip_model_encode_image(ctx, f->m, x16) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID && strstr(lk_last_error(), "[B,3,8,8]"));
    lk_ctx_reset(ctx);
    lk_tensor *x1 = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(1, 1, 8, 8), big);
    CHECK(lk_clip_model_encode_image(ctx, f->m, x1) == NULL);
    lk_ctx_reset(ctx);
    CHECK(lk_clip_model_encode_image(ctx, f->m, NULL) == NULL);
    lk_ctx_free(ctx);
}

/* the composition checked by finite differences: both towers' embeddings, one batch */
static lk_tensor *both_towers(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    model_fx *f = ud;
    lk_tensor *ie = lk_clip_model_encode_image(ctx, f->m, in[0]);
    lk_tensor *te = lk_clip_model_encode_text(ctx, f->m, f->ids, f->eos);
    lk_tensor *both[2] = {ie, te};
    lk_tensor *cat = ie && te ? lk_concat(ctx, both, 2, 0) : NULL;
    return cat ? lk_mul(ctx, cat, cat) : NULL;
}

static lk_tensor *weight_or_null(model_fx *f, const char *name) {
    lk_tensor *t = lk_weights_get(f->w, name);
    if (!t || lk_set_requires_grad(t, true) != LK_OK) {
        lk_t_checks++;
        lk_t_failures++;
        fprintf(stderr, "FAIL weight %s\n", name);
        return NULL;
    }
    return t;
}

static void test_gradients(model_fx *f) {
    static const char *const names[] = {
        "vision_model.conv_in.weight",
        "vision_model.stages.0.resnet.norm1.weight",
        "vision_model.stages.1.resnet.conv_shortcut.weight",
        "vision_model.norm_out.bias",
        "visual_projection.weight",
        "text_projection.weight",
        "text_model.final_layer_norm.weight",
        "text_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_model.encoder.layers.1.mlp.fc2.weight",
        "text_model.embeddings.position_embedding.weight",
    };
    enum { NW = sizeof names / sizeof names[0] };
    lk_tensor *in[1 + NW];
    in[0] = f->images;
    CHECK_OK(lk_set_requires_grad(f->images, true));
    int n = 1;
    for (int i = 0; i < NW; i++) {
        lk_tensor *t = weight_or_null(f, names[i]);
        if (t) in[n++] = t;
    }
    /* f32 throughout. The embeddings are initialized at U(+-0.035) and LayerNorm rescales
     * them, so a step of 1e-2 is far outside the linear range: step 1e-3 (measured worst error
     * 1.5e-3 on the position embedding, <= 3e-4 elsewhere), tolerance 1e-2 */
    lk_t_gradcheck("clip model: image input and weights of both towers", both_towers, f, in, n,
                   12, 1e-3f, 1e-2f);
    for (int i = 0; i < n; i++) {
        lk_set_requires_grad(in[i], false);
        lk_zero_grad(in[i]);
    }
}

/* The contrastive loss through both towers, as the text stage trains it: backward_from the
 * concatenated embeddings with the loss's gradients (plus dL/dlogit_scale by hand), against
 * central differences of the loss on weight elements. */
static float model_loss(model_fx *f, lk_ctx *ctx, float *dout, float *dls) {
    lk_tensor *ie = lk_clip_model_encode_image(ctx, f->m, f->images);
    lk_tensor *te = lk_clip_model_encode_text(ctx, f->m, f->ids, f->eos);
    /* 2 images, 3 captions: pair the first two */
    lk_tensor *te2 = te ? lk_contiguous(ctx, lk_narrow(ctx, te, 0, 0, 2)) : NULL;
    lk_tensor *both[2] = {ie, te2};
    lk_tensor *cat = ie && te2 ? lk_concat(ctx, both, 2, 0) : NULL;
    if (!cat) return NAN;
    const float *cd = cat->data;
    const lk_tensor *ls = lk_clip_model_logit_scale_param(f->m);
    const float L = lk_clip_contrastive_loss(cd, cd + 24, 2, 12, lk_get_f32(ls, 0), dout,
                                             dout ? dout + 24 : NULL, dls, NULL);
    if (dout && lk_backward_from(ctx, cat, dout) != LK_OK) return NAN;
    return L;
}

static void test_loss_through_model(model_fx *f) {
    lk_tensor *w1 = weight_or_null(f, "vision_model.stages.1.resnet.conv2.weight");
    lk_tensor *w2 = weight_or_null(f, "text_model.encoder.layers.1.self_attn.v_proj.weight");
    lk_tensor *ls = lk_clip_model_logit_scale_param(f->m);
    lk_ctx *ctx = lk_ctx_new();
    if (!w1 || !w2 || !ls || !ctx) {
        lk_ctx_free(ctx);
        return;
    }
    lk_zero_grad(w1);
    lk_zero_grad(w2);
    float dout[48], dls = 0.0f;
    const float L = model_loss(f, ctx, dout, &dls);
    CHECK(isfinite(L));
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, false);
    double worst = 0.0;
    int probes = 0;
    lk_tensor *ws[2] = {w1, w2};
    uint64_t seed = 99;
    for (int k = 0; k < 2; k++)
        for (int p = 0; p < 6; p++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            const int64_t j = (int64_t)((seed >> 33) % (uint64_t)lk_numel(ws[k]));
            float *x = ws[k]->data;
            const float old = x[j], h = 1e-2f;
            x[j] = old + h;
            const float lp = model_loss(f, ctx, NULL, NULL);
            lk_ctx_reset(ctx);
            x[j] = old - h;
            const float lm = model_loss(f, ctx, NULL, NULL);
            lk_ctx_reset(ctx);
            x[j] = old;
            const double num = ((double)lp - (double)lm) / (2.0 * (double)h);
            const double ana = ws[k]->grad ? (double)ws[k]->grad[j] : 0.0;
            const double err = fabs(num - ana) / fmax(1e-2, fmax(fabs(num), fabs(ana)));
            worst = fmax(worst, err);
            probes++;
        }
    /* logit_scale: its gradient comes from the loss function only */
    float *lsd = ls->data;
    const float old = lsd[0], h = 1e-2f;
    lsd[0] = old + h;
    const float lp = model_loss(f, ctx, NULL, NULL);
    lk_ctx_reset(ctx);
    lsd[0] = old - h;
    const float lm = model_loss(f, ctx, NULL, NULL);
    lk_ctx_reset(ctx);
    lsd[0] = old;
    const double num = ((double)lp - (double)lm) / (2.0 * (double)h);
    worst = fmax(worst, fabs(num - (double)dls) / fmax(1e-2, fabs(num)));
    lk_t_checks++;
    if (!(worst <= 2e-2)) lk_t_failures++;
    printf("%s contrastive loss through both towers, %d weight probes + logit_scale: worst "
           "relative error %.2e\n", worst <= 2e-2 ? "ok  " : "FAIL", probes, worst);
    lk_set_requires_grad(w1, false);
    lk_set_requires_grad(w2, false);
    lk_ctx_free(ctx);
}

static void test_model(void) {
    model_fx f;
    memset(&f, 0, sizeof f);
    f.cfg = tiny_config();
    f.w = lk_weights_new();
    CHECK(f.w != NULL);
    if (!f.w) return;
    CHECK_OK(lk_clip_model_init_weights(f.w, &f.cfg, "", LK_F32, 5));
    CHECK_OK(lk_clip_model_new(&f.m, &f.cfg, f.w, ""));
    f.ids = lk_param_new(LK_I64, LK_DIMS(3, 10), "ids");
    f.images = lk_param_new(LK_F32, LK_DIMS(2, 3, 8, 8), "images");
    if (f.m && f.ids && f.images) {
        const lk_clip_model_config *c = lk_clip_model_config_of(f.m);
        CHECK(c && c->embed_dim == 12 && c->channels[1] == 16 && c->text.vocab_size == 600);
        CHECK(lk_clip_model_text(f.m) != NULL);
        CHECK(fabsf(lk_clip_model_logit_scale(f.m) - 1.0f / 0.07f) < 1e-4f);
        const lk_tensor *ls = lk_clip_model_logit_scale_param(f.m);
        CHECK(ls && lk_numel(ls) == 1 && lk_get_f32(ls, 0) == logf(1.0f / 0.07f));
        CHECK(ls && strcmp(ls->name, "logit_scale") == 0);
        /* ids: BOS 1, content, EOS 2 at eos_pos, then padding */
        int64_t *id = f.ids->data;
        float r[30];
        lk_t_fill_uniform(r, 30, 3.0f, 599.0f, 21);
        for (int i = 0; i < 30; i++) id[i] = (int64_t)r[i];
        f.eos[0] = 3;
        f.eos[1] = 6;
        f.eos[2] = 0;
        for (int b = 0; b < 3; b++) {
            id[b * 10] = 1;
            id[b * 10 + f.eos[b]] = 2;
        }
        lk_t_fill_uniform(f.images->data, 2 * 3 * 8 * 8, -1.0f, 1.0f, 22);
        test_text_pooling(&f);
        test_image_embed(&f);
        test_gradients(&f);
        test_loss_through_model(&f);
        /* the clamp of the temperature */
        lk_tensor *lsp = lk_clip_model_logit_scale_param(f.m);
        *(float *)lsp->data = 6.0f;
        CHECK(lk_clip_model_logit_scale(f.m) == 100.0f);
        *(float *)lsp->data = 0.0f;
        CHECK(lk_clip_model_logit_scale(f.m) == 1.0f);
    }
    lk_param_free(f.ids);
    lk_param_free(f.images);
    lk_clip_model_free(f.m);
    lk_weights_free(f.w);
}

/* ---------------- configuration ---------------- */

static const char *CONFIG =
    "{\"architectures\": [\"LikenessCLIPModel\"], \"projection_dim\": 12,\n"
    " \"text_config\": {\"hidden_size\": 16, \"intermediate_size\": 32, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 2, \"max_position_embeddings\": 77, \"vocab_size\": 600,"
    " \"hidden_act\": \"gelu\", \"layer_norm_eps\": 1e-05},\n"
    " \"vision_config\": {\"image_size\": 8, \"norm_groups\": 4, \"channels\": [8, 16]}}\n";

/* text with the first occurrence of find replaced by repl (malloc'd); NULL if find is absent */
static char *replace1(const char *text, const char *find, const char *repl) {
    const char *p = strstr(text, find);
    if (!p) return NULL;
    const size_t a = (size_t)(p - text), fl = strlen(find), rl = strlen(repl);
    char *out = malloc(strlen(text) - fl + rl + 1);
    if (!out) return NULL;
    memcpy(out, text, a);
    memcpy(out + a, repl, rl);
    strcpy(out + a + rl, p + fl);
    return out;
}

static bool same_config(const lk_clip_model_config *a, const lk_clip_model_config *b) {
    bool ok = a->text.hidden_size == b->text.hidden_size &&
              a->text.intermediate_size == b->text.intermediate_size &&
              a->text.num_hidden_layers == b->text.num_hidden_layers &&
              a->text.num_attention_heads == b->text.num_attention_heads &&
              a->text.max_position_embeddings == b->text.max_position_embeddings &&
              a->text.vocab_size == b->text.vocab_size && a->text.hidden_act == b->text.hidden_act &&
              a->text.layer_norm_eps == b->text.layer_norm_eps && a->image_size == b->image_size &&
              a->n_stages == b->n_stages && a->norm_groups == b->norm_groups &&
              a->embed_dim == b->embed_dim;
    for (int i = 0; ok && i < a->n_stages; i++) ok = a->channels[i] == b->channels[i];
    return ok;
}

typedef struct bad_cfg {
    const char *find, *repl, *want; /* want: a substring of the message (the key) */
    lk_status status;
} bad_cfg;

static const bad_cfg BAD[] = {
    {"\"projection_dim\": 12", "\"projection_dim\": 0", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection_dim\": -12", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection_dim\": 12.5", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection_dim\": \"12\"", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection_dim\": null", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection_dim\": 1e300", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection_dim\": -1e300", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection_dim\": 1e999", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection_dim\": 4294967308", "projection_dim", LK_ERR_FORMAT},
    {"\"projection_dim\": 12", "\"projection\": 12", "projection_dim", LK_ERR_FORMAT},
    {"\"text_config\": {", "\"text_config\": 5, \"x\": {", "text_config", LK_ERR_FORMAT},
    {"\"text_config\": {", "\"text_cfg\": {", "text_config", LK_ERR_FORMAT},
    {"\"hidden_size\": 16, ", "", "hidden_size", LK_ERR_FORMAT},
    {"\"hidden_size\": 16", "\"hidden_size\": 16.5", "hidden_size", LK_ERR_FORMAT},
    {"\"hidden_size\": 16", "\"hidden_size\": 0", "hidden_size", LK_ERR_FORMAT},
    {"\"intermediate_size\": 32", "\"intermediate_size\": \"32\"", "intermediate_size",
     LK_ERR_FORMAT},
    {"\"num_hidden_layers\": 2", "\"num_hidden_layers\": 0", "num_hidden_layers", LK_ERR_FORMAT},
    {"\"num_attention_heads\": 2", "\"num_attention_heads\": 3", "attention heads", LK_ERR_FORMAT},
    {"\"num_attention_heads\": 2, ", "", "num_attention_heads", LK_ERR_FORMAT},
    {"\"max_position_embeddings\": 77", "\"max_position_embeddings\": -1",
     "max_position_embeddings", LK_ERR_FORMAT},
    {"\"vocab_size\": 600", "\"vocab_size\": 0", "vocab_size", LK_ERR_FORMAT},
    {"\"layer_norm_eps\": 1e-05", "\"layer_norm_eps\": 2", "layer_norm_eps", LK_ERR_FORMAT},
    {"\"hidden_act\": \"gelu\"", "\"hidden_act\": 5", "hidden_act", LK_ERR_FORMAT},
    {"\"hidden_act\": \"gelu\"", "\"hidden_act\": \"relu\"", "hidden_act", LK_ERR_UNSUPPORTED},
    {"\"vision_config\": {", "\"vision_config\": 7, \"x\": {", "vision_config", LK_ERR_FORMAT},
    {"\"vision_config\": {", "\"vision\": {", "vision_config", LK_ERR_FORMAT},
    {"\"image_size\": 8", "\"image_size\": 0", "image_size", LK_ERR_FORMAT},
    {"\"image_size\": 8", "\"image_size\": 8.5", "image_size", LK_ERR_FORMAT},
    {"\"image_size\": 8", "\"image_size\": 1e300", "image_size", LK_ERR_FORMAT},
    {"\"image_size\": 8", "\"image_size\": 7", "image_size", LK_ERR_FORMAT},
    {"\"image_size\": 8, ", "", "image_size", LK_ERR_FORMAT},
    {"\"norm_groups\": 4", "\"norm_groups\": 0", "norm_groups", LK_ERR_FORMAT},
    {"\"norm_groups\": 4", "\"norm_groups\": \"4\"", "norm_groups", LK_ERR_FORMAT},
    {"\"norm_groups\": 4", "\"norm_groups\": 3", "norm_groups", LK_ERR_FORMAT},
    {"\"norm_groups\": 4, ", "", "norm_groups", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": []", "channels", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": [8, 8, 8, 8, 8, 8, 8]", "channels", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": [8, 0]", "channels[1]", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": [8, 16.5]", "channels[1]", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": [8, \"16\"]", "channels[1]", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": [1e300, 16]", "channels[0]", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": [8, -1e999]", "channels[1]", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": 8", "channels", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"chans\": [8, 16]", "channels", LK_ERR_FORMAT},
    {"\"channels\": [8, 16]", "\"channels\": [8, 16, 32, 64, 128]", "image_size", LK_ERR_FORMAT},
    {"{\"architectures\"", "[{\"architectures\"", "JSON object", LK_ERR_FORMAT},
    {"\"vision_config\": {", "\"vision_config\": {,", "JSON object", LK_ERR_FORMAT},
};

static void test_config(void) {
    lk_clip_model_config c, d;
    CHECK_OK(lk_clip_model_config_parse(&c, CONFIG, strlen(CONFIG), "clip/config.json"));
    const lk_clip_model_config want = tiny_config();
    CHECK(same_config(&c, &want));
    /* not NUL-terminated: exactly len bytes are read */
    const size_t L = strlen(CONFIG);
    char *copy = malloc(L);
    if (copy) {
        memcpy(copy, CONFIG, L);
        CHECK_OK(lk_clip_model_config_parse(&d, copy, L, NULL));
        CHECK(same_config(&d, &want));
        free(copy);
    }
    /* defaults of the text config (CLIPTextConfig's) */
    char *nodef = replace1(CONFIG, "\"max_position_embeddings\": 77, \"vocab_size\": 600, "
                                   "\"hidden_act\": \"gelu\", \"layer_norm_eps\": 1e-05",
                           "\"max_position_embeddings\": 77, \"vocab_size\": 600");
    CHECK(nodef != NULL);
    if (nodef) {
        CHECK_OK(lk_clip_model_config_parse(&d, nodef, strlen(nodef), "x"));
        CHECK(d.text.hidden_act == LK_CLIP_QUICK_GELU && d.text.layer_norm_eps == 1e-5f);
        free(nodef);
    }

    /* save -> load round trip, including an eps that needs 9 significant digits and 6 stages */
    char dir[] = "/tmp/lk_clip_cfg_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char path[128];
    snprintf(path, sizeof path, "%s/config.json", dir);
    lk_clip_model_config e = want;
    e.text.hidden_act = LK_CLIP_QUICK_GELU;
    e.text.layer_norm_eps = 1.2345678e-6f;
    e.image_size = 96;
    e.n_stages = 6;
    const int ch[6] = {4, 8, 12, 16, 20, 24};
    memcpy(e.channels, ch, sizeof ch);
    e.embed_dim = 7;
    const lk_clip_model_config *rt[2] = {&want, &e};
    for (int i = 0; i < 2; i++) {
        CHECK_OK(lk_clip_model_config_save(rt[i], path));
        memset(&d, 0x5a, sizeof d);
        CHECK_OK(lk_clip_model_config_load(&d, path));
        CHECK(same_config(&d, rt[i]));
    }
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) != 0); /* the temporary file was renamed */
    /* the saved file is also a valid CLIPTextConfig source (its text_config) */
    lk_clip_text_config tc;
    CHECK_OK(lk_clip_text_config_load(&tc, path));
    CHECK(tc.hidden_size == 16 && tc.layer_norm_eps == 1.2345678e-6f);
    /* IO errors name the path */
    snprintf(tmp, sizeof tmp, "%s/missing.json", dir);
    CHECK(lk_clip_model_config_load(&d, tmp) == LK_ERR_IO && strstr(lk_last_error(), "missing.json"));
    snprintf(tmp, sizeof tmp, "%s/no/such/dir/config.json", dir);
    CHECK(lk_clip_model_config_save(&want, tmp) == LK_ERR_IO);
    CHECK(lk_clip_model_config_load(&d, dir) != LK_OK); /* a folder */
    FILE *fp = fopen(path, "wb");
    if (fp) {
        fputs("{\"projection_dim\": 3}", fp);
        fclose(fp);
    }
    CHECK(lk_clip_model_config_load(&d, path) == LK_ERR_FORMAT && strstr(lk_last_error(), path));
    CHECK(lk_clip_model_config_parse(NULL, CONFIG, L, "x") == LK_ERR_INVALID);
    CHECK(lk_clip_model_config_parse(&d, NULL, 3, "x") == LK_ERR_INVALID);
    CHECK(lk_clip_model_config_load(NULL, path) == LK_ERR_INVALID);
    CHECK(lk_clip_model_config_save(NULL, path) == LK_ERR_INVALID);
    CHECK(lk_clip_model_config_parse(&d, "", 0, "empty.json") == LK_ERR_FORMAT);
    CHECK(strstr(lk_last_error(), "empty.json") != NULL);

    /* every malformed key is refused, naming the key and the source; *cfg zeroed */
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char *text = replace1(CONFIG, BAD[i].find, BAD[i].repl);
        lk_t_checks++;
        if (!text) {
            lk_t_failures++;
            fprintf(stderr, "FAIL config case %zu: '%s' not in the base config\n", i, BAD[i].find);
            continue;
        }
        memset(&d, 0x5a, sizeof d);
        const lk_status st = lk_clip_model_config_parse(&d, text, strlen(text), "bad.json");
        const char *msg = lk_last_error();
        lk_clip_model_config zero;
        memset(&zero, 0, sizeof zero);
        const bool ok = st == BAD[i].status && strstr(msg, BAD[i].want) && strstr(msg, "bad.json") &&
                        !memcmp(&d, &zero, sizeof d);
        if (!ok) {
            lk_t_failures++;
            fprintf(stderr, "FAIL config case %zu (%s): %s \"%s\" (want %s naming '%s')\n", i,
                    BAD[i].repl, lk_status_str(st), msg, lk_status_str(BAD[i].status), BAD[i].want);
        } else if (getenv("LK_VERBOSE")) {
            printf("  refused: %s\n", msg);
        }
        free(text);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    test_loss_vs_torch();
    test_loss_fd();
    test_init();
    test_model();
    test_config();
    return lk_t_done();
}
