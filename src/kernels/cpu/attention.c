/* attention.c: fused multi-head attention forward/backward, tiled over queries and keys with an
 * online softmax (FlashAttention, Dao et al. 2022; work partitioning of FlashAttention-2, Dao
 * 2023). Extra memory O(N): per-thread tiles and accumulators, never an (Nq, Nk) matrix. f32.
 *
 * Every tile product is one micro-kernel, C[r, 0:W] (+)= sum_k A[r, k] * B[k, 0:W]: W "lanes"
 * (W = 16*nv <= TL) run along a packed row of B and C, and A is read one scalar at a time through
 * two strides, so the same kernel computes Q K^T, dO V^T, V^T P^T, ... without transposing q, k,
 * v or dout. Scores are kept in log2 units (scale*log2(e) folded into the packed operand), so
 * softmax uses exp2.
 *   forward  (queries on lanes): S^T = K Q^T (keys x queries), online softmax down the key rows,
 *            O^T (D x queries) += V^T P^T; out = O / l, lse = m + log(l).
 *   backward (keys on lanes): S = Q K^T, dP = dO V^T (queries x keys), P = exp(S - lse),
 *            dS = P (dP - rowsum(dO O)); dV^T += dO^T P, dK^T += Q^T dS (D x keys) and, after one
 *            16x16-blocked transpose of dS, dQ^T += K^T dS^T (D x queries). */
#include "kernels/kernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include <omp.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#define TL 64 /* lanes of a tile: queries (forward) or keys (backward) */
#define LB 16 /* lanes per block; a tile is nv <= 4 blocks */
#define RB 6  /* rows per micro-kernel call */
#define BK 96 /* most keys per forward step (steps are balanced: 77 keys make one step) */

/* below this many multiply-adds (about 30 us on one core) the thread team is not woken */
#define PAR_MIN_WORK 4e6

#define LOG2E_F 1.44269504088896341f
#define LN2_F 0.693147180559945309f

/* ---------------- a thin vector layer ---------------- */
#if defined(__AVX512F__)
typedef __m512 vf;
#define VW 16
#define v_ld(p) _mm512_loadu_ps(p)
#define v_st(p, v) _mm512_storeu_ps((p), (v))
#define v_set(c) _mm512_set1_ps(c)
#define v_zero() _mm512_setzero_ps()
#define v_add(a, b) _mm512_add_ps((a), (b))
#define v_sub(a, b) _mm512_sub_ps((a), (b))
#define v_mul(a, b) _mm512_mul_ps((a), (b))
#define v_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define v_max(c, x) _mm512_max_ps((c), (x)) /* NaN in x propagates */
static inline vf v_round(vf x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* p * 2^n, and 0 where x < -126 (no denormal results) */
static inline vf v_pow2_mul_ftz(vf p, vf n, vf x) {
    const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_NLT_UQ);
    return _mm512_maskz_scalef_ps(keep, p, n);
}
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vf;
#define VW 8
#define v_ld(p) _mm256_loadu_ps(p)
#define v_st(p, v) _mm256_storeu_ps((p), (v))
#define v_set(c) _mm256_set1_ps(c)
#define v_zero() _mm256_setzero_ps()
#define v_add(a, b) _mm256_add_ps((a), (b))
#define v_sub(a, b) _mm256_sub_ps((a), (b))
#define v_mul(a, b) _mm256_mul_ps((a), (b))
#define v_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define v_max(c, x) _mm256_max_ps((c), (x))
static inline vf v_round(vf x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* p * 2^n for integral n >= -127, and 0 where x < -126 (no denormal results) */
static inline vf v_pow2_mul_ftz(vf p, vf n, vf x) {
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    vf r = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
    return _mm256_and_ps(r, _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_NLT_UQ));
}
#else
typedef float vf;
#define VW 1
#define v_ld(p) (*(p))
#define v_st(p, v) (*(p) = (v))
#define v_set(c) (c)
#define v_zero() 0.0f
#define v_add(a, b) ((a) + (b))
#define v_sub(a, b) ((a) - (b))
#define v_mul(a, b) ((a) * (b))
#define v_fma(a, b, c) fmaf((a), (b), (c))
#define v_max(c, x) ((x) < (c) ? (c) : (x))
/* 2^x, 0 below 2^-126 (as the vector versions below) */
static inline vf v_exp2(vf x) { return x < -126.0f ? 0.0f : exp2f(x); }
#endif

