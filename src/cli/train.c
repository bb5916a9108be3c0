/* train.c: `likeness train ti|lora`: personalization from a folder of images, Textual
 * Inversion (Gal et al. 2022) or LoRA (Hu et al. 2021), with the defaults of the papers and of
 * diffusers' training scripts; progress bar / JSON lines, Ctrl-C checkpoints, --resume,
 * validation image grids. The training itself lives in src/personalize/. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "cli/progress.h"
#include "likeness.h"
#include "likeness/image.h"
#include "likeness/train.h"

int lk_cli_train(int argc, char **argv);

static void train_usage(FILE *f) {
    fprintf(f,
"usage: likeness train ti|lora --model BASE --images DIR --token TOKEN --out FILE [options]\n"
"\n"
"Methods:\n"
"  ti     Textual Inversion (Gal et al. 2022): learns new token vectors; writes an A1111\n"
"         embedding to FILE (A1111 names it after the file) and the diffusers layout to\n"
"         FILE.diffusers.safetensors. Defaults: 3000 steps, lr 5e-3, batch 1, grad-accum 4,\n"
"         no clipping, object templates (\"a photo of a {}\", ...).\n"
"  lora   LoRA (Hu et al. 2021) on the UNet attention projections: writes a kohya/A1111 LoRA\n"
"         to FILE and the diffusers/PEFT layout to FILE.diffusers.safetensors. Defaults: 500\n"
"         steps, lr 1e-4, rank 4, alpha = rank, batch 1, clipping 1.0, caption \"a TOKEN CLASS\".\n"
"\n");
    fprintf(f,
"Required:\n"
"  --model PATH           diffusers folder or single-file SD-1.x/2.x checkpoint\n"
"  --images DIR           PNG / JPEG / WebP pictures of the subject (NAME.txt next to an image\n"
"                         is its caption; {token} / [V] and {class} / [class] are replaced)\n"
"  --token TEXT           the new word for the subject, e.g. \"<sks>\" (TI: must not be a word\n"
"                         of the vocabulary)\n"
"  --out FILE             output .safetensors\n"
"\n"
"Data:\n"
"  --class WORD           the subject's class (\"dog\"): DreamBooth caption, TI init word\n"
"  --prompt TEXT          instance caption template (default \"a {token} {class}\")\n"
"  --style                learn a style: Textual Inversion's style templates\n"
"  --templates KIND       object | style | instance (TI default object, LoRA instance)\n"
"  --resolution N         training size in pixels (default 512; multiple of 64 for SD)\n"
"  --flip                 random horizontal flips (off: keeps text and logos readable)\n"
"  --upscale-small        accept images smaller than the resolution (upscaled)\n"
"  --min-images N         fewest images accepted (default 3)\n"
"\n");
    fprintf(f,
"Optimization:\n"
"  --steps N              optimizer updates\n"
"  --lr X                 learning rate\n"
"  --lr-schedule KIND     constant | constant_with_warmup | linear | cosine (default constant)\n"
"  --lr-warmup N          warm-up updates (default 0)\n"
"  --batch N              images per micro-batch (default 1)\n"
"  --grad-accum N         micro-batches per update (TI default 4, LoRA 1)\n"
"  --weight-decay X       AdamW decoupled weight decay (default 1e-2)\n"
"  --adam-beta1 X, --adam-beta2 X, --adam-eps X   (defaults 0.9, 0.999, 1e-8)\n"
"  --max-grad-norm X      global gradient-norm clipping, 0 = off (TI 0, LoRA 1.0)\n"
"  --noise-offset X       add X * randn(B, C, 1, 1) to the noise (default 0)\n"
"  --min-snr-gamma X      Min-SNR-gamma loss weighting, 0 = off (5 is common)\n"
"  --gradient-checkpointing   recompute activations in backward (less memory, slower)\n"
"  --half                 store the frozen weights in float16 (half memory; f32 compute)\n"
"  --seed N               everything random follows it (default 0)\n"
"\n");
    fprintf(f,
"Textual Inversion:\n"
"  --vectors N            vectors per token (default 1)\n"
"  --init-word WORD       single-token word the vectors start from (default: --class, else\n"
"                         \"object\" / \"style\")\n"
"\n"
"LoRA:\n"
"  --rank R               adapter rank (default 4)\n"
"  --alpha A              scale alpha / rank (default alpha = rank)\n"
"  --lora-ff              also the feed-forward layers (ff.net.0.proj, ff.net.2)\n"
"  --lora-proj            also proj_in / proj_out\n"
"  --train-text-encoder   also the text encoder's attention (and mlp with --lora-ff)\n"
"\n");
    fprintf(f,
"Run:\n"
"  --checkpoint FILE      training state (default OUT-stem.checkpoint.safetensors); Ctrl-C\n"
"                         writes it and stops\n"
"  --checkpoint-every N   also every N updates (default 500; 0 = only on Ctrl-C)\n"
"  --resume               continue from the checkpoint (same options and images): the same\n"
"                         losses and weights as an uninterrupted run\n"
"  --log FILE             JSON lines: step, loss, lr, grad_norm, epoch, seconds\n"
"  --validation-prompt P  every --validate-every N updates, generate P for each seed of\n"
"  --validate-every N     --validation-seeds (default 1,2,3,4) with --validation-steps\n"
"  --validation-seeds L   (default 25) and --validation-cfg (7.5) and save a grid as\n"
"  --validation-steps N   OUT-stem.val-STEP.png\n"
"  --validation-cfg X\n"
"  --threads N            compute threads (default: all cores)\n"
"  --tokenizer DIR        tokenizer folder for single-file checkpoints\n"
"  --prediction v|epsilon override the model's prediction type\n"
"\n"
"Progress goes to stderr: a bar on a terminal, JSON lines otherwise (LK_PROGRESS=bar|json|none).\n");
}

/* ---- argument parsing ---- */

