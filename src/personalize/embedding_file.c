/* embedding_file.c: textual-inversion embedding files (Gal et al. 2022) in the AUTOMATIC1111
 * layout (emb_params / string_to_param.*, named by the file) and the diffusers layout
 * ({token: vectors}); tokens go into the CLIP tokenizer, vectors to the text encoder's table. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/embedding_file.h"
#include "likeness/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_TOKENS 16

void lk_embedding_file_free(lk_embedding_file *e) {
    if (!e) return;
    for (int i = 0; i < e->n_tokens; i++) {
        free(e->tokens[i].token);
        free(e->tokens[i].vectors);
    }
    free(e->tokens);
    free(e->path);
    free(e->name);
    free(e);
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static bool is_float(const lk_st_tensor *t) {
    return t->dtype == LK_F32 || t->dtype == LK_F16 || t->dtype == LK_BF16;
}

/* Add one token's vectors from tensor t ((dim) or (n, dim)). */
static lk_status add_token(lk_embedding_file *e, const char *token, const lk_st_tensor *t, int text_dim) {
    const char *label = e->name;
    if (!is_float(t) || t->ndim < 1 || t->ndim > 2)
        return lk_fail(LK_ERR_FORMAT, "%s: '%s' is not a float vector or (n, dim) matrix", e->path, t->name);
    int64_t n = t->ndim == 2 ? t->shape[0] : 1, dim = t->shape[t->ndim - 1];
    if (n < 1 || n > LK_CLIP_CHUNK)
        return lk_fail(LK_ERR_FORMAT, "%s: '%s' has %lld vectors; 1 to %d are possible", e->path,
                       t->name, (long long)n, LK_CLIP_CHUNK);
    if (dim < 1 || dim > 65536)
        return lk_fail(LK_ERR_FORMAT, "%s: '%s' has %lld-dim vectors", e->path, t->name, (long long)dim);
    if (text_dim > 0 && dim != text_dim)
        return lk_fail(LK_ERR_INVALID, "embedding %s has %lld-dim vectors, the text encoder expects %d",
                       label, (long long)dim, text_dim);
    if (e->n_tokens && dim != e->dim)
        return lk_fail(LK_ERR_FORMAT, "%s: tokens of %d and %lld dims in one file", e->path, e->dim,
                       (long long)dim);
    lk_embedding_file_token *nt = realloc(e->tokens, sizeof *nt * (size_t)(e->n_tokens + 1));
    if (!nt) return lk_fail(LK_ERR_NOMEM, "out of memory");
    e->tokens = nt;
    lk_embedding_file_token *k = &e->tokens[e->n_tokens];
    memset(k, 0, sizeof *k);
    k->first_id = -1;
    k->n_vectors = (int)n;
    k->token = dup_n(token, strlen(token));
    k->vectors = malloc((size_t)(n * dim) * sizeof(float));
    e->n_tokens++; /* freed by lk_embedding_file_free even if incomplete */
    if (!k->token || !k->vectors) return lk_fail(LK_ERR_NOMEM, "out of memory");
    e->dim = (int)dim;
    return lk_st_tensor_to_f32(t, k->vectors, (size_t)(n * dim));
}

static lk_status load(lk_embedding_file *e, const lk_safetensors *st, const char *token, int text_dim) {
    const lk_st_tensor *a1111 = lk_safetensors_find(st, "emb_params");
    int count = lk_safetensors_count(st);
    for (int i = 0; !a1111 && i < count; i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        if (!strncmp(t->name, "string_to_param.", 16) && is_float(t)) a1111 = t;
    }
    if (lk_safetensors_find(st, "clip_l") || lk_safetensors_find(st, "clip_g"))
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: an SDXL embedding (clip_l / clip_g); only Stable "
                       "Diffusion 1.x/2.x embeddings are supported", e->path);
    if (a1111) return add_token(e, token ? token : e->name, a1111, text_dim);
    /* diffusers: one tensor per token */
    int n_float = 0;
    for (int i = 0; i < count; i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        if (!strncmp(t->name, "lora_", 5) || strstr(t->name, "model.") || strstr(t->name, ".weight"))
            return lk_fail(LK_ERR_FORMAT, "%s: not a textual-inversion embedding (found '%s')",
                           e->path, t->name);
        n_float += is_float(t);
    }
    if (!n_float) return lk_fail(LK_ERR_FORMAT, "%s: holds no embedding vectors", e->path);
    if (n_float > MAX_FILE_TOKENS)
        return lk_fail(LK_ERR_FORMAT, "%s: holds %d tensors; not a textual-inversion embedding",
                       e->path, n_float);
    if (token && n_float > 1)
        return lk_fail(LK_ERR_INVALID, "%s: holds %d tokens; it cannot be renamed to '%s'", e->path,
                       n_float, token);
    for (int i = 0; i < count; i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        if (!is_float(t)) continue;
        lk_status s = add_token(e, token ? token : t->name, t, text_dim);
        if (s != LK_OK) return s;
    }
    return LK_OK;
}

