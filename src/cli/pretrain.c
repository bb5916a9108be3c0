/* pretrain.c: `likeness pretrain STAGE ...`: training likeness's own emoji model from scratch
 * (tokenizer, text, vae, unet) and assembling the diffusers folder (assemble); resumable runs
 * with a progress bar and Ctrl-C. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/defaults.h"
#include "cli/progress.h"
#include "likeness.h"
#include "likeness/pretrain.h"

int lk_cli_pretrain(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: likeness pretrain tokenizer [--data DIR] --out DIR [--vocab-size N]\n"
            "       likeness pretrain text|vae|unet [--data DIR] --run DIR [options]\n"
            "       likeness pretrain assemble --tokenizer DIR --text DIR --vae DIR --unet DIR --out DIR\n"
            "       likeness pretrain assemble --evaluator --text EVAL_RUN/export --out DIR\n"
            "Trains likeness's own emoji model on the EmojiBench data set (built by\n"
            "scripts/emoji_dataset/build.sh; --data defaults to $LK_DATA or ~/.cache/likeness/emoji).\n"
            "  text        CLIP-style text + image model (contrastive); the generator's text encoder\n"
            "              (--evaluator: all concepts and styles, the EmojiBench evaluator)\n"
            "  vae         AutoencoderKL, 64x64 -> 4x16x16 latents\n"
            "  unet        the denoiser (needs --tokenizer, --text RUN/export, --vae RUN/export)\n"
            "options: --steps N --batch N --lr F --warmup N --seed N --checkpoint-every N\n"
            "         --ema-decay F --resume --threads N --crop N (vae) --cfg-dropout F (unet)\n"
            "         --init DIR (start from a model folder's weights, e.g. models/emoji)\n"
            "A run keeps RUN/checkpoint.safetensors and RUN/log.jsonl and exports its model to\n"
            "RUN/export/ at every checkpoint; Ctrl-C saves a checkpoint and stops; --resume goes on.\n");
}

typedef struct pt_cli {
    lk_cli_progress prog;
    double t_start;
    int64_t step0;
    bool started;
    const char *metric;
} pt_cli;

static lk_status on_step(void *ud, const lk_pretrain_stats *st) {
    pt_cli *a = ud;
    if (!a->started) { /* the first step after (re)starting */
        a->started = true;
        a->step0 = st->step - 1;
        a->t_start = lk_cli_now() - st->seconds;
    }
    lk_cli_progress_train(&a->prog, st->step, st->steps, a->step0, a->t_start, st->loss, st->lr,
                          st->grad_norm, a->metric, st->metric);
    return LK_OK;
}

static int need(int i, int argc, char **argv) {
    if (i + 1 >= argc) {
        fprintf(stderr, "likeness pretrain: %s needs a value\n", argv[i]);
        return 0;
    }
    return 1;
}

static bool parse_i64(const char *s, int64_t lo, int64_t *out) {
    char *e;
    long long v = strtoll(s, &e, 10);
    if (!*s || *e || v < lo) return false;
    *out = v;
    return true;
}

static bool parse_f(const char *s, float *out) {
    char *e;
    float v = strtof(s, &e);
    if (!*s || *e || !(v >= 0.0f)) return false;
    *out = v;
    return true;
}


