/* lk_bench_ops.c: the engine benchmark. Times every op of likeness on Stable Diffusion 1.5
 * shapes, forward and backward, and the same op in PyTorch (bench/torch_ops.py, run in the same
 * invocation with the same thread count), and prints a table of times, the ratio
 * likeness/PyTorch, peak extra memory of each, and GFLOP/s as a share of the machine's measured
 * single-precision peak (a tight FMA loop).
 * usage: lk_bench_ops [--threads N] [--filter SUBSTR] [--no-torch] [--json FILE] [--reps N] */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "likeness.h"
#include "kernels/kernels.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

typedef enum {
    OP_LINEAR, OP_CONV, OP_GN, OP_GN_SILU, OP_LN, OP_ACT, OP_GEGLU, OP_SOFTMAX, OP_ATTN,
    OP_UPSAMPLE, OP_AVGPOOL, OP_ADD_BCAST, OP_MUL, OP_CONCAT, OP_EMBED, OP_MSE, OP_SUM, OP_ADAMW
} op_kind;

typedef struct bcase {
    const char *name;
    op_kind op;
    int a[8];         /* op-specific integers, see make_json */
    const char *kind; /* activation name */
    double flops;     /* forward flops (0: memory-bound op) */
    double tf, tb, pf, pb, mem_l, mem_t; /* results: ms likeness/torch fwd, bwd; MB */
    bool has_torch;
} bcase;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void rss_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}
static long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    size_t kl = strlen(key);
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) v = atol(line + kl + 1);
    fclose(f);
    return v;
}

static void fill(float *x, size_t n, unsigned seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
}

static lk_tensor *param(int ndim, const int64_t *shape, unsigned seed, bool grad) {
    lk_tensor *p = lk_param_new(LK_F32, ndim, shape, "p");
    if (!p) return NULL;
    fill(p->data, (size_t)lk_numel(p), seed);
    if (grad) lk_set_requires_grad(p, true);
    return p;
}

/* Build the op's output from params in[]. */
static lk_tensor *run_op(lk_ctx *ctx, const bcase *c, lk_tensor **in, lk_rng *rng) {
    const int *a = c->a;
    switch (c->op) {
    case OP_LINEAR: return lk_linear(ctx, in[0], in[1], in[2]);
    case OP_CONV: return lk_conv2d(ctx, in[0], in[1], in[2], a[6], a[7]);
    case OP_GN: return lk_groupnorm(ctx, in[0], in[1], in[2], a[4], 1e-5f);
    case OP_GN_SILU: return lk_groupnorm_silu(ctx, in[0], in[1], in[2], a[4], 1e-5f);
    case OP_LN: return lk_layernorm(ctx, in[0], in[1], in[2], 1e-5f);
    case OP_ACT:
        if (!strcmp(c->kind, "silu")) return lk_silu(ctx, in[0]);
        if (!strcmp(c->kind, "gelu")) return lk_gelu(ctx, in[0], false);
        if (!strcmp(c->kind, "gelu_tanh")) return lk_gelu(ctx, in[0], true);
        return lk_quick_gelu(ctx, in[0]);
    case OP_GEGLU: return lk_geglu(ctx, in[0]);
    case OP_SOFTMAX: return lk_softmax(ctx, in[0]);
    case OP_ATTN: return lk_attention(ctx, in[0], in[1], in[2], a[3], 0.0f);
    case OP_UPSAMPLE: return lk_upsample_nearest2x(ctx, in[0]);
    case OP_AVGPOOL: return lk_avgpool2d(ctx, in[0], 2, 2);
    case OP_ADD_BCAST:
    case OP_MUL: return c->op == OP_MUL ? lk_mul(ctx, in[0], in[1]) : lk_add(ctx, in[0], in[1]);
    case OP_CONCAT: return lk_concat(ctx, in, 2, 1);
    case OP_EMBED: return lk_embedding(ctx, in[0], in[1]);
    case OP_MSE: return lk_mse_loss(ctx, in[0], in[1]);
    case OP_SUM: return lk_sum(ctx, in[0]);
    case OP_ADAMW: return NULL;
    }
    (void)rng;
    return NULL;
}

