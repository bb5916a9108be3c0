/* test_optim.c: AdamW, SGD, gradient clipping, learning-rate schedules and EMA against
 * torch.optim / diffusers (tests/ref/optim.py), exact save/restore of their state, errors. */
#include "harness.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NP 12
#define STEPS 5

/* Same list as PARAMS in tests/ref/optim.py; lo = hi = 0: every row trainable. */
static const struct {
    const char *name;
    int ndim;
    int64_t shape[4];
    int64_t lo, hi;
} PARAMS[NP] = {
    {"a", 1, {3}, 0, 0},
    {"b", 2, {7, 5}, 0, 0},
    {"c", 4, {2, 3, 3, 3}, 0, 0},
    {"d", 1, {37}, 0, 0},
    {"e", 2, {10, 6}, 7, 9},
    {"attn_q", 2, {320, 320}, 0, 0},
    {"conv_in", 4, {320, 4, 3, 3}, 0, 0},
    {"lora_down", 2, {4, 320}, 0, 0},
    {"lora_up", 2, {320, 4}, 0, 0},
    {"time_bias", 1, {1280}, 0, 0},
    {"one", 2, {1, 1}, 0, 0},
    {"tok", 2, {49409, 768}, 49408, 49409},
};

static lk_safetensors *REF;
static lk_tensor *P[NP];
static lk_paramset *PS;

/* Frozen rows hold a pattern that is cheap to re-check. */
static float frozen_value(int i, int64_t j) { return (float)((j * 7 + i) % 1000) * 1e-3f - 0.5f; }

static float *slice(int i) {
    return (float *)P[i]->data + (PARAMS[i].hi > 0 ? PARAMS[i].lo * PARAMS[i].shape[1] : 0);
}
static int64_t slice_n(int i) { return lk_grad_numel(P[i]); }

/* Copy ref tensor `name` (n floats) into dst; counts a failure when missing or mis-sized. */
static void load_into(float *dst, int64_t n, const char *fmt, int a, int b) {
    char name[128];
    snprintf(name, sizeof name, fmt, a, b);
    int64_t got = 0;
    float *x = lk_t_load(REF, name, &got);
    if (!x) return;
    CHECK(got == n);
    if (got == n) memcpy(dst, x, sizeof(float) * (size_t)n);
    free(x);
}

static int close_ref(const char *what, const float *got, int64_t n, const char *fmt, int a, int b,
                     float atol, float rtol) {
    char name[128], label[192];
    snprintf(name, sizeof name, fmt, a, b);
    snprintf(label, sizeof label, "%s %s", what, name);
    int64_t wn = 0;
    float *want = lk_t_load(REF, name, &wn);
    if (!want) return 0;
    CHECK(wn == n);
    int ok = lk_t_close(label, got, want, (size_t)(wn < n ? wn : n), atol, rtol);
    free(want);
    return ok;
}

/* Parameters back to their initial values; gradients zero. */
static void reset_params(void) {
    for (int i = 0; i < NP; i++) load_into(slice(i), slice_n(i), "init.%d", i, 0);
    lk_paramset_zero_grad(PS);
}

static void load_grads(int k) {
    for (int i = 0; i < NP; i++) load_into(P[i]->grad, slice_n(i), "grad.%d.%d", k, i);
}

/* Rows outside [lo, hi) of row-subset parameters must still hold the pattern. */
static void check_frozen(const char *what) {
    for (int i = 0; i < NP; i++) {
        if (PARAMS[i].hi == 0) continue;
        const float *x = (const float *)P[i]->data;
        int64_t cols = PARAMS[i].shape[1], bad = 0;
        int64_t n = PARAMS[i].shape[0] * cols;
        for (int64_t j = 0; j < n; j++) {
            int64_t r = j / cols;
            if ((r < PARAMS[i].lo || r >= PARAMS[i].hi) && x[j] != frozen_value(i, j)) bad++;
        }
        if (bad) fprintf(stderr, "%s: %s has %lld changed frozen elements\n", what,
                         PARAMS[i].name, (long long)bad);
        CHECK(bad == 0);
    }
}

