/* test_concat.c: concat (channels = the UNet skip connection, last dim, dim 0, strided input)
 * and split against PyTorch (tests/ref/concat.py; forward and gradients), concat-then-split
 * round trip, finite-difference checks, and the failure cases. Copies are exact, so outputs
 * and gradients must match to the bit (tolerance 0). */
#include "harness.h"

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

static void close_key(const lk_safetensors *st, const char *key, const float *got, size_t n) {
    int64_t wn = 0;
    float *want = lk_t_load(st, key, &wn);
    if (!want || (n && !got) || (size_t)wn != n) {
        lk_t_checks++;
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: missing data or size %lld != %zu\n", key, (long long)wn, n);
    } else {
        lk_t_close(key, got, want, n, 0.0f, 0.0f);
    }
    free(want);
}

static void run_concat(const lk_safetensors *st, const char *name, int n, int dim) {
    char k[96];
    lk_tensor *xs[4] = {NULL};
    lk_ctx *ctx = lk_ctx_new();
    bool ok = ctx != NULL;
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "%s.x%d", name, i);
        xs[i] = train_param(st, k);
        ok = ok && xs[i];
    }
    CHECK(ok);
    if (ok) {
        lk_tensor *y = lk_concat(ctx, xs, n, dim);
        CHECK(y != NULL);
        if (y) {
            snprintf(k, sizeof k, "%s.out", name);
            close_key(st, k, y->data, (size_t)lk_numel(y));
            snprintf(k, sizeof k, "%s.G", name);
            float *G = lk_t_load(st, k, NULL);
            if (G) CHECK_OK(lk_backward_from(ctx, y, G));
            free(G);
            for (int i = 0; i < n; i++) {
                snprintf(k, sizeof k, "%s.dx%d", name, i);
                close_key(st, k, xs[i]->grad, (size_t)lk_numel(xs[i]));
            }
        }
    }
    lk_ctx_free(ctx);
    for (int i = 0; i < n; i++) lk_param_free(xs[i]);
}

static void run_concat_strided(const lk_safetensors *st) {
    lk_tensor *x = train_param(st, "tr.x"), *z = train_param(st, "tr.z");
    lk_ctx *ctx = lk_ctx_new();
    CHECK(x && z && ctx);
    if (x && z && ctx) {
        lk_tensor *xs[2] = {lk_transpose(ctx, x, 0, 1), z};
        lk_tensor *y = lk_concat(ctx, xs, 2, 1);
        CHECK(y != NULL);
        if (y) {
            close_key(st, "tr.out", y->data, (size_t)lk_numel(y));
            float *G = lk_t_load(st, "tr.G", NULL);
            if (G) CHECK_OK(lk_backward_from(ctx, y, G));
            free(G);
            close_key(st, "tr.dx", x->grad, 15);
            close_key(st, "tr.dz", z->grad, 6);
        }
    }
    lk_ctx_free(ctx);
    lk_param_free(x);
    lk_param_free(z);
}

/* loss = sum_k sum(part_k * G_k) through lk_mul / lk_sum / lk_add; the gradient of x is then
 * the G_k placed back where the parts came from (exact) */
static void run_split(const lk_safetensors *st, const char *name, int dim, int n,
                      const int64_t *sizes) {
    char k[96];
    snprintf(k, sizeof k, "%s.x", name);
    lk_tensor *x = train_param(st, k);
    lk_ctx *ctx = lk_ctx_new();
    CHECK(x && ctx);
    if (x && ctx) {
        lk_tensor *parts[4] = {NULL};
        CHECK_OK(lk_split(ctx, x, dim, n, sizes, parts));
        lk_tensor *loss = NULL;
        for (int i = 0; i < n && parts[0]; i++) {
            CHECK(parts[i] && parts[i]->shape[dim < 0 ? dim + x->ndim : dim] == sizes[i]);
            snprintf(k, sizeof k, "%s.out%d", name, i);
            close_key(st, k, parts[i]->data, (size_t)lk_numel(parts[i]));
            snprintf(k, sizeof k, "%s.G%d", name, i);
            lk_tensor *g = lk_t_tensor(ctx, st, k);
            lk_tensor *term = lk_sum(ctx, lk_mul(ctx, parts[i], g));
            loss = loss ? lk_add(ctx, loss, term) : term;
        }
        CHECK(loss != NULL);
        if (loss) {
            CHECK_OK(lk_backward(ctx, loss));
            snprintf(k, sizeof k, "%s.dx", name);
            close_key(st, k, x->grad, (size_t)lk_numel(x));
        }
    }
    lk_ctx_free(ctx);
    lk_param_free(x);
}

/* the skip connection round trip: cat(a, b) split back at 640 gives a and b bit-exactly, and
 * the gradient through split + concat is the identity */
