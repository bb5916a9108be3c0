/* clip.c: global L2-norm gradient clipping (Pascanu et al. 2013), as
 * torch.nn.utils.clip_grad_norm_ (1.13, norm_type 2, error_if_nonfinite=False). */
#include "optim/optim_state.h"

#include <math.h>
#include <stdlib.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* Sum of squares accumulated in double (exact products; partial sums in vector lanes). */
static double sumsq(const float *x, int64_t n) {
    double acc = 0.0;
    int64_t i = 0;
#ifdef __AVX512F__
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= n; i += 32) {
        __m512 u = _mm512_loadu_ps(x + i), w = _mm512_loadu_ps(x + i + 16);
        __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(u));
        __m512d d1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1)));
        __m512d d2 = _mm512_cvtps_pd(_mm512_castps512_ps256(w));
        __m512d d3 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w), 1)));
        a0 = _mm512_fmadd_pd(d0, d0, a0);
        a1 = _mm512_fmadd_pd(d1, d1, a1);
        a2 = _mm512_fmadd_pd(d2, d2, a2);
        a3 = _mm512_fmadd_pd(d3, d3, a3);
    }
    acc = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3)));
#endif
    double tail = 0.0;
#pragma omp simd reduction(+ : tail)
    for (int64_t j = i; j < n; j++) tail += (double)x[j] * (double)x[j];
    return acc + tail;
}

static void scale(float *x, int64_t n, float c) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) x[i] *= c;
}

/* Contract: with every gradient of ps viewed as one vector g, computes ||g||_2 (in double,
 * rounded to f32), then multiplies g by min(1, max_norm * (1 / (norm + 1e-6))) in f32 as torch
 * does (a NaN/inf norm propagates into the gradients, like torch's default). Returns the norm
 * before clipping; 0 for an empty set; -1 with a message for a NULL/unfinalized set or a
 * negative/NaN max_norm (max_norm may be +inf: measure without clipping). Deterministic for a
 * given thread count. */
float lk_clip_grad_norm(lk_paramset *ps, float max_norm) {
    if (!ps) {
        lk_fail(LK_ERR_INVALID, "clip_grad_norm: NULL paramset");
        return -1.0f;
    }
    if (!(max_norm >= 0.0f)) {
        lk_fail(LK_ERR_INVALID, "clip_grad_norm: max_norm %g must be >= 0", (double)max_norm);
        return -1.0f;
    }
    const int n = lk_paramset_count(ps);
    if (n == 0) return 0.0f;
    int nthr = 1;
#ifdef _OPENMP
    nthr = omp_get_max_threads();
#endif
    int64_t *off = calloc((size_t)n + 1, sizeof *off);
    double *part = calloc((size_t)nthr, sizeof *part);
    if (!off || !part) {
        free(off);
        free(part);
        lk_fail(LK_ERR_NOMEM, "clip_grad_norm: out of memory");
        return -1.0f;
    }
    for (int i = 0; i < n; i++) {
        const lk_tensor *p = lk_paramset_get(ps, i);
        if (!p->grad && lk_grad_numel(p) > 0) {
            free(off);
            free(part);
            lk_fail(LK_ERR_STATE, "clip_grad_norm: paramset not finalized ('%s' has no gradient)",
                    p->name);
            return -1.0f;
        }
        off[i + 1] = off[i] + lk_grad_numel(p);
    }
    const int64_t total = off[n];
    bool par = total >= LK_OPTIM_PAR_MIN;
    /* per-thread partial sums over fixed contiguous ranges, combined in thread order below */
#pragma omp parallel if (par) num_threads(nthr)
    {
        int64_t lo, hi;
        lk__optim_thread_range(total, &lo, &hi);
        double acc = 0.0;
        for (int i = 0; i < n && lo < hi; i++) {
            int64_t a = lo > off[i] ? lo : off[i], b = hi < off[i + 1] ? hi : off[i + 1];
            if (a < b) acc += sumsq(lk_paramset_get(ps, i)->grad + (a - off[i]), b - a);
        }
#ifdef _OPENMP
        part[omp_get_thread_num()] = acc;
#else
        part[0] = acc;
#endif
    }
    double sum = 0.0;
    for (int t = 0; t < nthr; t++) sum += part[t];
    const float norm = (float)sqrt(sum);
    /* torch: max_norm / (total + 1e-6) is Tensor.__rdiv__ = reciprocal(total + 1e-6) * max_norm */
    float coef = (1.0f / (norm + 1e-6f)) * max_norm;
    if (coef > 1.0f) coef = 1.0f;
    if (coef != 1.0f) {
#pragma omp parallel if (par) num_threads(nthr)
        {
            int64_t lo, hi;
            lk__optim_thread_range(total, &lo, &hi);
            for (int i = 0; i < n && lo < hi; i++) {
                int64_t a = lo > off[i] ? lo : off[i], b = hi < off[i + 1] ? hi : off[i + 1];
                if (a < b) scale(lk_paramset_get(ps, i)->grad + (a - off[i]), b - a, coef);
            }
        }
    }
    free(off);
    free(part);
    return norm;
}
