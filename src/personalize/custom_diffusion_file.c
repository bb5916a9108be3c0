/* custom_diffusion_file.c: Custom Diffusion files (Kumari et al. 2022) in diffusers' key names:
 * applying one to a loaded model (K/V weights replaced, modifier tokens added) and merging two
 * files into one with the paper's constrained least-squares merge (sec. 3.2). */
#define _POSIX_C_SOURCE 200809L
#include "likeness/train_methods.h"

#include <math.h>
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

/* ---- the merge: Kumari et al. 2022, "Multi-Concept Customization of Text-to-Image Diffusion",
 * sec. 3.2 (constrained least squares on the cross-attention K/V projections) ---- */

/* Generic captions (subjects x templates) whose text-encoder features are the regularization
 * set C_reg: the merged weights should act on them as the base weights do. */
static const char *const reg_subjects[] = {"dog", "cat", "man", "woman", "house", "car", "tree",
                                           "mountain", "bird", "flower", "city street", "table"};
static const char *const reg_templates[] = {"a photo of a %s", "a painting of a %s", "a %s",
                                            "a close-up photo of the %s", "a drawing of a %s",
                                            "a blurry photo of a %s", "a %s in the snow",
                                            "a bright photo of the %s"};
#define N_REG_SUBJECTS (int)(sizeof reg_subjects / sizeof reg_subjects[0])
#define N_REG_TEMPLATES (int)(sizeof reg_templates / sizeof reg_templates[0])

/* A growing row matrix (rows of width d, double). */
typedef struct rowmat {
    double *x;
    int n, cap, d;
} rowmat;

static lk_status rows_push(rowmat *r, const float *row) {
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        double *x = realloc(r->x, sizeof(double) * (size_t)cap * (size_t)r->d);
        if (!x) return lk_fail(LK_ERR_NOMEM, "out of memory");
        r->x = x;
        r->cap = cap;
    }
    for (int j = 0; j < r->d; j++) r->x[(size_t)r->n * (size_t)r->d + (size_t)j] = (double)row[j];
    r->n++;
    return LK_OK;
}

/* Final-layer (final norm) text-encoder features of prompt, as generation conditions on them,
 * appended to r: the positions from the first id >= first_new (the modifier token) through EOS,
 * or all positions (BOS..EOS) when first_new < 0. Positions after EOS are padding and are not
 * run (the encoder is causal, so the earlier positions do not depend on them). */
static lk_status prompt_features(const lk_clip_text *te, const lk_tokenizer *tok, lk_pad_mode pad,
                                 const char *prompt, int64_t first_new, rowmat *r) {
    int64_t ids[77];
    int nc = 0;
    lk_status s = lk_tokenizer_encode(tok, prompt, ids, 77, pad, &nc);
    if (s != LK_OK) return s;
    const int L = nc + 2 < 77 ? nc + 2 : 77;
    int p0 = 0;
    if (first_new >= 0) {
        p0 = -1;
        for (int p = 1; p < L - 1 && p0 < 0; p++)
            if (ids[p] >= first_new) p0 = p;
        if (p0 < 0) return lk_fail(LK_ERR_INVALID, "merge: the prompt \"%s\" has no new token", prompt);
    }
    lk_ctx *ctx = lk_ctx_new();
    if (!ctx) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_set_grad_enabled(ctx, false);
    lk_tensor *z = lk_contiguous(ctx, lk_clip_text_forward(ctx, te, lk_tensor_wrap(ctx, LK_I64, LK_DIMS(1, L), ids),
                                                           1, true));
    s = lk_ctx_status(ctx);
    if (s == LK_OK && (!z || z->ndim != 3 || z->shape[1] != L || z->shape[2] != r->d || z->dtype != LK_F32))
        s = lk_fail(LK_ERR_INVALID, "merge: unexpected text encoder output");
    for (int p = p0; s == LK_OK && p < L; p++) s = rows_push(r, (const float *)z->data + (size_t)p * (size_t)r->d);
    lk_ctx_free(ctx);
    return s;
}

/* In-place Cholesky factor (lower) of the n x n SPD matrix a; false when a pivot is not
 * positive relative to the largest diagonal entry (singular or indefinite). */
