/* test_elementwise.c: add / sub / mul with numpy broadcasting, scale and add_scalar against
 * PyTorch (tests/ref/elementwise.py; forward and every gradient), finite-difference gradient
 * checks through the ops, and the broadcast-mismatch failure. */
#include "harness.h"
#include "kernels/kernels.h"

#include <stdlib.h>
#include <string.h>

typedef lk_tensor *(*binfn)(lk_ctx *, lk_tensor *, lk_tensor *);
typedef struct binop_ud {
    binfn f;
} binop_ud;

static lk_tensor *train_param(const lk_safetensors *st, const char *name) {
    lk_tensor *p = lk_t_param(st, name);
    if (p && lk_set_requires_grad(p, true) != LK_OK) {
        lk_param_free(p);
        return NULL;
    }
    return p;
}

static void close_key(const lk_safetensors *st, const char *what, const char *key,
                      const float *got, size_t n, float atol, float rtol) {
    int64_t wn = 0;
    float *want = lk_t_load(st, key, &wn);
    lk_t_checks++;
    if (!want || !got || (size_t)wn != n) {
        fprintf(stderr, "FAIL %s: missing data or size %lld != %zu\n", what, (long long)wn, n);
        lk_t_failures++;
    } else {
        lk_t_checks--; /* lk_t_close counts its own check */
        lk_t_close(what, got, want, n, atol, rtol);
    }
    free(want);
}

/* One fixture case: y = f(a, b) (b = a when same), then backward with the fixture's G.
 * Forward of add/sub/mul is one rounding per element in both implementations (tolerance 1e-6
 * relative); gradients reduced over broadcast dims sum up to 8192 terms in f32 in torch, so they
 * get 1e-4 abs + 1e-4 relative. */
static void run_binary(const lk_safetensors *st, const char *name, binfn f, bool same) {
    char ka[96], kb[96], k[96];
    snprintf(ka, sizeof ka, "%s.a", name);
    snprintf(kb, sizeof kb, "%s.b", name);
    lk_tensor *a = train_param(st, ka);
    lk_tensor *b = same ? a : train_param(st, kb);
    lk_ctx *ctx = lk_ctx_new();
    CHECK(a && b && ctx);
    if (!a || !b || !ctx) goto done;
    lk_tensor *y = f(ctx, a, b);
    CHECK(y != NULL);
    if (!y) {
        fprintf(stderr, "  %s: %s\n", name, lk_last_error());
        goto done;
    }
    size_t n = (size_t)lk_numel(y);
    snprintf(k, sizeof k, "%s.out", name);
    close_key(st, k, k, y->data, n, 1e-6f, 1e-6f);
    snprintf(k, sizeof k, "%s.G", name);
    float *G = lk_t_load(st, k, NULL);
    if (G) CHECK_OK(lk_backward_from(ctx, y, G));
    free(G);
    snprintf(k, sizeof k, "%s.da", name);
    close_key(st, k, k, a->grad, (size_t)lk_numel(a), 1e-4f, 1e-4f);
    if (!same) {
        snprintf(k, sizeof k, "%s.db", name);
        close_key(st, k, k, b->grad, (size_t)lk_numel(b), 1e-4f, 1e-4f);
    }
done:
    lk_ctx_free(ctx);
    lk_param_free(a);
    if (!same) lk_param_free(b);
}

static void run_transposed(const lk_safetensors *st) {
    lk_tensor *x = train_param(st, "mul_t.x"), *z = train_param(st, "mul_t.z");
    lk_ctx *ctx = lk_ctx_new();
    CHECK(x && z && ctx);
    if (x && z && ctx) {
        lk_tensor *xt = lk_transpose(ctx, x, 0, 1);
        CHECK(xt && !lk_is_contiguous(xt));
        lk_tensor *y = lk_mul(ctx, xt, z);
        CHECK(y != NULL);
        if (y) {
            close_key(st, "mul_t.out", "mul_t.out", y->data, (size_t)lk_numel(y), 1e-6f, 1e-6f);
            float *G = lk_t_load(st, "mul_t.G", NULL);
            if (G) CHECK_OK(lk_backward_from(ctx, y, G));
            free(G);
            close_key(st, "mul_t.dx", "mul_t.dx", x->grad, 15, 1e-6f, 1e-5f);
            close_key(st, "mul_t.dz", "mul_t.dz", z->grad, 15, 1e-6f, 1e-5f);
        }
    }
    lk_ctx_free(ctx);
    lk_param_free(x);
    lk_param_free(z);
}