#if VW > 1
/* 2^x for x <= 0: x = n + f with |f| <= 1/2, 2^f by a degree-6 polynomial (relative-error
 * minimax on [-1/2, 1/2] fitted here by reweighted least squares: 1.6e-8 in exact arithmetic,
 * 9.6e-8 evaluated in f32, same as the degree-7 Taylor series), times 2^n. Below 2^-126 the
 * result is 0 (probabilities that small next to the row maximum's 1 are below f32 resolution;
 * denormals would only slow the products down). NaN propagates. */
static inline vf v_exp2(vf x) {
#if !defined(__AVX512F__)
    x = v_max(v_set(-127.0f), x); /* keeps the integer exponent in range */
#endif
    vf n = v_round(x);
    vf f = v_sub(x, n);
    vf p = v_set(1.53458075135832e-04f);
    p = v_fma(p, f, v_set(1.339993157399355e-03f));
    p = v_fma(p, f, v_set(9.618488977198358e-03f));
    p = v_fma(p, f, v_set(5.550328776114942e-02f));
    p = v_fma(p, f, v_set(2.4022646890416754e-01f));
    p = v_fma(p, f, v_set(6.931472057376384e-01f));
    p = v_fma(p, f, v_set(1.0f));
    return v_pow2_mul_ftz(p, n, x);
}
#endif

/* ---------------- the tile micro-kernel ----------------
 * C[r*ldc + l] = (acc ? C[r*ldc + l] * (cs ? cs[l] : 1) : 0)
 *              + sum_{k<K} A[r*ars + k*aks] * B[k*ldb + l]        for r < R, l < 16*NV.
 * R <= RB and NV <= 4 are compile-time constants in each instance. */
typedef void (*tile_fn)(int K, const float *A, ptrdiff_t ars, ptrdiff_t aks, const float *B,
                        ptrdiff_t ldb, float *C, ptrdiff_t ldc, int acc, const float *cs);

