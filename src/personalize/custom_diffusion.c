/* custom_diffusion.c: Custom Diffusion (Kumari et al. 2022, "Multi-Concept Customization of
 * Text-to-Image Diffusion"): only the cross-attention key/value projections and one modifier
 * token per concept train, several concepts jointly, optional regularization with class images;
 * output in diffusers' custom-diffusion key names; applying and merging files. */
#define _POSIX_C_SOURCE 200809L
#include "personalize/prior_preservation.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 256

typedef struct cd_state {
    lk_cd_opts o;
    char str[LK_CD_MAX_CONCEPTS][4][256]; /* copies: images, token, class, init word */
    char prior_str[3][1024];
    bool prior_on;
    lk__prior prior;
    lk__train_data data[LK_CD_MAX_CONCEPTS]; /* concepts 1..n-1 */
    int64_t *ids[LK_CD_MAX_CONCEPTS];        /* (n_ctx) caption ids of concepts 1..n-1 */
    int64_t first_id;                        /* token row of concept 0 (the others follow) */
    int dim;
    lk_tensor *table;
    lk_tensor *layer[MAX_LAYERS];
    int n_layers;
    lk_train_batch batch;                    /* the multi-concept batch */
} cd_state;

/* Contract: see train_methods.h. */
void lk_cd_opts_default(lk_cd_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_concepts = 1;
    lk_prior_opts_default(&o->prior);
}

static const char *concept_field(const cd_state *st, const lk_train_config *cfg, int k, int f) {
    if (st->str[k][f][0]) return st->str[k][f];
    if (k > 0) return NULL;
    return f == 0 ? cfg->images : f == 1 ? cfg->token : f == 2 ? cfg->class_word : NULL;
}

static bool is_cd_layer(const char *name, bool q_out) {
    const char *a = strstr(name, ".attn2.");
    if (!a) return false;
    a += 7;
    if (!strcmp(a, "to_k.weight") || !strcmp(a, "to_v.weight")) return true;
    return q_out && (!strcmp(a, "to_q.weight") || !strcmp(a, "to_out.0.weight") ||
                     !strcmp(a, "to_out.0.bias"));
}

/* cache the images of concept k (> 0) and tokenize its caption */
static lk_status prepare_concept(cd_state *st, lk_trainer *tr, int k) {
    lk_train_config c = *lk_trainer_config(tr);
    c.images = concept_field(st, &c, k, 0);
    c.token = concept_field(st, &c, k, 1);
    c.class_word = concept_field(st, &c, k, 2);
    if (!c.images || !c.token)
        return lk_fail(LK_ERR_INVALID, "custom diffusion: concept %d needs an image folder and a "
                       "token", k + 1);
    lk_status s = lk__train_data_scan(&st->data[k], &c);
    int lc, lh, lw;
    lk_trainer_latent_shape(tr, &lc, &lh, &lw);
    if (s == LK_OK) s = lk__train_data_encode(&st->data[k], tr->ctx, lk_trainer_vae(tr), c.resolution,
                                              lc, lh, lw);
    if (s != LK_OK) lk_fail_prefix(s, "custom diffusion: concept %d: ", k + 1);
    return s;
}

/* token ids of concept k's caption (after its token exists) */
static lk_status concept_ids(cd_state *st, lk_trainer *tr, int k) {
    const lk_train_config *c = lk_trainer_config(tr);
    const char *token = concept_field(st, c, k, 1), *cw = concept_field(st, c, k, 2);
    char cap[LK_TRAIN_MAX_CAPTION];
    lk_status s = lk__train_fill_caption(c->prompt ? c->prompt : "a {token} {class}", token, cw, cap,
                                         sizeof cap);
    st->ids[k] = calloc((size_t)tr->n_ctx, sizeof(int64_t));
    if (s == LK_OK && !st->ids[k]) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK)
        s = lk_tokenizer_encode(lk_trainer_tokenizer(tr), cap, st->ids[k], tr->n_ctx,
                                lk_trainer_model(tr)->pad, NULL);
    if (s != LK_OK) lk_fail_prefix(s, "custom diffusion: concept %d: ", k + 1);
    return s;
}