static void run_scalar(const lk_safetensors *st, const char *name, bool scale) {
    char k[96];
    snprintf(k, sizeof k, "%s.x", name);
    lk_tensor *x = train_param(st, k);
    lk_ctx *ctx = lk_ctx_new();
    CHECK(x && ctx);
    if (x && ctx) {
        lk_tensor *y = scale ? lk_scale(ctx, x, 0.37f) : lk_add_scalar(ctx, x, 1.5f);
        CHECK(y != NULL);
        if (y) {
            size_t n = (size_t)lk_numel(y);
            snprintf(k, sizeof k, "%s.out", name);
            close_key(st, k, k, y->data, n, 1e-6f, 1e-6f);
            snprintf(k, sizeof k, "%s.G", name);
            float *G = lk_t_load(st, k, NULL);
            if (G) CHECK_OK(lk_backward_from(ctx, y, G));
            free(G);
            snprintf(k, sizeof k, "%s.dx", name);
            close_key(st, k, k, x->grad, n, 1e-6f, 1e-6f);
        }
    }
    lk_ctx_free(ctx);
    lk_param_free(x);
}

/* ---- finite differences through the ops ---- */
static lk_tensor *gc_binary(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return ((binop_ud *)ud)->f(ctx, in[0], in[1]);
}
static lk_tensor *gc_scale(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return lk_scale(ctx, in[0], -1.7f);
}
static lk_tensor *gc_add_scalar(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return lk_add_scalar(ctx, in[0], 0.25f);
}
/* a product of a transposed view with a broadcast operand, then a sum of two products */
static lk_tensor *gc_chain(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    lk_tensor *t = lk_mul(ctx, lk_transpose(ctx, in[0], 0, 1), in[1]);
    return lk_sub(ctx, lk_add(ctx, t, in[1]), lk_mul(ctx, t, t));
}

static lk_tensor *rand_param(int ndim, const int64_t *shape, uint64_t seed) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, "gc");
    if (!p) return NULL;
    lk_t_fill_uniform(p->data, (size_t)lk_numel(p), -1.0f, 1.0f, seed);
    lk_set_requires_grad(p, true);
    return p;
}

static void gradchecks(void) {
    binop_ud ops[3] = {{lk_add}, {lk_sub}, {lk_mul}};
    const char *names[3] = {"add (3,1,5)x(1,4,1)", "sub (3,1,5)x(1,4,1)", "mul (3,1,5)x(1,4,1)"};
    for (int i = 0; i < 3; i++) {
        lk_tensor *in[2] = {rand_param(LK_DIMS(3, 1, 5), 11 + (uint64_t)i),
                            rand_param(LK_DIMS(1, 4, 1), 21 + (uint64_t)i)};
        lk_t_gradcheck(names[i], gc_binary, &ops[i], in, 2, 12, 1e-2f, 1e-3f);
        lk_param_free(in[0]);
        lk_param_free(in[1]);
    }
    {
        lk_tensor *in[2] = {rand_param(LK_DIMS(2, 3, 1, 1), 31), rand_param(0, NULL, 32)};
        lk_t_gradcheck("mul (2,3,1,1)x()", gc_binary, &ops[2], in, 2, 6, 1e-2f, 1e-3f);
        lk_param_free(in[0]);
        lk_param_free(in[1]);
    }
    {
        lk_tensor *in[1] = {rand_param(LK_DIMS(3, 17), 41)};
        lk_t_gradcheck("scale", gc_scale, NULL, in, 1, 8, 1e-2f, 1e-3f);
        lk_t_gradcheck("add_scalar", gc_add_scalar, NULL, in, 1, 8, 1e-2f, 1e-3f);
        lk_param_free(in[0]);
    }
    {
        lk_tensor *in[2] = {rand_param(LK_DIMS(5, 3), 51), rand_param(LK_DIMS(3, 1), 52)};
        lk_t_gradcheck("transpose*b + b - (..)^2", gc_chain, NULL, in, 2, 10, 1e-2f, 2e-3f);
        lk_param_free(in[0]);
        lk_param_free(in[1]);
    }
}