lk_status lk_embedding_file_load(lk_embedding_file **out, const char *path, const char *token, int text_dim) {
    if (!out || !path) return lk_fail(LK_ERR_INVALID, "embedding_load: NULL argument");
    *out = NULL;
    if (token && !*token) return lk_fail(LK_ERR_INVALID, "embedding_load: empty token");
    if (has_suffix(path, ".pt") || has_suffix(path, ".bin") || has_suffix(path, ".ckpt"))
        return lk_fail(LK_ERR_UNSUPPORTED, "%s is a pickle file; likeness never unpickles: convert "
                       "it to .safetensors", path);
    lk_embedding_file *e = calloc(1, sizeof *e);
    if (!e) return lk_fail(LK_ERR_NOMEM, "out of memory");
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    e->path = dup_n(path, strlen(path));
    e->name = dup_n(base, dot && dot != base ? (size_t)(dot - base) : strlen(base));
    lk_status s = e->path && e->name ? LK_OK : lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_safetensors *st = NULL;
    if (s == LK_OK) s = lk_safetensors_open(&st, path);
    if (s == LK_OK) s = load(e, st, token, text_dim);
    lk_safetensors_close(st);
    if (s != LK_OK) {
        lk_embedding_file_free(e);
        return s;
    }
    *out = e;
    return LK_OK;
}

lk_status lk_embedding_file_add_tokens(lk_embedding_file *e, lk_tokenizer *tok, int64_t *first_id, int *n_rows) {
    if (!e || !tok) return lk_fail(LK_ERR_INVALID, "embedding_add_tokens: NULL argument");
    int rows = 0;
    for (int i = 0; i < e->n_tokens; i++) {
        lk_embedding_file_token *k = &e->tokens[i];
        if (k->first_id >= 0)
            return lk_fail(LK_ERR_STATE, "embedding %s: token '%s' was already added", e->name, k->token);
        lk_status s = lk_tokenizer_add_token_n(tok, k->token, k->n_vectors, &k->first_id);
        if (s != LK_OK) {
            k->first_id = -1;
            return lk_fail_prefix(s, "embedding %s: ", e->name);
        }
        rows += k->n_vectors;
    }
    if (first_id) *first_id = e->n_tokens ? e->tokens[0].first_id : -1;
    if (n_rows) *n_rows = rows;
    return LK_OK;
}

lk_status lk_embedding_file_rows(const lk_embedding_file *e, float **rows, int *n_rows) {
    if (!e || !rows) return lk_fail(LK_ERR_INVALID, "embedding_rows: NULL argument");
    *rows = NULL;
    int n = 0;
    for (int i = 0; i < e->n_tokens; i++) n += e->tokens[i].n_vectors;
    float *r = malloc((size_t)n * (size_t)e->dim * sizeof(float) + 1);
    if (!r) return lk_fail(LK_ERR_NOMEM, "out of memory");
    size_t o = 0;
    for (int i = 0; i < e->n_tokens; i++) {
        size_t m = (size_t)e->tokens[i].n_vectors * (size_t)e->dim;
        memcpy(r + o, e->tokens[i].vectors, m * sizeof(float));
        o += m;
    }
    *rows = r;
    if (n_rows) *n_rows = n;
    return LK_OK;
}
