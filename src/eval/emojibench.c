/* emojibench.c: EmojiBench (see emojibench.h): the subject task (held-out concepts learned from
 * two styles, drawn in the third), the style task (OpenMoji learned from 5 images, 20 other
 * concepts drawn in it) and the text-to-image check, for the real images, the unpersonalized
 * model and the four personalization methods, scored by the evaluator. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/emojibench.h"
#include "core/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "likeness/emoji_set.h"
#include "likeness/evaluator.h"
#include "likeness/image.h"
#include "likeness/pipeline.h"
#include "likeness/train.h"
#include "likeness/train_methods.h"

#define SIDE 64
#define N_STYLE_INPUTS 5

/* the style task's 5 OpenMoji training images: fixed concepts spread over the groups */
static const char *const STYLE_INPUT_KEYS[N_STYLE_INPUTS] = {"1f600", "1f431", "1f34e", "1f697",
                                                             "2b50"};

static const char *const ROW_NAMES[LK_EB_ROWS] = {"real", "baseline", "textual_inversion",
                                                  "dreambooth", "lora", "custom_diffusion"};

const char *lk_emojibench_row_name(int row) {
    return row >= 0 && row < LK_EB_ROWS ? ROW_NAMES[row] : NULL;
}

void lk_emojibench_defaults(lk_emojibench_config *c) {
    memset(c, 0, sizeof *c);
    c->rows = (1u << LK_EB_ROWS) - 1;
    c->n_style_concepts = 20;
    c->n_t2i_concepts = 50;
    c->seeds = 3;
    c->sample_steps = 20;
    c->guidance = 5.0f;
    c->steps[LK_EB_TI] = 400;
    c->steps[LK_EB_DREAMBOOTH] = 200;
    c->steps[LK_EB_LORA] = 300;
    c->steps[LK_EB_CUSTOM] = 250;
    c->lr[LK_EB_TI] = 5e-3f;
    c->lr[LK_EB_DREAMBOOTH] = 5e-5f;
    c->lr[LK_EB_LORA] = 1e-3f;
    c->lr[LK_EB_CUSTOM] = 2e-5f;
    c->cd_token_lr = 5e-3f;
}

typedef struct bench {
    const lk_emojibench_config *c;
    lk_emoji_set *set;
    lk_evaluator *ev;
    lk_sd_pipeline *pipe;
    int E, nc;
    float *names;      /* nc x E: "NAME emoji" */
    int gen_styles[LK_EMOJI_MAX_STYLES], n_gen; /* the generator's styles */
    int openmoji;
    int n_subject, n_style; /* concepts the tasks used */
    /* accumulators */
    double acc[2][LK_EB_ROWS][6]; /* n, subject, prompt, top1, top5 (sums); [5] = runs */
    double train_s[2][LK_EB_ROWS], bytes[2][LK_EB_ROWS];
    double done, total; /* work units (see lk_emojibench_config.progress) */
    int64_t train_step; /* the last update the running trainer reported */
} bench;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void logf_(bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(bench *b, const char *fmt, ...) {
    if (!b->c->log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    b->c->log(b->c->log_ud, line);
}

static void work(bench *b, double units) {
    b->done += units;
    if (b->c->progress) b->c->progress(b->c->log_ud, b->done, b->total);
}

/* the trainer's progress callback: its updates as work */
static lk_status train_tick(void *ud, const lk_train_stats *st) {
    bench *b = ud;
    const int64_t d = st->step - b->train_step;
    b->train_step = st->step;
    if (d > 0) work(b, (double)d * LK_EMOJIBENCH_TRAIN_UNITS);
    return LK_OK;
}

/* bytes of a file or, recursively, a folder */
static int64_t path_bytes(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return (int64_t)st.st_size;
    DIR *d = opendir(path);
    if (!d) return 0;
    int64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[4300];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        sum += path_bytes(p);
    }
    closedir(d);
    return sum;
}

static lk_status write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    const bool ok = fputs(text, f) >= 0;
    return (fclose(f) == 0 && ok) ? LK_OK : lk_fail(LK_ERR_IO, "%s: cannot write", path);
}