static int make_params(void) {
    PS = lk_paramset_new();
    if (!PS) return 0;
    for (int i = 0; i < NP; i++) {
        P[i] = lk_param_new(LK_F32, PARAMS[i].ndim, PARAMS[i].shape, PARAMS[i].name);
        if (!P[i]) return 0;
        float *x = (float *)P[i]->data;
        for (int64_t j = 0; j < lk_numel(P[i]); j++) x[j] = frozen_value(i, j);
        if (PARAMS[i].hi > 0 && lk_set_trainable_rows(P[i], PARAMS[i].lo, PARAMS[i].hi) != LK_OK)
            return 0;
        if (lk_paramset_add(PS, P[i]) != LK_OK) return 0;
    }
    return lk_paramset_finalize(PS) == LK_OK;
}

static float hp(const char *name, int k) {
    int64_t n = 0;
    float *x = lk_t_load(REF, name, &n);
    float v = (x && k < n) ? x[k] : NAN;
    free(x);
    return v;
}

static lk_adamw_config adamw_cfg(void) {
    lk_adamw_config c = {hp("hp.adamw", 0), hp("hp.adamw", 1), hp("hp.adamw", 2),
                         hp("hp.adamw", 3), hp("hp.adamw", 4)};
    return c;
}

static lk_sgd_config sgd_cfg(int j) {
    char name[32];
    snprintf(name, sizeof name, "hp.sgd%d", j);
    lk_sgd_config c = {hp(name, 0), hp(name, 1), hp(name, 2), hp(name, 3), hp(name, 4) != 0.0f};
    return c;
}

/* ---- AdamW vs torch: every step's parameters (max abs error <= 1e-6 as asked; the update
 * rounds op by op like torch, so the error is normally 0), and the final m and v through a
 * saved state file. */
static void test_adamw(void) {
    reset_params();
    lk_adamw *o = lk_adamw_new(PS, adamw_cfg());
    CHECK(o != NULL);
    if (!o) return;
    for (int k = 0; k < STEPS; k++) {
        load_grads(k);
        CHECK_OK(lk_adamw_step(o, hp("hp.adamw_lrs", k)));
        for (int i = 0; i < NP; i++)
            close_ref("adamw", slice(i), slice_n(i), "adamw.p.%d.%d", k, i, 1e-6f, 0.0f);
    }
    CHECK(lk_adamw_step_count(o) == STEPS);
    check_frozen("adamw");
    lk_st_writer *w = lk_st_writer_new();
    CHECK_OK(lk_adamw_save(o, w, "opt."));
    CHECK_OK(lk_st_writer_save(w, "test_optim_adamw.safetensors"));
    lk_st_writer_free(w);
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, "test_optim_adamw.safetensors"));
    for (int i = 0; st && i < NP; i++) {
        char name[64];
        snprintf(name, sizeof name, "opt.m.%d", i);
        const lk_st_tensor *t = lk_safetensors_find(st, name);
        CHECK(t && lk_st_tensor_numel(t) == slice_n(i));
        float *buf = malloc(sizeof(float) * (size_t)slice_n(i));
        if (t && buf && lk_st_tensor_to_f32(t, buf, (size_t)slice_n(i)) == LK_OK)
            close_ref("adamw", buf, slice_n(i), "adamw.m.%d", i, 0, 1e-12f, 1e-6f);
        snprintf(name, sizeof name, "opt.v.%d", i);
        t = lk_safetensors_find(st, name);
        CHECK(t && lk_st_tensor_numel(t) == slice_n(i));
        if (t && buf && lk_st_tensor_to_f32(t, buf, (size_t)slice_n(i)) == LK_OK)
            close_ref("adamw", buf, slice_n(i), "adamw.v.%d", i, 0, 1e-15f, 1e-6f);
        free(buf);
    }
    /* a failed load names the problem and leaves the state alone */
    CHECK(lk_adamw_load(o, st, "nope.") == LK_ERR_FORMAT);
    CHECK(strstr(lk_last_error(), "nope.step") != NULL);
    CHECK(lk_adamw_step_count(o) == STEPS);
    lk_safetensors_close(st);
    remove("test_optim_adamw.safetensors");
    lk_adamw_free(o);
}

/* ---- the kernel alone (lr 0.25, wd 0.1: updates ~0.25, so 1e-6 is a few ulps), on a large
 * parameter (attn_q) and on a vector tail (d: 37 elements) ---- */