static bool cholesky(double *a, int n) {
    double dmax = 0.0;
    for (int i = 0; i < n; i++) dmax = fmax(dmax, fabs(a[(size_t)i * (size_t)n + (size_t)i]));
    for (int j = 0; j < n; j++) {
        double *aj = a + (size_t)j * (size_t)n;
        double v = aj[j];
        for (int k = 0; k < j; k++) v -= aj[k] * aj[k];
        if (!(v > 1e-12 * dmax) || dmax == 0.0) return false;
        aj[j] = sqrt(v);
        for (int i = j + 1; i < n; i++) {
            double *ai = a + (size_t)i * (size_t)n;
            double t = ai[j];
            for (int k = 0; k < j; k++) t -= ai[k] * aj[k];
            ai[j] = t / aj[j];
        }
    }
    return true;
}

/* Solve (L L^T) x = b in place for m right-hand sides stored as rows of b (m x n). */
static void chol_solve_rows(const double *l, int n, double *b, int m) {
    for (int r = 0; r < m; r++) {
        double *x = b + (size_t)r * (size_t)n;
        for (int i = 0; i < n; i++) {
            double t = x[i];
            for (int k = 0; k < i; k++) t -= l[(size_t)i * (size_t)n + (size_t)k] * x[k];
            x[i] = t / l[(size_t)i * (size_t)n + (size_t)i];
        }
        for (int i = n - 1; i >= 0; i--) {
            double t = x[i];
            for (int k = i + 1; k < n; k++) t -= l[(size_t)k * (size_t)n + (size_t)i] * x[k];
            x[i] = t / l[(size_t)i * (size_t)n + (size_t)i];
        }
    }
}

/* The per-layer-independent part of the closed form: G = A^-1 C^T (C A^-1 C^T)^-1, stored
 * transposed (s x d: row i is column i of G), with A = C_reg^T C_reg + ridge I. Then for every
 * layer W^T = W0^T + G (V - C W0^T). false when C A^-1 C^T is singular (the constraints are
 * dependent: e.g. two concepts share a feature row). */
