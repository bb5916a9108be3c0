/* harness.c: test helpers (fixtures, tolerant comparison, finite-difference gradient check). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int lk_t_checks, lk_t_failures;

/* Every test runs with the BLAS kernels the CPU deserves (see src/core/blas_env.c); glibc passes
 * argc/argv to constructors, so tests need no call in their main. */
__attribute__((constructor)) static void lk_t_blas_fixup(int argc, char **argv) {
    lk_reexec_with_tuned_env(argc, argv, "passive");
}

double lk_t_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double lk_t_start;
__attribute__((constructor)) static void lk_t_start_clock(void) { lk_t_start = lk_t_now(); }

void lk_t_phase(const char *what) {
    static double last;
    const double now = lk_t_now();
    printf("---- %-36s (%.1f s so far, last phase %.1f s)\n", what, now - lk_t_start,
           now - (last > 0.0 ? last : lk_t_start));
    fflush(stdout);
    last = now;
}

static lk_safetensors *open_in(const char *envname, const char *dflt, const char *file) {
    const char *dir = getenv(envname);
    if (!dir || !*dir) dir = dflt;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open(&st, path);
    if (s != LK_OK) {
        fprintf(stderr, "FATAL cannot open fixture %s: %s\n", path, lk_last_error());
        lk_t_failures++;
        return NULL;
    }
    return st;
}

lk_safetensors *lk_t_ref(const char *name) {
    char file[512];
    snprintf(file, sizeof file, "%s.safetensors", name);
    return open_in("LK_REF_DIR", "ref", file);
}

const char *lk_t_golden_dir(void) {
    const char *dir = getenv("LK_GOLDEN_DIR");
    return (dir && *dir) ? dir : "../shared/golden";
}

lk_safetensors *lk_t_golden(const char *file) { return open_in("LK_GOLDEN_DIR", "../shared/golden", file); }

float *lk_t_load(const lk_safetensors *st, const char *name, int64_t *numel) {
    const lk_st_tensor *t = st ? lk_safetensors_find(st, name) : NULL;
    if (!t) {
        fprintf(stderr, "FAIL fixture tensor '%s' missing\n", name);
        lk_t_failures++;
        return NULL;
    }
    int64_t n = lk_st_tensor_numel(t);
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!x) return NULL;
    if (t->dtype == LK_I64) {
        for (int64_t i = 0; i < n; i++) {
            int64_t v;
            memcpy(&v, (const char *)t->data + 8 * i, 8);
            x[i] = (float)v;
        }
    } else if (lk_st_tensor_to_f32(t, x, (size_t)n) != LK_OK) {
        fprintf(stderr, "FAIL fixture tensor '%s': %s\n", name, lk_last_error());
        lk_t_failures++;
        free(x);
        return NULL;
    }
    if (numel) *numel = n;
    return x;
}

lk_tensor *lk_t_tensor(lk_ctx *ctx, const lk_safetensors *st, const char *name) {
    const lk_st_tensor *t = st ? lk_safetensors_find(st, name) : NULL;
    float *x = lk_t_load(st, name, NULL);
    if (!x) return NULL;
    lk_tensor *r = lk_tensor_from(ctx, LK_F32, t->ndim, t->shape, x);
    free(x);
    return r;
}

lk_tensor *lk_t_param(const lk_safetensors *st, const char *name) {
    const lk_st_tensor *t = st ? lk_safetensors_find(st, name) : NULL;
    float *x = lk_t_load(st, name, NULL);
    if (!x) return NULL;
    lk_tensor *p = lk_param_new(LK_F32, t->ndim, t->shape, name);
    if (p) memcpy(p->data, x, sizeof(float) * (size_t)lk_numel(p));
    free(x);
    return p;
}

int lk_t_close(const char *what, const float *got, const float *want, size_t n, float atol,
               float rtol) {
    lk_t_checks++;
    if (!got || !want) {
        fprintf(stderr, "FAIL %s: missing data\n", what);
        lk_t_failures++;
        return 0;
    }
    double max_abs = 0, max_rel = 0, max_want = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        double d = fabs(g - w);
        if (!(d == d) || isinf(g)) d = INFINITY;
        if (d > max_abs) max_abs = d;
        double rel = d / (fabs(w) > 1e-6 ? fabs(w) : 1e-6);
        if (rel > max_rel && fabs(w) > 1e-3) max_rel = rel;
        if (fabs(w) > max_want) max_want = fabs(w);
        if (!(d <= (double)atol + (double)rtol * fabs(w))) {
            if (!bad) first_bad = i;
            bad++;
        }
    }
    int ok = bad == 0;
    fprintf(ok ? stdout : stderr,
            "%s %s: max_abs=%.3g max_rel(|want|>1e-3)=%.3g max|want|=%.3g n=%zu atol=%g rtol=%g",
            ok ? "ok  " : "FAIL", what, max_abs, max_rel, max_want, n, (double)atol, (double)rtol);
    if (!ok)
        fprintf(stderr, " bad=%zu first at %zu: got %.8g want %.8g", bad, first_bad,
                (double)got[first_bad], (double)want[first_bad]);
    fprintf(ok ? stdout : stderr, "\n");
    if (!ok) lk_t_failures++;
    return ok;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lk_t_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
    uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
    for (size_t i = 0; i < n; i++) {
        double u = (double)(splitmix(&s) >> 11) * (1.0 / 9007199254740992.0);
        x[i] = lo + (float)(u * (double)(hi - lo));
    }
}

