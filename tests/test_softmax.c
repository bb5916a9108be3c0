/* test_softmax.c: softmax over the last dim (lk_softmax, lk_softmax_forward/backward) against
 * PyTorch (tests/ref/softmax.py: out and dx, float64 reference) on Stable Diffusion attention
 * score shapes and odd ones (0-d, one element, widths 3, 17, 31, 1000, masked -inf logits,
 * logits of size 1e3); finite-difference gradient checks through the op (also on a transposed
 * view); the kernel's accumulate contract. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "kernels/kernels.h"

#include <math.h>
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

/* atol = atol_scale * max(1, max|want|), rtol */
static void close_key(const lk_safetensors *st, const char *name, const char *key,
                      const float *got, size_t n, float atol_scale, float rtol) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", name, key);
    int64_t wn = 0;
    float *want = lk_t_load(st, k, &wn);
    if (!want || !got || (size_t)wn != n) {
        lk_t_checks++;
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: missing data or size %lld != %zu\n", k, (long long)wn, n);
        free(want);
        return;
    }
    float mx = 1.0f;
    for (size_t i = 0; i < n; i++) mx = fmaxf(mx, fabsf(want[i]));
    lk_t_close(k, got, want, n, atol_scale * mx, rtol);
    free(want);
}

/* Tolerances: each output is one exp (about 1 ulp) times 1/sum, the sum accumulated in f32
 * over up to 4096 terms in two interleaved partial sums: measured relative error <= 1e-6,
 * checked at 1e-7 absolute + 1e-5 relative. dx = y (dy - <dy, y>) cancels inside the bracket,
 * so it gets 1e-6 of the scale of dy (order one) absolute. */
static void run_case(const lk_safetensors *st, const char *name) {
    char k[128];
    snprintf(k, sizeof k, "%s.x", name);
    lk_tensor *x = train_param(st, k);
    snprintf(k, sizeof k, "%s.G", name);
    float *G = lk_t_load(st, k, NULL);
    lk_ctx *ctx = lk_ctx_new();
    CHECK(x && G && ctx);
    if (x && G && ctx) {
        double t0 = lk_t_now();
        lk_tensor *y = lk_softmax(ctx, x);
        double t1 = lk_t_now();
        CHECK(y != NULL && lk_same_shape(x, y));
        if (y) {
            const size_t n = (size_t)lk_numel(y);
            close_key(st, name, "out", y->data, n, 1e-7f, 1e-5f);
            /* masked logits: exactly zero probability */
            const float *xd = x->data, *yd = y->data;
            for (size_t i = 0; i < n; i++)
                if (isinf(xd[i]) && xd[i] < 0.0f) CHECK(yd[i] == 0.0f);
            double t2 = lk_t_now();
            CHECK_OK(lk_backward_from(ctx, y, G));
            double t3 = lk_t_now();
            close_key(st, name, "dx", x->grad, n, 1e-6f, 1e-5f);
            if (n >= 500000)
                printf("     %s: forward %.2f ms, backward %.2f ms (%zu elements)\n", name,
                       1e3 * (t1 - t0), 1e3 * (t3 - t2), n);
        } else {
            fprintf(stderr, "  %s: %s\n", name, lk_last_error());
        }
    }
    free(G);
    lk_ctx_free(ctx);
    lk_param_free(x);
}

static lk_tensor *gc_softmax(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return lk_softmax(ctx, in[0]);
}
/* softmax over the last dim of a transposed (strided) view, times the input: a chain */
static lk_tensor *gc_softmax_t(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    lk_tensor *t = lk_transpose(ctx, in[0], 0, 1);
    return lk_mul(ctx, lk_softmax(ctx, t), t);
}

static lk_tensor *rand_param(int ndim, const int64_t *shape, uint64_t seed, float amp) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, "gc");
    if (!p) return NULL;
    lk_t_fill_uniform(p->data, (size_t)lk_numel(p), -amp, amp, seed);
    lk_set_requires_grad(p, true);
    return p;
}

/* step 1e-2 on logits of order one: truncation ~1e-5, rounding noise ~1e-5; tolerance 1e-3 */
static void gradchecks(void) {
    struct {
        int ndim;
        int64_t shape[3];
        float amp;
    } cs[] = {{2, {3, 5, 0}, 2.0f}, {3, {2, 1, 17}, 3.0f}, {1, {1, 0, 0}, 1.0f},
              {2, {4, 33, 0}, 4.0f}};
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        lk_tensor *in[1] = {rand_param(cs[c].ndim, cs[c].shape, 60 + c, cs[c].amp)};
        CHECK(in[0] != NULL);
        char what[64];
        snprintf(what, sizeof what, "softmax gradcheck case %zu", c);
        if (in[0]) lk_t_gradcheck(what, gc_softmax, NULL, in, 1, 12, 1e-2f, 1e-3f);
        lk_param_free(in[0]);
    }
    lk_tensor *in[1] = {rand_param(LK_DIMS(9, 4), 70, 2.0f)};
    CHECK(in[0] != NULL);
    if (in[0])
        lk_t_gradcheck("softmax gradcheck transposed view", gc_softmax_t, NULL, in, 1, 16, 1e-2f,
                       1e-3f);
    lk_param_free(in[0]);
}

/* the kernel accumulates into dx and sums of each row are 1 */
static void kernel_contract(void) {
    enum { M = 7, N = 45 };
    float x[M * N], y[M * N], dy[M * N], dx[M * N], dx0[M * N];
    lk_t_fill_uniform(x, M * N, -20.0f, 20.0f, 81);
    lk_t_fill_uniform(dy, M * N, -1.0f, 1.0f, 82);
    lk_softmax_forward(y, x, M, N);
    int rows_ok = 1;
    for (int i = 0; i < M; i++) {
        double s = 0;
        for (int j = 0; j < N; j++) s += (double)y[i * N + j];
        if (fabs(s - 1.0) > 1e-6) rows_ok = 0;
    }
    CHECK(rows_ok);
    memset(dx0, 0, sizeof dx0);
    lk_softmax_backward(dx0, dy, y, M, N);
    for (int i = 0; i < M * N; i++) dx[i] = 0.5f;
    lk_softmax_backward(dx, dy, y, M, N);
    int acc_ok = 1;
    for (int i = 0; i < M * N; i++)
        if (fabsf(dx[i] - (0.5f + dx0[i])) > 1e-6f) acc_ok = 0;
    CHECK(acc_ok);
    /* empty inputs are a no-op */
    lk_softmax_forward(y, x, 0, N);
    lk_softmax_forward(y, x, M, 0);
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *e = ctx ? lk_tensor_zeros(ctx, LK_F32, LK_DIMS(3, 0)) : NULL;
    lk_tensor *ye = e ? lk_softmax(ctx, e) : NULL;
    CHECK(ye && lk_numel(ye) == 0 && ye->ndim == 2);
    lk_ctx_free(ctx);
}

int main(void) {
    gradchecks();
    kernel_contract();
    lk_safetensors *st = lk_t_ref("softmax");
    REQUIRE(st != NULL);
    const char *cases = lk_safetensors_meta(st, "cases");
    REQUIRE(cases != NULL);
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", cases);
    int n = 0;
    for (char *save = NULL, *c = strtok_r(buf, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
        run_case(st, c);
        n++;
    }
    CHECK(n >= 10);
    lk_safetensors_close(st);
    return lk_t_done();
}
