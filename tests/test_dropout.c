/* test_dropout.c: lk_dropout against torch.nn.functional.dropout (training, CPU generator):
 * masks, outputs and gradients bit for bit (tests/ref/dropout.py), generator position after the
 * call, keep-rate statistics, p = 0 / p = 1 / invalid p, accumulation, finite differences. */
#include "harness.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t load_i64(const lk_safetensors *st, const char *name, int i) {
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    int64_t v = 0;
    if (t && t->dtype == LK_I64 && i < lk_st_tensor_numel(t)) memcpy(&v, (const char *)t->data + 8 * i, 8);
    else {
        fprintf(stderr, "FAIL fixture %s missing\n", name);
        lk_t_failures++;
    }
    return v;
}

/* exact equality, reported through lk_t_close's statistics (atol = rtol = 0) */
static void same(const char *what, const float *got, const float *want, size_t n) {
    lk_t_close(what, got, want, n, 0.0f, 0.0f);
}

static void check_after(const char *what, lk_rng *r, const lk_safetensors *st, const char *name) {
    float got[5];
    lk_rng_randn(r, got, 5);
    float *want = lk_t_load(st, name, NULL);
    if (!want) return;
    lk_t_checks++;
    if (memcmp(got, want, sizeof got)) {
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: generator not where torch left it (randn after: %g vs %g)\n", what,
                (double)got[0], (double)want[0]);
    }
    free(want);
}

static void test_small_cases(const lk_safetensors *st) {
    int cases = 0;
    for (int k = 0; k < 100; k++) {
        char nm[64], what[96];
        snprintf(nm, sizeof nm, "c%02d.x", k);
        if (!lk_safetensors_find(st, nm)) break;
        cases++;
#define NM(s) (snprintf(nm, sizeof nm, "c%02d." s, k), nm)
        lk_tensor *x = lk_t_param(st, NM("x"));
        float *p = lk_t_load(st, NM("p"), NULL);
        float *ywant = lk_t_load(st, NM("y"), NULL);
        float *dy = lk_t_load(st, NM("dy"), NULL);
        float *dxwant = lk_t_load(st, NM("dx"), NULL);
        int64_t seed = load_i64(st, NM("seed"), 0);
        if (!x || !p || !ywant || !dy || !dxwant) {
            lk_param_free(x);
            free(p), free(ywant), free(dy), free(dxwant);
            continue;
        }
        CHECK_OK(lk_set_requires_grad(x, true));
        size_t n = (size_t)lk_numel(x);
        lk_ctx *ctx = lk_ctx_new();
        lk_rng r;
        lk_rng_seed(&r, (uint64_t)seed);
        lk_tensor *y = lk_dropout(ctx, x, p[0], &r);
        CHECK(y != NULL);
        if (y) {
            snprintf(what, sizeof what, "dropout c%02d p=%g n=%zu y", k, (double)p[0], n);
            same(what, y->data, ywant, n);
            if (p[0] == 0.0f) CHECK(y == x); /* identity returns x itself */
            if (y != x) {
                CHECK_OK(lk_backward_from(ctx, y, dy));
                snprintf(what, sizeof what, "dropout c%02d p=%g dx", k, (double)p[0]);
                same(what, x->grad, dxwant, n);
            } else {
                same("dropout p=0: torch dx = dy", dxwant, dy, n);
            }
        }
        snprintf(what, sizeof what, "dropout c%02d", k);
        check_after(what, &r, st, NM("after"));
#undef NM
        lk_ctx_free(ctx);
        lk_param_free(x);
        free(p), free(ywant), free(dy), free(dxwant);
    }
    CHECK(cases >= 7);
}

