/* bench.c: `likeness bench emoji`: EmojiBench (subject and style personalization with ground
 * truth, text-to-image check), printed as a table and written as JSON. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/defaults.h"
#include "cli/progress.h"
#include "likeness/emojibench.h"

int lk_cli_bench(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: likeness bench emoji [--model DIR] [--evaluator DIR] [--data DIR] [--work DIR]\n"
            "                            [--json FILE] [--concepts N] [--style-concepts N]\n"
            "                            [--t2i-concepts N] [--seeds N] [--steps N] [--cfg F]\n"
            "                            [--methods LIST] [--train-steps METHOD=N] [--lr METHOD=F]\n"
            "                            [--cd-token-lr F]\n"
            "Runs EmojiBench: each held-out concept is learned from 2 styles and drawn in the third,\n"
            "OpenMoji is learned from 5 images and 20 other concepts drawn in it; the evaluator scores\n"
            "subject fidelity, prompt fidelity and concept top-1/top-5. LIST: comma-separated of\n"
            "real, baseline, ti, dreambooth, lora, custom (default: all). Defaults: --model\n"
            "models/emoji, --evaluator models/emoji-evaluator, --data $LK_DATA or\n"
            "~/.cache/likeness/emoji, --work /tmp/likeness-emojibench, --json emojibench.json.\n");
}

static int row_of(const char *name) {
    static const char *const short_names[LK_EB_ROWS] = {"real", "baseline", "ti", "dreambooth",
                                                        "lora", "custom"};
    for (int i = 0; i < LK_EB_ROWS; i++)
        if (!strcmp(name, short_names[i]) || !strcmp(name, lk_emojibench_row_name(i))) return i;
    return -1;
}

static void on_log(void *ud, const char *line) {
    lk_cli_progress_note(ud, "bench", "%s", line);
}

static void on_progress(void *ud, double done, double total) {
    lk_cli_progress_work(ud, "EmojiBench", done, total);
}

int lk_cli_bench(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "emoji")) {
        if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
            usage(stdout);
            return 0;
        }
        usage(stderr);
        return 2;
    }
    lk_emojibench_config c;
    lk_emojibench_defaults(&c);
    const char *json = "emojibench.json";
    c.model_dir = lk_cli_default_model();
    c.evaluator_dir = lk_cli_default_evaluator();
    c.work_dir = "/tmp/likeness-emojibench";
    c.data_dir = lk_cli_default_data();
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "likeness bench: %s needs a value\n", o);
            return 2;
        }
        const char *v = argv[++i];
        char *e = NULL;
        bool ok = true;
        if (!strcmp(o, "--model")) c.model_dir = v;
        else if (!strcmp(o, "--evaluator")) c.evaluator_dir = v;
        else if (!strcmp(o, "--data")) c.data_dir = v;
        else if (!strcmp(o, "--work")) c.work_dir = v;
        else if (!strcmp(o, "--json")) json = v;
        else if (!strcmp(o, "--concepts")) c.n_concepts = (int)strtol(v, &e, 10), ok = !*e && c.n_concepts >= 0;
        else if (!strcmp(o, "--style-concepts")) c.n_style_concepts = (int)strtol(v, &e, 10), ok = !*e && c.n_style_concepts >= 0;
        else if (!strcmp(o, "--t2i-concepts")) c.n_t2i_concepts = (int)strtol(v, &e, 10), ok = !*e && c.n_t2i_concepts >= 0;
        else if (!strcmp(o, "--seeds")) c.seeds = (int)strtol(v, &e, 10), ok = !*e && c.seeds >= 1;
        else if (!strcmp(o, "--steps")) c.sample_steps = (int)strtol(v, &e, 10), ok = !*e && c.sample_steps >= 1;
        else if (!strcmp(o, "--cd-token-lr")) c.cd_token_lr = strtof(v, &e), ok = !*e && c.cd_token_lr > 0.0f;
        else if (!strcmp(o, "--cfg")) c.guidance = strtof(v, &e), ok = !*e && c.guidance >= 0.0f;
        else if (!strcmp(o, "--methods")) {
            c.rows = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *t = strtok(buf, ","); t && ok; t = strtok(NULL, ",")) {
                const int r = row_of(t);
                if (r < 0) ok = false;
                else c.rows |= 1u << r;
            }
        } else if (!strcmp(o, "--train-steps") || !strcmp(o, "--lr")) {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", v);
            char *eq = strchr(buf, '=');
            const int r = eq ? (*eq = 0, row_of(buf)) : -1;
            ok = r >= LK_EB_TI;
            if (ok && o[2] == 't') c.steps[r] = (int)strtol(eq + 1, &e, 10), ok = !*e && c.steps[r] >= 1;
            else if (ok) c.lr[r] = strtof(eq + 1, &e), ok = !*e && c.lr[r] > 0.0f;
        } else {
            fprintf(stderr, "likeness bench: unknown option '%s' (see --help)\n", o);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "likeness bench: bad value '%s' for %s\n", v, o);
            return 2;
        }
    }
    lk_cli_progress prog;
    lk_cli_progress_init(&prog, stderr, 1);
    c.log = on_log;
    c.progress = on_progress;
    c.log_ud = &prog;
    c.cancel = &lk_cli_interrupted;
    lk_cli_sigint_install();
    lk_emojibench_result r;
    lk_status s = lk_emojibench_run(&c, &r);
    lk_cli_sigint_restore();
    if (s == LK_OK) s = lk_emojibench_write_json(&c, &r, json);
    if (s != LK_OK) {
        fprintf(stderr, "likeness bench emoji: %s\n", lk_last_error());
        return s == LK_ERR_INTERRUPTED ? 130 : 1;
    }
    lk_emojibench_print(&c, &r, stdout);
    printf("wrote %s\n", json);
    return 0;
}
