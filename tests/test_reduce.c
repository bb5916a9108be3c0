/* test_reduce.c: sum / mean (total and per dim, keepdim) and MSE loss against PyTorch
 * (tests/ref/reduce.py; forward and gradients), finite-difference checks through the ops, and
 * the failure cases (bad dim, MSE shape mismatch). */
#include "harness.h"
#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>

static lk_tensor *train_param(const lk_safetensors *st, const char *name) {
    lk_tensor *p = lk_t_param(st, name);
    if (p && lk_set_requires_grad(p, true) != LK_OK) {
        lk_param_free(p);
        return NULL;
    }
    return p;
}

static void close_key(const lk_safetensors *st, const char *key, const float *got, size_t n,
                      float atol, float rtol) {
    int64_t wn = 0;
    float *want = lk_t_load(st, key, &wn);
    if (!want || !got || (size_t)wn != n) {
        lk_t_checks++;
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: missing data or size %lld != %zu\n", key, (long long)wn, n);
    } else {
        lk_t_close(key, got, want, n, atol, rtol);
    }
    free(want);
}

static void key(char *buf, size_t len, const char *name, const char *field) {
    snprintf(buf, len, "%s.%s", name, field);
}

/* Tolerances: torch sums in f32 (cascade); we accumulate in double. Over up to 4096 terms of
 * N(0,1) values the f32 rounding difference stays below ~2e-5 absolute, so 1e-4 abs + 1e-4 rel.
 * Gradients of sum/mean are a broadcast copy of G (or G/n): 1e-6 relative. */
static void run_dim(const lk_safetensors *st, const char *name, int dim, bool keep, bool mean,
                    int want_ndim) {
    char k[96];
    key(k, sizeof k, name, "x");
    lk_tensor *x = train_param(st, k);
    lk_ctx *ctx = lk_ctx_new();
    CHECK(x && ctx);
    if (x && ctx) {
        lk_tensor *y = mean ? lk_mean_dim(ctx, x, dim, keep) : lk_sum_dim(ctx, x, dim, keep);
        CHECK(y && y->ndim == want_ndim);
        if (y) {
            key(k, sizeof k, name, "out");
            close_key(st, k, y->data, (size_t)lk_numel(y), 1e-4f, 1e-4f);
            key(k, sizeof k, name, "G");
            float *G = lk_t_load(st, k, NULL);
            if (G) CHECK_OK(lk_backward_from(ctx, y, G));
            free(G);
            key(k, sizeof k, name, "dx");
            close_key(st, k, x->grad, (size_t)lk_numel(x), 1e-7f, 1e-6f);
        }
    }
    lk_ctx_free(ctx);
    lk_param_free(x);
}

static void run_total(const lk_safetensors *st, const char *name, bool mean) {
    char k[96];
    key(k, sizeof k, name, "x");
    lk_tensor *x = train_param(st, k);
    lk_ctx *ctx = lk_ctx_new();
    CHECK(x && ctx);
    if (x && ctx) {
        lk_tensor *y = mean ? lk_mean(ctx, x) : lk_sum(ctx, x);
        CHECK(y && y->ndim == 0 && lk_numel(y) == 1);
        if (y) {
            key(k, sizeof k, name, "out");
            /* a total over 1.3M elements: torch's f32 cascade vs our double sum (the mean is
             * that divided by n, so its absolute tolerance is scaled down likewise) */
            close_key(st, k, y->data, 1, mean ? 1e-9f : 1e-3f, 1e-5f);
            float g = 0.7f;
            CHECK_OK(lk_backward_from(ctx, y, &g));
            key(k, sizeof k, name, "dx");
            close_key(st, k, x->grad, (size_t)lk_numel(x), 1e-9f, 1e-6f);
        }
    }
    lk_ctx_free(ctx);
    lk_param_free(x);
}

