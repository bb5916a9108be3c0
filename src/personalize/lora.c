/* lora.c: LoRA (Hu et al. 2021, "Low-Rank Adaptation") for Stable Diffusion as DreamBooth-LoRA
 * trains it: y = W x + b + (alpha / rank) * up(down(x)) on the UNet's attention projections
 * (optionally feed-forward, proj_in/out and the text encoder) through the networks' layer hook,
 * base weights frozen; outputs the kohya/A1111 file and the diffusers/PEFT layout. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/ops.h"
#include "likeness/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LK__LORA_NAME 96 /* = sizeof lk_tensor.name: "<module>.lora_down.weight" must fit */

typedef struct lora_mod {
    char name[LK__LORA_NAME];
    bool te;                 /* text encoder module (else UNet) */
    bool conv;               /* 1x1 convolution (else linear) */
    int64_t in, out;
    lk_tensor *down, *up;    /* owned: (rank, in[,1,1]), (out, rank[,1,1]) */
} lora_mod;

typedef struct lora_state {
    lk_lora_options o;
    float scale;             /* alpha / rank */
    lora_mod *mods;          /* sorted by name (bsearch in the hook) */
    int n;
} lora_state;

/* Contract: see train.h. */
void lk_lora_options_default(lk_lora_options *o) {
    o->rank = 4;
    o->alpha = 4.0f;
    o->targets = LK_LORA_ATTN;
}

static bool ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k);
}

/* Is weight key (a "<module>.weight") a target? *mod_len receives the module's length. */
static bool is_target(const char *key, bool te, int targets, size_t *mod_len) {
    size_t n = strlen(key);
    if (!ends_with(key, n, ".weight")) return false;
    n -= 7;
    *mod_len = n;
    if (te) {
        if (!(targets & LK_LORA_TEXT) || strncmp(key, "text_model.encoder.layers.", 26)) return false;
        if (ends_with(key, n, ".self_attn.q_proj") || ends_with(key, n, ".self_attn.k_proj") ||
            ends_with(key, n, ".self_attn.v_proj") || ends_with(key, n, ".self_attn.out_proj"))
            return true;
        return (targets & LK_LORA_FF) && (ends_with(key, n, ".mlp.fc1") || ends_with(key, n, ".mlp.fc2"));
    }
    if (!strstr(key, ".attentions.")) return false;
    if ((targets & LK_LORA_ATTN) && strstr(key, ".transformer_blocks.") &&
        (ends_with(key, n, ".to_q") || ends_with(key, n, ".to_k") || ends_with(key, n, ".to_v") ||
         ends_with(key, n, ".to_out.0")))
        return true;
    if ((targets & LK_LORA_FF) && strstr(key, ".transformer_blocks.") &&
        (ends_with(key, n, ".ff.net.0.proj") || ends_with(key, n, ".ff.net.2")))
        return true;
    return (targets & LK_LORA_PROJ) && (ends_with(key, n, ".proj_in") || ends_with(key, n, ".proj_out"));
}

static int cmp_mod(const void *a, const void *b) {
    return strcmp(((const lora_mod *)a)->name, ((const lora_mod *)b)->name);
}

static int cmp_key(const void *k, const void *m) { return strcmp(k, ((const lora_mod *)m)->name); }

static lk_tensor *lora_hook(lk_ctx *ctx, const char *name, lk_tensor *x, lk_tensor *y, void *ud) {
    const lora_state *st = ud;
    const lora_mod *m = bsearch(name, st->mods, (size_t)st->n, sizeof *st->mods, cmp_key);
    if (!m) return y;
    lk_tensor *d = m->conv ? lk_conv2d(ctx, lk_conv2d(ctx, x, m->down, NULL, 1, 0), m->up, NULL, 1, 0)
                           : lk_linear(ctx, lk_linear(ctx, x, m->down, NULL), m->up, NULL);
    if (st->scale != 1.0f) d = lk_scale(ctx, d, st->scale);
    return lk_add(ctx, y, d);
}

static lk_status add_modules(lora_state *st, const lk_weights *w, bool te, int *cap) {
    for (int i = 0; w && i < lk_weights_count(w); i++) {
        const lk_tensor *t = lk_weights_at(w, i);
        size_t ml = 0;
        if (!is_target(t->name, te, st->o.targets, &ml)) continue;
        const bool conv = t->ndim == 4;
        if (!(t->ndim == 2 || (conv && t->shape[2] == 1 && t->shape[3] == 1))) continue;
        if (ml + 18 >= LK__LORA_NAME)
            return lk_fail(LK_ERR_UNSUPPORTED, "lora: module name '%s' too long", t->name);
        if (st->n == *cap) {
            int nc = *cap ? 2 * *cap : 128;
            lora_mod *nm = realloc(st->mods, sizeof *nm * (size_t)nc);
            if (!nm) return lk_fail(LK_ERR_NOMEM, "out of memory");
            st->mods = nm;
            *cap = nc;
        }
        lora_mod *m = &st->mods[st->n];
        memset(m, 0, sizeof *m);
        memcpy(m->name, t->name, ml);
        m->name[ml] = 0;
        m->te = te;
        m->conv = conv;
        m->out = t->shape[0];
        m->in = t->shape[1];
        st->n++;
    }
    return LK_OK;
}

