/* main.c: the `likeness` command. Subcommands arrive with their issues (generate, train, ...);
 * this file only dispatches and turns a status into an exit code and a one-line message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness.h"

int lk_cli_info(int argc, char **argv);
int lk_cli_generate(int argc, char **argv);
int lk_cli_train(int argc, char **argv);
int lk_cli_pretrain(int argc, char **argv);
int lk_cli_bench(int argc, char **argv);
int lk_cli_demo(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: likeness <command> [options]\n"
            "\n"
            "commands:\n"
            "  generate ...   text-to-image / img2img (likeness generate --help)\n"
            "  train METHOD   personalize a model from images: ti (Textual Inversion), lora,\n"
            "                 dreambooth, custom (Custom Diffusion); custom-merge (likeness train --help)\n"
            "  pretrain STAGE train likeness's own emoji model: tokenizer, text, vae, unet, assemble\n"
            "  bench emoji    EmojiBench: personalization methods scored against ground truth\n"
            "  demo           the whole loop on the bundled emoji model: personalize, draw, rank, HTML\n"
            "  info MODEL     architecture, parameters, memory, scheduler and hash of a checkpoint\n"
            "  version        print the version and the build's threading\n"
            "  help           this text\n"
            "\n"
            "The engine benchmark is a separate program: bench/lk_bench_ops (see README).\n");
}

int main(int argc, char **argv) {
    lk_reexec_with_tuned_env(argc, argv, "auto");
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        const char *wp = getenv("OMP_WAIT_POLICY");
        printf("likeness %s (%d threads, OMP_WAIT_POLICY %s)\n", lk_version(), lk_get_num_threads(),
               wp ? wp : "unset");
        return 0;
    }
    if (!strcmp(cmd, "info")) return lk_cli_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "generate")) return lk_cli_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "train")) return lk_cli_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "pretrain")) return lk_cli_pretrain(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return lk_cli_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "demo")) return lk_cli_demo(argc - 1, argv + 1);
    fprintf(stderr, "likeness: unknown command '%s' (try 'likeness help')\n", cmd);
    return 2;
}