/* the concept's real image (style) as a PNG in dir, with a caption file */
static lk_status put_image(bench *b, int concept, int style, const char *dir, int idx,
                           const char *caption) {
    lk_image img = {0};
    lk_status s = lk_image_alloc(&img, SIDE, SIDE, 3);
    if (s == LK_OK) s = lk_emoji_set_load_image(b->set, concept, style, SIDE, img.px);
    char p[4300];
    snprintf(p, sizeof p, "%s/%02d.png", dir, idx);
    if (s == LK_OK) s = lk_image_save_png(&img, p, NULL);
    snprintf(p, sizeof p, "%s/%02d.txt", dir, idx);
    if (s == LK_OK) s = write_text(p, caption);
    lk_image_free(&img);
    return s;
}

/* ---- scoring ---- */

/* score one image (planar [-1,1] or RGB bytes) against reference embedding ref and the
 * concept's prompt text embedding; add to row */
static void add_score(bench *b, int task, int row, const float *emb, const float *ref,
                      const float *text, int concept) {
    double *a = b->acc[task][row];
    const int rank = lk_eval_rank(emb, b->names, b->nc, b->E, concept);
    a[0] += 1.0;
    a[1] += (double)lk_eval_cosine(emb, ref, b->E);
    a[2] += (double)lk_eval_cosine(emb, text, b->E);
    a[3] += rank == 0 ? 1.0 : 0.0;
    a[4] += rank >= 0 && rank < 5 ? 1.0 : 0.0;
}

static lk_status embed_real(bench *b, int concept, int style, float *out) {
    uint8_t rgb[SIDE * SIDE * 3];
    lk_status s = lk_emoji_set_load_image(b->set, concept, style, SIDE, rgb);
    return s == LK_OK ? lk_evaluator_embed_images(b->ev, rgb, 1, SIDE, out) : s;
}

static lk_status embed_text(bench *b, const char *text, float *out) {
    return lk_evaluator_embed_texts(b->ev, &text, 1, out);
}

/* ---- generation ---- */

static lk_status gen_baseline(bench *b, const char *prompt, uint64_t seed, float *chw) {
    lk_sd_gen_params g;
    lk_sd_gen_params_default(&g);
    g.prompt = prompt;
    g.width = g.height = SIDE;
    g.steps = b->c->sample_steps;
    g.cfg_scale = b->c->guidance;
    g.seed = seed;
    g.cancel = b->c->cancel;
    lk_sd_result r;
    lk_status s = lk_sd_pipeline_generate(b->pipe, &g, &r);
    if (s == LK_OK) memcpy(chw, r.image, sizeof(float) * 3 * SIDE * SIDE);
    lk_sd_result_free(&r);
    if (s == LK_OK) work(b, b->c->sample_steps);
    return s;
}

/* a trained personalization: the trainer (for sampling), seconds, output bytes */
static lk_status personalize(bench *b, int row, const char *images, const char *token,
                             const char *init_word, int n_images, const char *out_dir,
                             lk_trainer **trp, double *secs, int64_t *bytes) {
    const lk_emojibench_config *c = b->c;
    lk_train_config tc;
    lk_train_config_default(&tc);
    tc.model = c->model_dir;
    tc.store = LK_F32;
    tc.images = images;
    tc.resolution = SIDE;
    tc.min_images = n_images;
    tc.captions = LK_CAPTION_INSTANCE;
    tc.token = token;
    tc.class_word = "emoji";
    tc.steps = c->steps[row];
    tc.batch = n_images < 4 ? n_images : 4;
    tc.lr = c->lr[row];
    tc.lr_schedule = LK_LR_CONSTANT;
    tc.seed = c->seed;
    tc.cancel = c->cancel;
    tc.max_grad_norm = 1.0f;
    tc.progress = train_tick;
    tc.progress_ud = b;
    b->train_step = 0;
    lk_train_method *m = NULL;
    lk_status s = LK_OK;
    switch (row) {
    case LK_EB_TI: {
        lk_ti_options o;
        lk_ti_options_default(&o);
        o.init_word = init_word;
        s = lk_ti_method_new(&m, &o);
        tc.adam.weight_decay = 0.0f;
        break;
    }
    case LK_EB_DREAMBOOTH: {
        lk_dreambooth_opts o;
        lk_dreambooth_opts_default(&o);
        o.fp16 = true; /* the output as it would be shipped */
        s = lk_dreambooth_method_new(&m, &o);
        break;
    }
    case LK_EB_LORA: {
        lk_lora_options o;
        lk_lora_options_default(&o);
        s = lk_lora_method_new(&m, &o);
        break;
    }
    case LK_EB_CUSTOM: {
        lk_cd_opts o;
        lk_cd_opts_default(&o);
        o.concept[0].init_word = init_word;
        o.token_lr = c->cd_token_lr;
        s = lk_custom_diffusion_method_new(&m, &o);
        break;
    }
    default: s = lk_fail(LK_ERR_INVALID, "emojibench: row %d is not a method", row);
    }
    if (s != LK_OK) return s;
    const double t0 = now_s();
    lk_trainer *tr = NULL;
    s = lk_trainer_new(&tr, &tc, m);
    if (s == LK_OK) s = lk_trainer_run(tr);
    *secs = now_s() - t0;
    char out[4300];
    snprintf(out, sizeof out, "%s/%s%s", out_dir, ROW_NAMES[row],
             row == LK_EB_DREAMBOOTH ? "" : ".safetensors");
    if (s == LK_OK) s = lk_trainer_save(tr, out);
    *bytes = s == LK_OK ? path_bytes(out) : 0;
    if (s != LK_OK) {
        lk_trainer_free(tr);
        return s;
    }
    *trp = tr;
    return LK_OK;
}