static void test_adamw_kernel(void) {
    const int which[2] = {5, 3};
    for (int w = 0; w < 2; w++) {
        int i = which[w];
        int64_t n = slice_n(i);
        float *p = calloc((size_t)n, sizeof *p), *g = calloc((size_t)n, sizeof *g);
        float *m = calloc((size_t)n, sizeof *m), *v = calloc((size_t)n, sizeof *v);
        if (!p || !g || !m || !v) {
            CHECK(!"out of memory");
        } else {
            load_into(p, n, "init.%d", i, 0);
            for (int k = 0; k < 2; k++) {
                load_into(g, n, "grad.%d.%d", k, i);
                lk_adamw_update(p, g, m, v, (size_t)n, hp("hp.kern", 0), hp("hp.kern", 1),
                                hp("hp.kern", 2), hp("hp.kern", 3), hp("hp.kern", 4), k + 1);
                close_ref("adamw kernel", p, n, "kern.p.%d.%d", k, i, 1e-6f, 0.0f);
            }
        }
        free(p);
        free(g);
        free(m);
        free(v);
    }
}

static void test_sgd(void) {
    for (int j = 0; j < 3; j++) {
        reset_params();
        lk_sgd_config c = sgd_cfg(j);
        lk_sgd *o = lk_sgd_new(PS, c);
        CHECK(o != NULL);
        if (!o) continue;
        for (int k = 0; k < STEPS; k++) {
            load_grads(k);
            CHECK_OK(lk_sgd_step(o, -1.0f));
        }
        char what[32], fmt[32];
        snprintf(what, sizeof what, "sgd%d", j);
        snprintf(fmt, sizeof fmt, "sgd%d.p.%%d", j);
        for (int i = 0; i < NP; i++) close_ref(what, slice(i), slice_n(i), fmt, i, 0, 1e-6f, 1e-6f);
        check_frozen(what);
        lk_sgd_free(o);
    }
}

static void test_clip(void) {
    for (int j = 0; j < 2; j++) {
        reset_params();
        load_grads(0);
        char name[32], fmt[32];
        snprintf(name, sizeof name, "clip%d.maxnorm", j);
        float norm = lk_clip_grad_norm(PS, hp(name, 0));
        snprintf(name, sizeof name, "clip%d.norm", j);
        /* torch sums per-tensor f32 norms; we accumulate in double: a few ulps apart */
        close_ref("clip norm", &norm, 1, "clip%d.norm", j, 0, 0.0f, 1e-5f);
        snprintf(fmt, sizeof fmt, "clip%d.g.%%d", j);
        for (int i = 0; i < NP; i++)
            close_ref("clip grad", P[i]->grad, slice_n(i), fmt, i, 0, 1e-9f, 1e-5f);
    }
    CHECK(lk_clip_grad_norm(NULL, 1.0f) == -1.0f);
    CHECK(lk_clip_grad_norm(PS, -1.0f) == -1.0f);
    lk_paramset *empty = lk_paramset_new();
    CHECK(lk_clip_grad_norm(empty, 1.0f) == 0.0f);
    lk_paramset_free(empty);
}

static void test_schedules(void) {
    static const char *kinds[4] = {"constant", "constant_with_warmup", "linear", "cosine"};
    int64_t nc = 0;
    float *cases = lk_t_load(REF, "lr.cases", &nc);
    float base = hp("lr.base", 0);
    for (int k = 0; cases && k < 4; k++) {
        lk_lr_kind kind = LK_LR_CONSTANT;
        CHECK_OK(lk_lr_kind_parse(kinds[k], &kind));
        CHECK((int)kind == k);
        for (int c = 0; c < nc / 2; c++) {
            lk_lr_schedule s = {kind, base, (int64_t)cases[2 * c], (int64_t)cases[2 * c + 1]};
            float lr[120];
            for (int t = 0; t < 120; t++) lr[t] = lk_lr_at(&s, t);
            char fmt[48];
            snprintf(fmt, sizeof fmt, "lr.%s.%%d", kinds[k]);
            /* the same double formula as diffusers, rounded to f32: equal up to 1 ulp */
            close_ref("lr", lr, 120, fmt, c, 0, 0.0f, 1.2e-7f);
        }
    }
    free(cases);
    lk_lr_kind kind;
    CHECK(lk_lr_kind_parse("cosine_with_restarts", &kind) == LK_ERR_UNSUPPORTED);
    CHECK(lk_lr_kind_parse(NULL, &kind) == LK_ERR_INVALID);
    lk_lr_schedule s = {LK_LR_LINEAR, 1.0f, 4, 12};
    CHECK(lk_lr_at(&s, 0) == 0.0f && lk_lr_at(&s, 2) == 0.5f && lk_lr_at(&s, 4) == 1.0f);
    CHECK(lk_lr_at(&s, 8) == 0.5f && lk_lr_at(&s, 12) == 0.0f && lk_lr_at(&s, 40) == 0.0f);
    CHECK(lk_lr_at(&s, -3) == 0.0f && lk_lr_at(NULL, 3) == 0.0f);
}

