/* conv2d_winograd.c: 3x3 convolution by Winograd minimal filtering (Lavin & Gray 2016,
 * "Fast Algorithms for Convolutional Neural Networks"): F(2x2,3x3) for the output and the input
 * gradient, F(3x3,2x2) for the weight gradient; the element-wise products of the 16 transform
 * positions are batched into 16 GEMMs over channels. Matrices (points 0, 1, -1, infinity):
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]  (input tile, 4x4, both algorithms)
 *   G   = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1]      A^T = [1 1 1 0; 0 1 -1 -1]   (F(2,3))
 *   Gd  = [1 0; .5 .5; .5 -.5; 0 1]                Ad^T = [1 1 1 0; 0 1 -1 0; 0 1 1 -1] (F(3,2))
 * Stride 2 (forward only): a 2x2 output tile reads a 5x5 patch; its even rows and columns meet
 * kernel taps {0,2}, an F(2,2) problem (B^T = [1 -1 0; 0 1 0; 0 -1 1], G = [1 0; 1 1; 0 1],
 * A^T = [1 1 0; 0 1 1]), its odd ones tap 1 alone. The four parity classes take 9+6+6+4 = 25
 * products per tile instead of 36, with 16 distinct transformed weights ("u" below): even-even
 * 9, even-odd 3 (each used by 2 row groups of tiles), odd-even 3 (2 groups), odd-odd 1 (4).
 * Data is moved to channel-minor (NHWC) bands so every transform works on 16 channels at once;
 * work is chunked over images / tile rows so scratch stays bounded whatever the batch. */
#include "kernels/cpu/conv2d_internal.h"

#include <omp.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define LANES 16
/* floats of chunk scratch (band + transformed tiles): 24 MB */
#define WINO_BUDGET ((int64_t)6 << 20)
/* largest precomputed weight transform (floats, 32 MB); above 16 MB it is written with
 * non-temporal stores */
#define WINO_UMAX ((int64_t)8 << 20)
#define WINO_USTREAM ((int64_t)4 << 20)
/* fused schedule: output channels and input-channel depth per weight-transform block */
#define WINO_NCW (4 * LK_CONV_NR)
#define WINO_KC 128
/* weight gradient: target block of dW per work item (output x input channels) */
#define WINO_DW_MK (12 * LK_CONV_MR)
#define WINO_DW_NC (6 * LK_CONV_NR)

typedef struct wino_geo {
    int B, C, H, W, K, pad; /* conv input (B,C,H,W), K output channels, tile origin offset */
    int s;                  /* stride, 1 or 2 */
    int OH, OW, th, tw;     /* output size; tiles per column / per row */
    int voff[17];           /* transformed weight u uses row groups [voff[u], voff[u+1]) of T
                             * tiles each in V and M; voff[16] groups in all */
    int64_t ldx, ldv, ldm;  /* channel strides: band of x, V (C), M or dY' (K) */
    int64_t ldy;            /* channel stride of the dout band (weight gradient) */
} wino_geo;

typedef struct wino_chunk {
    int b0, nb, ty0, nty; /* images [b0, b0+nb), tile rows [ty0, ty0+nty) of each */
    int64_t T;            /* tiles in the chunk */
    int bh, bw;           /* band rows and columns (stride 1: 2n+2, stride 2: 4n+1) */
} wino_chunk;

