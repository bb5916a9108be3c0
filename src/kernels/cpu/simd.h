/* simd.h (internal): the thin vector layer the elementwise CPU kernels share: one set of
 * names (vf, VW, v_ld, v_fma, v_round, v_pow2_mul, tail loads/stores, ...) over AVX-512, AVX2+FMA
 * or scalar code, chosen at compile time. Math built on it (exp, erf, ...) lives with its users. */
#ifndef LK_KERNELS_CPU_SIMD_H
#define LK_KERNELS_CPU_SIMD_H

#include <math.h>
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
typedef __m512 vf;
#define VW 16
#define v_ld(p) _mm512_loadu_ps(p)
#define v_st(p, v) _mm512_storeu_ps((p), (v))
#define v_set(c) _mm512_set1_ps(c)
#define v_add(a, b) _mm512_add_ps((a), (b))
#define v_sub(a, b) _mm512_sub_ps((a), (b))
#define v_mul(a, b) _mm512_mul_ps((a), (b))
#define v_fma(a, b, c) _mm512_fmadd_ps((a), (b), (c))  /* a*b + c */
#define v_fms(a, b, c) _mm512_fmsub_ps((a), (b), (c))  /* a*b - c */
#define v_fnma(a, b, c) _mm512_fnmadd_ps((a), (b), (c)) /* c - a*b */
/* min/max return the second operand when one is NaN: keep x second so NaN propagates */
#define v_max(c, x) _mm512_max_ps((c), (x))
#define v_min(c, x) _mm512_min_ps((c), (x))
#define v_abs(a) _mm512_abs_ps(a)
/* where x < 0: a, else b */
#define v_sel_neg(x, a, b) \
    _mm512_mask_blend_ps(_mm512_cmp_ps_mask((x), _mm512_setzero_ps(), _CMP_LT_OQ), (b), (a))
static inline vf v_round(vf x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
static inline vf v_pow2_mul(vf p, vf n) { return _mm512_scalef_ps(p, n); } /* p * 2^n */
static inline vf v_rcp(vf x) { return _mm512_div_ps(_mm512_set1_ps(1.0f), x); }
#define v_hmax(a) _mm512_reduce_max_ps(a)
#define v_hsum(a) _mm512_reduce_add_ps(a)
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
#define v_fms(a, b, c) _mm256_fmsub_ps((a), (b), (c))
#define v_fnma(a, b, c) _mm256_fnmadd_ps((a), (b), (c))
#define v_max(c, x) _mm256_max_ps((c), (x))
#define v_min(c, x) _mm256_min_ps((c), (x))
#define v_abs(a) _mm256_andnot_ps(_mm256_set1_ps(-0.0f), (a))
#define v_sel_neg(x, a, b) \
    _mm256_blendv_ps((b), (a), _mm256_cmp_ps((x), _mm256_setzero_ps(), _CMP_LT_OQ))
static inline vf v_round(vf x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* p * 2^n for integral n in [-150, 129]: two exactly representable factors 2^n1 * 2^n2 */
static inline vf v_pow2_mul(vf p, vf n) {
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    __m256i bias = _mm256_set1_epi32(127);
    vf f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    vf f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}
static inline vf v_rcp(vf x) { return _mm256_div_ps(_mm256_set1_ps(1.0f), x); }
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
#define v_fms(a, b, c) fmaf((a), (b), -(c))
#define v_fnma(a, b, c) fmaf(-(a), (b), (c))
#define v_max(c, x) ((x) < (c) ? (c) : (x))
#define v_min(c, x) ((x) > (c) ? (c) : (x))
#define v_abs(a) fabsf(a)
#define v_sel_neg(x, a, b) ((x) < 0.0f ? (a) : (b))
static inline vf v_round(vf x) { return nearbyintf(x); }
static inline vf v_pow2_mul(vf p, vf n) { return ldexpf(p, (int)n); }
static inline vf v_rcp(vf x) { return 1.0f / x; }
#define v_hmax(a) (a)
#define v_hsum(a) (a)
static inline vf v_ldt(const float *p, int n, float fill) { return n > 0 ? *p : fill; }
static inline void v_stt(float *p, vf v, int n) {
    if (n > 0) *p = v;
}
static inline vf v_keep(vf v, int n) { return n > 0 ? v : 0.0f; }
#endif

#endif
