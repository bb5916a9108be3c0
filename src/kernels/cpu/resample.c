/* resample.c: nearest-neighbour 2x upsampling (the UNet/VAE Upsample2D before its conv) and
 * 2-D average pooling without padding (torch.nn.functional.avg_pool2d semantics), NCHW f32. */
#include "kernels/kernels.h"

#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define RS_PAR_MIN 32768 /* elements below which one thread does it */

/* o[2j] = o[2j+1] = x[j], j < W */
static void dup_row(float *o, const float *x, int W) {
    int j = 0;
#if defined(__AVX512F__)
    const __m512i lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i hi = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    for (; j + 16 <= W; j += 16) {
        __m512 v = _mm512_loadu_ps(x + j);
        _mm512_storeu_ps(o + 2 * j, _mm512_permutexvar_ps(lo, v));
        _mm512_storeu_ps(o + 2 * j + 16, _mm512_permutexvar_ps(hi, v));
    }
#endif
    for (; j < W; j++) o[2 * j] = o[2 * j + 1] = x[j];
}

/* d[j] += a[2j] + a[2j+1] + b[2j] + b[2j+1], j < W, times scale */
static void sum2x2_row(float *d, const float *a, const float *b, int W, float scale, int acc) {
    int j = 0;
#if defined(__AVX512F__)
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512 sc = _mm512_set1_ps(scale);
    for (; j + 16 <= W; j += 16) {
        __m512 r0 = _mm512_add_ps(_mm512_loadu_ps(a + 2 * j), _mm512_loadu_ps(b + 2 * j));
        __m512 r1 = _mm512_add_ps(_mm512_loadu_ps(a + 2 * j + 16), _mm512_loadu_ps(b + 2 * j + 16));
        __m512 s = _mm512_add_ps(_mm512_permutex2var_ps(r0, ev, r1),
                                 _mm512_permutex2var_ps(r0, od, r1));
        s = _mm512_mul_ps(s, sc);
        if (acc) s = _mm512_add_ps(s, _mm512_loadu_ps(d + j));
        _mm512_storeu_ps(d + j, s);
    }
#endif
    for (; j < W; j++) {
        float s = ((a[2 * j] + b[2 * j]) + (a[2 * j + 1] + b[2 * j + 1])) * scale;
        d[j] = acc ? d[j] + s : s;
    }
}

/* x (BC, H, W) -> y (BC, 2H, 2W), y[2i+a][2j+b] = x[i][j]. Cannot fail. */
void lk_upsample_nearest2x_forward(float *y, const float *x, int BC, int H, int W) {
    long rows = (long)BC * H;
    size_t ow = 2 * (size_t)W;
#pragma omp parallel for schedule(static) if (rows * W >= RS_PAR_MIN)
    for (long r = 0; r < rows; r++) {
        float *o = y + (size_t)r * 2 * ow; /* output rows 2i, 2i+1 of plane r/H */
        dup_row(o, x + (size_t)r * (size_t)W, W);
        memcpy(o + ow, o, ow * sizeof(float));
    }
}

/* dx (BC, H, W) += the sum of dy (BC, 2H, 2W) over each 2x2 block. Cannot fail. */
void lk_upsample_nearest2x_backward(float *dx, const float *dy, int BC, int H, int W) {
    long rows = (long)BC * H;
    size_t ow = 2 * (size_t)W;
#pragma omp parallel for schedule(static) if (rows * W >= RS_PAR_MIN)
    for (long r = 0; r < rows; r++) {
        const float *a = dy + (size_t)r * 2 * ow;
        sum2x2_row(dx + (size_t)r * (size_t)W, a, a + ow, W, 1.0f, 1);
    }
}

/* x (BC, H, W) -> y (BC, OH, OW), OH = (H-k)/s+1, the mean of each k x k window (k, s >= 1,
 * k <= H, W; checked by the op). Cannot fail. */
void lk_avgpool2d_forward(float *y, const float *x, int BC, int H, int W, int k, int s) {
    int OH = (H - k) / s + 1, OW = (W - k) / s + 1;
    long rows = (long)BC * OH;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) if (rows * OW * k * k >= RS_PAR_MIN)
    for (long r = 0; r < rows; r++) {
        long p = r / OH;
        int oi = (int)(r % OH);
        const float *xp = x + (size_t)p * (size_t)H * (size_t)W;
        float *o = y + (size_t)r * (size_t)OW;
        if (k == 2 && s == 2) {
            const float *a = xp + (size_t)(2 * oi) * (size_t)W;
            sum2x2_row(o, a, a + W, OW, inv, 0);
            continue;
        }
        for (int oj = 0; oj < OW; oj++) o[oj] = 0.0f;
        for (int di = 0; di < k; di++) {
            const float *xr = xp + (size_t)(oi * s + di) * (size_t)W;
            for (int oj = 0; oj < OW; oj++) {
                const float *xw = xr + (size_t)oj * (size_t)s;
                float acc = 0.0f;
                for (int dj = 0; dj < k; dj++) acc += xw[dj];
                o[oj] += acc;
            }
        }
        for (int oj = 0; oj < OW; oj++) o[oj] *= inv;
    }
}

/* dx (BC, H, W) += dy (BC, OH, OW) / k^2 spread over each window. Cannot fail. */
void lk_avgpool2d_backward(float *dx, const float *dy, int BC, int H, int W, int k, int s) {
    int OH = (H - k) / s + 1, OW = (W - k) / s + 1;
    const float inv = 1.0f / (float)(k * k);
    if (s >= k) { /* windows are disjoint: rows are independent */
        long rows = (long)BC * OH;
#pragma omp parallel for schedule(static) if (rows * OW * k * k >= RS_PAR_MIN)
        for (long r = 0; r < rows; r++) {
            long p = r / OH;
            int oi = (int)(r % OH);
            const float *d = dy + (size_t)r * (size_t)OW;
            float *xp = dx + (size_t)p * (size_t)H * (size_t)W;
            for (int di = 0; di < k; di++) {
                float *xr = xp + (size_t)(oi * s + di) * (size_t)W;
                for (int oj = 0; oj < OW; oj++) {
                    float g = d[oj] * inv;
                    float *xw = xr + (size_t)oj * (size_t)s;
                    for (int dj = 0; dj < k; dj++) xw[dj] += g;
                }
            }
        }
        return;
    }
    /* overlapping windows: one plane per task */
#pragma omp parallel for schedule(static) if ((long)BC * OH * OW * k * k >= RS_PAR_MIN)
    for (int p = 0; p < BC; p++) {
        float *xp = dx + (size_t)p * (size_t)H * (size_t)W;
        const float *dp = dy + (size_t)p * (size_t)OH * (size_t)OW;
        for (int oi = 0; oi < OH; oi++)
            for (int di = 0; di < k; di++) {
                float *xr = xp + (size_t)(oi * s + di) * (size_t)W;
                for (int oj = 0; oj < OW; oj++) {
                    float g = dp[(size_t)oi * (size_t)OW + (size_t)oj] * inv;
                    for (int dj = 0; dj < k; dj++) xr[(size_t)oj * (size_t)s + (size_t)dj] += g;
                }
            }
    }
}