/* EMA of torch's AdamW trajectory: params set from the reference before each update. */
static void test_ema(void) {
    for (int j = 0; j < 2; j++) {
        reset_params();
        char name[32], what[32], fmt[32];
        snprintf(name, sizeof name, "hp.ema%d", j);
        lk_ema *e = lk_ema_new(PS, hp(name, 0), hp(name, 1) != 0.0f);
        CHECK(e != NULL);
        if (!e) continue;
        snprintf(what, sizeof what, "ema%d", j);
        for (int k = 0; k < STEPS; k++) {
            for (int i = 0; i < NP; i++) load_into(slice(i), slice_n(i), "adamw.p.%d.%d", k, i);
            CHECK_OK(lk_ema_update(e));
            snprintf(fmt, sizeof fmt, "ema%d.s.%d.%%d", j, k);
            for (int i = 0; i < NP; i++)
                close_ref(what, lk_ema_shadow(e, i), slice_n(i), fmt, i, 0, 1e-7f, 1e-6f);
        }
        if (hp(name, 1) != 0.0f) {
            /* warm-up convention: d_0 = 0, so the first update moves the shadow onto the
             * parameters (s - (s - p): equal up to rounding), then d_1 = min(0.5, 2/11) */
            lk_ema *e1 = lk_ema_new(PS, 0.5f, true);
            CHECK(e1 != NULL);
            for (int i = 0; e1 && i < NP; i++) slice(i)[0] += 1.0f;
            if (e1) CHECK_OK(lk_ema_update(e1));
            for (int i = 0; e1 && i < NP; i++)
                lk_t_close("ema first update", lk_ema_shadow(e1, i), slice(i), (size_t)slice_n(i),
                           1e-6f, 0.0f);
            float s0 = e1 ? lk_ema_shadow(e1, 0)[0] : 0.0f, p0 = slice(0)[0];
            slice(0)[0] = p0 + 11.0f;
            if (e1) CHECK_OK(lk_ema_update(e1));
            if (e1) CHECK(fabsf(lk_ema_shadow(e1, 0)[0] - (s0 + 9.0f)) < 1e-5f);
            lk_ema_free(e1);
        }
        CHECK_OK(lk_ema_copy_to_params(e));
        for (int i = 0; i < NP; i++)
            CHECK(memcmp(slice(i), lk_ema_shadow(e, i), sizeof(float) * (size_t)slice_n(i)) == 0);
        check_frozen(what);
        CHECK(lk_ema_shadow(e, NP) == NULL);
        lk_ema_free(e);
    }
    CHECK(lk_ema_new(PS, 1.5f, false) == NULL);
}

/* ---- the multithreaded paths: a set above the 2M-element serial threshold (an SD 1.5
 * 640x640x3x3 conv plus an odd small parameter), run on 2 threads and on 1; the passes are
 * elementwise, so the results must be bitwise equal (the clip norm to double rounding). ---- */
enum { PAR_ADAMW, PAR_SGD, PAR_EMA, PAR_CLIP, PAR_KERNEL };