/* SD-size activation (1, 320, 64, 64), p = 0.1: the kernel directly, then its timing. */
static void test_sd_case(const lk_safetensors *st) {
    int64_t shape[4];
    for (int i = 0; i < 4; i++) shape[i] = load_i64(st, "sd.shape", i);
    size_t n = (size_t)(shape[0] * shape[1] * shape[2] * shape[3]);
    const lk_st_tensor *mt = lk_safetensors_find(st, "sd.mask");
    float *p = lk_t_load(st, "sd.p", NULL), *scale = lk_t_load(st, "sd.scale", NULL);
    if (!mt || !p || !scale || (size_t)lk_st_tensor_numel(mt) != n || mt->dtype != LK_U8) {
        CHECK(!"sd fixtures present");
        free(p), free(scale);
        return;
    }
    float *x = malloc(n * 4), *dy = malloc(n * 4), *y = malloc(n * 4), *mask = malloc(n * 4);
    float *dx = calloc(n, 4), *yw = malloc(n * 4), *dxw = malloc(n * 4);
    lk_rng r;
    lk_rng_seed(&r, (uint64_t)load_i64(st, "sd.xseed", 0));
    lk_rng_randn(&r, x, n);
    lk_rng_seed(&r, (uint64_t)load_i64(st, "sd.dyseed", 0));
    lk_rng_randn(&r, dy, n);
    lk_rng_seed(&r, (uint64_t)load_i64(st, "sd.seed", 0));
    lk_dropout_forward(y, mask, x, n, p[0], &r);
    check_after("dropout sd", &r, st, "sd.after");
    lk_dropout_backward(dx, dy, mask, n);
    const uint8_t *km = mt->data;
    size_t mask_bad = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        bool k = mask[i] != 0.0f;
        kept += k;
        mask_bad += k != (km[i] != 0);
        yw[i] = km[i] ? x[i] * scale[0] : 0.0f;
        dxw[i] = km[i] ? dy[i] * scale[0] : 0.0f;
    }
    CHECK(mask_bad == 0);
    printf("dropout sd: %zu of %zu masks differ from torch; kept %.5f\n", mask_bad, n, (double)kept / (double)n);
    same("dropout sd y", y, yw, n);
    same("dropout sd dx", dx, dxw, n);
    /* timing (2 threads): best of 5 */
    double tf = 1e9, tb = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = lk_t_now();
        lk_dropout_forward(y, mask, x, n, p[0], &r);
        double t1 = lk_t_now();
        lk_dropout_backward(dx, dy, mask, n);
        double t2 = lk_t_now();
        tf = fmin(tf, t1 - t0);
        tb = fmin(tb, t2 - t1);
    }
    printf("dropout [1,320,64,64] p=0.1: forward %.2f ms, backward %.2f ms\n", tf * 1e3, tb * 1e3);
    free(x), free(dy), free(y), free(mask), free(dx), free(yw), free(dxw), free(p), free(scale);
}

/* The keep rate is Binomial(n, 1-p)/n: within 5 standard deviations. */
static void test_rates(void) {
    size_t n = 1 << 20;
    float *x = malloc(n * 4), *y = malloc(n * 4), *mask = malloc(n * 4), *dx = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    const float ps[] = {0.05f, 0.1f, 0.5f, 0.9f, 0.999f};
    lk_rng r;
    lk_rng_seed(&r, 99);
    for (size_t t = 0; t < sizeof ps / sizeof ps[0]; t++) {
        float p = ps[t];
        lk_dropout_forward(y, mask, x, n, p, &r);
        size_t kept = 0;
        bool values_ok = true;
        float scale = 1.0f / (float)(1.0 - (double)p);
        for (size_t i = 0; i < n; i++) {
            kept += mask[i] != 0.0f;
            values_ok = values_ok && (mask[i] == 0.0f || mask[i] == scale) && y[i] == mask[i];
        }
        double rate = (double)kept / (double)n, q = 1.0 - (double)p;
        double sd = sqrt(q * (1.0 - q) / (double)n);
        printf("dropout p=%g: keep rate %.5f (expected %.5f, %.2f sd)\n", (double)p, rate, q, (rate - q) / sd);
        CHECK(fabs(rate - q) < 5.0 * sd);
        CHECK(values_ok);
        /* backward accumulates: twice gives 2 * dy * mask (dy = 1) */
        memset(dx, 0, n * 4);
        lk_dropout_backward(dx, x, mask, n);
        lk_dropout_backward(dx, x, mask, n);
        bool acc_ok = true;
        for (size_t i = 0; i < n; i++) acc_ok = acc_ok && dx[i] == 2.0f * mask[i];
        CHECK(acc_ok);
    }
    free(x), free(y), free(mask), free(dx);
}

