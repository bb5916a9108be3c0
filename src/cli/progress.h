/* progress.h: progress of long CLI runs: a redrawn bar with step rate and ETA when stderr is a
 * terminal, one JSON object per line (machine-readable, no escape codes) otherwise; and Ctrl-C
 * turned into a cancel flag so a run stops cleanly between steps. */
#ifndef LK_CLI_PROGRESS_H
#define LK_CLI_PROGRESS_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "likeness/core.h"

typedef struct lk_cli_progress {
    FILE *f;          /* stderr normally */
    bool tty;         /* bar (true) or JSON lines (false) */
    bool silent;      /* LK_PROGRESS=none: nothing at all */
    bool bar_open;    /* a bar line is drawn and needs a newline before other text */
    int image;        /* 1-based index of the image being made */
    int n_images;
    uint64_t seed;
    double t_start;   /* when the run started (monotonic seconds) */
    double t_image;   /* when the current image's sampling started */
    int last_total;   /* model steps of the current image's run (from the last step) */
    double t_work;    /* when lk_cli_progress_work last wrote */
} lk_cli_progress;

/* Set up for n_images images on f. Mode: f is a terminal -> bar, else JSON lines; the
 * environment variable LK_PROGRESS=json|bar|none overrides ("none": silent). Cannot fail. */
void lk_cli_progress_init(lk_cli_progress *p, FILE *f, int n_images);
/* An image (1-based index) with this seed starts sampling now. */
void lk_cli_progress_image(lk_cli_progress *p, int index, uint64_t seed);
/* An lk_progress_fn (ud = the lk_cli_progress): draws the bar / writes a "step" line. Never fails. */
lk_status lk_cli_progress_step(void *ud, int done, int total, float timestep);
/* A note: on a terminal the human text; otherwise {"event": event, "message": text}. The bar,
 * if drawn, is finished first. printf-style. */
void lk_cli_progress_note(lk_cli_progress *p, const char *event, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Finish a drawn bar line (newline). */
void lk_cli_progress_end_line(lk_cli_progress *p);

/* A training step: bar "████░░ step/steps loss L lr R [metric M] [elapsed, s/it, ETA]" on a
 * terminal, else one JSON line {"event":"step",...}. step0: the step the run (re)started at,
 * t_start its start time (lk_cli_now), for the rate and ETA; metric_name NULL: none. */
void lk_cli_progress_train(lk_cli_progress *p, int64_t step, int64_t steps, int64_t step0,
                           double t_start, float loss, float lr, float grad_norm,
                           const char *metric_name, float metric);

/* Progress of a whole long run in work units (done of total, e.g. EmojiBench's), since
 * lk_cli_progress_init: "label ████░░ 42% [elapsed, ETA]" on a terminal (redrawn at most 5
 * times a second), else {"event":"progress",...} at most every 10 s and at the end. */
void lk_cli_progress_work(lk_cli_progress *p, const char *label, double done, double total);

/* Monotonic seconds. */
double lk_cli_now(void);

/* Set by the SIGINT handler; give its address to the sampler as the cancel flag. */
extern volatile sig_atomic_t lk_cli_interrupted;
/* Install the handler: the first Ctrl-C sets lk_cli_interrupted (the run stops after the current
 * step and writes nothing half-done); the handler then resets itself so a second Ctrl-C kills
 * the process at once. */
void lk_cli_sigint_install(void);
/* Restore the default SIGINT action. */
void lk_cli_sigint_restore(void);

#endif