/* draw prompt (seeds) with the trainer, score each image against ref/text for concept */
static lk_status score_trained(bench *b, lk_trainer *tr, int task, int row, const char *prompt,
                               const float *ref, const float *text, int concept, float *chw,
                               float *emb) {
    for (int k = 0; k < b->c->seeds; k++) {
        lk_status s = lk_trainer_sample(tr, prompt, NULL, b->c->seed + (uint64_t)k,
                                        b->c->sample_steps, b->c->guidance, SIDE, SIDE, chw);
        if (s == LK_OK) work(b, b->c->sample_steps);
        if (s == LK_OK) s = lk_evaluator_embed_chw(b->ev, chw, 1, SIDE, emb);
        if (s != LK_OK) return s;
        add_score(b, task, row, emb, ref, text, concept);
    }
    return LK_OK;
}

static lk_status score_baseline(bench *b, int task, const char *prompt, const float *ref,
                                const float *text, int concept, float *chw, float *emb) {
    for (int k = 0; k < b->c->seeds; k++) {
        lk_status s = gen_baseline(b, prompt, b->c->seed + (uint64_t)k, chw);
        if (s == LK_OK) s = lk_evaluator_embed_chw(b->ev, chw, 1, SIDE, emb);
        if (s != LK_OK) return s;
        add_score(b, task, LK_EB_BASELINE, emb, ref, text, concept);
    }
    return LK_OK;
}

static const char *row_token(int row, bool style) {
    switch (row) {
    case LK_EB_TI: return style ? "<eb-style>" : "<eb-subject>";
    case LK_EB_CUSTOM: return "<new1>";
    default: return "sks";
    }
}

/* ---- the tasks ---- */

/* the subject task's concepts (at most 64): the first n_concepts held-out ones */
static int subject_concepts(const bench *b, int held[64]) {
    int nh = 0;
    for (int i = 0; i < b->nc && nh < 64; i++)
        if (lk_emoji_set_concept(b->set, i)->heldout) held[nh++] = i;
    if (b->c->n_concepts > 0 && b->c->n_concepts < nh) nh = b->c->n_concepts;
    return nh;
}