static void par_run(int what, int nthreads, lk_tensor **q, lk_paramset *ps, const float *init,
                    const float *grads, float *out, float *norm) {
    int64_t n0 = lk_numel(q[0]), n1 = lk_numel(q[1]);
    lk_set_num_threads(nthreads);
    memcpy(q[0]->data, init, sizeof(float) * (size_t)n0);
    memcpy(q[1]->data, init + n0, sizeof(float) * (size_t)n1);
    lk_adamw *o = what == PAR_ADAMW ? lk_adamw_new(ps, lk_adamw_defaults()) : NULL;
    lk_sgd *sg = what == PAR_SGD ? lk_sgd_new(ps, (lk_sgd_config){0.01f, 0.9f, 0.0f, 0.01f, true})
                                 : NULL;
    lk_ema *e = what == PAR_EMA ? lk_ema_new(ps, 0.99f, true) : NULL;
    float *m = NULL, *v = NULL;
    if (what == PAR_KERNEL) {
        m = calloc((size_t)n0, sizeof *m);
        v = calloc((size_t)n0, sizeof *v);
    }
    for (int k = 0; k < 2; k++) {
        const float *g = grads + (size_t)k * (size_t)(n0 + n1);
        memcpy(q[0]->grad, g, sizeof(float) * (size_t)n0);
        memcpy(q[1]->grad, g + n0, sizeof(float) * (size_t)n1);
        if (o) CHECK_OK(lk_adamw_step(o, 2e-3f));
        if (sg) CHECK_OK(lk_sgd_step(sg, -1.0f));
        if (e) {
            float *x = (float *)q[0]->data;
            for (int64_t j = 0; j < n0; j++) x[j] += q[0]->grad[j];
            CHECK_OK(lk_ema_update(e));
        }
        if (what == PAR_CLIP && k == 0) *norm = lk_clip_grad_norm(ps, 1.0f);
        if (what == PAR_KERNEL && m && v)
            lk_adamw_update((float *)q[0]->data, q[0]->grad, m, v, (size_t)n0, 2e-3f, 0.9f, 0.999f,
                            1e-8f, 0.01f, k + 1);
    }
    const float *src = what == PAR_CLIP ? q[0]->grad : e ? lk_ema_shadow(e, 0) : q[0]->data;
    memcpy(out, src, sizeof(float) * (size_t)n0);
    lk_adamw_free(o);
    lk_sgd_free(sg);
    lk_ema_free(e);
    free(m);
    free(v);
}

static void test_parallel(void) {
    const char *names[5] = {"adamw", "sgd", "ema", "clip", "adamw kernel"};
    int nt = lk_get_num_threads();
    lk_tensor *q[2] = {lk_param_new(LK_F32, LK_DIMS(640, 640, 3, 3), "conv"),
                       lk_param_new(LK_F32, LK_DIMS(7, 5), "b")};
    lk_paramset *ps = lk_paramset_new();
    CHECK(q[0] && q[1] && ps);
    if (!q[0] || !q[1] || !ps) return;
    CHECK_OK(lk_paramset_add(ps, q[0]));
    CHECK_OK(lk_paramset_add(ps, q[1]));
    CHECK_OK(lk_paramset_finalize(ps));
    int64_t n0 = lk_numel(q[0]), n = n0 + lk_numel(q[1]);
    CHECK(lk_paramset_numel(ps) > (1 << 21));
    float *init = malloc(sizeof(float) * (size_t)n), *grads = malloc(sizeof(float) * 2 * (size_t)n);
    float *a = malloc(sizeof(float) * (size_t)n0), *b = malloc(sizeof(float) * (size_t)n0);
    if (init && grads && a && b) {
        lk_t_fill_uniform(init, (size_t)n, -1.0f, 1.0f, 11);
        lk_t_fill_uniform(grads, 2 * (size_t)n, -0.5f, 0.5f, 12);
        for (int w = PAR_ADAMW; w <= PAR_KERNEL; w++) {
            float na = 0.0f, nb = 0.0f;
            par_run(w, 1, q, ps, init, grads, a, &na);
            par_run(w, nt > 2 ? nt : 2, q, ps, init, grads, b, &nb);
            int same = memcmp(a, b, sizeof(float) * (size_t)n0) == 0;
            if (w == PAR_CLIP) same = same || lk_t_close("clip 2 threads", b, a, (size_t)n0, 0.0f, 1e-6f);
            printf("%s %s: 2 threads == 1 thread on %lld elements\n", same ? "ok  " : "FAIL",
                   names[w], (long long)n);
            CHECK(same);
            if (w == PAR_CLIP) CHECK(na > 1.0f && fabsf(na - nb) <= 1e-6f * na);
        }
        /* the kernel's own threads vs the paramset's */
        par_run(PAR_ADAMW, 2, q, ps, init, grads, a, NULL);
        CHECK(memcmp(a, b, sizeof(float) * (size_t)n0) == 0);
    }
    lk_set_num_threads(nt);
    free(init);
    free(grads);
    free(a);
    free(b);
    lk_paramset_free(ps);
    lk_param_free(q[0]);
    lk_param_free(q[1]);
}