static double dot_out(lk_tensor *out, const float *R) {
    double acc = 0;
    int64_t n = lk_numel(out);
    for (int64_t i = 0; i < n; i++) acc += (double)lk_get_f32(out, i) * (double)R[i];
    return acc;
}

int lk_t_gradcheck(const char *what, lk_t_fn fn, void *ud, lk_tensor **in, int n, int n_probe,
                   float eps, float tol) {
    lk_ctx *ctx = lk_ctx_new();
    int all_ok = 1;
    if (!ctx) return 0;
    for (int i = 0; i < n; i++) lk_zero_grad(in[i]);
    lk_tensor *out = fn(ctx, in, n, ud);
    if (!out) {
        fprintf(stderr, "FAIL %s: forward failed: %s\n", what, lk_last_error());
        lk_t_failures++;
        lk_t_checks++;
        lk_ctx_free(ctx);
        return 0;
    }
    int64_t on = lk_numel(out);
    float *R = malloc(sizeof(float) * (size_t)on);
    lk_t_fill_uniform(R, (size_t)on, -1.f, 1.f, 12345);
    lk_status s = lk_backward_from(ctx, out, R);
    if (s != LK_OK) {
        fprintf(stderr, "FAIL %s: backward failed: %s\n", what, lk_last_error());
        lk_t_failures++;
        lk_t_checks++;
        free(R);
        lk_ctx_free(ctx);
        return 0;
    }
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, false);
    uint64_t seed = 777;
    for (int i = 0; i < n; i++) {
        if (!in[i]->requires_grad) continue;
        lk_t_checks++;
        int64_t nel = lk_numel(in[i]);
        int64_t lo = in[i]->grad_row_lo, hi = in[i]->grad_row_hi;
        int64_t cols = in[i]->ndim >= 2 ? nel / in[i]->shape[0] : 1;
        double worst = 0;
        int ok = 1;
        for (int p = 0; p < n_probe; p++) {
            int64_t j = (int64_t)(splitmix(&seed) % (uint64_t)nel);
            float *x = (float *)in[i]->data;
            float old = x[j];
            x[j] = old + eps;
            lk_tensor *o1 = fn(ctx, in, n, ud);
            double f1 = o1 ? dot_out(o1, R) : (double)NAN;
            lk_ctx_reset(ctx);
            lk_set_grad_enabled(ctx, false);
            x[j] = old - eps;
            lk_tensor *o2 = fn(ctx, in, n, ud);
            double f2 = o2 ? dot_out(o2, R) : (double)NAN;
            lk_ctx_reset(ctx);
            lk_set_grad_enabled(ctx, false);
            x[j] = old;
            double num = (f1 - f2) / (2.0 * (double)eps);
            double ana = 0;
            int64_t row = in[i]->ndim >= 2 ? j / cols : 0;
            bool partial = in[i]->ndim >= 2 && (lo != 0 || hi != in[i]->shape[0]);
            if (in[i]->grad && (!partial || (row >= lo && row < hi)))
                ana = in[i]->grad[partial ? j - lo * cols : j];
            double err = fabs(num - ana) / fmax(1.0, fmax(fabs(num), fabs(ana)));
            if (err > worst) worst = err;
            if (!(err <= (double)tol)) {
                if (ok)
                    fprintf(stderr, "FAIL %s: input %d elem %lld numeric %.6g analytic %.6g\n",
                            what, i, (long long)j, num, ana);
                ok = 0;
            }
        }
        if (!ok) {
            lk_t_failures++;
            all_ok = 0;
        } else {
            printf("ok   %s: gradcheck input %d worst scaled err %.3g (%d probes)\n", what, i,
                   worst, n_probe);
        }
    }
    free(R);
    lk_ctx_free(ctx);
    return all_ok;
}

void lk_t_write_subject_png(const char *path, int w, int h, int seed) {
    lk_image img;
    lk_t_checks++;
    if (lk_image_alloc(&img, w, h, 3) != LK_OK) {
        lk_t_failures++;
        fprintf(stderr, "FAIL cannot allocate a %dx%d image\n", w, h);
        return;
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img.px + ((size_t)y * (size_t)w + (size_t)x) * 3;
            float cx = (float)x - (float)w * (0.3f + 0.1f * (float)(seed % 4));
            float cy = (float)y - (float)h * 0.5f;
            bool disk = cx * cx + cy * cy < (float)(w * h) * 0.06f;
            p[0] = (uint8_t)(disk ? 220 - 50 * (seed / 4) : (x * 255) / w);
            p[1] = (uint8_t)(disk ? 40 + 30 * (seed % 3) : (y * 255) / h);
            p[2] = (uint8_t)(disk ? 60 : 128 + 20 * (seed % 4));
        }
    if (lk_image_save_png(&img, path, NULL) != LK_OK) {
        lk_t_failures++;
        fprintf(stderr, "FAIL writing %s: %s\n", path, lk_last_error());
    }
    lk_image_free(&img);
}

char *lk_t_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    char *b = n >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (!b) return NULL;
    b[n] = '\0';
    if (len) *len = (size_t)n;
    return b;
}

int lk_t_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

void lk_t_remove_tmp(const char *dir) {
    if (getenv("LK_KEEP_TMP")) {
        printf("kept %s\n", dir);
        return;
    }
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

int lk_t_done(void) {
    if (lk_t_checks == 0 && lk_t_failures == 0) {
        fprintf(stderr, "FAIL: no checks ran\n");
        return 1;
    }
    printf("%d checks, %d failures\n", lk_t_checks, lk_t_failures);
    return lk_t_failures ? 1 : 0;
}