static int64_t rup(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* Copy rows [r0, r0+nr) and columns [c0, c0+nc) of images [b0, b0+nb) of src (B, Cch, Hs, Ws),
 * zero outside the image, into dst[img][r][c][ch] (channel stride ld; channels up to the next
 * multiple of 16 zeroed). r0, c0 may be negative. */
static void band_nhwc(float *dst, int64_t ld, const float *src, int Cch, int Hs, int Ws, int b0,
                      int nb, int r0, int nr, int c0, int nc) {
    int64_t C16 = rup(Cch, LANES);
    int64_t HW = (int64_t)Hs * Ws;
    int cv0 = c0 < 0 ? -c0 : 0;               /* first band column inside the image */
    int cv1 = Ws - c0 < nc ? Ws - c0 : nc;    /* one past the last */
    if (cv1 < cv0) cv1 = cv0;
#pragma omp parallel for schedule(static) collapse(2)
    for (int img = 0; img < nb; img++)
        for (int r = 0; r < nr; r++) {
            float *drow = dst + ((int64_t)img * nr + r) * nc * ld;
            int ih = r0 + r;
            if (ih < 0 || ih >= Hs) {
                for (int c = 0; c < nc; c++) memset(drow + c * ld, 0, sizeof(float) * (size_t)C16);
                continue;
            }
            for (int c = 0; c < cv0; c++) memset(drow + c * ld, 0, sizeof(float) * (size_t)C16);
            for (int c = cv1; c < nc; c++) memset(drow + c * ld, 0, sizeof(float) * (size_t)C16);
            const float *srow = src + (int64_t)(b0 + img) * Cch * HW + (int64_t)ih * Ws + c0;
            for (int ch = 0; ch < Cch; ch += LANES) {
                int nch = Cch - ch < LANES ? Cch - ch : LANES;
                for (int c = cv0; c < cv1; c += LANES) {
                    int npx = cv1 - c < LANES ? cv1 - c : LANES;
                    lk__conv_tr16(srow + ch * HW + c, HW, drow + c * ld + ch, ld, nch, npx, false);
                }
                if (nch < LANES)
                    for (int c = cv0; c < cv1; c++)
                        memset(drow + c * ld + ch + nch, 0, sizeof(float) * (size_t)(LANES - nch));
            }
        }
}

/* tile t of the chunk -> image, tile row (in the chunk) and column */
static inline void tile_pos(const wino_geo *g, const wino_chunk *ck, int64_t t, int *img,
                            int *tyl, int *tx) {
    int64_t per = (int64_t)ck->nty * g->tw;
    *img = (int)(t / per);
    int64_t r = t - (int64_t)*img * per;
    *tyl = (int)(r / g->tw);
    *tx = (int)(r - (int64_t)*tyl * g->tw);
}

/* V[pos][t][c] = (B^T d B)[pos] for every tile of the chunk, d the 4x4 input patch. */
static void input_transform(float *V, const float *band, const wino_geo *g,
                            const wino_chunk *ck) {
    int64_t vstride = ck->T * g->ldv;
    int ng = (int)(rup(g->C, LANES) / LANES);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < ck->T; t++) {
        int img, tyl, tx;
        tile_pos(g, ck, t, &img, &tyl, &tx);
        const float *base = band + (((int64_t)img * ck->bh + 2 * tyl) * ck->bw + 2 * tx) * g->ldx;
        for (int gi = 0; gi < ng; gi++) {
            float d[4][4][LANES], u[4][4][LANES];
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++) {
                    const float *p = base + ((int64_t)r * ck->bw + c) * g->ldx + gi * LANES;
#pragma omp simd
                    for (int l = 0; l < LANES; l++) d[r][c][l] = p[l];
                }
            for (int c = 0; c < 4; c++)
#pragma omp simd
                for (int l = 0; l < LANES; l++) {
                    float d0 = d[0][c][l], d1 = d[1][c][l], d2 = d[2][c][l], d3 = d[3][c][l];
                    u[0][c][l] = d0 - d2;
                    u[1][c][l] = d1 + d2;
                    u[2][c][l] = d2 - d1;
                    u[3][c][l] = d1 - d3;
                }
            float *vt = V + t * g->ldv + gi * LANES;
            for (int r = 0; r < 4; r++) {
                float *v0 = vt + (r * 4) * vstride;
#pragma omp simd
                for (int l = 0; l < LANES; l++) {
                    float a0 = u[r][0][l], a1 = u[r][1][l], a2 = u[r][2][l], a3 = u[r][3][l];
                    v0[l] = a0 - a2;
                    v0[vstride + l] = a1 + a2;
                    v0[2 * vstride + l] = a2 - a1;
                    v0[3 * vstride + l] = a1 - a3;
                }
            }
        }
    }
}

/* Stride 2: V[u][group][t][c] from the 5x5 patch of every tile (see the file comment). */
static void input_transform_s2(float *V, const float *band, const wino_geo *g,
                               const wino_chunk *ck) {
    int64_t gs = ck->T * g->ldv; /* one row group */
    int ng = (int)(rup(g->C, LANES) / LANES);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < ck->T; t++) {
        int img, tyl, tx;
        tile_pos(g, ck, t, &img, &tyl, &tx);
        const float *base = band + (((int64_t)img * ck->bh + 4 * tyl) * ck->bw + 4 * tx) * g->ldx;
        for (int gi = 0; gi < ng; gi++) {
            float d[5][5][LANES], e[5][3][LANES]; /* e: even columns transformed */
            for (int r = 0; r < 5; r++)
                for (int c = 0; c < 5; c++) {
                    const float *p = base + ((int64_t)r * ck->bw + c) * g->ldx + gi * LANES;
#pragma omp simd
                    for (int l = 0; l < LANES; l++) d[r][c][l] = p[l];
                }
            for (int r = 0; r < 5; r++)
#pragma omp simd
                for (int l = 0; l < LANES; l++) {
                    e[r][0][l] = d[r][0][l] - d[r][2][l];
                    e[r][1][l] = d[r][2][l];
                    e[r][2][l] = d[r][4][l] - d[r][2][l];
                }
            float *vt = V + t * g->ldv + gi * LANES;
            /* even rows (0,2,4) transformed, against even columns (u 0..8) and odd ones
             * (u 9..11, group = odd column) */
            for (int c = 0; c < 5; c++) {
                float *dst;
                const float *r0, *r2, *r4;
                if (c < 3) {
                    r0 = e[0][c], r2 = e[2][c], r4 = e[4][c];
                    dst = vt + (int64_t)g->voff[c] * gs;
                } else {
                    int oc = c - 3; /* odd column 1 or 3 */
                    r0 = d[0][2 * oc + 1], r2 = d[2][2 * oc + 1], r4 = d[4][2 * oc + 1];
                    dst = vt + (int64_t)(g->voff[9] + oc) * gs;
                }
                int64_t step = c < 3 ? 3 * gs : (int64_t)(g->voff[10] - g->voff[9]) * gs;
#pragma omp simd
                for (int l = 0; l < LANES; l++) {
                    dst[l] = r0[l] - r2[l];
                    dst[step + l] = r2[l];
                    dst[2 * step + l] = r4[l] - r2[l];
                }
            }
            /* odd rows (1,3) against even columns transformed (u 12..14, group = odd row) and odd
             * columns (u 15, group = 2*odd row + odd column) */
            for (int orw = 0; orw < 2; orw++) {
                int r = 2 * orw + 1;
                for (int c = 0; c < 3; c++) {
                    float *dst = vt + (int64_t)(g->voff[12 + c] + orw) * gs;
#pragma omp simd
                    for (int l = 0; l < LANES; l++) dst[l] = e[r][c][l];
                }
                for (int oc = 0; oc < 2; oc++) {
                    float *dst = vt + (int64_t)(g->voff[15] + 2 * orw + oc) * gs;
#pragma omp simd
                    for (int l = 0; l < LANES; l++) dst[l] = d[r][2 * oc + 1][l];
                }
            }
        }
    }
}

