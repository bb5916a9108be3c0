/* test_conv2d.c: lk_conv2d against PyTorch (tests/ref/conv2d.py, float64 reference): the SD-1.5
 * shapes (3x3 at 64/32/16 px, conv_in, stride-2 downsample, 1x1 projection) and odd ones (1x1
 * images, 5x5 / 2x2 / 4x4 kernels, stride 2 on odd sizes, padding 0..3, channel counts off the
 * vector width, batch 2-3, F16/BF16 weights, images large enough to be split into bands, for
 * the Winograd stride-1 and stride-2 paths too); forward and every gradient. Plus finite
 * differences through the op (Winograd and im2col paths), a strided input, batch chunking
 * checked against one image at a time, and the failure cases. */
#include "harness.h"
#include "kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tolerance: |got - want| <= ATOL_REL * max|want| + RTOL * |want| per tensor. Outputs and
 * gradients are sums of up to 11520 (Cin*9) or 4096 (positions) products; torch's own float32
 * result is off the float64 reference by up to ~4e-7 * max|want| on these cases (printed by the
 * reference script) and ours by a similar amount (Winograd F(2x2,3x3) included), so 1e-5 of the
 * largest magnitude leaves a 20x margin while any indexing error (O(1) relative) fails. */
#define ATOL_REL 1e-5f
#define RTOL 1e-4f
/* weight gradients above this many elements are stored for their first DW_ROWS output channels
 * (conv2d.py) */
#define DW_BIG (1 << 22)
#define DW_ROWS 160

typedef struct conv_case {
    const char *name;
    int B, Cin, H, W, Cout, k, stride, pad;
    bool bias;
    lk_dtype wdt;
} conv_case;

/* must match CASES in tests/ref/conv2d.py */
static const conv_case CASES[] = {
    {"sd320", 1, 320, 64, 64, 320, 3, 1, 1, true, LK_F32},
    {"sd640", 1, 640, 32, 32, 640, 3, 1, 1, true, LK_F32},
    {"sd1280", 1, 1280, 16, 16, 1280, 3, 1, 1, true, LK_F32},
    {"conv_in", 1, 4, 64, 64, 320, 3, 1, 1, true, LK_F32},
    {"down320", 1, 320, 64, 64, 320, 3, 2, 1, true, LK_F32},
    {"proj1x1", 1, 640, 32, 32, 320, 1, 1, 0, true, LK_F32},
    {"img1x1", 3, 3, 1, 1, 5, 3, 1, 1, true, LK_F32},
    {"k5", 2, 4, 7, 9, 6, 5, 1, 2, true, LK_F32},
    {"s2p0", 2, 5, 9, 7, 6, 3, 2, 0, true, LK_F32},
    {"s2p1", 2, 5, 9, 7, 6, 3, 2, 1, true, LK_F32},
    {"k1s2", 2, 7, 9, 7, 5, 1, 2, 0, false, LK_F32},
    {"k2", 1, 6, 8, 9, 4, 2, 1, 0, true, LK_F32},
    {"k4s2", 1, 17, 11, 13, 19, 4, 2, 1, true, LK_F32},
    {"wino_odd", 3, 33, 13, 11, 17, 3, 1, 1, true, LK_F32},
    {"wino_p0", 1, 16, 6, 5, 40, 3, 1, 0, false, LK_F32},
    {"wino_p2", 2, 24, 5, 6, 16, 3, 1, 2, true, LK_F32},
    {"wino_p3", 1, 16, 4, 7, 18, 3, 1, 3, true, LK_F32},
    {"wino_1x1img", 2, 20, 1, 1, 24, 3, 1, 1, true, LK_F32},
    {"wino_bands", 1, 16, 256, 256, 16, 3, 1, 1, true, LK_F32},
    {"wino_s2_odd", 2, 17, 9, 11, 19, 3, 2, 1, true, LK_F32},
    {"wino_s2_p0", 1, 16, 8, 7, 24, 3, 2, 0, false, LK_F32},
    {"wino_s2_bands", 1, 16, 320, 320, 16, 3, 2, 1, true, LK_F32},
    {"f16_wino_s2", 1, 20, 6, 5, 16, 3, 2, 1, true, LK_F16},
    {"f16_wino", 2, 20, 9, 11, 24, 3, 1, 1, true, LK_F16},
    {"bf16_wino", 1, 17, 10, 7, 19, 3, 1, 1, true, LK_BF16},
    {"f16_s2", 1, 9, 8, 8, 7, 3, 2, 1, true, LK_F16},
    {"bf16_1x1", 2, 12, 5, 6, 10, 1, 1, 0, false, LK_BF16},
};

