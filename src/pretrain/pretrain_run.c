/* pretrain_run.c: the loop every pretraining stage shares: AdamW with a linear warm-up,
 * gradient clipping, EMA, atomic checkpoints (weights, optimizer, EMA, RNG, step) with exact
 * resume, a JSON-lines log, exports at every checkpoint, and cancellation. */
#define _POSIX_C_SOURCE 200809L
#include "pretrain/pretrain_internal.h"
#include "core/sha256.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CKPT_FORMAT "likeness-pretrain-checkpoint-1"

lk_pretrain_config lk_pretrain_defaults(lk_pretrain_stage stage) {
    lk_pretrain_config c;
    memset(&c, 0, sizeof c);
    c.stage = stage;
    c.seed = 0;
    c.weight_decay = 0.01f;
    c.max_grad_norm = 1.0f;
    c.checkpoint_every = 200;
    c.vae_crop = 32;
    c.cfg_dropout = 0.1f;
    switch (stage) {
    case LK_PRETRAIN_TEXT:
        c.steps = 1500, c.batch = 128, c.lr = 5e-4f, c.warmup = 100, c.weight_decay = 0.1f;
        c.ema_decay = 0.0f;
        break;
    case LK_PRETRAIN_VAE:
        c.steps = 3000, c.batch = 16, c.lr = 4e-4f, c.warmup = 100, c.ema_decay = 0.999f;
        break;
    case LK_PRETRAIN_UNET:
        c.steps = 20000, c.batch = 64, c.lr = 3e-4f, c.warmup = 500, c.ema_decay = 0.999f;
        break;
    }
    return c;
}

lk_status lk__pt_init_from(lk__pt *p, const char *part, const char *file) {
    if (!p->cfg.init_dir || p->cfg.resume) return LK_OK; /* a resume restores everything */
    char path[4400];
    snprintf(path, sizeof path, "%s/%s/%s", p->cfg.init_dir, part, file);
    lk_status s = lk_weights_load_safetensors(p->w, path, NULL, "", LK_F32);
    return s == LK_OK ? LK_OK : lk_fail_prefix(s, "--init: ");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static lk_status save_checkpoint(lk__pt *p, const char *path) {
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = lk_st_writer_meta(w, "format", CKPT_FORMAT);
    if (s == LK_OK) s = lk_st_writer_meta(w, "stage", p->name);
    if (s == LK_OK) s = lk_st_writer_meta(w, "settings", p->fingerprint);
    if (s == LK_OK && p->inputs[0]) s = lk_st_writer_meta(w, "inputs", p->inputs);
    for (int i = 0; s == LK_OK && i < lk_paramset_count(p->ps); i++) {
        const lk_tensor *t = lk_paramset_get(p->ps, i);
        char name[200];
        snprintf(name, sizeof name, "param.%s", t->name);
        s = lk_st_writer_add(w, name, LK_F32, t->ndim, t->shape, t->data);
    }
    if (s == LK_OK) s = lk_adamw_save(p->opt, w, "adamw.");
    if (s == LK_OK && p->ema) s = lk_ema_save(p->ema, w, "ema.");
    uint8_t rs[LK_RNG_STATE_BYTES];
    lk_rng_get_state(&p->rng, rs);
    const int64_t rn = LK_RNG_STATE_BYTES, one = 1;
    if (s == LK_OK) s = lk_st_writer_add(w, "rng", LK_U8, 1, &rn, rs);
    if (s == LK_OK) s = lk_st_writer_add(w, "step", LK_I64, 1, &one, &p->step);
    if (s == LK_OK) s = lk_st_writer_save(w, path); /* temporary file + rename */
    lk_st_writer_free(w);
    return s;
}

void lk__pt_note_digest(lk__pt *p, const char *label, const uint8_t d[32]) {
    const size_t at = strlen(p->inputs);
    snprintf(p->inputs + at, sizeof p->inputs - at, "%s%s=%02x%02x%02x%02x%02x%02x%02x%02x",
             at ? " " : "", label, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]);
}

lk_status lk__pt_note_inputs(lk__pt *p, const char *label, const char *dir,
                             const char *const *paths, int n) {
    lk_sha256 h;
    lk_sha256_init(&h);
    lk_status s = LK_OK;
    for (int i = 0; s == LK_OK && i < n; i++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/%s", dir, paths[i]);
        size_t len = 0;
        char *data = NULL;
        s = lk__read_file(path, (size_t)1 << 34, &data, &len);
        if (s == LK_OK) lk_sha256_update(&h, data, len);
        free(data);
    }
    if (s != LK_OK) return s;
    uint8_t d[32];
    lk_sha256_final(&h, d);
    lk__pt_note_digest(p, label, d);
    return LK_OK;
}

