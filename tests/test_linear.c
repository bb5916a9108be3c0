/* test_linear.c: lk_linear (F32 weights, and frozen F16/BF16 weights compared with torch using
 * the same rounded values) and lk_matmul (batched, shared 2-D b, transposed views read in
 * place) against PyTorch (tests/ref/linear.py): SD-1.5 shapes and odd ones, forward and every
 * gradient; finite differences through the ops; failure cases. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tolerances. y, dx: dot products of K <= 2560 terms of size <= 1/sqrt(K) in a different
 * summation order than torch's BLAS: ~1e-6 absolute; 1e-5. dw, db: sums over M = 4096 rows
 * of products of size <= 1 (values up to ~60): 2e-4 absolute plus 1e-4 relative. */
#define Y_ATOL 1e-5f
#define Y_RTOL 1e-4f
#define W_ATOL 2e-4f
#define W_RTOL 1e-4f

typedef struct lin_case {
    const char *name;
    int ndim;
    int64_t xs[3];
    int64_t N;
    bool bias;
    lk_dtype wdt;
} lin_case;

/* must match LINEAR in tests/ref/linear.py */
static const lin_case LIN[] = {
    {"sd320", 3, {1, 4096, 320}, 320, true, LK_F32},
    {"geglu_proj", 3, {1, 4096, 320}, 2560, true, LK_F32},
    {"out1280", 3, {1, 4096, 1280}, 320, true, LK_F32},
    {"kv768", 2, {77, 768}, 320, false, LK_F32},
    {"sd320_f16", 3, {1, 4096, 320}, 320, true, LK_F16},
    {"geglu_proj_bf16", 3, {1, 4096, 320}, 2560, true, LK_BF16},
    {"kv768_f16", 2, {77, 768}, 320, false, LK_F16},
    {"kv768_bf16", 2, {77, 768}, 320, false, LK_BF16},
    {"wide_f16", 2, {8, 1280}, 2560, true, LK_F16},
    {"odd", 2, {3, 7}, 5, true, LK_F32},
    {"odd_bf16", 2, {3, 7}, 5, true, LK_BF16},
    {"n1", 3, {2, 3, 5}, 1, false, LK_F32},
    {"k1", 2, {1, 1}, 1, true, LK_F32},
    {"m1", 2, {1, 320}, 1280, true, LK_F32},
};

typedef struct mm_case {
    const char *name;
    int an;
    int64_t as[4];
    bool at;
    int bn;
    int64_t bs[4];
    bool bt;
} mm_case;

/* must match MATMUL in tests/ref/linear.py */
static const mm_case MM[] = {
    {"batched", 4, {2, 3, 5, 7}, false, 4, {2, 3, 7, 4}, false},
    {"shared_b", 3, {3, 5, 7}, false, 2, {7, 4}, false},
    {"bt_view", 3, {2, 6, 5}, false, 3, {2, 4, 5}, true},
    {"at_view", 3, {2, 5, 6}, true, 3, {2, 5, 4}, false},
    {"at_shared", 3, {3, 7, 5}, true, 2, {7, 4}, false},
    {"both_t", 3, {2, 5, 6}, true, 3, {2, 4, 5}, true},
    {"mat11", 2, {1, 1}, false, 2, {1, 1}, false},
    {"b1", 3, {1, 4, 3}, false, 3, {1, 3, 2}, false},
    {"attn", 3, {8, 256, 40}, false, 3, {8, 77, 40}, true},
};

static lk_tensor *uniform_param(int ndim, const int64_t *shape, float lo, float hi, uint64_t seed,
                                const char *name) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, name);
    if (!p) return NULL;
    lk_t_fill_uniform(p->data, (size_t)lk_numel(p), lo, hi, seed);
    lk_set_requires_grad(p, true);
    return p;
}

static void compare(const lk_safetensors *st, const char *prefix, const char *what,
                    const float *got, size_t n, float atol, float rtol) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", prefix, what);
    float *want = lk_t_load(st, key, NULL);
    lk_t_close(key, got, want, n, atol, rtol);
    free(want);
}

/* a frozen half-precision parameter holding the fixture's rounded weight */
static lk_tensor *half_param(const lk_safetensors *st, const char *key) {
    const lk_st_tensor *t = lk_safetensors_find(st, key);
    CHECK(t != NULL);
    if (!t) return NULL;
    lk_tensor *p = lk_param_new(t->dtype, t->ndim, t->shape, key);
    if (p) memcpy(p->data, t->data, t->nbytes);
    return p;
}