static int parse_i64(const char *opt, const char *v, int64_t lo, int64_t hi, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "likeness train: %s needs an integer in [%lld, %lld], got '%s'\n", opt,
                (long long)lo, (long long)hi, v ? v : "");
        return 0;
    }
    *out = x;
    return 1;
}

static int parse_int(const char *opt, const char *v, int lo, int hi, int *out) {
    int64_t x;
    if (!parse_i64(opt, v, lo, hi, &x)) return 0;
    *out = (int)x;
    return 1;
}

static int parse_f(const char *opt, const char *v, double lo, double hi, float *out) {
    char *end = NULL;
    errno = 0;
    double x = v ? strtod(v, &end) : 0.0;
    if (!v || !*v || *end || errno || !isfinite(x) || x < lo || x > hi) {
        fprintf(stderr, "likeness train: %s needs a number in [%g, %g], got '%s'\n", opt, lo, hi,
                v ? v : "");
        return 0;
    }
    *out = (float)x;
    return 1;
}

typedef struct train_args {
    bool ti;
    const char *out;
    lk_train_config cfg;
    lk_ti_options ti_o;
    lk_lora_options lora_o;
    bool alpha_set, steps_set, lr_set, accum_set, clip_set, templates_set;
    int threads;
    const char *val_prompt;
    int64_t val_every;
    uint64_t val_seeds[16];
    int n_val_seeds;
    int val_steps;
    float val_cfg;
    char *ckpt_owned;
    lk_cli_progress prog;
    double t_start;
    int64_t step0;
} train_args;

static int parse_seeds(const char *v, train_args *a) {
    a->n_val_seeds = 0;
    const char *p = v;
    while (p && *p && a->n_val_seeds < 16) {
        char *end = NULL;
        errno = 0;
        unsigned long long x = strtoull(p, &end, 10);
        if (end == p || errno || (*end && *end != ',')) {
            fprintf(stderr, "likeness train: --validation-seeds takes a comma-separated list of "
                    "integers, got '%s'\n", v);
            return 0;
        }
        a->val_seeds[a->n_val_seeds++] = x;
        p = *end ? end + 1 : end;
    }
    return a->n_val_seeds > 0;
}