/* Make inputs; returns count. */
static int make_inputs(const bcase *c, lk_tensor **in, lk_ctx *ctx) {
    const int *a = c->a;
    switch (c->op) {
    case OP_LINEAR:
        in[0] = param(LK_DIMS(a[0], a[1]), 1, true);
        in[1] = param(LK_DIMS(a[2], a[1]), 2, true);
        in[2] = param(LK_DIMS(a[2]), 3, true);
        return 3;
    case OP_CONV:
        in[0] = param(LK_DIMS(a[0], a[1], a[2], a[3]), 1, true);
        in[1] = param(LK_DIMS(a[4], a[1], a[5], a[5]), 2, true);
        in[2] = param(LK_DIMS(a[4]), 3, true);
        return 3;
    case OP_GN:
    case OP_GN_SILU:
        in[0] = param(LK_DIMS(a[0], a[1], a[2], a[3]), 1, true);
        in[1] = param(LK_DIMS(a[1]), 2, true);
        in[2] = param(LK_DIMS(a[1]), 3, true);
        return 3;
    case OP_LN:
        in[0] = param(LK_DIMS(a[0], a[1]), 1, true);
        in[1] = param(LK_DIMS(a[1]), 2, true);
        in[2] = param(LK_DIMS(a[1]), 3, true);
        return 3;
    case OP_ACT:
    case OP_SUM: in[0] = param(LK_DIMS(a[0]), 1, true); return 1;
    case OP_MUL:
    case OP_MSE:
        in[0] = param(LK_DIMS(a[0]), 1, true);
        in[1] = param(LK_DIMS(a[0]), 2, c->op == OP_MUL);
        return 2;
    case OP_GEGLU: in[0] = param(LK_DIMS(a[0], 2 * a[1]), 1, true); return 1;
    case OP_SOFTMAX: in[0] = param(LK_DIMS(a[0], a[1]), 1, true); return 1;
    case OP_ATTN:
        in[0] = param(LK_DIMS(a[0], a[1], a[3] * a[4]), 1, true);
        in[1] = param(LK_DIMS(a[0], a[2], a[3] * a[4]), 2, true);
        in[2] = param(LK_DIMS(a[0], a[2], a[3] * a[4]), 3, true);
        return 3;
    case OP_UPSAMPLE:
    case OP_AVGPOOL: in[0] = param(LK_DIMS(a[0], a[1], a[2], a[3]), 1, true); return 1;
    case OP_ADD_BCAST:
        in[0] = param(LK_DIMS(a[0], a[1], a[2], a[3]), 1, true);
        in[1] = param(LK_DIMS(a[0], a[1], 1, 1), 2, true);
        return 2;
    case OP_CONCAT:
        in[0] = param(LK_DIMS(a[0], a[1], a[3], a[4]), 1, true);
        in[1] = param(LK_DIMS(a[0], a[2], a[3], a[4]), 2, true);
        return 2;
    case OP_EMBED: {
        in[0] = param(LK_DIMS(a[0], a[1]), 1, true);
        lk_tensor *ids = lk_param_new(LK_I64, LK_DIMS(a[2]), "ids");
        int64_t *d = ids->data;
        for (int i = 0; i < a[2]; i++) d[i] = (int64_t)((i * 7919) % a[0]);
        in[1] = ids;
        return 2;
    }
    case OP_ADAMW: in[0] = param(LK_DIMS(a[0]), 1, true); return 1;
    }
    (void)ctx;
    return 0;
}

