/* demo.c: `likeness demo`: the whole loop out of the box on the bundled emoji model: personalize
 * it on a few images (LoRA by default), draw a grid of prompts x seeds, rank the candidates with
 * the evaluator (subject fidelity to the inputs), and write an HTML page with the inputs, the
 * ranked outputs and the loss curve. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/defaults.h"
#include "cli/progress.h"
#include "likeness.h"
#include "likeness/evaluator.h"
#include "likeness/image.h"
#include "likeness/report.h"
#include "likeness/train.h"
#include "likeness/train_methods.h"

int lk_cli_demo(int argc, char **argv);

#define DEMO_SIDE 64
#define MAX_INPUTS 16
#define MAX_PROMPTS 8

static void usage(FILE *f) {
    fprintf(f,
            "usage: likeness demo [--images DIR] [--name NAME] [--method lora|ti|dreambooth|custom]\n"
            "                     [--steps N] [--lr F] [--seeds N] [--prompt TEXT]... [--out DIR]\n"
            "                     [--model DIR] [--evaluator DIR] [--sample-steps N] [--cfg F]\n"
            "Personalizes the bundled emoji model on the images in DIR (default\n"
            "examples/emoji-fox: a concept the model never saw), draws every prompt with several\n"
            "seeds, ranks the drawings with the evaluator and writes OUT/index.html (default\n"
            "demo-out). Prompts use {token} for the learned subject (default: the styles the inputs\n"
            "are not in). NAME (default: from DIR/name.txt) gives the prompt-fidelity text.\n");
}

typedef struct demo {
    lk_cli_progress prog;
    double t_start;
    float *loss;
    int n_loss, cap_loss;
} demo;

static lk_status on_step(void *ud, const lk_train_stats *st) {
    demo *d = ud;
    if (d->n_loss == d->cap_loss) {
        int nc = d->cap_loss ? 2 * d->cap_loss : 256;
        float *nl = realloc(d->loss, sizeof(float) * (size_t)nc);
        if (!nl) return lk_fail(LK_ERR_NOMEM, "out of memory");
        d->loss = nl;
        d->cap_loss = nc;
    }
    d->loss[d->n_loss++] = st->loss;
    lk_cli_progress_train(&d->prog, st->step, st->steps, 0, d->t_start, st->loss, st->lr,
                          st->grad_norm, NULL, 0.0f);
    return LK_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* the PNG files of dir, sorted (at most MAX_INPUTS) */
static int list_pngs(const char *dir, char **out) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_INPUTS) {
        const size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".png") && e->d_name[0] != '.') {
            char p[4300];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            out[n++] = strdup(p);
        }
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof *out, cmp_str);
    return n;
}