static lk_status lora_prepare(lk_train_method *me, lk_trainer *tr) {
    lora_state *st = me->self;
    lk_sd_model *model = lk_trainer_model(tr);
    const int r = st->o.rank;
    if (r < 1 || r > 1024) return lk_fail(LK_ERR_INVALID, "lora: rank %d must be in [1, 1024]", r);
    if (!(st->o.alpha > 0.0f) || !isfinite(st->o.alpha))
        return lk_fail(LK_ERR_INVALID, "lora: alpha %g must be positive", (double)st->o.alpha);
    if (!(st->o.targets & (LK_LORA_ATTN | LK_LORA_FF | LK_LORA_PROJ | LK_LORA_TEXT)))
        return lk_fail(LK_ERR_INVALID, "lora: no target layers chosen");
    st->scale = st->o.alpha / (float)r;
    int cap = 0;
    lk_status s = add_modules(st, model->part[LK_SD_UNET].weights, false, &cap);
    if (s == LK_OK) s = add_modules(st, model->part[LK_SD_TEXT_ENCODER].weights, true, &cap);
    if (s != LK_OK) return s;
    if (!st->n) return lk_fail(LK_ERR_INVALID, "lora: the model has no layers of the chosen kinds");
    lk_rng *rng = lk_trainer_rng(tr);
    /* in the weights' order (deterministic draws), then sorted for the hook */
    for (int i = 0; i < st->n; i++) {
        lora_mod *m = &st->mods[i];
        char nm[LK__LORA_NAME + 24];
        snprintf(nm, sizeof nm, "%s.lora_down.weight", m->name);
        m->down = m->conv ? lk_param_new(LK_F32, LK_DIMS(r, m->in, 1, 1), nm)
                          : lk_param_new(LK_F32, LK_DIMS(r, m->in), nm);
        snprintf(nm, sizeof nm, "%s.lora_up.weight", m->name);
        m->up = m->conv ? lk_param_new(LK_F32, LK_DIMS(m->out, r, 1, 1), nm)
                        : lk_param_new(LK_F32, LK_DIMS(m->out, r), nm);
        if (!m->down || !m->up) return lk_fail(LK_ERR_NOMEM, "out of memory for LoRA weights");
        /* kaiming_uniform_(a=sqrt(5)): bound = sqrt(6 / ((1 + 5) fan_in)) = 1 / sqrt(fan_in) */
        const float bound = 1.0f / sqrtf((float)m->in);
        float *d = m->down->data;
        const size_t nd = (size_t)lk_numel(m->down);
        lk_rng_rand(rng, d, nd);
        for (size_t k = 0; k < nd; k++) d[k] = -bound + (2.0f * bound) * d[k];
    }
    qsort(st->mods, (size_t)st->n, sizeof *st->mods, cmp_mod);
    lk_unet_set_layer_hook(lk_trainer_unet(tr), lora_hook, st);
    if (st->o.targets & LK_LORA_TEXT) lk_clip_text_set_layer_hook(lk_trainer_text_encoder(tr), lora_hook, st);
    return LK_OK;
}

static lk_status lora_collect(lk_train_method *me, lk_trainer *tr, lk_paramset *ps) {
    (void)tr;
    lora_state *st = me->self;
    lk_status s = LK_OK;
    for (int i = 0; s == LK_OK && i < st->n; i++) {
        s = lk_paramset_add(ps, st->mods[i].down);
        if (s == LK_OK) s = lk_paramset_add(ps, st->mods[i].up);
    }
    return s;
}

static void underscored(char *dst, size_t cap, const char *prefix, const char *name) {
    snprintf(dst, cap, "%s%s", prefix, name);
    for (char *p = dst + strlen(prefix); *p; p++)
        if (*p == '.') *p = '_';
}

