/* conv2d_im2col.c: convolution as GEMM over the im2col matrix (Chellapilla et al. 2006) without
 * ever forming it: the GEMM's packing step gathers the patches it needs (implicit im2col), so
 * scratch stays a few panels per thread. A 1x1 stride-1 unpadded convolution uses x directly.
 *   forward  out[b] (Cout, P)  = W (Cout, Kd) col[b] (Kd, P)           Kd = Cin*KH*KW, P = OH*OW
 *   dinput   dx[b] += col2im(W^T dout[b])
 *   dweight  dW += dout[b] col[b]^T */
#include "kernels/cpu/conv2d_internal.h"

#include <omp.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef struct col_src {
    const float *x; /* one image (Cin, H, W) */
    int Cin, H, W, KH, KW, stride, pad, OW;
} col_src;

static col_src col_of(const float *x, const lk_conv2d_desc *d, int b) {
    col_src c = {x + (int64_t)b * d->Cin * d->H * d->W, d->Cin, d->H, d->W, d->KH, d->KW,
                 d->stride, d->pad, d->OW};
    return c;
}

/* [*lo, *hi): the j in [0, n) with 0 <= iw0 + j*s < W */
static void in_range(int iw0, int s, int n, int W, int *lo, int *hi) {
    if (iw0 >= 0 && iw0 + (n - 1) * s < W) { /* the common interior case: no divisions */
        *lo = 0;
        *hi = n;
        return;
    }
    int a = iw0 >= 0 ? 0 : (-iw0 + s - 1) / s;
    int b = iw0 >= W ? 0 : (W - 1 - iw0) / s + 1;
    if (a > n) a = n;
    if (b > n) b = n;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* dst[j] = row[iw0 + j*s] for j < n, zero where the column is outside [0, W). */
static void row_gather(float *dst, const float *row, int W, int iw0, int s, int n) {
    int lo, hi;
    in_range(iw0, s, n, W, &lo, &hi);
    for (int j = 0; j < lo; j++) dst[j] = 0.0f;
    for (int j = hi; j < n; j++) dst[j] = 0.0f;
    const float *src = row + iw0 + (int64_t)lo * s;
    int m = hi - lo;
    float *d = dst + lo;
    if (s == 1) {
        for (int j = 0; j < m; j += 32) lk__conv_copy32(d + j, src + j, m - j);
        return;
    }
#if defined(__AVX512F__)
    if (s == 2) {
        const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6,
                                              4, 2, 0);
        /* full chunks: floats [0,16) and [15,31) of the source, exactly the span needed (masked
         * loads reaching past it can take a slow assist when they cross a page) */
        const __m512i even15 = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 14, 12, 10, 8, 6,
                                                4, 2, 0);
        int j = 0;
        for (; j + 16 <= m; j += 16)
            _mm512_storeu_ps(d + j, _mm512_permutex2var_ps(_mm512_loadu_ps(src + 2 * j), even15,
                                                           _mm512_loadu_ps(src + 2 * j + 15)));
        for (; j < m; j += 16) {
            int c = m - j < 16 ? m - j : 16; /* outputs; they span 2c-1 source floats */
            int e = 2 * c - 1;
            __mmask16 ml = (__mmask16)(e >= 16 ? 0xFFFFu : (1u << e) - 1u);
            __mmask16 mh = (__mmask16)(e <= 16 ? 0u : (1u << (e - 16)) - 1u);
            __m512 a = _mm512_maskz_loadu_ps(ml, src + 2 * j);
            __m512 b = _mm512_maskz_loadu_ps(mh, src + 2 * j + 16);
            _mm512_mask_storeu_ps(d + j, (__mmask16)((1u << c) - 1u),
                                  _mm512_permutex2var_ps(a, even, b));
        }
        return;
    }
#endif
    for (int j = 0; j < m; j++) d[j] = src[(int64_t)j * s];
}