/* ---- exact restore: 3 steps, save, load into a fresh optimizer, 2 more == 5 straight ---- */
typedef struct runner {
    lk_status (*step)(void *o, int k);
    lk_status (*save)(const void *o, lk_st_writer *w, const char *prefix);
    lk_status (*load)(void *o, const lk_safetensors *st, const char *prefix);
    void *(*make)(void);
    void (*destroy)(void *o);
} runner;

static void *mk_adamw(void) { return lk_adamw_new(PS, adamw_cfg()); }
static lk_status st_adamw(void *o, int k) {
    load_grads(k);
    return lk_adamw_step(o, hp("hp.adamw_lrs", k));
}
static lk_status sv_adamw(const void *o, lk_st_writer *w, const char *p) { return lk_adamw_save(o, w, p); }
static lk_status ld_adamw(void *o, const lk_safetensors *st, const char *p) { return lk_adamw_load(o, st, p); }
static void fr_adamw(void *o) { lk_adamw_free(o); }

static void *mk_sgd(void) { return lk_sgd_new(PS, sgd_cfg(1)); }
static lk_status st_sgd(void *o, int k) {
    load_grads(k);
    return lk_sgd_step(o, -1.0f);
}
static lk_status sv_sgd(const void *o, lk_st_writer *w, const char *p) { return lk_sgd_save(o, w, p); }
static lk_status ld_sgd(void *o, const lk_safetensors *st, const char *p) { return lk_sgd_load(o, st, p); }
static void fr_sgd(void *o) { lk_sgd_free(o); }

static void *mk_ema(void) { return lk_ema_new(PS, 0.9f, true); }
static lk_status st_ema(void *o, int k) {
    for (int i = 0; i < NP; i++) load_into(slice(i), slice_n(i), "adamw.p.%d.%d", k, i);
    return lk_ema_update(o);
}
static lk_status sv_ema(const void *o, lk_st_writer *w, const char *p) { return lk_ema_save(o, w, p); }
static lk_status ld_ema(void *o, const lk_safetensors *st, const char *p) { return lk_ema_load(o, st, p); }
static void fr_ema(void *o) { lk_ema_free(o); }

/* Save o's state (and the trainable parameter values) to path. */
static lk_status save_state(const runner *r, void *o, const char *path) {
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return LK_ERR_NOMEM;
    lk_status s = r->save(o, w, "state.");
    for (int i = 0; i < NP && s == LK_OK; i++) {
        char name[64];
        snprintf(name, sizeof name, "param.%d", i);
        s = lk_st_writer_add(w, name, LK_F32, 1, (const int64_t[]){slice_n(i)}, slice(i));
    }
    if (s == LK_OK) s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    return s;
}

static void test_resume(const char *what, runner r) {
    char pa[96], pb[96], pc[96];
    snprintf(pa, sizeof pa, "test_optim_%s_a.safetensors", what);
    snprintf(pb, sizeof pb, "test_optim_%s_b.safetensors", what);
    snprintf(pc, sizeof pc, "test_optim_%s_c.safetensors", what);
    reset_params();
    void *o = r.make();
    CHECK(o != NULL);
    if (!o) return;
    for (int k = 0; k < STEPS; k++) CHECK_OK(r.step(o, k));
    CHECK_OK(save_state(&r, o, pa));
    r.destroy(o);

    reset_params();
    o = r.make();
    for (int k = 0; o && k < 3; k++) CHECK_OK(r.step(o, k));
    if (o) CHECK_OK(save_state(&r, o, pb));
    r.destroy(o);
    o = r.make();
    lk_safetensors *sb = NULL;
    CHECK_OK(lk_safetensors_open(&sb, pb));
    if (o && sb) CHECK_OK(r.load(o, sb, "state."));
    lk_safetensors_close(sb);
    for (int k = 3; o && k < STEPS; k++) CHECK_OK(r.step(o, k));
    if (o) CHECK_OK(save_state(&r, o, pc));
    r.destroy(o);

    lk_safetensors *sa = NULL, *sc = NULL;
    CHECK_OK(lk_safetensors_open(&sa, pa));
    CHECK_OK(lk_safetensors_open(&sc, pc));
    if (sa && sc) {
        int n = lk_safetensors_count(sa), same = lk_safetensors_count(sc) == n;
        for (int i = 0; same && i < n; i++) {
            const lk_st_tensor *ta = lk_safetensors_at(sa, i);
            const lk_st_tensor *tc = lk_safetensors_find(sc, ta->name);
            if (!tc || tc->nbytes != ta->nbytes || memcmp(ta->data, tc->data, ta->nbytes) != 0) {
                fprintf(stderr, "%s resume: '%s' differs\n", what, ta->name);
                same = 0;
            }
        }
        printf("%s %s resume (3 + save/load + 2 == 5 steps, bitwise, %d tensors)\n",
               same ? "ok  " : "FAIL", what, n);
        CHECK(same && n > NP);
    }
    lk_safetensors_close(sa);
    lk_safetensors_close(sc);
    remove(pa);
    remove(pb);
    remove(pc);
}