/* u[pos] = (G g G^T)[pos] for 16 lanes; g[kk] points at the 16 lanes of tap kk; stored to
 * dst + pos*pstride (64-byte aligned: one cache line each). stream: non-temporal stores (the
 * precomputed weights of a whole layer go to memory; this saves reading the lines first). */
static inline void weight_tile(const float *const g[9], float *dst, int64_t pstride,
                               bool stream) {
    float a[4][3][LANES], u[16][LANES];
    for (int c = 0; c < 3; c++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float g0 = g[c][l], g1 = g[3 + c][l], g2 = g[6 + c][l];
            a[0][c][l] = g0;
            a[1][c][l] = 0.5f * (g0 + g1 + g2);
            a[2][c][l] = 0.5f * (g0 - g1 + g2);
            a[3][c][l] = g2;
        }
    for (int r = 0; r < 4; r++)
#pragma omp simd
        for (int l = 0; l < LANES; l++) {
            float a0 = a[r][0][l], a1 = a[r][1][l], a2 = a[r][2][l];
            u[r * 4 + 0][l] = a0;
            u[r * 4 + 1][l] = 0.5f * (a0 + a1 + a2);
            u[r * 4 + 2][l] = 0.5f * (a0 - a1 + a2);
            u[r * 4 + 3][l] = a2;
        }
#if defined(__AVX512F__)
    if (stream) {
        for (int pos = 0; pos < 16; pos++)
            _mm512_stream_ps(dst + pos * pstride, _mm512_loadu_ps(u[pos]));
        return;
    }
#endif
    for (int pos = 0; pos < 16; pos++) memcpy(dst + pos * pstride, u[pos], sizeof u[0]);
}

/* Stride 2: the 16 transformed weights u of one tap set g[kh*3+kw] (see the file comment). */
static inline void weight_tile_s2(const float *const g[9], float *dst, int64_t pstride,
                                  bool stream) {
    float u[16][LANES];
#pragma omp simd
    for (int l = 0; l < LANES; l++) {
        float w00 = g[0][l], w01 = g[1][l], w02 = g[2][l], w10 = g[3][l], w11 = g[4][l];
        float w12 = g[5][l], w20 = g[6][l], w21 = g[7][l], w22 = g[8][l];
        float c0[3] = {w00, w00 + w20, w20}, c2[3] = {w02, w02 + w22, w22}; /* G on columns */
        for (int r = 0; r < 3; r++) {
            u[r * 3 + 0][l] = c0[r];
            u[r * 3 + 1][l] = c0[r] + c2[r];
            u[r * 3 + 2][l] = c2[r];
        }
        u[9][l] = w01;
        u[10][l] = w01 + w21;
        u[11][l] = w21;
        u[12][l] = w10;
        u[13][l] = w10 + w12;
        u[14][l] = w12;
        u[15][l] = w11;
    }
#if defined(__AVX512F__)
    if (stream) {
        for (int pos = 0; pos < 16; pos++)
            _mm512_stream_ps(dst + pos * pstride, _mm512_loadu_ps(u[pos]));
        return;
    }
#endif
    for (int pos = 0; pos < 16; pos++) memcpy(dst + pos * pstride, u[pos], sizeof u[0]);
}

/* Transformed weights (G g G^T, or the stride-2 set) for input channels [k0, k0+kc) and output
 * channels [j0, j0+nj), into 16 sets of packed B panels: U + pos*pstride, panel p at p*kc*NR,
 * element (k, j) at [k*NR + j%NR]; columns past nj zero. g[co][ci] = w[co][ci] (w (K, C, 3, 3)),
 * or with wflip g[co][ci] = w[ci][co] rotated 180 degrees (w (C, K, 3, 3)). Lanes run over co:
 * 16 rows of w are transposed 16x16 at a time (forward: 16 input channels x 9 taps = 144
 * contiguous floats per row; flipped: the 16 co of one row are 144 contiguous floats). */