static void run_linear(const lk_safetensors *st, int i) {
    const lin_case *c = &LIN[i];
    uint64_t seed = 5000 + 10 * (uint64_t)i;
    int64_t K = c->xs[c->ndim - 1], N = c->N, M = 1;
    for (int d = 0; d < c->ndim - 1; d++) M *= c->xs[d];
    char prefix[96], key[128];
    snprintf(prefix, sizeof prefix, "lin.%s", c->name);
    lk_tensor *x = uniform_param(c->ndim, c->xs, -1.0f, 1.0f, seed, "x");
    float lim = 1.0f / sqrtf((float)K);
    lk_tensor *w;
    if (c->wdt == LK_F32) {
        w = uniform_param(LK_DIMS(N, K), -lim, lim, seed + 1, "w");
    } else {
        snprintf(key, sizeof key, "%s.w", prefix);
        w = half_param(st, key);
        CHECK(w && w->dtype == c->wdt);
    }
    lk_tensor *b = c->bias ? uniform_param(LK_DIMS(N), -0.5f, 0.5f, seed + 2, "b") : NULL;
    float *dy = malloc(sizeof(float) * (size_t)(M * N));
    lk_t_fill_uniform(dy, (size_t)(M * N), -1.0f, 1.0f, seed + 3);
    lk_ctx *ctx = lk_ctx_new();
    double t0 = lk_t_now();
    lk_tensor *y = w ? lk_linear(ctx, x, w, b) : NULL;
    double t1 = lk_t_now();
    CHECK(y != NULL);
    if (y) {
        CHECK(y->ndim == c->ndim && y->shape[y->ndim - 1] == N);
        compare(st, prefix, "y", y->data, (size_t)(M * N), Y_ATOL, Y_RTOL);
        double t2 = lk_t_now();
        CHECK_OK(lk_backward_from(ctx, y, dy));
        double t3 = lk_t_now();
        if (M * N * K >= 100000000)
            printf("     (%s: forward %.2f ms, backward %.2f ms)\n", prefix, 1e3 * (t1 - t0),
                   1e3 * (t3 - t2));
        compare(st, prefix, "dx", x->grad, (size_t)(M * K), Y_ATOL, Y_RTOL);
        if (c->wdt == LK_F32) compare(st, prefix, "dw", w->grad, (size_t)(N * K), W_ATOL, W_RTOL);
        else CHECK(w->grad == NULL);
        if (b) compare(st, prefix, "db", b->grad, (size_t)N, W_ATOL, W_RTOL);
    }
    lk_ctx_free(ctx);
    free(dy);
    lk_param_free(x);
    lk_param_free(w);
    lk_param_free(b);
}

static void run_matmul(const lk_safetensors *st, int i) {
    const mm_case *c = &MM[i];
    uint64_t seed = 6000 + 10 * (uint64_t)i;
    char prefix[96];
    snprintf(prefix, sizeof prefix, "mm.%s", c->name);
    lk_tensor *a0 = uniform_param(c->an, c->as, -1.0f, 1.0f, seed, "a");
    lk_tensor *b0 = uniform_param(c->bn, c->bs, -1.0f, 1.0f, seed + 1, "b");
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *a = c->at ? lk_transpose(ctx, a0, -2, -1) : a0;
    lk_tensor *b = c->bt ? lk_transpose(ctx, b0, -2, -1) : b0;
    lk_tensor *y = lk_matmul(ctx, a, b);
    CHECK(y != NULL);
    if (y) {
        size_t ny = (size_t)lk_numel(y);
        compare(st, prefix, "y", y->data, ny, Y_ATOL, Y_RTOL);
        float *dy = malloc(sizeof(float) * ny);
        lk_t_fill_uniform(dy, ny, -1.0f, 1.0f, seed + 2);
        CHECK_OK(lk_backward_from(ctx, y, dy));
        free(dy);
        compare(st, prefix, "da", a0->grad, (size_t)lk_numel(a0), Y_ATOL, Y_RTOL);
        compare(st, prefix, "db", b0->grad, (size_t)lk_numel(b0), Y_ATOL, Y_RTOL);
    }
    lk_ctx_free(ctx);
    lk_param_free(a0);
    lk_param_free(b0);
}

/* gradcheck wrappers */
static lk_tensor *gc_linear(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    (void)ud;
    return lk_linear(ctx, in[0], in[1], n > 2 ? in[2] : NULL);
}
/* ud: bit 0 transpose a (stored (.., K, M)), bit 1 transpose b (stored (.., N, K)) */
static lk_tensor *gc_matmul(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    (void)n;
    int f = *(const int *)ud;
    lk_tensor *a = (f & 1) ? lk_transpose(ctx, in[0], -2, -1) : in[0];
    lk_tensor *b = (f & 2) ? lk_transpose(ctx, in[1], -2, -1) : in[1];
    return lk_matmul(ctx, a, b);
}