static lk_status merge_gain(const rowmat *creg, const rowmat *c, double **gt, bool *ok) {
    const int d = c->d, s = c->n;
    *gt = NULL;
    *ok = false;
    double *a = calloc((size_t)d * (size_t)d, sizeof(double));
    double *p = malloc(sizeof(double) * (size_t)s * (size_t)d);
    double *m = malloc(sizeof(double) * (size_t)s * (size_t)s);
    if (!a || !p || !m) {
        free(a);
        free(p);
        free(m);
        return lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    for (int r = 0; r < creg->n; r++) {
        const double *x = creg->x + (size_t)r * (size_t)d;
        for (int i = 0; i < d; i++)
            for (int j = 0; j <= i; j++) a[(size_t)i * (size_t)d + (size_t)j] += x[i] * x[j];
    }
    double tr = 0.0;
    for (int i = 0; i < d; i++) tr += a[(size_t)i * (size_t)d + (size_t)i];
    const double ridge = 1e-5 * (tr > 0.0 ? tr / d : 1.0);
    for (int i = 0; i < d; i++) {
        a[(size_t)i * (size_t)d + (size_t)i] += ridge;
        for (int j = 0; j < i; j++) a[(size_t)j * (size_t)d + (size_t)i] = a[(size_t)i * (size_t)d + (size_t)j];
    }
    bool good = cholesky(a, d);
    if (good) {
        memcpy(p, c->x, sizeof(double) * (size_t)s * (size_t)d); /* P^T = C A^-1 (A symmetric) */
        chol_solve_rows(a, d, p, s);
        for (int i = 0; i < s; i++) /* M = C A^-1 C^T */
            for (int j = 0; j < s; j++) {
                double t = 0.0;
                for (int k = 0; k < d; k++) t += p[(size_t)i * (size_t)d + (size_t)k] * c->x[(size_t)j * (size_t)d + (size_t)k];
                m[(size_t)i * (size_t)s + (size_t)j] = t;
            }
        for (int i = 0; i < s; i++) /* symmetrize against rounding */
            for (int j = 0; j < i; j++) {
                double t = 0.5 * (m[(size_t)i * (size_t)s + (size_t)j] + m[(size_t)j * (size_t)s + (size_t)i]);
                m[(size_t)i * (size_t)s + (size_t)j] = m[(size_t)j * (size_t)s + (size_t)i] = t;
            }
        good = cholesky(m, s);
    }
    if (good) {
        /* G^T = M^-1 P^T: solve M X = P^T column by column (columns of P^T are rows of P) */
        double *col = malloc(sizeof(double) * (size_t)s);
        if (!col) good = false;
        for (int k = 0; col && k < d; k++) {
            for (int i = 0; i < s; i++) col[i] = p[(size_t)i * (size_t)d + (size_t)k];
            chol_solve_rows(m, s, col, 1);
            for (int i = 0; i < s; i++) p[(size_t)i * (size_t)d + (size_t)k] = col[i];
        }
        if (!col) {
            free(a);
            free(p);
            free(m);
            return lk_fail(LK_ERR_NOMEM, "out of memory");
        }
        free(col);
    }
    free(a);
    free(m);
    if (!good) {
        free(p);
        return LK_OK;
    }
    *gt = p;
    *ok = true;
    return LK_OK;
}

/* One merge input: its file, its tokens and the rows of C it contributes. */
typedef struct cd_input {
    lk_safetensors *st;
    const char *path;
    int row0, nrow; /* rows of C */
} cd_input;

/* Adds the file's token rows to the tokenizer and the encoder, then appends the features of
 * each token's prompt ("a photo of a TOKEN CLASS", CLASS from likeness.class for the file's
 * likeness.token, else "a photo of a TOKEN") to c. */
static lk_status input_features(cd_input *in, lk_clip_text *te, lk_tokenizer *tok, lk_pad_mode pad,
                                rowmat *c) {
    lk_status s = LK_OK;
    const int64_t first_new = lk_clip_text_vocab_size(te);
    int64_t id = first_new;
    in->row0 = c->n;
    for (int i = 0; s == LK_OK && i < lk_safetensors_count(in->st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(in->st, i);
        if (is_layer(t->name)) continue;
        const int64_t n = lk_st_tensor_numel(t);
        const int nv = (int)(t->ndim == 1 ? 1 : t->shape[0]);
        if ((t->ndim != 1 && t->ndim != 2) || n != (int64_t)nv * c->d)
            return lk_fail(LK_ERR_FORMAT, "%s: token '%s' is not a row of width %d", in->path, t->name, c->d);
        float *r = malloc(sizeof(float) * (size_t)n);
        if (!r) return lk_fail(LK_ERR_NOMEM, "out of memory");
        s = lk_st_tensor_to_f32(t, r, (size_t)n);
        int64_t fid = -1;
        if (s == LK_OK) s = lk_tokenizer_add_token_n(tok, t->name, nv, &fid);
        if (s == LK_OK) s = lk_clip_text_add_tokens(te, nv, r, NULL);
        if (s == LK_OK && fid != id)
            s = lk_fail(LK_ERR_INVALID, "merge: tokenizer and text encoder ids disagree for '%s'", t->name);
        id += nv;
        free(r);
    }
    const char *tk = lk_safetensors_meta(in->st, "likeness.token");
    const char *cls = lk_safetensors_meta(in->st, "likeness.class");
    for (int i = 0; s == LK_OK && i < lk_safetensors_count(in->st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(in->st, i);
        if (is_layer(t->name)) continue;
        char prompt[512];
        if (tk && cls && !strcmp(tk, t->name)) snprintf(prompt, sizeof prompt, "a photo of a %s %s", t->name, cls);
        else snprintf(prompt, sizeof prompt, "a photo of a %s", t->name);
        s = prompt_features(te, tok, pad, prompt, first_new, c);
    }
    in->nrow = c->n - in->row0;
    return s;
}

/* Features of the generic captions through the base encoder (all positions BOS..EOS). */
static lk_status reg_features(const lk_clip_text *te, const lk_tokenizer *tok, lk_pad_mode pad, rowmat *creg) {
    lk_status s = LK_OK;
    for (int i = 0; s == LK_OK && i < N_REG_SUBJECTS; i++)
        for (int j = 0; s == LK_OK && j < N_REG_TEMPLATES; j++) {
            char prompt[256];
            snprintf(prompt, sizeof prompt, reg_templates[j], reg_subjects[i]);
            s = prompt_features(te, tok, pad, prompt, -1, creg);
        }
    return s;
}

/* The merged weight of one layer (d_out x d_in floats into w): the closed form when gt is set
 * and the layer reads the text features (d_in == d), else the mean of the two files' weights
 * (a layer in one file only is kept as it is). wa / wb: the files' weights, NULL where the file
 * does not have the layer (its concept then keeps the base weight w0 there). */
static void merge_layer(const cd_input in[2], const rowmat *c, const double *gt, const float *w0,
                        const float *wa, const float *wb, int64_t d_out, int64_t d_in, double *scr,
                        float *w) {
    const int64_t n = d_out * d_in;
    if (!gt || d_in != c->d) {
        for (int64_t k = 0; k < n; k++)
            w[k] = wa && wb ? 0.5f * (wa[k] + wb[k]) : wa ? wa[k] : wb[k];
        return;
    }
    const int s = c->n, d = c->d;
    double *r = scr, *acc = scr + s; /* scr: s + d doubles */
    for (int64_t o = 0; o < d_out; o++) {
        const float *b0 = w0 + o * d_in;
        for (int i = 0; i < 2; i++) {
            const float *wi = i ? wb : wa;
            for (int q = in[i].row0; q < in[i].row0 + in[i].nrow; q++) {
                double t = 0.0;
                if (wi)
                    for (int64_t k = 0; k < d_in; k++)
                        t += c->x[(size_t)q * (size_t)d + (size_t)k] * ((double)wi[o * d_in + k] - (double)b0[k]);
                r[q] = t; /* (V - C W0^T)[q][o] */
            }
        }
        for (int k = 0; k < d; k++) acc[k] = (double)b0[k];
        for (int q = 0; q < s; q++)
            for (int k = 0; k < d; k++) acc[k] += gt[(size_t)q * (size_t)d + (size_t)k] * r[q];
        for (int k = 0; k < d; k++) w[o * d_in + k] = (float)acc[k];
    }
}

/* Contract: see train_methods.h. */
lk_status lk_custom_diffusion_merge(const char *model, const char *tokenizer_dir, const char *a,
                                    const char *b, const char *out) {
    if (!model || !a || !b || !out) return lk_fail(LK_ERR_INVALID, "custom_diffusion_merge: NULL argument");
    cd_input in[2] = {{NULL, a, 0, 0}, {NULL, b, 0, 0}};
    lk_status s = lk_safetensors_open(&in[0].st, a);
    if (s == LK_OK) s = lk_safetensors_open(&in[1].st, b);
    /* cheap checks first: tokens in both files, layers of different shapes */
    for (int i = 0; s == LK_OK && i < lk_safetensors_count(in[0].st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(in[0].st, i);
        const lk_st_tensor *u = lk_safetensors_find(in[1].st, t->name);
        if (u && !is_layer(t->name))
            s = lk_fail(LK_ERR_INVALID, "merge: both files define the token '%s'; retrain one "
                        "with another token", t->name);
        else if (u && (u->ndim != t->ndim || lk_st_tensor_numel(u) != lk_st_tensor_numel(t)))
            s = lk_fail(LK_ERR_FORMAT, "merge: layer '%s' has different shapes in %s and %s", t->name, a, b);
    }
    lk_sd_model *m = NULL;
    lk_clip_text *te = NULL;
    if (s == LK_OK) {
        lk_sd_load_opts lo;
        lk_sd_load_opts_default(&lo);
        lo.tokenizer_dir = tokenizer_dir;
        s = lk_sd_model_load(&m, model, &lo);
    }
    if (s == LK_OK) {
        lk_clip_text_config tc;
        const lk_sd_part *pt = &m->part[LK_SD_TEXT_ENCODER];
        s = lk_clip_text_config_parse(&tc, pt->config_json, strlen(pt->config_json), "text_encoder");
        if (s == LK_OK) s = lk_clip_text_new(&te, &tc, pt->weights, NULL);
    }
    const int d = te ? (int)lk_clip_text_token_table(te)->shape[1] : 1;
    rowmat creg = {NULL, 0, 0, d}, c = {NULL, 0, 0, d};
    if (s == LK_OK) s = reg_features(te, m->tokenizer, m->pad, &creg);
    for (int i = 0; s == LK_OK && i < 2; i++) s = input_features(&in[i], te, m->tokenizer, m->pad, &c);
    double *gt = NULL;
    bool solved = false;
    if (s == LK_OK && c.n > 0 && c.n <= d) s = merge_gain(&creg, &c, &gt, &solved);
    lk_st_writer *w = s == LK_OK ? lk_st_writer_new() : NULL;
    double *scr = s == LK_OK ? malloc(sizeof(double) * (size_t)(c.n + d)) : NULL;
    if (s == LK_OK && (!w || !scr)) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    const lk_weights *uw = m ? m->part[LK_SD_UNET].weights : NULL;
    float *x = NULL, *ya = NULL, *yb = NULL, *z = NULL;
    for (int pass = 0; s == LK_OK && pass < 2; pass++) {
        const lk_safetensors *f = in[pass].st, *g = in[!pass].st;
        for (int i = 0; s == LK_OK && i < lk_safetensors_count(f); i++) {
            const lk_st_tensor *t = lk_safetensors_at(f, i);
            const lk_st_tensor *u = lk_safetensors_find(g, t->name);
            const int64_t n = lk_st_tensor_numel(t);
            if (u && pass) continue; /* merged in the first pass */
            free(x);
            free(ya);
            free(yb);
            free(z);
            x = malloc(sizeof(float) * (size_t)n + 1);
            ya = malloc(sizeof(float) * (size_t)n + 1);
            yb = malloc(sizeof(float) * (size_t)n + 1);
            z = malloc(sizeof(float) * (size_t)n + 1);
            if (!x || !ya || !yb || !z) {
                s = lk_fail(LK_ERR_NOMEM, "out of memory");
                break;
            }
            if (!is_layer(t->name)) {
                s = lk_st_tensor_to_f32(t, x, (size_t)n);
                if (s == LK_OK) s = lk_st_writer_add(w, t->name, LK_F32, t->ndim, t->shape, x);
                continue;
            }
            const lk_tensor *p = lk_weights_get(uw, t->name);
            if (!p || p->ndim != t->ndim || lk_numel(p) != n) {
                s = lk_fail(LK_ERR_FORMAT, "merge: layer '%s' of %s is not in the base model's UNet "
                            "with this shape (another base model?)", t->name, in[pass].path);
                break;
            }
            for (int64_t k = 0; k < n; k++) x[k] = lk_get_f32(p, k);
            const lk_st_tensor *ta = pass ? u : t, *tb = pass ? t : u;
            if (ta) s = lk_st_tensor_to_f32(ta, ya, (size_t)n);
            if (s == LK_OK && tb) s = lk_st_tensor_to_f32(tb, yb, (size_t)n);
            if (s != LK_OK) break;
            const int64_t d_out = t->ndim == 2 ? t->shape[0] : 1, d_in = n / (d_out > 0 ? d_out : 1);
            merge_layer(in, &c, solved && t->ndim == 2 ? gt : NULL, x, ta ? ya : NULL, tb ? yb : NULL,
                        d_out, d_in, scr, z);
            s = lk_st_writer_add(w, t->name, LK_F32, t->ndim, t->shape, z);
        }
    }
    char tokens[4096] = "";
    for (int pass = 0; s == LK_OK && pass < 2; pass++) {
        const char *tk = lk_safetensors_meta(in[pass].st, "likeness.tokens");
        if (!tk) continue;
        if (tokens[0]) strncat(tokens, ",", sizeof tokens - strlen(tokens) - 1);
        strncat(tokens, tk, sizeof tokens - strlen(tokens) - 1);
    }
    for (int i = 0; s == LK_OK && i < lk_safetensors_meta_count(in[0].st); i++) {
        const char *k, *v;
        lk_safetensors_meta_at(in[0].st, i, &k, &v);
        if (strcmp(k, "likeness.tokens") && strcmp(k, "likeness.token") && strcmp(k, "likeness.class"))
            s = lk_st_writer_meta(w, k, v);
    }
    char from[8192], how[256];
    snprintf(from, sizeof from, "%s,%s", a, b);
    if (solved)
        snprintf(how, sizeof how, "constrained least squares (Kumari et al. 2022 sec. 3.2): %d "
                 "constraint rows, %d regularization rows", c.n, creg.n);
    else
        snprintf(how, sizeof how, "mean of the K/V weights (the constraint system of %d rows was "
                 "singular)", c.n);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.tokens", tokens);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.merged_from", from);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.merge", how);
    if (s == LK_OK) s = lk_st_writer_save(w, out);
    free(x);
    free(ya);
    free(yb);
    free(z);
    free(gt);
    free(scr);
    free(creg.x);
    free(c.x);
    lk_st_writer_free(w);
    lk_clip_text_free(te);
    lk_sd_model_free(m);
    lk_safetensors_close(in[0].st);
    lk_safetensors_close(in[1].st);
    return s;
}