static void test_edges(void) {
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *x = lk_tensor_full(ctx, 2.0f, LK_DIMS(3, 4));
    lk_rng r, r0;
    lk_rng_seed(&r, 5);
    r0 = r;
    uint8_t s0[LK_RNG_STATE_BYTES], s1[LK_RNG_STATE_BYTES];
    lk_rng_get_state(&r0, s0);
    CHECK(lk_dropout(ctx, x, 0.0f, &r) == x);
    CHECK(lk_dropout(ctx, x, 0.0f, NULL) == x);
    lk_tensor *z = lk_dropout(ctx, x, 1.0f, &r);
    CHECK(z != NULL);
    bool zero = z != NULL;
    for (int i = 0; z && i < 12; i++) zero = zero && ((float *)z->data)[i] == 0.0f;
    CHECK(zero);
    lk_rng_get_state(&r, s1);
    CHECK(!memcmp(s0, s1, sizeof s0)); /* neither p = 0 nor p = 1 draws */
    CHECK(lk_dropout(ctx, x, -0.1f, &r) == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
    lk_ctx_clear_status(ctx);
    CHECK(lk_dropout(ctx, x, 1.5f, &r) == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
    lk_ctx_clear_status(ctx);
    CHECK(lk_dropout(ctx, x, NAN, &r) == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
    lk_ctx_clear_status(ctx);
    CHECK(lk_dropout(ctx, x, 0.5f, NULL) == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
    lk_ctx_clear_status(ctx);
    CHECK(lk_dropout(ctx, NULL, 0.5f, &r) == NULL);
    lk_ctx_clear_status(ctx);
    /* no-grad mode draws the same mask as grad mode */
    lk_tensor *p = lk_param_new(LK_F32, LK_DIMS(5, 7), "p");
    lk_t_fill_uniform(p->data, 35, -1.0f, 1.0f, 3);
    lk_set_requires_grad(p, true);
    lk_rng_seed(&r, 77);
    lk_tensor *a = lk_dropout(ctx, p, 0.4f, &r);
    lk_set_grad_enabled(ctx, false);
    lk_rng_seed(&r, 77);
    lk_tensor *b = lk_dropout(ctx, p, 0.4f, &r);
    CHECK(a && b && !memcmp(a->data, b->data, 35 * 4));
    lk_param_free(p);
    lk_ctx_free(ctx);
}

typedef struct { uint64_t seed; float p; } drop_ud;
static lk_tensor *drop_fn(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    const drop_ud *u = ud;
    lk_rng r;
    lk_rng_seed(&r, u->seed); /* fixed rng state: the same mask on every call */
    return lk_dropout(ctx, in[0], u->p, &r);
}

static void test_gradcheck(void) {
    const int64_t shapes[][4] = {{3, 5, 7, 1}, {1, 1, 1, 1}, {2, 3, 4, 5}};
    const float ps[] = {0.3f, 0.5f, 0.75f};
    for (int s = 0; s < 3; s++) {
        lk_tensor *x = lk_param_new(LK_F32, 4, shapes[s], "x");
        lk_t_fill_uniform(x->data, (size_t)lk_numel(x), -2.0f, 2.0f, 10 + (uint64_t)s);
        lk_set_requires_grad(x, true);
        drop_ud u = {1234 + (uint64_t)s, ps[s]};
        char what[64];
        snprintf(what, sizeof what, "dropout gradcheck p=%g", (double)ps[s]);
        lk_t_gradcheck(what, drop_fn, &u, &x, 1, 24, 1e-2f, 1e-3f);
        lk_param_free(x);
    }
}

int main(void) {
    lk_set_num_threads(2);
    lk_safetensors *st = lk_t_ref("dropout");
    if (st) {
        test_small_cases(st);
        test_sd_case(st);
        lk_safetensors_close(st);
    }
    test_rates();
    test_edges();
    test_gradcheck();
    return lk_t_done();
}