#if defined(__AVX512F__)
static inline __attribute__((always_inline)) void
tile_body(const int R, const int NV, int K, const float *restrict A, ptrdiff_t ars, ptrdiff_t aks,
          const float *restrict B, ptrdiff_t ldb, float *restrict C, ptrdiff_t ldc, int acc,
          const float *restrict cs) {
    __m512 c[RB][4];
    if (acc) {
        __m512 s[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            s[v] = cs ? _mm512_loadu_ps(cs + 16 * v) : _mm512_set1_ps(1.0f);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                c[r][v] = _mm512_mul_ps(_mm512_loadu_ps(C + r * ldc + 16 * v), s[v]);
    } else {
#pragma GCC unroll 6
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[r][v] = _mm512_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        const float *b = B + k * ldb, *a = A + k * aks;
        __m512 bv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m512 av = _mm512_set1_ps(a[r * ars]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) c[r][v] = _mm512_fmadd_ps(av, bv[v], c[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(C + r * ldc + 16 * v, c[r][v]);
}
#elif defined(__AVX2__) && defined(__FMA__)
/* 16 ymm registers: one 16-lane block (two ymm) of all R rows at a time */
static inline __attribute__((always_inline)) void
tile_body(const int R, const int NV, int K, const float *restrict A, ptrdiff_t ars, ptrdiff_t aks,
          const float *restrict B, ptrdiff_t ldb, float *restrict C, ptrdiff_t ldc, int acc,
          const float *restrict cs) {
    for (int v = 0; v < NV; v++) {
        __m256 c[RB][2];
        const int o = 16 * v;
        if (acc) {
            __m256 s0 = cs ? _mm256_loadu_ps(cs + o) : _mm256_set1_ps(1.0f);
            __m256 s1 = cs ? _mm256_loadu_ps(cs + o + 8) : _mm256_set1_ps(1.0f);
#pragma GCC unroll 6
            for (int r = 0; r < R; r++) {
                c[r][0] = _mm256_mul_ps(_mm256_loadu_ps(C + r * ldc + o), s0);
                c[r][1] = _mm256_mul_ps(_mm256_loadu_ps(C + r * ldc + o + 8), s1);
            }
        } else {
#pragma GCC unroll 6
            for (int r = 0; r < R; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
        }
        for (int k = 0; k < K; k++) {
            const float *b = B + k * ldb + o, *a = A + k * aks;
            __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
            for (int r = 0; r < R; r++) {
                __m256 av = _mm256_broadcast_ss(a + r * ars);
                c[r][0] = _mm256_fmadd_ps(av, b0, c[r][0]);
                c[r][1] = _mm256_fmadd_ps(av, b1, c[r][1]);
            }
        }
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            _mm256_storeu_ps(C + r * ldc + o, c[r][0]);
            _mm256_storeu_ps(C + r * ldc + o + 8, c[r][1]);
        }
    }
}
#else
static inline void tile_body(const int R, const int NV, int K, const float *restrict A,
                             ptrdiff_t ars, ptrdiff_t aks, const float *restrict B, ptrdiff_t ldb,
                             float *restrict C, ptrdiff_t ldc, int acc, const float *restrict cs) {
    const int W = 16 * NV;
    for (int r = 0; r < R; r++) {
        float *c = C + r * ldc;
        for (int l = 0; l < W; l++) c[l] = acc ? c[l] * (cs ? cs[l] : 1.0f) : 0.0f;
        for (int k = 0; k < K; k++) {
            const float a = A[r * ars + k * aks];
            const float *b = B + k * ldb;
            for (int l = 0; l < W; l++) c[l] += a * b[l];
        }
    }
}
#endif

#define TILE_FN(R, NV)                                                                        \
    static void tile_##R##_##NV(int K, const float *A, ptrdiff_t ars, ptrdiff_t aks,          \
                                const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, int acc, \
                                const float *cs) {                                            \
        tile_body(R, NV, K, A, ars, aks, B, ldb, C, ldc, acc, cs);                            \
    }
#define TILE_ROW(R) TILE_FN(R, 1) TILE_FN(R, 2) TILE_FN(R, 3) TILE_FN(R, 4)
TILE_ROW(1)
TILE_ROW(2)
TILE_ROW(3)
TILE_ROW(4)
TILE_ROW(5)
TILE_ROW(6)
#define TILE_TAB(R) {tile_##R##_1, tile_##R##_2, tile_##R##_3, tile_##R##_4}
static const tile_fn tile_tab[RB][4] = {TILE_TAB(1), TILE_TAB(2), TILE_TAB(3),
                                        TILE_TAB(4), TILE_TAB(5), TILE_TAB(6)};

/* The micro-kernel over `rows` rows of C (any count), in calls of at most RB rows of nearly
 * equal size (80 rows: 10 x 6 + 4 x 5, not 13 x 6 + 2, whose last call has too few
 * accumulators to hide the FMA latency). */
static void tile_rows(int rows, int nv, int K, const float *A, ptrdiff_t ars, ptrdiff_t aks,
                      const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, int acc,
                      const float *cs) {
    const int calls = (rows + RB - 1) / RB;
    for (int i = 0, r0 = 0; i < calls; i++) {
        const int R = rows / calls + (i < rows % calls);
        tile_tab[R - 1][nv - 1](K, A + r0 * ars, ars, aks, B, ldb, C + r0 * ldc, ldc, acc, cs);
        r0 += R;
    }
}

/* ---------------- transposes between row layouts and lane layouts ----------------
 * dst[c*ldd + r] = (acc ? dst[c*ldd + r] : 0) + scale * (rs ? rs[c] : 1) * src[r*lds + c]
 * for r < rows, c < cols; with pad, lanes r in [rows, rows rounded up to 16) of dst are zeroed
 * (acc must then be 0). Done in 16x16 blocks. */
#if defined(__AVX512F__)
static void transpose16(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds, int nr,
                        int nc, int nstore, float scale, const float *rs, int acc) {
    const __mmask16 cm = (__mmask16)((1u << nc) - 1), sm = (__mmask16)((1u << nstore) - 1);
    __m512 r[16], t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) /* rows >= nr: an all-zero mask reads nothing */
        r[i] = _mm512_maskz_loadu_ps(i < nr ? cm : 0, i < nr ? src + i * lds : src);
#pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* r[4g + c]: 128-bit lane L holds column 4L + c of rows 4g..4g+3 */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
        __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    /* t[col] = column col of the block */
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(r[c], r[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
        __m512 v1 = _mm512_shuffle_f32x4(r[c], r[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
        __m512 v2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
        __m512 v3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
        t[0 + c] = _mm512_shuffle_f32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0));
        t[4 + c] = _mm512_shuffle_f32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1));
        t[8 + c] = _mm512_shuffle_f32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0));
        t[12 + c] = _mm512_shuffle_f32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1));
    }
    const __m512 sc = _mm512_set1_ps(scale);
#pragma GCC unroll 16
    for (int c = 0; c < 16; c++) {
        if (c >= nc) break;
        __m512 x = _mm512_mul_ps(t[c], rs ? _mm512_set1_ps(scale * rs[c]) : sc);
        if (acc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(sm, dst + c * ldd));
        _mm512_mask_storeu_ps(dst + c * ldd, sm, x);
    }
}
#else
static void transpose16(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds, int nr,
                        int nc, int nstore, float scale, const float *rs, int acc) {
    for (int c = 0; c < nc; c++) {
        const float f = rs ? scale * rs[c] : scale;
        for (int r = 0; r < nstore; r++) {
            float x = r < nr ? f * src[r * lds + c] : 0.0f;
            dst[c * ldd + r] = acc ? dst[c * ldd + r] + x : x;
        }
    }
}
#endif

