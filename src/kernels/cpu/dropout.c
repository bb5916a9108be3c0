/* dropout.c: inverted dropout (Srivastava et al. 2014) with PyTorch's CPU mask: element i is
 * kept when the i-th 53-bit uniform double of the generator is < 1-p (ATen bernoulli_(1-p)),
 * and survivors are scaled by 1.0f/(float)(1-p) (noise.div_(1-p)), so masks match torch's. */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

/* bulk lk_rng_u32 draws (core/rng.c) */
void lk__rng_fill_u32(lk_rng *r, uint32_t *out, size_t n);

#define CHUNK 2048
#define PAR_MIN 32768 /* below this, threads cost more than they save */

/* mask[i] = 1/(1-p) or 0 (kept when the uniform double of two draws is < 1-p), y = x * mask.
 * p <= 0: y = x, mask = 1, no draws. p >= 1: y = x * 0, mask = 0, no draws (as torch). */
void lk_dropout_forward(float *y, float *mask, const float *x, size_t n, float p, lk_rng *rng) {
    if (!(p > 0.0f)) {
        if (n) memcpy(y, x, n * sizeof(float));
        for (size_t i = 0; i < n; i++) mask[i] = 1.0f;
        return;
    }
    if (p >= 1.0f) {
        for (size_t i = 0; i < n; i++) {
            mask[i] = 0.0f;
            y[i] = x[i] * 0.0f;
        }
        return;
    }
    const double keep = 1.0 - (double)p;
    const float scale = 1.0f / (float)keep;
    /* u = k * 2^-53 with k the low 53 bits of (first << 32 | second); u < keep <=> k < thr */
    const uint64_t thr = (uint64_t)ceil(keep * 9007199254740992.0);
    /* the draws are sequential, so the forward is one pass over cache-sized chunks: draw, mask,
     * multiply while the chunk is hot (threads would only wait on the generator) */
    uint32_t w[2 * CHUNK];
    for (size_t i = 0; i < n; i += CHUNK) {
        size_t m = n - i < CHUNK ? n - i : CHUNK;
        lk__rng_fill_u32(rng, w, 2 * m);
        float *mk = mask + i, *yc = y + i;
        const float *xc = x + i;
        for (size_t j = 0; j < m; j++) {
            uint64_t k = (((uint64_t)w[2 * j] << 32) | w[2 * j + 1]) & ((UINT64_C(1) << 53) - 1);
            mk[j] = k < thr ? scale : 0.0f;
        }
        for (size_t j = 0; j < m; j++) yc[j] = xc[j] * mk[j];
    }
}

/* dx += dy * mask */
void lk_dropout_backward(float *dx, const float *dy, const float *mask, size_t n) {
    if (!dx) return;
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (long long i = 0; i < nn; i++) dx[i] += dy[i] * mask[i];
}