/* row[iw0 + j*s] += src[j] for j < n where the column is inside [0, W). */
static void row_scatter_add(float *row, int W, int iw0, int s, const float *src, int n) {
    int lo, hi;
    in_range(iw0, s, n, W, &lo, &hi);
    float *r = row + iw0 + (int64_t)lo * s;
    const float *v = src + lo;
    int m = hi - lo;
    if (s == 1) {
        for (int j = 0; j < m; j++) r[j] += v[j];
        return;
    }
#if defined(__AVX512F__)
    if (s == 2) {
        for (int j = 0; j < m; j += 8) {
            int c = m - j < 8 ? m - j : 8; /* sources; they land on 2c-1 row floats */
            int e = 2 * c - 1;
            __mmask16 me = (__mmask16)((1u << e) - 1u);
            __m512 add = _mm512_maskz_expandloadu_ps((__mmask16)(0x5555u & me), v + j);
            __m512 cur = _mm512_maskz_loadu_ps(me, r + 2 * j);
            _mm512_mask_storeu_ps(r + 2 * j, me, _mm512_add_ps(cur, add));
        }
        return;
    }
#endif
    for (int j = 0; j < m; j++) r[(int64_t)j * s] += v[j];
}

/* B(k = patch element kd, j = output position p) = col[kd][p]: per row of the panel, one
 * strided row read per output-row segment. */
static void pack_col(const void *ud, int64_t j0, int nr, int64_t k0, int kc, float *dst) {
    const col_src *u = ud;
    int seg_j[LK_CONV_NR + 1], seg_ih[LK_CONV_NR], seg_iw[LK_CONV_NR], nseg = 0;
    for (int j = 0; j < nr;) {
        int p = (int)(j0 + j), oh = p / u->OW, ow = p - oh * u->OW;
        int len = u->OW - ow < nr - j ? u->OW - ow : nr - j;
        seg_j[nseg] = j;
        seg_ih[nseg] = oh * u->stride - u->pad;
        seg_iw[nseg] = ow * u->stride - u->pad;
        nseg++;
        j += len;
    }
    seg_j[nseg] = nr;
    int KK = u->KH * u->KW;
    int ci = (int)(k0 / KK), r = (int)(k0 - (int64_t)ci * KK);
    int kh = r / u->KW, kw = r - kh * u->KW;
    int64_t HW = (int64_t)u->H * u->W;
    for (int k = 0; k < kc; k++) {
        const float *xc = u->x + ci * HW;
        float *dd = dst + k * LK_CONV_NR;
        if (kw == 0 && ci + 1 < u->Cin) { /* the same rows of the next channel: prefetch */
            for (int sg = 0; sg < nseg; sg++) {
                int ih = seg_ih[sg] + kh;
                if (ih < 0 || ih >= u->H) continue;
                const float *nx = xc + HW + (int64_t)ih * u->W + (seg_iw[sg] > 0 ? seg_iw[sg] : 0);
                int span = (seg_j[sg + 1] - seg_j[sg]) * u->stride;
                for (int q = 0; q < span; q += 16) __builtin_prefetch(nx + q);
            }
        }
        for (int sg = 0; sg < nseg; sg++) {
            int ih = seg_ih[sg] + kh, len = seg_j[sg + 1] - seg_j[sg];
            if (ih < 0 || ih >= u->H)
                memset(dd + seg_j[sg], 0, sizeof(float) * (size_t)len);
            else
                row_gather(dd + seg_j[sg], xc + (int64_t)ih * u->W, u->W, seg_iw[sg] + kw,
                           u->stride, len);
        }
        for (int j = nr; j < LK_CONV_NR; j++) dd[j] = 0.0f;
        if (++kw == u->KW) {
            kw = 0;
            if (++kh == u->KH) {
                kh = 0;
                ci++;
            }
        }
    }
}

/* B(k = output position p, j = patch element kd) = col[kd][p] (col transposed): segments of up
 * to 16 positions in one output row are read as strided rows (one per kd) and transposed. */
