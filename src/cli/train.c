/* train.c: `likeness train ti|lora|dreambooth|custom` and `likeness train custom-merge`:
 * personalization from a folder of images, Textual Inversion (Gal et al. 2022), LoRA (Hu et al.
 * 2021), DreamBooth (Ruiz et al. 2022) or Custom Diffusion (Kumari et al. 2022), with the defaults
 * of the papers and of diffusers' training scripts; progress bar / JSON lines, Ctrl-C
 * checkpoints, --resume, validation image grids. The training itself lives in src/personalize/. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>

#include "cli/defaults.h"
#include "cli/progress.h"
#include "likeness.h"
#include "likeness/image.h"
#include "likeness/train.h"
#include "likeness/train_methods.h"

int lk_cli_train(int argc, char **argv);

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130

/* The model's native size when it is a diffusers folder (unet sample_size x VAE factor, as
 * diffusers' default), else 512. */
static int default_resolution(const char *model) {
    char p[4200];
    lk_unet_config uc;
    lk_vae_config vc;
    snprintf(p, sizeof p, "%s/unet/config.json", model);
    if (lk_unet_config_load(&uc, p) != LK_OK || uc.sample_size < 1) return 512;
    snprintf(p, sizeof p, "%s/vae/config.json", model);
    if (lk_vae_config_load(&vc, p) != LK_OK) return 512;
    const int r = uc.sample_size << (vc.n_blocks - 1);
    return r >= 8 && r <= 4096 && r % 8 == 0 ? r : 512;
}