/* 1: parsed; 0: error (message printed); -1: --help */
static int parse_args(int argc, char **argv, train_args *a) {
    if (argc < 2) {
        train_usage(stderr);
        return 0;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return -1;
    if (!strcmp(argv[1], "ti") || !strcmp(argv[1], "textual-inversion")) a->ti = true;
    else if (!strcmp(argv[1], "lora")) a->ti = false;
    else {
        fprintf(stderr, "likeness train: unknown method '%s' (ti or lora; dreambooth and custom "
                "come later)\n", argv[1]);
        return 0;
    }
    lk_train_config *c = &a->cfg;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t x64 = 0;
        int ok = 1, used = 1;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) return -1;
        else if (!strcmp(o, "--model")) c->model = v;
        else if (!strcmp(o, "--images")) c->images = v;
        else if (!strcmp(o, "--token")) c->token = v;
        else if (!strcmp(o, "--out")) a->out = v;
        else if (!strcmp(o, "--class")) c->class_word = v;
        else if (!strcmp(o, "--prompt")) {
            c->prompt = v;
            if (!a->templates_set) c->captions = LK_CAPTION_INSTANCE;
        } else if (!strcmp(o, "--tokenizer")) c->tokenizer_dir = v;
        else if (!strcmp(o, "--log")) c->log = v;
        else if (!strcmp(o, "--checkpoint")) c->checkpoint = v;
        else if (!strcmp(o, "--validation-prompt")) a->val_prompt = v;
        else if (!strcmp(o, "--init-word")) a->ti_o.init_word = v;
        else if (!strcmp(o, "--templates")) {
            a->templates_set = true;
            if (v && !strcmp(v, "object")) c->captions = LK_CAPTION_OBJECT;
            else if (v && !strcmp(v, "style")) c->captions = LK_CAPTION_STYLE;
            else if (v && !strcmp(v, "instance")) c->captions = LK_CAPTION_INSTANCE;
            else {
                fprintf(stderr, "likeness train: --templates takes object, style or instance\n");
                ok = 0;
            }
        } else if (!strcmp(o, "--lr-schedule")) {
            if (!v || lk_lr_kind_parse(v, &c->lr_schedule) != LK_OK) {
                fprintf(stderr, "likeness train: --lr-schedule takes constant, "
                        "constant_with_warmup, linear or cosine\n");
                ok = 0;
            }
        } else if (!strcmp(o, "--prediction")) {
            if (v && !strcmp(v, "v")) c->prediction = LK_PREDICT_V;
            else if (v && !strcmp(v, "epsilon")) c->prediction = LK_PREDICT_EPSILON;
            else {
                fprintf(stderr, "likeness train: --prediction takes v or epsilon\n");
                ok = 0;
            }
        } else if (!strcmp(o, "--steps")) {
            ok = parse_i64(o, v, 1, 100000000, &c->steps);
            a->steps_set = true;
        } else if (!strcmp(o, "--lr")) {
            ok = parse_f(o, v, 1e-12, 10.0, &c->lr);
            a->lr_set = true;
        } else if (!strcmp(o, "--lr-warmup")) ok = parse_i64(o, v, 0, 100000000, &c->lr_warmup);
        else if (!strcmp(o, "--resolution")) ok = parse_int(o, v, 8, 4096, &c->resolution);
        else if (!strcmp(o, "--batch")) ok = parse_int(o, v, 1, 256, &c->batch);
        else if (!strcmp(o, "--grad-accum")) {
            ok = parse_int(o, v, 1, 4096, &c->grad_accum);
            a->accum_set = true;
        } else if (!strcmp(o, "--seed")) {
            ok = parse_i64(o, v, 0, INT64_MAX, &x64);
            c->seed = (uint64_t)x64;
        } else if (!strcmp(o, "--weight-decay")) ok = parse_f(o, v, 0.0, 10.0, &c->adam.weight_decay);
        else if (!strcmp(o, "--adam-beta1")) ok = parse_f(o, v, 0.0, 0.999999, &c->adam.beta1);
        else if (!strcmp(o, "--adam-beta2")) ok = parse_f(o, v, 0.0, 0.999999, &c->adam.beta2);
        else if (!strcmp(o, "--adam-eps")) ok = parse_f(o, v, 1e-30, 1.0, &c->adam.eps);
        else if (!strcmp(o, "--max-grad-norm")) {
            ok = parse_f(o, v, 0.0, 1e9, &c->max_grad_norm);
            a->clip_set = true;
        } else if (!strcmp(o, "--noise-offset")) ok = parse_f(o, v, 0.0, 10.0, &c->noise_offset);
        else if (!strcmp(o, "--min-snr-gamma")) ok = parse_f(o, v, 0.0, 1e6, &c->min_snr_gamma);
        else if (!strcmp(o, "--min-images")) ok = parse_int(o, v, 1, 100000, &c->min_images);
        else if (!strcmp(o, "--vectors")) ok = parse_int(o, v, 1, LK_CLIP_CHUNK, &a->ti_o.n_vectors);
        else if (!strcmp(o, "--rank")) ok = parse_int(o, v, 1, 1024, &a->lora_o.rank);
        else if (!strcmp(o, "--alpha")) {
            ok = parse_f(o, v, 1e-6, 1e6, &a->lora_o.alpha);
            a->alpha_set = true;
        } else if (!strcmp(o, "--checkpoint-every")) ok = parse_i64(o, v, 0, 100000000, &c->checkpoint_every);
        else if (!strcmp(o, "--validate-every")) ok = parse_i64(o, v, 0, 100000000, &a->val_every);
        else if (!strcmp(o, "--validation-seeds")) ok = parse_seeds(v, a);
        else if (!strcmp(o, "--validation-steps")) ok = parse_int(o, v, 1, 1000, &a->val_steps);
        else if (!strcmp(o, "--validation-cfg")) ok = parse_f(o, v, 0.0, 100.0, &a->val_cfg);
        else if (!strcmp(o, "--threads")) ok = parse_int(o, v, 1, 1024, &a->threads);
        else {
            used = 0;
            if (!strcmp(o, "--style")) {
                c->captions = LK_CAPTION_STYLE;
                a->templates_set = true;
            } else if (!strcmp(o, "--flip")) c->flip = true;
            else if (!strcmp(o, "--upscale-small")) c->upscale_small = true;
            else if (!strcmp(o, "--resume")) c->resume = true;
            else if (!strcmp(o, "--gradient-checkpointing")) c->gradient_checkpointing = true;
            else if (!strcmp(o, "--half")) c->store = LK_F16;
            else if (!strcmp(o, "--lora-ff")) a->lora_o.targets |= LK_LORA_FF;
            else if (!strcmp(o, "--lora-proj")) a->lora_o.targets |= LK_LORA_PROJ;
            else if (!strcmp(o, "--train-text-encoder")) a->lora_o.targets |= LK_LORA_TEXT;
            else {
                fprintf(stderr, "likeness train: unknown option '%s' (try 'likeness train --help')\n", o);
                return 0;
            }
        }
        if (!ok) return 0;
        if (used) {
            if (!v) {
                fprintf(stderr, "likeness train: %s needs a value\n", o);
                return 0;
            }
            i++;
        }
    }
    const char *missing = !c->model ? "--model" : !c->images ? "--images" : !c->token ? "--token"
                        : !a->out ? "--out" : NULL;
    if (missing) {
        fprintf(stderr, "likeness train: %s is required (try 'likeness train --help')\n", missing);
        return 0;
    }
    return 1;
}