static lk_status cd_prepare(lk_train_method *m, lk_trainer *tr) {
    cd_state *st = m->self;
    const lk_train_config *cfg = lk_trainer_config(tr);
    const int nc = st->o.n_concepts;
    if (nc < 1 || nc > LK_CD_MAX_CONCEPTS)
        return lk_fail(LK_ERR_INVALID, "custom diffusion: %d concepts (1 to %d)", nc, LK_CD_MAX_CONCEPTS);
    if (cfg->store != LK_F32)
        return lk_fail(LK_ERR_INVALID, "custom diffusion: load the base model with store F32 (the "
                       "K/V weights train in place)");
    lk_status s = LK_OK;
    if (st->prior_on) s = lk__prior_init(&st->prior, tr, &st->o.prior);
    /* the text before the tokens exist: the concepts' data, then the new tokens */
    lk_tokenizer *tok = lk_trainer_tokenizer(tr);
    lk_clip_text *te = lk_trainer_text_encoder(tr);
    for (int k = 1; s == LK_OK && k < nc; k++) s = prepare_concept(st, tr, k);
    for (int k = 0; s == LK_OK && k < nc; k++) {
        const char *token = concept_field(st, cfg, k, 1);
        if (!token) return lk_fail(LK_ERR_INVALID, "custom diffusion: concept %d has no token", k + 1);
        s = lk__check_new_token(tok, "custom diffusion", token);
        const char *cw = concept_field(st, cfg, k, 2);
        const char *iw = concept_field(st, cfg, k, 3);
        /* a class word or init word is the user's; only the built-in "ktn" may be split */
        const bool is_default = !iw && !(cw && cw[0]);
        if (!iw) iw = cw && cw[0] ? cw : "ktn";
        if (s != LK_OK) break;
        lk_tensor *table = lk_clip_text_token_table(te);
        const int64_t D = table->shape[1];
        float *row = malloc(sizeof(float) * (size_t)D);
        if (!row) return lk_fail(LK_ERR_NOMEM, "out of memory");
        s = lk__new_token_row(tok, table, "custom diffusion", iw, is_default, row);
        if (s != LK_OK) {
            free(row);
            break;
        }
        int64_t a = -1, b = -1;
        s = lk_tokenizer_add_token_n(tok, token, 1, &a);
        if (s == LK_OK) s = lk_clip_text_add_tokens(te, 1, row, &b);
        free(row);
        if (s == LK_OK && a != b)
            s = lk_fail(LK_ERR_STATE, "custom diffusion: tokenizer id %lld, table row %lld",
                        (long long)a, (long long)b);
        if (k == 0) st->first_id = a;
        st->dim = (int)D;
    }
    if (s != LK_OK) return s;
    for (int k = 1; s == LK_OK && k < nc; k++) s = concept_ids(st, tr, k);
    if (s != LK_OK) return s;
    st->table = lk_clip_text_token_table(te);
    s = lk_set_trainable_rows(st->table, st->first_id, st->first_id + nc);
    const lk_weights *w = lk_trainer_model(tr)->part[LK_SD_UNET].weights;
    for (int i = 0; s == LK_OK && i < lk_weights_count(w); i++) {
        lk_tensor *p = lk_weights_at(w, i);
        if (!is_cd_layer(p->name, st->o.train_q_out)) continue;
        if (st->n_layers == MAX_LAYERS)
            return lk_fail(LK_ERR_UNSUPPORTED, "custom diffusion: more than %d layers", MAX_LAYERS);
        st->layer[st->n_layers++] = p;
    }
    if (s == LK_OK && st->n_layers == 0)
        s = lk_fail(LK_ERR_FORMAT, "custom diffusion: the UNet has no attn2.to_k / to_v weights");
    return s;
}

static lk_status cd_collect(lk_train_method *m, lk_trainer *tr, lk_paramset *ps) {
    (void)tr;
    cd_state *st = m->self;
    lk_status s = st->table ? lk_paramset_add(ps, st->table) : lk_fail(LK_ERR_STATE, "custom diffusion: not prepared");
    for (int i = 0; s == LK_OK && i < st->n_layers; i++) s = lk_paramset_add(ps, st->layer[i]);
    return s;
}