static void read_line(const char *path, char *buf, size_t cap) {
    buf[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    if (!fgets(buf, (int)cap, f)) buf[0] = 0;
    fclose(f);
    buf[strcspn(buf, "\r\n")] = 0;
}

int lk_cli_demo(int argc, char **argv) {
    const char *images = lk_cli_default_example(), *out = "demo-out",
               *model = lk_cli_default_model(), *evaluator = lk_cli_default_evaluator(),
               *method = "lora", *name_opt = NULL;
    const char *prompts[MAX_PROMPTS];
    int n_prompts = 0, seeds = 4, sample_steps = 20;
    long steps = -1;
    float lr = -1.0f, cfg = 5.0f;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "likeness demo: unknown option or missing value '%s' (see --help)\n", o);
            return 2;
        }
        const char *v = argv[++i];
        char *e = NULL;
        bool ok = true;
        if (!strcmp(o, "--images")) images = v;
        else if (!strcmp(o, "--out")) out = v;
        else if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--evaluator")) evaluator = v;
        else if (!strcmp(o, "--method")) method = v;
        else if (!strcmp(o, "--name")) name_opt = v;
        else if (!strcmp(o, "--prompt")) ok = n_prompts < MAX_PROMPTS && (prompts[n_prompts++] = v);
        else if (!strcmp(o, "--steps")) steps = strtol(v, &e, 10), ok = !*e && steps >= 1;
        else if (!strcmp(o, "--seeds")) seeds = (int)strtol(v, &e, 10), ok = !*e && seeds >= 1 && seeds <= 64;
        else if (!strcmp(o, "--sample-steps")) sample_steps = (int)strtol(v, &e, 10), ok = !*e && sample_steps >= 1;
        else if (!strcmp(o, "--lr")) lr = strtof(v, &e), ok = !*e && lr > 0.0f;
        else if (!strcmp(o, "--cfg")) cfg = strtof(v, &e), ok = !*e && cfg >= 0.0f;
        else {
            fprintf(stderr, "likeness demo: unknown option '%s' (see --help)\n", o);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "likeness demo: bad value '%s' for %s\n", v, o);
            return 2;
        }
    }
    demo d;
    memset(&d, 0, sizeof d);
    lk_cli_progress_init(&d.prog, stderr, 1);
    char name[256], p[4400];
    if (name_opt) snprintf(name, sizeof name, "%s", name_opt);
    else {
        snprintf(p, sizeof p, "%s/name.txt", images);
        read_line(p, name, sizeof name);
    }
    char *inputs[MAX_INPUTS];
    const int n_in = list_pngs(images, inputs);
    if (n_in < 1) {
        fprintf(stderr, "likeness demo: %s: no PNG images%s\n", images, n_in < 0 ? " (cannot open the folder)" : "");
        return 1;
    }
    /* method */
    lk_train_config tc;
    lk_train_config_default(&tc);
    tc.model = model;
    tc.store = LK_F32;
    tc.images = images;
    tc.resolution = DEMO_SIDE;
    tc.min_images = 1;
    tc.upscale_small = true; /* any picture: the model works at 64x64 */
    tc.captions = LK_CAPTION_INSTANCE;
    tc.class_word = "emoji";
    tc.batch = n_in < 4 ? n_in : 4;
    tc.lr_schedule = LK_LR_CONSTANT;
    tc.progress = on_step;
    tc.progress_ud = &d;
    tc.cancel = &lk_cli_interrupted;
    lk_train_method *m = NULL;
    lk_status s = LK_OK;
    if (!strcmp(method, "lora")) {
        lk_lora_options o;
        lk_lora_options_default(&o);
        s = lk_lora_method_new(&m, &o);
        tc.token = "sks", tc.steps = 300, tc.lr = 1e-3f;
    } else if (!strcmp(method, "ti")) {
        lk_ti_options o;
        lk_ti_options_default(&o);
        o.init_word = "emoji";
        s = lk_ti_method_new(&m, &o);
        tc.token = "<subject>", tc.steps = 400, tc.lr = 5e-3f, tc.adam.weight_decay = 0.0f;
    } else if (!strcmp(method, "dreambooth")) {
        lk_dreambooth_opts o;
        lk_dreambooth_opts_default(&o);
        o.fp16 = true;
        s = lk_dreambooth_method_new(&m, &o);
        tc.token = "sks", tc.steps = 200, tc.lr = 5e-5f;
    } else if (!strcmp(method, "custom")) {
        lk_cd_opts o;
        lk_cd_opts_default(&o);
        o.concept[0].init_word = "emoji";
        o.token_lr = 5e-3f; /* K/V at 2e-5, the token row at Textual Inversion's rate */
        s = lk_custom_diffusion_method_new(&m, &o);
        tc.token = "<new1>", tc.steps = 250, tc.lr = 2e-5f;
    } else {
        fprintf(stderr, "likeness demo: unknown method '%s' (lora, ti, dreambooth, custom)\n", method);
        for (int i = 0; i < n_in; i++) free(inputs[i]);
        return 2;
    }
    if (steps > 0) tc.steps = steps;
    if (lr > 0.0f) tc.lr = lr;
    char prompt_buf[MAX_PROMPTS][512];
    if (n_prompts == 0) {
        static const char *const styles[3] = {"fluent 3d", "noto", "twemoji"};
        for (int i = 0; i < 3; i++) {
            snprintf(prompt_buf[i], sizeof prompt_buf[i], "{token} emoji, %s style", styles[i]);
            prompts[n_prompts++] = prompt_buf[i];
        }
    }
    /* the evaluator and the inputs' embeddings first: a bad evaluator or input fails before
     * training */
    lk_evaluator *ev = NULL;
    if (s == LK_OK) s = lk_evaluator_load(&ev, evaluator);
    const int E = ev ? lk_evaluator_dim(ev) : 0, n_c = n_prompts * seeds;
    float *in_emb = calloc((size_t)(n_in + 1) * (size_t)(E ? E : 1), sizeof(float));
    float *emb = calloc((size_t)(E ? E : 1), sizeof(float));
    float *chw = malloc(sizeof(float) * 3 * DEMO_SIDE * DEMO_SIDE);
    lk_report_candidate *cands = calloc((size_t)n_c, sizeof *cands);
    char (*cpath)[4400] = calloc((size_t)n_c, sizeof *cpath);
    char (*cprompt)[512] = calloc((size_t)n_c, sizeof *cprompt);
    if (s == LK_OK && (!in_emb || !emb || !chw || !cands || !cpath || !cprompt))
        s = lk_fail(LK_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n_in && s == LK_OK; i++) {
        lk_image img = {0};
        lk_image_load_opts lo = {0};
        lo.channels = 3;
        s = lk_image_load(&img, inputs[i], &lo);
        /* as the trainer sees it: scaled to cover 64x64, center-cropped */
        if (s == LK_OK) s = lk_image_prepare(&img, DEMO_SIDE, LK_CROP_CENTER, LK_FLIP_NONE, NULL, chw);
        if (s == LK_OK) s = lk_evaluator_embed_chw(ev, chw, 1, DEMO_SIDE, in_emb + (size_t)i * E);
        lk_image_free(&img);
    }
    if (s == LK_OK && mkdir(out, 0777) != 0 && errno != EEXIST)
        s = lk_fail(LK_ERR_IO, "%s: cannot create the folder: %s", out, strerror(errno));
    lk_cli_progress_note(&d.prog, "start", "demo: personalizing %s with %s on %d images of %s "
                         "(%lld steps)", model, method, n_in, images, (long long)tc.steps);
    lk_cli_sigint_install();
    d.t_start = lk_cli_now();
    lk_trainer *tr = NULL;
    if (s == LK_OK) s = lk_trainer_new(&tr, &tc, m);
    else if (m && m->free) m->free(m);
    if (s == LK_OK) s = lk_trainer_run(tr);
    lk_cli_progress_end_line(&d.prog);
    const double train_s = lk_cli_now() - d.t_start;
    char outfile[4400];
    snprintf(outfile, sizeof outfile, "%s/%s%s", out, method, strcmp(method, "dreambooth") ? ".safetensors" : "");
    if (s == LK_OK) s = lk_trainer_save(tr, outfile);
    float *text_emb = in_emb + (size_t)n_in * E;
    int c = 0;
    for (int pi = 0; pi < n_prompts && s == LK_OK; pi++) {
        char filled[512], named[512];
        snprintf(filled, sizeof filled, "%s", prompts[pi]);
        snprintf(named, sizeof named, "%s", prompts[pi]);
        char *t;
        if ((t = strstr(prompts[pi], "{token}"))) {
            const size_t off = (size_t)(t - prompts[pi]);
            snprintf(filled + off, sizeof filled - off, "%s%s", tc.token, t + 7);
            snprintf(named + off, sizeof named - off, "%s%s", name[0] ? name : "emoji", t + 7);
        }
        const bool has_name = name[0] != 0;
        if (has_name) {
            const char *nt = named;
            s = lk_evaluator_embed_texts(ev, &nt, 1, text_emb);
        }
        for (int k = 0; k < seeds && s == LK_OK; k++, c++) {
            lk_cli_progress_note(&d.prog, "sample", "drawing %d/%d: %s (seed %d)", c + 1, n_c, filled, k);
            s = lk_trainer_sample(tr, filled, NULL, (uint64_t)k, sample_steps, cfg, DEMO_SIDE,
                                  DEMO_SIDE, chw);
            if (s == LK_OK) s = lk_evaluator_embed_chw(ev, chw, 1, DEMO_SIDE, emb);
            double sub = 0.0;
            for (int i = 0; i < n_in && s == LK_OK; i++)
                sub += (double)lk_eval_cosine(emb, in_emb + (size_t)i * E, E);
            lk_image img = {0};
            if (s == LK_OK) s = lk_image_from_chw(&img, chw, 3, DEMO_SIDE, DEMO_SIDE, LK_RANGE_SYMMETRIC);
            snprintf(cpath[c], sizeof cpath[c], "%s/candidate-%02d.png", out, c);
            char params[5200];
            snprintf(params, sizeof params, "%s\nSteps: %d, Sampler: DPM++ 2M, CFG scale: %g, Seed: %d, "
                     "Size: %dx%d, Model: %s, Personalization: %s %s", filled, sample_steps,
                     (double)cfg, k, DEMO_SIDE, DEMO_SIDE, model, method, outfile);
            lk_image_text kv = {"parameters", params};
            lk_png_write_opts wo = {.level = LK_PNG_LEVEL_DEFAULT, .text = &kv, .n_text = 1};
            if (s == LK_OK) s = lk_image_save_png(&img, cpath[c], &wo);
            lk_image_free(&img);
            snprintf(cprompt[c], sizeof cprompt[c], "%s", filled);
            cands[c] = (lk_report_candidate){cpath[c], cprompt[c], (uint64_t)k,
                                             (float)(sub / n_in),
                                             has_name ? lk_eval_cosine(emb, text_emb, E) : NAN};
        }
    }
    lk_cli_sigint_restore();
    if (s == LK_OK) {
        lk_report_image ri[MAX_INPUTS];
        for (int i = 0; i < n_in; i++) ri[i] = (lk_report_image){inputs[i], NULL};
        char steps_s[32], time_s[32], n_s[32];
        snprintf(steps_s, sizeof steps_s, "%lld", (long long)tc.steps);
        snprintf(time_s, sizeof time_s, "%.1f s", train_s);
        snprintf(n_s, sizeof n_s, "%d prompts x %d seeds", n_prompts, seeds);
        const lk_report_kv info[] = {{"model", model}, {"method", method}, {"token", tc.token},
                                     {"training steps", steps_s}, {"training time", time_s},
                                     {"output", outfile}, {"candidates", n_s},
                                     {"evaluator", evaluator}, {"likeness", lk_version()}};
        char summary[1024];
        snprintf(summary, sizeof summary, "likeness learned the subject of %d images in %s (%s, "
                 "%.0f s on this machine) and drew it with every prompt and seed below. The "
                 "evaluator ranks the drawings by subject fidelity: the mean cosine similarity of "
                 "its image embedding to the inputs'; prompt fidelity is the similarity to the "
                 "prompt with the subject's name. A person picks the best.",
                 n_in, images, method, train_s);
        lk_report r = {NULL, summary, info, (int)(sizeof info / sizeof info[0]),
                       ri, n_in, cands, n_c, d.loss, d.n_loss, "subject fidelity",
                       "prompt fidelity"};
        char title[300];
        snprintf(title, sizeof title, "likeness demo: %s", name[0] ? name : images);
        r.title = title;
        snprintf(p, sizeof p, "%s/index.html", out);
        s = lk_report_write_html(&r, p);
        if (s == LK_OK) {
            int best = 0;
            for (int i = 1; i < n_c; i++)
                if (cands[i].score > cands[best].score) best = i;
            lk_cli_progress_note(&d.prog, "done", "wrote %s (best: %s, seed %llu, subject "
                                 "fidelity %.3f); %s in %.0f s", p, cands[best].prompt,
                                 (unsigned long long)cands[best].seed, (double)cands[best].score,
                                 outfile, lk_cli_now() - d.t_start);
        }
    }
    if (s != LK_OK) fprintf(stderr, "likeness demo: %s\n", lk_last_error());
    lk_trainer_free(tr);
    lk_evaluator_free(ev);
    for (int i = 0; i < n_in; i++) free(inputs[i]);
    free(in_emb);
    free(emb);
    free(chw);
    free(cands);
    free(cpath);
    free(cprompt);
    free(d.loss);
    return s == LK_OK ? 0 : s == LK_ERR_INTERRUPTED ? 130 : 1;
}