static lk_status subject_task(bench *b) {
    const lk_emojibench_config *c = b->c;
    int held[64];
    const int nh = subject_concepts(b, held);
    b->n_subject = nh;
    float *ref = malloc(sizeof(float) * (size_t)b->E * 3);
    float *chw = malloc(sizeof(float) * 3 * SIDE * SIDE);
    lk_status s = ref && chw ? LK_OK : lk_fail(LK_ERR_NOMEM, "out of memory");
    float *text = ref + b->E, *emb = ref + 2 * b->E;
    for (int j = 0; j < nh && s == LK_OK; j++) {
        const int k = held[j];
        const lk_emoji_concept *ck = lk_emoji_set_concept(b->set, k);
        const int target = b->gen_styles[j % b->n_gen];
        int in[2], ni = 0;
        for (int q = 0; q < b->n_gen; q++)
            if (b->gen_styles[q] != target && ni < 2) in[ni++] = b->gen_styles[q];
        char prompt[600], dir[4300];
        snprintf(prompt, sizeof prompt, "%s emoji, %s style", ck->name,
                 lk_emoji_set_style_words(b->set, target));
        s = embed_real(b, k, target, ref);
        if (s == LK_OK) s = embed_text(b, prompt, text);
        /* real: the two input images by the other artists */
        for (int q = 0; q < ni && s == LK_OK && (c->rows & (1u << LK_EB_REAL)); q++) {
            s = embed_real(b, k, in[q], emb);
            if (s == LK_OK) add_score(b, 0, LK_EB_REAL, emb, ref, text, k);
        }
        if (s == LK_OK && (c->rows & (1u << LK_EB_BASELINE)))
            s = score_baseline(b, 0, prompt, ref, text, k, chw, emb);
        for (int row = LK_EB_TI; row < LK_EB_ROWS && s == LK_OK; row++) {
            if (!(c->rows & (1u << row))) continue;
            const char *tok = row_token(row, false);
            snprintf(dir, sizeof dir, "%s/subject/%s/%s", c->work_dir, ck->key, ROW_NAMES[row]);
            s = lk__mkdirs(dir);
            for (int q = 0; q < ni && s == LK_OK; q++) {
                char cap[256];
                snprintf(cap, sizeof cap, "{token} emoji, %s style", lk_emoji_set_style_words(b->set, in[q]));
                s = put_image(b, k, in[q], dir, q, cap);
            }
            lk_trainer *tr = NULL;
            double secs = 0.0;
            int64_t bytes = 0;
            char out_dir[4400];
            snprintf(out_dir, sizeof out_dir, "%s/subject/%s", c->work_dir, ck->key);
            if (s == LK_OK) s = personalize(b, row, dir, tok, "emoji", ni, out_dir, &tr, &secs, &bytes);
            char gp[600];
            snprintf(gp, sizeof gp, "%s emoji, %s style", tok, lk_emoji_set_style_words(b->set, target));
            if (s == LK_OK) s = score_trained(b, tr, 0, row, gp, ref, text, k, chw, emb);
            lk_trainer_free(tr);
            b->train_s[0][row] += secs;
            b->bytes[0][row] += (double)bytes;
            b->acc[0][row][5] += 1.0;
            if (s == LK_OK) logf_(b, "subject %d/%d %s: %s trained in %.1f s", j + 1, nh, ck->name,
                                  ROW_NAMES[row], secs);
        }
    }
    free(ref);
    free(chw);
    return s;
}

static bool plain_concept(const lk_emoji_concept *k, unsigned need_mask) {
    return !k->heldout && (k->style_mask & need_mask) == need_mask && !strstr(k->name, "skin tone") &&
           strncmp(k->name, "flag", 4) != 0;
}

/* n evenly spaced plain training concepts having every style in need_mask, skipping skip[] */
static int pick_concepts(bench *b, int n, unsigned need_mask, const int *skip, int n_skip, int *out) {
    int *all = malloc(sizeof(int) * (size_t)b->nc), na = 0;
    if (!all) return 0;
    for (int i = 0; i < b->nc; i++) {
        if (!plain_concept(lk_emoji_set_concept(b->set, i), need_mask)) continue;
        bool sk = false;
        for (int q = 0; q < n_skip; q++) sk = sk || skip[q] == i;
        if (!sk) all[na++] = i;
    }
    if (n > na) n = na;
    for (int i = 0; i < n; i++) out[i] = all[(size_t)i * (size_t)na / (size_t)n];
    free(all);
    return n;
}

/* the style task's 5 OpenMoji inputs and the concepts it draws (*nd of them, at most 256) */
static lk_status style_concepts(bench *b, int inputs[N_STYLE_INPUTS], int draw[256], int *nd) {
    if (b->openmoji < 0) return lk_fail(LK_ERR_FORMAT, "emojibench: the data set has no openmoji style");
    for (int i = 0; i < N_STYLE_INPUTS; i++) {
        inputs[i] = lk_emoji_set_find(b->set, STYLE_INPUT_KEYS[i]);
        if (inputs[i] < 0) return lk_fail(LK_ERR_FORMAT, "emojibench: concept %s missing", STYLE_INPUT_KEYS[i]);
    }
    unsigned need = 1u << b->openmoji;
    for (int q = 0; q < b->n_gen; q++) need |= 1u << b->gen_styles[q];
    const int n = b->c->n_style_concepts;
    *nd = pick_concepts(b, n < 256 ? n : 256, need, inputs, N_STYLE_INPUTS, draw);
    return LK_OK;
}