static void train_usage(FILE *f) {
    fprintf(f,
"usage: likeness train ti|lora|dreambooth|custom [--model BASE] --images DIR --token TOKEN\n"
"                      --out OUT [options]\n"
"       likeness train custom-merge --model BASE A.safetensors B.safetensors --out M.safetensors\n"
"\n"
"Methods:\n"
"  ti          Textual Inversion (Gal et al. 2022): learns new token vectors; writes an A1111\n"
"              embedding to OUT (A1111 names it after the file) and the diffusers layout to\n"
"              OUT.diffusers.safetensors. Defaults: 3000 steps, lr 5e-3, batch 1, grad-accum 4,\n"
"              no clipping, object templates (\"a photo of a {}\", ...).\n"
"  lora        LoRA (Hu et al. 2021) on the UNet attention projections: writes a kohya/A1111\n"
"              LoRA to OUT and the diffusers/PEFT layout to OUT.diffusers.safetensors.\n"
"              Defaults: 500 steps, lr 1e-4, rank 4, alpha = rank, batch 1, clipping 1.0,\n"
"              caption \"a TOKEN CLASS\".\n"
"  dreambooth  DreamBooth (Ruiz et al. 2022): fine-tunes the whole UNet (and with\n"
"              --train-text-encoder the text encoder) on \"a TOKEN CLASS\" (TOKEN: a rare word\n"
"              such as sks); writes a diffusers folder OUT (likeness generate --model OUT),\n"
"              or with OUT ending in .safetensors one CompVis/A1111 single-file checkpoint\n"
"              (SD-1.x bases only; likeness generate --model OUT --tokenizer DIR).\n"
"              Defaults: 800 steps, lr 5e-6, batch 1, constant lr, clipping 1.0, 1 image\n"
"              minimum. Weights are float32 (no --half); memory: 4x the UNet (AdamW state).\n"
"  custom      Custom Diffusion (Kumari et al. 2022): trains the cross-attention key/value\n"
"              projections and one new token per concept; writes OUT.safetensors (likeness\n"
"              generate --custom OUT). Defaults: 250 steps, lr 1e-5, batch 1, clipping 1.0,\n"
"              token <new1>, caption \"a TOKEN CLASS\". Weights are float32 (no --half).\n"
"  custom-merge  joins two Custom Diffusion files of the base model BASE into one by the\n"
"              paper's constrained merge (sec. 3.2): each concept's prompt features keep its\n"
"              own K/V outputs exactly, generic captions stay close to BASE; the tokens of both\n"
"              are kept (--tokenizer DIR for a single-file BASE).\n"
"\n");
    fprintf(f,
"Required:\n"
"  --model PATH           diffusers folder or single-file SD-1.x/2.x checkpoint (default:\n"
"                         likeness's own emoji model, models/emoji; train at --resolution 64)\n"
"  --images DIR           PNG / JPEG / WebP pictures of the subject (NAME.txt next to an image\n"
"                         is its caption; {token} / [V] and {class} / [class] are replaced)\n"
"  --token TEXT           the word for the subject, e.g. \"<sks>\" (TI and custom: must not be\n"
"                         a word of the vocabulary; custom default \"<new1>\")\n"
"  --out OUT              output .safetensors (dreambooth: output folder, or a single-file\n"
"                         checkpoint when OUT ends in .safetensors)\n"
"\n"
"Data:\n"
"  --class WORD           the subject's class (\"dog\"): caption, TI / custom init word,\n"
"                         class images\n"
"  --prompt TEXT          instance caption template (default \"a {token} {class}\")\n"
"  --style                learn a style: Textual Inversion's style templates\n"
"  --templates KIND       object | style | instance (TI default object, others instance)\n"
"  --resolution N         training size in pixels (default: the model's own, 512 for SD-1.x\n"
"                         folders and single files, 64 for the emoji model)\n"
"  --flip                 random horizontal flips (off: keeps text and logos readable)\n"
"  --upscale-small        accept images smaller than the resolution (upscaled)\n"
"  --min-images N         fewest images accepted (default 3; dreambooth 1)\n"
"\n");
    fprintf(f,
"Optimization:\n"
"  --steps N              optimizer updates\n"
"  --lr X                 learning rate\n"
"  --lr-schedule KIND     constant | constant_with_warmup | linear | cosine (default constant)\n"
"  --lr-warmup N          warm-up updates (default 0)\n"
"  --batch N              images per micro-batch (default 1)\n"
"  --grad-accum N         micro-batches per update (TI default 4, others 1)\n"
"  --weight-decay X       AdamW decoupled weight decay (default 1e-2)\n"
"  --adam-beta1 X, --adam-beta2 X, --adam-eps X   (defaults 0.9, 0.999, 1e-8)\n"
"  --max-grad-norm X      global gradient-norm clipping, 0 = off (TI 0, others 1.0)\n"
"  --noise-offset X       add X * randn(B, C, 1, 1) to the noise (default 0)\n"
"  --min-snr-gamma X      Min-SNR-gamma loss weighting, 0 = off (5 is common)\n"
"  --gradient-checkpointing   recompute activations in backward (less memory, slower)\n"
"  --half                 store the frozen weights in float16 (half memory; f32 compute);\n"
"                         ti and lora only\n"
"  --seed N               everything random follows it (default 0)\n"
"\n");
    fprintf(f,
"Textual Inversion:\n"
"  --vectors N            vectors per token (default 1)\n"
"  --init-word WORD       single-token word the vectors start from (default: --class, else\n"
"                         \"object\" / \"style\"; where the vocabulary splits these, as the\n"
"                         emoji model's does, the mean of the pieces)\n"
"\n"
"LoRA:\n"
"  --rank R               adapter rank (default 4)\n"
"  --alpha A              scale alpha / rank (default alpha = rank)\n"
"  --lora-ff              also the feed-forward layers (ff.net.0.proj, ff.net.2)\n"
"  --lora-proj            also proj_in / proj_out\n"
"  --train-text-encoder   also the text encoder's attention (and mlp with --lora-ff)\n"
"\n"
"DreamBooth:\n"
"  --train-text-encoder   also fine-tune the text encoder\n"
"  --fp16                 write the output weights as float16 (training stays float32)\n"
"\n"
"Custom Diffusion:\n"
"  --init-word WORD       single-token word the token row starts from (default: --class,\n"
"                         else \"ktn\", or the mean of its pieces where the vocabulary splits it)\n"
"  --concept DIR:TOKEN:CLASS  another concept trained jointly (repeatable, up to 7; the first\n"
"                         is --images/--token/--class)\n"
"  --train-q-out          also train attn2.to_q and to_out (the full cross-attention variant)\n"
"  --token-lr F           learning rate of the token rows (default: --lr, as the paper)\n"
"\n");
    fprintf(f,
"Prior preservation (dreambooth and custom): class images made by the base model itself,\n"
"cached in a folder and reused while the model and settings are unchanged:\n"
"  --prior-preservation   on, class images in OUT-stem_class_images (needs --class)\n"
"  --class-dir DIR        on, class images in DIR\n"
"  --class-prompt TEXT    prompt of the class images, {class} replaced (default \"a {class}\")\n"
"  --class-negative TEXT  their negative prompt (default empty)\n"
"  --num-class-images N   how many (default 200)\n"
"  --prior-loss-weight X  lambda of loss = instance + lambda * prior (default 1.0)\n"
"  --class-steps N        DPM-Solver++ 2M steps per class image (default 25)\n"
"  --class-cfg X          their guidance scale (default 7.5)\n"
"  --class-seed N         image i uses seed N + i (default 0)\n"
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
"Exit status: 0 done, 1 a runtime error, 2 a usage error, 130 Ctrl-C (checkpoint written).\n"
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

typedef enum train_kind { M_TI = 1, M_LORA = 2, M_DB = 4, M_CD = 8 } train_kind;

static const char *kind_name(train_kind k) {
    return k == M_TI ? "ti" : k == M_LORA ? "lora" : k == M_DB ? "dreambooth" : "custom";
}

typedef struct train_args {
    train_kind kind;
    const char *out;
    lk_train_config cfg;
    lk_ti_options ti_o;
    lk_lora_options lora_o;
    lk_dreambooth_opts db_o;
    lk_cd_opts cd_o;
    lk_prior_opts prior;          /* shared by dreambooth and custom; class_dir NULL: off */
    bool prior_on;                /* --prior-preservation or --class-dir */
    bool prior_opt_seen;          /* a --class-* option without either */
    const char *init_word;
    bool train_te;
    bool alpha_set, steps_set, lr_set, accum_set, clip_set, templates_set, min_images_set, resolution_set;
    bool half;
    int threads;
    const char *val_prompt;
    int64_t val_every;
    uint64_t val_seeds[16];
    int n_val_seeds;
    int val_steps;
    float val_cfg;
    char *ckpt_owned;
    char *out_owned;
    char *class_dir_owned;
    char *concept_owned[LK_CD_MAX_CONCEPTS];
    lk_cli_progress prog;
    double t_start;
    int64_t step0;
} train_args;

static void free_args(train_args *a) {
    free(a->ckpt_owned);
    free(a->out_owned);
    free(a->class_dir_owned);
    for (int i = 0; i < LK_CD_MAX_CONCEPTS; i++) free(a->concept_owned[i]);
}

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

/* --concept DIR:TOKEN:CLASS (split at the last two colons, so DIR may hold colons; CLASS may be
 * empty). */
static int parse_concept(const char *v, train_args *a) {
    lk_cd_opts *o = &a->cd_o;
    if (o->n_concepts >= LK_CD_MAX_CONCEPTS) {
        fprintf(stderr, "likeness train: at most %d concepts (--images and %d --concept)\n",
                LK_CD_MAX_CONCEPTS, LK_CD_MAX_CONCEPTS - 1);
        return 0;
    }
    char *d = v ? strdup(v) : NULL;
    char *c2 = d ? strrchr(d, ':') : NULL;
    if (c2) *c2 = '\0';
    char *c1 = c2 ? strrchr(d, ':') : NULL;
    if (!c1 || c1 == d || c1[1] == '\0') {
        fprintf(stderr, "likeness train: --concept takes DIR:TOKEN:CLASS (e.g. "
                "photos/cat:<new2>:cat), got '%s'\n", v ? v : "");
        free(d);
        return 0;
    }
    *c1 = '\0';
    a->concept_owned[o->n_concepts] = d;
    lk_cd_concept *k = &o->concept[o->n_concepts++];
    k->images = d;
    k->token = c1 + 1;
    k->class_word = c2[1] ? c2 + 1 : NULL;
    return 1;
}

/* Options that belong to some methods only (mask of train_kind); the others are common. */
static int option_methods(const char *o) {
    static const struct { const char *name; int mask; } t[] = {
        {"--vectors", M_TI}, {"--style", M_TI},
        {"--rank", M_LORA}, {"--alpha", M_LORA}, {"--lora-ff", M_LORA}, {"--lora-proj", M_LORA},
        {"--init-word", M_TI | M_CD}, {"--train-text-encoder", M_LORA | M_DB},
        {"--half", M_TI | M_LORA}, {"--fp16", M_DB},
        {"--concept", M_CD}, {"--train-q-out", M_CD}, {"--token-lr", M_CD},
        {"--prior-preservation", M_DB | M_CD}, {"--class-dir", M_DB | M_CD},
        {"--class-prompt", M_DB | M_CD}, {"--class-negative", M_DB | M_CD},
        {"--num-class-images", M_DB | M_CD}, {"--prior-loss-weight", M_DB | M_CD},
        {"--class-steps", M_DB | M_CD}, {"--class-cfg", M_DB | M_CD}, {"--class-seed", M_DB | M_CD},
    };
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (!strcmp(o, t[i].name)) return t[i].mask;
    return M_TI | M_LORA | M_DB | M_CD;
}

static void methods_text(int mask, char *buf, size_t n) {
    buf[0] = '\0';
    const train_kind ks[4] = {M_TI, M_LORA, M_DB, M_CD};
    for (int i = 0; i < 4; i++)
        if (mask & ks[i]) {
            if (buf[0]) strncat(buf, " and ", n - strlen(buf) - 1);
            strncat(buf, kind_name(ks[i]), n - strlen(buf) - 1);
        }
}

/* 1: parsed; 0: error (message printed); -1: --help */
static int parse_args(int argc, char **argv, train_args *a) {
    if (argc < 2) {
        train_usage(stderr);
        return 0;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return -1;
    if (!strcmp(argv[1], "ti") || !strcmp(argv[1], "textual-inversion")) a->kind = M_TI;
    else if (!strcmp(argv[1], "lora")) a->kind = M_LORA;
    else if (!strcmp(argv[1], "dreambooth")) a->kind = M_DB;
    else if (!strcmp(argv[1], "custom") || !strcmp(argv[1], "custom-diffusion")) a->kind = M_CD;
    else {
        fprintf(stderr, "likeness train: unknown method '%s' (ti, lora, dreambooth, custom or "
                "custom-merge)\n", argv[1]);
        return 0;
    }
    lk_train_config *c = &a->cfg;
    lk_prior_opts *pr = &a->prior;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t x64 = 0;
        int ok = 1, used = 1;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) return -1;
        const int mask = option_methods(o);
        if (!(mask & (int)a->kind)) {
            char ms[64];
            methods_text(mask, ms, sizeof ms);
            if (!strcmp(o, "--half"))
                fprintf(stderr, "likeness train: --half is not available for %s: its trained "
                        "weights must stay float32%s\n", kind_name(a->kind),
                        a->kind == M_DB ? " (--fp16 writes half-size outputs)" : "");
            else
                fprintf(stderr, "likeness train: %s is an option of %s, not of %s\n", o, ms,
                        kind_name(a->kind));
            return 0;
        }
        if (!strcmp(o, "--model")) c->model = v;
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
        else if (!strcmp(o, "--init-word")) a->init_word = v;
        else if (!strcmp(o, "--concept")) ok = parse_concept(v, a);
        else if (!strcmp(o, "--class-dir")) {
            pr->class_dir = v;
            a->prior_on = true;
        } else if (!strcmp(o, "--class-prompt")) {
            pr->class_prompt = v;
            a->prior_opt_seen = true;
        } else if (!strcmp(o, "--class-negative")) {
            pr->negative = v;
            a->prior_opt_seen = true;
        } else if (!strcmp(o, "--num-class-images")) {
            ok = parse_int(o, v, 1, 100000, &pr->num_class_images);
            a->prior_opt_seen = true;
        } else if (!strcmp(o, "--token-lr")) {
            ok = parse_f(o, v, 1e-12, 10.0, &a->cd_o.token_lr);
        } else if (!strcmp(o, "--prior-loss-weight")) {
            ok = parse_f(o, v, 0.0, 1e6, &pr->weight);
            a->prior_opt_seen = true;
        } else if (!strcmp(o, "--class-steps")) {
            ok = parse_int(o, v, 1, 1000, &pr->steps);
            a->prior_opt_seen = true;
        } else if (!strcmp(o, "--class-cfg")) {
            ok = parse_f(o, v, 0.0, 100.0, &pr->cfg_scale);
            a->prior_opt_seen = true;
        } else if (!strcmp(o, "--class-seed")) {
            ok = parse_i64(o, v, 0, INT64_MAX, &x64);
            pr->seed = (uint64_t)x64;
            a->prior_opt_seen = true;
        } else if (!strcmp(o, "--templates")) {
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
        else if (!strcmp(o, "--resolution")) {
            ok = parse_int(o, v, 8, 4096, &c->resolution);
            a->resolution_set = true;
        }
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
        else if (!strcmp(o, "--min-images")) {
            ok = parse_int(o, v, 1, 100000, &c->min_images);
            a->min_images_set = true;
        } else if (!strcmp(o, "--vectors")) ok = parse_int(o, v, 1, LK_CLIP_CHUNK, &a->ti_o.n_vectors);
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
            else if (!strcmp(o, "--half")) a->half = true;
            else if (!strcmp(o, "--lora-ff")) a->lora_o.targets |= LK_LORA_FF;
            else if (!strcmp(o, "--lora-proj")) a->lora_o.targets |= LK_LORA_PROJ;
            else if (!strcmp(o, "--train-text-encoder")) a->train_te = true;
            else if (!strcmp(o, "--fp16")) a->db_o.fp16 = true;
            else if (!strcmp(o, "--train-q-out")) a->cd_o.train_q_out = true;
            else if (!strcmp(o, "--prior-preservation")) a->prior_on = true;
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
    if (a->kind == M_CD && !c->token) c->token = "<new1>";
    if (!c->model) c->model = lk_cli_default_model(); /* the bundled emoji model */
    if (!a->resolution_set) c->resolution = default_resolution(c->model);
    const char *missing = !c->model ? "--model" : !c->images ? "--images" : !c->token ? "--token"
                        : !a->out ? "--out" : NULL;
    if (missing) {
        fprintf(stderr, "likeness train: %s is required (try 'likeness train --help')\n", missing);
        return 0;
    }
    if (a->prior_opt_seen && !a->prior_on) {
        fprintf(stderr, "likeness train: the --class-* options need --prior-preservation or "
                "--class-dir DIR\n");
        return 0;
    }
    if (a->prior_on && !c->class_word) {
        fprintf(stderr, "likeness train: prior preservation needs --class WORD (the class images "
                "show 'a WORD')\n");
        return 0;
    }
    return 1;
}

/* 1: ok; 0: out of memory (message printed). */
static int apply_method_defaults(train_args *a) {
    lk_train_config *c = &a->cfg;
    if (a->kind == M_TI) {
        if (!a->steps_set) c->steps = 3000;
        if (!a->lr_set) c->lr = 5e-3f;
        if (!a->accum_set) c->grad_accum = 4;
        if (!a->clip_set) c->max_grad_norm = 0.0f;
        a->ti_o.init_word = a->init_word;
        if (a->half) c->store = LK_F16;
        return 1;
    }
    if (!a->templates_set && !c->prompt) c->captions = LK_CAPTION_INSTANCE;
    if (a->kind == M_LORA) {
        if (!a->steps_set) c->steps = 500;
        if (!a->lr_set) c->lr = 1e-4f;
        if (!a->alpha_set) a->lora_o.alpha = (float)a->lora_o.rank;
        if (a->train_te) a->lora_o.targets |= LK_LORA_TEXT;
        if (a->half) c->store = LK_F16;
        return 1;
    }
    /* dreambooth and custom train weights in place: F32 (--half was refused while parsing) */
    c->store = LK_F32;
    if (!a->clip_set) c->max_grad_norm = 1.0f;
    if (a->prior_on && !a->prior.class_dir) {
        /* OUT + "_class_images" (OUT without ".safetensors" and trailing '/') */
        size_t n = strlen(a->out), e = strlen(".safetensors");
        while (n > 1 && a->out[n - 1] == '/') n--;
        if (n >= e && !strncmp(a->out + n - e, ".safetensors", e)) n -= e;
        a->class_dir_owned = malloc(n + sizeof "_class_images");
        if (!a->class_dir_owned) {
            fprintf(stderr, "likeness train: out of memory\n");
            return 0;
        }
        memcpy(a->class_dir_owned, a->out, n);
        strcpy(a->class_dir_owned + n, "_class_images");
        a->prior.class_dir = a->class_dir_owned;
    }
    if (!a->prior_on) a->prior.class_dir = NULL;
    if (a->kind == M_DB) {
        if (!a->steps_set) c->steps = 800;
        if (!a->lr_set) c->lr = 5e-6f;
        if (!a->min_images_set) c->min_images = 1;
        a->db_o.train_text_encoder = a->train_te;
        a->db_o.prior = a->prior;
    } else {
        if (!a->steps_set) c->steps = 250;
        if (!a->lr_set) c->lr = 1e-5f;
        a->cd_o.concept[0].init_word = a->init_word;
        a->cd_o.prior = a->prior;
    }
    return 1;
}

/* OUT ends in ".safetensors" */
static bool out_is_safetensors(const char *out) {
    size_t n = strlen(out), e = strlen(".safetensors");
    return n >= e && !strcmp(out + n - e, ".safetensors");
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

static lk_status on_step(void *ud, const lk_train_stats *st) {
    train_args *a = ud;
    lk_cli_progress_train(&a->prog, st->step, st->steps, a->step0, a->t_start, st->loss, st->lr,
                          st->grad_norm, NULL, 0.0f);
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

/* ---- the commands ---- */

/* `likeness train custom-merge --model BASE A B --out M` (argv[0] is "custom-merge"). */
static int cli_custom_merge(int argc, char **argv) {
    const char *in[2] = {NULL, NULL}, *out = NULL, *model = NULL, *tokdir = NULL;
    int n_in = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            train_usage(stdout);
            return 0;
        }
        if (!strcmp(o, "--out") || !strcmp(o, "--model") || !strcmp(o, "--tokenizer")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "likeness train: %s needs a value\n", o);
                return EXIT_USAGE;
            }
            const char *v = argv[++i];
            if (o[2] == 'o') out = v;
            else if (o[2] == 'm') model = v;
            else tokdir = v;
        } else if (o[0] == '-' && o[1]) {
            fprintf(stderr, "likeness train: custom-merge: unknown option '%s' (usage: likeness "
                    "train custom-merge --model BASE A.safetensors B.safetensors --out M.safetensors)\n", o);
            return EXIT_USAGE;
        } else if (n_in < 2) in[n_in++] = o;
        else {
            fprintf(stderr, "likeness train: custom-merge takes two files, got a third '%s'\n", o);
            return EXIT_USAGE;
        }
    }
    if (n_in != 2 || !out || !model) {
        fprintf(stderr, "likeness train: usage: likeness train custom-merge --model BASE "
                "A.safetensors B.safetensors --out M.safetensors\n");
        return EXIT_USAGE;
    }
    if (!parent_exists("--out", out)) return EXIT_RUNTIME;
    if (lk_custom_diffusion_merge(model, tokdir, in[0], in[1], out) != LK_OK) {
        fprintf(stderr, "likeness train: custom-merge: %s\n", lk_last_error());
        return EXIT_RUNTIME;
    }
    printf("%s\n", out);
    return 0;
}

static lk_status new_method(train_args *a, lk_train_method **m) {
    switch (a->kind) {
    case M_TI: return lk_ti_method_new(m, &a->ti_o);
    case M_LORA: return lk_lora_method_new(m, &a->lora_o);
    case M_DB: return lk_dreambooth_method_new(m, &a->db_o);
    case M_CD: return lk_custom_diffusion_method_new(m, &a->cd_o);
    }
    return lk_fail(LK_ERR_INVALID, "unknown method");
}

static const char *method_title(train_kind k) {
    return k == M_TI ? "textual inversion" : k == M_LORA ? "lora" : k == M_DB ? "dreambooth"
                                                                           : "custom diffusion";
}

/* Contract: `likeness train METHOD ARGS` (argv[0] is "train"); returns the process exit code:
 * 0 done, 1 a runtime failure (one line on stderr), 2 a usage error, 130 Ctrl-C (checkpoint
 * written). */
int lk_cli_train(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "custom-merge") || !strcmp(argv[1], "merge-custom")))
        return cli_custom_merge(argc - 1, argv + 1);
    train_args a;
    memset(&a, 0, sizeof a);
    lk_train_config_default(&a.cfg);
    lk_ti_options_default(&a.ti_o);
    lk_lora_options_default(&a.lora_o);
    lk_dreambooth_opts_default(&a.db_o);
    lk_cd_opts_default(&a.cd_o);
    lk_prior_opts_default(&a.prior);
    a.cfg.checkpoint_every = 500;
    a.val_steps = 25;
    a.val_cfg = 7.5f;
    a.val_seeds[0] = 1, a.val_seeds[1] = 2, a.val_seeds[2] = 3, a.val_seeds[3] = 4;
    a.n_val_seeds = 4;
    int pr = parse_args(argc, argv, &a);
    if (pr <= 0) {
        if (pr < 0) train_usage(stdout);
        free_args(&a);
        return pr < 0 ? 0 : EXIT_USAGE;
    }
    if (a.kind == M_DB) { /* a folder: "out/" -> "out" (checkpoint and class images beside it) */
        size_t n = strlen(a.out);
        while (n > 1 && a.out[n - 1] == '/') n--;
        a.out_owned = strndup(a.out, n);
        a.out = a.out_owned;
    }
    if (!a.out) fprintf(stderr, "likeness train: out of memory\n");
    if (!a.out || !apply_method_defaults(&a)) {
        free_args(&a);
        return EXIT_RUNTIME;
    }
    if (a.threads > 0) lk_set_num_threads(a.threads);
    if (!a.cfg.checkpoint) {
        a.ckpt_owned = sibling(a.out, ".checkpoint.safetensors");
        if (!a.ckpt_owned) {
            fprintf(stderr, "likeness train: out of memory\n");
            free_args(&a);
            return EXIT_RUNTIME;
        }
        a.cfg.checkpoint = a.ckpt_owned;
    }
    if (!parent_exists("--out", a.out) || !parent_exists("--checkpoint", a.cfg.checkpoint) ||
        (a.cfg.log && !parent_exists("--log", a.cfg.log))) {
        free_args(&a);
        return EXIT_RUNTIME;
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
    lk_status s = new_method(&a, &m);
    lk_trainer *tr = NULL;
    const double t0 = lk_cli_now();
    if (s == LK_OK) {
        if (a.prior.class_dir && (a.kind == M_DB || a.kind == M_CD))
            lk_cli_progress_note(&a.prog, "load", "loading %s, class images in %s (%d, made by the "
                                 "model when missing) and encoding the images in %s ...",
                                 a.cfg.model, a.prior.class_dir, a.prior.num_class_images, a.cfg.images);
        else
            lk_cli_progress_note(&a.prog, "load", "loading %s and encoding the images in %s ...",
                                 a.cfg.model, a.cfg.images);
        s = lk_trainer_new(&tr, &a.cfg, m);
    }
    if (s == LK_OK && a.kind == M_DB && out_is_safetensors(a.out) &&
        lk_trainer_model(tr)->arch != LK_SD_ARCH_SD1) {
        /* refused before training rather than at the save */
        s = lk_fail(LK_ERR_UNSUPPORTED, "dreambooth --out %s: single-file checkpoints are written "
                    "for SD-1.x models only (this base is %s); give a folder name for the diffusers "
                    "layout", a.out, lk_sd_arch_name(lk_trainer_model(tr)->arch));
    }
    if (s == LK_OK) {
        a.step0 = lk_trainer_step_count(tr);
        lk_cli_progress_note(&a.prog, "start", "%s: %d images, %lld parameters train, %lld steps "
                             "(batch %d x %d accumulated), lr %g%s", method_title(a.kind),
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
        free_args(&a);
        return EXIT_INTERRUPTED;
    }
    if (s == LK_OK) s = lk_trainer_save(tr, a.out);
    if (s == LK_OK) {
        char *dp = a.kind == M_TI || a.kind == M_LORA ? lk_train_diffusers_path(a.out) : NULL;
        lk_cli_progress_note(&a.prog, "done", "wrote %s%s%s (%lld steps, %.1f s)", a.out,
                             dp ? " and " : "", dp ? dp : "", (long long)lk_trainer_step_count(tr),
                             lk_cli_now() - t0);
        free(dp);
    }
    lk_trainer_free(tr);
    free_args(&a);
    if (s != LK_OK) {
        fprintf(stderr, "likeness train: %s\n", lk_last_error());
        return EXIT_RUNTIME;
    }
    return 0;
}