static void weight_transform(float *U, int64_t pstride, const float *w, bool wflip, int stride,
                             int C, int K, int k0, int kc, int j0, int nj, bool stream) {
    int ngr = (int)(rup(nj, LK_CONV_NR) / LANES);
    float t[16 * 9][LANES];
    static const float zero[LANES];
    for (int gr = 0; gr < ngr; gr++) {
        int co0 = j0 + gr * LANES;
        int nl = nj - gr * LANES;
        if (nl > LANES) nl = LANES;
        float *dst0 = U + (int64_t)(gr * LANES / LK_CONV_NR) * kc * LK_CONV_NR +
                      (gr * LANES) % LK_CONV_NR;
        if (nl <= 0) {
            const float *g[9] = {zero, zero, zero, zero, zero, zero, zero, zero, zero};
            for (int k = 0; k < kc; k++) /* zero weights transform to zero either way */
                weight_tile(g, dst0 + (int64_t)k * LK_CONV_NR, pstride, stream);
            continue;
        }
        if (nl < LANES) memset(t, 0, sizeof t);
        for (int ks = 0; ks < kc; ks += 16) {
            int nk = kc - ks < 16 ? kc - ks : 16;
            if (!wflip) {
                const float *src = w + ((int64_t)co0 * C + k0 + ks) * 9;
                for (int q = 0; q * 16 < nk * 9; q++) {
                    int cols = nk * 9 - q * 16 < 16 ? nk * 9 - q * 16 : 16;
                    lk__conv_tr16(src + q * 16, (int64_t)C * 9, t[q * 16], LANES, nl, cols, false);
                }
            }
            for (int kl = 0; kl < nk; kl++) {
                const float *g[9];
                if (!wflip) {
                    for (int kk = 0; kk < 9; kk++) g[kk] = t[kl * 9 + kk];
                } else {
                    lk__conv_tr16(w + ((int64_t)(k0 + ks + kl) * K + co0) * 9, 9, t[0], LANES,
                                  nl, 9, false);
                    for (int kk = 0; kk < 9; kk++) g[kk] = t[8 - kk];
                }
                if (stride == 2)
                    weight_tile_s2(g, dst0 + (int64_t)(ks + kl) * LK_CONV_NR, pstride, stream);
                else
                    weight_tile(g, dst0 + (int64_t)(ks + kl) * LK_CONV_NR, pstride, stream);
            }
        }
    }
}

/* The 2 output rows of one tile row, held channel-minor in tmp[r][x][16] for 16 channels
 * starting at k0, are transposed into out (B, K, OH, OW) (+= when accumulate). */
static void store_tile_row(float *out, bool accumulate, const float *tmp, const wino_geo *g,
                           int img, int ty, int k0) {
    int64_t OHW = (int64_t)g->OH * g->OW;
    int nch = g->K - k0 < LANES ? g->K - k0 : LANES;
    for (int r = 0; r < 2; r++) {
        int oy = 2 * ty + r;
        if (oy >= g->OH) break;
        float *dst = out + ((int64_t)img * g->K + k0) * OHW + (int64_t)oy * g->OW;
        const float *src = tmp + (int64_t)r * 2 * g->tw * LANES;
        for (int ox = 0; ox < g->OW; ox += LANES) {
            int npx = g->OW - ox < LANES ? g->OW - ox : LANES;
            lk__conv_tr16(src + (int64_t)ox * LANES, LANES, dst + ox, OHW, npx, nch, accumulate);
        }
    }
}

/* out[img][k][2ty+r][2tx+c] (+)= (A^T M A)[r][c] (+ bias) for the chunk's tiles; out NCHW
 * (B, K, OH, OW). tmp: per-thread 2*(2*tw)*16 floats. Stride 2 sums the four parity classes. */
static void output_transform(float *out, bool accumulate, const float *M, const float *bias,
                             const wino_geo *g, const wino_chunk *ck, float *tmp_all) {
    int64_t gs = ck->T * g->ldm; /* one row group */
    int ng = (int)(rup(g->K, LANES) / LANES);
    int64_t tmpn = 2 * 2 * (int64_t)g->tw * LANES;
    int nitems = ck->nb * ck->nty * ng;
#pragma omp parallel for schedule(static)
    for (int it = 0; it < nitems; it++) {
        float *tmp = tmp_all + (int64_t)omp_get_thread_num() * tmpn;
        int gi = it % ng;
        int row = it / ng; /* img * nty + tyl */
        int img = row / ck->nty, tyl = row - img * ck->nty;
        float bv[LANES];
        for (int l = 0; l < LANES; l++)
            bv[l] = bias && gi * LANES + l < g->K ? bias[gi * LANES + l] : 0.0f;
        int64_t t0 = (int64_t)row * g->tw;
        for (int tx = 0; tx < g->tw; tx++) {
            const float *m = M + (t0 + tx) * g->ldm + gi * LANES;
            float *d0 = tmp + 2 * tx * LANES, *d1 = d0 + 2 * g->tw * LANES;
            if (g->s == 1) {
                float sr[2][4][LANES];
                for (int c = 0; c < 4; c++)
#pragma omp simd
                    for (int l = 0; l < LANES; l++) {
                        float m0 = m[(0 + c) * gs + l], m1 = m[(4 + c) * gs + l];
                        float m2 = m[(8 + c) * gs + l], m3 = m[(12 + c) * gs + l];
                        sr[0][c][l] = m0 + m1 + m2;
                        sr[1][c][l] = m1 - m2 - m3;
                    }
                for (int r = 0; r < 2; r++) {
                    float *d = r ? d1 : d0;
#pragma omp simd
                    for (int l = 0; l < LANES; l++) {
                        float a0 = sr[r][0][l], a1 = sr[r][1][l], a2 = sr[r][2][l];
                        float a3 = sr[r][3][l];
                        d[l] = a0 + a1 + a2 + bv[l];
                        d[LANES + l] = a1 - a2 - a3 + bv[l];
                    }
                }
            } else {
                /* q[i][l]: the 25 products of the tile; even-even rows first, then even-odd,
                 * odd-even, odd-odd, each in the group order of the input transform */
                const int *vo = g->voff;
                float ee[3][3][LANES], eo[3][2][LANES], oe[2][3][LANES], oo[2][2][LANES];
                for (int r = 0; r < 3; r++)
                    for (int c = 0; c < 3; c++) {
                        const float *src = m + (int64_t)vo[r * 3 + c] * gs;
#pragma omp simd
                        for (int l = 0; l < LANES; l++) ee[r][c][l] = src[l];
                    }
                for (int r = 0; r < 3; r++)
                    for (int c = 0; c < 2; c++) {
                        const float *src = m + (int64_t)(vo[9 + r] + c) * gs;
#pragma omp simd
                        for (int l = 0; l < LANES; l++) eo[r][c][l] = src[l];
                    }
                for (int r = 0; r < 2; r++)
                    for (int c = 0; c < 3; c++) {
                        const float *src = m + (int64_t)(vo[12 + c] + r) * gs;
#pragma omp simd
                        for (int l = 0; l < LANES; l++) oe[r][c][l] = src[l];
                    }
                for (int r = 0; r < 2; r++)
                    for (int c = 0; c < 2; c++) {
                        const float *src = m + (int64_t)(vo[15] + 2 * r + c) * gs;
#pragma omp simd
                        for (int l = 0; l < LANES; l++) oo[r][c][l] = src[l];
                    }
                for (int r = 0; r < 2; r++) {
                    float *d = r ? d1 : d0;
#pragma omp simd
                    for (int l = 0; l < LANES; l++) {
                        float s0 = ee[r][0][l] + ee[r + 1][0][l];
                        float s1 = ee[r][1][l] + ee[r + 1][1][l];
                        float s2 = ee[r][2][l] + ee[r + 1][2][l];
                        d[l] = s0 + s1 + eo[r][0][l] + eo[r + 1][0][l] + oe[r][0][l] +
                               oe[r][1][l] + oo[r][0][l] + bv[l];
                        d[LANES + l] = s1 + s2 + eo[r][1][l] + eo[r + 1][1][l] + oe[r][1][l] +
                                       oe[r][2][l] + oo[r][1][l] + bv[l];
                    }
                }
            }
        }
        store_tile_row(out, accumulate, tmp, g, ck->b0 + img, ck->ty0 + tyl, gi * LANES);
    }
}