static void transpose_rect(float *dst, ptrdiff_t ldd, const float *src, ptrdiff_t lds, int rows,
                           int cols, int pad, float scale, const float *rs, int acc) {
    for (int r0 = 0; r0 < rows; r0 += LB)
        for (int c0 = 0; c0 < cols; c0 += LB) {
            const int nr = rows - r0 < LB ? rows - r0 : LB, nc = cols - c0 < LB ? cols - c0 : LB;
            transpose16(dst + c0 * ldd + r0, ldd, src + r0 * lds + c0, lds, nr, nc,
                        pad ? LB : nr, scale, rs ? rs + c0 : NULL, acc);
        }
}

/* dot product of n floats */
static float dot(const float *a, const float *b, int n) {
    vf acc = v_zero();
    int i = 0;
    for (; i + VW <= n; i += VW) acc = v_fma(v_ld(a + i), v_ld(b + i), acc);
    float part[VW], s = 0.0f;
    v_st(part, acc);
    for (int l = 0; l < VW; l++) s += part[l];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---------------- forward ---------------- */
typedef struct fwd_args {
    float *out, *lse;
    const float *q, *k, *v;
    int B, H, Nq, Nk, D;
    float scale;
} fwd_args;

/* One key step of the online softmax on S^T (bk rows x 16*nv query lanes, row stride TL), in
 * place: m (running max), l (running sum) and alpha (rescale of the old O^T) per query lane. */
static void online_softmax_step(float *s, int bk, int nv, float *m, float *l, float *alpha,
                                int first) {
    for (int c = 0; c < LB * nv; c += VW) {
        vf mx = v_ld(s + c);
        for (int r = 1; r < bk; r++) mx = v_max(mx, v_ld(s + r * TL + c));
        vf al = v_zero();
        if (!first) {
            vf mo = v_ld(m + c);
            mx = v_max(mo, mx);
            al = v_exp2(v_sub(mo, mx));
            v_st(alpha + c, al);
        }
        vf s0 = v_zero(), s1 = v_zero();
        int r = 0;
        for (; r + 1 < bk; r += 2) {
            vf p0 = v_exp2(v_sub(v_ld(s + r * TL + c), mx));
            vf p1 = v_exp2(v_sub(v_ld(s + (r + 1) * TL + c), mx));
            v_st(s + r * TL + c, p0);
            v_st(s + (r + 1) * TL + c, p1);
            s0 = v_add(s0, p0);
            s1 = v_add(s1, p1);
        }
        if (r < bk) {
            vf p0 = v_exp2(v_sub(v_ld(s + r * TL + c), mx));
            v_st(s + r * TL + c, p0);
            s0 = v_add(s0, p0);
        }
        vf sum = v_add(s0, s1);
        v_st(l + c, first ? sum : v_fma(v_ld(l + c), al, sum));
        v_st(m + c, mx);
    }
}

/* per-thread scratch of the forward, in floats: Q^T, O^T and S^T tiles, m, l, alpha, and this
 * head's K and V packed contiguous (rows of the interleaved heads are H*D apart, which maps
 * them onto few L1 sets; packed, a key step's K and V rows stay in L1) */
static size_t fwd_scratch(int D, int Nk) {
    return (size_t)TL * (2 * (size_t)D + BK + 3) + 2 * (size_t)Nk * (size_t)D + LB;
}

/* copy rows x cols of src (row stride lds) to contiguous dst */
static void pack_rows(float *restrict dst, const float *restrict src, ptrdiff_t lds, int rows,
                      int cols) {
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)r * cols, src + r * lds, sizeof(float) * (size_t)cols);
}