static lk_status load_checkpoint(lk__pt *p, const char *path) {
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open(&st, path);
    if (s != LK_OK) return lk_fail_prefix(s, "resume: ");
    const char *fmt = lk_safetensors_meta(st, "format"), *stage = lk_safetensors_meta(st, "stage");
    const char *set = lk_safetensors_meta(st, "settings");
    const char *in = lk_safetensors_meta(st, "inputs"); /* absent in checkpoints before 0.1.1 */
    if (!fmt || strcmp(fmt, CKPT_FORMAT) || !stage || strcmp(stage, p->name))
        s = lk_fail(LK_ERR_FORMAT, "%s: not a likeness pretraining checkpoint of stage %s", path,
                    p->name);
    else if (!set || strcmp(set, p->fingerprint))
        s = lk_fail(LK_ERR_INVALID, "%s: made with settings %s, this run has %s (resume needs the "
                    "same data, batch and seed)", path, set ? set : "(none)", p->fingerprint);
    else if (in && strcmp(in, p->inputs))
        s = lk_fail(LK_ERR_INVALID, "%s: made from inputs %s, this run reads %s (resume needs the "
                    "same tokenizer, text encoder, VAE and crop)", path, in, p->inputs[0] ? p->inputs : "(none)");
    for (int i = 0; s == LK_OK && i < lk_paramset_count(p->ps); i++) {
        lk_tensor *t = lk_paramset_get(p->ps, i);
        char name[200];
        snprintf(name, sizeof name, "param.%s", t->name);
        const lk_st_tensor *c = lk_safetensors_find(st, name);
        if (!c || c->dtype != LK_F32 || lk_st_tensor_numel(c) != lk_numel(t))
            s = lk_fail(LK_ERR_FORMAT, "%s: tensor '%s' missing or of the wrong size", path, name);
        else memcpy(t->data, c->data, sizeof(float) * (size_t)lk_numel(t));
    }
    if (s == LK_OK) s = lk_adamw_load(p->opt, st, "adamw.");
    if (s == LK_OK && p->ema) s = lk_ema_load(p->ema, st, "ema.");
    const lk_st_tensor *r = s == LK_OK ? lk_safetensors_find(st, "rng") : NULL;
    const lk_st_tensor *k = s == LK_OK ? lk_safetensors_find(st, "step") : NULL;
    if (s == LK_OK && (!r || r->dtype != LK_U8 || lk_st_tensor_numel(r) != LK_RNG_STATE_BYTES ||
                       !k || k->dtype != LK_I64 || lk_st_tensor_numel(k) != 1))
        s = lk_fail(LK_ERR_FORMAT, "%s: rng / step missing or malformed", path);
    if (s == LK_OK) s = lk_rng_set_state(&p->rng, r->data);
    if (s == LK_OK) {
        memcpy(&p->step, k->data, 8);
        if (p->step < 0) s = lk_fail(LK_ERR_FORMAT, "%s: negative step", path);
    }
    lk_safetensors_close(st);
    return s;
}

static lk_status export_now(lk__pt *p) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/export", p->cfg.run_dir);
    lk_status s = lk__mkdirs(dir);
    if (s == LK_OK) s = p->export_to(p, dir);
    return s;
}

static lk_status checkpoint_and_export(lk__pt *p) {
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", p->cfg.run_dir);
    lk_status s = save_checkpoint(p, path);
    return s == LK_OK ? export_now(p) : s;
}

static lk_status setup_optim(lk__pt *p) {
    lk_adamw_config ac = lk_adamw_defaults();
    ac.lr = p->cfg.lr;
    ac.weight_decay = p->cfg.weight_decay;
    p->opt = lk_adamw_new(p->ps, ac);
    if (!p->opt) return lk_fail(LK_ERR_NOMEM, "pretrain: cannot create the optimizer");
    if (p->cfg.ema_decay > 0.0f) {
        p->ema = lk_ema_new(p->ps, p->cfg.ema_decay, true);
        if (!p->ema) return lk_fail(LK_ERR_NOMEM, "pretrain: cannot create the EMA");
    }
    return LK_OK;
}

static void free_run(lk__pt *p) {
    if (p->free_stage) p->free_stage(p);
    lk_ema_free(p->ema);
    lk_adamw_free(p->opt);
    lk_paramset_free(p->ps);
    lk_weights_free(p->w);
    lk_ctx_free(p->ctx);
    lk__pt_images_free(&p->img);
    lk_emoji_set_free(p->set);
}

