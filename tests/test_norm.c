/* test_norm.c: GroupNorm (plain and fused with SiLU) and LayerNorm against PyTorch
 * (tests/ref/norm.py): SD-1.5 shapes with eps 1e-5 and 1e-6, odd shapes (3 channels with G=3 and
 * G=1, 1x1 images, batch 3, spatial rank 0 and 1, no affine, 7-element and 1-element rows),
 * forward and the gradients of x, w, b; finite differences through the ops; failure cases. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tolerances. y, dx: per element a handful of roundings plus the group statistics (mean/rstd
 * computed in different orders: relative ~1e-6), so 1e-5 absolute on O(1) values. dw, db: sums
 * over up to B*HW = 8192 products per channel, accumulated in f32 by torch: 2e-4 absolute. */
#define Y_ATOL 1e-5f
#define Y_RTOL 1e-4f
#define W_ATOL 2e-4f
#define W_RTOL 1e-4f

typedef struct gn_case {
    const char *name;
    int ndim;
    int64_t shape[4];
    int G;
    float eps;
    bool silu, affine;
    float r;
    float y_atol, dx_atol; /* 0: Y_ATOL */
} gn_case;

/* must match GN in tests/ref/norm.py */
static const gn_case GN[] = {
    {"sd320", 4, {1, 320, 64, 64}, 32, 1e-5f, false, true, 2.0f, 0.0f, 0.0f},
    {"sd320_e6_silu", 4, {1, 320, 64, 64}, 32, 1e-6f, true, true, 2.0f, 0.0f, 0.0f},
    {"sd320_e6", 4, {1, 320, 64, 64}, 32, 1e-6f, false, true, 2.0f, 0.0f, 0.0f},
    {"sd640", 4, {1, 640, 32, 32}, 32, 1e-6f, false, true, 2.0f, 0.0f, 0.0f},
    {"sd640_silu", 4, {1, 640, 32, 32}, 32, 1e-5f, true, true, 2.0f, 0.0f, 0.0f},
    {"sd1280", 4, {1, 1280, 16, 16}, 32, 1e-5f, false, true, 2.0f, 0.0f, 0.0f},
    {"sd1280_e6_silu", 4, {1, 1280, 16, 16}, 32, 1e-6f, true, true, 2.0f, 0.0f, 0.0f},
    {"sd320b2_silu", 4, {2, 320, 64, 64}, 32, 1e-5f, true, true, 2.0f, 0.0f, 0.0f},
    {"sd320b2_e6", 4, {2, 320, 64, 64}, 32, 1e-6f, false, true, 2.0f, 0.0f, 0.0f},
    {"c3_g3_1x1", 4, {1, 3, 1, 1}, 3, 1e-5f, false, true, 2.0f, 0.0f, 0.0f},
    {"c3_g1_b3", 4, {3, 3, 5, 7}, 1, 1e-5f, true, true, 2.0f, 0.0f, 0.0f},
    {"c6_g3_rank1", 3, {3, 6, 7}, 3, 1e-5f, false, true, 2.0f, 0.0f, 0.0f},
    {"c4_g2_rank0", 2, {2, 4}, 2, 1e-5f, true, true, 2.0f, 0.0f, 0.0f},
    {"noaffine", 4, {2, 6, 3, 3}, 2, 1e-5f, false, false, 2.0f, 0.0f, 0.0f},
    {"noaffine_silu", 4, {2, 6, 3, 3}, 3, 1e-5f, true, false, 2.0f, 0.0f, 0.0f},
    /* Ill-conditioned, compared with a float64 reference. 2-element groups: dx is the small
     * difference of terms of size rstd*w*dy (up to ~200 here), f32 rounding of those gives
     * ~2e-5. std 6e-4 around a mean of ~3: the mean is saved in f32 (kernel API), its rounding
     * (ulp(3)/2 = 1.2e-7) times rstd*w (~470) bounds y at ~6e-5 and dx (values up to 480) at
     * ~1e-3. torch's own f32 result is off from float64 by 1.4e-4 (y), 1.7e-3 (dx) here. */
    {"img1x1_g32_silu", 4, {3, 64, 1, 1}, 32, 1e-6f, true, true, 2.0f, 0.0f, 5e-5f},
    {"tinyvar", 4, {1, 32, 8, 8}, 32, 1e-5f, false, true, 1e-3f, 1e-4f, 1e-3f},
};

typedef struct ln_case {
    const char *name;
    int ndim;
    int64_t shape[3];
    float eps;
    bool affine;
} ln_case;