static void geo_init(wino_geo *g, int B, int C, int H, int W, int K, int pad, int stride) {
    g->B = B;
    g->C = C;
    g->H = H;
    g->W = W;
    g->K = K;
    g->pad = pad;
    g->s = stride;
    g->OH = (H + 2 * pad - 3) / stride + 1;
    g->OW = (W + 2 * pad - 3) / stride + 1;
    g->voff[0] = 0;
    for (int u = 0; u < 16; u++) /* stride 2: row groups 1 (u < 9), 2 (u < 15), 4 (u 15) */
        g->voff[u + 1] = g->voff[u] + (stride == 1 || u < 9 ? 1 : u < 15 ? 2 : 4);
    g->th = (g->OH + 1) / 2;
    g->tw = (g->OW + 1) / 2;
    g->ldx = rup(C, LANES);
    g->ldv = lk__conv_ld(C);
    g->ldm = lk__conv_ld(K);
    g->ldy = rup(K, LANES);
}

/* Chunk shape: whole images while they fit the budget, else bands of tile rows of one image.
 * per_tile: floats of scratch per tile. */
static void chunk_shape(const wino_geo *g, int64_t per_tile, int *nb, int *nty) {
    int64_t t1 = (int64_t)g->th * g->tw;
    if (t1 * per_tile <= WINO_BUDGET) {
        int64_t n = WINO_BUDGET / (t1 * per_tile);
        *nb = (int)(n < g->B ? n : g->B);
        *nty = g->th;
    } else {
        int64_t n = WINO_BUDGET / ((int64_t)g->tw * per_tile);
        *nb = 1;
        *nty = (int)(n < 1 ? 1 : n);
    }
}

static void chunk_at(const wino_geo *g, int b0, int ty0, int nb, int nty, wino_chunk *ck) {
    ck->b0 = b0;
    ck->ty0 = ty0;
    ck->nb = g->B - b0 < nb ? g->B - b0 : nb;
    ck->nty = g->th - ty0 < nty ? g->th - ty0 : nty;
    ck->T = (int64_t)ck->nb * ck->nty * g->tw;
    ck->bh = g->s == 1 ? 2 * ck->nty + 2 : 4 * ck->nty + 1;
    ck->bw = g->s == 1 ? 2 * g->tw + 2 : 4 * g->tw + 1;
}

/* Row-split count so that (column blocks x splits) gives every thread several items. */
static int row_splits(int64_t T, int ncol_blocks, int nt) {
    int want = 4 * nt;
    if (ncol_blocks >= want) return 1;
    int64_t r = (want + ncol_blocks - 1) / ncol_blocks;
    int64_t cap = T / (4 * LK_CONV_MR);
    if (r > cap) r = cap;
    return r < 1 ? 1 : (int)r;
}

/* Precomputed transformed weights (all 16 positions, all channels) are worth it when they are
 * small compared with what recomputing them per column block would stream: estimates in floats
 * of memory traffic for both schedules. */