static lk_tensor *uniform_param(int ndim, const int64_t *shape, float lo, float hi, uint64_t seed,
                                const char *name) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, name);
    if (!p) return NULL;
    lk_t_fill_uniform(p->data, (size_t)lk_numel(p), lo, hi, seed);
    lk_set_requires_grad(p, true);
    return p;
}

static float max_abs(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

/* compare got with the fixture's <case>.<what> (its first n elements) */
static void compare(const lk_safetensors *st, const char *name, const char *what,
                    const float *got, size_t n) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", name, what);
    int64_t have = 0;
    float *want = lk_t_load(st, key, &have);
    if (want && (size_t)have < n) {
        fprintf(stderr, "FAIL %s: fixture has %lld elements, need %zu\n", key, (long long)have, n);
        lk_t_failures++;
    } else if (want) {
        lk_t_close(key, got, want, n, ATOL_REL * max_abs(want, n), RTOL);
    }
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

static void run_case(const lk_safetensors *st, int i) {
    const conv_case *c = &CASES[i];
    uint64_t seed = 9000 + 10 * (uint64_t)i;
    int OH = (c->H + 2 * c->pad - c->k) / c->stride + 1;
    int OW = (c->W + 2 * c->pad - c->k) / c->stride + 1;
    lk_tensor *x = uniform_param(LK_DIMS(c->B, c->Cin, c->H, c->W), -1.0f, 1.0f, seed, "x");
    float lim = 1.0f / sqrtf((float)(c->Cin * c->k * c->k));
    lk_tensor *w;
    if (c->wdt == LK_F32) {
        w = uniform_param(LK_DIMS(c->Cout, c->Cin, c->k, c->k), -lim, lim, seed + 1, "w");
    } else {
        char key[128];
        snprintf(key, sizeof key, "%s.w", c->name);
        w = half_param(st, key);
        CHECK(w && w->dtype == c->wdt);
    }
    lk_tensor *b = c->bias ? uniform_param(LK_DIMS(c->Cout), -0.5f, 0.5f, seed + 2, "b") : NULL;
    size_t ny = (size_t)c->B * c->Cout * OH * OW;
    float *dy = malloc(sizeof(float) * ny);
    lk_t_fill_uniform(dy, ny, -1.0f, 1.0f, seed + 3);
    lk_ctx *ctx = lk_ctx_new();
    double t0 = lk_t_now();
    lk_tensor *y = w ? lk_conv2d(ctx, x, w, b, c->stride, c->pad) : NULL;
    double t1 = lk_t_now();
    CHECK(y != NULL);
    if (y) {
        CHECK(y->ndim == 4 && y->shape[0] == c->B && y->shape[1] == c->Cout &&
              y->shape[2] == OH && y->shape[3] == OW);
        compare(st, c->name, "y", y->data, ny);
        double t2 = lk_t_now();
        CHECK_OK(lk_backward_from(ctx, y, dy));
        double t3 = lk_t_now();
        if ((int64_t)c->Cin * c->Cout >= 4 * 320)
            printf("     (%s: forward %.2f ms, backward %.2f ms)\n", c->name, 1e3 * (t1 - t0),
                   1e3 * (t3 - t2));
        compare(st, c->name, "dx", x->grad, (size_t)lk_numel(x));
        if (c->wdt == LK_F32) {
            size_t nw = (size_t)lk_numel(w);
            if (nw > DW_BIG) nw = (size_t)DW_ROWS * (nw / (size_t)c->Cout);
            compare(st, c->name, "dw", w->grad, nw);
        } else {
            CHECK(w->grad == NULL);
        }
        if (b) compare(st, c->name, "db", b->grad, (size_t)c->Cout);
    }
    lk_ctx_free(ctx);
    free(dy);
    lk_param_free(x);
    lk_param_free(w);
    lk_param_free(b);
}

/* ---- finite differences through the op ---- */

typedef struct gc_args {
    int stride, pad;
} gc_args;

static lk_tensor *gc_conv(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    const gc_args *a = ud;
    return lk_conv2d(ctx, in[0], in[1], n > 2 ? in[2] : NULL, a->stride, a->pad);
}

static void gradcheck(const char *what, int B, int Cin, int H, int W, int Cout, int k, int stride,
                      int pad, int nin, uint64_t seed) {
    float lim = 1.0f / sqrtf((float)(Cin * k * k));
    lk_tensor *in[3] = {uniform_param(LK_DIMS(B, Cin, H, W), -1.0f, 1.0f, seed, "x"),
                        uniform_param(LK_DIMS(Cout, Cin, k, k), -lim, lim, seed + 1, "w"),
                        uniform_param(LK_DIMS(Cout), -0.5f, 0.5f, seed + 2, "b")};
    gc_args a = {stride, pad};
    lk_t_gradcheck(what, gc_conv, &a, in, nin, 24, 1e-2f, 1e-2f);
    for (int i = 0; i < 3; i++) lk_param_free(in[i]);
}

static void gradchecks(void) {
    gradcheck("gradcheck conv 3x3 im2col", 2, 3, 5, 6, 4, 3, 1, 1, 3, 7100);
    gradcheck("gradcheck conv 3x3 winograd", 1, 16, 5, 6, 17, 3, 1, 1, 3, 7110);
    gradcheck("gradcheck conv 3x3 winograd pad 0, no bias", 2, 16, 6, 5, 16, 3, 1, 0, 2, 7120);
    gradcheck("gradcheck conv 3x3 stride 2", 1, 4, 7, 6, 5, 3, 2, 1, 3, 7130);
    gradcheck("gradcheck conv 3x3 stride 2 winograd", 1, 16, 7, 6, 16, 3, 2, 1, 3, 7135);
    gradcheck("gradcheck conv 1x1", 2, 5, 3, 4, 6, 1, 1, 0, 3, 7140);
    gradcheck("gradcheck conv 5x5 pad 2", 1, 2, 6, 5, 3, 5, 1, 2, 3, 7150);
}

/* ---- a strided (non-contiguous) input gives the same result as its contiguous copy ---- */
static void strided_input(void) {
    lk_tensor *xt = uniform_param(LK_DIMS(1, 16, 9, 7), -1.0f, 1.0f, 7200, "xt"); /* (B,C,W,H) */
    lk_tensor *w = uniform_param(LK_DIMS(18, 16, 3, 3), -0.1f, 0.1f, 7201, "w");
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *xv = lk_transpose(ctx, xt, 2, 3);
    lk_tensor *xc = lk_tensor_new(ctx, LK_F32, LK_DIMS(1, 16, 7, 9));
    CHECK(xv && xc);
    if (!xv || !xc) {
        lk_ctx_free(ctx);
        lk_param_free(xt);
        lk_param_free(w);
        return;
    }
    for (int64_t i = 0; i < lk_numel(xc); i++) ((float *)xc->data)[i] = lk_get_f32(xv, i);
    lk_tensor *y1 = lk_conv2d(ctx, xv, w, NULL, 1, 1);
    lk_tensor *y2 = lk_conv2d(ctx, xc, w, NULL, 1, 1);
    CHECK(y1 && y2);
    if (y1 && y2)
        lk_t_close("strided input == contiguous copy", y1->data, y2->data,
                   (size_t)lk_numel(y1), 0.0f, 0.0f);
    if (y1) {
        size_t n = (size_t)lk_numel(y1);
        float *dy = malloc(sizeof(float) * n);
        lk_t_fill_uniform(dy, n, -1.0f, 1.0f, 7202);
        CHECK_OK(lk_backward_from(ctx, y1, dy));
        CHECK(xt->grad != NULL && w->grad != NULL);
        free(dy);
    }
    lk_ctx_free(ctx);
    lk_param_free(xt);
    lk_param_free(w);
}

/* ---- many images (several Winograd chunks) == the same images one at a time ---- */
static void batch_chunks(void) {
    const int B = 600, C = 64, K = 48, H = 4, W = 5;
    lk_conv2d_desc d = {B, C, H, W, K, 3, 3, 1, 1, 0, 0};
    CHECK_OK(lk_conv2d_desc_init(&d));
    lk_conv2d_desc d1 = d;
    d1.B = 1;
    CHECK_OK(lk_conv2d_desc_init(&d1));
    size_t nx = (size_t)B * C * H * W, nw = (size_t)K * C * 9, ny = (size_t)B * K * H * W;
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw);
    float *bias = malloc(sizeof(float) * K), *dy = malloc(sizeof(float) * ny);
    float *y = malloc(sizeof(float) * ny), *y1 = malloc(sizeof(float) * ny);
    float *dx = calloc(nx, sizeof(float)), *dx1 = calloc(nx, sizeof(float));
    float *dw = calloc(nw, sizeof(float)), *dw1 = calloc(nw, sizeof(float));
    lk_t_fill_uniform(x, nx, -1.0f, 1.0f, 7300);
    lk_t_fill_uniform(w, nw, -0.05f, 0.05f, 7301);
    lk_t_fill_uniform(bias, (size_t)K, -0.5f, 0.5f, 7302);
    lk_t_fill_uniform(dy, ny, -1.0f, 1.0f, 7303);
    CHECK_OK(lk_conv2d_forward(y, x, w, LK_F32, bias, &d));
    CHECK_OK(lk_conv2d_backward(dx, dw, NULL, dy, x, w, LK_F32, &d));
    size_t sx = (size_t)C * H * W, sy = (size_t)K * H * W;
    for (int b = 0; b < B; b++) {
        CHECK_OK(lk_conv2d_forward(y1 + b * sy, x + b * sx, w, LK_F32, bias, &d1));
        CHECK_OK(lk_conv2d_backward(dx1 + b * sx, dw1, NULL, dy + b * sy, x + b * sx, w, LK_F32,
                                    &d1));
    }
    lk_t_close("batch of 600 == one image at a time: y", y, y1, ny, 0.0f, 0.0f);
    lk_t_close("batch of 600 == one image at a time: dx", dx, dx1, nx, 0.0f, 0.0f);
    /* dw sums the images in another order: rounding only */
    lk_t_close("batch of 600 == one image at a time: dw", dw, dw1, nw,
               1e-5f * max_abs(dw1, nw), 1e-4f);
    free(x), free(w), free(bias), free(dy), free(y), free(y1);
    free(dx), free(dx1), free(dw), free(dw1);
}

