/* custom_diffusion_file.c: Custom Diffusion files (Kumari et al. 2022) in diffusers' key names:
 * applying one to a loaded model (K/V weights replaced, modifier tokens added) and merging two
 * single-concept files into one. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/train_methods.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_layer(const char *name) { return strstr(name, ".attn2.") != NULL; }

static bool same_shape(const lk_st_tensor *t, const lk_tensor *p) {
    if (t->ndim != p->ndim) return false;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != p->shape[i]) return false;
    return true;
}

/* Contract: see train_methods.h. */
lk_status lk_custom_diffusion_apply(lk_sd_model *m, const char *path, float **rows, int *n_tokens,
                                    int *dim) {
    if (rows) *rows = NULL;
    if (n_tokens) *n_tokens = 0;
    if (!m || !path || !rows || !n_tokens || !dim)
        return lk_fail(LK_ERR_INVALID, "custom_diffusion_apply: NULL argument");
    if (!m->tokenizer) return lk_fail(LK_ERR_INVALID, "custom_diffusion_apply: the model has no tokenizer");
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open(&st, path);
    if (s != LK_OK) return s;
    const lk_weights *uw = m->part[LK_SD_UNET].weights;
    const lk_tensor *tab = lk_weights_get(m->part[LK_SD_TEXT_ENCODER].weights,
                                          "text_model.embeddings.token_embedding.weight");
    const int64_t D = tab && tab->ndim == 2 ? tab->shape[1] : 0;
    int nt = 0, nl = 0;
    /* check everything first */
    for (int i = 0; s == LK_OK && i < lk_safetensors_count(st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        if (is_layer(t->name)) {
            const lk_tensor *p = lk_weights_get(uw, t->name);
            if (!p) s = lk_fail(LK_ERR_FORMAT, "%s: layer '%s' is not in the model's UNet", path, t->name);
            else if (!same_shape(t, p))
                s = lk_fail(LK_ERR_FORMAT, "%s: layer '%s' does not have the model's shape (another "
                            "base model?)", path, t->name);
            nl++;
            continue;
        }
        const int64_t n = t->ndim == 1 ? 1 : t->ndim == 2 ? t->shape[0] : 0;
        const int64_t d = t->ndim == 1 ? t->shape[0] : t->ndim == 2 ? t->shape[1] : 0;
        if (n < 1 || d != D || D == 0)
            s = lk_fail(LK_ERR_FORMAT, "%s: tensor '%s' is neither a cross-attention layer nor a "
                        "token embedding of width %lld", path, t->name, (long long)D);
        else if (lk_tokenizer_token_id(m->tokenizer, t->name) >= 0)
            s = lk_fail(LK_ERR_INVALID, "%s: token '%s' is already in the vocabulary", path, t->name);
        else nt += (int)n;
    }
    if (s == LK_OK && nl == 0 && nt == 0) s = lk_fail(LK_ERR_FORMAT, "%s: no Custom Diffusion tensors", path);
    float *r = s == LK_OK ? malloc(sizeof(float) * (size_t)(nt > 0 ? nt : 1) * (size_t)(D > 0 ? D : 1)) : NULL;
    if (s == LK_OK && !r) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    int at = 0;
    for (int i = 0; s == LK_OK && i < lk_safetensors_count(st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        const int64_t n = lk_st_tensor_numel(t);
        if (is_layer(t->name)) {
            lk_tensor *p = lk_weights_get(uw, t->name);
            float *f = malloc(sizeof(float) * (size_t)n);
            if (!f) s = lk_fail(LK_ERR_NOMEM, "out of memory");
            if (s == LK_OK) s = lk_st_tensor_to_f32(t, f, (size_t)n);
            for (int64_t k = 0; s == LK_OK && k < n; k++) {
                if (p->dtype == LK_F32) ((float *)p->data)[k] = f[k];
                else if (p->dtype == LK_F16) ((uint16_t *)p->data)[k] = lk_f32_to_f16(f[k]);
                else if (p->dtype == LK_BF16) ((uint16_t *)p->data)[k] = lk_f32_to_bf16(f[k]);
                else s = lk_fail(LK_ERR_UNSUPPORTED, "custom diffusion: weight '%s' is not a float", p->name);
            }
            free(f);
            continue;
        }
        const int rows_n = (int)(t->ndim == 1 ? 1 : t->shape[0]);
        s = lk_st_tensor_to_f32(t, r + (size_t)at * (size_t)D, (size_t)n);
        if (s == LK_OK) s = lk_tokenizer_add_token_n(m->tokenizer, t->name, rows_n, NULL);
        at += rows_n;
    }
    lk_safetensors_close(st);
    if (s != LK_OK) {
        free(r);
        return s;
    }
    *rows = r;
    *n_tokens = nt;
    *dim = (int)D;
    return LK_OK;
}

/* Contract: see train_methods.h. */
lk_status lk_custom_diffusion_merge(const char *a, const char *b, const char *out) {
    if (!a || !b || !out) return lk_fail(LK_ERR_INVALID, "custom_diffusion_merge: NULL argument");
    lk_safetensors *fa = NULL, *fb = NULL;
    lk_status s = lk_safetensors_open(&fa, a);
    if (s == LK_OK) s = lk_safetensors_open(&fb, b);
    lk_st_writer *w = s == LK_OK ? lk_st_writer_new() : NULL;
    if (s == LK_OK && !w) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    float *x = NULL, *y = NULL;
    for (int pass = 0; s == LK_OK && pass < 2; pass++) {
        const lk_safetensors *f = pass ? fb : fa, *g = pass ? fa : fb;
        for (int i = 0; s == LK_OK && i < lk_safetensors_count(f); i++) {
            const lk_st_tensor *t = lk_safetensors_at(f, i);
            const lk_st_tensor *u = lk_safetensors_find(g, t->name);
            const int64_t n = lk_st_tensor_numel(t);
            if (u && !is_layer(t->name)) {
                s = lk_fail(LK_ERR_INVALID, "merge: both files define the token '%s'; retrain one "
                            "with another token", t->name);
                break;
            }
            if (u && pass) continue; /* merged in the first pass */
            if (u && (u->ndim != t->ndim || lk_st_tensor_numel(u) != n)) {
                s = lk_fail(LK_ERR_FORMAT, "merge: layer '%s' has different shapes in %s and %s", t->name, a, b);
                break;
            }
            free(x);
            free(y);
            x = malloc(sizeof(float) * (size_t)n + 1);
            y = malloc(sizeof(float) * (size_t)n + 1);
            if (!x || !y) {
                s = lk_fail(LK_ERR_NOMEM, "out of memory");
                break;
            }
            s = lk_st_tensor_to_f32(t, x, (size_t)n);
            if (s == LK_OK && u) {
                s = lk_st_tensor_to_f32(u, y, (size_t)n);
                for (int64_t k = 0; s == LK_OK && k < n; k++) x[k] = 0.5f * (x[k] + y[k]);
            }
            if (s == LK_OK) s = lk_st_writer_add(w, t->name, LK_F32, t->ndim, t->shape, x);
        }
    }
    char tokens[4096] = "";
    for (int pass = 0; s == LK_OK && pass < 2; pass++) {
        const char *tk = lk_safetensors_meta(pass ? fb : fa, "likeness.tokens");
        if (!tk) continue;
        if (tokens[0]) strncat(tokens, ",", sizeof tokens - strlen(tokens) - 1);
        strncat(tokens, tk, sizeof tokens - strlen(tokens) - 1);
    }
    for (int i = 0; s == LK_OK && i < lk_safetensors_meta_count(fa); i++) {
        const char *k, *v;
        lk_safetensors_meta_at(fa, i, &k, &v);
        if (strcmp(k, "likeness.tokens") && strcmp(k, "likeness.token") && strcmp(k, "likeness.class"))
            s = lk_st_writer_meta(w, k, v);
    }
    char from[8192];
    snprintf(from, sizeof from, "%s,%s", a, b);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.tokens", tokens);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.merged_from", from);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.merge", "mean of the K/V weights");
    if (s == LK_OK) s = lk_st_writer_save(w, out);
    free(x);
    free(y);
    lk_st_writer_free(w);
    lk_safetensors_close(fa);
    lk_safetensors_close(fb);
    return s;
}