/* one query tile of one head; kp, vp hold the head's K and V packed (Nk x D) */
static void fwd_item(const fwd_args *a, int bh, int qt, float *ws, const float *kp,
                     const float *vp) {
    const int H = a->H, Nq = a->Nq, Nk = a->Nk, D = a->D;
    const ptrdiff_t HD = (ptrdiff_t)H * D;
    const int b = bh / H, h = bh % H, i0 = qt * TL;
    const int bq = Nq - i0 < TL ? Nq - i0 : TL, nv = (bq + LB - 1) / LB;
    float *qt_buf = ws, *ot = qt_buf + (size_t)TL * D, *s = ot + (size_t)TL * D;
    float *m = s + (size_t)TL * BK, *l = m + TL, *alpha = l + TL;

    const float *qb = a->q + ((size_t)b * Nq + i0) * HD + (size_t)h * D;
    transpose_rect(qt_buf, TL, qb, HD, bq, D, 1, a->scale * LOG2E_F, NULL, 0);
    const int steps = (Nk + BK - 1) / BK;
    for (int st = 0, j0 = 0; st < steps; st++) {
        const int bk = Nk / steps + (st < Nk % steps), first = st == 0;
        tile_rows(bk, nv, D, kp + (size_t)j0 * D, D, 1, qt_buf, TL, s, TL, 0, NULL);
        online_softmax_step(s, bk, nv, m, l, alpha, first);
        tile_rows(D, nv, bk, vp + (size_t)j0 * D, 1, D, s, TL, ot, TL, !first,
                  first ? NULL : alpha);
        j0 += bk;
    }
    float *ob = a->out + ((size_t)b * Nq + i0) * HD + (size_t)h * D;
    for (int i = 0; i < bq; i++) alpha[i] = 1.0f / l[i];
    transpose_rect(ob, HD, ot, TL, D, bq, 0, 1.0f, alpha, 0);
    if (a->lse) {
        float *lb = a->lse + (size_t)bh * Nq + i0;
        for (int i = 0; i < bq; i++) lb[i] = (m[i] + log2f(l[i])) * LN2_F;
    }
}

/* out (B, Nq, H*D) = softmax(scale q k^T) v per head; lse (B, H, Nq) receives the logsumexp of
 * the scaled scores (natural log) for the backward, or is skipped when NULL. Nq, B, H or D of 0:
 * nothing to do. Nk < 1 with queries present: LK_ERR_INVALID. Scratch: per thread
 * 4*(64*(2D + 99) + 2*Nk*D) bytes (LK_ERR_NOMEM if that fails). Deterministic: the same inputs
 * give the same bits whatever the thread count. */
lk_status lk_attention_forward(float *out, float *lse, const float *q, const float *k,
                               const float *v, int B, int H, int Nq, int Nk, int D, float scale) {
    if (B <= 0 || H <= 0 || Nq <= 0 || D <= 0) return LK_OK;
    if (Nk <= 0) return lk_fail(LK_ERR_INVALID, "attention: no keys (Nk = %d)", Nk);
    const int T = omp_get_max_threads();
    const size_t per = fwd_scratch(D, Nk);
    float *ws = lk_aligned_alloc(sizeof(float) * per * (size_t)T);
    if (!ws) return lk_fail_prefix(LK_ERR_NOMEM, "attention forward scratch: ");
    fwd_args a = {out, lse, q, k, v, B, H, Nq, Nk, D, scale};
    const ptrdiff_t HD = (ptrdiff_t)H * D;
    const int nqt = (Nq + TL - 1) / TL;
    const long items = (long)B * H * nqt;
#pragma omp parallel if ((double)B * H * Nq * Nk * D >= PAR_MIN_WORK)
    {
        float *mine = ws + per * (size_t)omp_get_thread_num();
        float *kp = mine + (size_t)TL * (2 * (size_t)D + BK + 3), *vp = kp + (size_t)Nk * D;
        int packed = -1; /* the head kp, vp hold */
#pragma omp for schedule(dynamic, 1)
        for (long it = 0; it < items; it++) {
            const int bh = (int)(it / nqt);
            if (bh != packed) {
                const size_t off = (size_t)(bh / H) * Nk * HD + (size_t)(bh % H) * D;
                pack_rows(kp, k + off, HD, Nk, D);
                pack_rows(vp, v + off, HD, Nk, D);
                packed = bh;
            }
            fwd_item(&a, bh, (int)(it % nqt), mine, kp, vp);
        }
    }
    lk_aligned_free(ws);
    return LK_OK;
}

/* ---------------- backward ---------------- */
typedef struct bwd_args {
    const float *dout, *q, *k; /* this head's rows packed contiguous (row stride D) */
    const float *kt, *vt;     /* (D, nkp): this head's K^T * scale*log2(e) and V^T, zero padded */
    const float *lse2, *dd;   /* (Nq): this head's lse*log2(e) and rowsum(dO * O) */
    int Nq, Nk, D, nqp, nkp;
} bwd_args;

/* P = exp2(S - lse2) and dS = P (dP - dd) over bq rows of 16*nvk key lanes (row stride TL), in
 * place (s becomes P, dp becomes dS); lanes >= bk (padding keys) are set to zero. */
