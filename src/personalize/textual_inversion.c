/* textual_inversion.c: Textual Inversion (Gal et al. 2022, "An Image is Worth One Word"): new
 * token vectors in the text encoder's embedding space, initialized from a word and optimized
 * through the frozen text encoder and UNet (as diffusers' textual_inversion.py); outputs the
 * AUTOMATIC1111 (emb_params) and diffusers (learned_embeds) embedding files. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/train.h"
#include "personalize/train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ti_state {
    lk_ti_options o;
    char init_word[128];
    int64_t first_id;   /* -1 before prepare */
    int dim;
    lk_tensor *table;   /* borrowed from the text encoder */
} ti_state;

/* Contract: see train.h. */
void lk_ti_options_default(lk_ti_options *o) {
    o->n_vectors = 1;
    o->init_word = NULL;
}

static lk_status ti_prepare(lk_train_method *m, lk_trainer *tr) {
    ti_state *st = m->self;
    const lk_train_config *cfg = lk_trainer_config(tr);
    lk_tokenizer *tok = lk_trainer_tokenizer(tr);
    lk_clip_text *te = lk_trainer_text_encoder(tr);
    const char *token = cfg->token;
    if (!token || !token[0]) return lk_fail(LK_ERR_INVALID, "textual inversion: no token given");
    const int nv = st->o.n_vectors;
    if (nv < 1 || nv > LK_CLIP_CHUNK)
        return lk_fail(LK_ERR_INVALID, "textual inversion: %d vectors; 1 to %d are possible", nv,
                       LK_CLIP_CHUNK);
    lk_status s = lk__check_new_token(tok, "textual inversion", token);
    if (s != LK_OK) return s;
    const char *iw = st->o.init_word;
    const bool is_default = !iw || !iw[0];
    if (is_default) iw = cfg->class_word && cfg->class_word[0] ? cfg->class_word
                         : cfg->captions == LK_CAPTION_STYLE ? "style" : "object";
    if (iw != st->init_word) snprintf(st->init_word, sizeof st->init_word, "%s", iw);
    lk_tensor *table = lk_clip_text_token_table(te);
    const int64_t V = table->shape[0], D = table->shape[1];
    if (lk_tokenizer_vocab_size(tok) != V)
        return lk_fail(LK_ERR_INVALID, "textual inversion: the tokenizer has %lld ids, the text "
                       "encoder's table %lld rows", (long long)lk_tokenizer_vocab_size(tok),
                       (long long)V);
    float *rows = malloc(sizeof(float) * (size_t)nv * (size_t)D);
    if (!rows) return lk_fail(LK_ERR_NOMEM, "out of memory");
    /* the class word is the user's choice: only the built-in "object" / "style" may be split */
    s = lk__new_token_row(tok, table, "textual inversion", st->init_word,
                          is_default && !(cfg->class_word && cfg->class_word[0]), rows);
    if (s != LK_OK) {
        free(rows);
        return s;
    }
    for (int v = 1; v < nv; v++) memcpy(rows + (size_t)v * (size_t)D, rows, sizeof(float) * (size_t)D);
    int64_t first = -1, first_te = -1;
    s = lk_tokenizer_add_token_n(tok, token, nv, &first);
    if (s == LK_OK) s = lk_clip_text_add_tokens(te, nv, rows, &first_te);
    free(rows);
    if (s != LK_OK) return s;
    if (first != first_te)
        return lk_fail(LK_ERR_STATE, "textual inversion: tokenizer id %lld and table row %lld differ",
                       (long long)first, (long long)first_te);
    st->table = lk_clip_text_token_table(te);
    st->first_id = first;
    st->dim = (int)D;
    return lk_set_trainable_rows(st->table, first, first + nv);
}

static lk_status ti_collect(lk_train_method *m, lk_trainer *tr, lk_paramset *ps) {
    (void)tr;
    ti_state *st = m->self;
    if (!st->table) return lk_fail(LK_ERR_STATE, "textual inversion: not prepared");
    return lk_paramset_add(ps, st->table);
}

static lk_status ti_save(lk_train_method *m, lk_trainer *tr, const char *path) {
    ti_state *st = m->self;
    if (!st->table) return lk_fail(LK_ERR_STATE, "textual inversion: not prepared");
    const lk_train_config *cfg = lk_trainer_config(tr);
    const int64_t shape[2] = {st->o.n_vectors, st->dim};
    const float *rows = (const float *)st->table->data + st->first_id * st->dim;
    char nv[32];
    snprintf(nv, sizeof nv, "%d", st->o.n_vectors);
    char *dpath = lk_train_diffusers_path(path);
    if (!dpath) return LK_ERR_NOMEM;
    lk_status s = LK_OK;
    for (int k = 0; s == LK_OK && k < 2; k++) {
        lk_st_writer *w = lk_st_writer_new();
        if (!w) {
            s = lk_fail(LK_ERR_NOMEM, "out of memory");
            break;
        }
        /* A1111 reads a one-tensor file named after the file; diffusers {token: vectors} */
        s = lk_st_writer_add(w, k == 0 ? "emb_params" : cfg->token, LK_F32, 2, shape, rows);
        if (s == LK_OK) s = lk_trainer_add_metadata(tr, w);
        if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.vectors", nv);
        if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.init_word", st->init_word);
        if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.layout", k == 0 ? "a1111" : "diffusers");
        if (s == LK_OK) s = lk_st_writer_save(w, k == 0 ? path : dpath);
        lk_st_writer_free(w);
    }
    free(dpath);
    return s;
}

static void ti_free(lk_train_method *m) {
    if (!m) return;
    free(m->self);
    free(m);
}

/* Contract: see train.h. */
lk_status lk_ti_method_new(lk_train_method **out, const lk_ti_options *o) {
    if (!out) return lk_fail(LK_ERR_INVALID, "ti_method_new: NULL output");
    *out = NULL;
    lk_train_method *m = calloc(1, sizeof *m);
    ti_state *st = calloc(1, sizeof *st);
    if (!m || !st) {
        free(m);
        free(st);
        return lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    if (o) st->o = *o;
    else lk_ti_options_default(&st->o);
    st->o.init_word = NULL; /* copied below (the caller's string may not outlive the method) */
    if (o && o->init_word) snprintf(st->init_word, sizeof st->init_word, "%s", o->init_word);
    st->o.init_word = st->init_word[0] ? st->init_word : NULL;
    st->first_id = -1;
    m->name = "textual_inversion";
    m->text_encoder_grad = true;
    m->self = st;
    m->prepare = ti_prepare;
    m->collect = ti_collect;
    m->save = ti_save;
    m->free = ti_free;
    *out = m;
    return LK_OK;
}

/* Contract: see train.h. */
const float *lk_ti_vectors(const lk_train_method *m, int *n, int *dim, int64_t *first_id) {
    const ti_state *st = m && m->prepare == ti_prepare ? m->self : NULL;
    if (!st || !st->table) return NULL;
    if (n) *n = st->o.n_vectors;
    if (dim) *dim = st->dim;
    if (first_id) *first_id = st->first_id;
    return (const float *)st->table->data + st->first_id * st->dim;
}