/* ---- accumulation: backward adds into existing gradients ---- */
static void accumulates(void) {
    lk_conv2d_desc d = {2, 16, 6, 5, 20, 3, 3, 1, 1, 0, 0};
    CHECK_OK(lk_conv2d_desc_init(&d));
    size_t nx = 2 * 16 * 30, nw = 20 * 16 * 9, ny = 2 * 20 * 30;
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw);
    float *dy = malloc(sizeof(float) * ny);
    float *g1[3] = {calloc(nx, 4), calloc(nw, 4), calloc(20, 4)};
    float *g2[3] = {calloc(nx, 4), calloc(nw, 4), calloc(20, 4)};
    lk_t_fill_uniform(x, nx, -1.0f, 1.0f, 7400);
    lk_t_fill_uniform(w, nw, -0.1f, 0.1f, 7401);
    lk_t_fill_uniform(dy, ny, -1.0f, 1.0f, 7402);
    CHECK_OK(lk_conv2d_backward(g1[0], g1[1], g1[2], dy, x, w, LK_F32, &d));
    CHECK_OK(lk_conv2d_backward(g2[0], g2[1], g2[2], dy, x, w, LK_F32, &d));
    CHECK_OK(lk_conv2d_backward(g2[0], g2[1], g2[2], dy, x, w, LK_F32, &d));
    size_t ns[3] = {nx, nw, 20};
    const char *names[3] = {"accumulate dx", "accumulate dw", "accumulate db"};
    for (int i = 0; i < 3; i++) {
        for (size_t j = 0; j < ns[i]; j++) g1[i][j] *= 2.0f;
        lk_t_close(names[i], g2[i], g1[i], ns[i], 1e-6f * max_abs(g1[i], ns[i]), 1e-6f);
        free(g1[i]);
        free(g2[i]);
    }
    free(x), free(w), free(dy);
}

