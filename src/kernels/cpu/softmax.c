/* softmax.c: numerically stable softmax over the rows of an (M, N) matrix and its backward
 * (y = exp(x - max) / sum; dx += y (dy - <dy, y>)), f32, OpenMP over rows.
 * exp(x): n = round(x/ln2), r = x - n*ln2 (two-part ln2, Cody & Waite 1980), degree-7 Taylor
 * polynomial on |r| <= ln2/2 (truncation < 1e-8 relative), times 2^n. */
#include "kernels/kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

/* ---------------- a thin vector layer ----------------
 * v_ldt / v_stt load (other lanes: fill) / store the first n lanes; v_keep zeroes the others. */
#if defined(__AVX512F__)
typedef __m512 vf;
#define VW 16
#define v_ld(p) _mm512_loadu_ps(p)
#define v_st(p, v) _mm512_storeu_ps((p), (v))
#define v_set(c) _mm512_set1_ps(c)
#define v_add(a, b) _mm512_add_ps((a), (b))
#define v_sub(a, b) _mm512_sub_ps((a), (b))
#define v_mul(a, b) _mm512_mul_ps((a), (b))
#define v_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define v_fnma(a, b, c) _mm512_fnmadd_ps((a), (b), (c)) /* c - a*b */
#define v_max(c, x) _mm512_max_ps((c), (x))             /* NaN in x propagates */
#define v_hmax(a) _mm512_reduce_max_ps(a)
#define v_hsum(a) _mm512_reduce_add_ps(a)
static inline vf v_round(vf x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline vf v_pow2_mul(vf p, vf n) { return _mm512_scalef_ps(p, n); }
static inline vf v_ldt(const float *p, int n, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), (__mmask16)((1u << n) - 1), p);
}
static inline void v_stt(float *p, vf v, int n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), v);
}
static inline vf v_keep(vf v, int n) { return _mm512_maskz_mov_ps((__mmask16)((1u << n) - 1), v); }
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vf;
#define VW 8
#define v_ld(p) _mm256_loadu_ps(p)
#define v_st(p, v) _mm256_storeu_ps((p), (v))
#define v_set(c) _mm256_set1_ps(c)
#define v_add(a, b) _mm256_add_ps((a), (b))
#define v_sub(a, b) _mm256_sub_ps((a), (b))
#define v_mul(a, b) _mm256_mul_ps((a), (b))
#define v_fma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define v_fnma(a, b, c) _mm256_fnmadd_ps((a), (b), (c))
#define v_max(c, x) _mm256_max_ps((c), (x))
static inline float v_hmax(vf a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
static inline float v_hsum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline vf v_round(vf x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* p * 2^n for integral n in [-150, 128]: two exactly representable factors */
static inline vf v_pow2_mul(vf p, vf n) {
    __m256i ni = _mm256_cvtps_epi32(n), bias = _mm256_set1_epi32(127);
    __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    vf f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    vf f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}
static inline __m256i tail_mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf v_ldt(const float *p, int n, float fill) {
    __m256i m = tail_mask(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline void v_stt(float *p, vf v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
static inline vf v_keep(vf v, int n) { return _mm256_and_ps(v, _mm256_castsi256_ps(tail_mask(n))); }
#else
typedef float vf;
#define VW 1
#define v_ld(p) (*(p))
#define v_st(p, v) (*(p) = (v))
#define v_set(c) (c)
#define v_add(a, b) ((a) + (b))
#define v_sub(a, b) ((a) - (b))
#define v_mul(a, b) ((a) * (b))
#define v_fma(a, b, c) fmaf((a), (b), (c))
#define v_fnma(a, b, c) fmaf(-(a), (b), (c))
#define v_max(c, x) ((x) < (c) ? (c) : (x))
#define v_hmax(a) (a)
#define v_hsum(a) (a)
static inline vf v_round(vf x) { return nearbyintf(x); }
static inline vf v_pow2_mul(vf p, vf n) { return ldexpf(p, (int)n); }
static inline vf v_ldt(const float *p, int n, float fill) { return n > 0 ? *p : fill; }
static inline void v_stt(float *p, vf v, int n) {
    if (n > 0) *p = v;
}
static inline vf v_keep(vf v, int n) { return n > 0 ? v : 0.0f; }
#endif

/* exp(x) for x <= 0 (softmax arguments), about 1 ulp; below -104 gives 0, NaN propagates. */
static inline vf v_exp_neg(vf x) {
    x = v_max(v_set(-104.0f), x);
    vf n = v_round(v_mul(x, v_set(1.44269504088896341f)));
    vf r = v_fnma(n, v_set(0.693359375f), x);  /* ln2 high part: 9 bits, n*hi exact */
    r = v_fnma(n, v_set(-2.12194440e-4f), r);   /* ln2 low part */
    vf p = v_set(1.0f / 5040.0f);
    p = v_fma(p, r, v_set(1.0f / 720.0f));
    p = v_fma(p, r, v_set(1.0f / 120.0f));
    p = v_fma(p, r, v_set(1.0f / 24.0f));
    p = v_fma(p, r, v_set(1.0f / 6.0f));
    p = v_fma(p, r, v_set(0.5f));
    p = v_fma(p, r, v_set(1.0f));
    p = v_fma(p, r, v_set(1.0f));
    return v_pow2_mul(p, n);
}

/* exp(x - m) on the first t lanes of x, 0 on the others. The padding lanes are computed as
 * exp(0): exp of a very negative number underflows, which costs a microcode assist per row. */
static inline vf v_exp_tail(vf x, vf m, int t) {
    return v_keep(v_exp_neg(v_keep(v_sub(x, m), t)), t);
}

static void softmax_row(float *y, const float *x, size_t N) {
    const size_t nf = N - N % VW;
    const int t = (int)(N - nf);
    vf m0 = v_set(-INFINITY), m1 = m0;
    size_t j = 0;
    for (; j + 2 * VW <= nf; j += 2 * VW) {
        m0 = v_max(m0, v_ld(x + j));
        m1 = v_max(m1, v_ld(x + j + VW));
    }
    if (j < nf) m0 = v_max(m0, v_ld(x + j));
    if (t) m1 = v_max(m1, v_ldt(x + nf, t, -INFINITY));
    float mx = v_hmax(m0), mx1 = v_hmax(m1);
    mx = mx1 > mx || mx1 != mx1 ? mx1 : mx;
    const vf vm = v_set(mx);
    vf s0 = v_set(0.0f), s1 = s0;
    for (j = 0; j + 2 * VW <= nf; j += 2 * VW) {
        vf e0 = v_exp_neg(v_sub(v_ld(x + j), vm)), e1 = v_exp_neg(v_sub(v_ld(x + j + VW), vm));
        v_st(y + j, e0);
        v_st(y + j + VW, e1);
        s0 = v_add(s0, e0);
        s1 = v_add(s1, e1);
    }
    if (j < nf) {
        vf e0 = v_exp_neg(v_sub(v_ld(x + j), vm));
        v_st(y + j, e0);
        s0 = v_add(s0, e0);
    }
    if (t) {
        vf e1 = v_exp_tail(v_ldt(x + nf, t, 0.0f), vm, t);
        v_stt(y + nf, e1, t);
        s1 = v_add(s1, e1);
    }
    const vf inv = v_set(1.0f / v_hsum(v_add(s0, s1)));
    for (j = 0; j < nf; j += VW) v_st(y + j, v_mul(v_ld(y + j), inv));
    if (t) v_stt(y + nf, v_mul(v_ldt(y + nf, t, 0.0f), inv), t);
}

#if VW > 1
/* Short rows (at most SHORT_NV vectors, e.g. the 77 text tokens of cross-attention) stay in
 * registers, R (1 or 2) rows at a time so their dependency chains (max, exp, sum, scale)
 * overlap. NV vectors per row, the last one holding t lanes. */
#define SHORT_NV 5
static inline __attribute__((always_inline)) void
softmax_short(float *y, const float *x, size_t ld, int t, const int R, const int NV) {
    vf v[2][SHORT_NV], m[2], s[2];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 5
        for (int i = 0; i < NV - 1; i++) v[r][i] = v_ld(x + r * ld + i * VW);
        v[r][NV - 1] = v_ldt(x + r * ld + (NV - 1) * VW, t, -INFINITY);
        m[r] = v[r][0];
#pragma GCC unroll 5
        for (int i = 1; i < NV; i++) m[r] = v_max(m[r], v[r][i]);
        m[r] = v_set(v_hmax(m[r]));
        s[r] = v_set(0.0f);
#pragma GCC unroll 5
        for (int i = 0; i < NV; i++) {
            v[r][i] = i < NV - 1 ? v_exp_neg(v_sub(v[r][i], m[r])) : v_exp_tail(v[r][i], m[r], t);
            s[r] = v_add(s[r], v[r][i]);
        }
        s[r] = v_set(1.0f / v_hsum(s[r]));
#pragma GCC unroll 5
        for (int i = 0; i < NV - 1; i++) v_st(y + r * ld + i * VW, v_mul(v[r][i], s[r]));
        v_stt(y + r * ld + (NV - 1) * VW, v_mul(v[r][NV - 1], s[r]), t);
    }
}

#define SHORT_CASE(NV)                                                                   \
    case NV:                                                                             \
        if (R == 2) softmax_short(y, x, ld, t, 2, NV);                                   \
        else softmax_short(y, x, ld, t, 1, NV);                                          \
        break;
/* R rows of N <= SHORT_NV * VW */
static void softmax_short_rows(float *y, const float *x, size_t N, size_t ld, int R) {
    const int nv = (int)((N + VW - 1) / VW), t = (int)N - (nv - 1) * VW;
    switch (nv) {
        SHORT_CASE(1)
        SHORT_CASE(2)
        SHORT_CASE(3)
        SHORT_CASE(4)
        SHORT_CASE(5)
    }
}
#endif

static void softmax_row_backward(float *restrict dx, const float *restrict dy,
                                 const float *restrict y, size_t N) {
    const size_t nf = N - N % VW;
    const int t = (int)(N - nf);
    vf a0 = v_set(0.0f), a1 = a0;
    size_t j = 0;
    for (; j + 2 * VW <= nf; j += 2 * VW) {
        a0 = v_fma(v_ld(dy + j), v_ld(y + j), a0);
        a1 = v_fma(v_ld(dy + j + VW), v_ld(y + j + VW), a1);
    }
    if (j < nf) a0 = v_fma(v_ld(dy + j), v_ld(y + j), a0);
    if (t) a1 = v_fma(v_ldt(dy + nf, t, 0.0f), v_ldt(y + nf, t, 0.0f), a1);
    const vf dot = v_set(v_hsum(v_add(a0, a1)));
    for (j = 0; j < nf; j += VW)
        v_st(dx + j, v_fma(v_ld(y + j), v_sub(v_ld(dy + j), dot), v_ld(dx + j)));
    if (t)
        v_stt(dx + nf,
              v_fma(v_ldt(y + nf, t, 0.0f), v_sub(v_ldt(dy + nf, t, 0.0f), dot),
                    v_ldt(dx + nf, t, 0.0f)),
              t);
}

/* below this many elements (about 50 us on one core) the thread team is not woken */
#define SOFTMAX_PAR_MIN (1u << 17)

/* y (M, N) = softmax of each row of x (may be y itself: each row is read before it is
 * written). Rows of -inf give NaN, as in PyTorch; -inf entries of other rows give exactly 0. */
void lk_softmax_forward(float *y, const float *x, size_t M, size_t N) {
    if (M == 0 || N == 0) return;
#if VW > 1
    if (N <= SHORT_NV * VW) {
        const size_t pairs = (M + 1) / 2;
#pragma omp parallel for schedule(static) if (M * N >= SOFTMAX_PAR_MIN && M > 1)
        for (size_t i = 0; i < pairs; i++)
            softmax_short_rows(y + 2 * i * N, x + 2 * i * N, N, N, 2 * i + 1 < M ? 2 : 1);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (M * N >= SOFTMAX_PAR_MIN && M > 1)
    for (size_t i = 0; i < M; i++) softmax_row(y + i * N, x + i * N, N);
}

/* dx (M, N) += y (dy - rowsum(dy y)), y the forward's output. */
void lk_softmax_backward(float *dx, const float *dy, const float *y, size_t M, size_t N) {
    if (M == 0 || N == 0) return;
#pragma omp parallel for schedule(static) if (M * N >= SOFTMAX_PAR_MIN && M > 1)
    for (size_t i = 0; i < M; i++) softmax_row_backward(dx + i * N, dy + i * N, y + i * N, N);
}