int lk_cli_pretrain(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *stage = argv[1];
    const char *data = NULL, *run = NULL, *out = NULL, *tok = NULL, *text = NULL, *vae = NULL,
               *unet = NULL;
    int64_t vocab = 4096, threads = 0;
    lk_pretrain_config c;
    if (!strcmp(stage, "text")) c = lk_pretrain_defaults(LK_PRETRAIN_TEXT);
    else if (!strcmp(stage, "vae")) c = lk_pretrain_defaults(LK_PRETRAIN_VAE);
    else if (!strcmp(stage, "unet")) c = lk_pretrain_defaults(LK_PRETRAIN_UNET);
    else if (!strcmp(stage, "tokenizer") || !strcmp(stage, "assemble")) c = lk_pretrain_defaults(LK_PRETRAIN_TEXT);
    else {
        fprintf(stderr, "likeness pretrain: unknown stage '%s' (tokenizer, text, vae, unet, "
                "assemble)\n", stage);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        int64_t v;
        float f;
        bool ok = true;
        if (!strcmp(o, "--resume")) c.resume = true;
        else if (!strcmp(o, "--evaluator")) c.evaluator = true;
        else if (!need(i, argc, argv)) return 2;
        else if (!strcmp(o, "--data")) data = argv[++i];
        else if (!strcmp(o, "--run")) run = argv[++i];
        else if (!strcmp(o, "--out")) out = argv[++i];
        else if (!strcmp(o, "--tokenizer")) tok = argv[++i];
        else if (!strcmp(o, "--text")) text = argv[++i];
        else if (!strcmp(o, "--vae")) vae = argv[++i];
        else if (!strcmp(o, "--unet")) unet = argv[++i];
        else if (!strcmp(o, "--init")) c.init_dir = argv[++i];
        else if (!strcmp(o, "--vocab-size")) ok = parse_i64(argv[++i], 514, &vocab);
        else if (!strcmp(o, "--threads")) ok = parse_i64(argv[++i], 1, &threads);
        else if (!strcmp(o, "--steps")) ok = parse_i64(argv[++i], 1, &c.steps);
        else if (!strcmp(o, "--batch")) ok = parse_i64(argv[++i], 1, &v) && v < 65536 && (c.batch = (int)v, true);
        else if (!strcmp(o, "--warmup")) ok = parse_i64(argv[++i], 0, &c.warmup);
        else if (!strcmp(o, "--seed")) ok = parse_i64(argv[++i], 0, &v) && (c.seed = (uint64_t)v, true);
        else if (!strcmp(o, "--checkpoint-every")) ok = parse_i64(argv[++i], 1, &c.checkpoint_every);
        else if (!strcmp(o, "--crop")) ok = parse_i64(argv[++i], 1, &v) && v <= 64 && (c.vae_crop = (int)v, true);
        else if (!strcmp(o, "--lr")) ok = parse_f(argv[++i], &c.lr) && c.lr > 0.0f;
        else if (!strcmp(o, "--ema-decay")) ok = parse_f(argv[++i], &c.ema_decay) && c.ema_decay < 1.0f;
        else if (!strcmp(o, "--cfg-dropout")) ok = parse_f(argv[++i], &f) && f <= 1.0f && (c.cfg_dropout = f, true);
        else {
            fprintf(stderr, "likeness pretrain: unknown option '%s' (see --help)\n", o);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "likeness pretrain: bad value '%s' for %s\n", argv[i], o);
            return 2;
        }
    }
    if (threads > 0) lk_set_num_threads((int)threads);
    if (!data) data = lk_cli_default_data();
    lk_status s;
    if (!strcmp(stage, "tokenizer")) {
        if (!out) {
            fprintf(stderr, "likeness pretrain tokenizer: --out DIR is required\n");
            return 2;
        }
        s = lk_pretrain_tokenizer(data, out, (int)vocab);
        if (s == LK_OK) printf("wrote %s/vocab.json and %s/merges.txt\n", out, out);
    } else if (!strcmp(stage, "assemble")) {
        if (c.evaluator && text && out && !tok && !vae && !unet) {
            s = lk_pretrain_assemble_evaluator(text, out);
        } else if (!tok || !text || !vae || !unet || !out) {
            fprintf(stderr, "likeness pretrain assemble: --tokenizer, --text, --vae, --unet and "
                    "--out are required (or --evaluator --text RUN/export --out DIR)\n");
            return 2;
        } else s = lk_pretrain_assemble(tok, text, vae, unet, out);
        if (s == LK_OK) printf("wrote %s\n", out);
    } else {
        if (!run) {
            fprintf(stderr, "likeness pretrain %s: --run DIR is required\n", stage);
            return 2;
        }
        pt_cli a;
        memset(&a, 0, sizeof a);
        lk_cli_progress_init(&a.prog, stderr, 1);
        a.metric = c.stage == LK_PRETRAIN_TEXT ? "acc" : c.stage == LK_PRETRAIN_VAE ? "l1_255" : "mse";
        c.data_dir = data;
        c.run_dir = run;
        c.tokenizer_dir = tok;
        c.text_dir = text;
        c.vae_dir = vae;
        c.progress = on_step;
        c.progress_ud = &a;
        c.cancel = &lk_cli_interrupted;
        lk_cli_sigint_install();
        lk_cli_progress_note(&a.prog, "start", "pretrain %s: data %s, run %s, %lld steps, batch %d%s",
                             stage, data, run, (long long)c.steps, c.batch,
                             c.resume ? " (resuming)" : "");
        s = lk_pretrain_run(&c);
        lk_cli_sigint_restore();
        lk_cli_progress_end_line(&a.prog);
        if (s == LK_OK)
            lk_cli_progress_note(&a.prog, "done", "pretrain %s: done; model in %s/export", stage, run);
    }
    if (s != LK_OK) {
        fprintf(stderr, "likeness pretrain %s: %s\n", stage, lk_last_error());
        return s == LK_ERR_INTERRUPTED ? 130 : 1;
    }
    return 0;
}