static float cd_lr_scale(lk_train_method *m, lk_trainer *tr, const lk_tensor *param) {
    const cd_state *st = m->self;
    const float lr = lk_trainer_config(tr)->lr;
    if (param != st->table || !(st->o.token_lr > 0.0f) || !(lr > 0.0f)) return 1.0f;
    return st->o.token_lr / lr;
}

/* the instance batch followed by B samples of every other concept */
static lk_status extend_concepts(cd_state *st, lk_trainer *tr, const lk_train_batch *in,
                                 const lk_train_batch **out) {
    const int nc = st->o.n_concepts, B = in->B;
    const size_t per = (size_t)in->c * (size_t)in->h * (size_t)in->w, nb = (size_t)B * per;
    lk_train_batch *b = &st->batch;
    if (b->B != nc * B) {
        lk_train_batch_free(b);
        lk_status s = lk_train_batch_alloc(b, nc * B, in->c, in->h, in->w, in->n_ctx, 0, 0);
        if (s != LK_OK) return s;
    }
    memcpy(b->x0, in->x0, nb * sizeof(float));
    memcpy(b->noise, in->noise, nb * sizeof(float));
    memcpy(b->timesteps, in->timesteps, (size_t)B * sizeof(int64_t));
    memcpy(b->ids, in->ids, (size_t)B * (size_t)in->n_ctx * sizeof(int64_t));
    lk_rng *rng = lk_trainer_rng(tr);
    for (int k = 1; k < nc; k++) {
        int64_t pick[256];
        lk_status s = lk_rng_randint(rng, 0, st->data[k].n, pick, (size_t)B);
        if (s != LK_OK) return s;
        float *x = b->x0 + (size_t)k * nb;
        lk_rng_randn(rng, x, nb);
        for (int i = 0; i < B; i++) {
            const size_t o = (size_t)pick[i] * (size_t)st->data[k].n_var * per;
            const float *mu = st->data[k].mean + o, *lv = st->data[k].logvar + o;
            float *xi = x + (size_t)i * per;
            for (size_t j = 0; j < per; j++) xi[j] = (mu[j] + expf(0.5f * lv[j]) * xi[j]) * tr->scaling;
            memcpy(b->ids + ((size_t)k * (size_t)B + (size_t)i) * (size_t)in->n_ctx, st->ids[k],
                   (size_t)in->n_ctx * sizeof(int64_t));
        }
        lk_rng_randn(rng, b->noise + (size_t)k * nb, nb);
        s = lk_rng_randint(rng, 0, tr->n_train, b->timesteps + (size_t)k * (size_t)B, (size_t)B);
        if (s != LK_OK) return s;
    }
    for (int i = 0; i < nc * B; i++) {
        b->loss_weight[i] = 1.0f;
        b->item[i] = i < B && in->item ? in->item[i] : -1;
        snprintf(b->caption[i], sizeof b->caption[i], "%s", i < B && in->caption ? in->caption[i] : "");
    }
    *out = b;
    return LK_OK;
}

static lk_tensor *cd_loss(lk_train_method *m, lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b) {
    cd_state *st = m->self;
    const lk_train_batch *cur = b;
    lk_status s = LK_OK;
    if (st->o.n_concepts > 1) {
        if (!b->ids || b->ehs) return lk_ctx_fail(ctx, LK_ERR_INVALID, "custom diffusion: batch without ids");
        s = extend_concepts(st, tr, b, &cur);
    }
    if (s == LK_OK && st->prior_on) s = lk__prior_extend(&st->prior, tr, cur, &cur);
    if (s != LK_OK) return lk_ctx_fail(ctx, s, "%s", lk_last_error());
    lk_tensor *ehs = lk_train_encode_text(tr, ctx, cur, true);
    return lk_train_denoise_loss(tr, ctx, cur, ehs);
}