static void pack_colT(const void *ud, int64_t j0, int nr, int64_t k0, int kc, float *dst) {
    const col_src *u = ud;
    int KK = u->KH * u->KW;
    int64_t HW = (int64_t)u->H * u->W;
    int64_t off[LK_CONV_NR];
    int dh[LK_CONV_NR], dwo[LK_CONV_NR];
    for (int j = 0; j < nr; j++) {
        int kd = (int)(j0 + j), ci = kd / KK, r = kd - ci * KK;
        off[j] = ci * HW;
        dh[j] = r / u->KW;
        dwo[j] = r - dh[j] * u->KW;
    }
    float tmp[LK_CONV_NR][16];
    for (int k = 0; k < kc;) {
        int p = (int)(k0 + k), oh = p / u->OW, ow = p - oh * u->OW;
        int len = u->OW - ow;
        if (len > kc - k) len = kc - k;
        if (len > 16) len = 16;
        int ihb = oh * u->stride - u->pad, iwb = ow * u->stride - u->pad;
        for (int j = 0; j < nr; j++) {
            int ih = ihb + dh[j];
            if (ih < 0 || ih >= u->H)
                memset(tmp[j], 0, sizeof(float) * (size_t)len);
            else
                row_gather(tmp[j], u->x + off[j] + (int64_t)ih * u->W, u->W, iwb + dwo[j],
                           u->stride, len);
        }
        for (int jb = 0; jb < nr; jb += 16)
            lk__conv_tr16(tmp[jb], 16, dst + (int64_t)k * LK_CONV_NR + jb, LK_CONV_NR,
                          nr - jb < 16 ? nr - jb : 16, len, false);
        for (int kk = k; kk < k + len; kk++)
            for (int j = nr; j < LK_CONV_NR; j++) dst[(int64_t)kk * LK_CONV_NR + j] = 0.0f;
        k += len;
    }
}

/* dst[j/NR][r][j%NR] = src[r*ncol + j] (rows x ncol, NR-column panels, last one zero-padded):
 * the prepacked B operand shared by every work item. */
static void pack_panels(float *dst, const float *src, int rows, int64_t ncol) {
    int64_t npan = (ncol + LK_CONV_NR - 1) / LK_CONV_NR;
#pragma omp parallel for schedule(static)
    for (int64_t pn = 0; pn < npan; pn++) {
        int nr = (int)(ncol - pn * LK_CONV_NR < LK_CONV_NR ? ncol - pn * LK_CONV_NR : LK_CONV_NR);
        for (int r = 0; r < rows; r++) {
            float *d = dst + (pn * rows + r) * LK_CONV_NR;
            lk__conv_copy32(d, src + (int64_t)r * ncol + pn * LK_CONV_NR, nr);
            for (int j = nr; j < LK_CONV_NR; j++) d[j] = 0.0f;
        }
    }
}

static bool is_pointwise(const lk_conv2d_desc *d) {
    return d->KH == 1 && d->KW == 1 && d->stride == 1 && d->pad == 0;
}