static void apply_method_defaults(train_args *a) {
    lk_train_config *c = &a->cfg;
    if (a->ti) {
        if (!a->steps_set) c->steps = 3000;
        if (!a->lr_set) c->lr = 5e-3f;
        if (!a->accum_set) c->grad_accum = 4;
        if (!a->clip_set) c->max_grad_norm = 0.0f;
    } else {
        if (!a->steps_set) c->steps = 500;
        if (!a->lr_set) c->lr = 1e-4f;
        if (!a->templates_set && !c->prompt) c->captions = LK_CAPTION_INSTANCE;
        if (!a->alpha_set) a->lora_o.alpha = (float)a->lora_o.rank;
    }
}

/* OUT minus ".safetensors" + suffix (malloc'd) */
static char *sibling(const char *out, const char *suffix) {
    size_t n = strlen(out), e = strlen(".safetensors");
    size_t stem = n >= e && !strcmp(out + n - e, ".safetensors") ? n - e : n;
    char *p = malloc(stem + strlen(suffix) + 1);
    if (!p) return NULL;
    memcpy(p, out, stem);
    strcpy(p + stem, suffix);
    return p;
}

/* The folder of path must exist (checked before hours of training, not at the first save). */
static int parent_exists(const char *opt, const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return 1;
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (!dir) return 0;
    memcpy(dir, path, n);
    dir[n] = 0;
    struct stat sb;
    int ok = stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (!ok) fprintf(stderr, "likeness train: %s %s: the folder %s does not exist\n", opt, path, dir);
    free(dir);
    return ok;
}