static bool precompute_weights(const wino_geo *g, int nbc, int ntyc) {
    int64_t u_all = 16 * rup(g->K, LK_CONV_NR) * g->C;
    if (u_all > WINO_UMAX) return false;
    int64_t nchunks = (int64_t)((g->B + nbc - 1) / nbc) * ((g->th + ntyc - 1) / ntyc);
    int64_t tc = (int64_t)nbc * ntyc * g->tw;
    int64_t rb = (tc + LK_CONV_MC - 1) / LK_CONV_MC;
    int64_t s1 = u_all * (1 + nchunks * rb);
    int64_t s2 = nchunks * ((int64_t)g->K * g->C * 9 +
                            g->voff[16] * tc * g->ldv * ((g->K + WINO_NCW - 1) / WINO_NCW));
    return s1 <= s2;
}

lk_status lk__conv_wino_forward(float *out, bool accumulate, const float *x, const float *w,
                                bool wflip, const float *bias, int B, int C, int H, int W,
                                int K, int pad, int stride) {
    wino_geo g;
    geo_init(&g, B, C, H, W, K, pad, stride);
    int nt = lk__conv_threads();
    int nbc, ntyc;
    int64_t ngr = g.voff[16]; /* row groups of T tiles in V and M */
    chunk_shape(&g, ngr * (g.ldv + g.ldm) + (stride == 1 ? 4 : 16) * g.ldx, &nbc, &ntyc);
    bool pre = precompute_weights(&g, nbc, ntyc);
    int64_t Kp = rup(K, LK_CONV_NR);
    int64_t Tmax = (int64_t)nbc * ntyc * g.tw;
    wino_chunk big;
    chunk_at(&g, 0, 0, nbc, ntyc, &big);
    int64_t n_band = (int64_t)nbc * big.bh * big.bw * g.ldx;
    int64_t n_v = ngr * Tmax * g.ldv, n_m = ngr * Tmax * g.ldm;
    int64_t ublk = 16 * (int64_t)WINO_NCW * WINO_KC; /* per thread, fused schedule */
    int64_t n_u = pre ? 16 * Kp * C : ublk * nt;
    int64_t n_tmp = 4 * (int64_t)g.tw * LANES * nt;
    size_t bytes = lk__conv_fbytes(n_band) + lk__conv_fbytes(n_v) + lk__conv_fbytes(n_m) +
                   lk__conv_fbytes(n_u) + lk__conv_fbytes(n_tmp) + lk__conv_ws_bytes(nt);
    lk__conv_scratch sc;
    lk_status st = lk__conv_scratch_open(&sc, bytes, "Winograd");
    if (st != LK_OK) return st;
    float *band = lk__conv_scratch_floats(&sc, n_band);
    float *V = lk__conv_scratch_floats(&sc, n_v);
    float *M = lk__conv_scratch_floats(&sc, n_m);
    float *U = lk__conv_scratch_floats(&sc, n_u);
    float *tmp = lk__conv_scratch_floats(&sc, n_tmp);
    lk__conv_ws *ws = lk__conv_scratch_ws(&sc, nt);
    if (pre) {
        /* stream the transformed weights to memory when they would not stay in cache anyway */
        bool stream = n_u > WINO_USTREAM;
        int npan = (int)(Kp / LK_CONV_NR);
#pragma omp parallel for schedule(dynamic, 1)
        for (int pn = 0; pn < npan; pn++) {
            int j0 = pn * LK_CONV_NR, nj = K - j0 < LK_CONV_NR ? K - j0 : LK_CONV_NR;
            weight_transform(U + (int64_t)pn * C * LK_CONV_NR, Kp * C, w, wflip, stride, C, K, 0,
                             C, j0, nj, stream);
#if defined(__AVX512F__)
            _mm_sfence(); /* order the streaming stores before the GEMMs read them */
#endif
        }
    }
    int ncb = (K + WINO_NCW - 1) / WINO_NCW;
    for (int b0 = 0; b0 < B; b0 += nbc)
        for (int ty0 = 0; ty0 < g.th; ty0 += ntyc) {
            wino_chunk ck;
            chunk_at(&g, b0, ty0, nbc, ntyc, &ck);
            band_nhwc(band, g.ldx, x, C, H, W, b0, ck.nb, 2 * stride * ty0 - pad, ck.bh, -pad,
                      ck.bw);
            if (stride == 1) input_transform(V, band, &g, &ck);
            else input_transform_s2(V, band, &g, &ck);
            if (pre) {
                /* items: (row group, block of its tiles), all the same size; each a full GEMM
                 * over K and C with the group's transformed weight */
                int ngrp = g.voff[16];
                int rb = (int)((ck.T + LK_CONV_MC - 1) / LK_CONV_MC);
                while (ngrp * rb < 3 * nt && ck.T / (rb + 1) >= 4 * LK_CONV_MR) rb++;
                int64_t rows = rup((ck.T + rb - 1) / rb, LK_CONV_MR);
#pragma omp parallel for schedule(dynamic, 1)
                for (int it = 0; it < ngrp * rb; it++) {
                    int grp = it / rb, u = 0;
                    while (g.voff[u + 1] <= grp) u++;
                    int64_t r0 = (it % rb) * rows;
                    int64_t nr = ck.T - r0 < rows ? ck.T - r0 : rows;
                    if (nr <= 0) continue;
                    int64_t row0 = (int64_t)grp * ck.T;
                    lk__conv_mat A = lk__conv_view(V + row0 * g.ldv, g.ldv, 1);
                    lk__conv_mat Bm = {U + u * Kp * C, 0, 0, (int64_t)C * LK_CONV_NR, NULL,
                                       NULL};
                    lk__conv_gemm(r0, (int)nr, 0, K, C, &A, &Bm, M + (row0 + r0) * g.ldm, g.ldm,
                                  false, NULL, &ws[omp_get_thread_num()]);
                }
            } else {
                /* items: (block of output channels, share of the rows); each transforms its own
                 * weights a depth block at a time, then runs the 16 GEMMs on them */
                int rs = row_splits(ck.T, ncb, nt);
#pragma omp parallel for schedule(dynamic, 1)
                for (int it = 0; it < ncb * rs; it++) {
                    int tid = omp_get_thread_num();
                    float *Ut = U + (int64_t)tid * ublk;
                    int jb = it / rs, ri = it % rs;
                    int j0 = jb * WINO_NCW, nj = K - j0 < WINO_NCW ? K - j0 : WINO_NCW;
                    for (int k0 = 0; k0 < C; k0 += WINO_KC) {
                        int kc = C - k0 < WINO_KC ? C - k0 : WINO_KC;
                        int64_t pstride = rup(nj, LK_CONV_NR) * kc;
                        weight_transform(Ut, pstride, w, wflip, stride, C, K, k0, kc, j0, nj,
                                         false);
                        for (int u = 0; u < 16; u++) {
                            int64_t R = (g.voff[u + 1] - g.voff[u]) * ck.T;
                            int64_t rows = rup((R + rs - 1) / rs, LK_CONV_MR);
                            int64_t r0 = ri * rows;
                            int64_t nr = R - r0 < rows ? R - r0 : rows;
                            if (nr <= 0) continue;
                            int64_t row0 = g.voff[u] * ck.T;
                            lk__conv_mat A = lk__conv_view(V + row0 * g.ldv + k0, g.ldv, 1);
                            lk__conv_mat Bm = {Ut + u * pstride, 0, 0, (int64_t)kc * LK_CONV_NR,
                                               NULL, NULL};
                            lk__conv_gemm(r0, (int)nr, 0, nj, kc, &A, &Bm,
                                          M + (row0 + r0) * g.ldm + j0, g.ldm, k0 > 0, NULL,
                                          &ws[tid]);
                        }
                    }
                }
            }
            output_transform(out, accumulate, M, bias, &g, &ck, tmp);
        }
    lk__conv_scratch_close(&sc);
    return LK_OK;
}