static void gradchecks(void) {
    lk_tensor *in[3] = {uniform_param(LK_DIMS(2, 3, 5), -1.0f, 1.0f, 7000, "x"),
                        uniform_param(LK_DIMS(4, 5), -1.0f, 1.0f, 7001, "w"),
                        uniform_param(LK_DIMS(4), -1.0f, 1.0f, 7002, "b")};
    lk_t_gradcheck("gradcheck linear", gc_linear, NULL, in, 3, 16, 1e-2f, 1e-2f);
    lk_t_gradcheck("gradcheck linear no bias", gc_linear, NULL, in, 2, 16, 1e-2f, 1e-2f);
    for (int i = 0; i < 3; i++) lk_param_free(in[i]);

    int flags[3] = {0, 2, 1};
    const char *names[3] = {"gradcheck matmul batched", "gradcheck matmul b^T view",
                            "gradcheck matmul a^T view, shared b"};
    lk_tensor *mm[3][2] = {
        {uniform_param(LK_DIMS(2, 3, 4), -1.0f, 1.0f, 7010, "a"),
         uniform_param(LK_DIMS(2, 4, 5), -1.0f, 1.0f, 7011, "b")},
        {uniform_param(LK_DIMS(2, 3, 4), -1.0f, 1.0f, 7012, "a"),
         uniform_param(LK_DIMS(2, 5, 4), -1.0f, 1.0f, 7013, "b")},
        {uniform_param(LK_DIMS(3, 4, 3), -1.0f, 1.0f, 7014, "a"),
         uniform_param(LK_DIMS(4, 2), -1.0f, 1.0f, 7015, "b")},
    };
    for (int k = 0; k < 3; k++) {
        lk_t_gradcheck(names[k], gc_matmul, &flags[k], mm[k], 2, 16, 1e-2f, 1e-2f);
        lk_param_free(mm[k][0]);
        lk_param_free(mm[k][1]);
    }
}

static void failure_cases(void) {
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 5));
    lk_tensor *w = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(3, 4));
    CHECK(lk_linear(ctx, x, w, NULL) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID && strstr(lk_last_error(), "[2,5]"));
    lk_ctx_reset(ctx);
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 4));
    w = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(3, 4));
    lk_tensor *b = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(4));
    CHECK(lk_linear(ctx, x, w, b) == NULL);
    CHECK(strstr(lk_last_error(), "bias") != NULL);
    lk_ctx_reset(ctx);
    /* a half weight that claims to train is refused */
    lk_tensor *wh = lk_param_new(LK_F16, LK_DIMS(3, 4), "wh");
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 4));
    wh->requires_grad = true;
    CHECK(lk_linear(ctx, x, wh, NULL) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_UNSUPPORTED);
    wh->requires_grad = false;
    lk_ctx_reset(ctx);
    /* ... while a frozen one works and equals the widened weight */
    lk_f32_to_f16_n(wh->data, (const float[]){1, 2, 3, 4, 0, 0, 0, 0, -1, 0.5f, 0, 0}, 12);
    x = lk_tensor_full(ctx, 1.0f, LK_DIMS(2, 4));
    lk_tensor *y = lk_linear(ctx, x, wh, NULL);
    CHECK(y && ((float *)y->data)[0] == 10.0f && ((float *)y->data)[5] == -0.5f);
    lk_param_free(wh);
    lk_ctx_reset(ctx);
    lk_tensor *a = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 3, 4));
    lk_tensor *c = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 5, 6));
    CHECK(lk_matmul(ctx, a, c) == NULL);
    CHECK(strstr(lk_last_error(), "inner") != NULL);
    lk_ctx_reset(ctx);
    a = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 3, 4));
    c = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(3, 4, 6));
    CHECK(lk_matmul(ctx, a, c) == NULL);
    CHECK(strstr(lk_last_error(), "batch") != NULL);
    lk_ctx_reset(ctx);
    a = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(4));
    CHECK(lk_matmul(ctx, a, a) == NULL);
    lk_ctx_free(ctx);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("linear");
    REQUIRE(st != NULL);
    for (int i = 0; i < (int)(sizeof LIN / sizeof LIN[0]); i++) run_linear(st, i);
    for (int i = 0; i < (int)(sizeof MM / sizeof MM[0]); i++) run_matmul(st, i);
    lk_safetensors_close(st);
    gradchecks();
    failure_cases();
    return lk_t_done();
}
