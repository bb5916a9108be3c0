/* test_resample.c: nearest 2x upsampling and average pooling (no padding, overlapping and
 * gapped windows) against PyTorch (tests/ref/resample.py), forward and input gradient, on SD-1.5
 * shapes and odd ones; finite differences through the ops; failure cases. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

/* Tolerances: each output is a copy (upsample) or a sum of k*k <= 9 terms in possibly another
 * order than torch (pooling, backward of both): a few ulp of values <= 4. */
#define ATOL 1e-6f
#define RTOL 1e-6f

typedef struct rs_case {
    const char *name;
    int64_t shape[4];
    int k, s;
} rs_case;

/* must match UP and POOL in tests/ref/resample.py */
static const rs_case UP[] = {{"sd1280", {1, 1280, 8, 8}, 0, 0}, {"sd640", {1, 640, 32, 32}, 0, 0},
                             {"c3_1x1", {3, 3, 1, 1}, 0, 0},    {"odd", {2, 3, 5, 7}, 0, 0},
                             {"w17", {1, 1, 1, 17}, 0, 0},      {"w37", {1, 2, 3, 37}, 0, 0}};
static const rs_case POOL[] = {
    {"sd4", {1, 4, 64, 64}, 2, 2},       {"odd_floor", {3, 3, 5, 7}, 2, 2},
    {"k3s2_overlap", {2, 3, 7, 9}, 3, 2}, {"k4_to1x1", {1, 2, 4, 4}, 4, 4},
    {"k1", {1, 1, 5, 5}, 1, 1},          {"k2s1_overlap", {1, 2, 6, 6}, 2, 1},
    {"k2s3_gaps", {1, 2, 8, 8}, 2, 3},   {"wide", {2, 3, 33, 70}, 2, 2}};

static lk_tensor *uniform_param(int ndim, const int64_t *shape, float lo, float hi, uint64_t seed,
                                const char *name) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, name);
    if (!p) return NULL;
    lk_t_fill_uniform(p->data, (size_t)lk_numel(p), lo, hi, seed);
    lk_set_requires_grad(p, true);
    return p;
}

static void compare(const lk_safetensors *st, const char *prefix, const char *what,
                    const float *got, size_t n) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", prefix, what);
    float *want = lk_t_load(st, key, NULL);
    lk_t_close(key, got, want, n, ATOL, RTOL);
    free(want);
}

/* pool: k > 0; upsample: k == 0 */
static void run(const lk_safetensors *st, const char *kind, const rs_case *c, uint64_t seed) {
    char prefix[96];
    snprintf(prefix, sizeof prefix, "%s.%s", kind, c->name);
    lk_tensor *x = uniform_param(4, c->shape, -1.0f, 1.0f, seed, "x");
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *y = c->k ? lk_avgpool2d(ctx, x, c->k, c->s) : lk_upsample_nearest2x(ctx, x);
    CHECK(y != NULL);
    if (y) {
        size_t ny = (size_t)lk_numel(y);
        compare(st, prefix, "y", y->data, ny);
        float *dy = malloc(sizeof(float) * ny);
        lk_t_fill_uniform(dy, ny, -1.0f, 1.0f, seed + 1);
        CHECK_OK(lk_backward_from(ctx, y, dy));
        free(dy);
        compare(st, prefix, "dx", x->grad, (size_t)lk_numel(x));
    }
    lk_ctx_free(ctx);
    lk_param_free(x);
}

static lk_tensor *gc_up(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    (void)n;
    (void)ud;
    return lk_upsample_nearest2x(ctx, in[0]);
}
static lk_tensor *gc_pool(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    (void)n;
    const int *ks = ud;
    return lk_avgpool2d(ctx, in[0], ks[0], ks[1]);
}

static void failure_cases(void) {
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *x3 = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 4, 4));
    CHECK(lk_upsample_nearest2x(ctx, x3) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID && strstr(lk_last_error(), "(B, C, H, W)"));
    lk_ctx_reset(ctx);
    lk_tensor *x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 1, 3, 5));
    CHECK(lk_avgpool2d(ctx, x, 4, 1) == NULL); /* window larger than H */
    CHECK(strstr(lk_last_error(), "smaller") != NULL);
    lk_ctx_reset(ctx);
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 1, 3, 5));
    CHECK(lk_avgpool2d(ctx, x, 2, 0) == NULL);
    lk_ctx_reset(ctx);
    /* a strided input (channels-last view) is accepted */
    lk_tensor *nhwc = lk_tensor_full(ctx, 2.0f, LK_DIMS(1, 3, 3, 2));
    lk_tensor *v = lk_permute(ctx, nhwc, (const int[]){0, 3, 1, 2});
    lk_tensor *y = lk_avgpool2d(ctx, v, 3, 3);
    CHECK(y && y->shape[1] == 2 && y->shape[2] == 1 && ((float *)y->data)[1] == 2.0f);
    lk_ctx_free(ctx);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("resample");
    REQUIRE(st != NULL);
    for (int i = 0; i < (int)(sizeof UP / sizeof UP[0]); i++)
        run(st, "up", &UP[i], 8000 + 10 * (uint64_t)i);
    for (int i = 0; i < (int)(sizeof POOL / sizeof POOL[0]); i++)
        run(st, "pool", &POOL[i], 9000 + 10 * (uint64_t)i);
    lk_safetensors_close(st);

    lk_tensor *x = uniform_param(LK_DIMS(2, 3, 3, 5), -1.0f, 1.0f, 9900, "x");
    lk_t_gradcheck("gradcheck upsample_nearest2x", gc_up, NULL, &x, 1, 20, 1e-2f, 1e-2f);
    int ks[3][2] = {{2, 2}, {3, 2}, {2, 1}};
    const char *names[3] = {"gradcheck avgpool k2 s2", "gradcheck avgpool k3 s2",
                            "gradcheck avgpool k2 s1"};
    for (int i = 0; i < 3; i++)
        lk_t_gradcheck(names[i], gc_pool, ks[i], &x, 1, 20, 1e-2f, 1e-2f);
    lk_param_free(x);
    failure_cases();
    return lk_t_done();
}