static lk_status style_task(bench *b) {
    const lk_emojibench_config *c = b->c;
    int inputs[N_STYLE_INPUTS], draw[256], nd = 0;
    lk_status s = style_concepts(b, inputs, draw, &nd);
    if (s != LK_OK) return s;
    b->n_style = nd;
    float *buf = malloc(sizeof(float) * (size_t)b->E * (size_t)(2 * nd + 1));
    float *chw = malloc(sizeof(float) * 3 * SIDE * SIDE);
    if (!buf || !chw) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    float *emb = buf ? buf + (size_t)2 * nd * b->E : NULL;
    const char *ow = lk_emoji_set_style_words(b->set, b->openmoji);
    /* references and prompt texts of the drawn concepts */
    for (int i = 0; i < nd && s == LK_OK; i++) {
        char t[600];
        snprintf(t, sizeof t, "%s emoji, %s style", lk_emoji_set_concept(b->set, draw[i])->name, ow);
        s = embed_real(b, draw[i], b->openmoji, buf + (size_t)i * b->E);
        if (s == LK_OK) s = embed_text(b, t, buf + (size_t)(nd + i) * b->E);
    }
    for (int i = 0; i < nd && s == LK_OK; i++) {
        const lk_emoji_concept *k = lk_emoji_set_concept(b->set, draw[i]);
        const float *ref = buf + (size_t)i * b->E, *text = buf + (size_t)(nd + i) * b->E;
        for (int q = 0; q < b->n_gen && s == LK_OK && (c->rows & (1u << LK_EB_REAL)); q++) {
            s = embed_real(b, draw[i], b->gen_styles[q], emb);
            if (s == LK_OK) add_score(b, 1, LK_EB_REAL, emb, ref, text, draw[i]);
        }
        char prompt[600];
        snprintf(prompt, sizeof prompt, "%s emoji, %s style", k->name, ow);
        if (s == LK_OK && (c->rows & (1u << LK_EB_BASELINE)))
            s = score_baseline(b, 1, prompt, ref, text, draw[i], chw, emb);
    }
    for (int row = LK_EB_TI; row < LK_EB_ROWS && s == LK_OK; row++) {
        if (!(c->rows & (1u << row))) continue;
        const char *tok = row_token(row, true);
        char dir[4300], out_dir[4300];
        snprintf(out_dir, sizeof out_dir, "%s/style", c->work_dir);
        snprintf(dir, sizeof dir, "%s/style/%s", c->work_dir, ROW_NAMES[row]);
        s = lk__mkdirs(dir);
        for (int q = 0; q < N_STYLE_INPUTS && s == LK_OK; q++) {
            char cap[600];
            snprintf(cap, sizeof cap, "%s emoji, {token} style", lk_emoji_set_concept(b->set, inputs[q])->name);
            s = put_image(b, inputs[q], b->openmoji, dir, q, cap);
        }
        lk_trainer *tr = NULL;
        double secs = 0.0;
        int64_t bytes = 0;
        if (s == LK_OK) s = personalize(b, row, dir, tok, "style", N_STYLE_INPUTS, out_dir, &tr, &secs, &bytes);
        for (int i = 0; i < nd && s == LK_OK; i++) {
            char prompt[600];
            snprintf(prompt, sizeof prompt, "%s emoji, %s style", lk_emoji_set_concept(b->set, draw[i])->name, tok);
            s = score_trained(b, tr, 1, row, prompt, buf + (size_t)i * b->E,
                              buf + (size_t)(nd + i) * b->E, draw[i], chw, emb);
        }
        lk_trainer_free(tr);
        b->train_s[1][row] += secs;
        b->bytes[1][row] += (double)bytes;
        b->acc[1][row][5] += 1.0;
        if (s == LK_OK) logf_(b, "style: %s trained in %.1f s, %d concepts drawn", ROW_NAMES[row], secs, nd);
    }
    free(buf);
    free(chw);
    return s;
}