static void softmax_grad_rows(float *s, float *dp, int bq, int nvk, int bk, const float *lse2,
                              const float *dd, int need_ds) {
    const int W = LB * nvk;
    for (int i = 0; i < bq; i++) {
        float *sr = s + (size_t)i * TL, *dr = dp + (size_t)i * TL;
        const vf l2 = v_set(lse2[i]), di = v_set(dd[i]);
        for (int c = 0; c < W; c += VW) {
            vf p = v_exp2(v_sub(v_ld(sr + c), l2));
            v_st(sr + c, p);
            if (need_ds) v_st(dr + c, v_mul(p, v_sub(v_ld(dr + c), di)));
        }
        for (int j = bk; j < W; j++) sr[j] = dr[j] = 0.0f;
    }
}

/* per-thread scratch of the backward, in order: s, dp, dS^T tiles; K^T, V^T packs (D x Nk');
 * lse2, dd (Nq'); this head's q and dout rows (Nq' x D) and k rows (Nk' x D) packed contiguous
 * (see fwd_scratch); the dQ^T, dK^T, dV^T accumulators (D x Nq', D x Nk', D x Nk') */
static size_t bwd_scratch(int D, int nqp, int nkp) {
    return (size_t)3 * TL * TL + 2 * (size_t)nqp + (size_t)D * (3 * (size_t)nqp + 5 * (size_t)nkp);
}

static void bwd_pair(const bwd_args *a, int qt, int kt, float *ws, float *dqt, float *dkt,
                     float *dvt) {
    const int Nq = a->Nq, Nk = a->Nk, D = a->D;
    const int i0 = qt * TL, bq = Nq - i0 < TL ? Nq - i0 : TL, nvq = (bq + LB - 1) / LB;
    const int j0 = kt * TL, bk = Nk - j0 < TL ? Nk - j0 : TL, nvk = (bk + LB - 1) / LB;
    const int need_ds = dqt || dkt;
    float *s = ws, *dp = s + TL * TL, *dst = dp + TL * TL;
    const float *qb = a->q + (size_t)i0 * D, *dob = a->dout + (size_t)i0 * D;
    const float *kb = a->k + (size_t)j0 * D;

    tile_rows(bq, nvk, D, qb, D, 1, a->kt + j0, a->nkp, s, TL, 0, NULL);
    if (need_ds) tile_rows(bq, nvk, D, dob, D, 1, a->vt + j0, a->nkp, dp, TL, 0, NULL);
    softmax_grad_rows(s, dp, bq, nvk, bk, a->lse2 + i0, a->dd + i0, need_ds);
    if (dvt) tile_rows(D, nvk, bq, dob, 1, D, s, TL, dvt + j0, a->nkp, 1, NULL);
    if (dkt) tile_rows(D, nvk, bq, qb, 1, D, dp, TL, dkt + j0, a->nkp, 1, NULL);
    if (dqt) {
        transpose_rect(dst, TL, dp, TL, bq, LB * nvk, 1, 1.0f, NULL, 0);
        tile_rows(D, nvq, bk, kb, 1, D, dst, TL, dqt + i0, a->nqp, 1, NULL);
    }
}

/* what a chunk covers: query rows [ilo, ihi), key rows [jlo, jhi) of head bh */
typedef struct bwd_range {
    int ilo, ihi, jlo, jhi;
    size_t qoff, koff; /* element offsets of the head's first q / k row */
} bwd_range;

/* Chunk c (of cph) of head bh: in key-major mode key tiles [nkt*c/cph, nkt*(c+1)/cph) against
 * every query tile, else query tiles [nqt*c/cph, ..) against every key tile. Packs what it
 * needs and accumulates dQ^T, dK^T, dV^T into dqt, dkt, dvt (D x Nq' / D x Nk', NULL: not
 * wanted), zeroing the covered range first. */
