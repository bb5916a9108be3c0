/* harness.h: the tiny test framework every test uses. A failed check is counted and printed;
 * lk_t_done() returns non-zero if any check failed, so a test cannot silently pass. */
#ifndef LK_TEST_HARNESS_H
#define LK_TEST_HARNESS_H

#include <stdio.h>
#include "likeness.h"

extern int lk_t_checks, lk_t_failures;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        lk_t_checks++;                                                              \
        if (!(cond)) {                                                              \
            lk_t_failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
        }                                                                           \
    } while (0)
#define CHECK_OK(expr)                                                              \
    do {                                                                            \
        lk_t_checks++;                                                              \
        lk_status s_ = (expr);                                                      \
        if (s_ != LK_OK) {                                                          \
            lk_t_failures++;                                                        \
            fprintf(stderr, "FAIL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr, \
                    lk_status_str(s_), lk_last_error());                            \
        }                                                                           \
    } while (0)
/* Fatal: stop the test (counts as failure) */
#define REQUIRE(cond)                                                               \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "FATAL %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond,    \
                    lk_last_error());                                               \
            lk_t_failures++;                                                        \
            return lk_t_done();                                                     \
        }                                                                           \
    } while (0)

/* Open $LK_REF_DIR/<name>.safetensors (made by tests/ref/<name>.py). NULL + message if absent. */
lk_safetensors *lk_t_ref(const char *name);
/* Open a file in $LK_GOLDEN_DIR (../shared/golden). NULL + message if absent. */
lk_safetensors *lk_t_golden(const char *file);
const char *lk_t_golden_dir(void);
/* f32 copy (malloc'd, caller frees) of a tensor of st; NULL + counted failure if missing.
 * *numel (optional) receives the element count; shape (optional, LK_MAX_DIMS) and ndim too. */
float *lk_t_load(const lk_safetensors *st, const char *name, int64_t *numel);
/* Load into a ctx tensor (f32) / a persistent parameter with the file's shape. */
lk_tensor *lk_t_tensor(lk_ctx *ctx, const lk_safetensors *st, const char *name);
lk_tensor *lk_t_param(const lk_safetensors *st, const char *name);

/* Compare got against want: passes if every |got-want| <= atol + rtol*|want|. Prints
 * "ok|FAIL what: max_abs=.. max_rel=.. (n=..)" and counts a check. Returns 1 on pass. */
int lk_t_close(const char *what, const float *got, const float *want, size_t n, float atol,
               float rtol);

/* Finite-difference gradient check of an op built by fn from leaf inputs (parameters made
 * with lk_param_new, f32, requires_grad set on those to check). Uses a fixed random upstream
 * gradient R: analytic d<out,R>/d(input) from lk_backward_from vs central differences with
 * step eps at n_probe random elements of every input that requires grad. Passes if
 * |num - ana| <= tol * max(1, |num|, |ana|). Counts one check per input. */
typedef lk_tensor *(*lk_t_fn)(lk_ctx *ctx, lk_tensor **in, int n, void *ud);
int lk_t_gradcheck(const char *what, lk_t_fn fn, void *ud, lk_tensor **in, int n, int n_probe,
                   float eps, float tol);

/* Fill with uniform values in [lo, hi) from a simple deterministic generator. */
void lk_t_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed);
/* Write a synthetic RGB PNG of w x h: a coloured disk (the "subject", placed and tinted by seed)
 * on a gradient background, for training tests. Counts a failed check if writing fails. */
void lk_t_write_subject_png(const char *path, int w, int h, int seed);
/* The whole file at path, malloc'd (caller frees) with a NUL after its last byte; *len
 * (optional) receives its size in bytes. NULL if it cannot be opened or read; counts no check. */
char *lk_t_read_file(const char *path, size_t *len);
/* Number of entries of the folder dir besides "." and ".."; -1 if it cannot be opened. */
int lk_t_count_entries(const char *dir);
/* Remove the folder dir and everything below it (the test's mkdtemp root), or, when $LK_KEEP_TMP
 * is set, keep it and print its path. Counts a check, failed if the removal fails. */
void lk_t_remove_tmp(const char *dir);
/* Print "---- what (N s so far, last phase M s)" (seconds since the test started and since the
 * previous call) and flush stdout: the timing of a long test's phases. */
void lk_t_phase(const char *what);
/* Print summary; return process exit code (0 only if no check failed and at least one ran). */
int lk_t_done(void);
/* Wall-clock seconds (monotonic). */
double lk_t_now(void);

#endif