/* ---- progress and validation ---- */

static void fmt_time(char *buf, size_t n, double s) {
    if (!(s >= 0.0) || s > 359999.0) {
        snprintf(buf, n, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static lk_status on_step(void *ud, const lk_train_stats *st) {
    train_args *a = ud;
    lk_cli_progress *p = &a->prog;
    if (p->silent) return LK_OK;
    const double now = lk_cli_now(), el = now - a->t_start;
    const int64_t done = st->step - a->step0;
    const double per = done > 0 ? el / (double)done : 0.0;
    const double eta = per * (double)(st->steps - st->step);
    if (!p->tty) {
        fprintf(p->f, "{\"event\":\"step\",\"step\":%lld,\"steps\":%lld,\"loss\":%.6g,\"lr\":%.6g,"
                "\"grad_norm\":%.6g,\"s_per_step\":%.4g,\"eta_s\":%.1f}\n", (long long)st->step,
                (long long)st->steps, (double)st->loss, (double)st->lr, (double)st->grad_norm, per, eta);
        fflush(p->f);
        return LK_OK;
    }
    enum { W = 24 };
    char bar[W * 3 + 1], et[32], ea[32];
    const int fill = (int)((double)W * (double)st->step / (double)st->steps);
    size_t o = 0;
    for (int i = 0; i < W; i++) {
        memcpy(bar + o, i < fill ? "\xe2\x96\x88" : "\xe2\x96\x91", 3);
        o += 3;
    }
    bar[o] = 0;
    fmt_time(et, sizeof et, el);
    fmt_time(ea, sizeof ea, eta);
    fprintf(p->f, "\r\033[K%s %lld/%lld loss %.4f lr %.2e [%s, %.2f s/it, ETA %s]", bar,
            (long long)st->step, (long long)st->steps, (double)st->loss, (double)st->lr, et, per, ea);
    fflush(p->f);
    p->bar_open = true;
    return LK_OK;
}

static lk_status on_validate(void *ud, lk_trainer *tr, int64_t step) {
    train_args *a = ud;
    const int res = a->cfg.resolution, n = a->n_val_seeds;
    float *chw = malloc(sizeof(float) * 3 * (size_t)res * (size_t)res);
    lk_image grid = {0}, one = {0};
    lk_status s = chw ? lk_image_alloc(&grid, res * n, res, 3) : lk_fail(LK_ERR_NOMEM, "out of memory");
    for (int i = 0; s == LK_OK && i < n; i++) {
        s = lk_trainer_sample(tr, a->val_prompt, NULL, a->val_seeds[i], a->val_steps, a->val_cfg,
                              res, res, chw);
        if (s == LK_OK) s = lk_image_from_chw(&one, chw, 3, res, res, LK_RANGE_SYMMETRIC);
        if (s == LK_OK)
            for (int y = 0; y < res; y++)
                memcpy(grid.px + ((size_t)y * (size_t)grid.w + (size_t)i * (size_t)res) * 3,
                       one.px + (size_t)y * (size_t)res * 3, (size_t)res * 3);
        lk_image_free(&one);
    }
    char suffix[64];
    snprintf(suffix, sizeof suffix, ".val-%06lld.png", (long long)step);
    char *path = s == LK_OK ? sibling(a->out, suffix) : NULL;
    if (s == LK_OK && !path) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) {
        lk_image_text t = {"parameters", (char *)a->val_prompt};
        lk_png_write_opts po = {LK_PNG_LEVEL_DEFAULT, &t, 1};
        s = lk_image_save_png(&grid, path, &po);
    }
    if (s == LK_OK) lk_cli_progress_note(&a->prog, "validation", "validation images: %s", path);
    free(path);
    free(chw);
    lk_image_free(&grid);
    return s;
}

/* ---- the command ---- */

int lk_cli_train(int argc, char **argv) {
    train_args a;
    memset(&a, 0, sizeof a);
    lk_train_config_default(&a.cfg);
    lk_ti_options_default(&a.ti_o);
    lk_lora_options_default(&a.lora_o);
    a.cfg.checkpoint_every = 500;
    a.val_steps = 25;
    a.val_cfg = 7.5f;
    a.val_seeds[0] = 1, a.val_seeds[1] = 2, a.val_seeds[2] = 3, a.val_seeds[3] = 4;
    a.n_val_seeds = 4;
    int pr = parse_args(argc, argv, &a);
    if (pr < 0) {
        train_usage(stdout);
        return 0;
    }
    if (!pr) return 2;
    apply_method_defaults(&a);
    if (a.threads > 0) lk_set_num_threads(a.threads);
    if (!a.cfg.checkpoint) {
        a.ckpt_owned = sibling(a.out, ".checkpoint.safetensors");
        if (!a.ckpt_owned) {
            fprintf(stderr, "likeness train: out of memory\n");
            return 1;
        }
        a.cfg.checkpoint = a.ckpt_owned;
    }
    if (!parent_exists("--out", a.out) || !parent_exists("--checkpoint", a.cfg.checkpoint) ||
        (a.cfg.log && !parent_exists("--log", a.cfg.log))) {
        free(a.ckpt_owned);
        return 1;
    }
    if (a.val_prompt && a.val_every > 0) {
        a.cfg.validate = on_validate;
        a.cfg.validate_ud = &a;
        a.cfg.validate_every = a.val_every;
    }
    lk_cli_progress_init(&a.prog, stderr, 1);
    a.cfg.progress = on_step;
    a.cfg.progress_ud = &a;
    a.cfg.cancel = &lk_cli_interrupted;

    lk_train_method *m = NULL;
    lk_status s = a.ti ? lk_ti_method_new(&m, &a.ti_o) : lk_lora_method_new(&m, &a.lora_o);
    lk_trainer *tr = NULL;
    const double t0 = lk_cli_now();
    if (s == LK_OK) {
        lk_cli_progress_note(&a.prog, "load", "loading %s and encoding the images in %s ...",
                             a.cfg.model, a.cfg.images);
        s = lk_trainer_new(&tr, &a.cfg, m);
    }
    if (s == LK_OK) {
        a.step0 = lk_trainer_step_count(tr);
        lk_cli_progress_note(&a.prog, "start", "%s: %d images, %lld parameters train, %lld steps "
                             "(batch %d x %d accumulated), lr %g%s", a.ti ? "textual inversion" : "lora",
                             lk_trainer_num_images(tr), (long long)lk_paramset_numel(lk_trainer_params(tr)),
                             (long long)a.cfg.steps, a.cfg.batch, a.cfg.grad_accum, (double)a.cfg.lr,
                             a.step0 ? " (resumed)" : "");
        a.t_start = lk_cli_now();
        lk_cli_sigint_install();
        s = lk_trainer_run(tr);
        lk_cli_sigint_restore();
        lk_cli_progress_end_line(&a.prog);
    }
    if (s == LK_ERR_INTERRUPTED) {
        fprintf(stderr, "likeness train: %s; run the same command with --resume to continue\n",
                lk_last_error());
        lk_trainer_free(tr);
        free(a.ckpt_owned);
        return 130;
    }
    if (s == LK_OK) s = lk_trainer_save(tr, a.out);
    if (s == LK_OK) {
        char *dp = lk_train_diffusers_path(a.out);
        lk_cli_progress_note(&a.prog, "done", "wrote %s and %s (%lld steps, %.1f s)", a.out,
                             dp ? dp : "?", (long long)lk_trainer_step_count(tr), lk_cli_now() - t0);
        free(dp);
    }
    lk_trainer_free(tr);
    free(a.ckpt_owned);
    if (s != LK_OK) {
        fprintf(stderr, "likeness train: %s\n", lk_last_error());
        return 1;
    }
    return 0;
}