static bwd_range bwd_chunk(float *dqt, float *dkt, float *dvt, const float *dout,
                           const float *q, const float *k, const float *v, const float *out,
                           const float *lse, int H, int Nq, int Nk, int D, float scale, int bh,
                           int c, int cph, int keymajor, float *mine) {
    const int nqp = (Nq + LB - 1) / LB * LB, nkp = (Nk + LB - 1) / LB * LB;
    const int nqt = (Nq + TL - 1) / TL, nkt = (Nk + TL - 1) / TL;
    const ptrdiff_t HD = (ptrdiff_t)H * D;
    float *kt = mine + (size_t)3 * TL * TL, *vt = kt + (size_t)D * nkp;
    float *lse2 = vt + (size_t)D * nkp, *dd = lse2 + nqp;
    float *qp = dd + nqp, *dop = qp + (size_t)D * nqp, *kp = dop + (size_t)D * nqp;
    const int b = bh / H, h = bh % H;
    const int q0 = keymajor ? 0 : nqt * c / cph, q1 = keymajor ? nqt : nqt * (c + 1) / cph;
    const int k0 = keymajor ? nkt * c / cph : 0, k1 = keymajor ? nkt * (c + 1) / cph : nkt;
    bwd_range rg = {q0 * TL, q1 * TL < Nq ? q1 * TL : Nq, k0 * TL, k1 * TL < Nk ? k1 * TL : Nk,
                    (size_t)b * Nq * HD + (size_t)h * D, (size_t)b * Nk * HD + (size_t)h * D};
    const int ilo = rg.ilo, ihi = rg.ihi, jlo = rg.jlo, jhi = rg.jhi;
    /* padded ends: the ranges rounded up to 16 */
    const int ipad = q1 * TL < nqp ? q1 * TL : nqp, jpad = k1 * TL < nkp ? k1 * TL : nkp;
    const size_t qoff = rg.qoff, koff = rg.koff;
    transpose_rect(kt + jlo, nkp, k + koff + jlo * HD, HD, jhi - jlo, D, 1, scale * LOG2E_F,
                   NULL, 0);
    transpose_rect(vt + jlo, nkp, v + koff + jlo * HD, HD, jhi - jlo, D, 1, 1.0f, NULL, 0);
    pack_rows(kp + (size_t)jlo * D, k + koff + jlo * HD, HD, jhi - jlo, D);
    pack_rows(qp + (size_t)ilo * D, q + qoff + ilo * HD, HD, ihi - ilo, D);
    pack_rows(dop + (size_t)ilo * D, dout + qoff + ilo * HD, HD, ihi - ilo, D);
    for (int i = ilo; i < ihi; i++) {
        dd[i] = dot(out + qoff + i * HD, dop + (size_t)i * D, D);
        lse2[i] = lse[(size_t)bh * Nq + i] * LOG2E_F;
    }
    for (int d = 0; d < D; d++) {
        if (dqt) memset(dqt + (size_t)d * nqp + ilo, 0, sizeof(float) * (size_t)(ipad - ilo));
        if (dkt) memset(dkt + (size_t)d * nkp + jlo, 0, sizeof(float) * (size_t)(jpad - jlo));
        if (dvt) memset(dvt + (size_t)d * nkp + jlo, 0, sizeof(float) * (size_t)(jpad - jlo));
    }
    bwd_args a = {dop, qp, kp, kt, vt, lse2, dd, Nq, Nk, D, nqp, nkp};
    for (int qi = q0; qi < q1; qi++) /* key tiles inner: the dQ^T tile stays hot */
        for (int ki = k0; ki < k1; ki++)
            if (!keymajor) bwd_pair(&a, qi, ki, mine, dqt, dkt, dvt);
    for (int ki = k0; ki < k1; ki++) /* query tiles inner: the dK^T, dV^T tiles stay hot */
        for (int qi = q0; qi < q1; qi++)
            if (keymajor) bwd_pair(&a, qi, ki, mine, dqt, dkt, dvt);
    return rg;
}

/* g (rows [lo, hi) of a head, row stride H*D) += scale * acc^T (acc: D x ld, transposed) */
static void bwd_add(float *g, size_t off, const float *acc, int ld, int lo, int hi, int H, int D,
                    float scale) {
    const ptrdiff_t HD = (ptrdiff_t)H * D;
    transpose_rect(g + off + lo * HD, HD, acc + lo, ld, D, hi - lo, 0, scale, NULL, 1);
}

/* Accumulates (+=) into dq (B, Nq, H*D), dk, dv (B, Nk, H*D); a NULL one is skipped (with all
 * three NULL nothing runs). out and lse are the forward's. dq, dk, dv must not overlap each
 * other or the inputs. Scratch: per thread 4*(3*64^2 + 2*Nq' + D*(3*Nq' + 5*Nk')) bytes (Nq',
 * Nk': rounded up to 16), plus, when heads are split (B*H < 16), one dQ^T (or dK^T and dV^T)
 * per extra chunk. Deterministic: the same bits whatever the thread count or timing.
 *
 * Each head's (query tile, key tile) pairs are cut into cph chunks (about 16 in all, a number
 * that does not depend on the thread count) handed out dynamically, so a thread slowed down by
 * other load just takes fewer. With key tiles outer (enough of them), a chunk owns its key rows
 * and adds its dK, dV directly, while every chunk contributes to all of the head's dQ; with
 * query tiles outer, the reverse. Chunk 0 adds its share of the shared gradient directly, the
 * others keep theirs in a slot, and whichever chunk of the head finishes last adds the slots in
 * chunk order. Nobody waits, and sums do not depend on timing. */