/* must match LN in tests/ref/norm.py */
static const ln_case LN[] = {
    {"sd320", 3, {1, 4096, 320}, 1e-5f, true}, {"sd768", 3, {1, 77, 768}, 1e-5f, true},
    {"odd7", 2, {3, 7}, 1e-5f, true},          {"row1", 2, {1, 7}, 1e-6f, true},
    {"c1", 2, {5, 1}, 1e-5f, true},            {"noaffine", 3, {2, 3, 7}, 1e-5f, false},
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

static void run_gn(const lk_safetensors *st, int i) {
    const gn_case *c = &GN[i];
    uint64_t seed = 1000 + 10 * (uint64_t)i;
    int64_t C = c->shape[1], n = 1;
    for (int d = 0; d < c->ndim; d++) n *= c->shape[d];
    int64_t hw = n / (c->shape[0] * C);
    lk_tensor *x = uniform_param(c->ndim, c->shape, -c->r, c->r, seed, "x");
    lk_tensor *w = c->affine ? uniform_param(LK_DIMS(C), 0.5f, 1.5f, seed + 2, "w") : NULL;
    lk_tensor *b = c->affine ? uniform_param(LK_DIMS(C), -0.5f, 0.5f, seed + 3, "b") : NULL;
    float *off = malloc(sizeof(float) * (size_t)C);
    float *dy = malloc(sizeof(float) * (size_t)n);
    lk_t_fill_uniform(off, (size_t)C, -3.0f, 3.0f, seed + 1);
    lk_t_fill_uniform(dy, (size_t)n, -1.0f, 1.0f, seed + 4);
    float *xd = x->data;
    for (int64_t k = 0; k < n; k++) xd[k] += off[(k / hw) % C];
    char prefix[96];
    snprintf(prefix, sizeof prefix, "gn.%s", c->name);
    lk_ctx *ctx = lk_ctx_new();
    double t0 = lk_t_now();
    lk_tensor *y = c->silu ? lk_groupnorm_silu(ctx, x, w, b, c->G, c->eps)
                           : lk_groupnorm(ctx, x, w, b, c->G, c->eps);
    double t1 = lk_t_now();
    CHECK(y != NULL);
    if (y) {
        compare(st, prefix, "y", y->data, (size_t)n, c->y_atol > 0.0f ? c->y_atol : Y_ATOL, Y_RTOL);
        double t2 = lk_t_now();
        CHECK_OK(lk_backward_from(ctx, y, dy));
        double t3 = lk_t_now();
        if (n >= 1 << 20)
            printf("     (%s: forward %.2f ms, backward %.2f ms)\n", prefix, 1e3 * (t1 - t0),
                   1e3 * (t3 - t2));
        compare(st, prefix, "dx", x->grad, (size_t)n, c->dx_atol > 0.0f ? c->dx_atol : Y_ATOL,
                Y_RTOL);
        if (c->affine) {
            compare(st, prefix, "dw", w->grad, (size_t)C, W_ATOL, W_RTOL);
            compare(st, prefix, "db", b->grad, (size_t)C, W_ATOL, W_RTOL);
        }
    }
    lk_ctx_free(ctx);
    free(off);
    free(dy);
    lk_param_free(x);
    lk_param_free(w);
    lk_param_free(b);
}

static void run_ln(const lk_safetensors *st, int i) {
    const ln_case *c = &LN[i];
    uint64_t seed = 2000 + 10 * (uint64_t)i;
    int64_t C = c->shape[c->ndim - 1], n = 1;
    for (int d = 0; d < c->ndim; d++) n *= c->shape[d];
    lk_tensor *x = uniform_param(c->ndim, c->shape, -2.0f, 2.0f, seed, "x");
    lk_tensor *w = c->affine ? uniform_param(LK_DIMS(C), 0.5f, 1.5f, seed + 2, "w") : NULL;
    lk_tensor *b = c->affine ? uniform_param(LK_DIMS(C), -0.5f, 0.5f, seed + 3, "b") : NULL;
    float *xd = x->data;
    for (int64_t k = 0; k < n; k++) xd[k] += 1.5f;
    float *dy = malloc(sizeof(float) * (size_t)n);
    lk_t_fill_uniform(dy, (size_t)n, -1.0f, 1.0f, seed + 4);
    char prefix[96];
    snprintf(prefix, sizeof prefix, "ln.%s", c->name);
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *y = lk_layernorm(ctx, x, w, b, c->eps);
    CHECK(y != NULL);
    if (y) {
        compare(st, prefix, "y", y->data, (size_t)n, Y_ATOL, Y_RTOL);
        CHECK_OK(lk_backward_from(ctx, y, dy));
        compare(st, prefix, "dx", x->grad, (size_t)n, Y_ATOL, Y_RTOL);
        if (c->affine) {
            compare(st, prefix, "dw", w->grad, (size_t)C, W_ATOL, W_RTOL);
            compare(st, prefix, "db", b->grad, (size_t)C, W_ATOL, W_RTOL);
        }
    }
    lk_ctx_free(ctx);
    free(dy);
    lk_param_free(x);
    lk_param_free(w);
    lk_param_free(b);
}

/* gradcheck wrappers: in = {x, w, b}; ud = groups (int) or NULL for layernorm */
typedef struct {
    int groups, silu;
} gn_ud;
static lk_tensor *gc_gn(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    const gn_ud *u = ud;
    lk_tensor *w = n > 1 ? in[1] : NULL, *b = n > 2 ? in[2] : NULL;
    return u->silu ? lk_groupnorm_silu(ctx, in[0], w, b, u->groups, 1e-5f)
                   : lk_groupnorm(ctx, in[0], w, b, u->groups, 1e-5f);
}
static lk_tensor *gc_ln(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    (void)ud;
    return lk_layernorm(ctx, in[0], n > 1 ? in[1] : NULL, n > 2 ? in[2] : NULL, 1e-5f);
}

static void gradchecks(void) {
    gn_ud u[2] = {{2, 0}, {3, 1}};
    const char *names[2] = {"gradcheck groupnorm G=2", "gradcheck groupnorm_silu G=3"};
    for (int k = 0; k < 2; k++) {
        lk_tensor *in[3] = {uniform_param(LK_DIMS(2, 6, 2, 3), -2.0f, 2.0f, 3000 + k, "x"),
                            uniform_param(LK_DIMS(6), 0.5f, 1.5f, 3010 + k, "w"),
                            uniform_param(LK_DIMS(6), -0.5f, 0.5f, 3020 + k, "b")};
        lk_t_gradcheck(names[k], gc_gn, &u[k], in, 3, 24, 1e-2f, 1e-2f);
        for (int i = 0; i < 3; i++) lk_param_free(in[i]);
    }
    lk_tensor *x = uniform_param(LK_DIMS(1, 4, 3), -2.0f, 2.0f, 3030, "x");
    lk_t_gradcheck("gradcheck groupnorm no affine", gc_gn, &u[0], &x, 1, 12, 1e-2f, 1e-2f);
    lk_param_free(x);
    lk_tensor *in[3] = {uniform_param(LK_DIMS(3, 7), -2.0f, 2.0f, 3040, "x"),
                        uniform_param(LK_DIMS(7), 0.5f, 1.5f, 3041, "w"),
                        uniform_param(LK_DIMS(7), -0.5f, 0.5f, 3042, "b")};
    lk_t_gradcheck("gradcheck layernorm", gc_ln, NULL, in, 3, 21, 1e-2f, 1e-2f);
    for (int i = 0; i < 3; i++) lk_param_free(in[i]);
}

static void failure_cases(void) {
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 6, 2, 2));
    CHECK(lk_groupnorm(ctx, x, NULL, NULL, 4, 1e-5f) == NULL); /* 6 % 4 != 0 */
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID && strstr(lk_last_error(), "groups"));
    lk_ctx_reset(ctx);
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 6, 2, 2));
    lk_tensor *w5 = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(5));
    CHECK(lk_groupnorm(ctx, x, w5, NULL, 3, 1e-5f) == NULL);
    CHECK(strstr(lk_last_error(), "weight") != NULL);
    lk_ctx_reset(ctx);
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(6));
    CHECK(lk_groupnorm(ctx, x, NULL, NULL, 3, 1e-5f) == NULL); /* needs (B, C, ...) */
    lk_ctx_reset(ctx);
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 6));
    CHECK(lk_groupnorm(ctx, x, NULL, NULL, 0, 1e-5f) == NULL);
    lk_ctx_reset(ctx);
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 6));
    CHECK(lk_layernorm(ctx, x, NULL, NULL, -1.0f) == NULL);
    lk_ctx_reset(ctx);
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 6));
    CHECK(lk_layernorm(ctx, x, w5, NULL, 1e-5f) == NULL);
    lk_ctx_reset(ctx);
    /* a constant group normalizes to the bias (var 0, eps keeps it finite) */
    x = lk_tensor_full(ctx, 3.0f, LK_DIMS(1, 4, 3));
    lk_tensor *y = lk_groupnorm(ctx, x, NULL, NULL, 2, 1e-5f);
    CHECK(y != NULL);
    if (y) {
        float mx = 0.0f;
        for (int i = 0; i < 12; i++) mx = fmaxf(mx, fabsf(((float *)y->data)[i]));
        CHECK(mx == 0.0f);
    }
    lk_ctx_free(ctx);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("norm");
    REQUIRE(st != NULL);
    for (int i = 0; i < (int)(sizeof GN / sizeof GN[0]); i++) run_gn(st, i);
    for (int i = 0; i < (int)(sizeof LN / sizeof LN[0]); i++) run_ln(st, i);
    lk_safetensors_close(st);
    gradchecks();
    failure_cases();
    return lk_t_done();
}