/* the text-to-image check's training concepts (at most 1024) */
static int t2i_concepts(bench *b, int draw[1024]) {
    unsigned need = 0;
    for (int q = 0; q < b->n_gen; q++) need |= 1u << b->gen_styles[q];
    const int n = b->c->n_t2i_concepts;
    return pick_concepts(b, n < 1024 ? n : 1024, need, NULL, 0, draw);
}

/* the run's work units (see lk_emojibench_config.progress), as the tasks will do it */
static lk_status plan_work(bench *b) {
    const lk_emojibench_config *c = b->c;
    const double img = c->sample_steps, seeds = c->seeds;
    double total = 0.0;
    int *draw = malloc(sizeof(int) * 1024), held[64], inputs[N_STYLE_INPUTS];
    if (!draw) return lk_fail(LK_ERR_NOMEM, "out of memory");
    if (c->n_t2i_concepts > 0) total += (double)t2i_concepts(b, draw) * b->n_gen * img;
    double per = (c->rows & (1u << LK_EB_BASELINE)) ? seeds * img : 0.0; /* one concept */
    for (int row = LK_EB_TI; row < LK_EB_ROWS; row++)
        if (c->rows & (1u << row)) per += (double)c->steps[row] * LK_EMOJIBENCH_TRAIN_UNITS + seeds * img;
    total += (double)subject_concepts(b, held) * per;
    lk_status s = LK_OK;
    int nd = 0;
    if (c->n_style_concepts > 0) s = style_concepts(b, inputs, draw, &nd);
    if (s == LK_OK && nd > 0) {
        if (c->rows & (1u << LK_EB_BASELINE)) total += nd * seeds * img;
        for (int row = LK_EB_TI; row < LK_EB_ROWS; row++)
            if (c->rows & (1u << row)) total += (double)c->steps[row] * LK_EMOJIBENCH_TRAIN_UNITS + nd * seeds * img;
    }
    free(draw);
    b->total = total;
    return s;
}

static lk_status t2i_check(bench *b, lk_emojibench_result *r) {
    int draw[1024];
    const int nd = t2i_concepts(b, draw);
    float *chw = malloc(sizeof(float) * 3 * SIDE * SIDE), *emb = malloc(sizeof(float) * (size_t)b->E);
    lk_status s = chw && emb ? LK_OK : lk_fail(LK_ERR_NOMEM, "out of memory");
    double g1 = 0, g5 = 0, r1 = 0, r5 = 0;
    int n = 0;
    for (int i = 0; i < nd && s == LK_OK; i++)
        for (int q = 0; q < b->n_gen && s == LK_OK; q++) {
            const int st = b->gen_styles[q];
            char prompt[600];
            snprintf(prompt, sizeof prompt, "%s emoji, %s style",
                     lk_emoji_set_concept(b->set, draw[i])->name, lk_emoji_set_style_words(b->set, st));
            s = gen_baseline(b, prompt, b->c->seed + (uint64_t)q, chw);
            if (s == LK_OK) s = lk_evaluator_embed_chw(b->ev, chw, 1, SIDE, emb);
            if (s != LK_OK) break;
            int rank = lk_eval_rank(emb, b->names, b->nc, b->E, draw[i]);
            g1 += rank == 0;
            g5 += rank >= 0 && rank < 5;
            s = embed_real(b, draw[i], st, emb);
            if (s != LK_OK) break;
            rank = lk_eval_rank(emb, b->names, b->nc, b->E, draw[i]);
            r1 += rank == 0;
            r5 += rank >= 0 && rank < 5;
            n++;
        }
    if (n > 0) {
        r->t2i_n = n;
        r->t2i_top1 = g1 / n;
        r->t2i_top5 = g5 / n;
        r->real_top1 = r1 / n;
        r->real_top5 = r5 / n;
    }
    logf_(b, "text-to-image check: %d images, top-5 %.3f (real %.3f)", n, g5 / (n ? n : 1), r5 / (n ? n : 1));
    free(chw);
    free(emb);
    return s;
}

