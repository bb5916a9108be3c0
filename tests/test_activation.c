/* test_activation.c: SiLU, GELU (erf / tanh), QuickGELU and GEGLU against PyTorch
 * (tests/ref/activation.py) on SD-1.5 shapes and odd ones, forward and input gradient, plus
 * finite-difference checks through the ops API and a few failure cases. */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tolerances: elementwise functions, one rounding chain per element on both sides. Torch's GELU
 * is 0.5x(1+erf(x/sqrt2)), which cancels for very negative x (absolute error ~1e-7 |x|), hence
 * the absolute term. */
#define ATOL 2e-6f
#define RTOL 1e-5f

typedef struct act_case {
    const char *name;
    int ndim;
    int64_t shape[4];
    float range;
} act_case;

/* must match SHAPES in tests/ref/activation.py */
static const act_case SHAPES[] = {
    {"sd_a", 4, {1, 1280, 16, 16}, 6.0f}, {"sd_b", 3, {1, 4096, 1280}, 8.0f},
    {"odd7", 1, {7}, 6.0f},               {"odd357", 3, {3, 5, 7}, 15.0f},
    {"one", 1, {1}, 3.0f},
};

typedef lk_tensor *(*act_fn)(lk_ctx *ctx, lk_tensor *x);
static lk_tensor *f_silu(lk_ctx *c, lk_tensor *x) { return lk_silu(c, x); }
static lk_tensor *f_gelu(lk_ctx *c, lk_tensor *x) { return lk_gelu(c, x, false); }
static lk_tensor *f_gelu_tanh(lk_ctx *c, lk_tensor *x) { return lk_gelu(c, x, true); }
static lk_tensor *f_quick(lk_ctx *c, lk_tensor *x) { return lk_quick_gelu(c, x); }
static lk_tensor *f_geglu(lk_ctx *c, lk_tensor *x) { return lk_geglu(c, x); }

static const struct {
    const char *name;
    act_fn fn;
    bool all_shapes;
} ACTS[] = {{"silu", f_silu, true},
            {"gelu", f_gelu, true},
            {"gelu_tanh", f_gelu_tanh, false},
            {"quick_gelu", f_quick, false}};

static lk_tensor *uniform_param(int ndim, const int64_t *shape, float lo, float hi, uint64_t seed,
                                const char *name) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, name);
    if (!p) return NULL;
    lk_t_fill_uniform(p->data, (size_t)lk_numel(p), lo, hi, seed);
    lk_set_requires_grad(p, true);
    return p;
}

/* run fn on x, compare y, backprop dy, compare dx with the fixture's <prefix>.y / .dx */
static void check_against(const lk_safetensors *st, const char *prefix, act_fn fn, lk_tensor *x,
                          uint64_t dy_seed) {
    char key[128];
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *y = fn(ctx, x);
    CHECK(y != NULL);
    if (!y) {
        lk_ctx_free(ctx);
        return;
    }
    size_t ny = (size_t)lk_numel(y);
    snprintf(key, sizeof key, "%s.y", prefix);
    float *want = lk_t_load(st, key, NULL);
    lk_t_close(key, y->data, want, ny, ATOL, RTOL);
    free(want);
    float *dy = malloc(sizeof(float) * ny);
    lk_t_fill_uniform(dy, ny, -1.0f, 1.0f, dy_seed);
    CHECK_OK(lk_backward_from(ctx, y, dy));
    snprintf(key, sizeof key, "%s.dx", prefix);
    want = lk_t_load(st, key, NULL);
    lk_t_close(key, x->grad, want, (size_t)lk_numel(x), ATOL, RTOL);
    free(want);
    free(dy);
    lk_ctx_free(ctx);
}

/* The fn pointer travels through the void* user data of lk_t_gradcheck. */
typedef struct {
    act_fn fn;
} fn_box;
static lk_tensor *gc_box(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    (void)n;
    return ((fn_box *)ud)->fn(ctx, in[0]);
}