/* direct kernel checks on sizes around the vector width, against a scalar loop */
static void kernel_checks(void) {
    for (int64_t n = 1; n <= 40; n += 13) {
        int64_t shape[2] = {3, n};
        float a[3 * 40], b[40], y[3 * 40], da[3 * 40] = {0}, db[40] = {0}, dy[3 * 40];
        lk_t_fill_uniform(a, (size_t)(3 * n), -1, 1, 1);
        lk_t_fill_uniform(b, (size_t)n, -1, 1, 2);
        lk_t_fill_uniform(dy, (size_t)(3 * n), -1, 1, 3);
        const int64_t as[2] = {n, 1}, bs[2] = {0, 1};
        lk_binary_forward(LK_BIN_MUL, y, a, as, b, bs, 2, shape);
        lk_binary_backward(LK_BIN_MUL, da, db, dy, a, as, b, bs, 2, shape);
        int bad = 0;
        for (int64_t i = 0; i < 3; i++)
            for (int64_t j = 0; j < n; j++) {
                if (y[i * n + j] != a[i * n + j] * b[j]) bad++;
                if (da[i * n + j] != dy[i * n + j] * b[j]) bad++;
            }
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t i = 0; i < 3; i++) s += (double)dy[i * n + j] * (double)a[i * n + j];
            if (db[j] != (float)s) bad++;
        }
        CHECK(bad == 0);
    }
}

/* kernel-level: chunked reductions (few outputs, many terms), a full reduction, and tiled
 * transposed copies, against plain loops */
static void kernel_checks_large(void) {
    enum { R = 301, M = 5, N = 251 };
    const int64_t shape[3] = {R, M, N};
    const int64_t as[3] = {0, 1, 0}, bs[3] = {N, 0, 1}, zs[3] = {0, 0, 0};
    float *a = malloc(sizeof(float) * M), *b = malloc(sizeof(float) * R * N);
    float *dy = malloc(sizeof(float) * R * M * N), *db = calloc((size_t)R * N, sizeof(float));
    float *wb = malloc(sizeof(float) * R * N);
    float da[M] = {0}, ds = 0.0f;
    if (!a || !b || !dy || !db || !wb) {
        CHECK(!"out of memory");
        goto done;
    }
    lk_t_fill_uniform(a, M, -1, 1, 4);
    lk_t_fill_uniform(b, (size_t)R * N, -1, 1, 5);
    lk_t_fill_uniform(dy, (size_t)R * M * N, -1, 1, 6);
    lk_binary_backward(LK_BIN_MUL, da, db, dy, a, as, b, bs, 3, shape);
    float wa[M];
    for (int m = 0; m < M; m++) {
        double s = 0;
        for (int r = 0; r < R; r++)
            for (int n = 0; n < N; n++) s += (double)dy[((size_t)r * M + m) * N + n] * (double)b[r * N + n];
        wa[m] = (float)s;
    }
    for (int r = 0; r < R; r++)
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int m = 0; m < M; m++) s += (double)dy[((size_t)r * M + m) * N + n] * (double)a[m];
            wb[r * N + n] = (float)s;
        }
    lk_t_close("kernel: chunked inner-reduced grad (5 outputs)", da, wa, M, 1e-5f, 1e-6f);
    lk_t_close("kernel: middle-reduced grad", db, wb, (size_t)R * N, 1e-6f, 1e-6f);
    /* b2 (1, M, N) broadcast over a full x (R, M, N): the gradient of b2 reduces the outer dim
     * with products (the vectorized kept-inner path, two column blocks) */
    {
        const int64_t xs[3] = {M * N, N, 1}, b2s[3] = {0, N, 1};
        float *x = malloc(sizeof(float) * R * M * N), *db2 = calloc(M * N, sizeof(float));
        float *w2 = malloc(sizeof(float) * M * N);
        if (x && db2 && w2) {
            lk_t_fill_uniform(x, (size_t)R * M * N, -1, 1, 7);
            lk_binary_backward(LK_BIN_MUL, NULL, db2, dy, x, xs, b, b2s, 3, shape);
            for (int mn = 0; mn < M * N; mn++) {
                double s = 0;
                for (int r = 0; r < R; r++)
                    s += (double)dy[(size_t)r * M * N + (size_t)mn] * (double)x[(size_t)r * M * N + (size_t)mn];
                w2[mn] = (float)s;
            }
            lk_t_close("kernel: outer-reduced grad with products", db2, w2, M * N, 1e-6f, 1e-6f);
        } else {
            CHECK(!"out of memory");
        }
        free(x);
        free(db2);
        free(w2);
    }
    /* a 0-D operand: everything reduces into one value */
    const float one = 1.0f;
    lk_binary_backward(LK_BIN_MUL, &ds, NULL, dy, &ds, zs, &one, zs, 3, shape);
    double tot = 0;
    for (size_t i = 0; i < (size_t)R * M * N; i++) tot += (double)dy[i];
    float wt = (float)tot;
    lk_t_close("kernel: full reduction grad", &ds, &wt, 1, 1e-4f, 1e-6f);
    /* tiled transposes: (3, 37, 45) viewed as (3, 45, 37), copied and accumulated back */
    {
        enum { B3 = 3, P = 37, Q = 45 };
        const int64_t tsh[3] = {B3, Q, P}, tst[3] = {P * Q, 1, Q};
        float *dst = malloc(sizeof(float) * B3 * P * Q), *acc = calloc(B3 * P * Q, sizeof(float));
        int bad = 0;
        if (dst && acc) {
            lk_copy_strided(dst, b, 3, tsh, tst);
            for (int i = 0; i < B3; i++)
                for (int q = 0; q < Q; q++)
                    for (int p = 0; p < P; p++)
                        bad += dst[(i * Q + q) * P + p] != b[(i * P + p) * Q + q];
            lk_add_strided(acc, tst, dst, 3, tsh);
            bad += memcmp(acc, b, sizeof(float) * B3 * P * Q) != 0;
        }
        CHECK(dst && acc && bad == 0);
        free(dst);
        free(acc);
    }