static lk_status setup(bench *b) {
    const lk_emojibench_config *c = b->c;
    if (!c->model_dir || !c->evaluator_dir || !c->data_dir || !c->work_dir)
        return lk_fail(LK_ERR_INVALID, "emojibench: model, evaluator, data and work folders are required");
    if (c->seeds < 1 || c->sample_steps < 1)
        return lk_fail(LK_ERR_INVALID, "emojibench: seeds and sample steps must be positive");
    lk_status s = lk_emoji_set_open(&b->set, c->data_dir);
    if (s == LK_OK) s = lk_evaluator_load(&b->ev, c->evaluator_dir);
    if (s == LK_OK) s = lk_sd_pipeline_load(&b->pipe, c->model_dir, NULL);
    if (s == LK_OK) s = lk__mkdirs(c->work_dir);
    if (s != LK_OK) return s;
    b->E = lk_evaluator_dim(b->ev);
    b->nc = lk_emoji_set_n_concepts(b->set);
    b->openmoji = -1;
    for (int i = 0; i < lk_emoji_set_n_styles(b->set); i++) {
        if (lk_emoji_set_style_trainable(b->set, i)) b->gen_styles[b->n_gen++] = i;
        else if (!strcmp(lk_emoji_set_style(b->set, i), "openmoji")) b->openmoji = i;
    }
    if (b->n_gen < 3) return lk_fail(LK_ERR_FORMAT, "emojibench: the data set has %d generator styles, 3 needed", b->n_gen);
    b->names = malloc(sizeof(float) * (size_t)b->nc * (size_t)b->E);
    char **texts = calloc((size_t)b->nc, sizeof *texts);
    if (!b->names || !texts) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    for (int i = 0; i < b->nc && s == LK_OK; i++) {
        char t[600];
        lk_emoji_caption(b->set, i, -1, 3, t, sizeof t); /* "NAME emoji" */
        if (!(texts[i] = strdup(t))) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    if (s == LK_OK) s = lk_evaluator_embed_texts(b->ev, (const char *const *)texts, b->nc, b->names);
    for (int i = 0; i < b->nc && texts; i++) free(texts[i]);
    free(texts);
    return s;
}

lk_status lk_emojibench_run(const lk_emojibench_config *c, lk_emojibench_result *r) {
    if (!c || !r) return lk_fail(LK_ERR_INVALID, "emojibench_run: NULL argument");
    memset(r, 0, sizeof *r);
    bench b;
    memset(&b, 0, sizeof b);
    b.c = c;
    const double t0 = now_s();
    lk_status s = setup(&b);
    if (s == LK_OK) s = plan_work(&b);
    if (s == LK_OK && c->n_t2i_concepts > 0) s = t2i_check(&b, r);
    if (s == LK_OK) s = subject_task(&b);
    if (s == LK_OK && c->n_style_concepts > 0) s = style_task(&b);
    for (int t = 0; t < 2 && s == LK_OK; t++)
        for (int row = 0; row < LK_EB_ROWS; row++) {
            lk_emojibench_row *o = t ? &r->style[row] : &r->subject[row];
            const double *a = b.acc[t][row];
            o->n = (int)a[0];
            if (a[0] > 0) {
                o->subject = a[1] / a[0];
                o->prompt = a[2] / a[0];
                o->top1 = a[3] / a[0];
                o->top5 = a[4] / a[0];
            }
            if (a[5] > 0) {
                o->train_s = b.train_s[t][row] / a[5];
                o->file_bytes = b.bytes[t][row] / a[5];
            }
        }
    if (s == LK_OK) {
        r->n_subject_concepts = b.n_subject;
        r->n_style_concepts = b.n_style;
        r->seconds = now_s() - t0;
    }
    free(b.names);
    lk_sd_pipeline_free(b.pipe);
    lk_evaluator_free(b.ev);
    lk_emoji_set_free(b.set);
    return s;
}

/* ---- output ---- */

static void json_rows(FILE *f, const char *task, const lk_emojibench_row *rows, unsigned mask) {
    fprintf(f, "  \"%s\": {\n", task);
    bool first = true;
    for (int i = 0; i < LK_EB_ROWS; i++) {
        if (!(mask & (1u << i))) continue;
        const lk_emojibench_row *o = &rows[i];
        fprintf(f, "%s    \"%s\": {\"images\": %d, \"subject_fidelity\": %.6f, \"prompt_fidelity\": %.6f, "
                "\"top1\": %.6f, \"top5\": %.6f, \"train_seconds\": %.3f, \"file_bytes\": %.0f}",
                first ? "" : ",\n", ROW_NAMES[i], o->n, o->subject, o->prompt, o->top1, o->top5,
                o->train_s, o->file_bytes);
        first = false;
    }
    fprintf(f, "\n  }");
}

lk_status lk_emojibench_write_json(const lk_emojibench_config *c, const lk_emojibench_result *r,
                                   const char *path) {
    if (!c || !r || !path) return lk_fail(LK_ERR_INVALID, "emojibench_write_json: NULL argument");
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    fprintf(f, "{\n  \"benchmark\": \"EmojiBench\",\n  \"settings\": {\"seeds\": %d, \"sample_steps\": %d, "
            "\"guidance\": %.3g, \"seed\": %llu, \"subject_concepts\": %d, \"style_concepts\": %d, "
            "\"steps\": {\"textual_inversion\": %d, \"dreambooth\": %d, \"lora\": %d, "
            "\"custom_diffusion\": %d}, \"lr\": {\"textual_inversion\": %g, \"dreambooth\": %g, "
            "\"lora\": %g, \"custom_diffusion\": %g}},\n", c->seeds, c->sample_steps,
            (double)c->guidance, (unsigned long long)c->seed, r->n_subject_concepts,
            r->n_style_concepts, c->steps[LK_EB_TI], c->steps[LK_EB_DREAMBOOTH], c->steps[LK_EB_LORA],
            c->steps[LK_EB_CUSTOM], (double)c->lr[LK_EB_TI], (double)c->lr[LK_EB_DREAMBOOTH],
            (double)c->lr[LK_EB_LORA], (double)c->lr[LK_EB_CUSTOM]);
    json_rows(f, "subject", r->subject, c->rows);
    fprintf(f, ",\n");
    json_rows(f, "style", r->style, c->rows);
    fprintf(f, ",\n  \"text_to_image\": {\"images\": %d, \"generated_top1\": %.6f, \"generated_top5\": %.6f, "
            "\"real_top1\": %.6f, \"real_top5\": %.6f},\n  \"seconds\": %.1f\n}\n", r->t2i_n,
            r->t2i_top1, r->t2i_top5, r->real_top1, r->real_top5, r->seconds);
    const bool ok = !ferror(f);
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
        remove(tmp);
        return lk_fail(LK_ERR_IO, "%s: cannot write", path);
    }
    return LK_OK;
}