static int64_t rupi(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

/* Block sizes for splitting an M x N result among nt threads (per image): whole when there is
 * enough other parallelism (nimg items), else halve the larger side (N first) until there are
 * about 3 items per thread. */
static void split2d(int M, int N, int nimg, int nt, int *bm, int *bn) {
    int64_t m = rupi(M, LK_CONV_MR), n = rupi(N, LK_CONV_NR);
    for (;;) {
        int64_t items = (int64_t)nimg * ((M + m - 1) / m) * ((N + n - 1) / n);
        if (items >= 3 * nt) break;
        if (n >= 4 * LK_CONV_NR && n >= m / 2) n = rupi(n / 2, LK_CONV_NR);
        else if (m >= 4 * LK_CONV_MR) m = rupi(m / 2, LK_CONV_MR);
        else if (n >= 2 * LK_CONV_NR) n = rupi(n / 2, LK_CONV_NR);
        else break;
    }
    *bm = (int)m;
    *bn = (int)n;
}

/* Scratch with nt GEMM workspaces and `extra` floats (returned in *extra_p when asked). */
static lk__conv_ws *open_ws(lk__conv_scratch *sc, int nt, int64_t extra, float **extra_p) {
    if (lk__conv_scratch_open(sc, lk__conv_ws_bytes(nt) + lk__conv_fbytes(extra), "GEMM") !=
        LK_OK)
        return NULL;
    if (extra_p) *extra_p = lk__conv_scratch_floats(sc, extra);
    return lk__conv_scratch_ws(sc, nt);
}

lk_status lk__conv_gemm_forward(float *out, const float *x, const float *w, const float *b,
                                const lk_conv2d_desc *d) {
    int nt = lk__conv_threads();
    lk__conv_scratch sc;
    lk__conv_ws *ws = open_ws(&sc, nt, 0, NULL);
    if (!ws) return LK_ERR_NOMEM;
    int Kd = d->Cin * d->KH * d->KW;
    int64_t P = (int64_t)d->OH * d->OW;
    bool pw = is_pointwise(d);
    int bm, bn;
    split2d(d->Cout, (int)P, d->B, nt, &bm, &bn);
    int nm = (d->Cout + bm - 1) / bm, nn = (int)((P + bn - 1) / bn);
    lk__conv_mat A = lk__conv_view(w, Kd, 1);
    int64_t nitems = (int64_t)d->B * nm * nn;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t it = 0; it < nitems; it++) {
        int bi = (int)(it / ((int64_t)nm * nn));
        int rem = (int)(it - (int64_t)bi * nm * nn);
        int i0 = (rem / nn) * bm, j0 = (rem % nn) * bn;
        int mi = d->Cout - i0 < bm ? d->Cout - i0 : bm;
        int nj = (int)(P - j0 < bn ? P - j0 : bn);
        float *C = out + ((int64_t)bi * d->Cout + i0) * P + j0;
        col_src u = col_of(x, d, bi);
        lk__conv_mat Bm = pw ? lk__conv_view(u.x, 1, P)
                             : (lk__conv_mat){NULL, 0, 0, 0, pack_col, &u};
        lk__conv_gemm(i0, mi, j0, nj, Kd, &A, &Bm, C, P, false, b ? b + i0 : NULL,
                      &ws[omp_get_thread_num()]);
    }
    lk__conv_scratch_close(&sc);
    return LK_OK;
}

/* dx[ci][oh*s-pad+kh][ow*s-pad+kw] += t[(ci-c0)*KK + kh*KW + kw][p - p0] over the block. */
static void col2im_add(float *dxb, const float *t, int64_t ldt, const lk_conv2d_desc *d, int c0,
                       int nc, int p0, int np) {
    int KK = d->KH * d->KW;
    int64_t HW = (int64_t)d->H * d->W;
    for (int cl = 0; cl < nc; cl++) {
        float *xc = dxb + (int64_t)(c0 + cl) * HW;
        for (int kh = 0; kh < d->KH; kh++)
            for (int kw = 0; kw < d->KW; kw++) {
                const float *row = t + ((int64_t)cl * KK + kh * d->KW + kw) * ldt;
                for (int j = 0; j < np;) {
                    int p = p0 + j, oh = p / d->OW, ow = p - oh * d->OW;
                    int len = d->OW - ow < np - j ? d->OW - ow : np - j;
                    int y = oh * d->stride - d->pad + kh;
                    if (y >= 0 && y < d->H)
                        row_scatter_add(xc + (int64_t)y * d->W, d->W,
                                        ow * d->stride - d->pad + kw, d->stride, row + j, len);
                    j += len;
                }
            }
    }
}

