/* groupnorm.c: GroupNorm forward/backward (Wu & He 2018), NCHW (any spatial size HW), f32,
 * with an optional fused SiLU after the affine transform (the ResNet block's norm + act pair).
 * Statistics: per 4096-element chunk a two-pass mean / sum of squared deviations (in L1),
 * chunks merged in double with Chan et al.'s pairwise update, so the variance stays accurate
 * when |mean| >> std. The backward of the fused form recomputes the pre-activation. */
#include "kernels/kernels.h"

#include <math.h>
#include <omp.h>
#include <string.h>

#define GN_CHUNK 4096

/* mean and M2 = sum (x - mean)^2 of n contiguous floats */
static void group_stats(const float *x, size_t n, double *mean_out, double *m2_out) {
    double cnt = 0.0, mean = 0.0, m2 = 0.0;
    for (size_t i0 = 0; i0 < n; i0 += GN_CHUNK) {
        size_t len = n - i0 < GN_CHUNK ? n - i0 : GN_CHUNK;
        const float *p = x + i0;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (size_t i = 0; i < len; i++) s += p[i];
        float mc = s / (float)len;
        /* q about mc; mc differs from the chunk's exact mean by e/len, so M2 = q - e^2/len */
        float q = 0.0f, e = 0.0f;
#pragma omp simd reduction(+ : q, e)
        for (size_t i = 0; i < len; i++) {
            float d = p[i] - mc;
            q += d * d;
            e += d;
        }
        double nb = (double)len;
        double mb = (double)mc + (double)e / nb;
        double m2b = (double)q - (double)e * (double)e / nb;
        double tot = cnt + nb;
        double delta = mb - mean;
        mean += delta * nb / tot;
        m2 += m2b + delta * delta * cnt * nb / tot;
        cnt = tot;
    }
    *mean_out = mean;
    *m2_out = m2 > 0.0 ? m2 : 0.0;
}

/* out = (x - m)*a + sh over n floats, then SiLU in place when act. (x - m) is exact for x near
 * m, so this keeps full accuracy when |mean| >> std (x*a + (sh - m*a) would cancel). */
static void affine_act(float *out, const float *x, size_t n, float m, float a, float sh, int act) {
    for (size_t i0 = 0; i0 < n; i0 += GN_CHUNK) {
        size_t len = n - i0 < GN_CHUNK ? n - i0 : GN_CHUNK;
        float *o = out + i0;
        const float *p = x + i0;
#pragma omp simd
        for (size_t i = 0; i < len; i++) o[i] = (p[i] - m) * a + sh;
        if (act) lk_act_forward_serial(LK_ACT_SILU, o, o, len);
    }
}

/* x (B, C, HW) -> out (same), groups of C/G consecutive channels; w, b (C) or NULL (1, 0);
 * mean, rstd (B, G) written (may be NULL when not needed). act 1: SiLU after the affine.
 * C must be divisible by G (checked by the op). Cannot fail (LK_OK). */
lk_status lk_groupnorm_forward(float *out, float *mean, float *rstd, const float *x,
                               const float *w, const float *b, int B, int C, int HW, int G,
                               float eps, int act) {
    if (B <= 0 || C <= 0 || HW <= 0 || G <= 0) return LK_OK;
    int cpg = C / G;
    size_t gsz = (size_t)cpg * (size_t)HW;
    long tasks = (long)B * G;
#pragma omp parallel for schedule(static) if (tasks > 1 && (size_t)tasks * gsz >= 16384)
    for (long t = 0; t < tasks; t++) {
        int bi = (int)(t / G), g = (int)(t % G);
        size_t off = ((size_t)bi * (size_t)C + (size_t)g * (size_t)cpg) * (size_t)HW;
        double mu, m2;
        group_stats(x + off, gsz, &mu, &m2);
        float m = (float)mu;
        float rs = (float)(1.0 / sqrt(m2 / (double)gsz + (double)eps));
        if (mean) mean[t] = m;
        if (rstd) rstd[t] = rs;
        for (int ci = 0; ci < cpg; ci++) {
            int c = g * cpg + ci;
            float a = w ? rs * w[c] : rs;
            float sh = b ? b[c] : 0.0f;
            size_t co = off + (size_t)ci * (size_t)HW;
            affine_act(out + co, x + co, (size_t)HW, m, a, sh, act);
        }
    }
    return LK_OK;
}

/* Backward of lk_groupnorm_forward (mean, rstd as saved by it). With act, the gradient at the
 * pre-activation is dout * silu'(y), y recomputed from x, mean, rstd, w, b. Accumulates: dx (B,C,HW),
 * dw, db (C); any may be NULL. b is needed only with act. LK_ERR_NOMEM if scratch fails. */