static lk_status save_kohya(const lora_state *st, lk_trainer *tr, const char *path) {
    const lk_train_config *cfg = lk_trainer_config(tr);
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = LK_OK;
    for (int i = 0; s == LK_OK && i < st->n; i++) {
        const lora_mod *m = &st->mods[i];
        char base[LK__LORA_NAME + 16], key[LK__LORA_NAME + 48];
        underscored(base, sizeof base, m->te ? "lora_te_" : "lora_unet_", m->name);
        snprintf(key, sizeof key, "%s.lora_down.weight", base);
        s = lk_st_writer_add(w, key, LK_F32, m->down->ndim, m->down->shape, m->down->data);
        snprintf(key, sizeof key, "%s.lora_up.weight", base);
        if (s == LK_OK) s = lk_st_writer_add(w, key, LK_F32, m->up->ndim, m->up->shape, m->up->data);
        snprintf(key, sizeof key, "%s.alpha", base);
        if (s == LK_OK) s = lk_st_writer_add(w, key, LK_F32, 0, NULL, &st->o.alpha);
    }
    char b[64];
    const bool v2 = lk_trainer_model(tr)->arch == LK_SD_ARCH_SD2;
    if (s == LK_OK) s = lk_trainer_add_metadata(tr, w);
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_network_module", "networks.lora");
    snprintf(b, sizeof b, "%d", st->o.rank);
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_network_dim", b);
    snprintf(b, sizeof b, "%g", (double)st->o.alpha);
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_network_alpha", b);
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_base_model_version", v2 ? "sd_v2" : "sd_v1");
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_v2", v2 ? "True" : "False");
    snprintf(b, sizeof b, "(%d, %d)", cfg->resolution, cfg->resolution);
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_resolution", b);
    snprintf(b, sizeof b, "%lld", (long long)lk_trainer_step_count(tr));
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_steps", b);
    snprintf(b, sizeof b, "%llu", (unsigned long long)cfg->seed);
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_seed", b);
    snprintf(b, sizeof b, "%d", lk_trainer_num_images(tr));
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_num_train_images", b);
    snprintf(b, sizeof b, "%g", (double)cfg->lr);
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_learning_rate", b);
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_network_train_unet_only",
                                          st->o.targets & LK_LORA_TEXT ? "False" : "True");
    if (s == LK_OK) s = lk_st_writer_meta(w, "ss_training_comment", "trained with likeness");
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.layout", "kohya");
    if (s == LK_OK) s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    return s;
}

static lk_status save_peft(const lora_state *st, lk_trainer *tr, const char *path) {
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = LK_OK;
    float *tmp = NULL;
    size_t tcap = 0;
    for (int i = 0; s == LK_OK && i < st->n; i++) {
        const lora_mod *m = &st->mods[i];
        char key[LK__LORA_NAME + 48];
        const char *pre = m->te ? "text_encoder." : "unet.";
        snprintf(key, sizeof key, "%s%s.lora_A.weight", pre, m->name);
        s = lk_st_writer_add(w, key, LK_F32, m->down->ndim, m->down->shape, m->down->data);
        const size_t nu = (size_t)lk_numel(m->up);
        if (s == LK_OK && nu > tcap) {
            float *nt = realloc(tmp, nu * sizeof *nt);
            if (!nt) s = lk_fail(LK_ERR_NOMEM, "out of memory");
            else {
                tmp = nt;
                tcap = nu;
            }
        }
        if (s != LK_OK) break;
        const float *u = m->up->data;
        for (size_t k = 0; k < nu; k++) tmp[k] = st->scale * u[k]; /* alpha / rank folded in */
        snprintf(key, sizeof key, "%s%s.lora_B.weight", pre, m->name);
        s = lk_st_writer_add(w, key, LK_F32, m->up->ndim, m->up->shape, tmp);
    }
    free(tmp);
    char b[32];
    if (s == LK_OK) s = lk_trainer_add_metadata(tr, w);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.layout", "diffusers-peft");
    snprintf(b, sizeof b, "%d", st->o.rank);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.rank", b);
    snprintf(b, sizeof b, "%g", (double)st->o.alpha);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.alpha", b);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness.alpha_folded_into_lora_B", "true");
    if (s == LK_OK) s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    return s;
}

static lk_status lora_save(lk_train_method *me, lk_trainer *tr, const char *path) {
    const lora_state *st = me->self;
    if (!st->n) return lk_fail(LK_ERR_STATE, "lora: not prepared");
    char *dpath = lk_train_diffusers_path(path);
    if (!dpath) return LK_ERR_NOMEM;
    lk_status s = save_kohya(st, tr, path);
    if (s == LK_OK) s = save_peft(st, tr, dpath);
    free(dpath);
    return s;
}

static void lora_free(lk_train_method *me) {
    if (!me) return;
    lora_state *st = me->self;
    if (st) {
        for (int i = 0; i < st->n; i++) {
            lk_param_free(st->mods[i].down);
            lk_param_free(st->mods[i].up);
        }
        free(st->mods);
        free(st);
    }
    free(me);
}

/* Contract: see train.h. */
lk_status lk_lora_method_new(lk_train_method **out, const lk_lora_options *o) {
    if (!out) return lk_fail(LK_ERR_INVALID, "lora_method_new: NULL output");
    *out = NULL;
    lk_train_method *m = calloc(1, sizeof *m);
    lora_state *st = calloc(1, sizeof *st);
    if (!m || !st) {
        free(m);
        free(st);
        return lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    if (o) st->o = *o;
    else lk_lora_options_default(&st->o);
    m->name = "lora";
    m->text_encoder_grad = (st->o.targets & LK_LORA_TEXT) != 0;
    m->self = st;
    m->prepare = lora_prepare;
    m->collect = lora_collect;
    m->save = lora_save;
    m->free = lora_free;
    *out = m;
    return LK_OK;
}

/* Contract: see train.h. */
int lk_lora_method_count(const lk_train_method *m) {
    return m && m->prepare == lora_prepare ? ((const lora_state *)m->self)->n : 0;
}