lk_status lk__conv_gemm_dinput(float *dx, const float *dout, const float *w,
                               const lk_conv2d_desc *d) {
    int nt = lk__conv_threads();
    int KK = d->KH * d->KW, Kd = d->Cin * KK;
    int64_t P = (int64_t)d->OH * d->OW, HW = (int64_t)d->H * d->W;
    /* element (kd, co) of W^T is w[co*Kd + kd] */
    lk__conv_mat A = lk__conv_view(w, 1, Kd);
    if (is_pointwise(d)) {
        /* dx[b] (Cin, P) += W^T dout[b]: W^T packed once into MR-row panels, dout[b] into
         * NR-column panels, then every item is a plain GEMM on shared operands */
        int64_t npa = (d->Cin + LK_CONV_MR - 1) / LK_CONV_MR;
        int64_t npb = (P + LK_CONV_NR - 1) / LK_CONV_NR;
        int64_t n_a = npa * d->Cout * LK_CONV_MR, n_b = npb * d->Cout * LK_CONV_NR;
        lk__conv_scratch sc;
        float *ap = NULL;
        lk__conv_ws *ws = open_ws(&sc, nt, n_a + n_b, &ap);
        if (!ws) return LK_ERR_NOMEM;
        float *bp = ap + n_a;
#pragma omp parallel for schedule(static)
        for (int64_t pa = 0; pa < npa; pa++) {
            int mr = (int)(d->Cin - pa * LK_CONV_MR < LK_CONV_MR ? d->Cin - pa * LK_CONV_MR
                                                                 : LK_CONV_MR);
            for (int co = 0; co < d->Cout; co++) {
                float *dst = ap + (pa * d->Cout + co) * LK_CONV_MR;
                const float *src = w + (int64_t)co * Kd + pa * LK_CONV_MR;
                for (int i = 0; i < mr; i++) dst[i] = src[i];
                for (int i = mr; i < LK_CONV_MR; i++) dst[i] = 0.0f;
            }
        }
        lk__conv_mat Ap = {ap, 0, 0, (int64_t)d->Cout * LK_CONV_MR, NULL, NULL};
        lk__conv_mat Bp = {bp, 0, 0, (int64_t)d->Cout * LK_CONV_NR, NULL, NULL};
        int bm, bn;
        split2d(d->Cin, (int)P, 1, nt, &bm, &bn);
        int nm = (d->Cin + bm - 1) / bm, nn = (int)((P + bn - 1) / bn);
        for (int bi = 0; bi < d->B; bi++) {
            pack_panels(bp, dout + (int64_t)bi * d->Cout * P, d->Cout, P);
#pragma omp parallel for schedule(dynamic, 1)
            for (int it = 0; it < nm * nn; it++) {
                int i0 = (it / nn) * bm, j0 = (it % nn) * bn;
                int mi = d->Cin - i0 < bm ? d->Cin - i0 : bm;
                int nj = (int)(P - j0 < bn ? P - j0 : bn);
                lk__conv_gemm(i0, mi, j0, nj, d->Cout, &Ap, &Bp,
                              dx + ((int64_t)bi * d->Cin + i0) * HW + j0, HW, true, NULL,
                              &ws[omp_get_thread_num()]);
            }
        }
        lk__conv_scratch_close(&sc);
        return LK_OK;
    }
    /* items: (image, group of input channels); groups own disjoint parts of dx, so col2im never
     * races. dout of the image is packed into GEMM panels once, shared by the groups. */
    int cg = (LK_CONV_MR * 12 + KK - 1) / KK;
    if (cg > d->Cin) cg = d->Cin;
    int ncg = (d->Cin + cg - 1) / cg;
    int pcols = (int)(P < 1024 ? rupi(P, LK_CONV_NR) : 1024);
    int64_t ldt = lk__conv_ld(pcols);
    int64_t npan = (P + LK_CONV_NR - 1) / LK_CONV_NR;
    int64_t n_t = (int64_t)cg * KK * ldt * nt, n_bp = npan * d->Cout * LK_CONV_NR;
    lk__conv_scratch sc;
    float *tall = NULL;
    lk__conv_ws *ws = open_ws(&sc, nt, n_t + rupi(n_bp, 16), &tall);
    if (!ws) return LK_ERR_NOMEM;
    float *bp = tall + n_t;
    lk__conv_mat Bp = {bp, 0, 0, (int64_t)d->Cout * LK_CONV_NR, NULL, NULL};
    for (int bi = 0; bi < d->B; bi++) {
        pack_panels(bp, dout + (int64_t)bi * d->Cout * P, d->Cout, P);
#pragma omp parallel for schedule(dynamic, 1)
        for (int g = 0; g < ncg; g++) {
            int tid = omp_get_thread_num();
            float *t = tall + (int64_t)tid * cg * KK * ldt;
            int c0 = g * cg;
            int nc = d->Cin - c0 < cg ? d->Cin - c0 : cg;
            for (int64_t p0 = 0; p0 < P; p0 += pcols) {
                int np = (int)(P - p0 < pcols ? P - p0 : pcols);
                lk__conv_gemm((int64_t)c0 * KK, nc * KK, p0, np, d->Cout, &A, &Bp, t, ldt, false,
                              NULL, &ws[tid]);
                col2im_add(dx + (int64_t)bi * d->Cin * HW, t, ldt, d, c0, nc, (int)p0, np);
            }
        }
    }
    lk__conv_scratch_close(&sc);
    return LK_OK;
}