lk_status lk_groupnorm_backward(float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *mean, const float *rstd,
                                const float *w, const float *b, int B, int C, int HW, int G,
                                int act) {
    if (B <= 0 || C <= 0 || HW <= 0 || G <= 0) return LK_OK;
    if (!dx && !dw && !db) return LK_OK;
    int cpg = C / G;
    size_t gsz = (size_t)cpg * (size_t)HW;
    size_t bc = (size_t)B * (size_t)C;
    long tasks = (long)B * G;
    int nt = omp_get_max_threads();
    bool par = tasks > 1 && (size_t)tasks * gsz >= 16384;
    if (!par) nt = 1;
    /* per (b, c): sum of dy' and of dy' * (x - mean), then per-thread dy' of one group (act) */
    float *sums = lk_aligned_alloc(sizeof(float) * 2 * bc);
    float *dyp_all = act ? lk_aligned_alloc(sizeof(float) * gsz * (size_t)nt) : NULL;
    if (!sums || (act && !dyp_all)) {
        lk_aligned_free(sums);
        lk_aligned_free(dyp_all);
        return lk_fail(LK_ERR_NOMEM, "groupnorm backward: no memory for scratch");
    }
    float *sdy = sums, *sdyx = sums + bc;
#pragma omp parallel num_threads(nt) if (par)
    {
        float *dyp_buf = act ? dyp_all + gsz * (size_t)omp_get_thread_num() : NULL;
        float ypre[GN_CHUNK];
#pragma omp for schedule(static)
        for (long t = 0; t < tasks; t++) {
            int bi = (int)(t / G), g = (int)(t % G);
            size_t off = ((size_t)bi * (size_t)C + (size_t)g * (size_t)cpg) * (size_t)HW;
            const float *xg = x + off;
            const float m = mean[t], rs = rstd[t];
            const float *dyg = dout + off;
            if (act) {
                /* dy' = dout * silu'((x - m) a + sh) into the thread's group buffer */
                for (int ci = 0; ci < cpg; ci++) {
                    int c = g * cpg + ci;
                    float a = w ? rs * w[c] : rs;
                    float sh = b ? b[c] : 0.0f;
                    size_t co = (size_t)ci * (size_t)HW;
                    for (size_t i0 = 0; i0 < (size_t)HW; i0 += GN_CHUNK) {
                        size_t len = (size_t)HW - i0 < GN_CHUNK ? (size_t)HW - i0 : GN_CHUNK;
                        const float *p = xg + co + i0;
#pragma omp simd
                        for (size_t i = 0; i < len; i++) ypre[i] = (p[i] - m) * a + sh;
                        float *d = dyp_buf + co + i0;
                        memset(d, 0, len * sizeof(float));
                        lk_act_backward_serial(LK_ACT_SILU, d, dyg + co + i0, ypre, len);
                    }
                }
                dyg = dyp_buf;
            }
            double s1 = 0.0, s2 = 0.0; /* sum_c w_c sdy_c, sum_c w_c sdyx_c */
            for (int ci = 0; ci < cpg; ci++) {
                int c = g * cpg + ci;
                const float *p = xg + (size_t)ci * (size_t)HW;
                const float *d = dyg + (size_t)ci * (size_t)HW;
                float a1 = 0.0f, a2 = 0.0f;
#pragma omp simd reduction(+ : a1, a2)
                for (int i = 0; i < HW; i++) {
                    a1 += d[i];
                    a2 += d[i] * (p[i] - m);
                }
                size_t k = (size_t)bi * (size_t)C + (size_t)c;
                sdy[k] = a1;
                sdyx[k] = a2;
                double wc = w ? (double)w[c] : 1.0;
                s1 += wc * (double)a1;
                s2 += wc * (double)a2;
            }
            if (dx) {
                /* dx = rs (w dy' - S1/n - xhat S2'/n), S2' = rs * s2 */
                double inv_n = 1.0 / (double)gsz;
                float k0 = (float)(-(double)rs * s1 * inv_n);
                float k3 = (float)(-(double)rs * (double)rs * (double)rs * s2 * inv_n);
                for (int ci = 0; ci < cpg; ci++) {
                    int c = g * cpg + ci;
                    float k1 = w ? rs * w[c] : rs;
                    size_t co = (size_t)ci * (size_t)HW;
                    const float *p = xg + co;
                    const float *d = dyg + co;
                    float *o = dx + off + co;
#pragma omp simd
                    for (int i = 0; i < HW; i++) o[i] += k1 * d[i] + k3 * (p[i] - m) + k0;
                }
            }
        }
    }
    /* dw, db: reduce over the batch in a fixed order */
    for (int bi = 0; bi < B; bi++) {
        for (int c = 0; c < C; c++) {
            size_t k = (size_t)bi * (size_t)C + (size_t)c;
            if (db) db[c] += sdy[k];
            if (dw) dw[c] += rstd[(size_t)bi * (size_t)G + (size_t)(c / cpg)] * sdyx[k];
        }
    }
    lk_aligned_free(sums);
    lk_aligned_free(dyp_all);
    return LK_OK;
}