static void round_trip(const lk_safetensors *st) {
    lk_tensor *a = train_param(st, "skip.x0"), *b = train_param(st, "skip.x1");
    lk_ctx *ctx = lk_ctx_new();
    CHECK(a && b && ctx);
    if (a && b && ctx) {
        lk_tensor *xs[2] = {a, b}, *parts[2];
        lk_tensor *y = lk_concat(ctx, xs, 2, 1);
        const int64_t sizes[2] = {640, 320};
        CHECK_OK(lk_split(ctx, y, 1, 2, sizes, parts));
        if (lk_ctx_status(ctx) == LK_OK) {
            CHECK(memcmp(parts[0]->data, a->data, lk_nbytes(a)) == 0);
            CHECK(memcmp(parts[1]->data, b->data, lk_nbytes(b)) == 0);
            lk_tensor *back = lk_concat(ctx, parts, 2, 1);
            size_t n = (size_t)lk_numel(y);
            float *G = malloc(sizeof(float) * n);
            if (G && back) {
                lk_t_fill_uniform(G, n, -1, 1, 9);
                CHECK_OK(lk_backward_from(ctx, back, G));
                CHECK(a->grad && memcmp(a->grad, G, lk_nbytes(a)) == 0);
                CHECK(b->grad && memcmp(b->grad, G + lk_numel(a), lk_nbytes(b)) == 0);
            }
            free(G);
        }
    }
    lk_ctx_free(ctx);
    lk_param_free(a);
    lk_param_free(b);
}

/* ---- finite differences ---- */
static lk_tensor *gc_concat(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    lk_tensor *xs[3] = {in[0], lk_transpose(ctx, in[1], 1, 2), in[2]};
    return lk_concat(ctx, xs, 3, *(const int *)ud);
}
static lk_tensor *gc_split(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    lk_tensor *p[3];
    const int64_t sizes[3] = {1, 3, 1};
    if (lk_split(ctx, in[0], -1, 3, sizes, p) != LK_OK) return NULL;
    /* mix the parts so that every one carries gradient */
    return lk_add(ctx, lk_mul(ctx, p[0], p[1]), lk_mul(ctx, p[2], p[2]));
}

static lk_tensor *rand_param(int ndim, const int64_t *shape, uint64_t seed) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, "gc");
    if (!p) return NULL;
    lk_t_fill_uniform(p->data, (size_t)lk_numel(p), -1.0f, 1.0f, seed);
    lk_set_requires_grad(p, true);
    return p;
}

static void gradchecks(void) {
    int dim = 0;
    lk_tensor *in[3] = {rand_param(LK_DIMS(2, 3, 4), 1), rand_param(LK_DIMS(1, 4, 3), 2),
                        rand_param(LK_DIMS(3, 3, 4), 3)};
    lk_t_gradcheck("concat dim 0 (with a transposed input)", gc_concat, &dim, in, 3, 10, 1e-2f, 1e-3f);
    lk_param_free(in[0]);
    lk_param_free(in[1]);
    lk_param_free(in[2]);
    lk_tensor *x = rand_param(LK_DIMS(2, 3, 5), 4);
    lk_t_gradcheck("split last dim [1,3,1]", gc_split, NULL, &x, 1, 12, 1e-2f, 1e-3f);
    lk_param_free(x);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("concat");
    REQUIRE(st != NULL);
    run_concat(st, "skip", 2, 1);
    run_concat(st, "last", 3, -1);
    run_concat(st, "first", 2, 0);
    run_concat(st, "img1", 2, 1);
    run_concat(st, "tok", 2, 1);
    run_concat_strided(st);
    run_split(st, "s_skip", 1, 2, (const int64_t[]){640, 320});
    run_split(st, "s_last", -1, 3, (const int64_t[]){300, 1, 467});
    run_split(st, "s_first", 0, 3, (const int64_t[]){1, 0, 2});
    round_trip(st);
    gradchecks();

    lk_ctx *ctx = lk_ctx_new();
    REQUIRE(ctx != NULL);
    lk_tensor *xs[2] = {lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 3, 4)),
                        lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 5, 4))};
    CHECK(lk_concat(ctx, xs, 2, 0) == NULL); /* dim 1 differs */
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID);
    printf("concat mismatch message: %s\n", lk_last_error());
    CHECK(strstr(lk_last_error(), "[2,5,4]") != NULL);
    lk_ctx_reset(ctx);
    lk_tensor *x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 6));
    lk_tensor *parts[2] = {x, x};
    CHECK(lk_split(ctx, x, 1, 2, (const int64_t[]){2, 3}, parts) == LK_ERR_INVALID);
    CHECK(parts[0] == NULL && parts[1] == NULL);
    printf("split sizes message: %s\n", lk_last_error());
    lk_ctx_reset(ctx);
    x = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2, 6));
    CHECK(lk_concat(ctx, &x, 1, 2) == NULL); /* dim out of range */
    lk_ctx_free(ctx);
    lk_safetensors_close(st);
    return lk_t_done();
}