static void make_json(const bcase *c, char *buf, size_t n, int reps) {
    const int *a = c->a;
    switch (c->op) {
    case OP_LINEAR: snprintf(buf, n, "{\"op\":\"linear\",\"M\":%d,\"K\":%d,\"N\":%d", a[0], a[1], a[2]); break;
    case OP_CONV:
        snprintf(buf, n, "{\"op\":\"conv2d\",\"B\":%d,\"Cin\":%d,\"H\":%d,\"W\":%d,\"Cout\":%d,\"k\":%d,\"s\":%d,\"p\":%d",
                 a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
        break;
    case OP_GN:
    case OP_GN_SILU:
        snprintf(buf, n, "{\"op\":\"%s\",\"B\":%d,\"C\":%d,\"H\":%d,\"W\":%d,\"G\":%d",
                 c->op == OP_GN ? "groupnorm" : "groupnorm_silu", a[0], a[1], a[2], a[3], a[4]);
        break;
    case OP_LN: snprintf(buf, n, "{\"op\":\"layernorm\",\"N\":%d,\"C\":%d", a[0], a[1]); break;
    case OP_ACT: snprintf(buf, n, "{\"op\":\"act\",\"kind\":\"%s\",\"n\":%d", c->kind, a[0]); break;
    case OP_GEGLU: snprintf(buf, n, "{\"op\":\"geglu\",\"M\":%d,\"D\":%d", a[0], a[1]); break;
    case OP_SOFTMAX: snprintf(buf, n, "{\"op\":\"softmax\",\"M\":%d,\"N\":%d", a[0], a[1]); break;
    case OP_ATTN:
        snprintf(buf, n, "{\"op\":\"attention\",\"B\":%d,\"Nq\":%d,\"Nk\":%d,\"H\":%d,\"D\":%d", a[0], a[1], a[2], a[3], a[4]);
        break;
    case OP_UPSAMPLE:
    case OP_AVGPOOL:
    case OP_ADD_BCAST:
        snprintf(buf, n, "{\"op\":\"%s\",\"B\":%d,\"C\":%d,\"H\":%d,\"W\":%d",
                 c->op == OP_UPSAMPLE ? "upsample" : c->op == OP_AVGPOOL ? "avgpool" : "add_bcast", a[0], a[1], a[2], a[3]);
        break;
    case OP_MUL: snprintf(buf, n, "{\"op\":\"mul\",\"n\":%d", a[0]); break;
    case OP_CONCAT:
        snprintf(buf, n, "{\"op\":\"concat\",\"B\":%d,\"C1\":%d,\"C2\":%d,\"H\":%d,\"W\":%d", a[0], a[1], a[2], a[3], a[4]);
        break;
    case OP_EMBED: snprintf(buf, n, "{\"op\":\"embedding\",\"V\":%d,\"D\":%d,\"n\":%d", a[0], a[1], a[2]); break;
    case OP_MSE: snprintf(buf, n, "{\"op\":\"mse\",\"n\":%d", a[0]); break;
    case OP_SUM: snprintf(buf, n, "{\"op\":\"sum\",\"n\":%d", a[0]); break;
    case OP_ADAMW: snprintf(buf, n, "{\"op\":\"adamw\",\"n\":%d", a[0]); break;
    }
    size_t l = strlen(buf);
    snprintf(buf + l, n - l, ",\"name\":\"%s\",\"reps\":%d}", c->name, reps);
}

static int cmp_d(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* times in ms (median of reps after one warm-up), peak extra MB */
static int bench_one(bcase *c, int reps) {
    lk_tensor *in[4] = {0};
    lk_ctx *ctx = lk_ctx_new();
    rss_reset();
    long base = status_kb("VmRSS");
    int n = make_inputs(c, in, ctx);
    double tf[64], tb[64];
    if (reps > 64) reps = 64;
    int ok = 1;
    if (c->op == OP_ADAMW) {
        lk_paramset *ps = lk_paramset_new();
        lk_paramset_add(ps, in[0]);
        lk_paramset_finalize(ps);
        fill(in[0]->grad, (size_t)lk_numel(in[0]), 9);
        lk_adamw *o = lk_adamw_new(ps, lk_adamw_defaults());
        ok = o != NULL;
        for (int r = 0; ok && r <= reps; r++) {
            double t0 = now();
            ok = lk_adamw_step(o, 1e-3f) == LK_OK;
            if (r) tf[r - 1] = 1e3 * (now() - t0);
        }
        c->tb = -1;
        lk_adamw_free(o);
        lk_paramset_free(ps);
    } else {
        for (int r = 0; ok && r <= reps; r++) {
            lk_ctx_reset(ctx);
            double t0 = now();
            lk_tensor *y = run_op(ctx, c, in, NULL);
            double t1 = now();
            if (!y) {
                ok = 0;
                break;
            }
            float *dy = malloc(sizeof(float) * (size_t)lk_numel(y));
            fill(dy, (size_t)lk_numel(y), 5);
            double t2 = now();
            if (lk_backward_from(ctx, y, dy) != LK_OK) ok = 0;
            double t3 = now();
            free(dy);
            if (r) {
                tf[r - 1] = 1e3 * (t1 - t0);
                tb[r - 1] = 1e3 * (t3 - t2);
            }
        }
        if (ok) {
            qsort(tb, (size_t)reps, sizeof(double), cmp_d);
            c->tb = tb[reps / 2];
        }
    }
    if (ok) {
        qsort(tf, (size_t)reps, sizeof(double), cmp_d);
        c->tf = tf[reps / 2];
    } else {
        fprintf(stderr, "bench %s failed: %s\n", c->name, lk_last_error());
    }
    lk_ctx_free(ctx);
    c->mem_l = (double)(status_kb("VmHWM") - base) / 1024.0;
    for (int i = 0; i < n; i++) lk_param_free(in[i]);
    return ok;
}

/* Single-precision peak: each thread runs independent FMA chains on registers. */
static double fma_peak_gflops(int threads) {
    const long iters = 20000000;
    double best = 0;
    for (int trial = 0; trial < 3; trial++) {
        double t0 = now();
        double sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
#if defined(__AVX512F__)
            __m512 acc[12];
            __m512 m = _mm512_set1_ps(0.999999f), ad = _mm512_set1_ps(1e-7f);
            for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps((float)i);
            for (long it = 0; it < iters / 16; it++)
                for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, ad);
            for (int i = 0; i < 12; i++) sink += (double)_mm512_reduce_add_ps(acc[i]);
#define LANES 16
#elif defined(__AVX2__)
            __m256 acc[12];
            __m256 m = _mm256_set1_ps(0.999999f), ad = _mm256_set1_ps(1e-7f);
            for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
            for (long it = 0; it < iters / 16; it++)
                for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, ad);
            float tmp[8];
            for (int i = 0; i < 12; i++) {
                _mm256_storeu_ps(tmp, acc[i]);
                for (int j = 0; j < 8; j++) sink += (double)tmp[j];
            }
#define LANES 8
#else
            float acc[12];
            for (int i = 0; i < 12; i++) acc[i] = (float)i;
            for (long it = 0; it < iters / 16; it++)
                for (int i = 0; i < 12; i++) acc[i] = acc[i] * 0.999999f + 1e-7f;
            for (int i = 0; i < 12; i++) sink += (double)acc[i];
#define LANES 1
#endif
        }
        double dt = now() - t0;
        double g = (double)threads * (double)(iters / 16) * 12.0 * LANES * 2.0 / dt / 1e9;
        if (sink == 12345.678) g += 0; /* keep sink alive */
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    lk_reexec_with_tuned_env(argc, argv, "active");
    int threads = 2, reps = 5, use_torch = 1;
    const char *filter = NULL, *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--no-torch")) use_torch = 0;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--filter SUBSTR] [--reps N] [--json FILE] [--no-torch]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || reps < 1) {
        fprintf(stderr, "lk_bench_ops: --threads and --reps must be >= 1\n");
        return 2;
    }
    lk_set_num_threads(threads);
    /* SD-1.5 shapes (batch 1, 512x512 image -> 64x64 latent) */
    bcase cases[] = {
        {.name = "linear 4096x320->320", .op = OP_LINEAR, .a = {4096, 320, 320}, .kind = 0, .flops = 2.0 * 4096 * 320 * 320},
        {.name = "linear 4096x320->2560 (geglu proj)", .op = OP_LINEAR, .a = {4096, 320, 2560}, .kind = 0, .flops = 2.0 * 4096 * 320 * 2560},
        {.name = "linear 4096x1280->320 (ff out)", .op = OP_LINEAR, .a = {4096, 1280, 320}, .kind = 0, .flops = 2.0 * 4096 * 1280 * 320},
        {.name = "linear 77x768->320 (cross k/v)", .op = OP_LINEAR, .a = {77, 768, 320}, .kind = 0, .flops = 2.0 * 77 * 768 * 320},
        {.name = "conv3x3 320->320 @64x64", .op = OP_CONV, .a = {1, 320, 64, 64, 320, 3, 1, 1}, .kind = 0, .flops = 2.0 * 320 * 320 * 9 * 64 * 64},
        {.name = "conv3x3 640->640 @32x32", .op = OP_CONV, .a = {1, 640, 32, 32, 640, 3, 1, 1}, .kind = 0, .flops = 2.0 * 640 * 640 * 9 * 32 * 32},
        {.name = "conv3x3 1280->1280 @16x16", .op = OP_CONV, .a = {1, 1280, 16, 16, 1280, 3, 1, 1}, .kind = 0, .flops = 2.0 * 1280 * 1280 * 9 * 16 * 16},
        {.name = "conv3x3 s2 320 @64x64", .op = OP_CONV, .a = {1, 320, 64, 64, 320, 3, 2, 1}, .kind = 0, .flops = 2.0 * 320 * 320 * 9 * 32 * 32},
        {.name = "conv1x1 640->320 @32x32", .op = OP_CONV, .a = {1, 640, 32, 32, 320, 1, 1, 0}, .kind = 0, .flops = 2.0 * 640 * 320 * 32 * 32},
        {.name = "conv3x3 4->320 @64x64 (conv_in)", .op = OP_CONV, .a = {1, 4, 64, 64, 320, 3, 1, 1}, .kind = 0, .flops = 2.0 * 4 * 320 * 9 * 64 * 64},
        {.name = "groupnorm 320 @64x64", .op = OP_GN, .a = {1, 320, 64, 64, 32}, .kind = 0, .flops = 0},
        {.name = "groupnorm+silu 320 @64x64", .op = OP_GN_SILU, .a = {1, 320, 64, 64, 32}, .kind = 0, .flops = 0},
        {.name = "groupnorm+silu 1280 @16x16", .op = OP_GN_SILU, .a = {1, 1280, 16, 16, 32}, .kind = 0, .flops = 0},
        {.name = "layernorm 4096x320", .op = OP_LN, .a = {4096, 320}, .kind = 0, .flops = 0},
        {.name = "silu 320x64x64", .op = OP_ACT, .a = {320 * 64 * 64}, .kind = "silu", .flops = 0},
        {.name = "gelu 4096x1280", .op = OP_ACT, .a = {4096 * 1280}, .kind = "gelu", .flops = 0},
        {.name = "gelu_tanh 4096x1280", .op = OP_ACT, .a = {4096 * 1280}, .kind = "gelu_tanh", .flops = 0},
        {.name = "quick_gelu 77x3072", .op = OP_ACT, .a = {77 * 3072}, .kind = "quick_gelu", .flops = 0},
        {.name = "geglu 4096x(2x1280)", .op = OP_GEGLU, .a = {4096, 1280}, .kind = 0, .flops = 0},
        {.name = "softmax 32768x77", .op = OP_SOFTMAX, .a = {8 * 4096, 77}, .kind = 0, .flops = 0},
        {.name = "attention self 4096 8x40", .op = OP_ATTN, .a = {1, 4096, 4096, 8, 40}, .kind = 0, .flops = 4.0 * 8 * 4096.0 * 4096 * 40},
        {.name = "attention cross 4096x77 8x40", .op = OP_ATTN, .a = {1, 4096, 77, 8, 40}, .kind = 0, .flops = 4.0 * 8 * 4096.0 * 77 * 40},
        {.name = "attention self 1024 8x80", .op = OP_ATTN, .a = {1, 1024, 1024, 8, 80}, .kind = 0, .flops = 4.0 * 8 * 1024.0 * 1024 * 80},
        {.name = "attention self 4096 5x64 (SD2)", .op = OP_ATTN, .a = {1, 4096, 4096, 5, 64}, .kind = 0, .flops = 4.0 * 5 * 4096.0 * 4096 * 64},
        {.name = "upsample2x 1280 @16x16", .op = OP_UPSAMPLE, .a = {1, 1280, 16, 16}, .kind = 0, .flops = 0},
        {.name = "avgpool2 4 @64x64", .op = OP_AVGPOOL, .a = {1, 4, 64, 64}, .kind = 0, .flops = 0},
        {.name = "add (1,320,64,64)+(1,320,1,1)", .op = OP_ADD_BCAST, .a = {1, 320, 64, 64}, .kind = 0, .flops = 0},
        {.name = "mul 1310720", .op = OP_MUL, .a = {1310720}, .kind = 0, .flops = 0},
        {.name = "concat 640+320 @32x32", .op = OP_CONCAT, .a = {1, 640, 320, 32, 32}, .kind = 0, .flops = 0},
        {.name = "embedding 49408x768, 77 ids", .op = OP_EMBED, .a = {49408, 768, 77}, .kind = 0, .flops = 0},
        {.name = "mse 2x4x64x64", .op = OP_MSE, .a = {2 * 4 * 64 * 64}, .kind = 0, .flops = 0},
        {.name = "sum 1310720", .op = OP_SUM, .a = {1310720}, .kind = 0, .flops = 0},
        {.name = "adamw step 10M params", .op = OP_ADAMW, .a = {10000000}, .kind = 0, .flops = 0},
    };
    int nc = (int)(sizeof cases / sizeof cases[0]);

    double peak = fma_peak_gflops(threads);
    printf("likeness %s engine benchmark, %d threads; measured FP32 FMA peak %.1f GFLOP/s; "
           "OpenBLAS kernels: %s (PyTorch runs with the same OPENBLAS_CORETYPE)\n",
           lk_version(), threads, peak, lk_blas_corename());

    for (int i = 0; i < nc; i++) {
        if (filter && !strstr(cases[i].name, filter)) continue;
        bench_one(&cases[i], reps);
        fprintf(stderr, "  likeness: %-36s fwd %8.3f ms  bwd %8.3f ms\n", cases[i].name, cases[i].tf, cases[i].tb);
    }
    if (use_torch) {
        char cmd[4096];
        char path[] = "/tmp/lk_bench_XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0) {
            perror("mkstemp");
            return 1;
        }
        FILE *f = fdopen(fd, "w");
        for (int i = 0; i < nc; i++) {
            if (filter && !strstr(cases[i].name, filter)) continue;
            char js[512];
            make_json(&cases[i], js, sizeof js, reps);
            fprintf(f, "%s\n", js);
        }
        fclose(f);
        /* torch_ops.py lives in the source tree's bench/ (the build bakes its path in) */
        const char *dir = getenv("LK_BENCH_DIR");
        if (!dir) dir = LK_SOURCE_DIR "/bench";
        snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=%d /usr/bin/python3 %s/torch_ops.py %d < %s", threads, dir,
                 threads, path);
        FILE *p = popen(cmd, "r");
        char line[1024];
        while (p && fgets(line, sizeof line, p)) {
            char name[256];
            double fm, bm, pm;
            char *np = strstr(line, "\"name\": \"");
            if (!np) continue;
            np += 9;
            char *e = strchr(np, '"');
            if (!e) continue;
            size_t ln = (size_t)(e - np) < sizeof name - 1 ? (size_t)(e - np) : sizeof name - 1;
            memcpy(name, np, ln);
            name[ln] = 0;
            char *q;
            if (!(q = strstr(line, "\"fwd_ms\": "))) continue;
            fm = atof(q + 10);
            if (!(q = strstr(line, "\"bwd_ms\": "))) continue;
            bm = atof(q + 10);
            if (!(q = strstr(line, "\"peak_mb\": "))) continue;
            pm = atof(q + 11);
            for (int i = 0; i < nc; i++)
                if (!strcmp(cases[i].name, name)) {
                    cases[i].pf = fm;
                    cases[i].pb = bm;
                    cases[i].mem_t = pm;
                    cases[i].has_torch = true;
                }
        }
        if (p) pclose(p);
        unlink(path);
    }
    printf("\n%-36s %9s %9s %6s | %9s %9s %6s | %8s %8s | %7s %6s\n", "op (SD-1.5 shape)", "fwd ms", "torch",
           "ratio", "bwd ms", "torch", "ratio", "mem MB", "torch", "GFLOP/s", "%peak");
    int over = 0;
    FILE *jf = json_path ? fopen(json_path, "w") : NULL;
    if (jf) fprintf(jf, "{\"threads\":%d,\"fma_peak_gflops\":%.2f,\"rows\":[\n", threads, peak);
    int first = 1;
    for (int i = 0; i < nc; i++) {
        bcase *c = &cases[i];
        if (filter && !strstr(c->name, filter)) continue;
        double rf = c->has_torch && c->pf > 0 ? c->tf / c->pf : (double)NAN;
        double rb = c->has_torch && c->pb > 0 && c->tb >= 0 ? c->tb / c->pb : (double)NAN;
        double gf = c->flops > 0 ? c->flops / (c->tf * 1e-3) / 1e9 : (double)NAN;
        if (rf > 1.0 || rb > 1.0) over++;
        printf("%-36s %9.3f %9.3f %6.2f | %9.3f %9.3f %6.2f | %8.1f %8.1f | %7.1f %5.1f%%\n", c->name, c->tf, c->pf,
               rf, c->tb, c->pb, rb, c->mem_l, c->mem_t, gf, 100.0 * gf / peak);
        if (jf) {
            fprintf(jf,
                    "%s{\"name\":\"%s\",\"fwd_ms\":%.4f,\"torch_fwd_ms\":%.4f,\"bwd_ms\":%.4f,\"torch_bwd_ms\":%.4f,"
                    "\"mem_mb\":%.2f,\"torch_mem_mb\":%.2f,\"fwd_gflops\":%.2f}",
                    first ? "" : ",\n", c->name, c->tf, c->pf, c->tb, c->pb, c->mem_l, c->mem_t,
                    isnan(gf) ? 0.0 : gf);
            first = 0;
        }
    }
    if (jf) {
        fprintf(jf, "\n]}\n");
        fclose(jf);
    }
    printf("\nratio = likeness / PyTorch time (lower is better); %d row(s) above 1.0\n"
           "GFLOP/s counts the direct algorithm's forward FLOPs (Winograd convolutions do fewer, so "
           "their share of the FMA peak can exceed 100%%); mem = peak extra resident memory of the "
           "case (inputs included)\n", over);
    return 0;
}