static void test_errors(void) {
    lk_adamw_config c = lk_adamw_defaults();
    CHECK(c.lr == 1e-3f && c.beta1 == 0.9f && c.beta2 == 0.999f && c.eps == 1e-8f &&
          c.weight_decay == 1e-2f);
    c.beta1 = 1.0f;
    CHECK(lk_adamw_new(PS, c) == NULL);
    CHECK(strstr(lk_last_error(), "adamw_new") != NULL);
    CHECK(lk_adamw_new(NULL, lk_adamw_defaults()) == NULL);
    CHECK(lk_adamw_step(NULL, 1.0f) == LK_ERR_INVALID);
    lk_sgd_config s = {0.1f, 0.0f, 0.0f, 0.0f, true};
    CHECK(lk_sgd_new(PS, s) == NULL); /* nesterov without momentum */
    lk_adamw_free(NULL);
    lk_sgd_free(NULL);
    lk_ema_free(NULL);
}

/* parameter groups: parameter 0 at 2x the learning rate equals a run at 2x lr; a scale of 0
 * leaves parameter 1 untouched (decoupled weight decay included); bad arguments refused */
static void test_adamw_groups(void) {
    float *want0 = NULL, *init1 = NULL;
    reset_params();
    init1 = malloc(sizeof(float) * (size_t)slice_n(1));
    lk_adamw *o = lk_adamw_new(PS, adamw_cfg());
    if (!o || !init1) {
        CHECK(o && init1);
        goto done;
    }
    memcpy(init1, slice(1), sizeof(float) * (size_t)slice_n(1));
    CHECK_OK(lk_adamw_set_lr_scale(o, 0, 2.0f));
    CHECK_OK(lk_adamw_set_lr_scale(o, 1, 0.0f));
    CHECK(lk_adamw_set_lr_scale(o, NP, 1.0f) == LK_ERR_INVALID);
    CHECK(lk_adamw_set_lr_scale(o, 0, -1.0f) == LK_ERR_INVALID);
    CHECK(lk_adamw_set_lr_scale(o, 0, NAN) == LK_ERR_INVALID);
    load_grads(0);
    CHECK_OK(lk_adamw_step(o, 1e-2f));
    want0 = malloc(sizeof(float) * (size_t)slice_n(0));
    if (want0) memcpy(want0, slice(0), sizeof(float) * (size_t)slice_n(0));
    CHECK(memcmp(slice(1), init1, sizeof(float) * (size_t)slice_n(1)) == 0);
    lk_adamw_free(o);
    reset_params();
    o = lk_adamw_new(PS, adamw_cfg());
    load_grads(0);
    CHECK(o && lk_adamw_step(o, 2e-2f) == LK_OK);
    CHECK(want0 && memcmp(slice(0), want0, sizeof(float) * (size_t)slice_n(0)) == 0);
done:
    lk_adamw_free(o);
    free(want0);
    free(init1);
    reset_params();
}

int main(void) {
    REF = lk_t_ref("optim");
    REQUIRE(REF != NULL);
    REQUIRE(make_params());
    double t0 = lk_t_now();
    test_adamw();
    test_adamw_groups();
    test_adamw_kernel();
    test_sgd();
    test_clip();
    test_schedules();
    test_ema();
    test_parallel();
    test_resume("adamw", (runner){st_adamw, sv_adamw, ld_adamw, mk_adamw, fr_adamw});
    test_resume("sgd", (runner){st_sgd, sv_sgd, ld_sgd, mk_sgd, fr_sgd});
    test_resume("ema", (runner){st_ema, sv_ema, ld_ema, mk_ema, fr_ema});
    test_errors();
    printf("optim tests: %.2f s\n", lk_t_now() - t0);
    lk_paramset_free(PS);
    for (int i = 0; i < NP; i++) lk_param_free(P[i]);
    lk_safetensors_close(REF);
    return lk_t_done();
}
