/* likeness/emojibench.h: EmojiBench, a personalization benchmark with ground truth built on the
 * emoji data set (emoji_set.h), scored by the evaluator (evaluator.h).
 *
 * Subject task: each held-out concept (never seen by the generator) is learned from its real
 * images in two of the generator's styles, captioned "<token> emoji, STYLE style"; the method
 * then draws "<token> emoji, TARGET style" in the third style (the target rotates with the
 * concept's index), several seeds, and each image is scored against the concept's real image
 * in the target style, which the method never saw.
 * Style task: a style token is learned from 5 OpenMoji images of fixed training concepts
 * ("NAME emoji, <token> style"), then 20 other training concepts are drawn in it and scored
 * against their real OpenMoji images.
 * Scores of an image: subject fidelity = evaluator image-image cosine to the real reference;
 * prompt fidelity = image-text cosine to "NAME emoji, STYLE style" (the token replaced by the
 * concept's name, as DreamBench replaces it by the class noun); concept top-1 / top-5 =
 * whether the concept's "NAME emoji" ranks first / in the first five among all concepts' names.
 * Rows: real (the concept's real images by the other artists, i.e. the images the method is
 * given, scored the same way: DreamBench's "real images" row), baseline (the unpersonalized
 * model prompted with the concept's name), Textual Inversion, DreamBooth, LoRA, Custom
 * Diffusion; plus training seconds and output file size.
 * Text-to-image check: the plain model on training concepts ("NAME emoji, STYLE style") vs the
 * real images of the same concepts and styles, concept top-1 / top-5. */
#ifndef LIKENESS_EMOJIBENCH_H
#define LIKENESS_EMOJIBENCH_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "likeness/core.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    LK_EB_REAL = 0,
    LK_EB_BASELINE = 1,
    LK_EB_TI = 2,
    LK_EB_DREAMBOOTH = 3,
    LK_EB_LORA = 4,
    LK_EB_CUSTOM = 5,
    LK_EB_ROWS = 6,
};

/* Row names: "real", "baseline", "textual_inversion", "dreambooth", "lora", "custom_diffusion". */
const char *lk_emojibench_row_name(int row);

/* a training update's cost in sampling steps of one image (64x64, batch <= 4, 2 cores: about
 * 0.04-0.07 s against 0.016 s) */
#define LK_EMOJIBENCH_TRAIN_UNITS 3

typedef struct lk_emojibench_config {
    const char *model_dir;     /* the generator (a diffusers folder) */
    const char *evaluator_dir; /* the evaluator (lk_evaluator_load) */
    const char *data_dir;      /* the EmojiBench data set */
    const char *work_dir;      /* scratch: training images and method outputs (created) */
    unsigned rows;             /* bit per LK_EB_* row to run (real and baseline are cheap) */
    int n_concepts;            /* subject task: the first n held-out concepts (0: all) */
    int n_style_concepts;      /* style task: concepts drawn (default 20; 0: skip the task) */
    int n_t2i_concepts;        /* text-to-image check: training concepts (0: skip) */
    int seeds;                 /* images per prompt (default 3) */
    int sample_steps;          /* DPM-Solver++ 2M steps (default 20) */
    float guidance;            /* classifier-free guidance scale (default 5) */
    int steps[LK_EB_ROWS];     /* training updates per method (defaults: TI 400, DreamBooth 200,
                                * LoRA 300, Custom Diffusion 250) */
    float lr[LK_EB_ROWS];      /* learning rates (defaults: TI 5e-3, DreamBooth 5e-5, LoRA 1e-3,
                                * Custom Diffusion 2e-5 for K/V) */
    float cd_token_lr;         /* Custom Diffusion's token rows (default 5e-3, TI's rate) */
    uint64_t seed;
    const volatile sig_atomic_t *cancel;
    /* a line of progress text ("subject 3/30 fox: lora 12.3 s"); may be NULL */
    void (*log)(void *ud, const char *line);
    /* the whole run's progress, done of total work units (planned when the run starts): one unit
     * is one sampling step of one image, one training update counts LK_EMOJIBENCH_TRAIN_UNITS
     * (its cost relative to a sampling step at 64x64, measured). Called after every image and
     * every training update; may be NULL. */
    void (*progress)(void *ud, double done, double total);
    void *log_ud; /* given to log and progress */
} lk_emojibench_config;

void lk_emojibench_defaults(lk_emojibench_config *c);

typedef struct lk_emojibench_row {
    int n;                  /* images scored */
    double subject, prompt; /* mean cosines */
    double top1, top5;      /* fractions */
    double train_s;         /* mean training seconds per concept (0: none) */
    double file_bytes;      /* mean output size (0: none) */
} lk_emojibench_row;

typedef struct lk_emojibench_result {
    lk_emojibench_row subject[LK_EB_ROWS], style[LK_EB_ROWS];
    int n_subject_concepts, n_style_concepts;
    /* text-to-image check on training concepts */
    int t2i_n;
    double t2i_top1, t2i_top5, real_top1, real_top5;
    double seconds;
} lk_emojibench_result;

/* Run the benchmark. Fails on missing inputs (messages name them) or a method's failure. */
lk_status lk_emojibench_run(const lk_emojibench_config *c, lk_emojibench_result *r);

/* Write r (and the settings of c) as JSON to path, atomically. */
lk_status lk_emojibench_write_json(const lk_emojibench_config *c, const lk_emojibench_result *r,
                                   const char *path);
/* Print the table (Markdown) to f. */
void lk_emojibench_print(const lk_emojibench_config *c, const lk_emojibench_result *r, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
