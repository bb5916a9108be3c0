/* embedding.c: table lookup with a sparse, row-range-restricted gradient (textual inversion,
 * Gal et al. 2022) and the sinusoidal timestep embedding of diffusers' get_timestep_embedding
 * (Vaswani et al. 2017 / Ho et al. 2020). CPU, f32 out. */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

/* below this many output elements, one thread */
#define PAR_MIN 32768

void lk_embedding_forward(float *out, const int64_t *ids, size_t n, const void *table,
                          lk_dtype dt, int D) {
    const size_t esz = lk_dtype_size(dt);
    const int64_t nn = (int64_t)n;
#pragma omp parallel for schedule(static) if (n * (size_t)D >= PAR_MIN)
    for (int64_t i = 0; i < nn; i++) {
        const unsigned char *row = (const unsigned char *)table + (size_t)ids[i] * (size_t)D * esz;
        lk_widen_f32(out + (size_t)i * (size_t)D, row, dt, (size_t)D);
    }
}

void lk_embedding_backward(float *dtable, const float *dout, const int64_t *ids, size_t n, int D,
                           int64_t row_lo, int64_t row_hi) {
    if (!dtable || D <= 0) return;
    /* threads own disjoint column ranges, so repeated ids need no atomics and the summation
     * order (position order) is the same for every thread count */
    const int64_t nn = (int64_t)n;
    const int64_t ncb = (D + 63) / 64;
#pragma omp parallel for schedule(static) if (n * (size_t)D >= PAR_MIN && ncb > 1)
    for (int64_t cb = 0; cb < ncb; cb++) {
        const int64_t c0 = cb * 64, c1 = c0 + 64 < D ? c0 + 64 : D;
        for (int64_t i = 0; i < nn; i++) {
            const int64_t id = ids[i];
            if (id < row_lo || id >= row_hi) continue;
            float *dr = dtable + (id - row_lo) * D;
            const float *g = dout + i * D;
            for (int64_t c = c0; c < c1; c++) dr[c] += g[c];
        }
    }
}

void lk_timestep_embedding_forward(float *out, const float *t, int B, int dim,
                                   bool flip_sin_to_cos, float downscale_freq_shift,
                                   float max_period) {
    const int half = dim / 2;
    /* f32 arithmetic in the reference's order: exponent = -ln(max_period) * k / (half - shift),
     * freq = exp(exponent), arg = t * freq */
    const float neg_log = (float)(-log((double)max_period));
    const float denom = (float)half - downscale_freq_shift;
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * (size_t)dim;
        float *first = o, *second = o + half;
        if (flip_sin_to_cos) {
            first = o + half;
            second = o;
        }
        for (int k = 0; k < half; k++) {
            float e = neg_log * (float)k;
            e = e / denom;
            float arg = t[b] * expf(e);
            first[k] = sinf(arg);
            second[k] = cosf(arg);
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}