static void run_mse(const lk_safetensors *st, const char *name) {
    char k[96];
    key(k, sizeof k, name, "a");
    lk_tensor *a = train_param(st, k);
    key(k, sizeof k, name, "b");
    lk_tensor *b = train_param(st, k);
    lk_ctx *ctx = lk_ctx_new();
    CHECK(a && b && ctx);
    if (a && b && ctx) {
        lk_tensor *y = lk_mse_loss(ctx, a, b);
        CHECK(y && lk_numel(y) == 1);
        if (y) {
            key(k, sizeof k, name, "out");
            close_key(st, k, y->data, 1, 1e-6f, 1e-5f);
            CHECK_OK(lk_backward(ctx, y));
            /* 2 (a-b) / n: a few f32 roundings in a different order */
            key(k, sizeof k, name, "da");
            close_key(st, k, a->grad, (size_t)lk_numel(a), 1e-9f, 1e-5f);
            key(k, sizeof k, name, "db");
            close_key(st, k, b->grad, (size_t)lk_numel(b), 1e-9f, 1e-5f);
        }
    }
    lk_ctx_free(ctx);
    lk_param_free(a);
    lk_param_free(b);
}

/* ---- finite differences through the ops ---- */
typedef struct dim_ud {
    int dim;
    bool keep, mean;
} dim_ud;

/* l1_loss and exp against torch (values and gradients) */
static void run_l1_exp(const lk_safetensors *st) {
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *a = lk_t_param(st, "l1.a"), *b = lk_t_param(st, "l1.b");
    float *w[6] = {lk_t_load(st, "l1.y", NULL), lk_t_load(st, "l1.ga", NULL),
                   lk_t_load(st, "l1.gb", NULL), lk_t_load(st, "exp.y", NULL),
                   lk_t_load(st, "exp.ga", NULL), NULL};
    CHECK(ctx && a && b && w[0] && w[1] && w[2] && w[3] && w[4]);
    if (!(ctx && a && b && w[0] && w[1] && w[2] && w[3] && w[4])) return;
    lk_set_requires_grad(a, true);
    lk_set_requires_grad(b, true);
    const size_t n = (size_t)lk_numel(a);
    lk_tensor *y = lk_l1_loss(ctx, a, b);
    CHECK(y != NULL);
    if (!y) return;
    lk_t_close("l1 value", y->data, w[0], 1, 1e-6f, 1e-6f);
    CHECK(lk_backward(ctx, y) == LK_OK);
    lk_t_close("l1 grad a (ties give 0)", a->grad, w[1], n, 1e-7f, 1e-6f);
    lk_t_close("l1 grad b", b->grad, w[2], n, 1e-7f, 1e-6f);
    lk_zero_grad(a);
    lk_ctx_reset(ctx);
    lk_set_requires_grad(b, false);
    lk_tensor *e = lk_exp(ctx, a);
    CHECK(e != NULL);
    if (!e) return;
    lk_t_close("exp value", e->data, w[3], n, 1e-7f, 1e-6f);
    CHECK(lk_backward(ctx, lk_sum(ctx, lk_mul(ctx, e, b))) == LK_OK);
    lk_t_close("exp grad", a->grad, w[4], n, 1e-7f, 1e-6f);
    for (int i = 0; i < 5; i++) free(w[i]);
    lk_param_free(a);
    lk_param_free(b);
    lk_ctx_free(ctx);
}

static lk_tensor *gc_dim(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    const dim_ud *u = ud;
    return u->mean ? lk_mean_dim(ctx, in[0], u->dim, u->keep) : lk_sum_dim(ctx, in[0], u->dim, u->keep);
}
static lk_tensor *gc_sum(lk_ctx *ctx, lk_tensor **in, int n, void *ud) { return lk_sum(ctx, in[0]); }
static lk_tensor *gc_mean(lk_ctx *ctx, lk_tensor **in, int n, void *ud) { return lk_mean(ctx, in[0]); }
static lk_tensor *gc_mse(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return lk_mse_loss(ctx, in[0], in[1]);
}
static lk_tensor *gc_l1(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return lk_l1_loss(ctx, in[0], in[1]);
}
static lk_tensor *gc_exp(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return lk_mean(ctx, lk_mul(ctx, lk_exp(ctx, in[0]), in[1]));
}
/* mean over a transposed view, then the mean of squares through mul: exercises the chain */
static lk_tensor *gc_chain(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    lk_tensor *m = lk_mean_dim(ctx, lk_transpose(ctx, in[0], 0, 2), 1, true);
    return lk_mean(ctx, lk_mul(ctx, m, m));
}

