/* optim_update.c: the fused AdamW update (Loshchilov & Hutter 2019, "Decoupled Weight Decay
 * Regularization"), one memory pass, rounding step by step like torch.optim.AdamW (1.13). */
#include "kernels/kernels.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* Below this many elements one thread does the whole update: a serial pass of 2M elements
 * takes ~1 ms, less than a fork/join costs when the sibling core is busy (see optim/adamw.c). */
#define ADAMW_PAR_MIN (1 << 21)
#define ADAMW_CHUNK 4096

typedef struct adamw_coef {
    float decay;   /* 1 - lr*wd */
    float b1, omb1; /* beta1, 1 - beta1 */
    float b2, omb2; /* beta2, 1 - beta2 */
    float bc2s;    /* sqrt(1 - beta2^t) */
    float eps;
    float nstep;   /* -lr / (1 - beta1^t) */
} adamw_coef;

/* torch's sequence per element: p *= decay; m = fma(g, 1-b1, m*b1); v = fma((1-b2)*g, g, v*b2)
 * (torch's AVX2 build contracts both); p += (-step*m) / (sqrt(v)/bc2s + eps). */
static void adamw_range(float *p, const float *g, float *m, float *v, size_t n,
                        const adamw_coef *c) {
    size_t i = 0;
#if defined(__AVX512F__)
    const __m512 decay = _mm512_set1_ps(c->decay), b1 = _mm512_set1_ps(c->b1),
                 omb1 = _mm512_set1_ps(c->omb1), b2 = _mm512_set1_ps(c->b2),
                 omb2 = _mm512_set1_ps(c->omb2), bc2s = _mm512_set1_ps(c->bc2s),
                 eps = _mm512_set1_ps(c->eps), nstep = _mm512_set1_ps(c->nstep);
    for (; i + 16 <= n; i += 16) {
        __m512 gi = _mm512_loadu_ps(g + i);
        __m512 pi = _mm512_mul_ps(_mm512_loadu_ps(p + i), decay);
        __m512 mi = _mm512_fmadd_ps(gi, omb1, _mm512_mul_ps(_mm512_loadu_ps(m + i), b1));
        __m512 vi = _mm512_fmadd_ps(_mm512_mul_ps(omb2, gi), gi,
                                    _mm512_mul_ps(_mm512_loadu_ps(v + i), b2));
        __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2s), eps);
        pi = _mm512_add_ps(pi, _mm512_div_ps(_mm512_mul_ps(nstep, mi), den));
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        _mm512_storeu_ps(p + i, pi);
    }
#elif defined(__AVX2__) && defined(__FMA__)
    const __m256 decay = _mm256_set1_ps(c->decay), b1 = _mm256_set1_ps(c->b1),
                 omb1 = _mm256_set1_ps(c->omb1), b2 = _mm256_set1_ps(c->b2),
                 omb2 = _mm256_set1_ps(c->omb2), bc2s = _mm256_set1_ps(c->bc2s),
                 eps = _mm256_set1_ps(c->eps), nstep = _mm256_set1_ps(c->nstep);
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        __m256 mi = _mm256_fmadd_ps(gi, omb1, _mm256_mul_ps(_mm256_loadu_ps(m + i), b1));
        __m256 vi = _mm256_fmadd_ps(_mm256_mul_ps(omb2, gi), gi,
                                    _mm256_mul_ps(_mm256_loadu_ps(v + i), b2));
        __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2s), eps);
        pi = _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(nstep, mi), den));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, pi);
    }
#endif
    for (; i < n; i++) {
        float gi = g[i];
        float pi = p[i] * c->decay;
        float mi = fmaf(gi, c->omb1, m[i] * c->b1);
        float vi = fmaf(c->omb2 * gi, gi, v[i] * c->b2);
        float den = sqrtf(vi) / c->bc2s + c->eps;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi + (c->nstep * mi) / den;
    }
}

/* Contract: p, m, v (n floats) updated in place from g for AdamW step t (1-based); scalars are
 * formed in double from the f32 hyper-parameters exactly as torch forms them from Python floats.
 * Runs single-threaded when called inside an OpenMP parallel region. Cannot fail. */
void lk_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr,
                     float beta1, float beta2, float eps, float weight_decay, int64_t t) {
    if (n == 0) return;
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    adamw_coef c;
    c.decay = (float)(1.0 - (double)lr * (double)weight_decay);
    c.b1 = beta1;
    c.omb1 = (float)(1.0 - (double)beta1);
    c.b2 = beta2;
    c.omb2 = (float)(1.0 - (double)beta2);
    c.bc2s = (float)sqrt(bc2);
    c.eps = eps;
    c.nstep = (float)(-((double)lr / bc1));
#ifdef _OPENMP
    if (n >= ADAMW_PAR_MIN && !omp_in_parallel()) {
        const int64_t nchunk = (int64_t)((n + ADAMW_CHUNK - 1) / ADAMW_CHUNK);
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < nchunk; k++) {
            size_t lo = (size_t)k * ADAMW_CHUNK;
            size_t len = n - lo < ADAMW_CHUNK ? n - lo : ADAMW_CHUNK;
            adamw_range(p + lo, g + lo, m + lo, v + lo, len, &c);
        }
        return;
    }
#endif
    adamw_range(p, g, m, v, n, &c);
}