static void failure_cases(void) {
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *odd = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 5));
    CHECK(lk_geglu(ctx, odd) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID);
    CHECK(strstr(lk_last_error(), "geglu") != NULL);
    /* sticky: a later op returns NULL at once */
    lk_tensor *ok = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(4));
    CHECK(lk_silu(ctx, ok) == NULL);
    lk_ctx_reset(ctx);
    CHECK(lk_silu(ctx, NULL) == NULL);
    lk_ctx_reset(ctx);
    /* strided and half inputs are accepted (made contiguous f32) */
    lk_tensor *a = lk_tensor_full(ctx, 1.0f, LK_DIMS(3, 4));
    lk_tensor *t = lk_transpose(ctx, a, 0, 1);
    lk_tensor *y = lk_silu(ctx, t);
    CHECK(y && y->shape[0] == 4 && y->shape[1] == 3);
    if (y) CHECK(fabsf(((float *)y->data)[5] - 0.7310586f) < 1e-6f);
    lk_tensor *h = lk_cast(ctx, a, LK_F16);
    y = lk_gelu(ctx, h, false);
    CHECK(y && y->dtype == LK_F32);
    if (y) CHECK(fabsf(((float *)y->data)[0] - 0.8413447f) < 1e-6f);
    lk_ctx_free(ctx);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("activation");
    REQUIRE(st != NULL);
    int nshapes = (int)(sizeof SHAPES / sizeof SHAPES[0]);
    for (int si = 0; si < nshapes; si++) {
        const act_case *c = &SHAPES[si];
        for (size_t ai = 0; ai < sizeof ACTS / sizeof ACTS[0]; ai++) {
            if (!ACTS[ai].all_shapes && !strcmp(c->name, "sd_b")) continue;
            lk_tensor *x = uniform_param(c->ndim, c->shape, -c->range, c->range,
                                         (uint64_t)(100 + si), "x");
            REQUIRE(x != NULL);
            char prefix[96];
            snprintf(prefix, sizeof prefix, "%s.%s", ACTS[ai].name, c->name);
            double t0 = lk_t_now();
            check_against(st, prefix, ACTS[ai].fn, x, (uint64_t)(200 + si));
            if (si == 1) printf("     (%s: %.1f ms incl. compare)\n", prefix, 1e3 * (lk_t_now() - t0));
            lk_param_free(x);
        }
    }
    /* GEGLU, must match GEGLU in the script */
    const struct {
        const char *name;
        int ndim;
        int64_t shape[3];
    } gg[] = {{"sd", 3, {1, 4096, 2560}}, {"odd", 3, {3, 7, 14}}, {"d1", 2, {1, 2}}};
    for (int gi = 0; gi < 3; gi++) {
        lk_tensor *x = uniform_param(gg[gi].ndim, gg[gi].shape, -5.0f, 5.0f, (uint64_t)(300 + gi), "x");
        REQUIRE(x != NULL);
        char prefix[64];
        snprintf(prefix, sizeof prefix, "geglu.%s", gg[gi].name);
        check_against(st, prefix, f_geglu, x, (uint64_t)(400 + gi));
        lk_param_free(x);
    }
    lk_safetensors_close(st);

    /* finite differences through the ops (all four are smooth, any input range works) */
    fn_box boxes[] = {{f_silu}, {f_gelu}, {f_gelu_tanh}, {f_quick}};
    const char *names[] = {"gradcheck silu", "gradcheck gelu", "gradcheck gelu_tanh",
                           "gradcheck quick_gelu"};
    for (int i = 0; i < 4; i++) {
        lk_tensor *x = uniform_param(LK_DIMS(3, 7), -4.0f, 4.0f, (uint64_t)(900 + i), "x");
        lk_t_gradcheck(names[i], gc_box, &boxes[i], &x, 1, 21, 1e-2f, 1e-2f);
        lk_param_free(x);
    }
    lk_tensor *gx = uniform_param(LK_DIMS(2, 3, 10), -3.0f, 3.0f, 950, "x");
    fn_box gbox = {f_geglu};
    lk_t_gradcheck("gradcheck geglu", gc_box, &gbox, &gx, 1, 30, 1e-2f, 1e-2f);
    lk_param_free(gx);

    failure_cases();
    return lk_t_done();
}