static lk_status cd_save(lk_train_method *m, lk_trainer *tr, const char *path) {
    cd_state *st = m->self;
    if (!st->table) return lk_fail(LK_ERR_STATE, "custom diffusion: not prepared");
    const lk_train_config *cfg = lk_trainer_config(tr);
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = LK_OK;
    for (int i = 0; s == LK_OK && i < st->n_layers; i++) {
        const lk_tensor *p = st->layer[i];
        s = lk_st_writer_add(w, p->name, LK_F32, p->ndim, p->shape, p->data);
    }
    char tokens[LK_CD_MAX_CONCEPTS * 260] = "";
    for (int k = 0; s == LK_OK && k < st->o.n_concepts; k++) {
        const char *token = concept_field(st, cfg, k, 1);
        const int64_t shape[2] = {1, st->dim};
        s = lk_st_writer_add(w, token, LK_F32, 2, shape,
                             (const float *)st->table->data + (st->first_id + k) * st->dim);
        if (k) strcat(tokens, ",");
        strncat(tokens, token, 256);
    }
    if (s == LK_OK) s = lk_trainer_add_metadata(tr, w);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.tokens", tokens);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.layout", "diffusers_custom_diffusion");
    if (s == LK_OK) s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    return s;
}

static void cd_free(lk_train_method *m) {
    if (!m) return;
    cd_state *st = m->self;
    if (st) {
        lk__prior_free(&st->prior);
        for (int k = 0; k < LK_CD_MAX_CONCEPTS; k++) {
            lk__train_data_free(&st->data[k]);
            free(st->ids[k]);
        }
        lk_train_batch_free(&st->batch);
        free(st);
    }
    free(m);
}

static lk_status copy_str(char *dst, size_t cap, const char *src) {
    if (!src) return LK_OK;
    if (strlen(src) >= cap) return lk_fail(LK_ERR_INVALID, "custom diffusion: '%.40s...' too long", src);
    memcpy(dst, src, strlen(src) + 1);
    return LK_OK;
}

/* Contract: see train_methods.h. */
lk_status lk_custom_diffusion_method_new(lk_train_method **out, const lk_cd_opts *o) {
    if (!out) return lk_fail(LK_ERR_INVALID, "custom_diffusion_method_new: NULL output");
    *out = NULL;
    lk_train_method *m = calloc(1, sizeof *m);
    cd_state *st = calloc(1, sizeof *st);
    if (!m || !st) {
        free(m);
        free(st);
        return lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    m->self = st;
    m->free = cd_free;
    if (o) st->o = *o;
    else lk_cd_opts_default(&st->o);
    lk_status s = LK_OK;
    if (st->o.n_concepts < 1 || st->o.n_concepts > LK_CD_MAX_CONCEPTS)
        s = lk_fail(LK_ERR_INVALID, "custom diffusion: %d concepts (1 to %d)", st->o.n_concepts,
                    LK_CD_MAX_CONCEPTS);
    for (int k = 0; s == LK_OK && k < st->o.n_concepts; k++) {
        const lk_cd_concept *c = &st->o.concept[k];
        const char *f[4] = {c->images, c->token, c->class_word, c->init_word};
        for (int j = 0; s == LK_OK && j < 4; j++) s = copy_str(st->str[k][j], 256, f[j]);
    }
    const char **pf[3] = {&st->o.prior.class_dir, &st->o.prior.class_prompt, &st->o.prior.negative};
    for (int j = 0; s == LK_OK && j < 3; j++) {
        s = copy_str(st->prior_str[j], 1024, *pf[j]);
        if (*pf[j]) *pf[j] = st->prior_str[j];
    }
    if (s != LK_OK) {
        cd_free(m);
        return s;
    }
    memset(st->o.concept, 0, sizeof st->o.concept);
    st->prior_on = st->o.prior.class_dir != NULL;
    st->first_id = -1;
    m->name = "custom_diffusion";
    m->text_encoder_grad = true;
    m->prepare = cd_prepare;
    m->collect = cd_collect;
    m->lr_scale = cd_lr_scale;
    m->loss = cd_loss;
    m->save = cd_save;
    *out = m;
    return LK_OK;
}

/* Contract: see train_methods.h. */
int lk_custom_diffusion_layer_count(const lk_train_method *m) {
    if (!m || m->prepare != cd_prepare) return -1;
    return ((const cd_state *)m->self)->n_layers;
}