lk_status lk_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v, const float *out,
                                const float *lse, int B, int H, int Nq, int Nk, int D,
                                float scale) {
    if (!dq && !dk && !dv) return LK_OK;
    if (B <= 0 || H <= 0 || Nq <= 0 || Nk <= 0 || D <= 0) return LK_OK;
    const int T = omp_get_max_threads();
    const int nqp = (Nq + LB - 1) / LB * LB, nkp = (Nk + LB - 1) / LB * LB;
    const int nqt = (Nq + TL - 1) / TL, nkt = (Nk + TL - 1) / TL;
    const long heads = (long)B * H;
    int cph = heads >= 16 ? 1 : (int)((16 + heads - 1) / heads);
    const int keymajor = nkt >= 2 * cph || nkt >= nqt;
    cph = keymajor ? (cph < nkt ? cph : nkt) : (cph < nqt ? cph : nqt);
    /* the shared gradient's slot: dQ^T (key-major) or dK^T and dV^T (query-major) */
    const size_t slot = keymajor ? (dq ? (size_t)D * nqp : 0)
                                 : (size_t)D * nkp * (size_t)((dk != NULL) + (dv != NULL));
    const size_t per = bwd_scratch(D, nqp, nkp);
    const size_t nslots = (size_t)heads * (size_t)(cph - 1);
    float *ws = lk_aligned_alloc(sizeof(float) * (per * (size_t)T + slot * nslots));
    int *done = lk_aligned_calloc(sizeof(int) * (size_t)heads);
    if (!ws || !done) {
        lk_aligned_free(ws);
        lk_aligned_free(done);
        return lk_fail_prefix(LK_ERR_NOMEM, "attention backward scratch: ");
    }
    float *slots = ws + per * (size_t)T;
#pragma omp parallel for schedule(dynamic, 1) if ((double)heads * Nq * Nk * D >= PAR_MIN_WORK)
    for (long ch = 0; ch < heads * cph; ch++) {
        const int bh = (int)(ch / cph), c = (int)(ch % cph);
        float *mine = ws + per * (size_t)omp_get_thread_num();
        /* private accumulators, or this chunk's slot for the shared gradient */
        float *dqt = mine + (size_t)3 * TL * TL + 2 * (size_t)D * nkp + 2 * (size_t)nqp +
                     (size_t)D * (2 * (size_t)nqp + (size_t)nkp);
        float *dkt = dqt + (size_t)D * nqp, *dvt = dkt + (size_t)D * nkp;
        float *sl = c > 0 ? slots + slot * ((size_t)bh * (cph - 1) + (c - 1)) : NULL;
        if (sl && keymajor) dqt = sl;
        if (sl && !keymajor) {
            dkt = sl;
            dvt = dk ? sl + (size_t)D * nkp : sl;
        }
        bwd_range rg = bwd_chunk(dq ? dqt : NULL, dk ? dkt : NULL, dv ? dvt : NULL, dout, q, k,
                                 v, out, lse, H, Nq, Nk, D, scale, bh, c, cph, keymajor, mine);
        /* the chunk's own rows, and chunk 0's share of the shared gradient */
        if (dq && (!keymajor || c == 0))
            bwd_add(dq, rg.qoff, dqt, nqp, rg.ilo, rg.ihi, H, D, scale);
        if (dk && (keymajor || c == 0)) bwd_add(dk, rg.koff, dkt, nkp, rg.jlo, rg.jhi, H, D, scale);
        if (dv && (keymajor || c == 0)) bwd_add(dv, rg.koff, dvt, nkp, rg.jlo, rg.jhi, H, D, 1.0f);
        if (cph == 1) continue;
        int finished;
#pragma omp atomic capture seq_cst
        finished = ++done[bh];
        if (finished < cph) continue;
        /* last of its head: add the other chunks' shares in chunk order */
        for (int o = 1; o < cph; o++) {
            const float *so = slots + slot * ((size_t)bh * (cph - 1) + (o - 1));
            if (keymajor && dq) bwd_add(dq, rg.qoff, so, nqp, 0, Nq, H, D, scale);
            if (!keymajor && dk) bwd_add(dk, rg.koff, so, nkp, 0, Nk, H, D, scale);
            if (!keymajor && dv)
                bwd_add(dv, rg.koff, dk ? so + (size_t)D * nkp : so, nkp, 0, Nk, H, D, 1.0f);
        }
    }
    lk_aligned_free(ws);
    lk_aligned_free(done);
    return LK_OK;
}