lk_status lk__conv_gemm_dweight(float *dw, const float *dout, const float *x,
                                const lk_conv2d_desc *d) {
    int nt = lk__conv_threads();
    int Kd = d->Cin * d->KH * d->KW;
    int64_t P = (int64_t)d->OH * d->OW;
    bool pw = is_pointwise(d);
    /* dout of one image packed once into MR-row panels (the A operand of every item) */
    int64_t npa = (d->Cout + LK_CONV_MR - 1) / LK_CONV_MR;
    lk__conv_scratch sc;
    float *ap = NULL;
    lk__conv_ws *ws = open_ws(&sc, nt, npa * P * LK_CONV_MR, &ap);
    if (!ws) return LK_ERR_NOMEM;
    lk__conv_mat A = {ap, 0, 0, P * LK_CONV_MR, NULL, NULL};
    /* items own column blocks (and row blocks) of dW; images are summed one after another */
    int bm, bn;
    split2d(d->Cout, Kd, 1, nt, &bm, &bn);
    int nm = (d->Cout + bm - 1) / bm, nn = (Kd + bn - 1) / bn;
    for (int bi = 0; bi < d->B; bi++) {
        const float *dy = dout + (int64_t)bi * d->Cout * P;
#pragma omp parallel for schedule(static)
        for (int64_t pa = 0; pa < npa; pa++) {
            int mr = (int)(d->Cout - pa * LK_CONV_MR < LK_CONV_MR ? d->Cout - pa * LK_CONV_MR
                                                                  : LK_CONV_MR);
            float *dst = ap + pa * P * LK_CONV_MR;
            for (int64_t p0 = 0; p0 < P; p0 += 16) {
                int np = (int)(P - p0 < 16 ? P - p0 : 16);
                lk__conv_tr16(dy + pa * LK_CONV_MR * P + p0, P, dst + p0 * LK_CONV_MR, LK_CONV_MR,
                              mr, np, false);
                for (int64_t k = p0; k < p0 + np; k++)
                    for (int i = mr; i < LK_CONV_MR; i++) dst[k * LK_CONV_MR + i] = 0.0f;
            }
        }
        col_src u = col_of(x, d, bi);
#pragma omp parallel for schedule(dynamic, 1)
        for (int it = 0; it < nm * nn; it++) {
            int i0 = (it / nn) * bm, j0 = (it % nn) * bn;
            int mi = d->Cout - i0 < bm ? d->Cout - i0 : bm;
            int nj = Kd - j0 < bn ? Kd - j0 : bn;
            lk__conv_mat Bm = pw ? lk__conv_view(u.x, P, 1)
                                 : (lk__conv_mat){NULL, 0, 0, 0, pack_colT, &u};
            lk__conv_gemm(i0, mi, j0, nj, (int)P, &A, &Bm, dw + (int64_t)i0 * Kd + j0, Kd, true,
                          NULL, &ws[omp_get_thread_num()]);
        }
    }
    lk__conv_scratch_close(&sc);
    return LK_OK;
}