lk_status lk_pretrain_run(const lk_pretrain_config *cfg) {
    if (!cfg || !cfg->data_dir || !cfg->run_dir)
        return lk_fail(LK_ERR_INVALID, "pretrain: data and run folders are required");
    if (cfg->steps < 1 || cfg->batch < 1 || !(cfg->lr > 0.0f) || cfg->warmup < 0 ||
        cfg->checkpoint_every < 1)
        return lk_fail(LK_ERR_INVALID, "pretrain: steps, batch, lr and checkpoint interval must "
                       "be positive");
    lk__pt run;
    memset(&run, 0, sizeof run);
    lk__pt *p = &run;
    p->cfg = *cfg;
    lk_rng_seed(&p->rng, cfg->seed);
    lk_status s = lk__mkdirs(cfg->run_dir);
    if (s == LK_OK) s = lk_emoji_set_open(&p->set, cfg->data_dir);
    if (s == LK_OK) s = lk__pt_images_load(&p->img, p->set, cfg->stage == LK_PRETRAIN_TEXT && cfg->evaluator);
    if (s == LK_OK && !(p->ctx = lk_ctx_new())) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK && !(p->w = lk_weights_new())) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK && !(p->ps = lk_paramset_new())) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) {
        switch (cfg->stage) {
        case LK_PRETRAIN_TEXT: s = lk__pt_text_setup(p); break;
        case LK_PRETRAIN_VAE: s = lk__pt_vae_setup(p); break;
        case LK_PRETRAIN_UNET: s = lk__pt_unet_setup(p); break;
        default: s = lk_fail(LK_ERR_INVALID, "pretrain: unknown stage");
        }
    }
    if (s == LK_OK) s = lk_paramset_finalize(p->ps);
    if (s == LK_OK) s = setup_optim(p);
    if (s == LK_OK)
        snprintf(p->fingerprint, sizeof p->fingerprint, "%.15s items=%d batch=%d seed=%llu eval=%d",
                 p->name, p->img.n, cfg->batch, (unsigned long long)cfg->seed, (int)cfg->evaluator);
    char path[4200];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", cfg->run_dir);
    if (s == LK_OK && cfg->resume) s = load_checkpoint(p, path);
    FILE *log = NULL;
    if (s == LK_OK) {
        char lp[4200];
        snprintf(lp, sizeof lp, "%s/log.jsonl", cfg->run_dir);
        log = fopen(lp, cfg->resume ? "ab" : "wb");
        if (!log) s = lk_fail(LK_ERR_IO, "%s: cannot write: %s", lp, strerror(errno));
    }
    const lk_lr_schedule sched = {LK_LR_CONSTANT_WARMUP, cfg->lr, cfg->warmup, cfg->steps};
    while (s == LK_OK && p->step < cfg->steps) {
        if (cfg->cancel && *cfg->cancel) {
            s = checkpoint_and_export(p);
            if (s == LK_OK)
                s = lk_fail(LK_ERR_INTERRUPTED, "interrupted after step %lld; checkpoint saved to %s",
                            (long long)p->step, path);
            break;
        }
        const double t0 = now_s();
        lk_pretrain_stats st = {0};
        lk_paramset_zero_grad(p->ps);
        s = p->grad(p, &st.loss, &st.metric);
        lk_ctx_reset(p->ctx);
        if (s != LK_OK) break;
        st.grad_norm = cfg->max_grad_norm > 0.0f ? lk_clip_grad_norm(p->ps, cfg->max_grad_norm) : 0.0f;
        st.lr = lk_lr_at(&sched, p->step);
        s = lk_adamw_step(p->opt, st.lr);
        if (s == LK_OK && p->ema) s = lk_ema_update(p->ema);
        if (s != LK_OK) break;
        p->step++;
        st.step = p->step;
        st.steps = cfg->steps;
        st.seconds = now_s() - t0;
        fprintf(log, "{\"step\": %lld, \"loss\": %.6g, \"metric\": %.6g, \"lr\": %.6g, "
                "\"grad_norm\": %.6g, \"seconds\": %.3f}\n", (long long)st.step, (double)st.loss,
                (double)st.metric, (double)st.lr, (double)st.grad_norm, st.seconds);
        fflush(log);
        if (p->step % cfg->checkpoint_every == 0 || p->step == cfg->steps)
            s = checkpoint_and_export(p);
        if (s == LK_OK && cfg->progress) {
            s = cfg->progress(cfg->progress_ud, &st);
            if (s != LK_OK) {
                lk_status s2 = checkpoint_and_export(p);
                if (s2 != LK_OK) s = s2;
            }
        }
    }
    if (log) fclose(log);
    free_run(p);
    return s;
}