/* D[pos][t][k] = (Gd e Gd^T)[pos] for the 2x2 output-gradient patch e of every tile. */
static void dout_transform(float *D, const float *band, const wino_geo *g, const wino_chunk *ck) {
    int64_t dstride = ck->T * g->ldm;
    int ng = (int)(rup(g->K, LANES) / LANES);
    int bw = 2 * g->tw;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < ck->T; t++) {
        int img, tyl, tx;
        tile_pos(g, ck, t, &img, &tyl, &tx);
        const float *base = band + (((int64_t)img * 2 * ck->nty + 2 * tyl) * bw + 2 * tx) * g->ldy;
        for (int gi = 0; gi < ng; gi++) {
            const float *e00 = base + gi * LANES, *e01 = e00 + g->ldy;
            const float *e10 = e00 + (int64_t)bw * g->ldy, *e11 = e10 + g->ldy;
            float f[4][2][LANES];
#pragma omp simd
            for (int l = 0; l < LANES; l++) {
                f[0][0][l] = e00[l];
                f[1][0][l] = 0.5f * (e00[l] + e10[l]);
                f[2][0][l] = 0.5f * (e00[l] - e10[l]);
                f[3][0][l] = e10[l];
                f[0][1][l] = e01[l];
                f[1][1][l] = 0.5f * (e01[l] + e11[l]);
                f[2][1][l] = 0.5f * (e01[l] - e11[l]);
                f[3][1][l] = e11[l];
            }
            float *dt = D + t * g->ldm + gi * LANES;
            for (int r = 0; r < 4; r++) {
                float *d0 = dt + (r * 4) * dstride;
#pragma omp simd
                for (int l = 0; l < LANES; l++) {
                    float a0 = f[r][0][l], a1 = f[r][1][l];
                    d0[l] = a0;
                    d0[dstride + l] = 0.5f * (a0 + a1);
                    d0[2 * dstride + l] = 0.5f * (a0 - a1);
                    d0[3 * dstride + l] = a1;
                }
            }
        }
    }
}

/* dw[k][c][kh][kw] += (Ad^T S Ad)[kh][kw] for the block S[pos][k - k0][c - c0] (row stride ld). */
static void dweight_output(float *dw, int C, const float *S, int64_t pstride, int64_t ld, int k0,
                           int mk, int c0, int nc) {
    for (int kl = 0; kl < mk; kl++)
        for (int cl = 0; cl < nc; cl += LANES) {
            int nl = nc - cl < LANES ? nc - cl : LANES;
            const float *m = S + kl * ld + cl;
            float s[3][4][LANES], res[9][LANES];
            for (int c = 0; c < 4; c++)
#pragma omp simd
                for (int l = 0; l < LANES; l++) {
                    float m0 = m[c * pstride + l], m1 = m[(4 + c) * pstride + l];
                    float m2 = m[(8 + c) * pstride + l], m3 = m[(12 + c) * pstride + l];
                    s[0][c][l] = m0 + m1 + m2;
                    s[1][c][l] = m1 - m2;
                    s[2][c][l] = m1 + m2 - m3;
                }
            for (int r = 0; r < 3; r++)
#pragma omp simd
                for (int l = 0; l < LANES; l++) {
                    float a0 = s[r][0][l], a1 = s[r][1][l], a2 = s[r][2][l], a3 = s[r][3][l];
                    res[r * 3 + 0][l] = a0 + a1 + a2;
                    res[r * 3 + 1][l] = a1 - a2;
                    res[r * 3 + 2][l] = a1 + a2 - a3;
                }
            lk__conv_tr16(res[0], LANES, dw + ((int64_t)(k0 + kl) * C + c0 + cl) * 9, 9, 9, nl,
                          true);
        }
}