/* ---- failures: NULL result, sticky ctx status, a message naming the shapes ---- */
static void expect_fail(const char *what, lk_ctx *ctx, lk_tensor *y, lk_status want,
                        const char *needle) {
    lk_t_checks++;
    const char *msg = lk_last_error();
    if (y != NULL || lk_ctx_status(ctx) != want || !strstr(msg, needle)) {
        fprintf(stderr, "FAIL %s: y=%p status=%s message '%s' (want '%s')\n", what, (void *)y,
                lk_status_str(lk_ctx_status(ctx)), msg, needle);
        lk_t_failures++;
    } else {
        printf("ok   %s: %s\n", what, msg);
    }
    lk_ctx_reset(ctx);
}

static void failures(void) {
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *w = lk_param_new(LK_F32, LK_DIMS(320, 4, 3, 3), "conv_in.weight");
    lk_tensor *wh = lk_param_new(LK_I32, LK_DIMS(8, 4, 3, 3), "int_weight");
    lk_tensor *b = lk_param_new(LK_F32, LK_DIMS(319), "conv_in.bias");
    lk_tensor *x3 = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 3, 64, 64));
    expect_fail("channel mismatch", ctx, lk_conv2d(ctx, x3, w, NULL, 1, 1), LK_ERR_INVALID,
                "weight [320,4,3,3] expects 4 input channels, x has [1,3,64,64]");
    lk_tensor *x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(4, 64, 64));
    expect_fail("3-D input", ctx, lk_conv2d(ctx, x, w, NULL, 1, 1), LK_ERR_INVALID,
                "input [4,64,64] must be 4-D");
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 4, 8, 8));
    expect_fail("bias shape", ctx, lk_conv2d(ctx, x, w, b, 1, 1), LK_ERR_INVALID,
                "bias [319], expected [320]");
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 4, 1, 2));
    expect_fail("kernel larger than input", ctx, lk_conv2d(ctx, x, w, NULL, 1, 0),
                LK_ERR_INVALID, "kernel 3x3 does not fit input [1,4,1,2] with padding 0");
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 4, 8, 8));
    expect_fail("stride 0", ctx, lk_conv2d(ctx, x, w, NULL, 0, 1), LK_ERR_INVALID,
                "stride 0 must be >= 1");
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 4, 8, 8));
    expect_fail("negative padding", ctx, lk_conv2d(ctx, x, w, NULL, 1, -1), LK_ERR_INVALID,
                "padding -1 >= 0");
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 4, 8, 8));
    expect_fail("integer weight", ctx, lk_conv2d(ctx, x, wh, NULL, 1, 1), LK_ERR_UNSUPPORTED,
                "has dtype I32");
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 4, 8, 8));
    expect_fail("NULL weight", ctx, lk_conv2d(ctx, x, NULL, NULL, 1, 1), LK_ERR_INVALID,
                "conv2d");
    /* a failure is sticky: the next op given its NULL result fails too */
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 3, 8, 8));
    lk_tensor *y = lk_conv2d(ctx, x, w, NULL, 1, 1);
    CHECK(y == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
    CHECK(lk_conv2d(ctx, y, w, NULL, 1, 1) == NULL);
    lk_ctx_reset(ctx);
    /* kernel level */
    lk_conv2d_desc d = {1, 4, 2, 2, 8, 5, 5, 1, 0, 0, 0};
    CHECK(lk_conv2d_desc_init(&d) == LK_ERR_INVALID);
    lk_conv2d_desc d0 = {0, 4, 8, 8, 8, 3, 3, 1, 1, 0, 0};
    CHECK(lk_conv2d_desc_init(&d0) == LK_ERR_INVALID);
    lk_conv2d_desc ds = {1, 4, 8, 8, 8, 3, 3, 0, 1, 0, 0};
    CHECK(lk_conv2d_desc_init(&ds) == LK_ERR_INVALID);
    lk_param_free(w);
    lk_param_free(wh);
    lk_param_free(b);
    lk_ctx_free(ctx);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("conv2d");
    REQUIRE(st != NULL);
    for (int i = 0; i < (int)(sizeof CASES / sizeof CASES[0]); i++) run_case(st, i);
    lk_safetensors_close(st);
    gradchecks();
    strided_input();
    batch_chunks();
    accumulates();
    failures();
    return lk_t_done();
}