static lk_tensor *rand_param(int ndim, const int64_t *shape, uint64_t seed) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, "gc");
    if (!p) return NULL;
    lk_t_fill_uniform(p->data, (size_t)lk_numel(p), -1.0f, 1.0f, seed);
    lk_set_requires_grad(p, true);
    return p;
}

static void gradchecks(void) {
    lk_tensor *x = rand_param(LK_DIMS(3, 4, 5), 5);
    for (int d = -1; d < 3; d++)
        for (int m = 0; m < 2; m++) {
            dim_ud u = {d, m == 0, m == 1};
            char what[64];
            snprintf(what, sizeof what, "%s_dim(%d, keep=%d)", m ? "mean" : "sum", d, m == 0);
            lk_t_gradcheck(what, gc_dim, &u, &x, 1, 8, 1e-2f, 1e-3f);
        }
    lk_t_gradcheck("sum", gc_sum, NULL, &x, 1, 8, 1e-2f, 1e-3f);
    lk_t_gradcheck("mean", gc_mean, NULL, &x, 1, 8, 1e-2f, 1e-3f);
    lk_t_gradcheck("mean_dim(transpose) then mean(m*m)", gc_chain, NULL, &x, 1, 8, 1e-2f, 1e-3f);
    lk_tensor *in[2] = {x, rand_param(LK_DIMS(3, 4, 5), 6)};
    lk_t_gradcheck("mse_loss", gc_mse, NULL, in, 2, 10, 1e-2f, 1e-3f);
    lk_t_gradcheck("l1_loss", gc_l1, NULL, in, 2, 10, 1e-3f, 1e-3f);
    lk_t_gradcheck("exp", gc_exp, NULL, in, 2, 10, 1e-2f, 1e-3f);
    lk_param_free(in[1]);
    lk_param_free(x);
}

/* kernel-level: a 1-D sum with a value exactly representable only in double accumulation */
static void kernel_checks(void) {
    enum { N = 100003 };
    float *v = malloc(sizeof(float) * N);
    if (!v) {
        CHECK(v != NULL);
        return;
    }
    for (int i = 0; i < N; i++) v[i] = (i % 2) ? 1e-4f : 1.0f;
    double s = lk_sum_f32(v, N);
    double want = 50002.0 + 50001.0 * (double)1e-4f;
    CHECK(s > want - 1e-6 && s < want + 1e-6);
    float y[3];
    lk_sum_dim_forward(y, v, 3, 0, 1); /* empty reduced dim -> zeros */
    CHECK(y[0] == 0.0f && y[1] == 0.0f && y[2] == 0.0f);
    free(v);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("reduce");
    REQUIRE(st != NULL);
    run_dim(st, "d0", 0, false, false, 3);
    run_dim(st, "d1", 1, true, false, 4);
    run_dim(st, "d2", 2, false, true, 3);
    run_dim(st, "d3", -1, true, true, 4);
    run_dim(st, "tok", 1, false, false, 2);
    run_dim(st, "chan", -1, true, true, 3);
    run_dim(st, "img", 1, false, true, 3);
    run_dim(st, "one", 1, false, false, 2);
    run_dim(st, "vec", 0, true, true, 1);
    run_total(st, "sum", false);
    run_total(st, "mean", true);
    run_total(st, "sum_odd", false);
    run_total(st, "mean_odd", true);
    run_mse(st, "mse");
    run_mse(st, "mse_odd");
    run_l1_exp(st);
    gradchecks();
    kernel_checks();

    lk_ctx *ctx = lk_ctx_new();
    REQUIRE(ctx != NULL);
    lk_tensor *a = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 3));
    CHECK(lk_sum_dim(ctx, a, 2, false) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID);
    lk_ctx_reset(ctx);
    a = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 3));
    lk_tensor *b = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(3, 2));
    CHECK(lk_mse_loss(ctx, a, b) == NULL);
    CHECK(strstr(lk_last_error(), "[2,3]") && strstr(lk_last_error(), "[3,2]"));
    printf("mse mismatch message: %s\n", lk_last_error());
    lk_ctx_free(ctx);
    lk_safetensors_close(st);
    return lk_t_done();
}