static int nblocks(int n, int target) { return (n + target - 1) / target; }

lk_status lk__conv_wino_dweight(float *dw, const float *dout, const float *x, int B, int C,
                                int H, int W, int K, int pad) {
    wino_geo g;
    geo_init(&g, B, C, H, W, K, pad, 1);
    int nt = lk__conv_threads();
    int nbc, ntyc;
    chunk_shape(&g, 16 * (g.ldv + g.ldm) + 4 * (g.ldx + g.ldy), &nbc, &ntyc);
    int64_t Tmax = (int64_t)nbc * ntyc * g.tw;
    /* items: blocks of (output channel rows) x (input channel columns) of dW */
    int nbk = nblocks(K, WINO_DW_MK), nbcol = nblocks(C, WINO_DW_NC);
    while (nt > 1 && nbk * nbcol < 8 * nt && (nbk * nbcol) % nt != 0) {
        if (K / (nbk + 1) >= LK_CONV_MR && K / nbk >= C / nbcol) nbk++;
        else if (C / (nbcol + 1) >= LANES) nbcol++;
        else break;
    }
    int mk = (int)rup((K + nbk - 1) / nbk, LK_CONV_MR);
    int nc = (int)rup((C + nbcol - 1) / nbcol, LANES);
    int64_t sld = lk__conv_ld(nc);
    int64_t spstride = (int64_t)mk * sld;
    int64_t n_band = (int64_t)nbc * (2 * ntyc + 2) * (2 * g.tw + 2) * g.ldx;
    int64_t n_dband = (int64_t)nbc * (2 * ntyc) * (2 * g.tw) * g.ldy;
    int64_t n_v = 16 * Tmax * g.ldv, n_d = 16 * Tmax * g.ldm, n_s = 16 * spstride * nt;
    size_t bytes = lk__conv_fbytes(n_band) + lk__conv_fbytes(n_dband) + lk__conv_fbytes(n_v) +
                   lk__conv_fbytes(n_d) + lk__conv_fbytes(n_s) + lk__conv_ws_bytes(nt);
    lk__conv_scratch sc;
    lk_status st = lk__conv_scratch_open(&sc, bytes, "Winograd weight-gradient");
    if (st != LK_OK) return st;
    float *band = lk__conv_scratch_floats(&sc, n_band);
    float *dband = lk__conv_scratch_floats(&sc, n_dband);
    float *V = lk__conv_scratch_floats(&sc, n_v);
    float *D = lk__conv_scratch_floats(&sc, n_d);
    float *Sall = lk__conv_scratch_floats(&sc, n_s);
    lk__conv_ws *ws = lk__conv_scratch_ws(&sc, nt);
    for (int b0 = 0; b0 < B; b0 += nbc)
        for (int ty0 = 0; ty0 < g.th; ty0 += ntyc) {
            wino_chunk ck;
            chunk_at(&g, b0, ty0, nbc, ntyc, &ck);
            band_nhwc(band, g.ldx, x, C, H, W, b0, ck.nb, 2 * ty0 - pad, ck.bh, -pad, ck.bw);
            input_transform(V, band, &g, &ck);
            band_nhwc(dband, g.ldy, dout, K, g.OH, g.OW, b0, ck.nb, 2 * ty0, 2 * ck.nty, 0,
                      2 * g.tw);
            dout_transform(D, dband, &g, &ck);
            int nitems = nbk * nbcol;
#pragma omp parallel for schedule(dynamic, 1)
            for (int it = 0; it < nitems; it++) {
                int tid = omp_get_thread_num();
                float *S = Sall + (int64_t)tid * 16 * spstride;
                int k0 = (it / nbcol) * mk, c0 = (it % nbcol) * nc;
                int mkk = K - k0 < mk ? K - k0 : mk, ncc = C - c0 < nc ? C - c0 : nc;
                if (mkk <= 0 || ncc <= 0) continue;
                for (int pos = 0; pos < 16; pos++) {
                    lk__conv_mat A = lk__conv_view(D + pos * ck.T * g.ldm, 1, g.ldm);
                    lk__conv_mat Bm = lk__conv_view(V + pos * ck.T * g.ldv, 1, g.ldv);
                    lk__conv_gemm(k0, mkk, c0, ncc, (int)ck.T, &A, &Bm, S + pos * spstride, sld,
                                  false, NULL, &ws[tid]);
                }
                dweight_output(dw, C, S, spstride, sld, k0, mkk, c0, ncc);
            }
        }
    lk__conv_scratch_close(&sc);
    return LK_OK;
}
