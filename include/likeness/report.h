/* likeness/report.h: the self-contained HTML page of a personalization run: training images,
 * candidates ranked by an evaluator's score, the settings and an inline-SVG loss curve. */
#ifndef LIKENESS_REPORT_H
#define LIKENESS_REPORT_H

#include <stdint.h>

#include "likeness/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_REPORT_MAX_IMAGE_BYTES (8u << 20) /* larger image files are refused */
#define LK_REPORT_MAX_PLOT_POINTS 2000       /* longer loss series are binned (see below) */

/* An image file to show: PNG (JPEG and WebP are accepted too, recognised by their signature).
 * caption may be NULL (no caption). */
typedef struct lk_report_image {
    const char *path;
    const char *caption;
} lk_report_image;

/* One generated candidate. path: an image file as for lk_report_image; prompt may be NULL. */
typedef struct lk_report_candidate {
    const char *path;   /* PNG */
    const char *prompt;
    uint64_t seed;
    float score;        /* the ranking score (e.g. subject fidelity), shown with 3 decimals;
                           NAN ranks last and shows as "n/a" */
    float prompt_score; /* e.g. prompt fidelity, 3 decimals; NAN = not shown */
} lk_report_candidate;

/* A row of the settings table. NULL key or value shows as empty. */
typedef struct lk_report_kv {
    const char *key, *value;
} lk_report_kv;

/* Everything the page shows. All of it is borrowed: only read during lk_report_write_html.
 * Text fields may be NULL; an array may be NULL only when its count is 0; counts must be >= 0. */
typedef struct lk_report {
    const char *title;                             /* <title> and <h1>; NULL: "likeness report" */
    const char *summary;                           /* a paragraph of plain text, may be NULL */
    const lk_report_kv *info; int n_info;          /* settings table (method, steps, time, ...) */
    const lk_report_image *inputs; int n_inputs;   /* the training images */
    const lk_report_candidate *cands; int n_cands; /* any order: shown ranked by score, best
                                                      first (ties keep input order) */
    const float *loss; int n_loss;                 /* training loss per step (may be 0) */
    const char *score_label, *prompt_score_label;  /* column names; NULL: "score", "prompt score" */
} lk_report;

/* Write the page to path atomically: it is built in memory, written to a temporary file next to
 * path (path.tmp.<pid>.<n>), flushed and renamed over path, so path is either untouched (on any
 * failure; the temporary file is removed) or the complete new page.
 * The page: UTF-8, no external resources and no JavaScript. Images are embedded as base64 data
 * URIs read from their files (a missing or unreadable file -> LK_ERR_IO naming it; a file over
 * LK_REPORT_MAX_IMAGE_BYTES -> LK_ERR_UNSUPPORTED; not PNG/JPEG/WebP -> LK_ERR_FORMAT), drawn
 * 128 px wide with `image-rendering: pixelated`. All text is HTML-escaped (invalid UTF-8 and
 * control characters become U+FFFD). Candidates carry their rank (#1 = highest score; the top
 * one is marked "best"), score, prompt score unless NAN, seed and prompt. The loss plot is an
 * inline SVG: the raw loss as a light line with point markers (one <polyline> vertex per step;
 * above LK_REPORT_MAX_PLOT_POINTS steps, per bin its min and max), its exponential moving
 * average (ema = 0.9 ema + 0.1 loss, started at the first value) as a solid line, axes with
 * min/max ticks of step (1..n_loss) and of loss, and "step" / "loss" labels; non-finite losses
 * are skipped. n_loss 0 (or no finite value): the plot section says "no loss recorded".
 * Errors: r or path NULL, a negative count, a NULL array with a positive count or a NULL image
 * path -> LK_ERR_INVALID; out of memory -> LK_ERR_NOMEM; create/write/rename -> LK_ERR_IO. */
lk_status lk_report_write_html(const lk_report *r, const char *path);

#ifdef __cplusplus
}
#endif
#endif