static void print_rows(FILE *f, const char *title, const lk_emojibench_row *rows, unsigned mask) {
    fprintf(f, "\n%s\n\n| method | images | subject fidelity | prompt fidelity | top-1 | top-5 | "
            "train s | file KB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n", title);
    for (int i = 0; i < LK_EB_ROWS; i++) {
        if (!(mask & (1u << i))) continue;
        const lk_emojibench_row *o = &rows[i];
        fprintf(f, "| %s | %d | %.4f | %.4f | %.3f | %.3f | %.1f | %.1f |\n", ROW_NAMES[i], o->n,
                o->subject, o->prompt, o->top1, o->top5, o->train_s, o->file_bytes / 1e3);
    }
}

void lk_emojibench_print(const lk_emojibench_config *c, const lk_emojibench_result *r, FILE *f) {
    if (!c || !r || !f) return;
    fprintf(f, "EmojiBench (%d held-out concepts, %d seeds, %d sampling steps, guidance %.1f)\n",
            r->n_subject_concepts, c->seeds, c->sample_steps, (double)c->guidance);
    print_rows(f, "Subject task (learn from 2 styles, draw in the third)", r->subject, c->rows);
    if (c->n_style_concepts > 0)
        print_rows(f, "Style task (learn OpenMoji from 5 images, draw other concepts)", r->style, c->rows);
    if (r->t2i_n > 0)
        fprintf(f, "\nText-to-image on training concepts (%d images): top-1 %.3f, top-5 %.3f; "
                "real images top-1 %.3f, top-5 %.3f (ratio of top-5: %.2f)\n", r->t2i_n,
                r->t2i_top1, r->t2i_top5, r->real_top1, r->real_top5,
                r->real_top5 > 0 ? r->t2i_top5 / r->real_top5 : 0.0);
    fprintf(f, "\n%.1f s in all\n", r->seconds);
}