done:
    free(a);
    free(b);
    free(dy);
    free(db);
    free(wb);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("elementwise");
    REQUIRE(st != NULL);
    run_binary(st, "add_temb", lk_add, false);
    run_binary(st, "add_bias", lk_add, false);
    run_binary(st, "mul_both", lk_mul, false);
    run_binary(st, "sub_both", lk_sub, false);
    run_binary(st, "sub_same", lk_sub, false);
    run_binary(st, "mul_chan", lk_mul, false);
    run_binary(st, "mul_img1", lk_mul, false);
    run_binary(st, "add_rank", lk_add, false);
    run_binary(st, "mul_scalar0d", lk_mul, false);
    run_binary(st, "sub_lead", lk_sub, false);
    run_binary(st, "mul_self", lk_mul, true);
    run_transposed(st);
    run_scalar(st, "scale", true);
    run_scalar(st, "adds", false);
    gradchecks();
    kernel_checks();
    kernel_checks_large();

    /* failures: shapes that cannot broadcast name both shapes; integer inputs are refused */
    lk_ctx *ctx = lk_ctx_new();
    REQUIRE(ctx != NULL);
    lk_tensor *a = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 3));
    lk_tensor *b = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(4));
    CHECK(lk_add(ctx, a, b) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID);
    CHECK(strstr(lk_last_error(), "[2,3]") && strstr(lk_last_error(), "[4]"));
    printf("mismatch message: %s\n", lk_last_error());
    CHECK(lk_mul(ctx, a, a) == NULL); /* sticky */
    lk_ctx_reset(ctx);
    a = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 3));
    lk_tensor *ids = lk_tensor_zeros(ctx, LK_I64, LK_DIMS(2, 3));
    CHECK(lk_add(ctx, a, ids) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_UNSUPPORTED);
    lk_ctx_free(ctx);
    lk_safetensors_close(st);
    return lk_t_done();
}
