/* layernorm.c: LayerNorm forward/backward over the last dimension (Ba, Kiros & Hinton 2016),
 * rows (N, C), f32, OpenMP over rows; two-pass statistics per row (the row sits in L1). */
#include "kernels/kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* x (N, C) -> out (N, C) = (x - mean) * rstd * w + b; w, b (C) or NULL; mean, rstd (N) written
 * (may be NULL). Cannot fail (LK_OK). */
lk_status lk_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                               const float *w, const float *b, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return LK_OK;
#pragma omp parallel for schedule(static) if ((int64_t)N * C >= 16384)
    for (int r = 0; r < N; r++) {
        const float *p = x + (size_t)r * (size_t)C;
        float *o = out + (size_t)r * (size_t)C;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < C; i++) s += p[i];
        float m = s / (float)C;
        float q = 0.0f, e = 0.0f;
#pragma omp simd reduction(+ : q, e)
        for (int i = 0; i < C; i++) {
            float d = p[i] - m;
            q += d * d;
            e += d;
        }
        /* m differs from the exact mean by e/C: correct the mean and the sum of squares */
        double var = ((double)q - (double)e * (double)e / (double)C) / (double)C;
        m += e / (float)C;
        float rs = (float)(1.0 / sqrt((var > 0.0 ? var : 0.0) + (double)eps));
        if (mean) mean[r] = m;
        if (rstd) rstd[r] = rs;
        if (w && b) {
#pragma omp simd
            for (int i = 0; i < C; i++) o[i] = (p[i] - m) * rs * w[i] + b[i];
        } else if (w) {
#pragma omp simd
            for (int i = 0; i < C; i++) o[i] = (p[i] - m) * rs * w[i];
        } else if (b) {
#pragma omp simd
            for (int i = 0; i < C; i++) o[i] = (p[i] - m) * rs + b[i];
        } else {
#pragma omp simd
            for (int i = 0; i < C; i++) o[i] = (p[i] - m) * rs;
        }
    }
    return LK_OK;
}

/* Backward of lk_layernorm_forward. Accumulates dx (N, C), dw, db (C); any may be NULL.
 * dw/db: per-thread partial sums over row ranges, reduced in a fixed order.
 * LK_ERR_NOMEM if that scratch cannot be allocated. */
lk_status lk_layernorm_backward(float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *mean, const float *rstd,
                                const float *w, int N, int C) {
    if (N <= 0 || C <= 0) return LK_OK;
    if (!dx && !dw && !db) return LK_OK;
    bool par = (int64_t)N * C >= 16384;
    int nt = par ? omp_get_max_threads() : 1;
    if (nt > N) nt = N;
    float *part = NULL;
    if (dw || db) {
        part = lk_aligned_calloc(sizeof(float) * 2 * (size_t)nt * (size_t)C);
        if (!part) return lk_fail(LK_ERR_NOMEM, "layernorm backward: no memory for scratch");
    }
    const float invC = 1.0f / (float)C;
#pragma omp parallel num_threads(nt) if (par)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int r0 = (int)((int64_t)N * t / T), r1 = (int)((int64_t)N * (t + 1) / T);
        float *pdw = part ? part + (size_t)t * 2 * (size_t)C : NULL;
        float *pdb = part ? pdw + C : NULL;
        for (int r = r0; r < r1; r++) {
            const float *p = x + (size_t)r * (size_t)C;
            const float *d = dout + (size_t)r * (size_t)C;
            const float m = mean[r], rs = rstd[r];
            if (part) {
#pragma omp simd
                for (int i = 0; i < C; i++) {
                    pdw[i] += d[i] * (p[i] - m) * rs;
                    pdb[i] += d[i];
                }
            }
            if (!dx) continue;
            /* dx = rs (g - mean(g) - xhat mean(g xhat)), g = dy * w */
            float s1 = 0.0f, s2 = 0.0f;
            if (w) {
#pragma omp simd reduction(+ : s1, s2)
                for (int i = 0; i < C; i++) {
                    float g = d[i] * w[i];
                    s1 += g;
                    s2 += g * (p[i] - m);
                }
            } else {
#pragma omp simd reduction(+ : s1, s2)
                for (int i = 0; i < C; i++) {
                    s1 += d[i];
                    s2 += d[i] * (p[i] - m);
                }
            }
            const float k0 = -rs * s1 * invC;            /* constant term */
            const float k3 = -rs * rs * rs * s2 * invC;  /* times (x - m) */
            float *o = dx + (size_t)r * (size_t)C;
            if (w) {
#pragma omp simd
                for (int i = 0; i < C; i++) o[i] += rs * w[i] * d[i] + k3 * (p[i] - m) + k0;
            } else {
#pragma omp simd
                for (int i = 0; i < C; i++) o[i] += rs * d[i] + k3 * (p[i] - m) + k0;
            }
        }
    }
    if (part) {
        for (int t = 0; t < nt; t++) {
            const float *pdw = part + (size_t)t * 2 * (size_t)C, *pdb = pdw + C;
            if (dw)
                for (int i = 0; i < C; i++) dw[i] += pdw[i];
            if (db)
                for (int i = 0; i < C; i++) db[i] += pdb[i];
        }
        lk_aligned_free(part);
    }
    return LK_OK;
}
