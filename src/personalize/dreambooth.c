/* dreambooth.c: DreamBooth (Ruiz et al. 2022, "DreamBooth: Fine Tuning Text-to-Image Diffusion
 * Models for Subject-Driven Generation"): every UNet weight (optionally the text encoder's)
 * fine-tuned on "a [V] [class]" with the class-specific prior-preservation loss, as diffusers'
 * train_dreambooth.py; outputs a diffusers folder or a single-file checkpoint. */
#define _POSIX_C_SOURCE 200809L
#include "personalize/prior_preservation.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct db_state {
    lk_dreambooth_opts o;
    char *own[3];       /* copies of the prior's strings */
    bool prior_on;
    lk__prior prior;
} db_state;

/* Contract: see train_methods.h. */
void lk_dreambooth_opts_default(lk_dreambooth_opts *o) {
    memset(o, 0, sizeof *o);
    lk_prior_opts_default(&o->prior);
}

static lk_status db_prepare(lk_train_method *m, lk_trainer *tr) {
    db_state *st = m->self;
    const lk_train_config *cfg = lk_trainer_config(tr);
    if (cfg->store != LK_F32)
        return lk_fail(LK_ERR_INVALID, "dreambooth: the trained weights must be F32: load the base "
                       "model with store F32 (no --half-weights)");
    if (!st->prior_on) return LK_OK;
    return lk__prior_init(&st->prior, tr, &st->o.prior);
}

static lk_status add_part(lk_paramset *ps, const lk_weights *w, const char *part) {
    for (int i = 0; i < lk_weights_count(w); i++) {
        lk_tensor *p = lk_weights_at(w, i);
        if (p->dtype != LK_F32)
            return lk_fail(LK_ERR_INVALID, "dreambooth: %s weight '%s' is %s; trained weights must "
                           "be F32", part, p->name, lk_dtype_name(p->dtype));
        lk_status s = lk_paramset_add(ps, p);
        if (s != LK_OK) return s;
    }
    return LK_OK;
}

static lk_status db_collect(lk_train_method *m, lk_trainer *tr, lk_paramset *ps) {
    db_state *st = m->self;
    lk_sd_model *md = lk_trainer_model(tr);
    lk_status s = add_part(ps, md->part[LK_SD_UNET].weights, "unet");
    if (s == LK_OK && st->o.train_text_encoder)
        s = add_part(ps, md->part[LK_SD_TEXT_ENCODER].weights, "text_encoder");
    return s;
}

static lk_tensor *db_loss(lk_train_method *m, lk_trainer *tr, lk_ctx *ctx, const lk_train_batch *b) {
    db_state *st = m->self;
    if (!st->prior_on) return lk_train_default_loss(tr, ctx, b);
    const lk_train_batch *all = NULL;
    lk_status s = lk__prior_extend(&st->prior, tr, b, &all);
    if (s != LK_OK) return lk_ctx_fail(ctx, s, "%s", lk_last_error());
    lk_tensor *ehs = lk_train_encode_text(tr, ctx, all, st->o.train_text_encoder);
    return lk_train_denoise_loss(tr, ctx, all, ehs);
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* where the base model's tokenizer files are */
static const char *tokenizer_source(lk_trainer *tr, char *buf, size_t cap) {
    const lk_train_config *cfg = lk_trainer_config(tr);
    if (cfg->tokenizer_dir) return cfg->tokenizer_dir;
    snprintf(buf, cap, "%s/tokenizer", cfg->model);
    if (is_dir(buf)) return buf;
    const char *env = getenv("LK_TOKENIZER");
    return env && env[0] ? env : NULL;
}

static lk_status db_save(lk_train_method *m, lk_trainer *tr, const char *path) {
    db_state *st = m->self;
    lk_sd_model *md = lk_trainer_model(tr);
    if (ends_with(path, ".safetensors"))
        return lk_sd_save_single_file(md, path, st->o.fp16, tr);
    char buf[4200];
    const char *tok = tokenizer_source(tr, buf, sizeof buf);
    if (!tok)
        return lk_fail(LK_ERR_INVALID, "dreambooth: cannot find the base model's tokenizer files "
                       "to copy (give tokenizer_dir / $LK_TOKENIZER)");
    return lk_sd_save_diffusers(md, path, tok, st->o.fp16, tr);
}

static void db_free(lk_train_method *m) {
    if (!m) return;
    db_state *st = m->self;
    if (st) {
        lk__prior_free(&st->prior);
        for (int i = 0; i < 3; i++) free(st->own[i]);
        free(st);
    }
    free(m);
}

/* Contract: see train_methods.h. */
lk_status lk_dreambooth_method_new(lk_train_method **out, const lk_dreambooth_opts *o) {
    if (!out) return lk_fail(LK_ERR_INVALID, "dreambooth_method_new: NULL output");
    *out = NULL;
    lk_train_method *m = calloc(1, sizeof *m);
    db_state *st = calloc(1, sizeof *st);
    if (!m || !st) {
        free(m);
        free(st);
        return lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    if (o) st->o = *o;
    else lk_dreambooth_opts_default(&st->o);
    m->self = st;
    m->free = db_free;
    const char **f[3] = {&st->o.prior.class_dir, &st->o.prior.class_prompt, &st->o.prior.negative};
    for (int i = 0; i < 3; i++) {
        if (!*f[i]) continue;
        st->own[i] = strdup(*f[i]);
        if (!st->own[i]) {
            db_free(m);
            return lk_fail(LK_ERR_NOMEM, "out of memory");
        }
        *f[i] = st->own[i];
    }
    st->prior_on = st->o.prior.class_dir != NULL;
    m->name = "dreambooth";
    m->text_encoder_grad = st->o.train_text_encoder;
    m->prepare = db_prepare;
    m->collect = db_collect;
    m->loss = db_loss;
    m->save = db_save;
    *out = m;
    return LK_OK;
}

/* Contract: see train_methods.h. */
int lk_dreambooth_class_generated(const lk_train_method *m) {
    if (!m || m->prepare != db_prepare) return -1;
    const db_state *st = m->self;
    return st->prior.generated;
}

/* Contract: see train_methods.h. */
int lk_dreambooth_class_count(const lk_train_method *m) {
    if (!m || m->prepare != db_prepare) return -1;
    const db_state *st = m->self;
    return st->prior.data.n;
}
